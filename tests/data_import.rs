//! `satm data import` / `satm data list` and the bundled sample, on archives and folders this test builds from real
//! faces in ../shared/data, in the layouts the datasets ship in. Every expected count is computed here from the files
//! (names, fold-file columns) with code of its own, not with the loaders'.
use satm::core::data::import::{ImportOpts, import_adience, import_utkface};
use satm::core::data::{UtkOpts, utkface};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

const GROUPS: [(u32, u32, &str); 8] = [
    (0, 2, "0-2"),
    (4, 6, "4-6"),
    (8, 13, "8-13"),
    (15, 20, "15-20"),
    (25, 32, "25-32"),
    (38, 43, "38-43"),
    (48, 53, "48-53"),
    (60, u32::MAX, "60-"),
];
const STANDARD: [&str; 8] =
    ["(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)"];

/// ../shared/data, or None (a skip outside CI, a failure in CI).
fn shared() -> Option<PathBuf> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if d.join("utkface/images").is_dir() && d.join("adience_sample/faces").is_dir() {
        return Some(d);
    }
    common::skip_unless_ci(
        "../shared/data",
        "../shared/data (real UTKFace and Adience faces) is not beside the checkout",
    );
    None
}

/// Every 97th real UTKFace file (sorted), so all age groups and some gap ages occur.
fn utk_files(shared: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(shared.join("utkface/images")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v.into_iter().step_by(97).collect()
}

/// What the test expects from a list of UTKFace file names: (kept per group, gap ages, names that do not parse).
fn expect_utk(names: &[String]) -> (BTreeMap<&'static str, usize>, usize, usize) {
    let mut per: BTreeMap<&'static str, usize> = GROUPS.iter().map(|g| (g.2, 0)).collect();
    let (mut gap, mut bad) = (0, 0);
    for n in names {
        let parts: Vec<&str> = n.split('_').collect();
        let ok = parts.len() == 4
            && parts[1].len() == 1
            && "01".contains(parts[1])
            && parts[2].len() == 1
            && "01234".contains(parts[2]);
        let Some(age) = ok.then(|| parts[0].parse::<u32>().ok()).flatten() else {
            bad += 1;
            continue;
        };
        match GROUPS.iter().find(|g| g.0 <= age && age <= g.1) {
            Some(g) => *per.get_mut(g.2).unwrap() += 1,
            None => gap += 1,
        }
    }
    (per, gap, bad)
}

/// A .tar.gz of (member path, bytes).
fn tar_gz(path: &Path, members: &[(String, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, bytes) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

fn opts(dest: &Path) -> ImportOpts {
    ImportOpts { dest: dest.to_path_buf(), force: false, skip_bad: false, progress: false }
}

/// Nothing but the data sets in `dest`: no staging or moved-aside folders left over.
fn no_leftovers(dest: &Path) {
    if let Ok(rd) = std::fs::read_dir(dest) {
        for e in rd {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!n.starts_with('.'), "left over in {}: {n}", dest.display());
        }
    }
}

fn err<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn utkface_archive_in_the_official_layout() {
    let Some(sh) = shared() else { return };
    let files = utk_files(&sh);
    let mut members: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|p| (format!("UTKFace/{}", p.file_name().unwrap().to_string_lossy()), std::fs::read(p).unwrap()))
        .collect();
    // Two real quirks of UTKFace: names with a missing field, and stray non-image files.
    let first = std::fs::read(&files[0]).unwrap();
    members.push(("UTKFace/61_1_20170109142408075.jpg.chip.jpg".into(), first.clone()));
    members.push(("UTKFace/39_1_20170116174525125.jpg.chip.jpg".into(), first.clone()));
    members.push(("UTKFace/notes.txt".into(), b"not an image".to_vec()));
    let names: Vec<String> = members
        .iter()
        .filter(|m| m.0.ends_with(".jpg"))
        .map(|m| m.0.trim_start_matches("UTKFace/").to_string())
        .collect();
    let (per, gap, bad) = expect_utk(&names);
    assert_eq!(bad, 2);
    let kept: usize = per.values().sum();
    assert!(kept > 50 && gap > 5, "the pick covers kept and gap ages: {kept} kept, {gap} gap");

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("UTKFace.tar.gz");
    tar_gz(&archive, &members);
    let dest = dir.path().join("data");
    let r = import_utkface(&archive, &opts(&dest)).unwrap();
    assert_eq!(r.images, names.len());
    assert_eq!(r.skipped, vec![("not a .jpg file".to_string(), 1)]);
    assert_eq!(r.report.total, names.len());
    assert_eq!(r.report.kept, kept);
    assert_eq!(r.report.dropped_for("file name does not parse as age_gender_race_datetime.jpg"), bad);
    assert_eq!(r.report.dropped_for("age in a gap between groups (mapping: drop)"), gap);
    let got: BTreeMap<&str, usize> = r.per_class.iter().map(|(c, n)| (c.as_str(), *n)).collect();
    let want: BTreeMap<&str, usize> = per.iter().map(|(c, n)| (*c, *n)).collect();
    assert_eq!(got, want);
    // The files are there by their own names, byte for byte, and the loader reads them.
    let target = dest.join("utkface/images");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), names.len());
    assert_eq!(std::fs::read(target.join(files[3].file_name().unwrap())).unwrap(), std::fs::read(&files[3]).unwrap());
    no_leftovers(&dest);
    let cache = dir.path().join("cache");
    let uo = UtkOpts {
        folds: 0,
        decode: satm::core::data::DecodeOpts { size: 32, cache_dir: Some(cache), ..Default::default() },
        ..Default::default()
    };
    assert_eq!(utkface(&dest.join("utkface"), &uo).unwrap().len(), kept);

    // A second import needs --force; with it the data set is replaced.
    assert!(err(import_utkface(&archive, &opts(&dest))).contains("--force"));
    let again = import_utkface(&archive, &ImportOpts { force: true, ..opts(&dest) }).unwrap();
    assert_eq!(again.report.kept, kept);
    no_leftovers(&dest);

    // The command line prints the same counts.
    let env_dest = dir.path().join("cli");
    let o = Command::new(env!("CARGO_BIN_EXE_satm"))
        .args(["data", "import", "utkface"])
        .arg(&archive)
        .env("SATM_DATA", &env_dest)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains(&format!("kept {kept} of {} rows", names.len())), "{out}");
    assert!(out.contains(&format!("{gap}  age in a gap between groups")), "{out}");
    let list = Command::new(env!("CARGO_BIN_EXE_satm"))
        .args(["data", "list"])
        .env("SATM_DATA", &env_dest)
        .env("SATM_CACHE", dir.path().join("cache2"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{text}");
    let line = format!("{kept} items (default options): 0-2 {}, 4-6 {}", per["0-2"], per["4-6"]);
    assert!(text.contains(&line), "{line}\n{text}");
    assert!(text.contains("image size 64x64"), "{text}");
    assert!(text.contains("32px not cached, 64px not cached"), "{text}");
    assert!(text.contains("1500 items (default options): 0-2 319, 4-6 111, 8-13 156, 15-20 161, 25-32 241"), "{text}");
}

#[test]
fn utkface_folders_and_damaged_input() {
    let Some(sh) = shared() else { return };
    let files: Vec<PathBuf> = utk_files(&sh).into_iter().take(30).collect();
    let dir = tempfile::tempdir().unwrap();
    // The crop_part1 folder as unpacked from crop_part1.tar.gz.
    let folder = dir.path().join("crop_part1");
    std::fs::create_dir(&folder).unwrap();
    for f in &files {
        std::fs::copy(f, folder.join(f.file_name().unwrap())).unwrap();
    }
    let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let (per, gap, _) = expect_utk(&names);
    let dest = dir.path().join("data");
    let r = import_utkface(&folder, &opts(&dest)).unwrap();
    assert_eq!((r.images, r.report.kept), (30, per.values().sum()));
    assert_eq!(r.report.dropped_total(), gap);
    // A folder of symlinks (e.g. into a read-only copy): the import holds the files, not the links.
    let linked = dir.path().join("linked");
    std::fs::create_dir(&linked).unwrap();
    for f in &files[..5] {
        std::os::unix::fs::symlink(f, linked.join(f.file_name().unwrap())).unwrap();
    }
    let dest_l = dir.path().join("data_l");
    assert_eq!(import_utkface(&linked, &opts(&dest_l)).unwrap().images, 5);
    let got = dest_l.join("utkface/images").join(files[0].file_name().unwrap());
    assert!(std::fs::symlink_metadata(&got).unwrap().file_type().is_file());
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&files[0]).unwrap());

    // A corrupt member: a .jpg whose bytes are not a JPEG. An error naming it, and nothing written.
    let mut members: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|p| (format!("crop_part1/{}", p.file_name().unwrap().to_string_lossy()), std::fs::read(p).unwrap()))
        .collect();
    let mut broken = std::fs::read(&files[1]).unwrap();
    broken.truncate(40);
    broken.extend(std::iter::repeat_n(0x55u8, 500));
    members.push(("crop_part1/26_1_2_20170116174525125.jpg.chip.jpg".into(), broken));
    let archive = dir.path().join("crop_part1.tar.gz");
    tar_gz(&archive, &members);
    let dest2 = dir.path().join("data2");
    let e = err(import_utkface(&archive, &opts(&dest2)));
    assert!(e.contains("cannot be decoded") && e.contains("26_1_2_20170116174525125.jpg.chip.jpg"), "{e}");
    assert!(e.contains("--skip-bad"), "{e}");
    assert!(!dest2.join("utkface").exists());
    no_leftovers(&dest2);
    // --skip-bad leaves it out and says so.
    let r = import_utkface(&archive, &ImportOpts { skip_bad: true, ..opts(&dest2) }).unwrap();
    assert_eq!(r.removed_bad, vec!["26_1_2_20170116174525125.jpg.chip.jpg".to_string()]);
    assert_eq!(r.report.dropped_for("image cannot be decoded"), 1);
    assert_eq!(r.images, 30);
    assert!(!dest2.join("utkface/images/26_1_2_20170116174525125.jpg.chip.jpg").exists());

    // A damaged archive (cut off half way): an error saying so; nothing written.
    let bytes = std::fs::read(&archive).unwrap();
    let cut = dir.path().join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let dest3 = dir.path().join("data3");
    let e = err(import_utkface(&cut, &opts(&dest3)));
    assert!(e.contains("damaged") && e.contains("cut.tar.gz"), "{e}");
    assert!(!dest3.join("utkface").exists());
    no_leftovers(&dest3);
    // Not an archive at all, and a path that does not exist.
    let txt = dir.path().join("faces.zip");
    std::fs::write(&txt, b"PK").unwrap();
    assert!(err(import_utkface(&txt, &opts(&dest3))).contains("not a .tar.gz"));
    assert!(err(import_utkface(&dir.path().join("nope.tar.gz"), &opts(&dest3))).contains("does not exist"));
    let junk = dir.path().join("junk.tar.gz");
    std::fs::write(&junk, vec![7u8; 4000]).unwrap();
    assert!(err(import_utkface(&junk, &opts(&dest3))).contains("damaged"));
    no_leftovers(&dest3);
}

