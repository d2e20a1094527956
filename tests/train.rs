//! The SATM loop on a synthetic ordinal task: black-box robustness gain, frozen sources, source bookkeeping,
//! special cases (r_da = 0, r_adv = r_da = 0), kill-and-resume, NaN handling.
use satm::core::attacks::{self, AttackKind, AttackSpec};
use satm::core::data::Dataset;
use satm::core::models::{Classifier, ModelSpec, Net};
use satm::core::train::{self, SourcePolicy, TrainConfig};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const SIZE: i64 = 16;
const CLASSES: i64 = 4;

/// Class k: a bright square whose position and brightness grow with k, on noise — learnable in seconds.
fn synthetic(n: usize, seed: i64) -> Dataset {
    tch::manual_seed(seed);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % CLASSES).collect();
    let imgs = Tensor::rand([n as i64, 3, SIZE, SIZE], (Kind::Float, Device::Cpu)) * 0.35;
    for (i, &c) in labels.iter().enumerate() {
        let off = c * 3;
        let v = 0.45 + 0.15 * c as f64;
        let _ = imgs.get(i as i64).narrow(1, off, 5).narrow(2, off, 5).fill_(v);
    }
    let images = (imgs.clamp(0.0, 1.0) * 255.0).round().to_kind(Kind::Uint8);
    Dataset::new("synthetic", images, labels, (0..CLASSES).map(|c| format!("c{c}")).collect(), vec![], vec![], vec![])
        .unwrap()
}

fn net(seed: i64, arch: &str) -> Net {
    tch::manual_seed(seed);
    let spec = ModelSpec { arch: arch.into(), classes: CLASSES, width: 0.25, size: SIZE, ..ModelSpec::default() };
    Net::new(&spec, Device::Cpu).unwrap()
}

fn cfg(steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 32,
        lr: 0.002,
        optimizer: satm::core::train::optim::OptimizerKind::Adam,
        weight_decay: 0.0,
        log_every: 5,
        keep_best: false,
        seed: 7,
        precision: satm::core::device::Precision::Fp32,
        ..TrainConfig::default()
    }
}

fn standard(n: &mut Net, data: &Dataset, steps: usize) {
    train::run(train::Run {
        trainees: vec![n],
        frozen: vec![],
        train: data,
        val: None,
        cfg: TrainConfig { r_adv: 0.0, r_da: 0.0, ..cfg(steps) },
        dir: None,
        resume: None,
        progress: false,
    })
    .unwrap();
}

/// Accuracy of `target` on R+Step-LL examples crafted on `source` (a black-box attack).
fn black_box(source: &Net, target: &Net, data: &Dataset) -> f64 {
    tch::manual_seed(99);
    let x = data.images.to_kind(Kind::Float) / 255.0;
    let y = Tensor::from_slice(&data.labels);
    let xa = attacks::craft(&AttackSpec::new(AttackKind::RStepLl), &[source as &dyn Classifier], &x, &y).unwrap();
    let p = tch::no_grad(|| target.forward_t(&xa, false).unwrap()).argmax(-1, false);
    p.eq_tensor(&y).to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
}

fn weights(n: &Net) -> Vec<Tensor> {
    n.named_variables().into_iter().map(|(_, t)| t.detach().copy()).collect()
}

fn same(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.equal(y))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("satm-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn satm_k2_raises_black_box_accuracy_well_above_undefended() {
    let data = synthetic(384, 1);
    let test = synthetic(256, 2);
    let (mut a, mut b) = (net(10, "vgg_s"), net(11, "vggbn_s"));
    standard(&mut a, &data, 60);
    standard(&mut b, &data, 60);
    let clean = black_box(&a, &a, &test); // sanity: also check a learnt the task
    let before_ab = black_box(&b, &a, &test);
    let before_ba = black_box(&a, &b, &test);
    let r = train::run(train::Run {
        trainees: vec![&mut a, &mut b],
        frozen: vec![],
        train: &data,
        val: None,
        cfg: cfg(80),
        dir: None,
        resume: None,
        progress: false,
    })
    .unwrap();
    assert_eq!(r.steps, 80);
    let after_ab = black_box(&b, &a, &test);
    let after_ba = black_box(&a, &b, &test);
    eprintln!("clean {clean:.3}; A from B {before_ab:.3} -> {after_ab:.3}; B from A {before_ba:.3} -> {after_ba:.3}");
    assert!(after_ab > before_ab + 0.15, "A on B's examples: {before_ab} -> {after_ab}");
    assert!(after_ba > before_ba + 0.15, "B on A's examples: {before_ba} -> {after_ba}");
}

