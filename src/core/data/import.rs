//! `satm data import`: the official UTKFace and Adience downloads (archives or folders) into a data root, verified.
//!
//! Every import unpacks (archives) or hard-links / copies (folders) into a temporary folder beside the target, checks
//! it there (labels through the loaders' own planning and drop reasons, every image decoded once), and only then
//! renames it into place. Any error leaves the data root as it was.
use super::decode::{self, DecodeOpts};
use super::{AGE_GROUPS, Item, LoadReport, adience, utkface};
use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Options shared by both imports.
#[derive(Debug, Clone)]
pub struct ImportOpts {
    /// The data root to import into (the dataset lands in `<dest>/utkface` or `<dest>/adience`).
    pub dest: PathBuf,
    /// Replace an existing dataset of that name.
    pub force: bool,
    /// Leave out (and count) images that do not decode instead of failing.
    pub skip_bad: bool,
    /// Show a progress bar (only drawn on a terminal).
    pub progress: bool,
}

/// What an import found and kept.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// Where the dataset now is.
    pub target: PathBuf,
    /// Image files written into the dataset.
    pub images: usize,
    /// Archive members / folder entries not taken, by reason (e.g. "not a .jpg file").
    pub skipped: Vec<(String, usize)>,
    /// Undecodable images left out (only with `skip_bad`): their names.
    pub removed_bad: Vec<String>,
    /// The loader's view of the result (default options): rows kept and dropped by reason.
    pub report: LoadReport,
    /// Kept items per class name.
    pub per_class: Vec<(String, usize)>,
    /// Adience only: kept items per fold (standard protocol), and the fold files' row counts.
    pub per_fold: Vec<(i64, usize, usize)>,
    /// Checks against the official figures (each one line; empty when they do not apply).
    pub checks: Vec<String>,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "imported into {}: {} image files", self.target.display(), self.images)?;
        for (r, c) in &self.skipped {
            writeln!(f, "  not taken: {c:>6}  {r}")?;
        }
        if !self.removed_bad.is_empty() {
            writeln!(
                f,
                "  left out:  {:>6}  images that cannot be decoded (--skip-bad), e.g. {}",
                self.removed_bad.len(),
                self.removed_bad.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            )?;
        }
        writeln!(f, "{}", self.report.summary("verified with the default options"))?;
        let pc: Vec<String> = self.per_class.iter().map(|(c, n)| format!("{c} {n}")).collect();
        writeln!(f, "per class: {}", pc.join(", "))?;
        for (fold, kept, rows) in &self.per_fold {
            writeln!(f, "fold {fold}: {kept} faces kept of {rows} rows")?;
        }
        for c in &self.checks {
            writeln!(f, "check: {c}")?;
        }
        Ok(())
    }
}

/// One file to bring in: where it goes (relative to the dataset folder) and where it comes from.
enum Source {
    Archive(PathBuf),
    Folder(PathBuf),
}

fn source_of(path: &Path) -> Result<Source> {
    if path.is_dir() {
        return Ok(Source::Folder(path.to_path_buf()));
    }
    if !path.is_file() {
        bail!(
            "{} does not exist (give the downloaded archive, e.g. UTKFace.tar.gz, or the unpacked folder)",
            path.display()
        );
    }
    let n = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if n.ends_with(".tar.gz") || n.ends_with(".tgz") || n.ends_with(".tar") {
        Ok(Source::Archive(path.to_path_buf()))
    } else {
        bail!("{}: not a .tar.gz, .tgz or .tar archive, nor a folder", path.display())
    }
}

fn bar(progress: bool, len: u64, bytes: bool, msg: &str) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    let tpl = if bytes {
        "{msg} {bar:30} {bytes}/{total_bytes} {elapsed}<{eta}"
    } else {
        "{msg} {bar:30} {pos}/{len} {elapsed}<{eta}"
    };
    pb.set_style(ProgressStyle::with_template(tpl).unwrap_or_else(|_| ProgressStyle::default_bar()));
    pb.set_message(msg.to_string());
    pb
}

