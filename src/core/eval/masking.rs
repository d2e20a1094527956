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

/// One check of the masking report.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MaskingCheck {
    /// A stable identifier: `clean`, `bad_gradients`, `saturated`, `pgd_vs_fgsm`, `pgd_vs_rfgsm`, `rfgsm_vs_fgsm`,
    /// `square_vs_pgd`, `transfer_vs_pgd`, `eps_monotone`.
    pub key: String,
    /// What the table's Check column shows ("PGD-20 vs FGSM (white-box)").
    pub name: String,
    /// The measured rate (`None`: the attack failed, or the check has no single number).
    pub value: Option<f64>,
    /// The rate it is compared with, if any.
    pub reference: Option<f64>,
    /// Whether the check fails on this model.
    pub flagged: bool,
    /// What a sound model shows.
    pub expected: String,
    /// Why it is flagged (the violated ordering or the attack's error); empty when it is not.
    pub why: String,
    /// "ok", "FLAG", "warn" (reported, not flagged) or "info".
    pub verdict: String,
    /// Text shown instead of `value` (the ε sweep; "attack failed").
    pub value_text: Option<String>,
    pub reference_text: Option<String>,
}

/// The gradient-masking report: typed checks and the overall verdict; [`MaskingReport::table`] renders it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MaskingReport {
    pub model: String,
    pub eps: f64,
    pub seed: u64,
    pub n: u64,
    pub tolerance: f64,
    pub checks: Vec<MaskingCheck>,
    /// Whether any check is flagged.
    pub flagged: bool,
    pub verdict: String,
    /// PGD accuracy at each ε of the monotonicity check (`None`: the attack failed).
    pub eps_sweep: Vec<(f64, Option<f64>)>,
    pub notes: Vec<String>,
}

impl MaskingReport {
    /// The check with this key.
    pub fn check(&self, key: &str) -> Option<&MaskingCheck> {
        self.checks.iter().find(|c| c.key == key)
    }

    /// One row per check (Check, Value, Compared with, Expected of a sound model, Verdict) and a last row with the
    /// overall verdict.
    pub fn table(&self) -> Table {
        let mut t = Table::new(
            format!("Gradient-masking checks for {} (L∞, ε = {})", self.model, fmt_eps(self.eps)),
            &["Check", "Value", "Compared with", "Expected of a sound model", "Verdict"],
        );
        let cell = |v: Option<f64>, text: &Option<String>| match (text, v) {
            (Some(s), _) => Cell::text(s.clone()),
            (None, Some(x)) => Cell::rate(x),
            (None, None) => Cell::Empty,
        };
        for c in &self.checks {
            t.rows.push(vec![
                Cell::text(c.name.clone()),
                cell(c.value, &c.value_text),
                cell(c.reference, &c.reference_text),
                if c.expected.is_empty() { Cell::Empty } else { Cell::text(c.expected.clone()) },
                Cell::text(c.verdict.clone()),
            ]);
        }
        t.rows.push(vec![
            Cell::text("overall"),
            Cell::Empty,
            Cell::Empty,
            Cell::text(self.verdict.clone()),
            Cell::text(if self.flagged { "FLAG" } else { "ok" }),
        ]);
        t.notes = self.notes.clone();
        t
    }
}

impl std::fmt::Display for MaskingReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.table().render())
    }
}

/// A comparison check between two measured rates: `flag(value, reference)` says whether the ordering is violated;
/// a failed attack flags the check.
fn ordered(
    key: &str,
    name: String,
    value: &std::result::Result<f64, String>,
    reference: &std::result::Result<f64, String>,
    expected: String,
    flag: impl Fn(f64, f64) -> bool,
) -> MaskingCheck {
    let (flagged, why) = match (value, reference) {
        (Ok(v), Ok(r)) if flag(*v, *r) => (true, format!("{:.2}% vs {:.2}%: not {expected}", v * 100.0, r * 100.0)),
        (Ok(_), Ok(_)) => (false, String::new()),
        (Err(e), _) | (_, Err(e)) => (true, format!("attack failed: {e}")),
    };
    let text = |r: &std::result::Result<f64, String>| r.as_ref().err().map(|_| "attack failed".to_string());
    MaskingCheck {
        key: key.into(),
        name,
        value: value.as_ref().ok().copied(),
        reference: reference.as_ref().ok().copied(),
        flagged,
        expected,
        why,
        verdict: if flagged { "FLAG" } else { "ok" }.into(),
        value_text: text(value),
        reference_text: text(reference),
    }
}

