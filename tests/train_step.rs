//! The step module's loss, term by term, against an independent computation: each term's gradient (read off one
//! plain-SGD update with lr 1, as the difference of the update with and without the term) equals autograd of the
//! term written out by hand (cross-entropy from log-sum-exp, binary cross-entropy from the sigmoid, the GRL as an
//! explicit −λ factor); and the joint and split passes give the same gradients.
use satm::core::models::{ModelSpec, Net};
use satm::core::train::TrainConfig;
use satm::core::train::optim::OptimizerKind;
use satm::core::train::step::{LossWeights, Pass, StepOut, update_trainee};
use satm::core::train::trainees::Trainee;
use tch::{Device, Kind, Tensor};

mod common;

/// libtorch's generator is process-wide and every test here seeds it: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const B: i64 = 6;
const CLASSES: i64 = 4;
const SIZE: i64 = 16;

fn fresh(arch: &str) -> Net {
    satm::core::device::seed_everything(11).unwrap();
    let spec = ModelSpec { arch: arch.into(), classes: CLASSES, width: 0.25, size: SIZE, ..ModelSpec::default() };
    Net::new(&spec, Device::Cpu).unwrap()
}

/// Plain SGD (no momentum, no weight decay): one update with lr 1 moves every parameter by minus its gradient.
fn cfg(da: bool) -> TrainConfig {
    TrainConfig {
        optimizer: OptimizerKind::Sgd,
        momentum: 0.0,
        weight_decay: 0.0,
        r_da: if da { 0.1 } else { 0.0 },
        da_hidden: 16,
        precision: satm::core::device::Precision::Fp32,
        ..TrainConfig::default()
    }
}

/// The same trainee every time: network and DA head from fixed seeds.
fn trainee<'a>(net: &'a mut Net, da: bool) -> Trainee<'a> {
    satm::core::device::seed_everything(5).unwrap();
    Trainee::new(net, &cfg(da)).unwrap()
}

fn da_vars(t: &Trainee) -> Vec<Tensor> {
    t.da_vs.as_ref().map(|vs| vs.trainable_variables()).unwrap_or_default()
}

fn copies(v: &[Tensor]) -> Vec<Tensor> {
    v.iter().map(|t| t.detach().copy()).collect()
}

struct Inputs {
    x: Tensor,
    y: Tensor,
    adv: Vec<Tensor>,
    own: Option<Tensor>,
}