/// Fold files: (rows per fold, standard-age rows per fold with an image in `faces`), counted here.
fn expect_adience(folds: &Path, faces: &Path) -> (Vec<usize>, Vec<usize>, usize) {
    let (mut rows, mut kept, mut standard) = (vec![], vec![], 0);
    for i in 0..5 {
        let text = std::fs::read_to_string(folds.join(format!("fold_{i}_data.txt"))).unwrap();
        let (mut r, mut k) = (0, 0);
        for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            r += 1;
            let c: Vec<&str> = line.split('\t').collect();
            if STANDARD.contains(&c[3]) {
                standard += 1;
                let img = faces.join(c[0]).join(format!("coarse_tilt_aligned_face.{}.{}", c[2], c[1]));
                if img.is_file() {
                    k += 1;
                }
            }
        }
        rows.push(r);
        kept.push(k);
    }
    (rows, kept, standard)
}

#[test]
fn adience_archive_and_fold_files() {
    let Some(sh) = shared() else { return };
    let src = sh.join("adience_sample");
    let (rows, kept, standard) = expect_adience(&src, &src.join("faces"));
    // The sample's README: 30/19/14/18/16 rows; only fold 0 has images, 11 of them with a standard age.
    assert_eq!(rows, [30, 19, 14, 18, 16]);
    assert_eq!(kept, [11, 0, 0, 0, 0]);
    let dir = tempfile::tempdir().unwrap();
    // faces.tar.gz as the benchmark ships it: faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<image>.
    let mut members = vec![];
    for user in std::fs::read_dir(src.join("faces")).unwrap() {
        let user = user.unwrap().path();
        for f in std::fs::read_dir(&user).unwrap() {
            let f = f.unwrap().path();
            let name = format!(
                "faces/{}/{}",
                user.file_name().unwrap().to_string_lossy(),
                f.file_name().unwrap().to_string_lossy()
            );
            members.push((name, std::fs::read(&f).unwrap()));
        }
    }
    members.sort();
    assert_eq!(members.len(), 19);
    let archive = dir.path().join("faces.tar.gz");
    tar_gz(&archive, &members);
    let dest = dir.path().join("data");
    let r = import_adience(&archive, &src, &opts(&dest)).unwrap();
    assert_eq!(r.images, 19);
    assert_eq!(r.report.total, rows.iter().sum::<usize>());
    assert_eq!(r.report.kept, kept.iter().sum::<usize>());
    assert_eq!(r.report.dropped_for("image file missing"), standard - kept.iter().sum::<usize>());
    let per_fold: Vec<(i64, usize, usize)> = (0..5).map(|i| (i as i64, kept[i], rows[i])).collect();
    assert_eq!(r.per_fold, per_fold);
    assert!(r.checks.iter().any(|c| c.contains("not the official")), "{:?}", r.checks);
    assert!(r.checks.iter().any(|c| c.contains(&format!("{standard} of 97 rows"))), "{:?}", r.checks);
    assert!(dest.join("adience/fold_4_data.txt").is_file());
    assert!(dest.join("adience/faces/30601258@N03").is_dir());
    no_leftovers(&dest);

    // A missing fold file: an error naming it, before anything is unpacked.
    let folds = dir.path().join("folds");
    std::fs::create_dir(&folds).unwrap();
    for i in [0, 1, 2, 4] {
        std::fs::copy(src.join(format!("fold_{i}_data.txt")), folds.join(format!("fold_{i}_data.txt"))).unwrap();
    }
    let dest2 = dir.path().join("data2");
    let e = err(import_adience(&archive, &folds, &opts(&dest2)));
    assert!(e.contains("fold_3_data.txt") && e.contains("missing"), "{e}");
    assert!(!dest2.exists() || std::fs::read_dir(&dest2).unwrap().count() == 0);
    // A fold file with a broken line: its file and line named.
    std::fs::write(folds.join("fold_3_data.txt"), "user_id\toriginal_image\n").unwrap();
    let e = err(import_adience(&archive, &folds, &opts(&dest2)));
    assert!(e.contains("fold_3_data.txt line 1"), "{e}");
    // A corrupt face crop in the archive.
    let mut bad = members.clone();
    for m in &mut bad {
        m.1 = b"\xff\xd8\xff garbage".to_vec();
    }
    let bad_archive = dir.path().join("aligned.tar.gz");
    tar_gz(&bad_archive, &bad);
    let e = err(import_adience(&bad_archive, &src, &opts(&dest2)));
    assert!(e.contains("cannot be decoded"), "{e}");
    assert!(!dest2.join("adience").exists());
    no_leftovers(&dest2);
}

