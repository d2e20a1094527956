//! Attacks on real libtorch with a tiny conv net defined here: bounds, R+Step-LL's exact random step, gradient
//! hygiene, determinism, a PyTorch cross-check, and attack strength on a quickly trained model.
use anyhow::Result;
use satm::core::attacks::{self, AttackKind, AttackSpec, Labels, Target, craft, craft_with_noise};
use satm::core::models::Classifier;
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Mutex;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Tests share tch's global generator: they run one at a time so that seeds mean something.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The tensors here are tiny: one thread avoids libtorch's thread-pool overhead on a shared machine.
    tch::set_num_threads(1);
    guard
}

/// conv(3→8, 3×3) → ReLU → conv(8→16, 3×3, stride 2) → ReLU → avgpool 2 → linear; for 16×16 inputs.
/// tests/py/attacks_ref.py defines the same net with the same parameter names.
struct Tiny {
    vs: nn::VarStore,
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc: nn::Linear,
    classes: i64,
}

impl Tiny {
    fn new(classes: i64) -> Tiny {
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root();
        let conv1 = nn::conv2d(&p / "conv1", 3, 8, 3, nn::ConvConfig { padding: 1, ..Default::default() });
        let conv2 = nn::conv2d(&p / "conv2", 8, 16, 3, nn::ConvConfig { padding: 1, stride: 2, ..Default::default() });
        let fc = nn::linear(&p / "fc", 16 * 4 * 4, classes, Default::default());
        Tiny { vs, conv1, conv2, fc, classes }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.conv1.forward(x).relu();
        let h = self.conv2.forward(&h).relu().avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>);
        self.fc.forward(&h.flatten(1, -1))
    }
}

impl Classifier for Tiny {
    fn logits_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(self.forward(x))
    }
    fn num_classes(&self) -> i64 {
        self.classes
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn label(&self) -> String {
        "tiny".into()
    }
}

/// Records whether the attack ever handed it an input that requires grad, or ran it with grad mode on.
struct Recorder<'a> {
    inner: &'a Tiny,
    asked_for_grad: Cell<bool>,
    calls: Cell<usize>,
}

impl Classifier for Recorder<'_> {
    fn logits_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.calls.set(self.calls.get() + 1);
        let out = self.inner.logits_t(x, train)?;
        if x.requires_grad() || out.requires_grad() {
            self.asked_for_grad.set(true);
        }
        Ok(out)
    }
    fn num_classes(&self) -> i64 {
        self.inner.classes
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn label(&self) -> String {
        "recorder".into()
    }
}

fn linf(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn accuracy(m: &dyn Classifier, x: &Tensor, y: &Tensor) -> f64 {
    let _g = tch::no_grad_guard();
    let pred = m.logits_t(x, false).unwrap().argmax(1, false);
    pred.eq_tensor(y).to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
}

/// A fast setting of every attack (few steps / queries) for bound checks.
fn quick(kind: AttackKind, eps: f64) -> AttackSpec {
    let mut s = AttackSpec::new(kind).with_budget(eps, 5);
    if matches!(kind, AttackKind::ApgdCe | AttackKind::ApgdDlr) {
        s.steps = 10;
    }
    s.queries = 40;
    s.n_target_classes = 3;
    s
}

/// Random images with some pixels exactly at 0 and 1, so that clipping is exercised.
fn images(b: i64) -> Tensor {
    (Tensor::rand([b, 3, 16, 16], (Kind::Float, Device::Cpu)) * 1.2 - 0.1).clamp(0.0, 1.0)
}

#[test]
fn every_attack_stays_in_the_eps_ball_and_the_unit_cube() {
    let _s = serial();
    satm::core::device::seed_everything(1).unwrap();
    let (a, b) = (Tiny::new(5), Tiny::new(5));
    let x = images(6);
    let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 0]);
    for eps in [16.0 / 256.0, 4.0 / 256.0] {
        for kind in AttackKind::ALL {
            for sources in [vec![&a as &dyn Classifier], vec![&a as &dyn Classifier, &b]] {
                let spec = quick(kind, eps);
                let adv = craft(&spec, &sources, &x, &y).unwrap();
                assert_eq!(adv.size(), x.size(), "{kind}");
                assert_eq!(adv.kind(), Kind::Float, "{kind}");
                assert!(!adv.requires_grad(), "{kind}: result must be detached");
                let d = linf(&adv, &x);
                assert!(d <= eps + 1e-6, "{kind}: ‖x_adv − x‖∞ = {d} > ε = {eps}");
                assert!(adv.min().double_value(&[]) >= 0.0 && adv.max().double_value(&[]) <= 1.0, "{kind}");
                // Every attack except Square (whose proposals may all be rejected on a tiny batch) moves something.
                if kind != AttackKind::Square {
                    assert!(d > eps / 4.0, "{kind}: the attack did not perturb the input (‖δ‖∞ = {d})");
                }
            }
        }
    }
}

