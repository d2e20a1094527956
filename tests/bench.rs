//! satm's SATM step against the PyTorch reference (shared/bench/ref_satm.py): identical weights, batches and R+Step-LL
//! random steps in, the same losses and updated weights out — with λ ≠ 1 and α > 0, so that the GRL's λ and the
//! random step are checked too; controls with λ = 1 and with PyTorch's own random draw must differ.
use satm::core::data::{BatchOpts, Dataset};
use satm::core::models::{DaHead, ModelSpec, Net};
use satm::core::train::checkpoint::{self, CheckpointState};
use satm::core::train::optim::Optimizer;
use satm::core::train::satm::{mix, unique_labels};
use satm::core::train::{self, History, LambdaSchedule, TrainConfig};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor, nn};

mod common;
use common::device::{repo_file, test_device};

const K: usize = 2;
const STEPS: usize = 2;
const CLASSES: i64 = 8;
const BATCH: i64 = 8;
const SIZE: i64 = 16;
const WIDTH: f64 = 0.25;
const LR: f64 = 0.05;
const ARCHS: [&str; 3] = ["vgg_s", "vggbn_s", "resnet_s"];
/// The GRL's λ: not 1, so a λ that does not reach the gradient (or reaches it twice) shows in the updates.
const LAMBDA: f64 = 0.3;
/// Relative tolerance of losses, weights and weight updates.
const TOL: f64 = 1e-4;

