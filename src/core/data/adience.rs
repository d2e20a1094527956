//! The Adience benchmark in its official layout: `fold_{0..4}_data.txt` (tab separated, header, 12 columns) and
//! `faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<original_image>`.
//!
//! Default age policy = the usual 5-fold protocol: keep the rows whose age is exactly one of the 8 standard strings
//! and count every other row by reason. `AgeMapping::Nearest` maps bare numbers and off-grid ranges to a group.
use super::{AGE_GROUPS, DecodeOpts, FilePolicy, Item, LoadReport, age_group_nearest, assemble};
use super::{AGE_RANGES, Dataset};
use anyhow::{Context, Result, bail};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The exact age strings of the 8 groups in the fold files.
pub const STANDARD_AGES: [&str; 8] =
    ["(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)"];

/// Column names of the fold files, in order.
pub const COLUMNS: [&str; 12] = [
    "user_id",
    "original_image",
    "face_id",
    "age",
    "gender",
    "x",
    "y",
    "dx",
    "dy",
    "tilt_ang",
    "fiducial_yaw_angle",
    "fiducial_score",
];

/// How non-standard age strings are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeMapping {
    /// Only the 8 standard strings; every other row is dropped and counted (the published protocol).
    Standard,
    /// Bare numbers go to the nearest group; an off-grid range `(a, b)` goes to the group starting at `a` if there
    /// is one (`(25, 23)`, `(38, 42)`, `(38, 48)`, `(8, 23)`), else to the group nearest its midpoint (`(27, 32)`).
    /// `None` is still dropped.
    Nearest,
}

impl AgeMapping {
    pub fn parse(s: &str) -> Result<AgeMapping> {
        match s {
            "standard" | "drop" => Ok(AgeMapping::Standard),
            "nearest" => Ok(AgeMapping::Nearest),
            _ => bail!("age_mapping '{s}': expected 'standard' (drop non-standard ages) or 'nearest'"),
        }
    }
}

/// What to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// 8 age groups.
    Age,
    /// male / female (rows with gender `u` or empty are dropped and counted).
    Gender,
}

impl Task {
    pub fn parse(s: &str) -> Result<Task> {
        match s {
            "age" => Ok(Task::Age),
            "gender" => Ok(Task::Gender),
            _ => bail!("task '{s}': expected 'age' or 'gender'"),
        }
    }
}

/// Which face crops to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceSet {
    /// `faces/<user>/coarse_tilt_aligned_face.<face_id>.<image>` (the benchmark's default crops).
    Faces,
    /// `aligned/<user>/landmark_aligned_face.<face_id>.<image>`.
    Aligned,
}

#[derive(Debug, Clone)]
pub struct AdienceOpts {
    pub decode: DecodeOpts,
    pub task: Task,
    pub age_mapping: AgeMapping,
    /// Drop the second copy of lines that occur twice (the published protocol keeps them).
    pub drop_duplicates: bool,
    pub skip_missing: bool,
    pub skip_bad: bool,
    pub faces: FaceSet,
}

impl Default for AdienceOpts {
    fn default() -> Self {
        AdienceOpts {
            decode: DecodeOpts { size: 64, ..DecodeOpts::default() },
            task: Task::Age,
            age_mapping: AgeMapping::Standard,
            drop_duplicates: false,
            skip_missing: false,
            skip_bad: false,
            faces: FaceSet::Faces,
        }
    }
}

/// An age string as written in the fold files.
#[derive(Debug, Clone, PartialEq)]
pub enum Age {
    /// One of the 8 standard strings (group index).
    Standard(usize),
    /// `(a, b)` that is not a standard string.
    Range(u32, u32),
    /// A bare number of years.
    Years(u32),
    /// `None`.
    Missing,
}

/// Parses an age field; `Err` for anything that is none of the known forms.
pub fn parse_age(s: &str) -> Result<Age> {
    if let Some(g) = STANDARD_AGES.iter().position(|a| *a == s) {
        return Ok(Age::Standard(g));
    }
    if s == "None" {
        return Ok(Age::Missing);
    }
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        return Ok(Age::Years(s.parse().with_context(|| format!("age '{s}' is too large"))?));
    }
    if let Some(inner) = s.strip_prefix('(').and_then(|r| r.strip_suffix(')'))
        && let Some((a, b)) = inner.split_once(',')
        && let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>())
    {
        return Ok(Age::Range(a, b));
    }
    bail!("age '{s}' is not a range '(a, b)', a number or None")
}

