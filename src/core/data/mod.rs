//! Data: the Adience protocol, UTKFace, image folders, CSV manifests, synthetic data, cached tensors, batches.
//!
//! Every loader returns a [`Dataset`]: all images decoded once into a u8 `[N, 3, H, W]` CPU tensor plus per-item
//! labels, groups (subjects), folds and source paths. Batching then is an `index_select` and a conversion per batch.
pub mod adience;
mod batches;
pub mod cache;
pub mod decode;
pub mod folder;
pub mod rng;
pub mod synthetic;
pub mod utkface;

pub use adience::{AdienceOpts, AgeMapping, FaceSet, Task, adience};
pub use batches::{Batch, BatchOpts, Batches, CROP_PAD, augment};
pub use decode::{DecodeOpts, Resize};
pub use folder::{ManifestOpts, csv_manifest, image_folder};
pub use synthetic::{SyntheticOpts, synthetic};
pub use utkface::{UtkMapping, UtkOpts, UtkTask, utkface};

use crate::core::report::{Cell, Table};
use anyhow::{Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use tch::{Kind, Tensor};

/// A zeroed buffer of `n × item` bytes, or an error naming `what` when it cannot be had. `vec![0; n]` would abort
/// the whole process (a REPL session included) on an absurd size from a script instead of reporting it.
pub(crate) fn zeroed_bytes(n: usize, item: usize, what: &str) -> Result<Vec<u8>> {
    let len = n.checked_mul(item).ok_or_else(|| anyhow::anyhow!("{what}: {n} × {item} bytes overflows"))?;
    // try_reserve succeeds for more than the machine has when the kernel overcommits; touching it would then kill us.
    crate::core::mem::check_bytes(what, "the pixel buffer", Some(len as u128), tch::Device::Cpu)?;
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        anyhow::anyhow!("{what}: cannot allocate {:.1} GiB of memory", len as f64 / (1u64 << 30) as f64)
    })?;
    v.resize(len, 0);
    Ok(v)
}

/// The 8 Adience age groups, in order (the class names of every age dataset).
pub const AGE_GROUPS: [&str; 8] = ["0-2", "4-6", "8-13", "15-20", "25-32", "38-43", "48-53", "60-"];

/// Inclusive year ranges of [`AGE_GROUPS`]; the last is open ended.
pub const AGE_RANGES: [(u32, u32); 8] =
    [(0, 2), (4, 6), (8, 13), (15, 20), (25, 32), (38, 43), (48, 53), (60, u32::MAX)];

/// The group containing `age`, if any (ages in the gaps between groups have none).
pub fn age_group_exact(age: u32) -> Option<usize> {
    AGE_RANGES.iter().position(|&(lo, hi)| (lo..=hi).contains(&age))
}

/// The group whose range is nearest to `age` (distance in years to the range); ties go to the older group.
pub fn age_group_nearest(age: f64) -> usize {
    let mut best = 0;
    let mut best_d = f64::INFINITY;
    for (g, &(lo, hi)) in AGE_RANGES.iter().enumerate() {
        let d = if age < lo as f64 {
            lo as f64 - age
        } else if age > hi as f64 {
            age - hi as f64
        } else {
            0.0
        };
        // `<=` so that a tie goes to the later (older) group.
        if d <= best_d {
            best = g;
            best_d = d;
        }
    }
    best
}

/// What a loader left out, and why: dropped rows by reason (in first-seen order) and informational counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Rows (or files) the label source held.
    pub total: usize,
    /// Items in the dataset.
    pub kept: usize,
    /// Rows left out, by reason (e.g. `age "(25, 23)": non-standard range`).
    pub dropped: Vec<(String, usize)>,
    /// Counts that did not drop anything (e.g. duplicate lines kept, as the published protocol does).
    pub info: Vec<(String, usize)>,
}

