//! Script API for core::attacks (registered by register_all): `attack(name, model_or_models, x, y, #{...})`, the
//! shortcuts `fgsm`, `pgd`, `r_step_ll`, `apgd`, `square`, `describe_attack`, `attacks()` and
//! `save_adversarial_grid`.
use crate::core::amp::Autocast;
use crate::core::attacks::{self, AttackKind, AttackSpec};
use crate::core::models::{Classifier, Net};
use crate::script::api::models::ModelV;
use crate::script::cell::Ref;
use crate::script::convert::{Opts, RResult, friendly_type, guard, prefixed, script_err, str_array};
use crate::script::docs::doc;
use crate::script::state;
use crate::script::types::TensorV;
use anyhow::{Context, anyhow, bail};
use rhai::{Array, Dynamic, Engine, Map};
use std::path::Path;

/// Builds an attack's settings from a script option map. Only the keys that mean something for `kind` are accepted
/// (plus `extra`, handled by the caller); `eps` and `steps` come first because α and the step size default to
/// values derived from them.
pub fn spec_from_opts(func: &str, kind: AttackKind, map: Map, extra: &[&str]) -> RResult<AttackSpec> {
    let mut valid: Vec<&str> = kind.option_keys().to_vec();
    valid.extend_from_slice(extra);
    let o = Opts::new(func, map, &valid)?;
    let base = AttackSpec::new(kind);
    let eps = o.f64_or("eps", base.eps)?;
    let steps = o.usize_or("steps", base.steps)?;
    let mut s = base.with_budget(eps, steps);
    s.alpha = o.f64_or("alpha", s.alpha)?;
    s.step_size = o.f64_or("step", s.step_size)?;
    s.momentum = o.f64_or("momentum", s.momentum)?;
    s.random_start = o.bool_or("random_start", s.random_start)?;
    s.targeted = o.bool_or("targeted", s.targeted)?;
    s.target = o.choice_or("target", s.target.name(), &["true", "least_likely"])?.parse().map_err(|e| bad(func, e))?;
    s.labels = o.choice_or("labels", s.labels.name(), &["true", "predicted"])?.parse().map_err(|e| bad(func, e))?;
    s.early_stop = o.bool_or("early_stop", s.early_stop)?;
    s.train_mode = o.bool_or("train_mode", s.train_mode)?;
    s.restarts = o.usize_or("restarts", s.restarts)?;
    s.n_target_classes = o.usize_or("targets", s.n_target_classes)?;
    s.queries = o.usize_or("queries", s.queries)?;
    s.p_init = o.f64_or("p_init", s.p_init)?;
    if let Some(seed) = o.opt_i64("seed")? {
        if seed < 0 {
            return Err(script_err(format!("{func}: option 'seed' must be >= 0, got {seed}")));
        }
        s.seed = Some(seed as u64);
    }
    s.validate().map_err(|e| bad(func, e))?;
    Ok(s)
}

fn bad(func: &str, e: anyhow::Error) -> Box<rhai::EvalAltResult> {
    script_err(prefixed(func, format!("{e:#}")))
}

/// One Model or an array of Models (an ensemble).
fn models_of(func: &str, v: &Dynamic) -> RResult<Vec<ModelV>> {
    if let Some(m) = v.clone().try_cast::<ModelV>() {
        return Ok(vec![m]);
    }
    if let Ok(arr) = v.clone().into_array() {
        if arr.is_empty() {
            return Err(script_err(format!("{func}: the array of source models is empty")));
        }
        return arr
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                m.clone().try_cast::<ModelV>().ok_or_else(|| {
                    script_err(format!("{func}: models[{i}] must be a Model, got {}", friendly_type(m.type_name())))
                })
            })
            .collect();
    }
    Err(script_err(format!("{func}: expected a Model or an array of Models, got {}", friendly_type(v.type_name()))))
}

/// Crafts with `spec` on the models, under the session's precision (bf16 autocast where it resolves so; the
/// perturbation stays fp32 either way).
fn run(func: &str, spec: &AttackSpec, models: &Dynamic, x: &TensorV, y: &TensorV) -> RResult<TensorV> {
    let models = models_of(func, models)?;
    guard(func, || {
        let nets: Vec<Ref<Net>> = models.iter().map(|m| m.read()).collect::<anyhow::Result<_>>()?;
        let sources: Vec<&dyn Classifier> = nets.iter().map(|n| &**n as &dyn Classifier).collect();
        let device = sources[0].device();
        let (bf16, _) = state::with(|s| s.precision).resolve(device);
        let _ac = Autocast::new(device, bf16)?;
        Ok(TensorV(attacks::craft(spec, &sources, &x.0, &y.0)?))
    })
}