fn cfg() -> TrainConfig {
    TrainConfig {
        steps: STEPS,
        batch_size: BATCH as usize,
        lr: LR,
        momentum: 0.9,
        weight_decay: 0.0,
        r_adv: 1.0,
        r_da: 0.5,
        // R+Step-LL's random step of α = ε/2 is taken (both sides get satm's draw, see `satm_draws`).
        alpha: None,
        lambda: LambdaSchedule::Constant(LAMBDA),
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

/// The batch and the R+Step-LL noise (one N(0, I) draw per network, in network order) that satm's trainer uses at
/// `step`. They follow from the trainer's documented reseeding ("every step reseeds from (seed, step)", which is what
/// makes resume exact): the batch order of an epoch from mix(seed ^ mix(epoch)), and the noise drawn first after
/// manual_seed(mix(seed ^ mix(0x5A7A + step))). Should that derivation change in satm, the very first step's
/// adversarial loss stops matching PyTorch's and this test fails (it cannot pass by accident).
fn satm_draws(data: &Dataset, cfg: &TrainConfig, step: usize) -> (Tensor, Tensor, Vec<Tensor>) {
    let per_epoch = data.len() / cfg.batch_size;
    let opts = BatchOpts {
        batch_size: cfg.batch_size,
        shuffle: true,
        seed: mix(cfg.seed ^ mix((step / per_epoch) as u64)),
        augment: false,
        drop_last: true,
        device: Device::Cpu,
    };
    let b = data.batches(&opts).unwrap().nth(step % per_epoch).unwrap().unwrap();
    // The trainer's draw at this step, made here with PyTorch's own generator after the same seed.
    tch::manual_seed(mix(cfg.seed ^ mix(0x5A7A + step as u64)) as i64 & i64::MAX);
    let noise = (0..K).map(|_| Tensor::randn(b.x.size(), (Kind::Float, Device::Cpu))).collect();
    (b.x, b.y, noise)
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
    satm::core::device::seed_everything(1).unwrap();
    let spec = ModelSpec { arch: arch.into(), classes: CLASSES, width: WIDTH, size: SIZE, ..ModelSpec::default() };
    let dev = test_device();
    let mut nets: Vec<Net> = (0..K).map(|_| Net::new(&spec, dev).unwrap()).collect();
    let das: Vec<(nn::VarStore, DaHead)> = nets
        .iter()
        .map(|n| {
            let vs = nn::VarStore::new(dev);
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
        events: vec![],
    };
    {
        let refs: Vec<&mut Net> = nets.iter_mut().collect();
        let parts: Vec<(Option<&nn::VarStore>, &Optimizer)> =
            das.iter().zip(&opts).map(|((vs, _), o)| (Some(vs), o)).collect();
        checkpoint::save(&run_dir, &refs, &parts, &state).unwrap();
    }
    let mut initial = vec![];
    for (k, net) in nets.iter().enumerate() {
        // state_dict: every tensor PyTorch's state_dict has, BN counters included.
        let mut named: Vec<(String, Tensor)> = net.state_dict();
        named.extend(das[k].0.variables());
        // A copy on the CPU: training updates the networks' tensors in place.
        let named: Vec<(String, Tensor)> = named.into_iter().map(|(n, t)| (n, t.to(Device::Cpu).copy())).collect();
        Tensor::write_safetensors(&named, dir.join(format!("{arch}_net{k}.safetensors"))).unwrap();
        initial.push(named.into_iter().collect::<HashMap<_, _>>());
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
        let mut m: HashMap<String, Tensor> =
            net.state_dict().into_iter().map(|(n, t)| (n, t.to(Device::Cpu))).collect();
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

/// Runs tests/py/ref_step.py (ref_satm.py's step) on IN with `job`, writing into a fresh OUT; returns OUT.
fn pytorch(py: &Path, inp: &Path, root: &Path, name: &str, job: &serde_json::Value) -> std::path::PathBuf {
    let out = root.join(name);
    std::fs::create_dir_all(&out).unwrap();
    let job_path = root.join(format!("{name}.json"));
    std::fs::write(&job_path, job.to_string()).unwrap();
    let helper = repo_file("tests/py/ref_step.py");
    let o = std::process::Command::new(py)
        .arg(&helper)
        .arg(satm::cli::bench::ref_script())
        .arg(inp)
        .arg(&out)
        .arg(&job_path)
        .output()
        .unwrap();
    assert!(o.status.success(), "ref_step.py ({name}) failed: {}", String::from_utf8_lossy(&o.stderr));
    out
}

/// The largest relative difference between satm's weight updates and those in `theirs` (w − w0 against p − w0) over
/// the tensors named in `moved`.
fn worst_update(
    initial: &HashMap<String, Tensor>,
    after: &HashMap<String, Tensor>,
    theirs: &Path,
    moved: &[String],
) -> f64 {
    let theirs = read(theirs);
    moved
        .iter()
        .map(|name| {
            let (w0, w, p) = (&initial[name], &after[name], &theirs[name]);
            rel(&(w - w0), &(p - w0))
        })
        .fold(0.0, f64::max)
}

#[test]
fn satm_step_matches_pytorch_reference() {
    let py = satm::cli::bench::venv_python();
    assert!(py.exists(), "the project venv's python ({}) is needed; set SATM_VENV", py.display());
    let script = satm::cli::bench::ref_script();
    assert!(script.is_file(), "ref_satm.py not found at {} (set SATM_REF_BENCH or SATM_DATA)", script.display());
    let dir = tempfile::tempdir().unwrap();
    let inp = dir.path().join("in");
    std::fs::create_dir_all(&inp).unwrap();

    satm::core::device::seed_everything(7).unwrap();
    let images = Tensor::randint(256, [BATCH, 3, SIZE, SIZE], (Kind::Uint8, Device::Cpu));
    let labels_t = Tensor::randint(CLASSES, [BATCH], (Kind::Int64, Device::Cpu));
    let labels: Vec<i64> = Vec::try_from(&labels_t).unwrap();
    let classes: Vec<String> = (0..CLASSES).map(|c| c.to_string()).collect();
    let data = Dataset::new("same-math", images.copy(), labels, classes, vec![], vec![], vec![]).unwrap();
    let c = cfg();
    assert!(c.alpha() > 0.0 && LAMBDA != 1.0, "the random step and lambda are part of the check");
    // satm's batches (its shuffled order) and its R+Step-LL draws of each step, for PyTorch.
    let mut steps: Vec<(String, Tensor)> = vec![];
    for s in 0..STEPS {
        let (x, y, noise) = satm_draws(&data, &c, s);
        steps.push((format!("x.{s}"), x));
        steps.push((format!("y.{s}"), y));
        for (k, n) in noise.into_iter().enumerate() {
            steps.push((format!("noise.{s}.{k}"), n));
        }
    }
    Tensor::write_safetensors(&steps, inp.join("steps.safetensors")).unwrap();

    // 1 thread: the networks one after another; 2 threads: side by side (one worker per network).
    if !satm::core::train::parallel::concurrent_kernels_exact() {
        eprintln!(
            "note: networks do not run side by side on this CPU (oneDNN limited to AVX2: see \
             parallel::concurrent_kernels_exact); the 2-thread runs check the sequential loop with 2 threads"
        );
    }
    let mut satm_runs = HashMap::new();
    for threads in [1, 2] {
        for arch in ARCHS {
            satm_runs.insert((arch, threads), satm_side(arch, threads, &data, &inp));
        }
    }
    let job = serde_json::json!({
        "archs": ARCHS, "width": WIDTH, "classes": CLASSES, "k": K, "steps": STEPS, "lr": LR, "momentum": c.momentum,
        "eps": c.eps, "alpha": c.alpha(), "r_adv": c.r_adv, "r_da": c.r_da, "lambda": LAMBDA, "noise": true,
        "device": satm::core::device::device_name(test_device()),
    });
    let out = pytorch(&py, &inp, dir.path(), "same", &job);
    // Controls: PyTorch with ref_satm's hard-coded λ = 1, and with its own random draw instead of satm's. Each must
    // miss satm's updates by more than 10× the tolerance, or the check above could not see λ or the noise (λ = 1
    // instead of 0.3 moves the updates by ~1e-2 relative: a 1e-3 tolerance would barely see it).
    let mut lambda_one = job.clone();
    lambda_one["lambda"] = 1.0.into();
    let out_lambda_one = pytorch(&py, &inp, dir.path(), "lambda_one", &lambda_one);
    let mut own_noise = job.clone();
    own_noise["noise"] = false.into();
    let out_own_noise = pytorch(&py, &inp, dir.path(), "own_noise", &own_noise);
    let py_losses: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("losses.json")).unwrap()).unwrap();

    let mut compared = (0, 0, 0);
    let mut least = (f64::INFINITY, f64::INFINITY);
    let mut worst: f64 = 0.0;
    for ((arch, threads), (initial, after, losses)) in &satm_runs {
        let (arch, threads) = (*arch, *threads);
        for k in 0..K {
            // Losses of every step: the same numbers.
            for s in 0..STEPS {
                for (i, name) in ["clean_loss", "adv_loss", "da_loss", "total_loss"].iter().enumerate() {
                    let theirs = py_losses[arch][s][k][name].as_f64().unwrap();
                    let ours = losses[k][s][i];
                    let r = (ours - theirs).abs() / theirs.abs().max(1e-12);
                    assert!(
                        r < TOL,
                        "{arch} net {k} ({threads} threads) step {}: {name} satm {ours} vs PyTorch {theirs} (rel {r:.2e})",
                        s + 1
                    );
                    compared.0 += 1;
                }
            }
            // Weights after STEPS updates: compared as updates (w − w0), which is what a wrong gradient changes.
            let file = format!("{arch}_net{k}.safetensors");
            let theirs = read(&out.join(&file));
            let names = |m: &HashMap<String, Tensor>| {
                let mut v: Vec<String> = m.keys().cloned().collect();
                v.sort();
                v
            };
            assert_eq!(names(&theirs), names(&after[k]), "{arch}: PyTorch's and satm's states hold other tensors");
            let mut checked = 0;
            let mut moved = vec![];
            for (name, w) in &after[k] {
                let p = &theirs[name];
                let w0 = &initial[k][name];
                if !w.is_floating_point() {
                    // BN's num_batches_tracked: one per training-mode forward, exactly.
                    assert!(
                        w.equal(p),
                        "{arch} net {k} ({threads} threads): {name} is {} in satm, {} in PyTorch",
                        w.int64_value(&[]),
                        p.int64_value(&[])
                    );
                    if !w.equal(w0) {
                        checked += 1;
                    }
                    continue;
                }
                let r = rel(w, p);
                assert!(r < TOL, "{arch} net {k} ({threads} threads): {name} differs from PyTorch's (rel {r:.2e})");
                // The updates themselves (a wrong gradient changes them, while the weights barely move in 2 steps).
                // Tensors whose gradient is 0 in exact arithmetic (a conv bias right before BatchNorm) move by
                // rounding noise only (< 1e-6 of their norm) and are skipped.
                let (d_ours, d_theirs) = (w - w0, p - w0);
                if d_theirs.norm().double_value(&[]) > 1e-6 * p.norm().double_value(&[]) {
                    checked += 1;
                    moved.push(name.clone());
                    let r = rel(&d_ours, &d_theirs);
                    worst = worst.max(r);
                    assert!(
                        r < TOL,
                        "{arch} net {k} ({threads} threads): the update of {name} differs from PyTorch's (rel {r:.2e})"
                    );
                } else {
                    assert!(!name.ends_with("weight"), "{arch} net {k}: {name} did not move");
                }
            }
            // Not vacuous: most tensors (all weights, BN statistics and counters, DA head) moved and were compared.
            assert!(
                4 * checked >= 3 * after[k].len(),
                "{arch} net {k}: only {checked} of {} tensors moved",
                after[k].len()
            );
            compared.1 += checked;
            // The controls miss by far more than the tolerance.
            let off_lambda = worst_update(&initial[k], &after[k], &out_lambda_one.join(&file), &moved);
            let off_noise = worst_update(&initial[k], &after[k], &out_own_noise.join(&file), &moved);
            assert!(
                off_lambda > 10.0 * TOL && off_noise > 10.0 * TOL,
                "{arch} net {k}: PyTorch with lambda = 1 is off by only {off_lambda:.2e}, with its own noise by \
                 {off_noise:.2e}: the check cannot see them"
            );
            compared.2 += 1;
            least = (least.0.min(off_lambda), least.1.min(off_noise));
        }
    }
    // Counts asserted: 3 archs x 2 thread settings x K networks, 4 losses x STEPS steps each.
    assert_eq!(compared.0, ARCHS.len() * 2 * K * 4 * STEPS);
    assert_eq!(compared.2, ARCHS.len() * 2 * K);
    eprintln!(
        "bench cross-check: {} losses, {} updated tensors (1e-4 relative; worst {:.1e}), {} networks with both \
         controls off (least: lambda = 1 by {:.1e}, PyTorch's own noise by {:.1e})",
        compared.0, compared.1, worst, compared.2, least.0, least.1
    );
}

/// `satm bench` times both sides on one device. ref_satm.py takes "cuda" whenever PyTorch sees a GPU, so the bench
/// shows it satm's device only (here the CPU: no GPU) and refuses a reference that reports another device. Two
/// stand-ins for ref_satm.py: one that decides as ref_satm.py does, from the GPUs it is shown (with no
/// CUDA_VISIBLE_DEVICES it "sees" one, as on a GPU machine), and one that always says cuda.
#[test]
fn bench_times_both_sides_on_the_same_device() {
    let Some(_) = common::venv_python_or_skip("the project venv's python (tools/bootstrap.sh)") else { return };
    let dir = tempfile::tempdir().unwrap();
    let fake = |name: &str, device: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!(
                "import json, os\nprint(json.dumps({{'impl': 'stand-in', 'device': {device}, 'img_per_s': 100.0, \
                 'max_rss_mb': 1.0}}))\n"
            ),
        )
        .unwrap();
        p
    };
    let as_ref_satm = fake("as_ref_satm.py", "'cpu' if os.environ.get('CUDA_VISIBLE_DEVICES', '0') == '' else 'cuda'");
    let always_cuda = fake("always_cuda.py", "'cuda'");
    let bench = |script: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_satm"))
            .args(["bench", "--device", "cpu", "--arch", "vgg_s", "--width", "0.25", "--modes", "fp32"])
            .args(["--steps", "1", "--rounds", "2", "--size", "16", "--batch", "8", "-q"])
            .env("SATM_REF_BENCH", script)
            .env_remove("CUDA_VISIBLE_DEVICES")
            .output()
            .unwrap()
    };
    let ok = bench(&as_ref_satm);
    let (stdout, stderr) = (String::from_utf8_lossy(&ok.stdout), String::from_utf8_lossy(&ok.stderr));
    assert!(ok.status.success(), "the reference was shown a GPU, or the bench failed: {stderr}");
    assert!(stdout.contains("SATM step on cpu") && stdout.contains("ratio per round"), "{stdout}");
    let bad = bench(&always_cuda);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "a reference on cuda was compared with satm on the CPU");
    assert!(stderr.contains("ref_satm.py ran on cuda, satm on cpu"), "{stderr}");
}