impl LoadReport {
    /// Counts one dropped row under `reason`.
    pub fn drop(&mut self, reason: impl Into<String>) {
        bump(&mut self.dropped, reason.into());
    }
    /// Counts one informational event under `what`.
    pub fn note(&mut self, what: impl Into<String>) {
        bump(&mut self.info, what.into());
    }
    pub fn dropped_total(&self) -> usize {
        self.dropped.iter().map(|d| d.1).sum()
    }
    /// The count for one drop reason (0 when absent).
    pub fn dropped_for(&self, reason: &str) -> usize {
        self.dropped.iter().find(|d| d.0 == reason).map(|d| d.1).unwrap_or(0)
    }
    /// A few lines for the console: kept / dropped with reasons.
    pub fn summary(&self, name: &str) -> String {
        let mut s = format!("{name}: kept {} of {} rows", self.kept, self.total);
        if !self.dropped.is_empty() {
            s.push_str(&format!("; dropped {}:", self.dropped_total()));
            for (r, c) in &self.dropped {
                s.push_str(&format!("\n  {c:>6}  {r}"));
            }
        }
        for (r, c) in &self.info {
            s.push_str(&format!("\n  note: {c} {r}"));
        }
        s
    }
}

fn bump(v: &mut Vec<(String, usize)>, k: String) {
    match v.iter_mut().find(|e| e.0 == k) {
        Some(e) => e.1 += 1,
        None => v.push((k, 1)),
    }
}

/// A labelled image dataset held in memory.
pub struct Dataset {
    pub name: String,
    /// u8 `[N, 3, H, W]` on the CPU (decoded and resized once).
    pub images: Tensor,
    /// Class index per item.
    pub labels: Vec<i64>,
    /// Subject / user id per item ("" when unknown): validation splits keep a group on one side.
    pub groups: Vec<String>,
    /// Cross-validation fold per item (-1 when none assigned).
    pub folds: Vec<i64>,
    /// Class names, e.g. `["0-2", "4-6", ..., "60-"]`.
    pub classes: Vec<String>,
    /// Source file per item ("" for synthetic data).
    pub paths: Vec<String>,
    /// What the loader left out and why (empty for derived datasets and synthetic data).
    pub report: LoadReport,
}

