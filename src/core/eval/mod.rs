//! Evaluation: metrics (classification rate, one-off, confusion), clean / white-box / black-box evaluation, transfer
//! matrices, ε sweeps, the paper's tables, an AutoAttack-style robustness preset and gradient-masking checks.
//!
//! Everything works against [`Classifier`], so ensembles and wrappers evaluate like networks. Every evaluation
//! reseeds libtorch with its seed first, so the same call gives the same numbers, and a transfer matrix's diagonal
//! equals the white-box evaluation of the same model with the same seed.
pub mod masking;
pub mod metrics;
pub mod robust;
pub mod tables;

pub use masking::{MaskingCheck, MaskingOpts, MaskingReport, masking_report};
pub use metrics::{Confusion, Rates, mean_std};
pub use robust::{RobustOpts, RobustResult, RobustStage, robust_eval};
pub use tables::{ChangeRow, Pair, VariantsRow, change_table, variants_table};

use crate::core::attacks::{AttackSpec, craft};
use crate::core::cancel;
use crate::core::data::{BatchOpts, Dataset, rng};
use crate::core::models::Classifier;
use anyhow::{Context, Result, bail};
use tch::{Device, Kind, Tensor};

/// Whose gradients craft the adversarial examples.
#[derive(Clone, Default)]
pub enum Sources<'a> {
    /// The evaluated model itself (white-box).
    #[default]
    WhiteBox,
    /// Other models (black-box / transfer); several are attacked as an ensemble (averaged logits).
    From(Vec<&'a dyn Classifier>),
}

/// How to evaluate.
#[derive(Clone)]
pub struct EvalOpts<'a> {
    pub batch_size: usize,
    /// `None`: clean accuracy.
    pub attack: Option<AttackSpec>,
    pub sources: Sources<'a>,
    /// Evaluate on a seeded random subset of this many examples (the same subset for the same seed).
    pub limit: Option<usize>,
    /// Reseeds libtorch before the evaluation (attack noise, random starts, Square) and picks the `limit` subset.
    pub seed: u64,
    /// Where batches go; `None` = the evaluated model's device.
    pub device: Option<Device>,
}

impl Default for EvalOpts<'_> {
    fn default() -> Self {
        EvalOpts { batch_size: 64, attack: None, sources: Sources::WhiteBox, limit: None, seed: 0, device: None }
    }
}

/// The outcome of one evaluation.
#[derive(Debug, Clone)]
pub struct EvalResult {
    pub confusion: Confusion,
    pub accuracy: f64,
    pub one_off: f64,
    pub n: u64,
    /// The evaluated model's label.
    pub model: String,
    /// Labels of the models the attack was crafted on (empty for clean evaluation).
    pub sources: Vec<String>,
    /// The attack's full description (`None` for clean evaluation).
    pub attack: Option<String>,
    /// Whether the attack was crafted on the evaluated model itself (white-box).
    pub white_box: bool,
    pub seed: u64,
    /// The attack's name (`"r_step_ll"`, ...; `None` for clean evaluation).
    pub attack_name: Option<String>,
    /// Per example, in evaluation order: its index in the evaluated dataset (the `limit` subset keeps the indices of
    /// the full set), its true label and the prediction. The confusion matrix counts exactly these pairs.
    pub index: Vec<i64>,
    pub labels: Vec<i64>,
    pub predictions: Vec<i64>,
}

impl EvalResult {
    /// Per example: whether the prediction equals the true label.
    pub fn correct(&self) -> Vec<bool> {
        self.labels.iter().zip(&self.predictions).map(|(y, p)| y == p).collect()
    }

    pub fn rates(&self) -> Rates {
        Rates { accuracy: self.accuracy, one_off: self.one_off, n: self.n }
    }

    /// "clean", "white-box" or "black-box from X".
    pub fn setting(&self) -> String {
        match &self.attack {
            None => "clean".into(),
            Some(_) if self.white_box => "white-box".into(),
            Some(_) => format!("black-box from {}", self.sources.join("+")),
        }
    }
}

/// The indices of the seeded subset of `limit` examples in dataset order (`None`: all of them).
pub fn subset_indices(len: usize, limit: Option<usize>, seed: u64) -> Option<Vec<i64>> {
    match limit {
        Some(l) if l < len => {
            let mut idx: Vec<i64> = rng::permutation(len, seed, 7)[..l].to_vec();
            idx.sort_unstable();
            Some(idx)
        }
        _ => None,
    }
}

/// The examples an evaluation uses: all of `data`, or a seeded subset of `limit` examples in dataset order.
pub fn eval_subset(data: &Dataset, limit: Option<usize>, seed: u64) -> Result<Option<Dataset>> {
    subset_indices(data.len(), limit, seed).map(|idx| data.subset(&idx)).transpose()
}

/// Batches in dataset order (no shuffle, no augmentation) on `device`.
fn eval_batches(data: &Dataset, batch_size: usize, device: Device) -> Result<crate::core::data::Batches> {
    if data.is_empty() {
        bail!("dataset '{}' is empty", data.name);
    }
    data.batches(&BatchOpts { batch_size, shuffle: false, seed: 0, augment: false, drop_last: false, device })
}

