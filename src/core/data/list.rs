//! `satm data list`: the data sets satm can find (under $SATM_DATA or the other data roots, and the bundled sample),
//! with their counts per class, image size and decode-cache state. Reads labels and file sizes only; decodes nothing.
use super::decode::{DecodeOpts, Resize};
use super::{Item, LoadReport, adience, cache, utkface};
use crate::core::paths::{self, DataSource};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// One data set found.
#[derive(Debug, Clone)]
pub struct Found {
    /// The folder name (`utkface`, `adience`, ...).
    pub name: String,
    /// `utkface`, `utkface sample` or `adience`.
    pub kind: String,
    pub path: PathBuf,
    /// Items a default load keeps, per class.
    pub per_class: Vec<(String, usize)>,
    /// The loader's report of a default load (rows, drops by reason; missing files counted).
    pub report: LoadReport,
    /// e.g. `200x200`, or `444x444 .. 601x600` when the sampled images differ.
    pub image_size: String,
    /// e.g. `32px: cached; 64px: not cached`.
    pub cache: String,
    /// Why a folder that looks like a data set could not be read (then the counts are empty).
    pub error: Option<String>,
}

/// The data roots to look in, with a label each: $SATM_DATA (or what stands in for it), the user data dir where
/// `satm data import` writes without $SATM_DATA, and the bundled sample.
pub fn roots() -> Vec<(String, PathBuf)> {
    let mut v = Vec::new();
    let (root, src) = paths::data_root_with_source();
    match src {
        DataSource::Env => v.push(("$SATM_DATA".to_string(), root)),
        DataSource::Shared => v.push(("../shared/data beside the checkout".to_string(), root)),
        DataSource::User | DataSource::Sample => {}
    }
    if let Some(u) = paths::user_data_dir()
        && u.is_dir()
        && !v.iter().any(|r| r.1 == u)
    {
        v.push(("imported (~/.local/share/satm/data)".to_string(), u));
    }
    v.push(("bundled sample".to_string(), paths::sample_root()));
    v
}

/// Every data set under `root` (one level of folders), sorted by name.
pub fn scan(root: &Path) -> Vec<Found> {
    let Ok(rd) = std::fs::read_dir(root) else { return vec![] };
    let mut dirs: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs.iter().filter(|d| !hidden(d)).filter_map(|d| inspect(d)).collect()
}

fn hidden(p: &Path) -> bool {
    p.file_name().map(|n| n.to_string_lossy().starts_with('.')).unwrap_or(true)
}

/// What `dir` holds, if it is a data set satm can load.
pub fn inspect(dir: &Path) -> Option<Found> {
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let mut f = Found {
        name,
        kind: String::new(),
        path: dir.to_path_buf(),
        per_class: vec![],
        report: LoadReport::default(),
        image_size: "-".into(),
        cache: "-".into(),
        error: None,
    };
    if adience::fold_file(dir, 0).is_file() {
        f.kind = "adience".into();
        match adience::plan(dir, &adience::AdienceOpts::default()) {
            Ok((tag, classes, items, report)) => fill(&mut f, tag, &classes, items, report),
            Err(e) => f.error = Some(format!("{e:#}")),
        }
    } else if utkface::is_sample(dir) {
        f.kind = "utkface sample".into();
        let file = dir.join(paths::SAMPLE_FILE);
        let o = utkface::UtkOpts { folds: 0, ..Default::default() };
        match utkface::read_sample(&file) {
            Ok(s) => {
                let mut report = LoadReport::default();
                match utkface::label_rows(&s.rows, &o, &mut report) {
                    Ok(kept) => {
                        report.kept = kept.len();
                        let classes = utkface::classes(o.task);
                        let mut c = vec![0usize; classes.len()];
                        for k in &kept {
                            c[k.1 as usize] += 1;
                        }
                        f.per_class = classes.into_iter().zip(c).collect();
                        f.report = report;
                        let sz = s.images.size();
                        f.image_size = format!("{}x{}", sz[2], sz[3]);
                        f.cache = "not needed (stored decoded)".into();
                    }
                    Err(e) => f.error = Some(format!("{e:#}")),
                }
            }
            Err(e) => f.error = Some(format!("{e:#}")),
        }
    } else if dir.join("labels.csv").is_file() || has_utk_jpgs(&utkface::image_dir(dir)) {
        f.kind = "utkface".into();
        let o = utkface::UtkOpts { folds: 0, ..Default::default() };
        match utkface::plan(dir, &o) {
            Ok((classes, items, report)) => fill(&mut f, "utkface", &classes, items, report),
            Err(e) => f.error = Some(format!("{e:#}")),
        }
    } else {
        return None;
    }
    Some(f)
}