impl Dataset {
    /// A dataset from parts, checking that every per-item vector has one entry per image and labels are in range.
    /// `groups`/`folds`/`paths` may be empty (filled with "", -1, "").
    pub fn new(
        name: impl Into<String>,
        images: Tensor,
        labels: Vec<i64>,
        classes: Vec<String>,
        groups: Vec<String>,
        folds: Vec<i64>,
        paths: Vec<String>,
    ) -> Result<Dataset> {
        let name = name.into();
        let sz = images.size();
        if sz.len() != 4 || sz[1] != 3 || images.kind() != Kind::Uint8 {
            bail!("dataset '{name}': images must be u8 [N, 3, H, W], got {:?} {sz:?}", images.kind());
        }
        let n = sz[0] as usize;
        let groups = if groups.is_empty() { vec![String::new(); n] } else { groups };
        let folds = if folds.is_empty() { vec![-1; n] } else { folds };
        let paths = if paths.is_empty() { vec![String::new(); n] } else { paths };
        for (what, len) in
            [("labels", labels.len()), ("groups", groups.len()), ("folds", folds.len()), ("paths", paths.len())]
        {
            if len != n {
                bail!("dataset '{name}': {n} images but {len} {what}");
            }
        }
        if let Some(l) = labels.iter().find(|&&l| l < 0 || l as usize >= classes.len()) {
            bail!("dataset '{name}': label {l} outside 0..{}", classes.len());
        }
        let images = images.f_to_device(tch::Device::Cpu)?;
        Ok(Dataset { name, images, labels, groups, folds, classes, paths, report: LoadReport::default() })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn num_classes(&self) -> i64 {
        self.classes.len() as i64
    }
    /// Image (height, width).
    pub fn size(&self) -> (i64, i64) {
        let s = self.images.size();
        (s[2], s[3])
    }

    /// The items at `idx` (in that order; repeats allowed), as a new dataset sharing nothing mutable.
    pub fn subset(&self, idx: &[i64]) -> Result<Dataset> {
        let n = self.len() as i64;
        if let Some(&bad) = idx.iter().find(|&&i| i < 0 || i >= n) {
            bail!("dataset '{}': index {bad} out of range 0..{n}", self.name);
        }
        let images = if idx.is_empty() {
            let (h, w) = self.size();
            Tensor::f_zeros([0, 3, h, w], (Kind::Uint8, tch::Device::Cpu))?
        } else {
            self.images.f_index_select(0, &Tensor::from_slice(idx))?
        };
        let pick = |i: &i64| *i as usize;
        Ok(Dataset {
            name: self.name.clone(),
            images,
            labels: idx.iter().map(|i| self.labels[pick(i)]).collect(),
            groups: idx.iter().map(|i| self.groups[pick(i)].clone()).collect(),
            folds: idx.iter().map(|i| self.folds[pick(i)]).collect(),
            classes: self.classes.clone(),
            paths: idx.iter().map(|i| self.paths[pick(i)].clone()).collect(),
            report: LoadReport::default(),
        })
    }

    /// The folds present (sorted, without -1).
    pub fn fold_ids(&self) -> Vec<i64> {
        self.folds.iter().copied().filter(|&f| f >= 0).collect::<BTreeSet<_>>().into_iter().collect()
    }

    /// Cross-validation split: (train = every other assigned fold, test = fold `test_fold`).
    pub fn fold_split(&self, test_fold: i64) -> Result<(Dataset, Dataset)> {
        let ids = self.fold_ids();
        if ids.is_empty() {
            bail!("dataset '{}' has no folds (utkface: set folds; synthetic: set folds)", self.name);
        }
        if !ids.contains(&test_fold) {
            bail!("dataset '{}': fold {test_fold} does not exist; folds are {ids:?}", self.name);
        }
        let test: Vec<i64> = (0..self.len() as i64).filter(|&i| self.folds[i as usize] == test_fold).collect();
        let train: Vec<i64> = (0..self.len() as i64)
            .filter(|&i| self.folds[i as usize] >= 0 && self.folds[i as usize] != test_fold)
            .collect();
        if train.is_empty() {
            bail!("dataset '{}': fold {test_fold} is the only fold, nothing left to train on", self.name);
        }
        let mut tr = self.subset(&train)?;
        let mut te = self.subset(&test)?;
        tr.name = format!("{}[train; test fold {test_fold}]", self.name);
        te.name = format!("{}[test fold {test_fold}]", self.name);
        Ok((tr, te))
    }

    /// A validation split of about `frac` of the items: whole groups (subjects) when groups are known, so no subject
    /// is on both sides; else stratified by class. Returns (train, val).
    pub fn split_val(&self, frac: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(frac > 0.0 && frac < 1.0) {
            bail!("split fraction must be in (0, 1), got {frac}");
        }
        let n = self.len();
        if n < 2 {
            bail!("dataset '{}' has {n} item(s); cannot split", self.name);
        }
        let mut is_val = vec![false; n];
        if self.groups.iter().any(|g| !g.is_empty()) {
            // Groups in sorted order, then shuffled: the split depends on the seed only, not on item order.
            let mut by_group: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for (i, g) in self.groups.iter().enumerate() {
                by_group.entry(g.as_str()).or_default().push(i);
            }
            let mut groups: Vec<&Vec<usize>> = by_group.values().collect();
            if groups.len() < 2 {
                bail!("dataset '{}': all items belong to one group; cannot split by group", self.name);
            }
            rng::shuffle(&mut groups, &mut rng::chacha(seed, 11));
            let target = (frac * n as f64).round().max(1.0) as usize;
            let mut taken = 0;
            for g in &groups[..groups.len() - 1] {
                if taken >= target {
                    break;
                }
                for &i in g.iter() {
                    is_val[i] = true;
                }
                taken += g.len();
            }
        } else {
            for (c, items) in self.items_by_class().into_iter().enumerate() {
                let mut items = items;
                rng::shuffle(&mut items, &mut rng::chacha(seed, 100 + c as u64));
                let k = (frac * items.len() as f64).round() as usize;
                for &i in &items[..k.min(items.len())] {
                    is_val[i] = true;
                }
            }
        }
        let val: Vec<i64> = (0..n as i64).filter(|&i| is_val[i as usize]).collect();
        let train: Vec<i64> = (0..n as i64).filter(|&i| !is_val[i as usize]).collect();
        if val.is_empty() || train.is_empty() {
            bail!("dataset '{}': split {frac} of {n} items leaves one side empty", self.name);
        }
        let mut tr = self.subset(&train)?;
        let mut va = self.subset(&val)?;
        tr.name = format!("{}[train]", self.name);
        va.name = format!("{}[val]", self.name);
        Ok((tr, va))
    }

    /// Item indices per class, in item order.
    pub fn items_by_class(&self) -> Vec<Vec<usize>> {
        let mut v = vec![Vec::new(); self.classes.len()];
        for (i, &l) in self.labels.iter().enumerate() {
            v[l as usize].push(i);
        }
        v
    }

    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }

