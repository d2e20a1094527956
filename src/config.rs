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

/// Parses RON text; `origin` names it in errors. A wrongly typed or invalid value also names its field (ron reports
/// only "Expected integer"), found as the nearest `name:` before the error position.
pub fn parse<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    ron::Options::default().from_str::<T>(text).map_err(|e| {
        let (line, col) = (e.span.start.line, e.span.start.col);
        match value_error(&e.code).then(|| field_before(text, line, col)).flatten() {
            Some(field) => anyhow::anyhow!("config {origin}:{line}:{col}: field '{field}': {}", e.code),
            None => anyhow::anyhow!("config {origin}:{line}:{col}: {}", e.code),
        }
    })
}

/// Errors about a field's value (as opposed to syntax errors, or errors that already name the field).
fn value_error(e: &ron::Error) -> bool {
    use ron::Error as E;
    matches!(
        e,
        E::Message(_)
            | E::ExpectedArray
            | E::ExpectedBoolean
            | E::ExpectedChar
            | E::ExpectedFloat
            | E::ExpectedInteger
            | E::ExpectedOption
            | E::ExpectedMap
            | E::ExpectedStructLike
            | E::ExpectedNamedStructLike(_)
            | E::ExpectedDifferentStructName { .. }
            | E::ExpectedUnit
            | E::ExpectedString
            | E::ExpectedByteString
            | E::IntegerOutOfBounds
            | E::InvalidIntegerDigit { .. }
            | E::InvalidValueForType { .. }
            | E::ExpectedDifferentLength { .. }
            | E::NoSuchEnumVariant { .. }
    )
}

/// The last `ident:` in `text` before (1-based) `line`:`col`, skipping strings and comments.
fn field_before(text: &str, line: usize, col: usize) -> Option<String> {
    let mut end = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            end += l.char_indices().nth(col.saturating_sub(1)).map_or(l.len(), |(b, _)| b);
            break;
        }
        end += l.len();
    }
    let b = &text.as_bytes()[..end.min(text.len())];
    let (mut i, mut last) = (0, None);
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                if b.get(j) == Some(&b':') && b.get(j + 1) != Some(&b':') {
                    last = Some(String::from_utf8_lossy(&b[start..i]).into_owned());
                }
            }
            _ => i += 1,
        }
    }
    last
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        eps: f64,
        steps: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        lr: f64,
        epochs: u32,
        name: String,
        attack: Inner,
    }

    fn err(text: &str) -> String {
        parse::<Cfg>(text, "c.ron").unwrap_err().to_string()
    }

    #[test]
    fn wrong_type_errors_name_the_field_and_keep_the_position() {
        let e = err("(\n    lr: 0.1,\n    epochs: \"three\",\n    name: \"x\",\n    attack: (eps: 0.1, steps: 1),\n)");
        assert!(e.starts_with("config c.ron:3:"), "{e}");
        assert!(e.contains("field 'epochs'") && e.contains("Expected integer"), "{e}");
        // A nested field, after a string holding `fake:` and a comment holding `other:`.
        let e = err("(lr: 0.1, epochs: 1, name: \"fake: 1\", /* other: 2 */\n attack: (eps: 0.1, steps: -1))");
        assert!(e.starts_with("config c.ron:2:") && e.contains("field 'steps'"), "{e}");
        let e = err("(lr: true, epochs: 1, name: \"x\", attack: (eps: 0.1, steps: 1))");
        assert!(e.contains("field 'lr'"), "{e}");
    }

    #[test]
    fn syntax_errors_do_not_guess_a_field() {
        let e = err("(lr: 0.1, epochs 3, name: \"x\", attack: (eps: 0.1, steps: 1))");
        assert!(e.starts_with("config c.ron:1:") && !e.contains("field '"), "{e}");
    }

    #[test]
    fn field_before_skips_strings_and_comments() {
        assert_eq!(field_before("(a: 1, b: \"c: 2\", // d: 3\n e", 2, 3), Some("b".into()));
        assert_eq!(field_before("(x::y: 1", 1, 9), Some("y".into()));
        assert_eq!(field_before("(1, 2", 1, 5), None);
    }
}