/// The group a non-standard age maps to under [`AgeMapping::Nearest`] (`None` for `Age::Missing`).
pub fn nearest_group(age: &Age) -> Option<usize> {
    match *age {
        Age::Standard(g) => Some(g),
        Age::Years(y) => Some(age_group_nearest(y as f64)),
        Age::Range(a, b) => Some(
            AGE_RANGES.iter().position(|r| r.0 == a).unwrap_or_else(|| age_group_nearest((a as f64 + b as f64) / 2.0)),
        ),
        Age::Missing => None,
    }
}

/// The drop reason for an age the standard policy leaves out.
fn age_reason(age: &Age) -> String {
    match age {
        Age::Range(a, b) => format!("age non-standard range ({a}, {b})"),
        Age::Years(_) => "age bare number".into(),
        Age::Missing => "age None".into(),
        Age::Standard(_) => "age standard".into(),
    }
}

/// One parsed row of a fold file.
#[derive(Debug, Clone)]
pub struct FoldRow {
    pub fold: i64,
    /// 1-based line number in its file.
    pub line: usize,
    pub user_id: String,
    pub original_image: String,
    pub face_id: i64,
    pub age: Age,
    pub gender: String,
    /// The raw line (duplicate detection).
    pub raw: String,
}

/// The fold file of fold `i` under `root`.
pub fn fold_file(root: &Path, i: usize) -> PathBuf {
    root.join(format!("fold_{i}_data.txt"))
}

/// Parses one fold file. Every error names the file and the line.
pub fn read_fold_file(path: &Path, fold: i64) -> Result<Vec<FoldRow>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading fold file {}", path.display()))?;
    let mut rows = Vec::new();
    let mut lines = text.split('\n').enumerate();
    let header = lines.next().map(|(_, l)| l.trim_end_matches('\r')).unwrap_or("");
    let cols: Vec<&str> = header.split('\t').map(|c| c.trim()).collect();
    if cols != COLUMNS {
        bail!("{} line 1: expected the header {:?}, got {:?}", path.display(), COLUMNS.join("\\t"), header);
    }
    for (i, line) in lines {
        let n = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue; // the final newline, or a blank line
        }
        let f: Vec<&str> = line.split('\t').collect();
        let at = || format!("{} line {n}", path.display());
        if f.len() != COLUMNS.len() {
            bail!("{}: expected {} tab-separated columns, found {}", at(), COLUMNS.len(), f.len());
        }
        if f[0].is_empty() || f[1].is_empty() {
            bail!("{}: empty user_id or original_image", at());
        }
        let face_id: i64 =
            f[2].trim().parse().with_context(|| format!("{}: face_id '{}' is not an integer", at(), f[2]))?;
        let age = parse_age(f[3]).with_context(at)?;
        rows.push(FoldRow {
            fold,
            line: n,
            user_id: f[0].to_string(),
            original_image: f[1].to_string(),
            face_id,
            age,
            gender: f[4].to_string(),
            raw: line.to_string(),
        });
    }
    Ok(rows)
}

/// Reads all five fold files and checks that no user occurs in two folds.
pub fn read_folds(root: &Path) -> Result<Vec<FoldRow>> {
    let mut all = Vec::new();
    let mut user_fold: HashMap<String, (i64, usize)> = HashMap::new();
    for i in 0..5 {
        let path = fold_file(root, i);
        if !path.is_file() {
            bail!(
                "adience: fold file {} not found (expected fold_0_data.txt .. fold_4_data.txt in {})",
                path.display(),
                root.display()
            );
        }
        for r in read_fold_file(&path, i as i64)? {
            match user_fold.get(&r.user_id) {
                Some(&(f, line)) if f != r.fold => bail!(
                    "adience: user '{}' is in fold {f} ({} line {line}) and in fold {} ({} line {}); the folds must be subject-disjoint",
                    r.user_id,
                    fold_file(root, f as usize).display(),
                    r.fold,
                    path.display(),
                    r.line
                ),
                Some(_) => {}
                None => {
                    user_fold.insert(r.user_id.clone(), (r.fold, r.line));
                }
            }
            all.push(r);
        }
    }
    Ok(all)
}

