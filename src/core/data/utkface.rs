//! UTKFace: labels from the shipped `labels.csv` (columns `file,age,gender,race`) or from file names
//! `age_gender_race_datetime.jpg(.chip.jpg)`; ages mapped to the 8 Adience groups; seeded stratified folds.
use super::{AGE_GROUPS, DecodeOpts, FilePolicy, Item, LoadReport, age_group_exact, age_group_nearest, assemble};
use super::{Dataset, stratified_folds, stratified_take};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// How an age in years becomes one of the 8 Adience groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UtkMapping {
    /// Ages inside a group's range only; ages in the gaps (3, 7, 14, 21-24, ...) are left out.
    Drop,
    /// The group whose range is nearest; ties go to the older group.
    Nearest,
}

impl UtkMapping {
    pub fn parse(s: &str) -> Result<UtkMapping> {
        match s {
            "drop" => Ok(UtkMapping::Drop),
            "nearest" => Ok(UtkMapping::Nearest),
            _ => bail!("mapping '{s}': expected 'drop' or 'nearest'"),
        }
    }
}

/// What to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UtkTask {
    Age,
    Gender,
}

#[derive(Debug, Clone)]
pub struct UtkOpts {
    pub decode: DecodeOpts,
    pub mapping: UtkMapping,
    pub task: UtkTask,
    /// Number of stratified folds (0 = none assigned).
    pub folds: usize,
    /// Seed of the fold assignment and of `limit`.
    pub seed: u64,
    /// Take a seeded stratified subset of this many items (before decoding).
    pub limit: Option<usize>,
    pub skip_missing: bool,
    pub skip_bad: bool,
}

impl Default for UtkOpts {
    fn default() -> Self {
        UtkOpts {
            decode: DecodeOpts::default(),
            mapping: UtkMapping::Drop,
            task: UtkTask::Age,
            folds: 5,
            seed: 0,
            limit: None,
            skip_missing: false,
            skip_bad: false,
        }
    }
}

/// One labelled UTKFace file.
#[derive(Debug, Clone, PartialEq)]
pub struct UtkRow {
    pub file: String,
    pub age: u32,
    /// 0 = male, 1 = female.
    pub gender: u8,
    /// 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others.
    pub race: u8,
}

/// Parses a UTKFace file name `age_gender_race_datetime.jpg[.chip.jpg]`; `None` when it does not follow the pattern.
pub fn parse_name(file: &str) -> Option<UtkRow> {
    let stem = file.strip_suffix(".jpg.chip.jpg").or_else(|| file.strip_suffix(".jpg"))?;
    let parts: Vec<&str> = stem.split('_').collect();
    if parts.len() != 4 || parts[3].is_empty() || !parts[3].chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let age: u32 = parts[0].parse().ok()?;
    let gender: u8 = parts[1].parse().ok().filter(|g| *g <= 1)?;
    let race: u8 = parts[2].parse().ok().filter(|r| *r <= 4)?;
    Some(UtkRow { file: file.to_string(), age, gender, race })
}

/// Reads `labels.csv` (header with at least `file`, `age`, `gender`; `race` optional). Errors name file and line.
pub fn read_labels_csv(path: &Path) -> Result<Vec<UtkRow>> {
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let header = rd.headers().with_context(|| format!("{} line 1: cannot read the header", path.display()))?.clone();
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let (Some(cf), Some(ca), Some(cg)) = (col("file"), col("age"), col("gender")) else {
        bail!(
            "{} line 1: header must name columns file, age, gender (race optional); got {:?}",
            path.display(),
            header
        );
    };
    let cr = col("race");
    let mut rows = Vec::new();
    for rec in rd.records() {
        let rec = rec.with_context(|| format!("reading {}", path.display()))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let at = |c: usize| rec.get(c).unwrap_or("").trim();
        let where_ = || format!("{} line {line}", path.display());
        let file = at(cf).to_string();
        if file.is_empty() {
            bail!("{}: empty file name", where_());
        }
        let age: u32 =
            at(ca).parse().with_context(|| format!("{}: age '{}' is not a whole number", where_(), at(ca)))?;
        let gender: u8 = match at(cg) {
            "0" => 0,
            "1" => 1,
            g => bail!("{}: gender '{g}' is not 0 (male) or 1 (female)", where_()),
        };
        let race: u8 = match cr {
            Some(c) => at(c)
                .parse()
                .ok()
                .filter(|r| *r <= 4)
                .with_context(|| format!("{}: race '{}' is not 0-4", where_(), at(c)))?,
            None => 4,
        };
        rows.push(UtkRow { file, age, gender, race });
    }
    Ok(rows)
}

