//! Data loaders and batching on the real shipped data (../shared/data): the Adience sample and UTKFace.
//! Expected counts come from the data READMEs and a hand count of the sample's fold files, not from the loaders.
use satm::core::data::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn data() -> PathBuf {
    satm::script::data_root()
}

fn sample() -> PathBuf {
    data().join("adience_sample")
}

/// One cache dir for the whole test binary, so UTKFace is decoded once per size, not once per test.
fn shared_cache() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn dec(size: i64, cache_dir: &Path) -> DecodeOpts {
    DecodeOpts { size, cache: true, cache_dir: Some(cache_dir.to_path_buf()), ..Default::default() }
}

fn utk(size: i64) -> UtkOpts {
    UtkOpts { decode: dec(size, shared_cache()), ..Default::default() }
}

fn adience_opts() -> AdienceOpts {
    AdienceOpts { decode: dec(32, shared_cache()), skip_missing: true, ..Default::default() }
}

fn err_text<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

// ---------------------------------------------------------------- Adience sample

/// Drop reasons by hand from the sample's README table (97 rows): 62 rows carry one of the 8 standard strings;
/// None 6; bare numbers 17; (25, 23) 8, (8, 23) 1, (38, 42) 1, (27, 32) 1, (38, 48) 1. Only the 11 `(25, 32)` rows of
/// user 30601258@N03 have an image, so 51 standard rows are missing their file.
#[test]
fn adience_sample_default_protocol_counts() {
    let ds = adience(&sample(), &adience_opts()).unwrap();
    let r = &ds.report;
    assert_eq!(r.total, 97);
    let want: BTreeMap<&str, usize> = [
        ("age None", 6),
        ("age bare number", 17),
        ("age non-standard range (25, 23)", 8),
        ("age non-standard range (8, 23)", 1),
        ("age non-standard range (38, 42)", 1),
        ("age non-standard range (27, 32)", 1),
        ("age non-standard range (38, 48)", 1),
        ("image file missing", 51),
    ]
    .into_iter()
    .collect();
    let got: BTreeMap<&str, usize> = r.dropped.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(got, want);
    assert_eq!(r.info, vec![("duplicate lines kept (drop_duplicates: true drops them)".to_string(), 1)]);
    assert_eq!(ds.len(), 11);
    assert_eq!(r.kept, 11);
    // All 11 are user 30601258@N03, fold 0, face 2, age (25, 32) = class 4.
    assert!(ds.labels.iter().all(|&l| l == 4));
    assert!(ds.folds.iter().all(|&f| f == 0));
    assert!(ds.groups.iter().all(|g| g == "30601258@N03"));
    assert_eq!(ds.classes, vec!["0-2", "4-6", "8-13", "15-20", "25-32", "38-43", "48-53", "60-"]);
    // Path rule: faces/<user_id>/coarse_tilt_aligned_face.<face_id>.<original_image>, first kept row = fold 0 line 3.
    let want_first = sample().join("faces/30601258@N03/coarse_tilt_aligned_face.2.9548295372_f42bf75bdd_o.jpg");
    assert_eq!(ds.paths[0], want_first.display().to_string());
    // The real images decode to varied pixels.
    assert_eq!(ds.images.size(), vec![11, 3, 32, 32]);
    let std = ds.images.to_kind(Kind::Float).std(true).double_value(&[]);
    assert!(std > 20.0, "pixel std {std}");
    // Without skip_missing: an error with the count and a path.
    let o = AdienceOpts { skip_missing: false, ..adience_opts() };
    let e = err_text(adience(&sample(), &o));
    assert!(e.contains("51 of 62 image files are missing"), "{e}");
    assert!(e.contains("coarse_tilt_aligned_face.4.10424595844_1009c687e4_o.jpg"), "{e}");
}

