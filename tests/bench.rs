//! satm's SATM step against the PyTorch reference (shared/bench/ref_satm.py): identical weights and batch in, the
//! same losses and updated weights out.
use satm::core::data::Dataset;
use satm::core::models::{DaHead, ModelSpec, Net};
use satm::core::train::checkpoint::{self, CheckpointState};
use satm::core::train::optim::Optimizer;
use satm::core::train::satm::unique_labels;
use satm::core::train::{self, History, TrainConfig};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor, nn};

const K: usize = 2;
const STEPS: usize = 2;
const CLASSES: i64 = 8;
const BATCH: i64 = 8;
const SIZE: i64 = 16;
const WIDTH: f64 = 0.25;
const LR: f64 = 0.05;
const ARCHS: [&str; 3] = ["vgg_s", "vggbn_s", "resnet_s"];

fn cfg() -> TrainConfig {
    TrainConfig {
        steps: STEPS,
        batch_size: BATCH as usize,
        lr: LR,
        momentum: 0.9,
        weight_decay: 0.0,
        r_adv: 1.0,
        r_da: 0.1,
        // alpha = 0: R+Step-LL's random step plays no role, so both sides craft from the same point.
        alpha: Some(0.0),
        da_hidden: 256,
        log_every: 1,
        precision: satm::core::device::Precision::parse("fp32").unwrap(),
        channels_last: false,
        ..TrainConfig::default()
    }
}

fn read(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_iter().collect()
}

/// ‖a − b‖ / ‖b‖ (0 when both are 0).
fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).norm().double_value(&[]);
    let n = b.norm().double_value(&[]);
    if n == 0.0 { d } else { d / n }
}

/// One arch: satm trains K fresh networks for STEPS steps from a checkpoint that fixes every initial weight (the DA
/// heads' too); the same states go to python. Returns (satm's initial, satm's final) state per network and the losses.
#[allow(clippy::type_complexity)]
fn satm_side(
    arch: &str,
    threads: i32,
    data: &Dataset,
    dir: &Path,
) -> (Vec<HashMap<String, Tensor>>, Vec<HashMap<String, Tensor>>, Vec<Vec<[f64; 4]>>) {
    tch::set_num_threads(threads);
    tch::manual_seed(1);
    let spec = ModelSpec { arch: arch.into(), classes: CLASSES, width: WIDTH, size: SIZE, ..ModelSpec::default() };
    let mut nets: Vec<Net> = (0..K).map(|_| Net::new(&spec, Device::Cpu).unwrap()).collect();
    let das: Vec<(nn::VarStore, DaHead)> = nets
        .iter()
        .map(|n| {
            let vs = nn::VarStore::new(Device::Cpu);
            let head = DaHead::new(vs.root() / "da", n.feature_dim(), 256);
            (vs, head)
        })
        .collect();
    let opts: Vec<Optimizer> = (0..K).map(|_| Optimizer::new(vec![], cfg().optim())).collect();
    let labels = unique_labels(nets.iter().map(|n| n.label()).collect());
    let run_dir = dir.join(format!("{arch}_satm_{threads}"));
    let state = CheckpointState {
        step: 0,
        history: History::default(),
        best: None,
        since_best: 0,
        source_counts: vec![vec![0; K]; K],
        labels: labels.clone(),
        satm: satm::VERSION.into(),
    };
    {
        let refs: Vec<&mut Net> = nets.iter_mut().collect();
        let parts: Vec<(Option<&nn::VarStore>, &Optimizer)> =
            das.iter().zip(&opts).map(|((vs, _), o)| (Some(vs), o)).collect();
        checkpoint::save(&run_dir, &refs, &parts, &state).unwrap();
    }
    let mut initial = vec![];
    for (k, net) in nets.iter().enumerate() {
        let mut named: Vec<(String, Tensor)> = net.named_variables();
        named.extend(das[k].0.variables());
        Tensor::write_safetensors(&named, dir.join(format!("{arch}_net{k}.safetensors"))).unwrap();
        initial.push(named.into_iter().map(|(n, t)| (n, t.copy())).collect::<HashMap<_, _>>());
    }
    let res = train::run(train::Run {
        trainees: nets.iter_mut().collect(),
        frozen: vec![],
        train: data,
        val: None,
        cfg: cfg(),
        dir: Some(run_dir.clone()),
        resume: Some(run_dir.clone()),
        progress: false,
        control: None,
    })
    .unwrap();
    assert_eq!(res.steps, STEPS);
    let ck = res.checkpoint.expect("a run with a directory writes a final checkpoint");
    let mut after = vec![];
    let mut losses = vec![];
    for (k, net) in nets.iter().enumerate() {
        let mut m: HashMap<String, Tensor> = net.named_variables().into_iter().collect();
        m.extend(read(&ck.join(format!("da{k}.safetensors"))));
        after.push(m);
        let series = |metric: &str| res.history.series("train", &labels[k], metric);
        let per: Vec<[f64; 4]> = (0..STEPS)
            .map(|s| {
                let at = |metric: &str| {
                    series(metric)
                        .iter()
                        .find(|(step, _)| *step == s + 1)
                        .unwrap_or_else(|| panic!("{arch}: no {metric} at step {}", s + 1))
                        .1
                };
                [at("clean_loss"), at("adv_loss"), at("da_loss"), at("total_loss")]
            })
            .collect();
        losses.push(per);
    }
    (initial, after, losses)
}