    /// Items per class: one row per fold when folds exist (plus a total row), else one row.
    pub fn counts_table(&self) -> Table {
        let mut cols: Vec<&str> = vec!["fold"];
        cols.extend(self.classes.iter().map(|s| s.as_str()));
        cols.push("total");
        let mut t = Table::new(format!("{}: items per class", self.name), &cols);
        let row = |label: String, keep: &dyn Fn(usize) -> bool| -> Vec<Cell> {
            let mut c = vec![0i64; self.classes.len()];
            for (i, &l) in self.labels.iter().enumerate() {
                if keep(i) {
                    c[l as usize] += 1;
                }
            }
            let total: i64 = c.iter().sum();
            let mut r = vec![Cell::text(label)];
            r.extend(c.into_iter().map(|v| Cell::Int { value: v }));
            r.push(Cell::Int { value: total });
            r
        };
        let ids = self.fold_ids();
        let mut rows = Vec::new();
        for &f in &ids {
            rows.push(row(f.to_string(), &|i| self.folds[i] == f));
        }
        if !ids.is_empty() && self.folds.contains(&-1) {
            rows.push(row("none".into(), &|i| self.folds[i] == -1));
        }
        rows.push(row(if ids.is_empty() { "all".into() } else { "total".into() }, &|_| true));
        // Rows are built from the columns above, so their lengths always match.
        t.rows = rows;
        if !self.report.dropped.is_empty() {
            t.note(format!("left out by the loader: {} rows", self.report.dropped_total()));
        }
        t
    }

    /// Per-epoch batches; see [`BatchOpts`].
    pub fn batches(&self, o: &BatchOpts) -> Result<Batches> {
        Batches::new(self, o)
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (h, w) = self.size();
        write!(f, "Dataset[{}; {} items; {} classes; {h}x{w}]", self.name, self.len(), self.classes.len())
    }
}

/// Seeded, stratified fold assignment: each class's items are shuffled and dealt round-robin over `k` folds, the
/// dealing continuing where the previous class stopped so fold sizes differ by at most one.
pub fn stratified_folds(labels: &[i64], num_classes: usize, k: usize, seed: u64) -> Vec<i64> {
    let mut folds = vec![-1; labels.len()];
    if k == 0 {
        return folds;
    }
    let mut by_class = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut r = rng::chacha(seed, 21);
    let mut next = 0usize;
    for items in &mut by_class {
        rng::shuffle(items, &mut r);
        for &i in items.iter() {
            folds[i] = (next % k) as i64;
            next += 1;
        }
    }
    folds
}