#[test]
fn adience_sample_gender_nearest_and_duplicates() {
    // Gender: u in 5 rows, empty in 10; the other 82 are m/f, of which the 19 with images are kept (11 m, 8 f).
    let g = adience(&sample(), &AdienceOpts { task: Task::Gender, ..adience_opts() }).unwrap();
    assert_eq!(g.report.dropped_for("gender u (unknown)"), 5);
    assert_eq!(g.report.dropped_for("gender empty"), 10);
    assert_eq!(g.report.dropped_for("image file missing"), 82 - 19);
    assert_eq!(g.class_counts(), vec![11, 8]);
    assert_eq!(g.classes, vec!["male", "female"]);
    // Nearest: only the 6 None rows are dropped for their age; the 8 (25, 23) images join the 11 (25, 32) ones.
    let n = adience(&sample(), &AdienceOpts { age_mapping: AgeMapping::Nearest, ..adience_opts() }).unwrap();
    assert_eq!(n.report.dropped_for("age None"), 6);
    assert_eq!(n.report.dropped_total(), 6 + (91 - 19));
    assert_eq!(n.len(), 19);
    assert!(n.labels.iter().all(|&l| l == 4));
    let mapped: usize = n.report.info.iter().filter(|(k, _)| k.starts_with("mapped")).map(|(_, v)| v).sum();
    assert_eq!(mapped, 17 + 12);
    // drop_duplicates: the second copy of fold 4 lines 22/23 goes; 61 standard rows remain (50 missing files).
    let d = adience(&sample(), &AdienceOpts { drop_duplicates: true, ..adience_opts() }).unwrap();
    assert_eq!(d.report.dropped_for("duplicate line"), 1);
    assert_eq!(d.report.dropped_for("image file missing"), 50);
    assert!(d.report.info.is_empty());
    // Counts table: one row per fold present plus the total.
    let t = g.counts_table();
    assert_eq!(t.columns, vec!["fold", "male", "female", "total"]);
    assert_eq!(t.rows.len(), 2);
    assert_eq!(t.rows[1][3].to_string(), "19");
}

/// A copy of the sample's fold files (no images) in a temp dir, with `edit(fold, lines)` applied.
fn edited_sample(edit: impl Fn(usize, &mut Vec<String>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        let text = std::fs::read_to_string(sample().join(format!("fold_{i}_data.txt"))).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        edit(i, &mut lines);
        std::fs::write(dir.path().join(format!("fold_{i}_data.txt")), lines.join("\n") + "\n").unwrap();
    }
    dir
}

#[test]
fn adience_malformed_lines_name_file_and_line() {
    // Line 5 of fold 2 loses its last column.
    let d = edited_sample(|i, l| {
        if i == 2 {
            let cut = l[4].rsplit_once('\t').unwrap().0.to_string();
            l[4] = cut;
        }
    });
    let e = err_text(adience(d.path(), &adience_opts()));
    assert!(e.contains("fold_2_data.txt line 5") && e.contains("expected 12 tab-separated columns, found 11"), "{e}");
    // Line 3 of fold 1 gets an unparsable age.
    let d = edited_sample(|i, l| {
        if i == 1 {
            l[2] = l[2].replace("(48, 53)", "(48");
        }
    });
    let e = err_text(adience(d.path(), &adience_opts()));
    assert!(e.contains("fold_1_data.txt line 3") && e.contains("age '(48'"), "{e}");
    // A bad header.
    let d = edited_sample(|i, l| {
        if i == 0 {
            l[0] = l[0].replace("face_id", "faceid");
        }
    });
    let e = err_text(adience(d.path(), &adience_opts()));
    assert!(e.contains("fold_0_data.txt line 1"), "{e}");
}

#[test]
fn adience_user_in_two_folds_is_an_error() {
    // Fold 3 gains a row of user 30601258@N03, who belongs to fold 0.
    let d = edited_sample(|i, l| {
        if i == 3 {
            l.push("30601258@N03\t1.jpg\t2\t(25, 32)\tm\t1\t1\t1\t1\t0\t0\t0".into());
        }
    });
    let e = err_text(adience(d.path(), &adience_opts()));
    assert!(e.contains("user '30601258@N03' is in fold 0") && e.contains("in fold 3") && e.contains("line 20"), "{e}");
}

// ---------------------------------------------------------------- UTKFace

