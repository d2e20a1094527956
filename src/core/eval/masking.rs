//! Gradient-masking checks (Athalye et al. 2018, Carlini et al. 2019, Tramèr et al. 2018): a defended model can look
//! robust to gradient attacks only because its gradients are useless. Each check compares attacks that should be
//! ordered on a sound model; a violation beyond `tolerance` is flagged.
use super::{EvalOpts, EvalResult, Sources, eval_batches, eval_subset, evaluate, fmt_eps, with_eps};
use crate::core::attacks::{AttackKind, AttackSpec};
use crate::core::cancel;
use crate::core::data::Dataset;
use crate::core::models::Classifier;
use crate::core::report::{Cell, Table};
use anyhow::{Context, Result};
use tch::{Kind, Tensor};

/// Settings of the masking report.
#[derive(Clone)]
pub struct MaskingOpts<'a> {
    /// L∞ budget of the attacks (16/256 as in the paper).
    pub eps: f64,
    pub batch_size: usize,
    pub limit: Option<usize>,
    pub seed: u64,
    pub pgd_steps: usize,
    pub square_queries: usize,
    /// ε multipliers for the monotonicity check (PGD at ε·f for each f).
    pub eps_factors: Vec<f64>,
    /// An independent model to run a transfer attack from (PGD crafted on it).
    pub source: Option<&'a dyn Classifier>,
    /// How far (in rate, 0.02 = 2 points) an ordering may be violated before it is flagged.
    pub tolerance: f64,
    /// Largest tolerated fraction of examples whose input gradient is all zero or not finite.
    pub max_bad_grad: f64,
}

impl Default for MaskingOpts<'_> {
    fn default() -> Self {
        MaskingOpts {
            eps: 16.0 / 256.0,
            batch_size: 64,
            limit: None,
            seed: 0,
            pgd_steps: 20,
            square_queries: 1000,
            eps_factors: vec![0.25, 0.5, 1.0, 2.0],
            source: None,
            tolerance: 0.02,
            max_bad_grad: 0.05,
        }
    }
}

/// How many examples have unusable input gradients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradHealth {
    /// Fraction whose margin-loss gradient (true logit minus the best other logit) is exactly zero everywhere:
    /// the logits do not respond to the input at all (a detached input, quantisation, a lookup).
    pub zero: f64,
    /// Fraction with a NaN/Inf entry in either gradient.
    pub nonfinite: f64,
    /// Fraction whose cross-entropy gradient is exactly zero while the margin gradient is not (saturated softmax):
    /// CE-based attacks (FGSM, PGD) see nothing there, while margin/DLR losses still work.
    pub saturated: f64,
    pub n: u64,
}

/// Per-example flags `[B]`: all entries exactly zero (and finite), any entry non-finite.
fn grad_flags(g: &Tensor) -> Result<(Tensor, Tensor)> {
    // [B, 3, H, W] -> [B, 3*H*W]
    let flat = g.f_flatten(1, -1)?;
    let nonfinite = flat.f_isfinite()?.f_logical_not()?.f_any_dim(1, false)?;
    let zero = flat.f_abs()?.f_amax([1i64].as_slice(), false)?.f_eq(0.0)?.f_logical_and(&nonfinite.f_logical_not()?)?;
    Ok((zero, nonfinite))
}

fn count(mask: &Tensor) -> Result<i64> {
    Ok(mask.f_sum(Kind::Int64)?.f_int64_value(&[])?)
}

/// Measures input gradients of `model` on `data` (see [`GradHealth`]). A model whose logits do not depend on the
/// input at all counts as all zero.
pub fn gradient_health(model: &dyn Classifier, data: &Dataset, batch_size: usize) -> Result<GradHealth> {
    let (mut zero, mut bad, mut saturated, mut n) = (0i64, 0i64, 0i64, 0u64);
    for b in eval_batches(data, batch_size, model.device())? {
        cancel::check()?;
        let b = b?;
        let bs = b.x.size()[0];
        n += bs as u64;
        let grads = tch::with_grad(|| -> Result<Option<(Tensor, Tensor)>> {
            let x = b.x.f_detach()?.set_requires_grad(true);
            let logits = model.logits_t(&x, false)?.f_to_kind(Kind::Float)?;
            if !logits.requires_grad() {
                return Ok(None);
            }
            // [B, C]: the true logit against the best other one.
            let y1 = b.y.f_unsqueeze(1)?;
            let true_logit = logits.f_gather(1, &y1, false)?.f_squeeze_dim(1)?;
            let others = logits.f_scatter_value(1, &y1, f64::NEG_INFINITY)?;
            let margin = true_logit.f_sub(&others.f_amax([1i64].as_slice(), false)?)?.f_sum(Kind::Float)?;
            let ce =
                logits.f_log_softmax(-1, Kind::Float)?.f_nll_loss::<Tensor>(&b.y, None, tch::Reduction::Sum, -100)?;
            let gm = Tensor::f_run_backward(&[&margin], &[&x], true, false).context("margin input gradient")?;
            let gc = Tensor::f_run_backward(&[&ce], &[&x], false, false).context("cross-entropy input gradient")?;
            match (gm.into_iter().next(), gc.into_iter().next()) {
                (Some(m), Some(c)) if m.defined() && c.defined() => Ok(Some((m, c))),
                _ => Ok(None),
            }
        })?;
        match grads {
            Some((gm, gc)) => {
                let (mz, mbad) = grad_flags(&gm)?;
                let (cz, cbad) = grad_flags(&gc)?;
                zero += count(&mz)?;
                bad += count(&mbad.f_logical_or(&cbad)?)?;
                saturated += count(&cz.f_logical_and(&mz.f_logical_not()?)?)?;
            }
            None => zero += bs,
        }
    }
    let f = |k: i64| k as f64 / n as f64;
    Ok(GradHealth { zero: f(zero), nonfinite: f(bad), saturated: f(saturated), n })
}