#[test]
fn r_step_ll_random_step_is_exactly_alpha_per_pixel() {
    let _s = serial();
    satm::core::device::seed_everything(2).unwrap();
    let net = Tiny::new(4);
    let alpha = 8.0 / 256.0;
    // Inputs away from the borders, so nothing is clipped.
    let x = Tensor::rand([4, 3, 16, 16], (Kind::Float, Device::Cpu)) * 0.8 + 0.1;
    let y = Tensor::from_slice(&[0i64, 1, 2, 3]);
    for target in [Target::True, Target::LeastLikely] {
        // With ε = α the gradient step is 0·sign(∇) and only the random step remains.
        let mut spec = AttackSpec::paper_r_step_ll();
        spec.target = target;
        spec.eps = alpha;
        spec.alpha = alpha;
        let d = craft(&spec, &[&net], &x, &y).unwrap() - &x;
        let dev = (d.abs() - alpha).abs().max().double_value(&[]);
        assert!(dev < 1e-6, "{target:?}: random step deviates from α by {dev}");
        // Its sign follows the noise; a noise value of exactly 0 still moves the pixel by +α.
        let noise = Tensor::randn([4, 3, 16, 16], (Kind::Float, Device::Cpu));
        let _ = noise.narrow(3, 0, 1).fill_(0.0);
        let d = craft_with_noise(&spec, &[&net], &x, &y, &noise).unwrap() - &x;
        let want = noise.sign() + noise.eq(0.0).to_kind(Kind::Float);
        assert!(linf(&d, &(want * alpha)) < 1e-6, "{target:?}: random step is not α·sign(noise)");
        // With ε = 2α each pixel moves by α·(s + sign ∇) ∈ {0, ±α (∇ = 0), ±2α}.
        spec.eps = 2.0 * alpha;
        let d = craft(&spec, &[&net], &x, &y).unwrap() - &x;
        let k = (&d / alpha).round();
        let off = ((&d / alpha) - &k).abs().max().double_value(&[]);
        assert!(off < 1e-4, "{target:?}: perturbation is not a multiple of α");
        let zero = k.eq(0.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        assert!(zero > 0.2 && zero < 0.8, "{target:?}: random and gradient signs should agree about half the time");
    }
}

#[test]
fn square_never_asks_for_a_gradient() {
    let _s = serial();
    satm::core::device::seed_everything(3).unwrap();
    let net = Tiny::new(5);
    let x = images(4);
    let y = Tensor::from_slice(&[0i64, 1, 2, 3]);
    let rec = Recorder { inner: &net, asked_for_grad: Cell::new(false), calls: Cell::new(0) };
    let mut spec = AttackSpec::new(AttackKind::Square);
    spec.queries = 30;
    spec.labels = Labels::Predicted;
    let _ = craft(&spec, &[&rec], &x, &y).unwrap();
    assert!(rec.calls.get() > 2, "square should query the model repeatedly");
    assert!(!rec.asked_for_grad.get(), "square requested a gradient");
    // Even when the caller has grad mode on and the input requires grad.
    let xg = x.set_requires_grad(true);
    let _ = craft(&spec, &[&rec], &xg, &y).unwrap();
    assert!(!rec.asked_for_grad.get(), "square requested a gradient");
    // The recorder does notice a gradient attack, so the check above can fail.
    let _ = craft(&AttackSpec::new(AttackKind::Fgsm), &[&rec], &x, &y).unwrap();
    assert!(rec.asked_for_grad.get());
}

#[test]
fn attacks_leave_parameters_and_their_gradients_untouched() {
    let _s = serial();
    satm::core::device::seed_everything(4).unwrap();
    let with_grads = Tiny::new(5);
    let without_grads = Tiny::new(5);
    let x = images(4);
    let y = Tensor::from_slice(&[0i64, 1, 2, 3]);
    // Fill .grad as a training step would leave it.
    with_grads.forward(&x).cross_entropy_for_logits(&y).backward();
    let snapshot = |m: &Tiny| -> Vec<(String, Tensor, Option<Tensor>)> {
        let mut v: Vec<_> =
            m.vs.variables()
                .into_iter()
                .map(|(n, t)| {
                    let g = t.grad();
                    (n, t.detach().copy(), g.defined().then(|| g.copy()))
                })
                .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let before = snapshot(&with_grads);
    assert!(before.iter().all(|(_, _, g)| g.is_some()));
    for kind in [AttackKind::Fgsm, AttackKind::RStepLl, AttackKind::Pgd, AttackKind::MiFgsm, AttackKind::ApgdCe] {
        let spec = quick(kind, 16.0 / 256.0);
        let _ = craft(&spec, &[&with_grads, &without_grads], &x, &y).unwrap();
        for ((n, p, g), (_, p2, g2)) in before.iter().zip(snapshot(&with_grads)) {
            assert!(p.equal(&p2), "{kind}: parameter {n} changed");
            assert!(g.as_ref().unwrap().equal(g2.as_ref().unwrap()), "{kind}: gradient of {n} changed");
        }
        // Weight gradients are not even computed.
        for (n, _, g) in snapshot(&without_grads) {
            assert!(g.is_none(), "{kind}: {n} received a gradient");
        }
    }
}

#[test]
fn seeded_attacks_are_deterministic() {
    let _s = serial();
    satm::core::device::seed_everything(5).unwrap();
    let net = Tiny::new(5);
    let x = images(4);
    // Correctly classified inputs, so that APGD and Square have work to do.
    let y = net.forward(&x).argmax(1, false);
    for kind in [AttackKind::Pgd, AttackKind::RStepLl, AttackKind::ApgdCe, AttackKind::Square] {
        let mut spec = quick(kind, 16.0 / 256.0);
        spec.seed = Some(7);
        let a = craft(&spec, &[&net], &x, &y).unwrap();
        let b = craft(&spec, &[&net], &x, &y).unwrap();
        assert!(a.equal(&b), "{kind}: same seed, different result");
        spec.seed = Some(8);
        let c = craft(&spec, &[&net], &x, &y).unwrap();
        assert!(!a.equal(&c), "{kind}: the seed has no effect");
    }
}

#[test]
fn an_ensemble_of_one_model_twice_is_that_model() {
    let _s = serial();
    satm::core::device::seed_everything(6).unwrap();
    let (a, b) = (Tiny::new(5), Tiny::new(5));
    let x = images(4);
    let y = Tensor::from_slice(&[0i64, 1, 2, 3]);
    let spec = AttackSpec::new(AttackKind::Fgsm);
    let single = craft(&spec, &[&a], &x, &y).unwrap();
    let twice = craft(&spec, &[&a, &a], &x, &y).unwrap();
    assert!(linf(&single, &twice) < 1e-6);
    let mixed = craft(&spec, &[&a, &b], &x, &y).unwrap();
    assert!(linf(&single, &mixed) > 1e-3, "a second source must change the ensemble's gradient");
}

#[test]
fn early_stop_leaves_already_fooled_examples_alone() {
    let _s = serial();
    satm::core::device::seed_everything(7).unwrap();
    let net = Tiny::new(5);
    let x = images(6);
    let pred = net.forward(&x).argmax(1, false);
    // Examples 0..3 are labelled with a wrong class (already "fooled"), 3..6 with the prediction.
    let wrong = (&pred + 1).remainder(5);
    let y = Tensor::cat(&[wrong.narrow(0, 0, 3), pred.narrow(0, 3, 3)], 0);
    let mut spec = AttackSpec::new(AttackKind::Bim);
    spec.early_stop = true;
    let adv = craft(&spec, &[&net], &x, &y).unwrap();
    assert!(linf(&adv.narrow(0, 0, 3), &x.narrow(0, 0, 3)) == 0.0, "fooled examples moved");
    assert!(linf(&adv.narrow(0, 3, 3), &x.narrow(0, 3, 3)) > 0.0);
    spec.early_stop = false;
    let adv = craft(&spec, &[&net], &x, &y).unwrap();
    assert!(linf(&adv.narrow(0, 0, 3), &x.narrow(0, 0, 3)) > 0.0, "without early stop every example moves");
}

#[test]
fn bf16_autocast_keeps_the_perturbation_fp32() {
    let _s = serial();
    satm::core::device::seed_everything(8).unwrap();
    let net = Tiny::new(5);
    let x = images(4);
    let y = Tensor::from_slice(&[0i64, 1, 2, 3]);
    let eps = 16.0 / 256.0;
    let adv = {
        let _ac = satm::core::amp::Autocast::new(Device::Cpu, true).unwrap();
        craft(&AttackSpec::new(AttackKind::Fgsm), &[&net], &x, &y).unwrap()
    };
    assert_eq!(adv.kind(), Kind::Float);
    // What holds on every CPU: each unclipped pixel either moved by exactly ±ε or (its input gradient was exactly 0)
    // not at all; a bf16 perturbation would be off by ~1e-3. What differs by CPU: how many gradients are exactly 0.
    // With AMX / AVX-512 BF16 kernels all 2239 unclipped pixels moved; an AVX2-only CPU (AMD EPYC) runs bf16 in
    // emulating kernels where an input gradient can round to exactly 0, and sign(0) = 0 leaves that pixel where it
    // was (reproduced on this Xeon with ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2: 2238 of 2239 moved).
    let d = (&adv - &x).abs();
    let inside = x.ge(eps).logical_and(&x.le(1.0 - eps));
    let moved = d.gt(0.0).logical_and(&inside);
    let n_moved = moved.sum(Kind::Int64).int64_value(&[]);
    let n_inside = inside.sum(Kind::Int64).int64_value(&[]);
    assert!(n_moved > 0, "no unclipped pixel moved (of {n_inside})");
    let off = (&d - eps).abs().masked_select(&moved).max().double_value(&[]);
    assert!(off < 1e-6, "perturbation is not fp32: a moved pixel is off ±eps by {off}");
    println!("bf16 FGSM: {n_moved} of {n_inside} unclipped pixels moved by exactly eps (the rest had a zero gradient)");
}

#[test]
fn invalid_inputs_are_errors_not_panics() {
    let _s = serial();
    let net = Tiny::new(5);
    let x = images(4);
    let y = Tensor::from_slice(&[0i64, 1, 2, 3]);
    let spec = AttackSpec::new(AttackKind::Fgsm);
    let err = |r: Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err(craft(&spec, &[&net], &x, &y.narrow(0, 0, 3))).contains("y has shape"));
    assert!(err(craft(&spec, &[&net], &(&x * 2.0), &y)).contains("[0, 1]"));
    assert!(err(craft(&spec, &[&net], &x, &Tensor::from_slice(&[0i64, 1, 2, 9]))).contains("labels must be in"));
    assert!(err(craft(&spec, &[&net], &x.to_kind(Kind::Uint8), &y)).contains("float"));
    assert!(err(craft(&spec, &[], &x, &y)).contains("at least one source"));
    assert!(err(craft(&spec, &[&net], &x.flatten(1, -1), &y)).contains("[B, C, H, W]"));
    let mut bad = AttackSpec::paper_r_step_ll();
    bad.alpha = 0.1;
    assert!(err(craft(&bad, &[&net], &x, &y)).contains("alpha"));
    let mut bad = AttackSpec::new(AttackKind::Pgd);
    bad.steps = 0;
    assert!(err(craft(&bad, &[&net], &x, &y)).contains("steps"));
    let three = Tiny::new(3);
    let y3 = Tensor::from_slice(&[0i64, 1, 2, 0]);
    assert!(err(craft(&AttackSpec::new(AttackKind::ApgdDlr), &[&three], &x, &y3)).contains("at least 4 classes"));
    assert!(err(craft_with_noise(&spec, &[&net], &x, &y, &x)).contains("no random noise"));
}

fn python() -> Option<PathBuf> {
    let p = satm::cli::bench::venv_python();
    p.exists().then_some(p)
}

#[test]
fn fgsm_r_step_ll_and_pgd_match_pytorch() {
    let _s = serial();
    let py = python().expect("the project venv's python (SATM_VENV) is needed for the PyTorch cross-check");
    satm::core::device::seed_everything(9).unwrap();
    let net = Tiny::new(5);
    let x = images(6);
    let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 0]);
    let noise = Tensor::randn([6, 3, 16, 16], (Kind::Float, Device::Cpu));
    let (eps, alpha, steps) = (16.0 / 256.0, 8.0 / 256.0, 5usize);
    let pgd_step = 2.5 * eps / steps as f64;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.safetensors");
    let mut named: Vec<(String, Tensor)> = net.vs.variables().into_iter().collect();
    named.push(("x".into(), x.shallow_clone()));
    named.push(("y".into(), y.shallow_clone()));
    named.push(("noise".into(), noise.shallow_clone()));
    named.push(("params".into(), Tensor::from_slice(&[eps as f32, alpha as f32, steps as f32, pgd_step as f32])));
    Tensor::write_safetensors(&named, &input).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/attacks_ref.py");
    let st = std::process::Command::new(py).arg(script).arg(&input).arg(&output).status().unwrap();
    assert!(st.success(), "attacks_ref.py failed");
    let reference: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(&output).unwrap().into_iter().collect();

    // Single-step attacks: the perturbation signs agree wherever PyTorch's gradient is not (numerically) zero.
    let check = |name: &str, ours: &Tensor, grad_key: &str| {
        let theirs = &reference[name];
        let g = reference[grad_key].abs();
        let tiny = g.le(g.max().double_value(&[]) * 1e-6);
        let differ = (ours - theirs).abs().gt(1e-6);
        let bad = differ.logical_and(&tiny.logical_not()).sum(Kind::Int64).int64_value(&[]);
        let ties = differ.logical_and(&tiny).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(bad, 0, "{name}: {bad} pixels differ from PyTorch where the gradient is not zero");
        assert!(ties < 10, "{name}: {ties} near-zero-gradient pixels differ");
    };
    let fgsm = craft(&AttackSpec::new(AttackKind::Fgsm), &[&net], &x, &y).unwrap();
    check("fgsm", &fgsm, "fgsm_grad");
    let mut spec = AttackSpec::paper_r_step_ll();
    let paper = craft_with_noise(&spec, &[&net], &x, &y, &noise).unwrap();
    check("rsll_true", &paper, "rsll_true_grad");
    spec.target = Target::LeastLikely;
    let tramer = craft_with_noise(&spec, &[&net], &x, &y, &noise).unwrap();
    check("rsll_ll", &tramer, "rsll_ll_grad");
    // The two readings of R+Step-LL are different attacks.
    assert!(linf(&paper, &tramer) > eps);

    // PGD: same start, same steps: the same iterates.
    let mut pgd = AttackSpec::new(AttackKind::Pgd).with_budget(eps, steps);
    pgd.step_size = pgd_step;
    let ours = craft_with_noise(&pgd, &[&net], &x, &y, &noise).unwrap();
    let differ = (&ours - &reference["pgd"]).abs().gt(1e-5).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
    assert!(differ < 1e-3, "pgd: {:.3}% of pixels differ from PyTorch", differ * 100.0);
}