/// A seeded stratified subset of `n` items (largest-remainder quota per class), returned in ascending item order.
pub fn stratified_take(labels: &[i64], num_classes: usize, n: usize, seed: u64) -> Vec<usize> {
    let total = labels.len();
    if n >= total {
        return (0..total).collect();
    }
    let mut by_class = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let exact: Vec<f64> = by_class.iter().map(|c| c.len() as f64 * n as f64 / total as f64).collect();
    let mut quota: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut rest: Vec<usize> = (0..num_classes).collect();
    // Largest fractional part first; ties to the lower class index (stable sort).
    rest.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let mut left = n - quota.iter().sum::<usize>();
    for c in rest {
        if left == 0 {
            break;
        }
        if quota[c] < by_class[c].len() {
            quota[c] += 1;
            left -= 1;
        }
    }
    let mut r = rng::chacha(seed, 31);
    let mut out = Vec::with_capacity(n);
    for (c, items) in by_class.iter_mut().enumerate() {
        rng::shuffle(items, &mut r);
        out.extend_from_slice(&items[..quota[c]]);
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_matches_the_utkface_readme_gap_table() {
        let want = [
            (3, "4-6"),
            (7, "8-13"),
            (14, "15-20"),
            (21, "15-20"),
            (22, "15-20"),
            (23, "25-32"),
            (24, "25-32"),
            (33, "25-32"),
            (34, "25-32"),
            (35, "38-43"),
            (37, "38-43"),
            (44, "38-43"),
            (45, "38-43"),
            (46, "48-53"),
            (47, "48-53"),
            (54, "48-53"),
            (56, "48-53"),
            (57, "60-"),
            (59, "60-"),
            (110, "60-"),
        ];
        for (age, g) in want {
            assert_eq!(AGE_GROUPS[age_group_nearest(age as f64)], g, "age {age}");
        }
        assert_eq!(age_group_exact(13), Some(2));
        assert_eq!(age_group_exact(14), None);
        assert_eq!(age_group_exact(100), Some(7));
    }

    #[test]
    fn stratified_folds_balance_each_class() {
        let labels: Vec<i64> = (0..103).map(|i| (i % 3) as i64).collect();
        let f = stratified_folds(&labels, 3, 5, 9);
        for c in 0..3 {
            let mut per = [0usize; 5];
            for i in 0..labels.len() {
                if labels[i] == c {
                    per[f[i] as usize] += 1;
                }
            }
            let (mn, mx) = (per.iter().min().unwrap(), per.iter().max().unwrap());
            assert!(mx - mn <= 1, "class {c}: {per:?}");
        }
        assert_eq!(f, stratified_folds(&labels, 3, 5, 9));
        assert_ne!(f, stratified_folds(&labels, 3, 5, 10));
    }

    #[test]
    fn stratified_take_hits_n_exactly_with_proportional_quotas() {
        let labels: Vec<i64> = (0..1000)
            .map(|i| {
                if i < 700 {
                    0
                } else if i < 950 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let t = stratified_take(&labels, 3, 101, 1);
        assert_eq!(t.len(), 101);
        let c: Vec<usize> = (0..3).map(|k| t.iter().filter(|&&i| labels[i] == k).count()).collect();
        // exact shares 70.7, 25.25, 5.05 -> floors 70, 25, 5 (100) + one for the largest remainder (class 0)
        assert_eq!(c, vec![71, 25, 5]);
    }
}

/// One labelled file before decoding.
pub(crate) struct Item {
    pub path: std::path::PathBuf,
    pub label: i64,
    pub group: String,
    pub fold: i64,
}

/// What to do with files that are missing or do not decode.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FilePolicy {
    pub skip_missing: bool,
    pub skip_bad: bool,
}

/// Shared tail of every file-based loader: check that the files exist, decode them (through the cache), apply the
/// missing/corrupt policy (error, or counted skip), and build the dataset.
pub(crate) fn assemble(
    name: &str,
    classes: Vec<String>,
    items: Vec<Item>,
    mut report: LoadReport,
    decode: &DecodeOpts,
    policy: FilePolicy,
) -> Result<Dataset> {
    let (present, missing): (Vec<Item>, Vec<Item>) = items.into_iter().partition(|it| it.path.is_file());
    if !missing.is_empty() {
        let first: Vec<String> = missing.iter().take(5).map(|it| it.path.display().to_string()).collect();
        if !policy.skip_missing {
            bail!(
                "{name}: {} of {} image files are missing, e.g. {} (skip_missing: true skips them)",
                missing.len(),
                missing.len() + present.len(),
                first.join(", ")
            );
        }
        for _ in &missing {
            report.drop("image file missing");
        }
    }
    let paths: Vec<std::path::PathBuf> = present.iter().map(|it| it.path.clone()).collect();
    let dec = decode::decode_all(name, &paths, decode)?;
    let mut keep: Vec<i64> = (0..present.len() as i64).collect();
    if !dec.failed.is_empty() {
        if !policy.skip_bad {
            let (_, first) = &dec.failed[0];
            bail!(
                "{name}: {} image(s) cannot be decoded; first: {first} (skip_bad: true skips them)",
                dec.failed.len()
            );
        }
        let bad: BTreeSet<usize> = dec.failed.iter().map(|f| f.0).collect();
        keep.retain(|&i| !bad.contains(&(i as usize)));
        for _ in &bad {
            report.drop("image cannot be decoded");
        }
    }
    let images = if keep.len() == present.len() {
        dec.images
    } else {
        dec.images.f_index_select(0, &Tensor::from_slice(&keep))?
    };
    let kept: Vec<&Item> = keep.iter().map(|&i| &present[i as usize]).collect();
    if kept.is_empty() {
        report.kept = 0;
        bail!("{name}: no items left\n{}", report.summary(name));
    }
    let mut ds = Dataset::new(
        name,
        images,
        kept.iter().map(|it| it.label).collect(),
        classes,
        kept.iter().map(|it| it.group.clone()).collect(),
        kept.iter().map(|it| it.fold).collect(),
        kept.iter().map(|it| it.path.display().to_string()).collect(),
    )?;
    report.kept = ds.len();
    ds.report = report;
    Ok(ds)
}