/// The image file of a row.
pub fn image_path(root: &Path, r: &FoldRow, faces: FaceSet) -> PathBuf {
    match faces {
        FaceSet::Faces => root
            .join("faces")
            .join(&r.user_id)
            .join(format!("coarse_tilt_aligned_face.{}.{}", r.face_id, r.original_image)),
        FaceSet::Aligned => root
            .join("aligned")
            .join(&r.user_id)
            .join(format!("landmark_aligned_face.{}.{}", r.face_id, r.original_image)),
    }
}

/// The label of a row under the options, or the reason it is left out.
fn label_of(r: &FoldRow, o: &AdienceOpts, report: &mut LoadReport) -> std::result::Result<i64, String> {
    match o.task {
        Task::Gender => match r.gender.as_str() {
            "m" => Ok(0),
            "f" => Ok(1),
            "" => Err("gender empty".into()),
            "u" => Err("gender u (unknown)".into()),
            g => Err(format!("gender '{g}'")),
        },
        Task::Age => match (&r.age, o.age_mapping) {
            (Age::Standard(g), _) => Ok(*g as i64),
            (a, AgeMapping::Standard) => Err(age_reason(a)),
            (a, AgeMapping::Nearest) => match nearest_group(a) {
                Some(g) => {
                    report.note(format!("mapped to the nearest group: {}", age_reason(a).trim_start_matches("age ")));
                    Ok(g as i64)
                }
                None => Err(age_reason(a)),
            },
        },
    }
}

/// The files a load would decode, before decoding: (name, classes, items, report so far). Reads and checks the
/// fold files; does not look at the images.
pub(crate) fn plan(root: &Path, o: &AdienceOpts) -> Result<(&'static str, Vec<String>, Vec<Item>, LoadReport)> {
    let rows = read_folds(root)?;
    let mut report = LoadReport { total: rows.len(), ..Default::default() };
    let mut seen: HashSet<&str> = HashSet::new();
    let mut items = Vec::new();
    for r in &rows {
        if !seen.insert(r.raw.as_str()) {
            if o.drop_duplicates {
                report.drop("duplicate line");
                continue;
            }
            report.note("duplicate lines kept (drop_duplicates: true drops them)");
        }
        match label_of(r, o, &mut report) {
            Ok(label) => {
                items.push(Item { path: image_path(root, r, o.faces), label, group: r.user_id.clone(), fold: r.fold })
            }
            Err(reason) => report.drop(reason),
        }
    }
    let classes: Vec<String> = match o.task {
        Task::Age => AGE_GROUPS.iter().map(|s| s.to_string()).collect(),
        Task::Gender => vec!["male".into(), "female".into()],
    };
    let name = match o.task {
        Task::Age => "adience",
        Task::Gender => "adience-gender",
    };
    Ok((name, classes, items, report))
}

/// Loads Adience from `root` (the folder with the fold files and `faces/`). Folds come from the fold files; groups
/// are the user ids.
pub fn adience(root: &Path, o: &AdienceOpts) -> Result<Dataset> {
    o.decode.validate()?;
    let (name, classes, items, report) = plan(root, o)?;
    let policy = FilePolicy { skip_missing: o.skip_missing, skip_bad: o.skip_bad };
    assemble(name, classes, items, report, &o.decode, policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_strings_parse() {
        assert_eq!(parse_age("(8, 12)").unwrap(), Age::Standard(2));
        assert_eq!(parse_age("(25, 23)").unwrap(), Age::Range(25, 23));
        assert_eq!(parse_age("(38, 42)").unwrap(), Age::Range(38, 42));
        assert_eq!(parse_age("35").unwrap(), Age::Years(35));
        assert_eq!(parse_age("None").unwrap(), Age::Missing);
        assert!(parse_age("(27").is_err());
        assert!(parse_age("").is_err());
    }

    #[test]
    fn nearest_mapping_of_the_real_off_grid_strings() {
        let g = |s: &str| AGE_GROUPS[nearest_group(&parse_age(s).unwrap()).unwrap()];
        assert_eq!(g("(25, 23)"), "25-32");
        assert_eq!(g("(27, 32)"), "25-32");
        assert_eq!(g("(38, 42)"), "38-43");
        assert_eq!(g("(38, 48)"), "38-43");
        assert_eq!(g("(8, 23)"), "8-13");
        assert_eq!(g("2"), "0-2");
        assert_eq!(g("13"), "8-13");
        assert_eq!(g("35"), "38-43");
        assert_eq!(g("57"), "60-");
        assert!(nearest_group(&Age::Missing).is_none());
    }
}