fn inputs(adv: bool, own: bool) -> Inputs {
    satm::core::device::seed_everything(3).unwrap();
    let x = Tensor::rand([B, 3, SIZE, SIZE], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(CLASSES, [B], (Kind::Int64, Device::Cpu));
    let xa = (&x + Tensor::randn([B, 3, SIZE, SIZE], (Kind::Float, Device::Cpu)) * 0.1).clamp(0.0, 1.0);
    let xo = (&x + Tensor::randn([B, 3, SIZE, SIZE], (Kind::Float, Device::Cpu)) * 0.1).clamp(0.0, 1.0);
    Inputs { x, y, adv: if adv { vec![xa] } else { vec![] }, own: own.then_some(xo) }
}

/// (network gradients, DA-head gradients, what the update logged) of one update.
fn update_grads(arch: &str, da: bool, i: &Inputs, w: LossWeights, pass: Pass) -> (Vec<Tensor>, Vec<Tensor>, StepOut) {
    let mut net = fresh(arch);
    let mut t = trainee(&mut net, da);
    let (n0, d0) = (copies(&t.net.trainable_variables()), copies(&da_vars(&t)));
    let out = update_trainee(&mut t, &i.x, &i.y, &i.adv, i.own.as_ref(), &w, 1.0, pass).unwrap();
    let n1 = t.net.trainable_variables();
    let d1 = da_vars(&t);
    let diff = |a: &[Tensor], b: &[Tensor]| a.iter().zip(b).map(|(a, b)| a - b).collect::<Vec<_>>();
    (diff(&n0, &n1), diff(&d0, &d1), out)
}

/// Autograd of a hand-written loss on the same fresh trainee: (network gradients, DA-head gradients, loss).
fn reference(arch: &str, da: bool, loss: impl FnOnce(&Trainee) -> Tensor) -> (Vec<Tensor>, Vec<Tensor>, f64) {
    let mut net = fresh(arch);
    let t = trainee(&mut net, da);
    let l = loss(&t);
    l.backward();
    let grads =
        |v: Vec<Tensor>| v.iter().map(|p| if p.grad().defined() { p.grad().copy() } else { p.zeros_like() }).collect();
    (grads(t.net.trainable_variables()), grads(da_vars(&t)), l.double_value(&[]))
}

/// Cross-entropy written out: mean over the batch of logsumexp(logits) − logits[y].
fn ce_by_hand(logits: &Tensor, y: &Tensor) -> Tensor {
    let m = logits.amax([-1], true).detach();
    let lse = (logits - &m).exp().sum_dim_intlist(&[-1i64][..], false, Kind::Float).log() + m.squeeze_dim(-1);
    let picked = logits.gather(1, &y.unsqueeze(1), false).squeeze_dim(1);
    (lse - picked).mean(Kind::Float)
}

/// Binary cross-entropy of logits `d` against domains `dom`, written out from the sigmoid.
fn bce_by_hand(d: &Tensor, dom: &Tensor) -> Tensor {
    let p = d.sigmoid();
    let one = d.ones_like();
    -(dom * p.log() + (&one - dom) * (&one - &p).log()).mean(Kind::Float)
}

fn logits(t: &Trainee, x: &Tensor) -> Tensor {
    t.net.head(&t.net.features_t(x, true).unwrap()).unwrap()
}

fn rel(a: &[Tensor], b: &[Tensor]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(a, b)| (a - b).square().sum(Kind::Double).double_value(&[])).sum();
    let den: f64 = b.iter().map(|b| b.square().sum(Kind::Double).double_value(&[])).sum();
    assert!(den > 0.0, "the reference gradient is zero: the check would be vacuous");
    (num / den).sqrt()
}

fn scaled(v: &[Tensor], s: f64) -> Vec<Tensor> {
    v.iter().map(|t| t * s).collect()
}

fn minus(a: &[Tensor], b: &[Tensor]) -> Vec<Tensor> {
    a.iter().zip(b).map(|(a, b)| a - b).collect()
}

fn metric(out: &StepOut, name: &str) -> f64 {
    out.metrics.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no {name} logged")).1
}

const NONE: LossWeights = LossWeights { r_adv: 0.0, r_da: 0.0, white_box: 0.0, lambda: 1.0 };

#[test]
fn clean_cross_entropy_alone() {
    let _serial = serial();
    let i = inputs(false, false);
    let (g, _, out) = update_grads("vgg_s", false, &i, NONE, Pass::Joint);
    let (want, _, loss) = reference("vgg_s", false, |t| ce_by_hand(&logits(t, &i.x), &i.y));
    assert!(rel(&g, &want) < 1e-4, "clean CE gradient: rel {:.2e}", rel(&g, &want));
    assert!((metric(&out, "clean_loss") - loss).abs() < 1e-5 * loss.abs().max(1.0));
    assert!((out.total - loss).abs() < 1e-5 * loss.abs().max(1.0));
}

#[test]
fn r_adv_term_alone() {
    let _serial = serial();
    let i = inputs(true, false);
    let w = LossWeights { r_adv: 0.7, ..NONE };
    let (g1, _, out) = update_grads("vgg_s", false, &i, w, Pass::Joint);
    let (g0, _, _) = update_grads("vgg_s", false, &i, NONE, Pass::Joint);
    let (want, _, loss) = reference("vgg_s", false, |t| ce_by_hand(&logits(t, &i.adv[0]), &i.y));
    let got = minus(&g1, &g0);
    assert!(rel(&got, &scaled(&want, 0.7)) < 1e-3, "r_adv term: rel {:.2e}", rel(&got, &scaled(&want, 0.7)));
    assert!((metric(&out, "adv_loss") - loss).abs() < 1e-5 * loss.abs().max(1.0));
}