/// Counts the bytes read through it (the progress of a compressed archive).
struct Counted<R> {
    inner: R,
    pb: ProgressBar,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pb.inc(n as u64);
        Ok(n)
    }
}

/// A path component that is safe as a file or folder name (no separators, not `.`/`..`, not empty).
fn safe_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\\') && !s.contains('\0')
}

/// Walks every file of `src` (archive members or folder entries, in archive / sorted order) and hands each one's
/// path components to `place`, which returns where it goes under `dst` or why it is not taken. Returns the number
/// of files written and the not-taken counts.
fn bring_in(
    src: &Source,
    dst: &Path,
    progress: bool,
    mut place: impl FnMut(&[String]) -> std::result::Result<PathBuf, String>,
) -> Result<(usize, Vec<(String, usize)>)> {
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let mut written = 0usize;
    let mut seen = std::collections::HashSet::new();
    let mut take = |comps: &[String], skipped: &mut BTreeMap<String, usize>| -> Option<PathBuf> {
        match place(comps) {
            Ok(rel) => {
                if !seen.insert(rel.clone()) {
                    *skipped.entry(format!("second file named {} (the first was kept)", rel.display())).or_default() +=
                        1;
                    return None;
                }
                let out = dst.join(&rel);
                if let Some(p) = out.parent() {
                    std::fs::create_dir_all(p).ok();
                }
                Some(out)
            }
            Err(reason) => {
                *skipped.entry(reason).or_default() += 1;
                None
            }
        }
    };
    match src {
        Source::Archive(path) => {
            let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let pb = bar(progress, len, true, "unpacking");
            let counted = Counted { inner: std::io::BufReader::new(f), pb: pb.clone() };
            let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
            let rd: Box<dyn Read> = if name.ends_with(".tar") {
                Box::new(counted)
            } else {
                Box::new(flate2::read::GzDecoder::new(counted))
            };
            let mut ar = tar::Archive::new(rd);
            let damaged = |after: &str, e: &dyn std::fmt::Display| {
                anyhow::anyhow!(
                    "{} is damaged or not a tar.gz archive ({after}): {e}; download it again (nothing was imported)",
                    path.display()
                )
            };
            let entries = ar.entries().map_err(|e| damaged("at the start", &e))?;
            let mut last = String::from("at the start");
            for entry in entries {
                crate::core::cancel::check()?;
                let mut entry = entry.map_err(|e| damaged(&last, &e))?;
                let mpath = entry.path().map_err(|e| damaged(&last, &e))?.to_string_lossy().into_owned();
                last = format!("in member {mpath}");
                if !entry.header().entry_type().is_file() {
                    continue;
                }
                let comps: Vec<String> =
                    mpath.split('/').filter(|c| !c.is_empty() && *c != ".").map(|c| c.to_string()).collect();
                let Some(out) = take(&comps, &mut skipped) else {
                    // Read past it, so a damaged member is found even when it is not taken.
                    std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| damaged(&last, &e))?;
                    continue;
                };
                let mut buf = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut buf).map_err(|e| damaged(&last, &e))?;
                std::fs::write(&out, &buf).with_context(|| format!("writing {}", out.display()))?;
                written += 1;
            }
            pb.finish_and_clear();
        }
        Source::Folder(root) => {
            let mut files = Vec::new();
            let mut stack = vec![root.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
                    let p = e?.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.is_file() {
                        files.push(p);
                    }
                }
            }
            files.sort();
            let pb = bar(progress, files.len() as u64, false, "linking");
            let base = root.parent().unwrap_or(Path::new(""));
            for p in files {
                crate::core::cancel::check()?;
                let rel = p.strip_prefix(base).unwrap_or(&p);
                let comps: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
                if let Some(out) = take(&comps, &mut skipped) {
                    // A hard link (to the file itself, not to a symlink) costs no space; across file systems, a copy.
                    let real = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
                    if std::fs::hard_link(&real, &out).is_err() {
                        std::fs::copy(&p, &out)
                            .with_context(|| format!("copying {} to {}", p.display(), out.display()))?;
                    }
                    written += 1;
                }
                pb.inc(1);
            }
            pb.finish_and_clear();
        }
    }
    Ok((written, skipped.into_iter().collect()))
}

