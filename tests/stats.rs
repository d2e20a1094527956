//! The statistics against scipy.stats on fixed vectors (to 1e-6): t intervals (`t.interval`), the paired t-test
//! (`ttest_rel`), the Wilcoxon signed-rank test (`wilcoxon`: exact, with ties or zeros by sign flips, normal
//! approximation), McNemar's exact test (`binomtest`) and the paired ratio of throughputs (`t.interval` and `ttest_rel`
//! on logs). The references come from the project venv's python; a venv without scipy skips these tests loudly, and
//! fails them under CI=true (tools/bootstrap.sh installs scipy).
use satm::core::stats::{PairedTest, bootstrap_ci, compare, mcnemar, mean_ci, ratio_ci};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

mod common;

fn python() -> PathBuf {
    satm::cli::bench::venv_python()
}

/// Runs the reference script on `input`; `None` (after saying why) when python or scipy is missing outside CI.
fn scipy(input: &Value) -> Option<Value> {
    const SCRIPT: &str = r#"
import json, sys
import numpy as np
from scipy import stats
inp = json.load(sys.stdin)
out = {"mean_ci": [], "ttest": [], "wilcoxon": [], "binom": [], "ratio": []}
for v, level in inp["mean_ci"]:
    v = np.asarray(v, dtype=float)
    lo, hi = stats.t.interval(level, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    out["mean_ci"].append([float(v.mean()), float(v.std(ddof=1)), float(lo), float(hi)])
for a, b in inp["ttest"]:
    r = stats.ttest_rel(a, b)
    d = np.asarray(a) - np.asarray(b)
    lo, hi = r.confidence_interval(0.95)
    out["ttest"].append([float(d.mean()), float(lo), float(hi), float(r.pvalue), float(r.statistic)])
for a, b in inp["wilcoxon"]:
    r = stats.wilcoxon(a, b)
    out["wilcoxon"].append([float(r.pvalue), float(r.statistic)])
for k, n in inp["binom"]:
    out["binom"].append(float(stats.binomtest(k, n, 0.5).pvalue))
for a, b in inp["ratio"]:
    la, lb = np.log(a), np.log(b)
    d = la - lb
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    out["ratio"].append([float(np.exp(d.mean())), float(np.exp(lo)), float(np.exp(hi)), float(stats.ttest_rel(la, lb).pvalue)])
json.dump(out, sys.stdout)
"#;
    let py = python();
    let missing = |why: String| -> Option<Value> {
        common::skip_unless_ci(
            "the scipy reference (tools/bootstrap.sh installs scipy)",
            &format!("the scipy cross-check did not run: {why} (run tools/bootstrap.sh)"),
        );
        None
    };
    if !py.is_file() {
        return missing(format!("no python at {}", py.display()));
    }
    let probe = Command::new(&py).args(["-c", "import scipy.stats"]).output().expect("running python");
    if !probe.status.success() {
        return missing(format!("{} cannot import scipy.stats", py.display()));
    }
    let mut child = Command::new(&py)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running python");
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "scipy reference failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).expect("reference JSON"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn near(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= 1e-6, "{what}: satm {got} vs scipy {want}");
}

/// A deterministic spread of numbers in [0, 1) (a linear congruential sequence), rounded to `digits` decimals.
fn spread(n: usize, seed: u64, digits: i32) -> Vec<f64> {
    let mut x = seed;
    let k = 10f64.powi(digits);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 11) as f64 / (1u64 << 53) as f64 * k).round() / k
        })
        .collect()
}