/// A rate from an evaluation, or why the attack could not run (a model without input gradients makes gradient
/// attacks fail: that is itself a masking symptom). Cancellation is passed on.
fn attempt(r: Result<EvalResult>) -> Result<std::result::Result<f64, String>> {
    match r {
        Ok(r) => Ok(Ok(r.accuracy)),
        Err(e) if crate::core::cancel::is_cancel_error(&e) => Err(e),
        Err(e) => Ok(Err(format!("{e:#}").lines().next().unwrap_or("failed").to_string())),
    }
}

fn value_cell(v: &std::result::Result<f64, String>) -> Cell {
    match v {
        Ok(x) => Cell::rate(*x),
        Err(_) => Cell::text("attack failed"),
    }
}

/// The gradient-masking report of `model`: one row per check with the measured rate, the rate it is compared with,
/// the expectation for a sound model and a verdict ("ok" or "FLAG"), and a last row with the overall verdict.
pub fn masking_report(model: &dyn Classifier, data: &Dataset, o: &MaskingOpts) -> Result<Table> {
    let sub = eval_subset(data, o.limit, o.seed)?;
    let d = sub.as_ref().unwrap_or(data);
    let base = EvalOpts { batch_size: o.batch_size, seed: o.seed, ..EvalOpts::default() };
    let run = |spec: AttackSpec| attempt(evaluate(model, d, &EvalOpts { attack: Some(spec), ..base.clone() }));
    let mut fgsm = AttackSpec::new(AttackKind::Fgsm);
    fgsm.eps = o.eps;
    let mut rfgsm = AttackSpec::new(AttackKind::RFgsm);
    rfgsm.eps = o.eps;
    rfgsm.alpha = o.eps / 2.0;
    let pgd = AttackSpec::new(AttackKind::Pgd).with_budget(o.eps, o.pgd_steps.max(1));
    let mut square = AttackSpec::new(AttackKind::Square);
    square.eps = o.eps;
    square.queries = o.square_queries.max(1);

    let clean = evaluate(model, d, &base)?.accuracy;
    let gh = gradient_health(model, d, o.batch_size)?;
    let a_fgsm = run(fgsm.clone())?;
    let a_rfgsm = run(rfgsm.clone())?;
    let a_pgd = run(pgd.clone())?;
    let a_square = run(square.clone())?;
    let tol = o.tolerance;

    let mut t = Table::new(
        format!("Gradient-masking checks for {} (L∞, ε = {})", model.label(), fmt_eps(o.eps)),
        &["Check", "Value", "Compared with", "Expected of a sound model", "Verdict"],
    );
    let mut flagged: Vec<String> = vec![];
    let mut row = |t: &mut Table, check: &str, v: Cell, r: Cell, expect: String, flag: bool| -> Result<()> {
        if flag {
            flagged.push(check.to_string());
        }
        t.push(vec![Cell::text(check), v, r, Cell::text(expect), Cell::text(if flag { "FLAG" } else { "ok" })])
    };
    t.push(vec![Cell::text("clean accuracy"), Cell::rate(clean), Cell::Empty, Cell::Empty, Cell::text("info")])?;
    row(
        &mut t,
        "zero or NaN/Inf input gradients (margin loss)",
        Cell::rate(gh.zero + gh.nonfinite),
        Cell::Empty,
        format!(
            "≤ {:.0}% of examples ({:.1}% zero, {:.1}% NaN/Inf)",
            o.max_bad_grad * 100.0,
            gh.zero * 100.0,
            gh.nonfinite * 100.0
        ),
        gh.zero + gh.nonfinite > o.max_bad_grad,
    )?;
    // Saturated softmax is reported but not flagged on its own: it blinds CE attacks, which the comparisons below
    // catch when it matters (Square or transfer beating white-box).
    let saturated = gh.saturated > o.max_bad_grad;
    t.push(vec![
        Cell::text("zero cross-entropy gradients (saturated softmax)"),
        Cell::rate(gh.saturated),
        Cell::Empty,
        Cell::text(format!("≤ {:.0}%; above it, CE attacks are blind there (use APGD-DLR)", o.max_bad_grad * 100.0)),
        Cell::text(if saturated { "warn" } else { "ok" }),
    ])?;
    // Multi-step white-box must be at least as strong as single-step.
    let pgd_name = format!("PGD-{}", pgd.steps);
    for (name, single) in [("FGSM", &a_fgsm), ("R+FGSM", &a_rfgsm)] {
        let flag = match (&a_pgd, single) {
            (Ok(p), Ok(s)) => *p > s + tol,
            _ => true,
        };
        row(
            &mut t,
            &format!("{pgd_name} vs {name} (white-box)"),
            value_cell(&a_pgd),
            value_cell(single),
            format!("{pgd_name} ≤ {name} + {:.0}%", tol * 100.0),
            flag,
        )?;
    }
    // A random step before the gradient step only helps when the local gradient misleads (Tramèr et al.).
    let flag = match (&a_rfgsm, &a_fgsm) {
        (Ok(r), Ok(f)) => *r < f - tol,
        _ => true,
    };
    row(
        &mut t,
        "R+FGSM vs FGSM",
        value_cell(&a_rfgsm),
        value_cell(&a_fgsm),
        format!("R+FGSM ≥ FGSM − {:.0}%", tol * 100.0),
        flag,
    )?;
    // Black-box attacks see less than white-box ones; if they do better, the white-box gradients are bad.
    let flag = match (&a_square, &a_pgd) {
        (Ok(s), Ok(p)) => *s < p - tol,
        _ => true,
    };
    row(
        &mut t,
        &format!("Square-{} (black-box) vs {pgd_name}", square.queries),
        value_cell(&a_square),
        value_cell(&a_pgd),
        format!("Square ≥ {pgd_name} − {:.0}%", tol * 100.0),
        flag,
    )?;
    if let Some(src) = o.source {
        let a_tr = attempt(evaluate(
            model,
            d,
            &EvalOpts { attack: Some(pgd.clone()), sources: Sources::From(vec![src]), ..base.clone() },
        ))?;
        let flag = match (&a_tr, &a_pgd) {
            (Ok(s), Ok(p)) => *s < p - tol,
            _ => true,
        };
        row(
            &mut t,
            &format!("transfer {pgd_name} from {} vs white-box", src.label()),
            value_cell(&a_tr),
            value_cell(&a_pgd),
            format!("transfer ≥ white-box − {:.0}%", tol * 100.0),
            flag,
        )?;
    }
    // Accuracy must not grow with the budget.
    let mut sweep = vec![];
    for f in &o.eps_factors {
        let e = (o.eps * f).min(1.0);
        sweep.push((e, run(with_eps(&pgd, e))?));
    }
    sweep.sort_by(|a, b| a.0.total_cmp(&b.0));
    let text: Vec<String> = sweep
        .iter()
        .map(|(e, a)| match a {
            Ok(a) => format!("{}: {:.2}%", fmt_eps(*e), a * 100.0),
            Err(_) => format!("{}: failed", fmt_eps(*e)),
        })
        .collect();
    let monotone = sweep.windows(2).all(|w| matches!((&w[0].1, &w[1].1), (Ok(a), Ok(b)) if *b <= a + tol));
    row(
        &mut t,
        &format!("{pgd_name} accuracy vs ε"),
        Cell::text(text.join(", ")),
        Cell::Empty,
        format!("non-increasing in ε (± {:.0}%)", tol * 100.0),
        !monotone || sweep.iter().any(|s| s.1.is_err()),
    )?;
    let verdict = if flagged.is_empty() {
        "no sign of gradient masking".to_string()
    } else {
        format!("possible gradient masking: {}", flagged.join("; "))
    };
    let verdict = if saturated { format!("{verdict} (warning: saturated softmax)") } else { verdict };
    let overall = if flagged.is_empty() { "ok" } else { "FLAG" };
    t.push(vec![Cell::text("overall"), Cell::Empty, Cell::Empty, Cell::text(verdict), Cell::text(overall)])?;
    t.note(format!("n = {} of '{}', seed {}, tolerance {:.0} points", gh.n, data.name, o.seed, tol * 100.0));
    for a in [&fgsm, &rfgsm, &pgd, &square] {
        t.note(format!("attack: {}", a.describe()));
    }
    for (name, r) in [("FGSM", &a_fgsm), ("R+FGSM", &a_rfgsm), (pgd_name.as_str(), &a_pgd), ("Square", &a_square)] {
        if let Err(e) = r {
            t.note(format!("{name} failed: {e}"));
        }
    }
    Ok(t)
}

/// Whether a masking report's overall verdict is a flag.
pub fn is_flagged(report: &Table) -> bool {
    report.rows.last().and_then(|r| r.last()).is_some_and(|c| *c == Cell::text("FLAG"))
}