#[test]
fn utkface_labels_csv_matches_file_names() {
    let root = data().join("utkface");
    let rows = utkface::read_labels_csv(&root.join("labels.csv")).unwrap();
    assert_eq!(rows.len(), 9778);
    for r in &rows {
        assert_eq!(utkface::parse_name(&r.file).as_ref(), Some(r), "{}", r.file);
    }
    // README: gender male 4372 / female 5406; ages 1..110.
    assert_eq!(rows.iter().filter(|r| r.gender == 0).count(), 4372);
    assert_eq!(rows.iter().map(|r| r.age).min(), Some(1));
    assert_eq!(rows.iter().map(|r| r.age).max(), Some(110));
    // A bad row names the file and line.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("labels.csv"), "file,age,gender,race\na.jpg,3,0,1\nb.jpg,x,1,0\n").unwrap();
    let e = err_text(utkface(dir.path(), &utk(32)));
    assert!(e.contains("labels.csv line 3") && e.contains("age 'x'"), "{e}");
}

#[test]
fn utkface_mappings_folds_and_cache() {
    let root = data().join("utkface");
    let cache = tempfile::tempdir().unwrap();
    let o = UtkOpts { decode: dec(32, cache.path()), ..Default::default() };
    let t0 = Instant::now();
    let ds = utkface(&root, &o).unwrap();
    let cold = t0.elapsed();
    // README: drop mapping per group, 2305 gap ages dropped.
    assert_eq!(ds.class_counts(), vec![1587, 554, 779, 800, 1203, 504, 596, 1450]);
    assert_eq!(ds.report.dropped_total(), 2305);
    assert_eq!(ds.images.size(), vec![9778 - 2305, 3, 32, 32]);
    assert!(ds.groups.iter().all(|g| g.is_empty()));
    let t1 = Instant::now();
    let again = utkface(&root, &o).unwrap();
    let warm = t1.elapsed();
    println!("utkface 32x32 (7473 images): decode {cold:?}, cached load {warm:?}");
    assert!(ds.images.equal(&again.images));
    assert_eq!(ds.paths, again.paths);
    assert!(warm < cold, "cache hit {warm:?} not faster than decoding {cold:?}");
    let files: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
    // cache: false writes nothing and gives the same pixels.
    let nc = tempfile::tempdir().unwrap();
    let o2 =
        UtkOpts { decode: DecodeOpts { cache: false, ..dec(32, nc.path()) }, limit: Some(300), ..Default::default() };
    let small = utkface(&root, &o2).unwrap();
    assert_eq!(std::fs::read_dir(nc.path()).unwrap().count(), 0);
    let pos: BTreeMap<&str, usize> = ds.paths.iter().enumerate().map(|(i, p)| (p.as_str(), i)).collect();
    let idx: Vec<i64> = small.paths.iter().map(|p| pos[p.as_str()] as i64).collect();
    assert!(ds.subset(&idx).unwrap().images.equal(&small.images));

    // Nearest mapping: README table, nothing dropped.
    let near = utkface(&root, &UtkOpts { mapping: UtkMapping::Nearest, ..utk(32) }).unwrap();
    assert_eq!(near.class_counts(), vec![1587, 838, 905, 1212, 1619, 935, 1017, 1665]);
    assert_eq!(near.len(), 9778);

    // Folds: stratified (per class, fold sizes differ by at most one) and seeded.
    for c in 0..8 {
        let mut per = [0usize; 5];
        for i in 0..ds.len() {
            if ds.labels[i] == c {
                per[ds.folds[i] as usize] += 1;
            }
        }
        assert!(per.iter().max().unwrap() - per.iter().min().unwrap() <= 1, "class {c}: {per:?}");
    }
    let s1 = utkface(&root, &UtkOpts { seed: 1, ..utk(32) }).unwrap();
    assert_ne!(s1.folds, ds.folds);
    assert_eq!(utkface(&root, &UtkOpts { seed: 1, ..utk(32) }).unwrap().folds, s1.folds);
    // Fold split: test = fold 2 (1/5 of the items), train the rest.
    let (tr, te) = ds.fold_split(2).unwrap();
    assert_eq!(tr.len() + te.len(), ds.len());
    assert!((te.len() as i64 - ds.len() as i64 / 5).abs() <= 8);
    assert!(te.folds.iter().all(|&f| f == 2) && tr.folds.iter().all(|&f| f != 2));
    assert!(err_text(ds.fold_split(5)).contains("fold 5 does not exist"));
    // limit: a stratified subset of exactly n items.
    let lim = utkface(&root, &UtkOpts { limit: Some(800), ..utk(32) }).unwrap();
    assert_eq!(lim.len(), 800);
    let full = ds.class_counts();
    for (c, n) in lim.class_counts().into_iter().enumerate() {
        let exact = full[c] as f64 * 800.0 / ds.len() as f64;
        assert!((n as f64 - exact).abs() < 1.0, "class {c}: {n} vs {exact}");
    }
}