fn attack_named(name: &str, models: &Dynamic, x: &TensorV, y: &TensorV, opts: Map) -> RResult<TensorV> {
    let kind: AttackKind = name.parse().map_err(|e| bad("attack", e))?;
    let spec = spec_from_opts("attack", kind, opts, &[])?;
    run("attack", &spec, models, x, y)
}

fn shortcut(func: &'static str, kind: AttackKind, engine: &mut Engine, text: &str) {
    doc(func, &["model: Model | Array", "x: Tensor", "y: Tensor", "opts: Map"], "Tensor", text).register_into_engine(
        engine,
        move |m: Dynamic, x: TensorV, y: TensorV, o: Map| -> RResult<TensorV> {
            let spec = spec_from_opts(func, kind, o, &[])?;
            run(func, &spec, &m, &x, &y)
        },
    );
    doc(func, &["model: Model | Array", "x: Tensor", "y: Tensor"], "Tensor", text).register_into_engine(
        engine,
        move |m: Dynamic, x: TensorV, y: TensorV| -> RResult<TensorV> {
            let spec = spec_from_opts(func, kind, Map::new(), &[])?;
            run(func, &spec, &m, &x, &y)
        },
    );
}

fn apgd(m: Dynamic, x: TensorV, y: TensorV, mut o: Map) -> RResult<TensorV> {
    let loss = match o.remove("loss") {
        None => "ce".to_string(),
        Some(v) => v
            .into_string()
            .map_err(|t| script_err(format!("apgd: option 'loss' must be a string, got {}", friendly_type(t))))?,
    };
    let kind = match loss.as_str() {
        "ce" => AttackKind::ApgdCe,
        "dlr" => AttackKind::ApgdDlr,
        other => return Err(script_err(format!("apgd: option 'loss' is '{other}'; expected one of: ce, dlr"))),
    };
    let spec = spec_from_opts("apgd", kind, o, &[])?;
    run("apgd", &spec, &m, &x, &y)
}

fn grid(
    path: &str,
    x: &TensorV,
    x_adv: &TensorV,
    labels: &TensorV,
    preds: &TensorV,
    names: Option<Array>,
) -> RResult<String> {
    guard("save_adversarial_grid", || {
        let names: Option<Vec<String>> = names
            .map(|a| {
                a.into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.into_string()
                            .map_err(|t| anyhow!("class_names[{i}] must be a string, got {}", friendly_type(t)))
                    })
                    .collect::<anyhow::Result<Vec<String>>>()
            })
            .transpose()?;
        if path.is_empty() {
            bail!("the path is empty");
        }
        attacks::save_adversarial_grid(Path::new(path), &x.0, &x_adv.0, &labels.0, &preds.0, names.as_deref())
            .with_context(|| format!("writing {path}"))?;
        Ok(path.to_string())
    })
}

const OPTS_DOC: &str = "Options (each attack accepts those that apply to it; others are errors): eps (16/256), alpha (eps/2, \
R+ attacks), steps, step (step size; default eps/steps, 2.5·eps/steps for pgd), momentum (mi_fgsm 1.0, apgd 0.75), \
random_start, restarts, target (\"true\" | \"least_likely\"), labels (\"true\" | \"predicted\": the model's own \
predictions, avoids label leaking), targeted (y are target classes), early_stop, train_mode (BN/dropout in training \
mode), targets (apgd_dlr: number of target classes, capped at C−1), queries and p_init (square), seed (reseeds the session's random stream before crafting; default: draw from it as it is).";