#[test]
fn frozen_source_stays_bit_identical_and_k3_round_robin_is_balanced() {
    let data = synthetic(128, 3);
    let (mut a, mut b, mut c, d) = (net(1, "vgg_s"), net(2, "vgg_s"), net(3, "vgg_s"), net(4, "vggbn_s"));
    let d_before = weights(&d);
    let a_before = weights(&a);
    let r = train::run(train::Run {
        trainees: vec![&mut a, &mut b, &mut c],
        frozen: vec![&d],
        train: &data,
        val: None,
        cfg: TrainConfig { r_da: 0.0, ..cfg(12) },
        dir: None,
        resume: None,
        progress: false,
    })
    .unwrap();
    assert!(same(&d_before, &weights(&d)), "the frozen network changed");
    assert!(!same(&a_before, &weights(&a)), "a trainee did not change");
    // Each trainee has 3 other sources (2 trainees + the frozen one): 12 steps round-robin = 4 each, never itself.
    for (k, t) in r.trainees.iter().enumerate() {
        assert_eq!(t.source_counts[k], 0, "trainee {k} used itself");
        let others: Vec<usize> = (0..4).filter(|&s| s != k).map(|s| t.source_counts[s]).collect();
        assert_eq!(others, vec![4, 4, 4], "trainee {k}: {:?}", t.source_counts);
    }
}

#[test]
fn round_robin_matches_reference_formula_and_graph_is_respected() {
    // ref_satm.py: src = (k + 1 + it % (K-1)) % K
    for k3 in 0..3 {
        for it in 0..6 {
            let s = train::satm::sources_for(&SourcePolicy::RoundRobin, k3, 3, 3, it, 0);
            assert_eq!(s, vec![(k3 + 1 + it % 2) % 3]);
        }
    }
    let g = SourcePolicy::Graph(vec![vec![2], vec![0, 2]]);
    assert_eq!(train::satm::sources_for(&g, 0, 2, 3, 5, 0), vec![2]);
    assert_eq!(train::satm::sources_for(&g, 1, 2, 3, 1, 0), vec![2]);
    let all = train::satm::sources_for(&SourcePolicy::All, 1, 3, 4, 0, 0);
    assert_eq!(all, vec![2, 0, 3]);
}

#[test]
fn r_adv_zero_and_r_da_zero_equals_standard_training() {
    let data = synthetic(96, 5);
    let (mut a, mut b) = (net(21, "vgg_s"), net(21, "vgg_s"));
    standard(&mut a, &data, 6);
    let other = net(22, "vgg_s");
    train::run(train::Run {
        trainees: vec![&mut b],
        frozen: vec![&other],
        train: &data,
        val: None,
        cfg: TrainConfig { r_adv: 0.0, r_da: 0.0, ..cfg(6) },
        dir: None,
        resume: None,
        progress: false,
    })
    .unwrap();
    assert!(same(&weights(&a), &weights(&b)));
}