#[test]
fn utkface_epoch_cost_and_batches() {
    let ds = utkface(&data().join("utkface"), &utk(32)).unwrap();
    for augment in [false, true] {
        let o = BatchOpts { batch_size: 64, shuffle: true, seed: 3, augment, drop_last: false, device: Device::Cpu };
        let t = Instant::now();
        let b = ds.batches(&o).unwrap();
        assert_eq!(b.len(), ds.len().div_ceil(64));
        let mut seen = vec![0u32; ds.len()];
        for batch in b {
            let batch = batch.unwrap();
            for &i in &batch.idx {
                seen[i as usize] += 1;
            }
        }
        println!("utkface epoch, {} images at 32x32, batch 64, augment {augment}: {:?}", ds.len(), t.elapsed());
        assert!(seen.iter().all(|&c| c == 1));
    }
}

#[test]
fn utkface_labels_from_file_names_without_csv() {
    let dir = tempfile::tempdir().unwrap();
    let files = copy_utk_images(dir.path(), 6);
    // The two names the shipped set left out for lacking a race field.
    std::fs::copy(&files[0], dir.path().join("61_1_20170109142408075.jpg.chip.jpg")).unwrap();
    std::fs::copy(&files[0], dir.path().join("61_3_20170109150557335.jpg.chip.jpg")).unwrap();
    let nc = tempfile::tempdir().unwrap();
    let ds = utkface(dir.path(), &UtkOpts { decode: dec(16, nc.path()), folds: 0, ..Default::default() }).unwrap();
    assert_eq!(ds.report.total, 8);
    assert_eq!(ds.report.dropped_for("file name does not parse as age_gender_race_datetime.jpg"), 2);
    // The first 6 names sorted: ages 100, 100, 101, 10, 10, 10 (all in a group: 60- or 8-13).
    let want: Vec<i64> = files
        .iter()
        .map(|f| {
            let age: u32 = f.file_name().unwrap().to_str().unwrap().split('_').next().unwrap().parse().unwrap();
            if age >= 60 { 7 } else { 2 }
        })
        .collect();
    assert_eq!(ds.labels, want);
    assert!(ds.folds.iter().all(|&f| f == -1));
    assert!(err_text(ds.fold_split(0)).contains("no folds"));
}

// ---------------------------------------------------------------- batches

#[test]
fn batches_on_cuda_match_cpu_when_available() {
    if !tch::Cuda::is_available() {
        // Visible even though the test passes (println! of a passing test is captured). Not a failure under CI
        // either: CI machines have no GPU, so this test only runs where one is.
        let msg = "\n*** batches_on_cuda_match_cpu_when_available: skipped: no CUDA ***\n";
        let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
        return;
    }
    let ds = synthetic(&SyntheticOpts { n: 70, classes: 3, size: 12, ..Default::default() }).unwrap();
    let o = BatchOpts { batch_size: 32, augment: true, ..Default::default() };
    let cpu: Vec<Batch> = ds.batches(&o).unwrap().map(|b| b.unwrap()).collect();
    let gpu: Vec<Batch> =
        ds.batches(&BatchOpts { device: Device::Cuda(0), ..o }).unwrap().map(|b| b.unwrap()).collect();
    for (c, g) in cpu.iter().zip(&gpu) {
        assert_eq!(g.x.device(), Device::Cuda(0));
        assert!(g.x.to_device(Device::Cpu).allclose(&c.x, 0.0, 1e-6, false));
        assert!(g.y.to_device(Device::Cpu).equal(&c.y));
    }
}

