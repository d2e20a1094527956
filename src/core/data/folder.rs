//! Users' own data: a folder with one subfolder per class, or a CSV manifest `path,label[,group[,fold]]`.
use super::{Dataset, DecodeOpts, FilePolicy, Item, LoadReport, assemble, stratified_folds};
use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::path::Path;

#[derive(Debug, Clone, Default)]
pub struct ManifestOpts {
    pub decode: DecodeOpts,
    /// Class names in label order (ordinal data needs its own order); default: the labels found, sorted (numerically
    /// when they are all integers).
    pub classes: Option<Vec<String>>,
    /// Stratified folds to assign when the source has none (0 = none).
    pub folds: usize,
    pub seed: u64,
    pub skip_missing: bool,
    pub skip_bad: bool,
}

const IMAGE_EXT: [&str; 4] = ["jpg", "jpeg", "png", "JPG"];

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXT.contains(&e) || IMAGE_EXT.contains(&e.to_ascii_lowercase().as_str()))
}

/// Sorted class names: numerically when every name is an integer, else lexicographically.
fn sort_classes(mut v: Vec<String>) -> Vec<String> {
    if v.iter().all(|s| s.parse::<i64>().is_ok()) {
        v.sort_by_key(|s| s.parse::<i64>().unwrap_or(0));
    } else {
        v.sort();
    }
    v
}

/// Maps label names to indices under the given or derived class list.
fn class_index(found: &BTreeSet<String>, given: &Option<Vec<String>>, what: &str) -> Result<Vec<String>> {
    match given {
        Some(c) => {
            let set: BTreeSet<&String> = c.iter().collect();
            if set.len() != c.len() {
                bail!("classes {c:?} has duplicates");
            }
            if let Some(x) = found.iter().find(|f| !set.contains(f)) {
                bail!("{what}: label '{x}' is not in classes {c:?}");
            }
            Ok(c.clone())
        }
        None => Ok(sort_classes(found.iter().cloned().collect())),
    }
}

fn finish(mut ds: Dataset, o: &ManifestOpts, had_folds: bool) -> Result<Dataset> {
    if o.folds > 0 && !had_folds {
        ds.folds = stratified_folds(&ds.labels, ds.classes.len(), o.folds, o.seed);
    }
    Ok(ds)
}

/// A folder with one subfolder per class holding .jpg/.jpeg/.png images.
pub fn image_folder(root: &Path, o: &ManifestOpts) -> Result<Dataset> {
    o.decode.validate()?;
    let mut found = BTreeSet::new();
    for e in std::fs::read_dir(root).with_context(|| format!("image_folder: listing {}", root.display()))? {
        let e = e?;
        if e.path().is_dir() {
            found.insert(e.file_name().to_string_lossy().into_owned());
        }
    }
    if found.is_empty() {
        bail!("image_folder: {} has no class subfolders", root.display());
    }
    let classes = class_index(&found, &o.classes, &format!("image_folder {}", root.display()))?;
    let mut items = Vec::new();
    for (ci, c) in classes.iter().enumerate() {
        let dir = root.join(c);
        if !dir.is_dir() {
            continue; // a class given in `classes` with no folder: zero items
        }
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("image_folder: listing {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        files.sort();
        items.extend(files.into_iter().map(|path| Item { path, label: ci as i64, group: String::new(), fold: -1 }));
    }
    if items.is_empty() {
        bail!("image_folder: no .jpg/.jpeg/.png images under {}", root.display());
    }
    let report = LoadReport { total: items.len(), ..Default::default() };
    let policy = FilePolicy { skip_missing: o.skip_missing, skip_bad: o.skip_bad };
    let ds = assemble("image_folder", classes, items, report, &o.decode, policy)?;
    finish(ds, o, false)
}

/// A CSV manifest: columns `path,label[,group[,fold]]`, with or without a header line naming them (with a header
/// the columns may come in any order). Relative paths are relative to the manifest's folder. Errors name the line.
pub fn csv_manifest(path: &Path, o: &ManifestOpts) -> Result<Dataset> {
    o.decode.validate()?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("csv_manifest: opening {}", path.display()))?;
    let mut rows: Vec<(usize, String, String, String, Option<i64>)> = Vec::new();
    let (mut cp, mut cl, mut cg, mut cf) = (0usize, 1usize, Some(2usize), Some(3usize));
    for (i, rec) in rd.records().enumerate() {
        let rec = rec.with_context(|| format!("csv_manifest: reading {}", path.display()))?;
        let line = rec.position().map(|p| p.line() as usize).unwrap_or(i + 1);
        let at = || format!("{} line {line}", path.display());
        if i == 0 && rec.get(0).is_some_and(|h| h.eq_ignore_ascii_case("path")) {
            let col = |n: &str| rec.iter().position(|h| h.eq_ignore_ascii_case(n));
            cp = 0;
            cl = col("label").with_context(|| format!("{}: the header has no 'label' column", at()))?;
            cg = col("group");
            cf = col("fold");
            if let Some(x) =
                rec.iter().find(|h| !["path", "label", "group", "fold"].contains(&h.to_ascii_lowercase().as_str()))
            {
                bail!("{}: unknown column '{x}' (expected path, label, group, fold)", at());
            }
            continue;
        }
        if rec.len() < 2 || rec.len() > 4 {
            bail!("{}: expected path,label[,group[,fold]], found {} columns", at(), rec.len());
        }
        let get = |c: Option<usize>| c.and_then(|c| rec.get(c)).unwrap_or("").to_string();
        let p = get(Some(cp));
        let label = get(Some(cl));
        if p.is_empty() || label.is_empty() {
            bail!("{}: empty path or label", at());
        }
        let fold = match get(cf).as_str() {
            "" => None,
            f => Some(
                f.parse::<i64>()
                    .ok()
                    .filter(|v| *v >= 0)
                    .with_context(|| format!("{}: fold '{f}' is not a non-negative integer", at()))?,
            ),
        };
        rows.push((line, p, label, get(cg), fold));
    }
    if rows.is_empty() {
        bail!("csv_manifest: {} has no rows", path.display());
    }
    let found: BTreeSet<String> = rows.iter().map(|r| r.2.clone()).collect();
    let classes = class_index(&found, &o.classes, &format!("csv_manifest {}", path.display()))?;
    let had_folds = rows.iter().any(|r| r.4.is_some());
    if had_folds && let Some(r) = rows.iter().find(|r| r.4.is_none()) {
        bail!("{} line {}: some rows give a fold and this one does not", path.display(), r.0);
    }
    let items: Vec<Item> = rows
        .iter()
        .map(|(_, p, l, g, f)| Item {
            path: base.join(p),
            label: classes.iter().position(|c| c == l).unwrap_or(0) as i64,
            group: g.clone(),
            fold: f.unwrap_or(-1),
        })
        .collect();
    let report = LoadReport { total: items.len(), ..Default::default() };
    let policy = FilePolicy { skip_missing: o.skip_missing, skip_bad: o.skip_bad };
    let ds = assemble("csv_manifest", classes, items, report, &o.decode, policy)?;
    finish(ds, o, had_folds)
}