#[test]
fn statistics_match_scipy() {
    // Per-(fold, seed) accuracies of two arms: 5 folds, 5 folds × 3 seeds.
    let a5 = vec![0.4233, 0.4012, 0.4467, 0.3901, 0.4389];
    let b5 = vec![0.4102, 0.4055, 0.4198, 0.3756, 0.4121];
    let a15 = spread(15, 1, 4);
    let b15: Vec<f64> = a15.iter().zip(spread(15, 2, 4)).map(|(a, e)| a - 0.05 + 0.1 * e).collect();
    let mean_cases = vec![(a5.clone(), 0.95), (a5.clone(), 0.90), (vec![0.3, 0.5], 0.95), (a15.clone(), 0.99)];
    let t_cases = vec![(a5.clone(), b5.clone()), (a15.clone(), b15.clone()), (b5.clone(), a5.clone())];
    // Wilcoxon: exact (no ties, no zeros; n = 5, 15, 30), ties (dyadic values: exact equality) and zeros with n ≤ 13
    // (sign flips), ties and zeros with n > 13 and any n > 50 (normal approximation).
    let ties_a = vec![0.5, 0.75, 0.25, 1.0, 0.5, 0.125, 0.875, 0.625];
    let ties_b = vec![0.25, 0.5, 0.5, 0.5, 0.75, 0.25, 0.375, 0.375];
    let zeros_a = vec![0.5, 0.75, 0.25, 1.0, 0.5, 0.125, 0.875, 0.625, 0.3, 0.4];
    let zeros_b = vec![0.5, 0.5, 0.5, 0.5, 0.5, 0.125, 0.375, 0.375, 0.1, 0.45];
    let big_a = spread(60, 3, 6);
    let big_b = spread(60, 4, 6);
    let tz_a: Vec<f64> = (0..20).map(|i| (i % 7) as f64 * 0.125).collect();
    let tz_b: Vec<f64> = (0..20).map(|i| (i % 5) as f64 * 0.125).collect();
    let a30 = spread(30, 5, 6);
    let b30 = spread(30, 6, 6);
    let w_cases = vec![
        (a5.clone(), b5.clone()),
        (a15.clone(), b15.clone()),
        (a30, b30),
        (ties_a, ties_b),
        (zeros_a, zeros_b),
        (tz_a, tz_b),
        (big_a, big_b),
    ];
    let binom = vec![(3u64, 4u64), (10, 12), (0, 7), (5, 10), (40, 65), (1, 1), (123, 260)];
    // Throughputs (img/s) of two programs over alternating rounds: satm bench's paired ratio.
    let ratio_cases = vec![
        (vec![100.0, 110.0, 121.0, 95.0], vec![100.0, 100.0, 100.0, 90.0]),
        (vec![206.9, 137.6, 150.2], vec![123.0, 153.2, 140.9]),
        (vec![12.4, 12.1], vec![12.0, 12.6]),
    ];
    let input =
        json!({"mean_ci": mean_cases, "ttest": t_cases, "wilcoxon": w_cases, "binom": binom, "ratio": ratio_cases});
    let Some(r) = scipy(&input) else { return };

    for (i, (v, level)) in mean_cases.iter().enumerate() {
        let c = mean_ci(v, *level).unwrap();
        let want = &r["mean_ci"][i];
        near(&format!("mean_ci[{i}] mean"), c.mean, f(&want[0]));
        near(&format!("mean_ci[{i}] std"), c.std, f(&want[1]));
        near(&format!("mean_ci[{i}] low"), c.ci_low, f(&want[2]));
        near(&format!("mean_ci[{i}] high"), c.ci_high, f(&want[3]));
        assert_eq!(c.n, v.len());
    }
    for (i, (a, b)) in t_cases.iter().enumerate() {
        let c = compare(a, b, PairedTest::PairedT, 0.95).unwrap();
        let want = &r["ttest"][i];
        near(&format!("ttest[{i}] delta"), c.delta, f(&want[0]));
        near(&format!("ttest[{i}] ci_low"), c.ci_low, f(&want[1]));
        near(&format!("ttest[{i}] ci_high"), c.ci_high, f(&want[2]));
        near(&format!("ttest[{i}] p"), c.p, f(&want[3]));
        near(&format!("ttest[{i}] t"), c.statistic, f(&want[4]));
        assert_eq!(c.n, a.len());
    }
    let methods: Vec<String> = w_cases
        .iter()
        .enumerate()
        .map(|(i, (a, b))| {
            let c = compare(a, b, PairedTest::Wilcoxon, 0.95).unwrap();
            let want = &r["wilcoxon"][i];
            near(&format!("wilcoxon[{i}] p ({})", c.method), c.p, f(&want[0]));
            near(&format!("wilcoxon[{i}] statistic"), c.statistic, f(&want[1]));
            c.method
        })
        .collect();
    // Every branch was exercised.
    assert_eq!(methods, ["exact", "exact", "exact", "permutation", "permutation", "normal", "normal"]);
    for (i, (k, n)) in binom.iter().enumerate() {
        let a: Vec<bool> = (0..*n).map(|j| j < *k).collect();
        let b: Vec<bool> = (0..*n).map(|j| j >= *k).collect();
        let m = mcnemar(&a, &b).unwrap();
        assert_eq!((m.only_a, m.only_b), (*k, n - k));
        near(&format!("binomtest({k}, {n})"), m.p, f(&r["binom"][i]));
    }
    for (i, (a, b)) in ratio_cases.iter().enumerate() {
        let c = ratio_ci(a, b, 0.95).unwrap();
        let want = &r["ratio"][i];
        near(&format!("ratio[{i}] ratio"), c.ratio, f(&want[0]));
        near(&format!("ratio[{i}] ci_low"), c.ci_low, f(&want[1]));
        near(&format!("ratio[{i}] ci_high"), c.ci_high, f(&want[2]));
        near(&format!("ratio[{i}] p"), c.p, f(&want[3]));
        assert_eq!(c.n, a.len());
    }
    assert!(ratio_ci(&[1.0, 0.0], &[1.0, 1.0], 0.95).unwrap_err().to_string().contains("a[1] is 0"));
    assert!(ratio_ci(&[1.0], &[1.0], 0.95).is_err(), "one pair has no interval");
}