#[test]
fn batches_cover_each_item_once_with_right_shapes() {
    let ds = synthetic(&SyntheticOpts { n: 203, classes: 5, size: 16, seed: 4, ..Default::default() }).unwrap();
    let o = BatchOpts { batch_size: 50, shuffle: true, seed: 9, augment: false, drop_last: false, device: Device::Cpu };
    let batches: Vec<Batch> = ds.batches(&o).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 5);
    assert_eq!(batches[4].x.size(), vec![3, 3, 16, 16]);
    let all: Vec<i64> = batches.iter().flat_map(|b| b.idx.clone()).collect();
    assert_eq!(all.iter().copied().collect::<BTreeSet<_>>().len(), 203);
    assert_ne!(all, (0..203).collect::<Vec<_>>(), "shuffled");
    for b in &batches {
        assert_eq!(b.x.kind(), Kind::Float);
        assert_eq!(b.y.kind(), Kind::Int64);
        // x is exactly the stored bytes / 255 and y the labels of idx.
        let it = Tensor::from_slice(&b.idx);
        let want = ds.images.index_select(0, &it).to_kind(Kind::Float) / 255.0;
        assert!(b.x.allclose(&want, 0.0, 1e-7, false));
        assert_eq!(
            Vec::<i64>::try_from(&b.y).unwrap(),
            b.idx.iter().map(|&i| ds.labels[i as usize]).collect::<Vec<_>>()
        );
    }
    // Same seed, same order; the next epoch (seed + 1) a different one.
    let again: Vec<i64> = ds.batches(&o).unwrap().flat_map(|b| b.unwrap().idx).collect();
    assert_eq!(again, all);
    let next: Vec<i64> = ds.batches(&o.epoch(1)).unwrap().flat_map(|b| b.unwrap().idx).collect();
    assert_ne!(next, all);
    // drop_last leaves out the 3 leftover items; no shuffle keeps order.
    let o2 = BatchOpts { drop_last: true, shuffle: false, ..o.clone() };
    let idx: Vec<i64> = ds.batches(&o2).unwrap().flat_map(|b| b.unwrap().idx).collect();
    assert_eq!(idx, (0..200).collect::<Vec<_>>());
    // Augmentation stays in [0, 1], changes pixels, and is seeded.
    let oa = BatchOpts { augment: true, ..o.clone() };
    let a1: Vec<Batch> = ds.batches(&oa).unwrap().map(|b| b.unwrap()).collect();
    let a2: Vec<Batch> = ds.batches(&oa).unwrap().map(|b| b.unwrap()).collect();
    for (i, b) in a1.iter().enumerate() {
        assert!(b.x.min().double_value(&[]) >= 0.0 && b.x.max().double_value(&[]) <= 1.0);
        assert!(b.x.equal(&a2[i].x));
        assert_eq!(b.idx, batches[i].idx, "augmentation does not change the order");
        assert!(!b.x.equal(&batches[i].x));
    }
    assert!(err_text(ds.batches(&BatchOpts { batch_size: 0, ..o })).contains("at least 1"));
}

#[test]
fn split_val_keeps_groups_apart_or_stratifies() {
    let ds = synthetic(&SyntheticOpts { n: 400, classes: 4, size: 8, groups: 20, ..Default::default() }).unwrap();
    let (tr, va) = ds.split_val(0.25, 3).unwrap();
    assert_eq!(tr.len() + va.len(), 400);
    let gt: BTreeSet<&String> = tr.groups.iter().collect();
    let gv: BTreeSet<&String> = va.groups.iter().collect();
    assert!(gt.is_disjoint(&gv));
    assert_eq!(va.len(), 100, "5 of the 20 equal groups");
    let (_, va2) = ds.split_val(0.25, 4).unwrap();
    let gv2: BTreeSet<&String> = va2.groups.iter().collect();
    assert_ne!(gv, gv2, "the seed changes which groups go to validation");
    // Without groups: stratified, 10% of each class.
    let ng = synthetic(&SyntheticOpts { n: 400, classes: 4, size: 8, ..Default::default() }).unwrap();
    let (_, v) = ng.split_val(0.1, 1).unwrap();
    assert_eq!(v.class_counts(), vec![10, 10, 10, 10]);
    assert!(err_text(ng.split_val(1.5, 1)).contains("(0, 1)"));
}

