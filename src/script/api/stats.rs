//! Script API for core::stats and metrics from raw labels: `compare` (paired t / Wilcoxon over per-(fold, seed)
//! scores), `mcnemar` (two networks on the same examples), `bootstrap_ci`, `mean_ci` and `confusion` (a Confusion
//! value with the paper's rates).
use crate::core::eval::Confusion;
use crate::core::stats::{self, PairedTest};
use crate::script::convert::{Opts, RResult, friendly_type, guard, i64_array, script_err, to_f64};
use crate::script::docs::doc;
use rhai::{Array, Dynamic, Engine, Map};

/// Numbers from a script array (ints, floats; `true`/`false` count as 1/0, so `r.correct` works).
fn numbers(func: &str, what: &str, a: &Array) -> RResult<Vec<f64>> {
    a.iter()
        .enumerate()
        .map(|(i, v)| {
            if let Ok(b) = v.as_bool() {
                return Ok(if b { 1.0 } else { 0.0 });
            }
            match to_f64(v) {
                Some(x) if x.is_finite() => Ok(x),
                Some(x) => Err(script_err(format!("{func}: {what}[{i}] is {x}; every value must be a finite number"))),
                None => Err(script_err(format!(
                    "{func}: {what}[{i}] must be a number, got {}",
                    friendly_type(v.type_name())
                ))),
            }
        })
        .collect()
}

/// Per-example correctness: bools, or the integers 0/1.
fn outcomes(func: &str, what: &str, a: &Array) -> RResult<Vec<bool>> {
    a.iter()
        .enumerate()
        .map(|(i, v)| match (v.as_bool(), v.as_int()) {
            (Ok(b), _) => Ok(b),
            (_, Ok(0)) => Ok(false),
            (_, Ok(1)) => Ok(true),
            _ => Err(script_err(format!(
                "{func}: {what}[{i}] must be true/false (or 1/0), got {} — pass an evaluate result's .correct",
                friendly_type(v.type_name())
            ))),
        })
        .collect()
}

/// Class indices from a script array.
fn classes_of(func: &str, what: &str, a: &Array) -> RResult<Vec<usize>> {
    a.iter()
        .enumerate()
        .map(|(i, v)| match v.as_int() {
            Ok(c) if c >= 0 => Ok(c as usize),
            _ => Err(script_err(format!("{func}: {what}[{i}] must be a class index >= 0, got {v}"))),
        })
        .collect()
}

fn level_opt(o: &Opts) -> RResult<f64> {
    let l = o.f64_or("level", 0.95)?;
    if !(l > 0.0 && l < 1.0) {
        return Err(script_err(format!("{}: option 'level' must be in (0, 1) (e.g. 0.95), got {l}", o.func())));
    }
    Ok(l)
}

fn do_compare(a: Array, b: Array, opts: Map) -> RResult<Map> {
    let o = Opts::new("compare", opts, &["test", "level"])?;
    let test: PairedTest = o
        .choice_or("test", "paired_t", &["paired_t", "wilcoxon"])?
        .parse()
        .map_err(|e| script_err(format!("compare: {e}")))?;
    let level = level_opt(&o)?;
    let (a, b) = (numbers("compare", "a", &a)?, numbers("compare", "b", &b)?);
    guard("compare", || {
        let c = stats::compare(&a, &b, test, level)?;
        let mut m = Map::new();
        m.insert("delta".into(), Dynamic::from_float(c.delta));
        m.insert("ci_low".into(), Dynamic::from_float(c.ci_low));
        m.insert("ci_high".into(), Dynamic::from_float(c.ci_high));
        m.insert("p".into(), Dynamic::from_float(c.p));
        m.insert("n".into(), Dynamic::from_int(c.n as i64));
        m.insert("level".into(), Dynamic::from_float(c.level));
        m.insert("test".into(), Dynamic::from(c.test.name()));
        m.insert("statistic".into(), Dynamic::from_float(c.statistic));
        m.insert("method".into(), Dynamic::from(c.method));
        Ok(m)
    })
}

fn do_mean_ci(values: Array, opts: Map) -> RResult<Map> {
    let o = Opts::new("mean_ci", opts, &["level"])?;
    let level = level_opt(&o)?;
    let v = numbers("mean_ci", "values", &values)?;
    guard("mean_ci", || {
        let c = stats::mean_ci(&v, level)?;
        let mut m = Map::new();
        m.insert("mean".into(), Dynamic::from_float(c.mean));
        m.insert("std".into(), Dynamic::from_float(c.std));
        m.insert("ci_low".into(), Dynamic::from_float(c.ci_low));
        m.insert("ci_high".into(), Dynamic::from_float(c.ci_high));
        m.insert("n".into(), Dynamic::from_int(c.n as i64));
        m.insert("level".into(), Dynamic::from_float(c.level));
        Ok(m)
    })
}