/// 5 classes of 16×16 images: a fixed random smooth template per class plus noise.
fn synthetic(n: i64, templates: &Tensor) -> (Tensor, Tensor) {
    let y = Tensor::randint(5, [n], (Kind::Int64, Device::Cpu));
    let x =
        (templates.index_select(0, &y) * 0.1 + 0.5 + Tensor::randn([n, 3, 16, 16], (Kind::Float, Device::Cpu)) * 0.1)
            .clamp(0.0, 1.0);
    (x, y)
}

#[test]
fn attacks_on_a_trained_model_rank_as_expected() {
    let _s = serial();
    satm::core::device::seed_everything(10).unwrap();
    let templates = Tensor::randn([5, 3, 4, 4], (Kind::Float, Device::Cpu))
        .upsample_bilinear2d([16, 16], false, None, None)
        .clamp(-1.0, 1.0);
    let (xtr, ytr) = synthetic(1000, &templates);
    let (xte, yte) = synthetic(100, &templates);
    let net = Tiny::new(5);
    let mut opt = nn::Adam::default().build(&net.vs, 1e-2).unwrap();
    for step in 0..100 {
        let i = (step * 100) % 1000;
        let loss = net.forward(&xtr.narrow(0, i, 100)).cross_entropy_for_logits(&ytr.narrow(0, i, 100));
        opt.backward_step(&loss);
    }
    let clean = accuracy(&net, &xte, &yte);
    let acc = |spec: &AttackSpec| {
        let t0 = std::time::Instant::now();
        let adv = craft(spec, &[&net], &xte, &yte).unwrap();
        eprintln!("{} took {:.2}s", spec.name(), t0.elapsed().as_secs_f64());
        accuracy(&net, &adv, &yte)
    };
    let fgsm = acc(&AttackSpec::new(AttackKind::Fgsm));
    let pgd16 = acc(&AttackSpec::new(AttackKind::Pgd));
    let paper = acc(&AttackSpec::paper_r_step_ll());
    let small = 8.0 / 256.0;
    let pgd8 = acc(&AttackSpec::new(AttackKind::Pgd).with_budget(small, 10));
    // APGD-CE with its standard 100 iterations (with 10, its checkpoints come every step or two and it is about as
    // strong as PGD-10 on this near-linear model, sometimes one example weaker).
    let apgd8 = acc(&AttackSpec::new(AttackKind::ApgdCe).with_budget(small, 100));
    let mut dlr = AttackSpec::new(AttackKind::ApgdDlr).with_budget(small, 10);
    dlr.n_target_classes = 3;
    let dlr8 = acc(&dlr);
    let mut sq = AttackSpec::new(AttackKind::Square);
    sq.queries = 200;
    let square = acc(&sq);
    // Labels predicted by the model: garbage labels passed in do not matter.
    let mut pred = AttackSpec::new(AttackKind::Fgsm);
    pred.labels = Labels::Predicted;
    let pred_fgsm = accuracy(&net, &craft(&pred, &[&net], &xte, &yte.zeros_like()).unwrap(), &yte);
    eprintln!(
        "clean {clean:.3} fgsm16 {fgsm:.3} r_step_ll16 {paper:.3} pgd10@16 {pgd16:.3} pgd10@8 {pgd8:.3} apgd_ce100@8 {apgd8:.3} \
         apgd_dlr10@8 {dlr8:.3} square200@16 {square:.3} fgsm(pred labels) {pred_fgsm:.3}"
    );
    assert!(clean >= 0.9, "the synthetic task should be learnt (clean accuracy {clean})");
    assert!(fgsm <= clean - 0.4, "FGSM at 16/256 should be far below clean ({fgsm} vs {clean})");
    assert!(pgd16 <= fgsm, "PGD-10 ({pgd16}) should be at least as strong as FGSM ({fgsm})");
    assert!(paper < clean - 0.2, "R+Step-LL should lower accuracy ({paper} vs {clean})");
    assert!(pgd8 < clean, "PGD at 8/256 should lower accuracy");
    // Within one example of 100: both start at random points, and on this near-linear model the two end within an
    // example of each other (APGD ahead or level on most draws; one draw of the random starts had it one behind).
    assert!(
        apgd8 <= pgd8 + 0.011,
        "APGD-CE ({apgd8}) should be about as strong as PGD-10 ({pgd8}) at 8/256, or stronger"
    );
    assert!(dlr8 < clean, "APGD-DLR-T should lower accuracy");
    assert!(square < clean - 0.2, "Square should lower accuracy using scores only ({square} vs {clean})");
    assert!((pred_fgsm - fgsm).abs() < 0.1, "FGSM on predicted labels should match FGSM on true labels here");

    // Targeted PGD reaches its target class.
    let target = (&yte + 1).remainder(5);
    let mut t = AttackSpec::new(AttackKind::Pgd);
    t.targeted = true;
    let adv = craft(&t, &[&net], &xte, &target).unwrap();
    let hit = accuracy(&net, &adv, &target);
    assert!(hit > 0.5, "targeted PGD reached its target for only {hit} of the examples");

    // The figure: pairs with labels under them, written as a PNG.
    let dir = tempfile::tempdir().unwrap();
    let png = std::env::var_os("SATM_KEEP_GRID").map(PathBuf::from).unwrap_or_else(|| dir.path().join("grid.png"));
    let adv = craft(&AttackSpec::paper_r_step_ll(), &[&net], &xte.narrow(0, 0, 6), &yte.narrow(0, 0, 6)).unwrap();
    let preds = net.forward(&adv).argmax(1, false);
    let names: Vec<String> = ["0-2", "4-6", "8-13", "15-20", "25-32"].iter().map(|s| s.to_string()).collect();
    attacks::save_adversarial_grid(&png, &xte.narrow(0, 0, 6), &adv, &yte.narrow(0, 0, 6), &preds, Some(&names))
        .unwrap();
    check_grid_png(&png, &xte.narrow(0, 0, 6), &adv);
}