#[test]
fn synthetic_is_ordinal_and_seeded() {
    let o = SyntheticOpts { n: 400, classes: 8, size: 16, seed: 2, noise: 0.05, ..Default::default() };
    let ds = synthetic(&o).unwrap();
    assert_eq!(ds.class_counts(), vec![50; 8]);
    // Mean brightness rises with the class.
    let means: Vec<f64> = (0..8)
        .map(|c| {
            let idx: Vec<i64> = (0..400).filter(|&i| ds.labels[i as usize] == c).collect();
            ds.images
                .index_select(0, &Tensor::from_slice(&idx))
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        })
        .collect();
    assert!(means.windows(2).all(|w| w[1] > w[0] + 10.0), "{means:?}");
    assert!(synthetic(&o).unwrap().images.equal(&ds.images));
    assert!(!synthetic(&SyntheticOpts { seed: 3, ..o }).unwrap().images.equal(&ds.images));
}

// ---------------------------------------------------------------- generic sources, bad files

fn copy_utk_images(dst: &Path, n: usize) -> Vec<PathBuf> {
    let src = data().join("utkface/images");
    let mut names: Vec<_> = std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    names
        .iter()
        .take(n)
        .map(|p| {
            let to = dst.join(p.file_name().unwrap());
            std::fs::copy(p, &to).unwrap();
            to
        })
        .collect()
}

