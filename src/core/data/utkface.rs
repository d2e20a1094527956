//! UTKFace: labels from the shipped `labels.csv` (columns `file,age,gender,race`) or from file names
//! `age_gender_race_datetime.jpg(.chip.jpg)`; ages mapped to the 8 Adience groups; seeded stratified folds.
use super::{AGE_GROUPS, DecodeOpts, FilePolicy, Item, LoadReport, age_group_exact, age_group_nearest, assemble};
use super::{Dataset, stratified_folds, stratified_take};
use anyhow::{Context, Result, bail};
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

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

/// Whether `root` is the bundled sample's folder (its safetensors file and no labels.csv / images/ beside it).
pub fn is_sample(root: &Path) -> bool {
    root.join(crate::core::paths::SAMPLE_FILE).is_file()
        && !root.join("labels.csv").is_file()
        && !root.join("images").is_dir()
}

/// The labelled rows of a UTKFace folder: from `labels.csv` when present, else from the names of the `.jpg` files in
/// [`image_dir`] (names that do not parse are counted in the report as dropped).
pub fn read_rows(root: &Path, report: &mut LoadReport) -> Result<Vec<UtkRow>> {
    let imgs = image_dir(root);
    let csv = root.join("labels.csv");
    if csv.is_file() {
        return read_labels_csv(&csv);
    }
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
                report.drop(NAME_REASON);
            }
        }
    }
    Ok(rows)
}

/// The drop reason of a file whose name is not `age_gender_race_datetime.jpg`.
pub const NAME_REASON: &str = "file name does not parse as age_gender_race_datetime.jpg";
/// The drop reason of an age between two groups under [`UtkMapping::Drop`].
pub const GAP_REASON: &str = "age in a gap between groups (mapping: drop)";

/// The class names for a task.
pub fn classes(task: UtkTask) -> Vec<String> {
    match task {
        UtkTask::Age => AGE_GROUPS.iter().map(|s| s.to_string()).collect(),
        UtkTask::Gender => vec!["male".into(), "female".into()],
    }
}

/// Labels `rows` under the options (mapping, task) and applies `limit`: (row index, label) of the items kept, in row
/// order. Gap ages under `mapping: drop` are counted in the report.
pub fn label_rows(rows: &[UtkRow], o: &UtkOpts, report: &mut LoadReport) -> Result<Vec<(usize, i64)>> {
    report.total += rows.len();
    let mut kept: Vec<(usize, i64)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let label = match o.task {
            UtkTask::Gender => Some(r.gender as i64),
            UtkTask::Age => match o.mapping {
                UtkMapping::Drop => age_group_exact(r.age).map(|g| g as i64),
                UtkMapping::Nearest => Some(age_group_nearest(r.age as f64) as i64),
            },
        };
        match label {
            Some(l) => kept.push((i, l)),
            None => report.drop(GAP_REASON),
        }
    }
    if let Some(n) = o.limit {
        if n == 0 {
            bail!("utkface: limit must be at least 1");
        }
        let labels: Vec<i64> = kept.iter().map(|k| k.1).collect();
        let take = stratified_take(&labels, classes(o.task).len(), n, o.seed);
        let before = kept.len();
        kept = take.into_iter().map(|i| kept[i]).collect();
        for _ in kept.len()..before {
            report.note("rows left out by limit");
        }
    }
    Ok(kept)
}

/// The files a load of a UTKFace folder would decode, before decoding: (classes, items, report so far).
pub(crate) fn plan(root: &Path, o: &UtkOpts) -> Result<(Vec<String>, Vec<Item>, LoadReport)> {
    let mut report = LoadReport::default();
    let rows = read_rows(root, &mut report)?;
    let kept = label_rows(&rows, o, &mut report)?;
    let imgs = image_dir(root);
    let items = kept
        .iter()
        .map(|&(i, l)| Item { path: imgs.join(&rows[i].file), label: l, group: String::new(), fold: -1 })
        .collect();
    Ok((classes(o.task), items, report))
}