#[test]
fn r_da_zero_trains_no_da_head() {
    let data = synthetic(64, 6);
    let (mut a, mut b) = (net(31, "vgg_s"), net(32, "vgg_s"));
    let dir = tmp("noda");
    let r = train::run(train::Run {
        trainees: vec![&mut a, &mut b],
        frozen: vec![],
        train: &data,
        val: None,
        cfg: TrainConfig { r_da: 0.0, ..cfg(2) },
        dir: Some(dir.clone()),
        resume: None,
        progress: false,
    })
    .unwrap();
    let ck = r.checkpoint.unwrap();
    assert!(ck.join("net0.safetensors").is_file());
    assert!(!ck.join("da0.safetensors").exists() && !ck.join("da1.safetensors").exists());
    assert!(r.history.series("train", &r.labels[0], "da_loss").is_empty());
    let with_da = train::run(train::Run {
        trainees: vec![&mut a, &mut b],
        frozen: vec![],
        train: &data,
        val: None,
        cfg: TrainConfig { log_every: 1, ..cfg(2) },
        dir: Some(tmp("withda")),
        resume: None,
        progress: false,
    })
    .unwrap();
    assert!(with_da.checkpoint.unwrap().join("da0.safetensors").is_file());
    // Logged for users checking DANN (a flat 0.69 loss): DA loss, domain accuracy and lambda per trainee.
    for m in ["da_loss", "domain_acc", "lambda"] {
        assert_eq!(with_da.history.series("train", &with_da.labels[1], m).len(), 2, "{m}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resumed_run_follows_the_uninterrupted_trajectory() {
    let data = synthetic(96, 8);
    let run_for = |a: &mut Net, b: &mut Net, steps: usize, dir: &PathBuf, resume: bool| {
        train::run(train::Run {
            trainees: vec![a, b],
            frozen: vec![],
            train: &data,
            val: None,
            cfg: TrainConfig { augment: true, ..cfg(steps) },
            dir: Some(dir.clone()),
            resume: resume.then(|| dir.clone()),
            progress: false,
        })
        .unwrap()
    };
    let (mut a1, mut b1) = (net(41, "vggbn_s"), net(42, "vgg_s"));
    let full = tmp("full");
    run_for(&mut a1, &mut b1, 8, &full, false);
    // "Killed" after 5 steps (its last checkpoint), then resumed into freshly initialised networks.
    let (mut a2, mut b2) = (net(41, "vggbn_s"), net(42, "vgg_s"));
    let part = tmp("part");
    run_for(&mut a2, &mut b2, 5, &part, false);
    let (mut a3, mut b3) = (net(141, "vggbn_s"), net(142, "vgg_s"));
    let r = run_for(&mut a3, &mut b3, 8, &part, true);
    assert_eq!(r.steps, 8);
    // Same trajectory up to float summation order inside libtorch's threaded kernels (observed: ~2e-6).
    let max_diff = |p: &[Tensor], q: &[Tensor]| {
        p.iter().zip(q).map(|(x, y)| (x - y).abs().max().double_value(&[])).fold(0.0, f64::max)
    };
    let d = max_diff(&weights(&a1), &weights(&a3)).max(max_diff(&weights(&b1), &weights(&b3)));
    assert!(d < 1e-5, "resumed weights differ by {d}");
    // A run that really diverges (another data seed) is far away: the tolerance can fail.
    let (mut a4, mut b4) = (net(41, "vggbn_s"), net(42, "vgg_s"));
    train::run(train::Run {
        trainees: vec![&mut a4, &mut b4],
        frozen: vec![],
        train: &data,
        val: None,
        cfg: TrainConfig { augment: true, seed: 8, ..cfg(8) },
        dir: None,
        resume: None,
        progress: false,
    })
    .unwrap();
    assert!(max_diff(&weights(&a1), &weights(&a4)) > 1e-3);
    let _ = std::fs::remove_dir_all(&full);
    let _ = std::fs::remove_dir_all(&part);
}

#[test]
fn nan_loss_stops_with_clear_error_and_intact_checkpoint() {
    let data = synthetic(64, 9);
    let (mut a, mut b) = (net(51, "vgg_s"), net(52, "vgg_s"));
    let dir = tmp("nan");
    let err = train::run(train::Run {
        trainees: vec![&mut a, &mut b],
        frozen: vec![],
        train: &data,
        val: None,
        cfg: TrainConfig { lr: 1e12, momentum: 0.0, checkpoint_every: 1, ..cfg(50) },
        dir: Some(dir.clone()),
        resume: None,
        progress: false,
    })
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("loss is") && msg.contains("step") && msg.contains("trainee"), "{msg}");
    assert!(msg.contains("last good checkpoint"), "{msg}");
    // The checkpoint it names loads into fresh networks.
    let ck = satm::core::train::checkpoint::latest(&dir).unwrap();
    for k in 0..2 {
        let saved = Tensor::read_safetensors(ck.join(format!("net{k}.safetensors"))).unwrap();
        assert!(
            saved.iter().all(|(_, t)| t.isfinite().all().int64_value(&[]) == 1),
            "checkpoint holds non-finite weights"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
