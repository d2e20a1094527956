//! A standard robustness evaluation in the style of AutoAttack (Croce & Hein 2020): APGD-CE, then targeted
//! APGD-DLR, then Square, each run only on the examples that are still classified correctly; an example counts as
//! robust only if every attack fails on it (worst case per example).
use super::{EvalResult, check_classes, eval_batches, eval_subset, fmt_eps, predict};
use crate::core::attacks::{AttackKind, AttackSpec, craft};
use crate::core::data::Dataset;
use crate::core::eval::Confusion;
use crate::core::models::Classifier;
use crate::core::report::{Cell, Table};
use crate::core::{cancel, device};
use anyhow::{Context, Result};

/// Settings of the preset. The defaults follow AutoAttack's "standard" version except Square's query budget
/// (AutoAttack: 5000), which is lowered for CPU-sized runs and recorded in the table.
#[derive(Debug, Clone)]
pub struct RobustOpts {
    /// L∞ budget in [0, 1] pixels.
    pub eps: f64,
    pub batch_size: usize,
    pub limit: Option<usize>,
    pub seed: u64,
    /// Iterations of each APGD run.
    pub apgd_steps: usize,
    /// Target classes of APGD-DLR-T (capped at C − 1).
    pub n_target_classes: usize,
    pub square_queries: usize,
    /// Replaces the preset's attacks when not empty (they run in this order, each on the still-robust examples).
    pub attacks: Vec<AttackSpec>,
}

impl Default for RobustOpts {
    fn default() -> Self {
        RobustOpts {
            eps: 16.0 / 256.0,
            batch_size: 64,
            limit: None,
            seed: 0,
            apgd_steps: 100,
            n_target_classes: 9,
            square_queries: 1000,
            attacks: vec![],
        }
    }
}

/// The preset's table and the worst-case result.
pub struct RobustResult {
    /// Rows: clean, then the cumulative robust rates after each attack.
    pub table: Table,
    pub clean: EvalResult,
    /// Worst case over all attacks, per example.
    pub worst: EvalResult,
}

/// The attacks the preset runs for `classes` classes: APGD-CE, APGD-DLR-T (needs three classes for the DLR loss),
/// Square.
pub fn preset_attacks(o: &RobustOpts, classes: i64) -> Vec<AttackSpec> {
    if !o.attacks.is_empty() {
        return o.attacks.clone();
    }
    let mut out = vec![];
    let mut ce = AttackSpec::new(AttackKind::ApgdCe);
    ce.eps = o.eps;
    ce.steps = o.apgd_steps;
    out.push(ce);
    if classes >= 3 {
        let mut dlr = AttackSpec::new(AttackKind::ApgdDlr);
        dlr.eps = o.eps;
        dlr.steps = o.apgd_steps;
        dlr.n_target_classes = o.n_target_classes.min(classes as usize - 1);
        out.push(dlr);
    }
    let mut sq = AttackSpec::new(AttackKind::Square);
    sq.eps = o.eps;
    sq.queries = o.square_queries;
    out.push(sq);
    out
}

/// Runs the preset on `model` (white-box for the gradient attacks; Square only queries the logits).
pub fn robust_eval(model: &dyn Classifier, data: &Dataset, o: &RobustOpts) -> Result<RobustResult> {
    check_classes(model, data)?;
    let attacks = preset_attacks(o, model.num_classes());
    for a in &attacks {
        a.validate()?;
    }
    let sub = eval_subset(data, o.limit, o.seed)?;
    let d = sub.as_ref().unwrap_or(data);
    let classes = d.num_classes() as usize;
    // stage 0 = clean, stage k = after the first k attacks
    let mut stages: Vec<Confusion> = (0..=attacks.len()).map(|_| Confusion::new(classes)).collect();
    device::seed_everything(o.seed);
    let srcs = [model];
    for b in eval_batches(d, o.batch_size, model.device())? {
        cancel::check()?;
        let b = b?;
        // [B, C] -> [B]
        let pred = predict(model, &b.x)?.f_argmax(-1, false)?;
        stages[0].update(&pred, &b.y)?;
        let mut pred = pred;
        for (k, a) in attacks.iter().enumerate() {
            let robust = pred.f_eq_tensor(&b.y)?;
            let idx = robust.f_nonzero()?.f_flatten(0, -1)?;
            if idx.numel() > 0 {
                let xs = b.x.f_index_select(0, &idx)?;
                let ys = b.y.f_index_select(0, &idx)?;
                let xa = craft(a, &srcs, &xs, &ys).with_context(|| format!("robust_eval: {}", a.name()))?;
                let pa = predict(model, &xa)?.f_argmax(-1, false)?;
                // Examples already fooled keep their first wrong prediction; the rest take the new one (which is
                // either still correct or the attack's success).
                pred = pred.f_index_copy(0, &idx, &pa)?;
            }
            stages[k + 1].update(&pred, &b.y)?;
        }
    }
    let res = |c: &Confusion, attack: Option<String>| {
        let r = c.compute();
        EvalResult {
            confusion: c.clone(),
            accuracy: r.accuracy,
            one_off: r.one_off,
            n: r.n,
            model: model.label(),
            sources: if attack.is_some() { vec![model.label()] } else { vec![] },
            white_box: attack.is_some(),
            attack,
            seed: o.seed,
        }
    };
    let mut t = Table::new(
        format!("Robustness of {} (AutoAttack-style, L∞, ε = {})", model.label(), fmt_eps(o.eps)),
        &["Stage", "Attack", "Robust Cr", "Robust one-off"],
    );
    t.push(vec![
        Cell::text("0"),
        Cell::text("clean"),
        Cell::rate(stages[0].accuracy()),
        Cell::rate(stages[0].one_off()),
    ])?;
    for (k, a) in attacks.iter().enumerate() {
        let c = &stages[k + 1];
        let name = if k == 0 { a.kind.title().to_string() } else { format!("+ {}", a.kind.title()) };
        t.push(vec![
            Cell::text((k + 1).to_string()),
            Cell::text(name),
            Cell::rate(c.accuracy()),
            Cell::rate(c.one_off()),
        ])?;
    }
    t.note(format!(
        "norm L∞, ε = {} ({:.6}), seed {}, n = {} of '{}'",
        fmt_eps(o.eps),
        o.eps,
        o.seed,
        stages[0].total(),
        data.name
    ));
    t.note("worst case per example: each attack runs on the examples every earlier attack failed on; robust = no attack succeeded");
    for a in &attacks {
        t.note(format!("attack: {}", a.describe()));
    }
    if model.num_classes() < 3 && o.attacks.is_empty() {
        t.note("APGD-DLR-T left out: the DLR loss needs at least three classes");
    }
    let names: Vec<&str> = attacks.iter().map(|a| a.kind.title()).collect();
    let clean = res(&stages[0], None);
    let worst = res(stages.last().context("no stages")?, Some(format!("worst case of {}", names.join(", "))));
    Ok(RobustResult { table: t, clean, worst })
}