/// The bundled sample: what its README says it holds, its faces are the named UTKFace files (labels and pixels), and
/// the loader gives the quickstart's options what they need.
#[test]
fn bundled_sample_matches_its_sources() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/sample/utkface");
    let s = satm::core::data::utkface::read_sample(&root.join("utkface_sample.safetensors")).unwrap();
    assert_eq!(s.images.size(), [1500, 3, 32, 32]);
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &s.rows {
        let g = GROUPS.iter().find(|g| g.0 <= r.age && r.age <= g.1).expect("every sample age is in a group");
        *per.entry(g.2).or_default() += 1;
    }
    let want = [
        ("0-2", 319),
        ("4-6", 111),
        ("8-13", 156),
        ("15-20", 161),
        ("25-32", 241),
        ("38-43", 101),
        ("48-53", 120),
        ("60-", 291),
    ];
    assert_eq!(per, want.into_iter().collect::<BTreeMap<_, _>>());
    let o = |limit: Option<usize>, size: i64| UtkOpts {
        folds: 5,
        seed: 1,
        limit,
        decode: satm::core::data::DecodeOpts { size, cache: false, ..Default::default() },
        ..Default::default()
    };
    let ds = utkface(&root, &o(Some(160), 32)).unwrap();
    assert_eq!((ds.len(), ds.size()), (160, (32, 32)));
    assert_eq!(ds.fold_ids(), [0, 1, 2, 3, 4]);
    let ds64 = utkface(&root, &o(None, 64)).unwrap();
    assert_eq!((ds64.len(), ds64.size()), (1500, (64, 64)));
    assert!(ds64.report.info.iter().any(|i| i.0.contains("resized from the sample's 32x32")));

    let Some(sh) = shared() else { return };
    // Labels: each face's age and gender are those of its file in labels.csv.
    let csv = std::fs::read_to_string(sh.join("utkface/labels.csv")).unwrap();
    let labels: BTreeMap<&str, (u32, u8)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[0], (c[1].parse().unwrap(), c[2].parse().unwrap()))
        })
        .collect();
    for r in &s.rows {
        assert_eq!(labels[r.file.as_str()], (r.age, r.gender), "{}", r.file);
    }
    // Pixels: each face is its source image, decoded and shrunk by satm's own decoder (a triangle filter too): the
    // same picture, channel order and orientation, up to the two resizers' rounding.
    for i in [0usize, 700, 1499] {
        let px = satm::core::data::decode::decode_file(
            &sh.join("utkface/images").join(&s.rows[i].file),
            32,
            satm::core::data::Resize::CenterCrop,
        )
        .unwrap();
        let ours: Vec<u8> = Vec::try_from(&s.images.get(i as i64).flatten(0, -1)).unwrap();
        let mad = px.iter().zip(&ours).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum::<f64>() / px.len() as f64;
        assert!(mad < 4.0, "face {i} ({}): mean abs difference {mad}", s.rows[i].file);
    }
}