#[test]
fn bootstrap_interval_covers_the_mean_and_narrows_with_n() {
    // Independent of scipy: a percentile interval must contain the sample mean, and quadrupling the data (same
    // proportion) about halves its width.
    let small: Vec<f64> = (0..200).map(|i| (i % 5 == 0) as u8 as f64).collect();
    let large: Vec<f64> = (0..800).map(|i| (i % 5 == 0) as u8 as f64).collect();
    let s = bootstrap_ci(&small, 0.95, 3000, 9).unwrap();
    let l = bootstrap_ci(&large, 0.95, 3000, 9).unwrap();
    assert!(s.ci_low < 0.2 && 0.2 < s.ci_high, "{s:?}");
    let ratio = (s.ci_high - s.ci_low) / (l.ci_high - l.ci_low);
    assert!((1.7..2.3).contains(&ratio), "width ratio {ratio}");
}

fn run_script(src: &str) -> Result<rhai::Dynamic, String> {
    let engine = satm::script::new_engine();
    let mut scope = rhai::Scope::new();
    satm::script::run_source(&engine, src, "<test>", &mut scope)
}

#[test]
fn confusion_from_labels_on_a_hand_made_matrix_with_edge_classes() {
    // 5 classes; class 4 never occurs (only `classes` makes it exist). Pairs (truth → prediction):
    //   0→0, 0→1 (one off), 0→2 (two off), 1→0, 1→1, 2→3, 3→4 (edge neighbour), 3→3, 3→0 (far).
    let src = r#"
        let c = confusion([0, 0, 0, 1, 1, 2, 3, 3, 3], [0, 1, 2, 0, 1, 3, 4, 3, 0], #{classes: 5});
        #{acc: c.accuracy, one_off: c.one_off, per_class: c.per_class, matrix: c.matrix, n: c.n, classes: c.classes,
          text: `${c}`, auto: confusion([0, 1], [1, 1]).classes}
    "#;
    let out = run_script(src).unwrap().cast::<rhai::Map>();
    let f = |k: &str| out[k].as_float().unwrap();
    // Hits on the diagonal: 0→0, 1→1, 3→3 = 3 of 9. Within ±1: 0→0, 0→1, 1→0, 1→1, 2→3, 3→4, 3→3 = 7 of 9.
    assert!((f("acc") - 3.0 / 9.0).abs() < 1e-12);
    assert!((f("one_off") - 7.0 / 9.0).abs() < 1e-12);
    let per: Vec<rhai::Dynamic> = out["per_class"].clone().into_array().unwrap();
    assert!((per[0].as_float().unwrap() - 1.0 / 3.0).abs() < 1e-12);
    assert!((per[1].as_float().unwrap() - 0.5).abs() < 1e-12);
    assert_eq!(per[2].as_float().unwrap(), 0.0);
    assert!((per[3].as_float().unwrap() - 1.0 / 3.0).abs() < 1e-12);
    assert!(per[4].is_unit(), "class 4 has no examples");
    let m: Vec<Vec<i64>> = out["matrix"]
        .clone()
        .into_array()
        .unwrap()
        .into_iter()
        .map(|r| r.into_array().unwrap().into_iter().map(|x| x.as_int().unwrap()).collect())
        .collect();
    assert_eq!(
        m,
        vec![vec![1, 1, 1, 0, 0], vec![1, 1, 0, 0, 0], vec![0, 0, 0, 1, 0], vec![1, 0, 0, 1, 1], vec![0, 0, 0, 0, 0]]
    );
    assert_eq!(out["n"].as_int().unwrap(), 9);
    assert_eq!(out["classes"].as_int().unwrap(), 5);
    assert_eq!(out["auto"].as_int().unwrap(), 2);
    assert!(out["text"].to_string().contains("5×5"), "{}", out["text"]);
    // Bad input: different lengths, a class outside the matrix, unknown option.
    for (src, want) in [
        ("confusion([0, 1], [0])", "2 labels but 1 predictions"),
        ("confusion([0, 5], [0, 1], #{classes: 3})", "classes"),
        ("confusion([0], [0], #{size: 3})", "unknown option"),
        ("confusion([-1], [0])", "class index"),
    ] {
        let e = run_script(src).unwrap_err();
        assert!(e.contains(want), "{src}: {e}");
    }
}

