//! A standard robustness evaluation in the style of AutoAttack (Croce & Hein 2020): APGD-CE, then targeted
//! APGD-DLR, then Square, each run only on the examples that are still classified correctly; an example counts as
//! robust only if every attack fails on it (worst case per example).
use super::{EvalResult, check_classes, eval_batches, eval_subset, fmt_eps, predict};
use crate::core::attacks::{AttackKind, AttackSpec, craft};
use crate::core::cancel;
use crate::core::data::Dataset;
use crate::core::eval::Confusion;
use crate::core::models::Classifier;
use crate::core::report::{Cell, Table};
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

/// One stage of the preset: the rates after this attack and every earlier one (stage 0: clean).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RobustStage {
    /// "clean", then each attack's title.
    pub attack: String,
    /// The attack's full setting (`None` for clean).
    pub setting: Option<String>,
    /// Cumulative robust rates: examples no attack up to this one fooled.
    pub accuracy: f64,
    pub one_off: f64,
}

/// The preset's result: the cumulative stages, the clean and worst-case evaluations (with per-example outcomes) and
/// the settings; [`RobustResult::table`] renders it.
#[derive(Clone)]
pub struct RobustResult {
    pub model: String,
    pub eps: f64,
    pub seed: u64,
    pub stages: Vec<RobustStage>,
    pub clean: EvalResult,
    /// Worst case over all attacks, per example.
    pub worst: EvalResult,
    /// Settings and remarks shown under the table.
    pub notes: Vec<String>,
}

impl RobustResult {
    /// Rows: clean, then the cumulative robust rates after each attack; the settings as notes.
    pub fn table(&self) -> Table {
        let mut t = Table::new(
            format!("Robustness of {} (AutoAttack-style, L∞, ε = {})", self.model, fmt_eps(self.eps)),
            &["Stage", "Attack", "Robust Cr", "Robust one-off"],
        );
        for (k, s) in self.stages.iter().enumerate() {
            let name = if k <= 1 { s.attack.clone() } else { format!("+ {}", s.attack) };
            t.rows.push(vec![
                Cell::text(k.to_string()),
                Cell::text(name),
                Cell::rate(s.accuracy),
                Cell::rate(s.one_off),
            ]);
        }
        t.notes = self.notes.clone();
        t
    }
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
    let (mut labels, mut clean_pred, mut worst_pred) = (vec![], vec![], vec![]);
    let to_vec = |t: &tch::Tensor| -> Result<Vec<i64>> {
        Ok(Vec::<i64>::try_from(&t.f_to_kind(tch::Kind::Int64)?.f_to_device(tch::Device::Cpu)?)?)
    };
    // Random starts and restarts draw from a stream of the evaluation's own seed; the caller's stream is untouched.
    let _stream = crate::core::random::scope(o.seed)?;
    let srcs = [model];
    for b in eval_batches(d, o.batch_size, model.device())? {
        cancel::check()?;
        let b = b?;
        // [B, C] -> [B]
        let pred = predict(model, &b.x)?.f_argmax(-1, false)?;
        stages[0].update(&pred, &b.y)?;
        labels.extend(to_vec(&b.y)?);
        clean_pred.extend(to_vec(&pred)?);
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
        worst_pred.extend(to_vec(&pred)?);
    }
    let index: Vec<i64> = match super::subset_indices(data.len(), o.limit, o.seed) {
        Some(idx) => idx,
        None => (0..labels.len() as i64).collect(),
    };
    let res = |c: &Confusion, attack: Option<String>, predictions: Vec<i64>| {
        let r = c.compute();
        EvalResult {
            attack_name: attack.as_ref().map(|_| "robust_eval".to_string()),
            index: index.clone(),
            labels: labels.clone(),
            predictions,
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
    let mut rstages = vec![RobustStage {
        attack: "clean".into(),
        setting: None,
        accuracy: stages[0].accuracy(),
        one_off: stages[0].one_off(),
    }];
    for (a, c) in attacks.iter().zip(&stages[1..]) {
        rstages.push(RobustStage {
            attack: a.kind.title().to_string(),
            setting: Some(a.describe()),
            accuracy: c.accuracy(),
            one_off: c.one_off(),
        });
    }
    let mut notes = vec![format!(
        "norm L∞, ε = {} ({:.6}), seed {}, n = {} of '{}'",
        fmt_eps(o.eps),
        o.eps,
        o.seed,
        stages[0].total(),
        data.name
    )];
    notes.push("worst case per example: each attack runs on the examples every earlier attack failed on; robust = no attack succeeded".into());
    for a in &attacks {
        notes.push(format!("attack: {}", a.describe()));
    }
    if model.num_classes() < 3 && o.attacks.is_empty() {
        notes.push("APGD-DLR-T left out: the DLR loss needs at least three classes".into());
    }
    let names: Vec<&str> = attacks.iter().map(|a| a.kind.title()).collect();
    let clean = res(&stages[0], None, clean_pred);
    let worst =
        res(stages.last().context("no stages")?, Some(format!("worst case of {}", names.join(", "))), worst_pred);
    Ok(RobustResult { model: model.label(), eps: o.eps, seed: o.seed, stages: rstages, clean, worst, notes })
}