/// A fresh temporary folder beside `<dest>/<name>`, after checking that the target may be written.
fn staging(o: &ImportOpts, name: &str) -> Result<(PathBuf, tempfile::TempDir)> {
    let target = o.dest.join(name);
    if target.exists() && !o.force {
        bail!("{} already exists; pass --force to replace it", target.display());
    }
    std::fs::create_dir_all(&o.dest).with_context(|| format!("creating the data folder {}", o.dest.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.import-"))
        .tempdir_in(&o.dest)
        .with_context(|| format!("creating a temporary folder in {}", o.dest.display()))?;
    Ok((target, tmp))
}

/// Renames the verified staging folder into place (an existing dataset, with --force, is moved aside first and
/// removed after).
fn commit(tmp: tempfile::TempDir, target: &Path, force: bool) -> Result<()> {
    let old = if target.exists() {
        if !force {
            bail!("{} appeared during the import; pass --force to replace it", target.display());
        }
        let aside = tempfile::Builder::new().prefix(".old-").tempdir_in(target.parent().unwrap_or(Path::new(".")))?;
        let to = aside.path().join("data");
        std::fs::rename(target, &to).with_context(|| format!("moving the old {} aside", target.display()))?;
        Some(aside)
    } else {
        None
    };
    let staged = tmp.keep();
    if let Err(e) = std::fs::rename(&staged, target) {
        let _ = std::fs::remove_dir_all(&staged);
        if let Some(a) = &old {
            let _ = std::fs::rename(a.path().join("data"), target);
        }
        return Err(e).with_context(|| format!("renaming the import into {}", target.display()));
    }
    drop(old); // removes the old dataset
    Ok(())
}

/// Decodes every present item once; undecodable ones are an error naming them, or (skip_bad) are deleted, counted in
/// `report` and returned. Missing files are counted as the loader counts them.
fn verify_images(
    name: &str,
    items: &[Item],
    report: &mut LoadReport,
    skip_bad: bool,
    progress: bool,
) -> Result<(Vec<usize>, Vec<String>)> {
    let mut present = Vec::new();
    for (i, it) in items.iter().enumerate() {
        if it.path.is_file() {
            present.push(i);
        } else {
            report.drop("image file missing");
        }
    }
    let pb = bar(progress, present.len() as u64, false, "verifying");
    let opts = DecodeOpts { size: 32, cache: false, ..DecodeOpts::default() };
    let mut bad: Vec<(usize, String)> = Vec::new();
    for chunk in present.chunks(256) {
        let paths: Vec<PathBuf> = chunk.iter().map(|&i| items[i].path.clone()).collect();
        let d = decode::decode_uncached(&paths, &opts)?;
        bad.extend(d.failed.into_iter().map(|(k, m)| (chunk[k], m)));
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    if !bad.is_empty() && !skip_bad {
        bail!(
            "{name}: {} image(s) cannot be decoded, e.g. {}; the download is damaged (download it again) or pass \
             --skip-bad to leave them out (nothing was imported)",
            bad.len(),
            bad.iter().take(3).map(|b| b.1.clone()).collect::<Vec<_>>().join("; ")
        );
    }
    let mut removed = Vec::new();
    for (i, _) in &bad {
        let p = &items[*i].path;
        std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
        removed.push(p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        report.drop("image cannot be decoded");
    }
    let bad_idx: std::collections::HashSet<usize> = bad.iter().map(|b| b.0).collect();
    let kept: Vec<usize> = present.into_iter().filter(|i| !bad_idx.contains(i)).collect();
    report.kept = kept.len();
    Ok((kept, removed))
}

fn per_class(items: &[Item], kept: &[usize], classes: &[String]) -> Vec<(String, usize)> {
    let mut c = vec![0usize; classes.len()];
    for &i in kept {
        c[items[i].label as usize] += 1;
    }
    classes.iter().cloned().zip(c).collect()
}

/// Imports UTKFace from `src`: `UTKFace.tar.gz` (aligned & cropped), `crop_part1.tar.gz`, the in-the-wild
/// `part1.tar.gz`..., or an unpacked folder of `age_gender_race_datetime.jpg[.chip.jpg]` files. Every `.jpg` file goes
/// (by its own name) into `<dest>/utkface/images/`; labels come from the names, as the loader reads them.
pub fn import_utkface(src: &Path, o: &ImportOpts) -> Result<ImportReport> {
    let source = source_of(src)?;
    let (target, tmp) = staging(o, "utkface")?;
    let images = tmp.path().join("images");
    std::fs::create_dir_all(&images)?;
    let (written, skipped) = bring_in(&source, &images, o.progress, |comps| {
        let name = comps.last().cloned().unwrap_or_default();
        if name.starts_with("._") || comps.iter().any(|c| c == "__MACOSX") {
            return Err("macOS metadata file".into());
        }
        if !name.to_ascii_lowercase().ends_with(".jpg") {
            return Err("not a .jpg file".into());
        }
        if !safe_name(&name) {
            return Err("unsafe file name".into());
        }
        Ok(PathBuf::from(name))
    })?;
    if written == 0 {
        bail!("{}: no .jpg files found (expected UTKFace's age_gender_race_datetime.jpg files)", src.display());
    }
    let uo = utkface::UtkOpts { folds: 0, ..Default::default() };
    let (classes, items, mut report) = utkface::plan(tmp.path(), &uo)?;
    let (kept, removed_bad) = verify_images("utkface import", &items, &mut report, o.skip_bad, o.progress)?;
    if kept.is_empty() {
        bail!("{}: no usable faces\n{}", src.display(), report.summary("utkface"));
    }
    let per_class = per_class(&items, &kept, &classes);
    let out = ImportReport {
        target: target.clone(),
        images: written - removed_bad.len(),
        skipped,
        removed_bad,
        report,
        per_class,
        per_fold: vec![],
        checks: vec![],
    };
    commit(tmp, &target, o.force)?;
    Ok(out)
}

/// Row counts of the five official fold files.
pub const ADIENCE_FOLD_ROWS: [usize; 5] = [4496, 3745, 3953, 3459, 3834];
/// Rows with one of the 8 standard age strings in the official fold files (the 5-fold age protocol).
pub const ADIENCE_STANDARD_ROWS: usize = 17_424;

/// Imports Adience: the face crops (`faces.tar.gz` / `aligned.tar.gz` as the benchmark distributes them, or the
/// unpacked folder) and the five fold files `fold_0_data.txt` .. `fold_4_data.txt` from `folds`. Faces land in
/// `<dest>/adience/faces/<user_id>/coarse_tilt_aligned_face.*` (or `aligned/<user_id>/landmark_aligned_face.*`).
pub fn import_adience(faces: &Path, folds: &Path, o: &ImportOpts) -> Result<ImportReport> {
    if !folds.is_dir() {
        bail!("--folds {}: not a folder (give the folder holding fold_0_data.txt .. fold_4_data.txt)", folds.display());
    }
    let missing: Vec<String> = (0..5)
        .map(|i| adience::fold_file(folds, i))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        bail!(
            "adience: fold file(s) missing: {} (all five fold_0_data.txt .. fold_4_data.txt are needed; nothing was imported)",
            missing.join(", ")
        );
    }
    // Parse them before unpacking anything: a bad fold file fails fast, naming the file and line.
    adience::read_folds(folds)?;
    let source = source_of(faces)?;
    let (target, tmp) = staging(o, "adience")?;
    for i in 0..5 {
        let (from, to) = (adience::fold_file(folds, i), adience::fold_file(tmp.path(), i));
        std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
    }
    let mut kinds = [0usize; 2];
    let (written, skipped) = bring_in(&source, tmp.path(), o.progress, |comps| {
        let n = comps.len();
        let name = comps.last().cloned().unwrap_or_default();
        let set = if name.starts_with("coarse_tilt_aligned_face.") {
            0
        } else if name.starts_with("landmark_aligned_face.") {
            1
        } else {
            return Err("not an Adience face crop (coarse_tilt_aligned_face.* / landmark_aligned_face.*)".into());
        };
        if n < 2 || !safe_name(&comps[n - 2]) || !safe_name(&name) {
            return Err("face crop not inside a <user_id>/ folder".into());
        }
        kinds[set] += 1;
        Ok(PathBuf::from(if set == 0 { "faces" } else { "aligned" }).join(&comps[n - 2]).join(&name))
    })?;
    if written == 0 {
        bail!(
            "{}: no Adience face crops found (expected faces/<user_id>/coarse_tilt_aligned_face.*.jpg or \
             aligned/<user_id>/landmark_aligned_face.*.jpg)",
            faces.display()
        );
    }
    let set = if kinds[0] >= kinds[1] { adience::FaceSet::Faces } else { adience::FaceSet::Aligned };
    let ao = adience::AdienceOpts { faces: set, ..Default::default() };
    let (_, classes, items, mut report) = adience::plan(tmp.path(), &ao)?;
    let (kept, removed_bad) = verify_images("adience import", &items, &mut report, o.skip_bad, o.progress)?;
    let mut per_fold = Vec::new();
    let rows: Vec<usize> = (0..5)
        .map(|i| adience::read_fold_file(&adience::fold_file(tmp.path(), i), i as i64).map(|r| r.len()))
        .collect::<Result<_>>()?;
    for (f, &nrows) in rows.iter().enumerate() {
        per_fold.push((f as i64, kept.iter().filter(|&&i| items[i].fold == f as i64).count(), nrows));
    }
    let standard = items.len();
    let mut checks = vec![format!(
        "{standard} of {} rows carry one of the 8 standard age strings (the 5-fold age protocol keeps these)",
        report.total
    )];
    if rows == ADIENCE_FOLD_ROWS {
        if standard != ADIENCE_STANDARD_ROWS {
            bail!(
                "adience: the fold files have the official row counts {ADIENCE_FOLD_ROWS:?} but {standard} standard-age \
                 rows instead of {ADIENCE_STANDARD_ROWS}; the fold files are not the official ones (nothing was imported)"
            );
        }
        checks.push(format!(
            "fold files match the official ones: rows {ADIENCE_FOLD_ROWS:?}, {ADIENCE_STANDARD_ROWS} standard"
        ));
    } else {
        checks.push(format!(
            "fold files hold {rows:?} rows, not the official {ADIENCE_FOLD_ROWS:?}: a subset or another version"
        ));
    }
    let missing = report.dropped_for("image file missing");
    if missing > 0 {
        checks.push(format!(
            "{missing} of the {standard} standard rows have no image in {} (load with skip_missing: true)",
            faces.display()
        ));
    }
    let per_class = per_class(&items, &kept, &classes);
    debug_assert_eq!(classes.len(), AGE_GROUPS.len());
    let out = ImportReport {
        target: target.clone(),
        images: written - removed_bad.len(),
        skipped,
        removed_bad,
        report,
        per_class,
        per_fold,
        checks,
    };
    commit(tmp, &target, o.force)?;
    Ok(out)
}