/// The DA term reaches the DA head with weight r_da and the feature extractor reversed and scaled by λ.
#[test]
fn r_da_term_alone_through_the_grl() {
    let _serial = serial();
    let i = inputs(true, false);
    let (r_da, lambda) = (0.5, 0.3);
    let w1 = LossWeights { r_da, lambda, ..NONE };
    let w0 = LossWeights { lambda, ..NONE };
    let (g1, h1, out) = update_grads("vgg_s", true, &i, w1, Pass::Joint);
    let (g0, h0, _) = update_grads("vgg_s", true, &i, w0, Pass::Joint);
    let (want_net, want_head, loss) = reference("vgg_s", true, |t| {
        let f = Tensor::cat(&[t.net.features_t(&i.x, true).unwrap(), t.net.features_t(&i.adv[0], true).unwrap()], 0);
        let d = t.da.as_ref().unwrap().f_forward(&f).unwrap().squeeze_dim(1);
        let dom = Tensor::cat(
            &[Tensor::zeros([B], (Kind::Float, Device::Cpu)), Tensor::ones([B], (Kind::Float, Device::Cpu))],
            0,
        );
        bce_by_hand(&d, &dom)
    });
    let net = minus(&g1, &g0);
    let r = rel(&net, &scaled(&want_net, -lambda * r_da));
    assert!(r < 1e-3, "DA term on the network (reversed, × λ r_da): rel {r:.2e}");
    let r = rel(&minus(&h1, &h0), &scaled(&want_head, r_da));
    assert!(r < 1e-3, "DA term on the head (× r_da): rel {r:.2e}");
    assert!(h0.iter().all(|t| t.abs().max().double_value(&[]) == 0.0), "r_da = 0 moved the DA head");
    assert!((metric(&out, "da_loss") - loss).abs() < 1e-5 * loss.abs().max(1.0));
}

#[test]
fn white_box_term_alone() {
    let _serial = serial();
    let i = inputs(false, true);
    let w = LossWeights { white_box: 0.4, ..NONE };
    let (g1, _, out) = update_grads("vgg_s", false, &i, w, Pass::Joint);
    let (g0, _, _) = update_grads("vgg_s", false, &i, NONE, Pass::Joint);
    let (want, _, loss) = reference("vgg_s", false, |t| ce_by_hand(&logits(t, i.own.as_ref().unwrap()), &i.y));
    let got = minus(&g1, &g0);
    assert!(rel(&got, &scaled(&want, 0.4)) < 1e-3, "white-box term: rel {:.2e}", rel(&got, &scaled(&want, 0.4)));
    assert!((metric(&out, "white_box_loss") - loss).abs() < 1e-5 * loss.abs().max(1.0));
}

const ALL: LossWeights = LossWeights { r_adv: 0.7, r_da: 0.5, white_box: 0.4, lambda: 0.3 };

/// Without batch statistics the joint pass runs clean and adversarial examples through one forward pass over
/// [clean; adv] and one backward pass; the split pass runs each part alone and accumulates: the same gradients.
#[test]
fn joint_and_split_passes_give_the_same_gradients_without_batchnorm() {
    let _serial = serial();
    let i = inputs(true, true);
    let (gj, hj, oj) = update_grads("vgg_s", true, &i, ALL, Pass::Joint);
    let (gs, hs, os) = update_grads("vgg_s", true, &i, ALL, Pass::Split);
    assert!(rel(&gs, &gj) < 1e-5, "network: rel {:.2e}", rel(&gs, &gj));
    assert!(rel(&hs, &hj) < 1e-5, "DA head: rel {:.2e}", rel(&hs, &hj));
    assert!((oj.total - os.total).abs() < 1e-5 * oj.total.abs());
    for name in ["clean_loss", "adv_loss", "da_loss", "domain_acc", "white_box_loss"] {
        assert!((metric(&oj, name) - metric(&os, name)).abs() < 1e-5, "{name}");
    }
}