#[test]
fn corrupt_and_missing_files_error_or_counted_skip() {
    let dir = tempfile::tempdir().unwrap();
    for c in ["a", "b"] {
        std::fs::create_dir(dir.path().join(c)).unwrap();
        copy_utk_images(&dir.path().join(c), 3);
    }
    // A truncated JPEG: the real header, then nothing.
    let good = std::fs::read(copy_utk_images(&dir.path().join("b"), 1)[0].clone()).unwrap();
    let bad = dir.path().join("b/broken.jpg");
    std::fs::write(&bad, &good[..40]).unwrap();
    std::fs::write(dir.path().join("a/noise.png"), b"not a png at all").unwrap();
    let nc = tempfile::tempdir().unwrap();
    let o = ManifestOpts { decode: dec(16, nc.path()), ..Default::default() };
    let e = err_text(image_folder(dir.path(), &o));
    assert!(e.contains("2 image(s) cannot be decoded") && e.contains("noise.png"), "{e}");
    let ds = image_folder(dir.path(), &ManifestOpts { skip_bad: true, ..o.clone() }).unwrap();
    assert_eq!(ds.report.dropped_for("image cannot be decoded"), 2);
    assert_eq!(ds.class_counts(), vec![3, 3]);
    assert_eq!(ds.classes, vec!["a", "b"]);
    // The cached run reports the same failures.
    let ds2 = image_folder(dir.path(), &ManifestOpts { skip_bad: true, ..o.clone() }).unwrap();
    assert_eq!(ds2.report, ds.report);
    assert!(ds2.images.equal(&ds.images));
    // A damaged cache file is ignored (and rewritten), never trusted.
    let cached: Vec<PathBuf> = std::fs::read_dir(nc.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(cached.len(), 1);
    let bytes = std::fs::read(&cached[0]).unwrap();
    std::fs::write(&cached[0], &bytes[..bytes.len() / 2]).unwrap();
    let ds3 = image_folder(dir.path(), &ManifestOpts { skip_bad: true, ..o.clone() }).unwrap();
    assert!(ds3.images.equal(&ds.images));
    assert_eq!(std::fs::read(&cached[0]).unwrap(), bytes);
    // Only the broken JPEG, asked directly: its own error.
    let e = format!("{:#}", decode::decode_file(&bad, 16, Resize::CenterCrop).unwrap_err());
    assert!(e.contains("broken.jpg"), "{e}");

    // CSV manifest with a missing file (with a header, group column, and an explicit class order).
    let files = copy_utk_images(dir.path(), 4);
    let mut csv = String::from("path,label,group\n");
    for (i, f) in files.iter().enumerate() {
        csv += &format!(
            "{},{},u{}\n",
            f.file_name().unwrap().to_string_lossy(),
            if i % 2 == 0 { "old" } else { "young" },
            i / 2
        );
    }
    csv += "gone.jpg,young,u9\n";
    let m = dir.path().join("m.csv");
    std::fs::write(&m, csv).unwrap();
    let mo = ManifestOpts { classes: Some(vec!["young".into(), "old".into()]), ..o.clone() };
    let e = err_text(csv_manifest(&m, &mo));
    assert!(e.contains("1 of 5 image files are missing") && e.contains("gone.jpg"), "{e}");
    let ds = csv_manifest(&m, &ManifestOpts { skip_missing: true, ..mo.clone() }).unwrap();
    assert_eq!(ds.report.dropped_for("image file missing"), 1);
    assert_eq!(ds.labels, vec![1, 0, 1, 0]);
    assert_eq!(ds.groups, vec!["u0", "u0", "u1", "u1"]);
    // A malformed manifest line names the line.
    std::fs::write(&m, "a.jpg,young\nb.jpg\n").unwrap();
    let e = err_text(csv_manifest(&m, &mo));
    assert!(e.contains("m.csv line 2"), "{e}");
}

// ---------------------------------------------------------------- script API

fn eval(src: &str) -> Result<rhai::Dynamic, String> {
    let engine = satm::script::new_engine();
    engine.eval::<rhai::Dynamic>(src).map_err(|e| e.to_string())
}

#[test]
fn script_api_datasets_and_batches() {
    satm::script::state::update(|s| s.quiet = true);
    let out = eval(
        r#"
        let ds = synthetic(#{n: 90, classes: 3, size: 8, seed: 1, folds: 3});
        let f = ds.fold(1);
        let s = ds.split(0.2, 5);
        let n = 0; let nb = 0;
        for b in f.train.batches(16, #{shuffle: true, seed: 2, augment: true}) { n += b.x.shape[0]; nb += 1; }
        [ds.to_string(), ds.len(), ds.num_classes, ds.classes, f.train.len(), f.test.len(), s.val.len(), n, nb,
         ds.take(7).len(), ds.subset(30).len(), ds.subset([2, 2, 5]).labels.len(), ds.batches(16).len()]
        "#,
    )
    .unwrap()
    .into_array()
    .unwrap();
    assert_eq!(out[0].to_string(), "Dataset[synthetic; 90 items; 3 classes; 8x8]");
    let ints: Vec<i64> = [1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12].iter().map(|&i| out[i].as_int().unwrap()).collect();
    assert_eq!(ints, vec![90, 3, 60, 30, 18, 60, 4, 7, 30, 3, 6]);
    let e = eval("synthetic(#{n: 10, colours: 3})").unwrap_err();
    assert!(e.contains("unknown option(s) colours") && e.contains("valid options"), "{e}");
    let e = eval("utkface(#{mapping: \"closest\"})").unwrap_err();
    assert!(e.contains("drop, nearest"), "{e}");
    let root = sample().display().to_string();
    let out = eval(&format!(
        r#"let a = adience(#{{root: "{root}", size: 16, skip_missing: true, cache: false}}); [a.report["age None"], a.len()]"#
    ))
    .unwrap()
    .into_array()
    .unwrap();
    assert_eq!((out[0].as_int().unwrap(), out[1].as_int().unwrap()), (6, 11));
    let e = eval(&format!(r#"adience(#{{root: "{root}", size: 16, cache: false}})"#)).unwrap_err();
    assert!(e.contains("adience") && e.contains("missing"), "{e}");
}