/// The PNG has 4 pairs in the first row and 2 in the second; the first pair shows the adversarial image left and
/// the clean one right (scaled 7× from 16 px); there is dark text under it.
fn check_grid_png(png: &std::path::Path, x: &Tensor, adv: &Tensor) {
    let img = image::open(png).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let scale = 7u32; // ceil(112 / 16)
    let side = 16 * scale;
    assert!(w >= 4 * (2 * side + 6) && h > 2 * side + 30, "grid is {w}×{h}");
    // Locate the first pair: its top-left pixel is the first non-white pixel of the image row 30 + 3.
    let row = 30 + 3;
    let left = (0..w).find(|&c| img.get_pixel(c, row).0 != [255, 255, 255]).expect("no image in the first row");
    let px = |t: &Tensor, c: i64, yy: i64, xx: i64| (t.double_value(&[0, c, yy, xx]) * 255.0).round() as u8;
    // Pixel (3/7 → 0, left/7) of the adversarial image, and of the clean one to its right.
    let a = img.get_pixel(left + 2 * scale + 3, row + 2 * scale).0;
    let want_adv = [px(adv, 0, 2, 2), px(adv, 1, 2, 2), px(adv, 2, 2, 2)];
    assert_eq!(a, want_adv, "left image of the pair is not the adversarial one");
    let c = img.get_pixel(left + side + 6 + 2 * scale + 3, row + 2 * scale).0;
    let want_clean = [px(x, 0, 2, 2), px(x, 1, 2, 2), px(x, 2, 2, 2)];
    assert_eq!(c, want_clean, "right image of the pair is not the clean one");
    // Text under the pair: dark pixels in the band below the images.
    let band = (30 + side + 4)..(30 + side + 4 + 36);
    let dark = band
        .flat_map(|yy| (0..w / 4).map(move |xx| (xx, yy)))
        .filter(|&(xx, yy)| img.get_pixel(xx, yy).0.iter().all(|&v| v < 100))
        .count();
    assert!(dark > 30, "no text under the first pair");
}