#[test]
fn script_statistics_functions_return_the_core_numbers() {
    let src = r#"
        let a = [0.4233, 0.4012, 0.4467, 0.3901, 0.4389];
        let b = [0.4102, 0.4055, 0.4198, 0.3756, 0.4121];
        #{t: compare(a, b), w: compare(a, b, #{test: "wilcoxon"}), m: mean_ci(a), m90: mean_ci(a, #{level: 0.9}),
          mc: mcnemar([true, true, true, false, true, false], [false, false, false, false, true, true]),
          bs: bootstrap_ci([true, false, true, true], #{resamples: 500, seed: 3})}
    "#;
    let out = run_script(src).unwrap().cast::<rhai::Map>();
    let get = |k: &str| out[k].clone().cast::<rhai::Map>();
    let a = [0.4233, 0.4012, 0.4467, 0.3901, 0.4389];
    let b = [0.4102, 0.4055, 0.4198, 0.3756, 0.4121];
    let t = compare(&a, &b, PairedTest::PairedT, 0.95).unwrap();
    let st = get("t");
    for (k, v) in [("delta", t.delta), ("ci_low", t.ci_low), ("ci_high", t.ci_high), ("p", t.p)] {
        assert_eq!(st[k].as_float().unwrap(), v, "{k}");
    }
    assert_eq!(st["n"].as_int().unwrap(), 5);
    assert_eq!(st["test"].to_string(), "paired_t");
    // With 5 pairs, 4 of them positive and the negative one the smallest |d| (rank 1): W− = 1, p = 2·2/32.
    let w = get("w");
    assert!((w["p"].as_float().unwrap() - 0.125).abs() < 1e-12, "{w:?}");
    assert_eq!(w["statistic"].as_float().unwrap(), 1.0);
    assert!((get("m")["mean"].as_float().unwrap() - 0.42004).abs() < 1e-12);
    assert!(get("m90")["ci_high"].as_float().unwrap() < get("m")["ci_high"].as_float().unwrap());
    let mc = get("mc");
    assert_eq!((mc["only_a"].as_int().unwrap(), mc["only_b"].as_int().unwrap()), (3, 1));
    assert!((mc["p"].as_float().unwrap() - 0.625).abs() < 1e-12);
    let bs = get("bs");
    assert_eq!(bs["mean"].as_float().unwrap(), 0.75);
    assert!(bs["ci_low"].as_float().unwrap() <= 0.75 && bs["ci_high"].as_float().unwrap() >= 0.75);
    for (src, want) in [
        ("compare([1.0, 2.0], [1.0])", "paired"),
        ("compare([1.0, 2.0], [1.0, 3.0], #{test: \"sign\"})", "paired_t, wilcoxon"),
        ("compare([1.0, 2.0], [1.0, 3.0], #{level: 95})", "level"),
        ("mcnemar([true], [0.5])", "true/false"),
        ("mean_ci([1.0])", "at least 2"),
        ("bootstrap_ci([1.0], #{resamples: 1})", "resamples"),
        // Found by the fuzzer (SATM_FUZZ_SEED=4): this was a "capacity overflow" panic.
        ("bootstrap_ci([0.75], #{resamples: 9223372036854775807})", "at most 10000000"),
        // SATM_FUZZ_SEED=6: a "capacity overflow" panic, then an attempt to allocate 10^38 bytes.
        ("confusion([2, 4, 2], [2, 9223372036854775807, 14])", "9223372036854775808x9223372036854775808 matrix"),
        ("confusion([0], [0], #{classes: 100000000000})", "matrix"),
    ] {
        let e = run_script(src).unwrap_err();
        assert!(e.contains(want), "{src}: {e}");
    }
}

#[test]
fn record_stores_evaluation_masking_robust_and_confusion_records_with_their_kind() {
    let dir = tempfile::Builder::new().prefix("satm-stats-record-").tempdir().unwrap();
    satm::script::state::update(|s| s.out_dir = Some(dir.path().to_path_buf()));
    let src = r#"
        threads(1);
        let d = synthetic(#{n: 24, classes: 4, size: 32, seed: 2});
        let a = model("vgg_s", #{classes: 4, width: 0.25});
        let r = evaluate(a, d, #{attack: "fgsm", eps: 4.0/256, limit: 10, seed: 3});
        let mr = masking_report(a, d, #{limit: 6, steps: 1, queries: 2, eps_factors: [1.0]});
        let rb = robust_eval(a, d, #{limit: 6, steps: 1, queries: 2});
        record("r", r); record("mr", mr); record("rb", rb); record("c", confusion(r.labels, r.predictions, #{classes: 4}));
        record("t", mr.table());
        #{hits: r.correct.filter(|x| x).len(), acc: r.accuracy, n: r.n, flagged: mr.flagged,
          keys: mr.checks.map(|c| c.key), stages: rb.stages.len(), worst: rb.worst.correct.len()}
    "#;
    let out = run_script(src).unwrap().cast::<rhai::Map>();
    assert_eq!(out["n"].as_int().unwrap(), 10);
    assert!((out["hits"].as_int().unwrap() as f64 / 10.0 - out["acc"].as_float().unwrap()).abs() < 1e-12);
    let keys: Vec<String> = out["keys"].clone().into_array().unwrap().iter().map(|k| k.to_string()).collect();
    assert_eq!(
        keys,
        [
            "clean",
            "bad_gradients",
            "saturated",
            "pgd_vs_fgsm",
            "pgd_vs_rfgsm",
            "rfgsm_vs_fgsm",
            "square_vs_pgd",
            "eps_monotone"
        ]
    );
    assert_eq!(out["stages"].as_int().unwrap(), 4, "clean + APGD-CE + APGD-DLR-T + Square");
    assert_eq!(out["worst"].as_int().unwrap(), 6);
    let res: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap()).unwrap();
    for (name, kind) in [("r", "eval"), ("mr", "masking"), ("rb", "robust"), ("c", "confusion"), ("t", "table")] {
        assert_eq!(res[name]["kind"], kind, "{name}: {}", res[name]);
    }
    // The stored evaluation record's per-example outcomes count to its stored confusion matrix.
    let r = &res["r"];
    let mut counts = vec![vec![0i64; 4]; 4];
    for (y, p) in r["labels"].as_array().unwrap().iter().zip(r["predictions"].as_array().unwrap()) {
        counts[y.as_i64().unwrap() as usize][p.as_i64().unwrap() as usize] += 1;
    }
    assert_eq!(serde_json::json!(counts), r["confusion"]);
    assert_eq!(res["c"]["counts"], r["confusion"]);
    assert_eq!(r["index"].as_array().unwrap().len(), 10);
    assert_eq!(res["mr"]["flagged"], out["flagged"].as_bool().unwrap());
    assert_eq!(res["mr"]["checks"].as_array().unwrap().len(), 8);
    assert_eq!(res["rb"]["worst"]["kind"], "eval");
    assert_eq!(res["t"]["columns"][0], "Check");
}