/// Loads UTKFace from `root` (the folder with `labels.csv` and `images/`, a folder of UTKFace-named files, or the
/// bundled sample's folder).
pub fn utkface(root: &Path, o: &UtkOpts) -> Result<Dataset> {
    o.decode.validate()?;
    if !root.is_dir() {
        bail!("utkface: {} is not a directory", root.display());
    }
    let mut ds = if is_sample(root) {
        sample_dataset(&root.join(crate::core::paths::SAMPLE_FILE), o)?
    } else {
        let (classes, items, report) = plan(root, o)?;
        let policy = FilePolicy { skip_missing: o.skip_missing, skip_bad: o.skip_bad };
        assemble("utkface", classes, items, report, &o.decode, policy)?
    };
    // Folds after every drop, so each fold is stratified over the items actually present.
    if o.folds > 0 {
        if o.folds > ds.len() {
            bail!("utkface: {} folds for {} items", o.folds, ds.len());
        }
        ds.folds = stratified_folds(&ds.labels, ds.classes.len(), o.folds, o.seed);
    }
    Ok(ds)
}

/// A sample file: u8 `images` [N, 3, S, S], u8 `age`, `gender`, `race` [N], the file names in the metadata.
pub struct Sample {
    pub images: Tensor,
    pub rows: Vec<UtkRow>,
}

/// Reads a sample file written by tools/make_sample.py. Errors name the file and what is wrong with it.
pub fn read_sample(path: &Path) -> Result<Sample> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bad = |what: String| anyhow::anyhow!("{}: not a satm UTKFace sample: {what}", path.display());
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("{e}")))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("{e}")))?;
    let files: Vec<String> = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("files"))
        .ok_or_else(|| bad("no 'files' in the metadata".into()))
        .and_then(|f| serde_json::from_str(f).map_err(|e| bad(format!("metadata 'files': {e}"))))?;
    let n = files.len();
    let u8s = |name: &str, shape: &[usize]| -> Result<Vec<u8>> {
        let t = st.tensor(name).map_err(|e| bad(format!("tensor '{name}': {e}")))?;
        if t.dtype() != Dtype::U8 || t.shape() != shape {
            return Err(bad(format!("tensor '{name}' is {:?} {:?}, expected U8 {shape:?}", t.dtype(), t.shape())));
        }
        Ok(t.data().to_vec())
    };
    let img = st.tensor("images").map_err(|e| bad(format!("tensor 'images': {e}")))?;
    let sh = img.shape().to_vec();
    if sh.len() != 4 || sh[0] != n || sh[1] != 3 || sh[2] != sh[3] || sh[2] == 0 {
        return Err(bad(format!("images has shape {sh:?}, expected [{n}, 3, S, S]")));
    }
    let px = u8s("images", &sh)?;
    let (age, gender, race) = (u8s("age", &[n])?, u8s("gender", &[n])?, u8s("race", &[n])?);
    let rows = (0..n)
        .map(|i| UtkRow { file: files[i].clone(), age: age[i] as u32, gender: gender[i], race: race[i] })
        .collect();
    let dims: Vec<i64> = sh.iter().map(|&d| d as i64).collect();
    let images = Tensor::f_from_data_size(&px, &dims, Kind::Uint8)?;
    Ok(Sample { images, rows })
}

/// The bundled sample as a dataset under the options (mapping, task, limit); other sizes than the stored one are
/// resized (bilinear, antialiased) from the stored pixels, and the report notes it.
fn sample_dataset(path: &Path, o: &UtkOpts) -> Result<Dataset> {
    let s = read_sample(path)?;
    let mut report = LoadReport::default();
    let kept = label_rows(&s.rows, o, &mut report)?;
    if kept.is_empty() {
        bail!("utkface: no items left in the sample\n{}", report.summary("utkface"));
    }
    let idx: Vec<i64> = kept.iter().map(|k| k.0 as i64).collect();
    let mut images = s.images.f_index_select(0, &Tensor::from_slice(&idx))?;
    let stored = images.size()[2];
    let size = o.decode.size;
    if size != stored {
        images = images
            .f_to_kind(Kind::Float)?
            .f_internal_upsample_bilinear2d_aa([size, size], false, None, None)?
            .f_round()?
            .f_clamp(0.0, 255.0)?
            .f_to_kind(Kind::Uint8)?;
        report.note(format!("images resized from the sample's {stored}x{stored} to {size}x{size}"));
    }
    let mut ds = Dataset::new(
        "utkface",
        images,
        kept.iter().map(|k| k.1).collect(),
        classes(o.task),
        vec![],
        vec![],
        kept.iter().map(|k| s.rows[k.0].file.clone()).collect(),
    )?;
    report.kept = ds.len();
    ds.report = report;
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