#[test]
fn attacks_on_vggbn_s_keep_bounds_and_batchnorm_statistics() {
    use satm::core::models::{ModelSpec, Net};
    let _s = serial();
    satm::core::device::seed_everything(11).unwrap();
    // A quarter of the channels keeps this fast; the layers (conv, BN, pooling, classifier) are vggbn_s's.
    let mut ms = ModelSpec::new("vggbn_s", 8);
    ms.width = 0.25;
    let net = Net::new(&ms, Device::Cpu).unwrap();
    let x = (Tensor::rand([3, 3, 32, 32], (Kind::Float, Device::Cpu)) * 1.2 - 0.1).clamp(0.0, 1.0);
    // The net's own predictions, so that APGD and Square have examples to attack.
    let y = net.forward_t(&x, false).unwrap().argmax(1, false);
    let state = |n: &Net| -> Vec<(String, Tensor)> {
        let mut v: Vec<_> = n.state_dict().into_iter().map(|(k, t)| (k, t.detach().copy())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let before = state(&net);
    let eps = 8.0 / 256.0;
    // One attack per family (every kind runs on the tiny net above).
    for kind in [AttackKind::RStepLl, AttackKind::Pgd, AttackKind::ApgdCe, AttackKind::Square] {
        let adv = craft(&quick(kind, eps), &[&net], &x, &y).unwrap();
        assert!(linf(&adv, &x) <= eps + 1e-6, "{kind} on vggbn_s");
        assert!(adv.min().double_value(&[]) >= 0.0 && adv.max().double_value(&[]) <= 1.0, "{kind}");
    }
    // Eval-mode crafting: weights, running statistics and batch counters are exactly as before.
    for ((k, a), (_, b)) in before.iter().zip(state(&net)) {
        assert!(a.equal(&b), "{k} changed while crafting in eval mode");
    }
    // train_mode uses batch statistics (and, like any training-mode forward, updates the running ones).
    let mut spec = AttackSpec::new(AttackKind::Fgsm);
    spec.train_mode = true;
    let _ = craft(&spec, &[&net], &x, &y).unwrap();
    let changed = before.iter().zip(state(&net)).any(|((k, a), (_, b))| k.contains("running_mean") && !a.equal(&b));
    assert!(changed, "train_mode should run batch norm in training mode");
}

fn eval_script<T: Clone + 'static>(src: &str) -> std::result::Result<T, String> {
    let engine = satm::script::new_engine();
    engine.eval::<T>(src).map_err(|e| e.to_string())
}

#[test]
fn script_attacks_respect_their_budget() {
    let _s = serial();
    let src = r#"
        seed(3);
        precision("fp32");
        let a = model("vgg_s", #{classes: 8, width: 0.25});
        let b = model("vgg_s", #{classes: 8, width: 0.25});
        let x = rand([2, 3, 32, 32]);
        let y = a.predict(x);
        let worst = 0.0;
        let eps = 8.0 / 256;
        for name in attacks() {
            let o = #{eps: eps, seed: 1};
            if name == "apgd_ce" || name == "apgd_dlr" { o.steps = 5; }
            if name == "square" { o.queries = 20; }
            let adv = attack(name, [a, b], x, y, o);
            let d = max_abs_diff(adv, x);
            if d > worst { worst = d; }
        }
        let r = r_step_ll(a, x, y, #{eps: 16.0 / 256, alpha: 8.0 / 256, target: "least_likely"});
        let f = fgsm(a, x, y);
        let p = pgd(a, x, y, #{eps: eps, steps: 3, step: 2.0 / 256});
        let q = apgd(a, x, y, #{loss: "dlr", steps: 4, targets: 2});
        let s = square(a, x, y, #{queries: 10});
        [worst, max_abs_diff(r, x), max_abs_diff(f, x), max_abs_diff(p, x), max_abs_diff(q, x), max_abs_diff(s, x)]
    "#;
    let v: rhai::Array = eval_script(src).unwrap();
    let v: Vec<f64> = v.into_iter().map(|d| d.as_float().unwrap()).collect();
    assert!(v[0] <= 8.0 / 256.0 + 1e-6 && v[0] > 4.0 / 256.0, "attack(): worst ‖δ‖∞ {}", v[0]);
    assert!((v[1] - 16.0 / 256.0).abs() < 1e-6, "r_step_ll: {}", v[1]);
    assert!((v[2] - 16.0 / 256.0).abs() < 1e-6, "fgsm default eps: {}", v[2]);
    assert!(v[3] <= 8.0 / 256.0 + 1e-6, "pgd: {}", v[3]);
    assert!(v[4] <= 16.0 / 256.0 + 1e-6 && v[5] <= 16.0 / 256.0 + 1e-6);
}

#[test]
fn script_attack_options_are_validated() {
    let _s = serial();
    let run = |call: &str| -> String {
        let src = format!(
            r#"seed(1); let m = model("vgg_s", #{{classes: 8, width: 0.25}}); let x = rand([2, 3, 32, 32]);
               let y = m.predict(x); {call}"#
        );
        eval_script::<satm::script::types::TensorV>(&src).err().unwrap_or_default()
    };
    assert!(run(r#"attack("pgd", m, x, y, #{epsilon: 0.1})"#).contains("unknown option(s) epsilon"));
    // An option that does not apply to the attack is rejected, not silently ignored.
    assert!(run(r#"fgsm(m, x, y, #{steps: 3})"#).contains("unknown option(s) steps"));
    assert!(run(r#"attack("fgsm", m, x, y, #{eps: -0.1})"#).contains("eps must be >= 0"));
    assert!(run(r#"r_step_ll(m, x, y, #{eps: 0.05, alpha: 0.1})"#).contains("alpha"));
    assert!(run(r#"pgd(m, x, y, #{steps: 0})"#).contains("steps must be at least 1"));
    assert!(run(r#"r_step_ll(m, x, y, #{target: "most_likely"})"#).contains("expected one of"));
    assert!(run(r#"attack("cw", m, x, y)"#).contains("unknown attack 'cw'"));
    assert!(run(r#"fgsm(m, x, tensor([0, 1, 2]))"#).contains("y has shape"));
    assert!(run(r#"fgsm(m, x * 3.0, y)"#).contains("[0, 1]"));
    assert!(run(r#"fgsm([], x, y)"#).contains("empty"));
    assert!(run(r#"fgsm([m, 3], x, y)"#).contains("models[1] must be a Model"));
    assert!(run(r#"apgd(m, x, y, #{loss: "l2"})"#).contains("expected one of: ce, dlr"));
    let d: String = eval_script(r#"describe_attack("r_step_ll", #{})"#).unwrap();
    assert!(d.contains("paper Alg. 1") && d.contains("ε=16/256 α=8/256"), "{d}");
}

#[test]
fn script_saves_the_adversarial_grid() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("fig1.png");
    let src = format!(
        r#"seed(2); let m = model("vgg_s", #{{classes: 8, width: 0.25}}); let x = rand([3, 3, 32, 32]);
           let y = m.predict(x); let adv = r_step_ll(m, x, y);
           save_adversarial_grid("{p}", x, adv, y, m.predict(adv),
               ["0-2", "4-6", "8-13", "15-20", "25-32", "38-43", "48-53", "60-"])"#,
        p = png.display()
    );
    let out: String = eval_script(&src).unwrap();
    assert_eq!(out, png.display().to_string());
    let img = image::open(&png).unwrap().to_rgb8();
    // 3 pairs of 32 px images scaled 4× side by side, plus the text rows.
    assert!(img.width() >= 3 * (2 * 128 + 6) && img.height() >= 30 + 128 + 36, "{:?}", img.dimensions());
}
