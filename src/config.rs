//! RON configuration files: deserialized with serde into structs that reject unknown fields, then validated.
//! Errors name the file, the position, the field and the valid fields.
use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Reads a RON file into `T` (`T` should be `#[serde(deny_unknown_fields)]`).
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("config {}: cannot read", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// Parses RON text; `origin` names it in errors.
pub fn parse<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    ron::Options::default()
        .from_str::<T>(text)
        .map_err(|e| anyhow::anyhow!("config {origin}:{}:{}: {}", e.span.start.line, e.span.start.col, e.code))
}

/// Finds a config by name or path: an existing path as given, else `<satm home>/configs/<name>.ron`.
pub fn resolve(name_or_path: &str) -> Result<PathBuf> {
    let p = PathBuf::from(name_or_path);
    if p.is_file() {
        return Ok(p);
    }
    let dir = crate::script::satm_home().join("configs");
    let candidate = dir.join(format!("{}.ron", name_or_path.trim_end_matches(".ron")));
    if candidate.is_file() {
        return Ok(candidate);
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.path().file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    anyhow::bail!(
        "config '{name_or_path}' not found (not a file, and no {}; presets: {})",
        candidate.display(),
        names.join(", ")
    )
}
