//! Data loaders and batching on the real shipped data (../shared/data): Adience sample, UTKFace.
use satm::core::data::*;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn data() -> PathBuf {
    satm::script::data_root()
}

fn utk_opts(size: i64, cache: &Path) -> UtkOpts {
    UtkOpts {
        decode: DecodeOpts {
            size,
            cache: true,
            cache_dir: Some(cache.to_path_buf()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn tensor_eq(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.equal(b)
}

#[test]
fn utkface_loads_with_both_mappings_and_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let root = data().join("utkface");
    let t0 = Instant::now();
    let ds = utkface(&root, &utk_opts(32, tmp.path())).unwrap();
    let cold = t0.elapsed();
    // README: drop mapping per group 1587 554 779 800 1203 504 596 1450, dropped 2305 of 9778.
    assert_eq!(
        ds.class_counts(),
        vec![1587, 554, 779, 800, 1203, 504, 596, 1450]
    );
    assert_eq!(ds.report.total, 9778);
    assert_eq!(ds.report.dropped_total(), 2305);
    assert_eq!(ds.len(), 9778 - 2305);
    assert_eq!(ds.images.size(), vec![9778 - 2305, 3, 32, 32]);
    assert_eq!(ds.images.kind(), Kind::Uint8);
    let t1 = Instant::now();
    let again = utkface(&root, &utk_opts(32, tmp.path())).unwrap();
    let warm = t1.elapsed();
    println!("utkface 32x32: cold load {cold:?}, cached load {warm:?}");
    assert!(tensor_eq(&ds.images, &again.images));
    assert_eq!(ds.labels, again.labels);
    assert_eq!(ds.folds, again.folds);
    let mut o = utk_opts(32, tmp.path());
    o.mapping = UtkMapping::Nearest;
    let near = utkface(&root, &o).unwrap();
    assert_eq!(
        near.class_counts(),
        vec![1587, 838, 905, 1212, 1619, 935, 1017, 1665]
    );
    assert_eq!(near.report.dropped_total(), 0);

    // An epoch at batch 64 covers every item once.
    let opts = BatchOpts {
        batch_size: 64,
        shuffle: true,
        seed: 3,
        augment: true,
        drop_last: false,
        device: Device::Cpu,
    };
    let t2 = Instant::now();
    let b = ds.batches(&opts).unwrap();
    assert_eq!(b.len(), ds.len().div_ceil(64));
    let mut seen = vec![0u32; ds.len()];
    for batch in b {
        let batch = batch.unwrap();
        for &i in &batch.idx {
            seen[i as usize] += 1;
        }
        assert_eq!(batch.x.kind(), Kind::Float);
    }
    println!(
        "utkface epoch 32x32 batch 64 with augmentation: {:?}",
        t2.elapsed()
    );
    assert!(seen.iter().all(|&c| c == 1));
}

#[test]
fn zz_profile_batches() {
    let ds = synthetic(&SyntheticOpts {
        n: 9800,
        classes: 8,
        size: 32,
        ..Default::default()
    })
    .unwrap();
    for aug in [false, true] {
        let opts = BatchOpts {
            batch_size: 64,
            shuffle: true,
            seed: 3,
            augment: aug,
            drop_last: false,
            device: Device::Cpu,
        };
        let t = Instant::now();
        let n = ds
            .batches(&opts)
            .unwrap()
            .map(|b| b.unwrap().x.size()[0])
            .sum::<i64>();
        println!("aug {aug}: {n} items {:?}", t.elapsed());
    }
}