#[test]
fn satm_step_matches_pytorch_reference() {
    let py = satm::bench::venv_python();
    assert!(py.exists(), "the project venv's python ({}) is needed; set SATM_VENV", py.display());
    let script = satm::bench::ref_script();
    assert!(script.is_file(), "ref_satm.py not found at {} (set SATM_REF_BENCH or SATM_DATA)", script.display());
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&inp).unwrap();
    std::fs::create_dir_all(&out).unwrap();

    tch::manual_seed(7);
    let images = Tensor::randint(256, [BATCH, 3, SIZE, SIZE], (Kind::Uint8, Device::Cpu));
    let labels_t = Tensor::randint(CLASSES, [BATCH], (Kind::Int64, Device::Cpu));
    let labels: Vec<i64> = Vec::try_from(&labels_t).unwrap();
    let classes: Vec<String> = (0..CLASSES).map(|c| c.to_string()).collect();
    let data = Dataset::new("same-math", images.copy(), labels, classes, vec![], vec![], vec![]).unwrap();
    Tensor::write_safetensors(&[("images", &images), ("labels", &labels_t)], inp.join("batch.safetensors")).unwrap();

    // 1 thread: the networks one after another; 2 threads: side by side (one worker per network).
    let mut satm_runs = HashMap::new();
    for threads in [1, 2] {
        for arch in ARCHS {
            satm_runs.insert((arch, threads), satm_side(arch, threads, &data, &inp));
        }
    }
    let c = cfg();
    let job = serde_json::json!({
        "archs": ARCHS, "width": WIDTH, "classes": CLASSES, "k": K, "steps": STEPS, "lr": LR, "momentum": c.momentum,
        "eps": c.eps, "alpha": c.alpha(), "r_adv": c.r_adv, "r_da": c.r_da, "lambda": 1.0,
    });
    std::fs::write(inp.join("job.json"), job.to_string()).unwrap();
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/ref_step.py");
    let o = std::process::Command::new(&py).arg(&helper).arg(&script).arg(&inp).arg(&out).output().unwrap();
    assert!(o.status.success(), "ref_step.py failed: {}", String::from_utf8_lossy(&o.stderr));
    let py_losses: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("losses.json")).unwrap()).unwrap();

    for ((arch, threads), (initial, after, losses)) in &satm_runs {
        let (arch, threads) = (*arch, *threads);
        for k in 0..K {
            // Losses of every step: the same numbers (they are means, so satm's shuffled batch order does not matter).
            for s in 0..STEPS {
                for (i, name) in ["clean_loss", "adv_loss", "da_loss", "total_loss"].iter().enumerate() {
                    let theirs = py_losses[arch][s][k][name].as_f64().unwrap();
                    let ours = losses[k][s][i];
                    let r = (ours - theirs).abs() / theirs.abs().max(1e-12);
                    assert!(
                        r < 1e-4,
                        "{arch} net {k} ({threads} threads) step {}: {name} satm {ours} vs PyTorch {theirs} (rel {r:.2e})",
                        s + 1
                    );
                }
            }
            // Weights after STEPS updates: compared as updates (w − w0), which is what a wrong gradient changes.
            let theirs = read(&out.join(format!("{arch}_net{k}.safetensors")));
            assert_eq!(
                theirs.len(),
                after[k].len(),
                "{arch}: PyTorch has {} tensors, satm {}",
                theirs.len(),
                after[k].len()
            );
            let mut checked = 0;
            for (name, w) in &after[k] {
                let p = theirs.get(name).unwrap_or_else(|| panic!("{arch}: PyTorch lacks {name}"));
                let r = rel(w, p);
                assert!(r < 1e-4, "{arch} net {k} ({threads} threads): {name} differs from PyTorch's (rel {r:.2e})");
                // The updates themselves (a wrong gradient changes them, while the weights barely move in 2 steps).
                // Tensors whose gradient is 0 in exact arithmetic (a conv bias right before BatchNorm) move by
                // rounding noise only (< 1e-6 of their norm) and are skipped; cancellation between the clean and
                // adversarial halves amplifies rounding in the DA head's updates to about 1e-4.
                let w0 = &initial[k][name];
                let (d_ours, d_theirs) = (w - w0, p - w0);
                if d_theirs.norm().double_value(&[]) > 1e-6 * p.norm().double_value(&[]) {
                    checked += 1;
                    let r = rel(&d_ours, &d_theirs);
                    assert!(
                        r < 1e-3,
                        "{arch} net {k} ({threads} threads): the update of {name} differs from PyTorch's (rel {r:.2e})"
                    );
                } else {
                    assert!(!name.ends_with("weight"), "{arch} net {k}: {name} did not move");
                }
            }
            // Not vacuous: most tensors (all weights, BN statistics, DA head) moved and were compared.
            assert!(
                4 * checked >= 3 * after[k].len(),
                "{arch} net {k}: only {checked} of {} tensors moved",
                after[k].len()
            );
        }
    }
}