/// Logits without building a graph, on `x`'s device.
pub fn predict(model: &dyn Classifier, x: &Tensor) -> Result<Tensor> {
    let _g = tch::no_grad_guard();
    let xm = x.f_to_device(model.device())?;
    let l = model.logits_t(&xm, false).with_context(|| format!("forward pass of {}", model.label()))?;
    Ok(l.f_detach()?.f_to_device(x.device())?)
}

pub(crate) fn check_classes(model: &dyn Classifier, data: &Dataset) -> Result<()> {
    if model.num_classes() != data.num_classes() {
        bail!(
            "model {} has {} classes, dataset '{}' has {}",
            model.label(),
            model.num_classes(),
            data.name,
            data.num_classes()
        );
    }
    Ok(())
}

/// Evaluates `model` on `data`: clean (no attack), white-box (attack crafted on `model`) or black-box (crafted on
/// `opts.sources`). Batch-wise; keeps the confusion matrix and every example's index, label and prediction.
pub fn evaluate(model: &dyn Classifier, data: &Dataset, opts: &EvalOpts) -> Result<EvalResult> {
    let mut results = evaluate_subset(&[model], data, opts.attack.as_ref(), &opts.sources, opts)?;
    results.pop().context("no result")
}

/// [`evaluate_many`] on the `limit` subset of `data`, with example indices into `data`.
fn evaluate_subset(
    targets: &[&dyn Classifier],
    data: &Dataset,
    attack: Option<&AttackSpec>,
    sources: &Sources,
    opts: &EvalOpts,
) -> Result<Vec<EvalResult>> {
    let idx = subset_indices(data.len(), opts.limit, opts.seed);
    let sub = idx.as_ref().map(|i| data.subset(i)).transpose()?;
    let mut results = evaluate_many(targets, sub.as_ref().unwrap_or(data), attack, sources, opts)?;
    if let Some(idx) = idx {
        for r in &mut results {
            r.index = r.index.iter().map(|&i| idx[i as usize]).collect();
        }
    }
    Ok(results)
}

/// Evaluates several targets on the same adversarial examples: crafted once per batch (on `sources`, or on the
/// single target for white-box) after reseeding once, then every target classifies them.
fn evaluate_many(
    targets: &[&dyn Classifier],
    data: &Dataset,
    attack: Option<&AttackSpec>,
    sources: &Sources,
    opts: &EvalOpts,
) -> Result<Vec<EvalResult>> {
    let Some(first) = targets.first() else { bail!("no models to evaluate") };
    for t in targets {
        check_classes(*t, data)?;
    }
    let srcs: Vec<&dyn Classifier> = match (attack, sources) {
        (None, _) => vec![],
        (Some(_), Sources::WhiteBox) => {
            if targets.len() != 1 {
                bail!("white-box evaluation crafts on the evaluated model; give one model at a time");
            }
            vec![*first]
        }
        (Some(_), Sources::From(s)) if s.is_empty() => {
            bail!("black-box evaluation needs at least one source model")
        }
        (Some(_), Sources::From(s)) => s.clone(),
    };
    for s in &srcs {
        check_classes(*s, data)?;
    }
    if let Some(a) = attack {
        a.validate()?;
    }
    let device = opts.device.unwrap_or_else(|| first.device());
    let classes = data.num_classes() as usize;
    let mut conf: Vec<Confusion> = targets.iter().map(|_| Confusion::new(classes)).collect();
    let mut preds: Vec<Vec<i64>> = targets.iter().map(|_| Vec::with_capacity(data.len())).collect();
    let mut labels: Vec<i64> = Vec::with_capacity(data.len());
    // Random starts and restarts draw from a stream of the evaluation's own seed; the caller's stream is untouched.
    let _stream = crate::core::random::scope(opts.seed)?;
    for b in eval_batches(data, opts.batch_size, device)? {
        cancel::check()?;
        let b = b?;
        let x = match attack {
            None => b.x,
            Some(a) => craft(a, &srcs, &b.x, &b.y).with_context(|| format!("crafting {} examples", a.name()))?,
        };
        labels.extend(Vec::<i64>::try_from(&b.y.f_to_kind(Kind::Int64)?.f_to_device(Device::Cpu)?)?);
        for ((t, c), p) in targets.iter().zip(conf.iter_mut()).zip(preds.iter_mut()) {
            // [B, C] -> [B]
            let pred = predict(*t, &x)?.f_argmax(-1, false)?;
            c.update(&pred, &b.y)?;
            p.extend(Vec::<i64>::try_from(&pred.f_to_kind(Kind::Int64)?.f_to_device(Device::Cpu)?)?);
        }
    }
    let index: Vec<i64> = (0..labels.len() as i64).collect();
    Ok(targets
        .iter()
        .zip(conf)
        .zip(preds)
        .map(|((t, c), predictions)| {
            let r = c.compute();
            EvalResult {
                attack_name: attack.map(|a| a.kind.name().to_string()),
                index: index.clone(),
                labels: labels.clone(),
                predictions,
                accuracy: r.accuracy,
                one_off: r.one_off,
                n: r.n,
                confusion: c,
                model: t.label(),
                sources: srcs.iter().map(|s| s.label()).collect(),
                attack: attack.map(|a| a.describe()),
                // The same object as the only source (labels may repeat, identities do not).
                white_box: attack.is_some()
                    && srcs.len() == 1
                    && std::ptr::addr_eq(srcs[0] as *const dyn Classifier, *t as *const dyn Classifier),
                seed: opts.seed,
            }
        })
        .collect())
}