fn do_bootstrap(values: Array, opts: Map) -> RResult<Map> {
    let o = Opts::new("bootstrap_ci", opts, &["level", "resamples", "seed"])?;
    let level = level_opt(&o)?;
    let resamples = o.usize_or("resamples", 2000)?;
    let seed = o.i64_or("seed", 0)?;
    if seed < 0 {
        return Err(script_err(format!("bootstrap_ci: option 'seed' must be >= 0, got {seed}")));
    }
    let v = numbers("bootstrap_ci", "values", &values)?;
    guard("bootstrap_ci", || {
        let c = stats::bootstrap_ci(&v, level, resamples, seed as u64)?;
        let mut m = Map::new();
        m.insert("mean".into(), Dynamic::from_float(c.mean));
        m.insert("ci_low".into(), Dynamic::from_float(c.ci_low));
        m.insert("ci_high".into(), Dynamic::from_float(c.ci_high));
        m.insert("level".into(), Dynamic::from_float(c.level));
        m.insert("resamples".into(), Dynamic::from_int(c.resamples as i64));
        m.insert("seed".into(), Dynamic::from_int(c.seed as i64));
        m.insert("n".into(), Dynamic::from_int(c.n as i64));
        Ok(m)
    })
}

fn do_confusion(labels: Array, predictions: Array, opts: Map) -> RResult<Confusion> {
    let o = Opts::new("confusion", opts, &["classes"])?;
    let y = classes_of("confusion", "labels", &labels)?;
    let p = classes_of("confusion", "predictions", &predictions)?;
    if y.len() != p.len() {
        return Err(script_err(format!(
            "confusion: {} labels but {} predictions; give one prediction per label",
            y.len(),
            p.len()
        )));
    }
    let seen = y.iter().chain(&p).max().map(|m| m + 1).unwrap_or(0);
    let classes = match o.opt_i64("classes")? {
        Some(c) if c < 1 => return Err(script_err(format!("confusion: option 'classes' must be at least 1, got {c}"))),
        Some(c) => c as usize,
        None if seen == 0 => {
            return Err(script_err("confusion: no labels and no 'classes' option: the matrix size is unknown"));
        }
        None => seen,
    };
    guard("confusion", || {
        // A label or prediction of 10^18 asks for a matrix of 10^36 counts: say so instead of trying to allocate it.
        let bytes = (classes as u128).checked_mul(classes as u128).and_then(|n| n.checked_mul(8));
        crate::core::mem::check_bytes(
            "confusion",
            &format!("a {classes}x{classes} matrix (labels and predictions must be class indices)"),
            bytes,
            tch::Device::Cpu,
        )?;
        let mut c = Confusion::new(classes);
        for (&t, &q) in y.iter().zip(&p) {
            c.add(t, q).map_err(|e| anyhow::anyhow!("{e} (set #{{classes: N}} to the number of classes)"))?;
        }
        Ok(c)
    })
}

fn matrix(c: &Confusion) -> Array {
    c.counts.iter().map(|r| Dynamic::from_array(i64_array(&r.iter().map(|&x| x as i64).collect::<Vec<_>>()))).collect()
}

/// The JSON `record` stores for a Confusion: `kind: "confusion"`, the counts and the rates.
pub fn confusion_json(c: &Confusion) -> serde_json::Value {
    serde_json::json!({
        "kind": "confusion",
        "classes": c.classes,
        "counts": c.counts,
        "n": c.total(),
        "accuracy": c.accuracy(),
        "one_off": c.one_off(),
        "per_class": c.per_class(),
    })
}