fn has_utk_jpgs(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).any(|e| utkface::parse_name(&e.file_name().to_string_lossy()).is_some()))
        .unwrap_or(false)
}

fn fill(f: &mut Found, tag: &str, classes: &[String], items: Vec<Item>, mut report: LoadReport) {
    let (present, missing): (Vec<Item>, Vec<Item>) = items.into_iter().partition(|it| it.path.is_file());
    for _ in &missing {
        report.drop("image file missing");
    }
    report.kept = present.len();
    let mut c = vec![0usize; classes.len()];
    for it in &present {
        c[it.label as usize] += 1;
    }
    f.per_class = classes.iter().cloned().zip(c).collect();
    f.report = report;
    f.image_size = image_sizes(&present);
    f.cache = cache_state(tag, &present);
}

/// The sizes of up to 16 images spread over the data set: one size, or the smallest .. largest.
fn image_sizes(items: &[Item]) -> String {
    if items.is_empty() {
        return "-".into();
    }
    let step = items.len().div_ceil(16).max(1);
    let mut sizes: Vec<(u32, u32)> =
        items.iter().step_by(step).filter_map(|it| image::image_dimensions(&it.path).ok()).collect();
    sizes.sort_by_key(|&(w, h)| (w as u64 * h as u64, w));
    match (sizes.first(), sizes.last()) {
        (Some(a), Some(b)) if a == b => format!("{}x{}", a.0, a.1),
        (Some(a), Some(b)) => format!("{}x{} .. {}x{} (of {} sampled)", a.0, a.1, b.0, b.1, sizes.len()),
        _ => "unreadable".into(),
    }
}

/// Whether the decode cache holds a default load (every kept file, center crop) at the scripts' sizes 32 and 64.
fn cache_state(tag: &str, present: &[Item]) -> String {
    let paths: Vec<PathBuf> = present.iter().map(|it| it.path.clone()).collect();
    let dir = cache::default_dir();
    let mut parts = Vec::new();
    for size in [32i64, 64] {
        let o = DecodeOpts { size, resize: Resize::CenterCrop, ..DecodeOpts::default() };
        let state = match cache::key(&paths, &o) {
            Ok(k) if cache::path_for(&dir, tag, &k, paths.len(), size).is_file() => "cached",
            Ok(_) => "not cached",
            Err(_) => "?",
        };
        parts.push(format!("{size}px {state}"));
    }
    format!("{} (full load; {})", parts.join(", "), dir.display())
}

/// The text `satm data list` prints.
pub fn render() -> Result<String> {
    let mut s = String::new();
    for (label, root) in roots() {
        s.push_str(&format!("{label}: {}\n", root.display()));
        let found = scan(&root);
        if found.is_empty() {
            s.push_str("  (no data sets)\n");
        }
        for f in found {
            s.push_str(&format!("  {} ({}) {}\n", f.name, f.kind, f.path.display()));
            if let Some(e) = &f.error {
                s.push_str(&format!("    cannot be read: {}\n", e.replace('\n', "\n    ")));
                continue;
            }
            let total: usize = f.per_class.iter().map(|c| c.1).sum();
            let pc: Vec<String> = f.per_class.iter().map(|(c, n)| format!("{c} {n}")).collect();
            s.push_str(&format!("    {total} items (default options): {}\n", pc.join(", ")));
            if f.report.dropped_total() > 0 {
                let d: Vec<String> = f.report.dropped.iter().map(|(r, n)| format!("{n} {r}")).collect();
                s.push_str(&format!("    left out of {} rows: {}\n", f.report.total, d.join("; ")));
            }
            s.push_str(&format!("    image size {}; cache: {}\n", f.image_size, f.cache));
        }
    }
    if std::env::var_os("SATM_DATA").is_none() {
        s.push_str(
            "(SATM_DATA is not set; `satm data import` writes to ~/.local/share/satm/data unless --to DIR or SATM_DATA says otherwise)\n",
        );
    }
    Ok(s)
}