/// The folder holding the images: `<root>/images` when it exists, else `root` itself.
pub fn image_dir(root: &Path) -> PathBuf {
    let d = root.join("images");
    if d.is_dir() { d } else { root.to_path_buf() }
}

/// Loads UTKFace from `root` (the folder with `labels.csv` and `images/`, or a folder of UTKFace-named files).
pub fn utkface(root: &Path, o: &UtkOpts) -> Result<Dataset> {
    o.decode.validate()?;
    if !root.is_dir() {
        bail!("utkface: {} is not a directory", root.display());
    }
    let imgs = image_dir(root);
    let csv = root.join("labels.csv");
    let mut report = LoadReport::default();
    let rows: Vec<UtkRow> = if csv.is_file() {
        read_labels_csv(&csv)?
    } else {
        let mut names: Vec<String> = std::fs::read_dir(&imgs)
            .with_context(|| format!("listing {}", imgs.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.to_ascii_lowercase().ends_with(".jpg"))
            .collect();
        names.sort();
        let mut rows = Vec::new();
        for n in names {
            match parse_name(&n) {
                Some(r) => rows.push(r),
                None => {
                    report.total += 1;
                    report.drop("file name does not parse as age_gender_race_datetime.jpg");
                }
            }
        }
        rows
    };
    report.total += rows.len();
    let classes: Vec<String> = match o.task {
        UtkTask::Age => AGE_GROUPS.iter().map(|s| s.to_string()).collect(),
        UtkTask::Gender => vec!["male".into(), "female".into()],
    };
    let mut kept: Vec<(&UtkRow, i64)> = Vec::new();
    for r in &rows {
        let label = match o.task {
            UtkTask::Gender => Some(r.gender as i64),
            UtkTask::Age => match o.mapping {
                UtkMapping::Drop => age_group_exact(r.age).map(|g| g as i64),
                UtkMapping::Nearest => Some(age_group_nearest(r.age as f64) as i64),
            },
        };
        match label {
            Some(l) => kept.push((r, l)),
            None => report.drop("age in a gap between groups (mapping: drop)"),
        }
    }
    if let Some(n) = o.limit {
        if n == 0 {
            bail!("utkface: limit must be at least 1");
        }
        let labels: Vec<i64> = kept.iter().map(|k| k.1).collect();
        let take = stratified_take(&labels, classes.len(), n, o.seed);
        let before = kept.len();
        kept = take.into_iter().map(|i| kept[i]).collect();
        for _ in kept.len()..before {
            report.note("rows left out by limit");
        }
    }
    let items: Vec<Item> = kept
        .iter()
        .map(|(r, l)| Item { path: imgs.join(&r.file), label: *l, group: String::new(), fold: -1 })
        .collect();
    let policy = FilePolicy { skip_missing: o.skip_missing, skip_bad: o.skip_bad };
    let mut ds = assemble("utkface", classes, items, report, &o.decode, policy)?;
    // Folds after every drop, so each fold is stratified over the items actually present.
    if o.folds > 0 {
        if o.folds > ds.len() {
            bail!("utkface: {} folds for {} items", o.folds, ds.len());
        }
        ds.folds = stratified_folds(&ds.labels, ds.classes.len(), o.folds, o.seed);
    }
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_parse() {
        let r = parse_name("26_1_2_20170116174525125.jpg.chip.jpg").unwrap();
        assert_eq!((r.age, r.gender, r.race), (26, 1, 2));
        assert!(parse_name("61_1_20170109142408075.jpg.chip.jpg").is_none());
        assert!(parse_name("26_2_2_20170116174525125.jpg").is_none());
        assert_eq!(parse_name("3_0_4_1.jpg").map(|r| r.age), Some(3));
    }
}