pub fn register(engine: &mut Engine) {
    let cmp_doc = "Compares two arms on paired scores (one per fold and seed, in the same order): #{delta: mean(a − b), \
ci_low, ci_high (the t interval of the mean difference), p (two-sided), n, test, statistic, method, level}. Options: test \
(\"paired_t\" = scipy ttest_rel, or \"wilcoxon\" = scipy wilcoxon's defaults: zero differences dropped, tied |d| \
average-ranked, exact for n ≤ 50 without zeros or ties, all 2^n sign flips for n ≤ 13 with them, else the normal \
approximation), level (0.95). With 5 pairs the smallest Wilcoxon p is 0.0625.";
    doc("compare", &["a: Array", "b: Array", "opts: Map"], "Map", cmp_doc).register_into_engine(engine, do_compare);
    doc("compare", &["a: Array", "b: Array"], "Map", cmp_doc)
        .register_into_engine(engine, |a: Array, b: Array| do_compare(a, b, Map::new()));

    doc(
        "mcnemar",
        &["correct_a: Array", "correct_b: Array"],
        "Map",
        "McNemar's exact test of two networks on the same examples (per-example correctness in the same order, e.g. \
evaluate(...).correct with the same seed and limit): #{p, only_a (A right, B wrong), only_b, both, neither}. p is the \
two-sided exact binomial p of only_a among only_a + only_b discordant examples (scipy binomtest(only_a, n, 0.5)); 1 when \
there are none.",
    )
    .register_into_engine(engine, |a: Array, b: Array| -> RResult<Map> {
        let (a, b) = (outcomes("mcnemar", "correct_a", &a)?, outcomes("mcnemar", "correct_b", &b)?);
        guard("mcnemar", || {
            let r = stats::mcnemar(&a, &b)?;
            let mut m = Map::new();
            m.insert("p".into(), Dynamic::from_float(r.p));
            m.insert("only_a".into(), Dynamic::from_int(r.only_a as i64));
            m.insert("only_b".into(), Dynamic::from_int(r.only_b as i64));
            m.insert("both".into(), Dynamic::from_int(r.both as i64));
            m.insert("neither".into(), Dynamic::from_int(r.neither as i64));
            Ok(m)
        })
    });

    let boot_doc = "Percentile bootstrap confidence interval of the mean of per-example values (numbers, or bools as \
1/0: r.correct; or differences of two networks): #{mean, ci_low, ci_high, level, resamples, seed, n}. Options: level \
(0.95), resamples (2000), seed (0; the same seed gives the same interval on any machine).";
    doc("bootstrap_ci", &["values: Array", "opts: Map"], "Map", boot_doc).register_into_engine(engine, do_bootstrap);
    doc("bootstrap_ci", &["values: Array"], "Map", boot_doc)
        .register_into_engine(engine, |v: Array| do_bootstrap(v, Map::new()));

    let mci_doc = "Mean ± sample std (n − 1) and the t confidence interval of the mean (scipy t.interval(level, n − 1, \
loc=mean, scale=std/√n)) of at least two numbers (e.g. one score per fold and seed): #{mean, std, ci_low, ci_high, n, \
level}. Option: level (0.95).";
    doc("mean_ci", &["values: Array", "opts: Map"], "Map", mci_doc).register_into_engine(engine, do_mean_ci);
    doc("mean_ci", &["values: Array"], "Map", mci_doc)
        .register_into_engine(engine, |v: Array| do_mean_ci(v, Map::new()));

    let conf_doc = "A confusion matrix from true labels and predictions (class indices, same length): .accuracy, \
.one_off (the paper's Eq. 4: within ±1 class; the edge classes 0 and C−1 have one neighbour), .per_class (accuracy of \
each true class; () for a class without examples), .matrix (rows: true class, columns: predicted), .n, .classes. \
Option: classes (the matrix size; default: the largest index seen + 1 — give it so absent edge classes count).";
    doc("confusion", &["labels: Array", "predictions: Array", "opts: Map"], "Confusion", conf_doc)
        .register_into_engine(engine, do_confusion);
    doc("confusion", &["labels: Array", "predictions: Array"], "Confusion", conf_doc)
        .register_into_engine(engine, |y: Array, p: Array| do_confusion(y, p, Map::new()));
    engine.register_type_with_name::<Confusion>("Confusion");
    engine.register_get("accuracy", |c: &mut Confusion| c.accuracy());
    engine.register_get("one_off", |c: &mut Confusion| c.one_off());
    engine.register_get("per_class", |c: &mut Confusion| -> Array {
        c.per_class().into_iter().map(|p| p.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT)).collect()
    });
    engine.register_get("matrix", |c: &mut Confusion| matrix(c));
    engine.register_get("n", |c: &mut Confusion| c.total() as i64);
    engine.register_get("classes", |c: &mut Confusion| c.classes as i64);
    let show = |c: &mut Confusion| {
        format!(
            "Confusion[{0}×{0}; n = {1}; accuracy {2:.2}%, one-off {3:.2}%]",
            c.classes,
            c.total(),
            c.accuracy() * 100.0,
            c.one_off() * 100.0
        )
    };
    engine.register_fn("to_string", show);
    engine.register_fn("to_debug", show);
}