pub fn register(engine: &mut Engine) {
    let text = format!(
        "Crafts adversarial examples of x (f32 [B,3,H,W] in [0,1]) with labels y on a model (white-box) or an array \
         of models (their averaged logits: transfer attacks). Attacks: {}. Returns x_adv with ‖x_adv − x‖∞ ≤ eps, in \
         [0,1]. r_step_ll's target \"true\" (default) is the SATM paper's Algorithm 1 (x' + (eps−alpha)·sign∇J(x', y), \
         i.e. Tramèr's R+FGSM); \"least_likely\" is Tramèr et al.'s R+Step-LL. Network passes use the session \
         precision (bf16 autocast where it resolves so); the perturbation stays fp32. {OPTS_DOC}",
        AttackKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
    );
    doc("attack", &["name: &str", "model: Model | Array", "x: Tensor", "y: Tensor", "opts: Map"], "Tensor", &text)
        .register_into_engine(engine, |name: &str, m: Dynamic, x: TensorV, y: TensorV, o: Map| {
            attack_named(name, &m, &x, &y, o)
        });
    doc("attack", &["name: &str", "model: Model | Array", "x: Tensor", "y: Tensor"], "Tensor", &text)
        .register_into_engine(engine, |name: &str, m: Dynamic, x: TensorV, y: TensorV| {
            attack_named(name, &m, &x, &y, Map::new())
        });
    shortcut(
        "fgsm",
        AttackKind::Fgsm,
        engine,
        "FGSM: x + eps·sign∇J(x, y). Options: eps, labels, target, targeted, train_mode, seed.",
    );
    shortcut(
        "pgd",
        AttackKind::Pgd,
        engine,
        "PGD (Madry et al.): uniform random start in the eps-ball, `steps` signed steps of size `step` (default \
         2.5·eps/steps), projected each step. Options: eps, steps (10), step, random_start, restarts, labels, target, \
         targeted, early_stop, train_mode, seed.",
    );
    shortcut(
        "r_step_ll",
        AttackKind::RStepLl,
        engine,
        "R+Step-LL: x' = x + alpha·sign(N(0,I)), then x' + (eps−alpha)·sign∇J(x', y) (target \"true\", the SATM \
         paper's Algorithm 1; default) or x' − (eps−alpha)·sign∇J(x', y_LL) (target \"least_likely\", Tramèr et al.). \
         Options: eps (16/256), alpha (eps/2), target, labels, targeted, train_mode, seed.",
    );
    shortcut(
        "square",
        AttackKind::Square,
        engine,
        "Square attack (Andriushchenko et al. 2020), L∞, score-based: uses only the logits, never a gradient. Options: \
         eps, queries (1000), p_init (0.8), restarts, labels, train_mode, seed.",
    );
    let apgd_text = "APGD (Croce & Hein 2020): loss \"ce\" (APGD-CE, default) or \"dlr\" (targeted APGD with the DLR \
                     loss against the `targets` most likely other classes, AutoAttack's APGD-T; needs ≥ 4 classes). \
                     Options: loss, eps, steps (100), momentum (0.75), random_start, restarts, labels, targeted (ce), \
                     targets (dlr, 9), train_mode, seed.";
    doc("apgd", &["model: Model | Array", "x: Tensor", "y: Tensor", "opts: Map"], "Tensor", apgd_text)
        .register_into_engine(engine, apgd);
    doc("apgd", &["model: Model | Array", "x: Tensor", "y: Tensor"], "Tensor", apgd_text)
        .register_into_engine(engine, |m: Dynamic, x: TensorV, y: TensorV| apgd(m, x, y, Map::new()));
    doc("attacks", &[], "Array", "The names `attack` accepts.").register_into_engine(engine, || -> Array {
        str_array(&AttackKind::ALL.iter().map(|k| k.name().to_string()).collect::<Vec<_>>())
    });
    doc(
        "describe_attack",
        &["name: &str", "opts: Map"],
        "String",
        "The attack's full settings as text for reports, e.g. \"R+Step-LL [paper Alg. 1: …] ε=16/256 α=8/256 \
         labels=true\". Validates the options like `attack`.",
    )
    .register_into_engine(engine, |name: &str, o: Map| -> RResult<String> {
        let kind: AttackKind = name.parse().map_err(|e| bad("describe_attack", e))?;
        Ok(spec_from_opts("describe_attack", kind, o, &[])?.describe())
    });
    let grid_text = "Writes a PNG of adversarial/clean pairs (adversarial left, clean right; the paper's Figure 1) \
                     with the true label and the prediction on the adversarial image under each pair. x, x_adv: \
                     [B,C,H,W] in [0,1]; labels, preds: [B] class indices; class_names names class i. Returns the path.";
    doc(
        "save_adversarial_grid",
        &["path: &str", "x: Tensor", "x_adv: Tensor", "labels: Tensor", "preds: Tensor"],
        "String",
        grid_text,
    )
    .register_into_engine(engine, |p: &str, x: TensorV, xa: TensorV, l: TensorV, pr: TensorV| {
        grid(p, &x, &xa, &l, &pr, None)
    });
    doc(
        "save_adversarial_grid",
        &["path: &str", "x: Tensor", "x_adv: Tensor", "labels: Tensor", "preds: Tensor", "class_names: Array"],
        "String",
        grid_text,
    )
    .register_into_engine(engine, |p: &str, x: TensorV, xa: TensorV, l: TensorV, pr: TensorV, n: Array| {
        grid(p, &x, &xa, &l, &pr, Some(n))
    });
}
