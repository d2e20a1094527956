//! `satm grid collect` over folds × seeds: records merged by their kind, replicates (fold, seed) merged within a group,
//! and the paired comparisons a script asks for (`record("compare", ...)`) against a hand computation.
use serde_json::Value;

mod common;
use common::cli::{read_json, satm, text};

fn num(c: &Value) -> f64 {
    c["value"].as_f64().unwrap_or_else(|| panic!("not a number cell: {c}"))
}

/// The CDF of Student's t with 3 degrees of freedom (closed form), for the hand computation of p.
fn t3_cdf(t: f64) -> f64 {
    let x = t / 3f64.sqrt();
    0.5 + (x / (1.0 + x * x) + x.atan()) / std::f64::consts::PI
}

/// The 0.975 quantile of Student's t with 3 degrees of freedom (tables: 3.182446305284263).
const T3_975: f64 = 3.182446305284263;

/// Arms as a grid axis: each point is one arm of one (fold, seed) and records its score as a number.
const AXIS_SCRIPT: &str = r#"
let base = 0.4 + 0.05 * fold + 0.01 * seed;
let off = if arm == "satm" { 0.03 * (1 + fold) - 0.01 * seed * seed } else { 0.0 };
record("acc", base + off);
record("compare", #{pairs: [["satm", "ensemble"]], metrics: ["acc"]});
"#;

/// Arms inside one point: a map from arm to a confusion record (accuracy k/4), compared with Wilcoxon.
const MAP_SCRIPT: &str = r#"
let ks = [[2, 3], [4, 2]];
let ke = [[1, 1], [2, 2]];
let preds = |k| { let p = []; for i in 0..4 { p.push(if i < k { 0 } else { 1 }); } p };
let y = [0, 0, 0, 0];
record("hold", #{satm: confusion(y, preds.call(ks[fold][seed - 1]), #{classes: 2}),
                 ensemble: confusion(y, preds.call(ke[fold][seed - 1]), #{classes: 2})});
record("compare", #{pairs: [["satm", "ensemble"]], metrics: ["hold"], test: "wilcoxon"});
record("note", "not a record");
"#;

#[test]
fn collect_pairs_arms_over_folds_and_seeds_like_a_hand_computation() {
    let d = tempfile::Builder::new().prefix("satm-collect-test-").tempdir().unwrap();
    std::fs::write(d.path().join("axis.rhai"), AXIS_SCRIPT).unwrap();
    std::fs::write(d.path().join("map.rhai"), MAP_SCRIPT).unwrap();
    let o = satm(
        d.path(),
        &[
            "grid",
            "axis.rhai",
            "--over",
            "fold=0..1",
            "--over",
            "seed=1..2",
            "--over",
            "arm=ensemble,satm",
            "--dir",
            "g",
            "-j",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = satm(d.path(), &["grid", "collect", "g", "--strict"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Paired comparisons") && out.contains("satm − ensemble"), "{out}");

    // By hand: d(fold, seed) = 0.03·(1 + fold) − 0.01·seed² over the 4 replicates.
    let dvals: Vec<f64> = [(0.0, 1.0), (0.0, 2.0), (1.0, 1.0), (1.0, 2.0)]
        .iter()
        .map(|(f, s)| {
            let base = 0.4 + 0.05 * f + 0.01 * s;
            (base + (0.03 * (1.0 + f) - 0.01 * s * s)) - base
        })
        .collect();
    let mean = dvals.iter().sum::<f64>() / 4.0;
    let sd = (dvals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 3.0).sqrt();
    let se = sd / 2.0;
    let p = 2.0 * (1.0 - t3_cdf((mean / se).abs()));
    let c = read_json(&d.path().join("g/collected/comparisons.json"));
    assert_eq!(
        c["columns"],
        serde_json::json!(["metric", "a − b", "Δ", "95% CI low", "95% CI high", "p", "n", "test"]),
        "{c}"
    );
    let rows = c["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{c}");
    let r = &rows[0];
    assert_eq!(r[0]["value"], "acc");
    assert_eq!(r[1]["value"], "satm − ensemble");
    assert!((num(&r[2]) - mean).abs() < 1e-9, "Δ {} vs {mean}", r[2]);
    assert!((num(&r[3]) - (mean - T3_975 * se)).abs() < 1e-9, "{}", r[3]);
    assert!((num(&r[4]) - (mean + T3_975 * se)).abs() < 1e-9, "{}", r[4]);
    assert!((num(&r[5]) - p).abs() < 1e-9, "p {} vs {p}", r[5]);
    assert_eq!(r[6]["value"], 4, "paired over 2 folds × 2 seeds");
    assert_eq!(r[7]["value"], "paired_t");
    // Scalars: one row per arm, merged over the 4 (fold, seed) replicates.
    let sc = read_json(&d.path().join("g/collected/scalars.json"));
    assert_eq!(sc["columns"][0], "arm");
    let srows = sc["rows"].as_array().unwrap();
    assert_eq!(srows.len(), 2, "{sc}");
    let ens: Vec<f64> =
        [(0.0, 1.0), (0.0, 2.0), (1.0, 1.0), (1.0, 2.0)].iter().map(|(f, s)| 0.4 + 0.05 * f + 0.01 * s).collect();
    assert_eq!(srows[0][0]["value"], "ensemble");
    assert!((num(&srows[0][2]) - ens.iter().sum::<f64>() / 4.0).abs() < 1e-9, "{}", srows[0][2]);
    assert_eq!((srows[0][4]["value"].as_i64(), srows[0][5]["value"].as_i64()), (Some(4), Some(4)));
    let all = read_json(&d.path().join("g/collected/collected.json"));
    assert_eq!(all["replicate_keys"], serde_json::json!(["fold", "seed"]));
    assert_eq!(all["complete"], true, "{all}");

    // Arms inside each point (a map of confusion records), Wilcoxon: d = accuracy(satm) − accuracy(ensemble) =
    // [0.25, 0.5, 0.5, 0]; the zero is dropped, |d| ranks 1, 2.5, 2.5, all positive: W+ = 6, the largest of the
    // 8 equally likely sign assignments of the three, so p = 2 · 1/8.
    let o =
        satm(d.path(), &["grid", "map.rhai", "--over", "fold=0..1", "--over", "seed=1..2", "--dir", "m", "-j", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = satm(d.path(), &["grid", "collect", "m"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("'note' (string)"), "a string is listed as not merged: {out}");
    let c = read_json(&d.path().join("m/collected/comparisons.json"));
    let r = &c["rows"][0];
    assert!((num(&r[2]) - 0.3125).abs() < 1e-12, "{c}");
    assert!((num(&r[5]) - 0.25).abs() < 1e-12, "{c}");
    assert_eq!(r[6]["value"], 4);
    assert_eq!(r[7]["value"], "wilcoxon");
    // The records table: each arm's accuracy merged over the replicates (satm: (2 + 3 + 4 + 2)/16).
    let rec = read_json(&d.path().join("m/collected/records.json"));
    let row = rec["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0]["value"] == "hold" && r[1]["value"] == "satm accuracy")
        .unwrap_or_else(|| panic!("{rec}"));
    assert!((num(&row[2]) - 11.0 / 16.0).abs() < 1e-12, "{row:?}");
    assert_eq!(row[4]["value"], 4);
}

#[test]
fn collect_names_replicates_an_arm_lacks() {
    let d = tempfile::Builder::new().prefix("satm-collect-test-").tempdir().unwrap();
    // The satm arm of fold 1 records no score: that replicate is left out of the pairs and named.
    let script = r#"
if !(arm == "satm" && fold == 1) { record("acc", 0.1 * fold + (if arm == "satm" { 0.05 } else { 0.0 })); }
record("compare", #{pairs: [["satm", "ensemble"]], metrics: ["acc"]});
"#;
    std::fs::write(d.path().join("t.rhai"), script).unwrap();
    let o = satm(d.path(), &["grid", "t.rhai", "--over", "fold=0..2", "--over", "arm=ensemble,satm", "--dir", "g"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = satm(d.path(), &["grid", "collect", "g"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("fold=1 has no score for satm"), "{out}");
    let c = read_json(&d.path().join("g/collected/comparisons.json"));
    assert_eq!(c["rows"][0][6]["value"], 2, "{c}");
    assert!((num(&c["rows"][0][2]) - 0.05).abs() < 1e-12, "{c}");
    // A bad request is a problem that names what is wrong, not a crash.
    std::fs::write(
        d.path().join("b.rhai"),
        "record(\"acc\", 1.0); record(\"compare\", #{pairs: [[\"a\"]], metrics: [\"acc\"]});",
    )
    .unwrap();
    let o = satm(d.path(), &["grid", "b.rhai", "--over", "fold=0..1", "--dir", "b"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = satm(d.path(), &["grid", "collect", "b"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("each pair must be two arm names"), "{out}");
}