/// The gradient-masking report of `model`: one check per ordering a sound model satisfies, with the measured rate,
/// the rate it is compared with, the expectation and a verdict, and the overall verdict.
pub fn masking_report(model: &dyn Classifier, data: &Dataset, o: &MaskingOpts) -> Result<MaskingReport> {
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
    let pct = |x: f64| format!("{:.0}%", x * 100.0);

    let mut checks = vec![MaskingCheck {
        key: "clean".into(),
        name: "clean accuracy".into(),
        value: Some(clean),
        reference: None,
        flagged: false,
        expected: String::new(),
        why: String::new(),
        verdict: "info".into(),
        value_text: None,
        reference_text: None,
    }];
    let bad = gh.zero + gh.nonfinite;
    checks.push(MaskingCheck {
        key: "bad_gradients".into(),
        name: "zero or NaN/Inf input gradients (margin loss)".into(),
        value: Some(bad),
        reference: None,
        flagged: bad > o.max_bad_grad,
        expected: format!(
            "≤ {} of examples ({:.1}% zero, {:.1}% NaN/Inf)",
            pct(o.max_bad_grad),
            gh.zero * 100.0,
            gh.nonfinite * 100.0
        ),
        why: if bad > o.max_bad_grad {
            format!("{:.1}% of examples have no usable input gradient", bad * 100.0)
        } else {
            String::new()
        },
        verdict: if bad > o.max_bad_grad { "FLAG" } else { "ok" }.into(),
        value_text: None,
        reference_text: None,
    });
    // Saturated softmax is reported but not flagged on its own: it blinds CE attacks, which the comparisons below
    // catch when it matters (Square or transfer beating white-box).
    let saturated = gh.saturated > o.max_bad_grad;
    checks.push(MaskingCheck {
        key: "saturated".into(),
        name: "zero cross-entropy gradients (saturated softmax)".into(),
        value: Some(gh.saturated),
        reference: None,
        flagged: false,
        expected: format!("≤ {}; above it, CE attacks are blind there (use APGD-DLR)", pct(o.max_bad_grad)),
        why: String::new(),
        verdict: if saturated { "warn" } else { "ok" }.into(),
        value_text: None,
        reference_text: None,
    });
    // Multi-step white-box must be at least as strong as single-step.
    let pgd_name = format!("PGD-{}", pgd.steps);
    for (key, name, single) in [("pgd_vs_fgsm", "FGSM", &a_fgsm), ("pgd_vs_rfgsm", "R+FGSM", &a_rfgsm)] {
        checks.push(ordered(
            key,
            format!("{pgd_name} vs {name} (white-box)"),
            &a_pgd,
            single,
            format!("{pgd_name} ≤ {name} + {}", pct(tol)),
            |p, s| p > s + tol,
        ));
    }
    // A random step before the gradient step only helps when the local gradient misleads (Tramèr et al.).
    checks.push(ordered(
        "rfgsm_vs_fgsm",
        "R+FGSM vs FGSM".into(),
        &a_rfgsm,
        &a_fgsm,
        format!("R+FGSM ≥ FGSM − {}", pct(tol)),
        |r, f| r < f - tol,
    ));
    // Black-box attacks see less than white-box ones; if they do better, the white-box gradients are bad.
    checks.push(ordered(
        "square_vs_pgd",
        format!("Square-{} (black-box) vs {pgd_name}", square.queries),
        &a_square,
        &a_pgd,
        format!("Square ≥ {pgd_name} − {}", pct(tol)),
        |s, p| s < p - tol,
    ));
    if let Some(src) = o.source {
        let a_tr = attempt(evaluate(
            model,
            d,
            &EvalOpts { attack: Some(pgd.clone()), sources: Sources::From(vec![src]), ..base.clone() },
        ))?;
        checks.push(ordered(
            "transfer_vs_pgd",
            format!("transfer {pgd_name} from {} vs white-box", src.label()),
            &a_tr,
            &a_pgd,
            format!("transfer ≥ white-box − {}", pct(tol)),
            |s, p| s < p - tol,
        ));
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
    let rising: Vec<String> = sweep
        .windows(2)
        .filter(|w| !matches!((&w[0].1, &w[1].1), (Ok(a), Ok(b)) if *b <= a + tol))
        .map(|w| format!("{} → {}", fmt_eps(w[0].0), fmt_eps(w[1].0)))
        .collect();
    let failed = sweep.iter().any(|s| s.1.is_err());
    let flag = !rising.is_empty() || failed;
    checks.push(MaskingCheck {
        key: "eps_monotone".into(),
        name: format!("{pgd_name} accuracy vs ε"),
        value: None,
        reference: None,
        flagged: flag,
        expected: format!("non-increasing in ε (± {})", pct(tol)),
        why: if failed {
            "an attack of the sweep failed".into()
        } else if flag {
            format!("accuracy grows with ε at {}", rising.join(", "))
        } else {
            String::new()
        },
        verdict: if flag { "FLAG" } else { "ok" }.into(),
        value_text: Some(text.join(", ")),
        reference_text: None,
    });
    let flagged: Vec<&str> = checks.iter().filter(|c| c.flagged).map(|c| c.name.as_str()).collect();
    let verdict = if flagged.is_empty() {
        "no sign of gradient masking".to_string()
    } else {
        format!("possible gradient masking: {}", flagged.join("; "))
    };
    let verdict = if saturated { format!("{verdict} (warning: saturated softmax)") } else { verdict };
    let mut notes =
        vec![format!("n = {} of '{}', seed {}, tolerance {:.0} points", gh.n, data.name, o.seed, tol * 100.0)];
    for a in [&fgsm, &rfgsm, &pgd, &square] {
        notes.push(format!("attack: {}", a.describe()));
    }
    for (name, r) in [("FGSM", &a_fgsm), ("R+FGSM", &a_rfgsm), (pgd_name.as_str(), &a_pgd), ("Square", &a_square)] {
        if let Err(e) = r {
            notes.push(format!("{name} failed: {e}"));
        }
    }
    Ok(MaskingReport {
        model: model.label(),
        eps: o.eps,
        seed: o.seed,
        n: gh.n,
        tolerance: tol,
        flagged: !flagged.is_empty(),
        checks,
        verdict,
        eps_sweep: sweep.iter().map(|(e, a)| (*e, a.as_ref().ok().copied())).collect(),
        notes,
    })
}