/// Transfer results `[source][target]`: the attack crafted on each source (reseeded identically for every source),
/// evaluated on every target. A source that is also a target gives its white-box result.
pub fn transfer_results(
    sources: &[&dyn Classifier],
    targets: &[&dyn Classifier],
    data: &Dataset,
    attack: &AttackSpec,
    opts: &EvalOpts,
) -> Result<Vec<Vec<EvalResult>>> {
    if sources.is_empty() || targets.is_empty() {
        bail!("transfer matrix: need at least one source and one target");
    }
    sources.iter().map(|s| evaluate_subset(targets, data, Some(attack), &Sources::From(vec![*s]), opts)).collect()
}

/// Which rate a matrix or sweep table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Accuracy,
    OneOff,
}

impl Metric {
    pub fn of(self, r: &Rates) -> f64 {
        match self {
            Metric::Accuracy => r.accuracy,
            Metric::OneOff => r.one_off,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "classification rate",
            Metric::OneOff => "one-off rate",
        }
    }
}

/// The N×M transfer matrix as a table: rows are sources (where the attack is crafted), columns targets; the
/// diagonal (a source that is also a target) is the white-box rate. A last row gives each target's clean rate.
pub fn transfer_matrix(
    sources: &[&dyn Classifier],
    targets: &[&dyn Classifier],
    data: &Dataset,
    attack: &AttackSpec,
    opts: &EvalOpts,
    metric: Metric,
) -> Result<crate::core::report::Table> {
    use crate::core::report::{Cell, Table};
    let res = transfer_results(sources, targets, data, attack, opts)?;
    let sub = eval_subset(data, opts.limit, opts.seed)?;
    let d = sub.as_ref().unwrap_or(data);
    let clean = evaluate_many(targets, d, None, &Sources::WhiteBox, opts)?;
    let mut cols = vec!["source \\ target".to_string()];
    cols.extend(targets.iter().map(|t| t.label()));
    let mut t = Table {
        title: format!(
            "Transfer matrix ({}): {} crafted on the row model, evaluated on the column model",
            metric.name(),
            attack.name()
        ),
        columns: cols,
        rows: vec![],
        notes: vec![],
    };
    for (s, row) in sources.iter().zip(&res) {
        let mut cells = vec![Cell::text(s.label())];
        cells.extend(row.iter().map(|r| Cell::rate(metric.of(&r.rates()))));
        t.rows.push(cells);
    }
    let mut cells = vec![Cell::text("clean")];
    cells.extend(clean.iter().map(|r| Cell::rate(metric.of(&r.rates()))));
    t.rows.push(cells);
    t.note(format!("attack: {}", attack.describe()));
    t.note(format!("n = {} examples of '{}', seed {}; diagonal = white-box", clean[0].n, data.name, opts.seed));
    Ok(t)
}

/// The attack with ε replaced, keeping α and the step size proportional to ε (α = ε/2 stays ε/2, PGD's 2.5ε/steps
/// stays 2.5ε/steps).
pub fn with_eps(spec: &AttackSpec, eps: f64) -> AttackSpec {
    let mut s = spec.clone();
    if spec.eps > 0.0 {
        let r = eps / spec.eps;
        s.alpha = spec.alpha * r;
        s.step_size = spec.step_size * r;
        s.eps = eps;
        s
    } else {
        s.with_budget(eps, spec.steps)
    }
}

/// Accuracy vs ε: one evaluation per ε (same seed each), in the order given.
pub fn eps_sweep(
    model: &dyn Classifier,
    data: &Dataset,
    eps: &[f64],
    opts: &EvalOpts,
) -> Result<Vec<(f64, EvalResult)>> {
    let spec = opts.attack.as_ref().context("eps_sweep needs an attack")?;
    eps.iter()
        .map(|&e| {
            let o = EvalOpts { attack: Some(with_eps(spec, e)), ..opts.clone() };
            Ok((e, evaluate(model, data, &o)?))
        })
        .collect()
}

/// `16/256` for whole multiples of 1/256, else the decimal.
pub fn fmt_eps(v: f64) -> String {
    let n = v * 256.0;
    if (n - n.round()).abs() < 1e-9 { format!("{}/256", n.round() as i64) } else { format!("{v:.4}") }
}