/// With BatchNorm a forward pass over [clean; adv] would normalise each part with the statistics of both (a
/// different function), so the joint pass runs the parts separately there too; the gradients agree, and both differ
/// from what the concatenated pass would give.
#[test]
fn with_batchnorm_the_joint_pass_keeps_the_parts_apart() {
    let _serial = serial();
    let i = inputs(true, false);
    let (gj, _, _) = update_grads("vggbn_s", true, &i, ALL, Pass::Joint);
    let (gs, _, _) = update_grads("vggbn_s", true, &i, ALL, Pass::Split);
    assert!(rel(&gs, &gj) < 1e-5, "rel {:.2e}", rel(&gs, &gj));
    // What one forward pass over [clean; adv] would give (the CE terms only): not the same.
    let (cat, _, _) = reference("vggbn_s", true, |t| {
        let l = logits(t, &Tensor::cat(&[&i.x, &i.adv[0]], 0));
        ce_by_hand(&l.narrow(0, 0, B), &i.y) + ce_by_hand(&l.narrow(0, B, B), &i.y) * ALL.r_adv
    });
    let (sep, _, _) = reference("vggbn_s", true, |t| {
        ce_by_hand(&logits(t, &i.x), &i.y) + ce_by_hand(&logits(t, &i.adv[0]), &i.y) * ALL.r_adv
    });
    assert!(rel(&cat, &sep) > 1e-3, "concatenating changed nothing: the BN premise of this test is wrong");
}

const PY_AUTOCAST: &str = r#"
import sys, torch
from safetensors.torch import load_file
t = load_file(sys.argv[1])
def grad(cache):
    w = t["w"].clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=cache):
        y = t["x1"] @ w + t["x2"] @ w
    y.float().sum().backward()
    return w.grad
off, on = grad(False), grad(True)
print("equal_off", torch.equal(t["ours"], off))
print("equal_on", torch.equal(t["ours"], on))
print("off_vs_on_differ", not torch.equal(off, on))
"#;

/// satm's bf16 autocast runs without libtorch's weight-cast cache (it is process-wide, and another thread leaving
/// autocast empties it): a weight used twice in one autocast region gets the gradient of
/// `torch.autocast(..., cache_enabled=False)`, bit for bit, not that of the cached cast (one cast, its two gradients
/// summed in bf16). Checked against the venv's PyTorch, with data on which the two differ.
#[test]
fn autocast_matches_pytorch_without_the_weight_cast_cache() {
    let Some(py) = common::venv_python_or_skip("the project venv's python (autocast against PyTorch)") else { return };
    let _s = serial();
    satm::core::device::seed_everything(21).unwrap();
    let w = satm::core::random::randn(&[64, 48]).unwrap();
    let (x1, x2) = (satm::core::random::randn(&[8, 64]).unwrap(), satm::core::random::randn(&[8, 64]).unwrap());
    let wl = w.copy().set_requires_grad(true);
    let y = {
        let _ac = satm::core::amp::Autocast::new(Device::Cpu, true).unwrap();
        assert!(satm::core::amp::is_enabled(Device::Cpu));
        assert!(!satm::core::amp::cast_cache_enabled(), "satm's autocast must run with the cast cache off");
        x1.matmul(&wl) + x2.matmul(&wl)
    };
    assert!(!satm::core::amp::is_enabled(Device::Cpu));
    y.to_kind(Kind::Float).sum(Kind::Float).backward();
    let ours = wl.grad();
    let named: Vec<(String, Tensor)> =
        [("w", w), ("x1", x1), ("x2", x2), ("ours", ours)].into_iter().map(|(n, t)| (n.to_string(), t)).collect();
    let out = common::python_on_tensors(&py, PY_AUTOCAST, &named);
    assert!(out.contains("off_vs_on_differ True"), "the data must tell the two apart: {out}");
    assert!(out.contains("equal_off True"), "satm's gradient differs from PyTorch's without the cache: {out}");
    assert!(out.contains("equal_on False"), "{out}");
}
