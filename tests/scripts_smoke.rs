//! Every script in scripts/ runs end to end at `--set scale=test` (tiny data, a few steps) and writes its tables,
//! plots and results.json.
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::cli::read_json;

/// `satm ARGS` in the checkout, which must succeed; returns both streams.
fn satm(args: &[&str]) -> String {
    let o = common::cli::satm(Path::new(env!("CARGO_MANIFEST_DIR")), args);
    assert!(o.status.success(), "{args:?}:\n{}", common::cli::text(&o));
    common::cli::text(&o)
}

fn run(script: &str, out: &Path) -> String {
    run_with(script, out, &[])
}

/// `satm run scripts/<script>.rhai --set scale=test` with `extra` arguments, into `out`.
fn run_with(script: &str, out: &Path, extra: &[&str]) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(env!("CARGO_BIN_EXE_satm"))
        .current_dir(&root)
        .args(["run", &format!("scripts/{script}.rhai"), "--set", "scale=test", "-q", "--threads", "1"])
        .args(extra)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{script} failed:\n{text}");
    text
}

fn check(out: &Path, tables: &[&str], plots: &[&str]) {
    for t in tables {
        for ext in ["md", "csv", "json"] {
            let p = out.join(format!("tables/{t}.{ext}"));
            assert!(p.is_file(), "missing {}", p.display());
        }
    }
    for p in plots {
        let img = image::open(out.join(format!("plots/{p}.png"))).unwrap_or_else(|e| panic!("{p}.png: {e}"));
        assert!(img.width() >= 100 && img.height() >= 100);
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    for t in tables {
        assert!(results[t]["rows"].as_array().is_some_and(|r| !r.is_empty()), "results.json lacks table {t}");
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("satm-smoke-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn quickstart_runs_and_says_where_outputs_went() {
    let out = tmp("quickstart");
    let text = run("quickstart", &out);
    assert!(text.contains("Table 4 analog") && text.contains(&format!("outputs: {}", out.display())), "{text}");
    check(&out, &["table4", "clean"], &["satm_curves"]);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn paper_tables_runs_every_table_over_folds() {
    let out = tmp("paper");
    let text = run("paper_tables", &out);
    assert!(text.contains("over 2 folds"), "{text}");
    check(
        &out,
        &["table1", "table2", "table3", "table4", "table5", "table4b", "table5b", "clean", "masking"],
        &["fig3_4_satm_curves", "fig1_adversarial_pairs"],
    );
    // Fold 0's full gradient-masking reports are saved beside the summary.
    for arm in ["undefended", "ensemble", "satm"] {
        for net in ["A", "B"] {
            assert!(out.join(format!("tables/masking_{arm}_{net}.md")).is_file(), "masking_{arm}_{net}");
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn ablation_frozen_and_sweep_scripts_run() {
    for (script, table) in [("ablation_k3", "ablation_k3"), ("frozen_b", "frozen_b"), ("sweep_r", "sweep_r")] {
        let out = tmp(script);
        run(script, &out);
        check(&out, &[table], &[]);
        let _ = std::fs::remove_dir_all(&out);
    }
}

/// The `_loss` lines of a run's metrics.jsonl (train and validation), in order.
fn losses(run_dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    text.lines().filter(|l| l.contains("_loss\"")).map(str::to_string).collect()
}

fn results(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

#[test]
fn arms_point_trains_the_same_networks_as_paper_tables_and_reports_the_same_holdout_rates() {
    let pt = tmp("arms-paper");
    run_with("paper_tables", &pt, &["--set", "fold=0"]);
    let table5 = &results(&pt)["table5"]["rows"];
    // The masking summary's numbers are those of the full reports: FGSM and PGD from "PGD-n vs FGSM", R+FGSM from
    // "R+FGSM vs FGSM", and flags = the failed checks.
    let summary = &results(&pt)["masking"]["rows"];
    for (i, label) in
        ["undefended_A", "undefended_B", "ensemble_A", "ensemble_B", "satm_A", "satm_B"].iter().enumerate()
    {
        let full: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(pt.join(format!("tables/masking_{label}.json"))).unwrap())
                .unwrap();
        let rows = full["rows"].as_array().unwrap();
        let find = |prefix: &str| rows.iter().find(|r| r[0]["value"].as_str().unwrap().starts_with(prefix)).unwrap();
        let row = &summary[i];
        assert_eq!(row[0]["value"], *label);
        assert_eq!(row[2]["value"], find("PGD-")[2]["value"], "{label} FGSM");
        assert_eq!(row[4]["value"], find("PGD-")[1]["value"], "{label} PGD");
        assert_eq!(row[3]["value"], find("R+FGSM vs FGSM")[1]["value"], "{label} R+FGSM");
        let flags = rows.iter().filter(|r| r[0]["value"] != "overall" && r[4]["value"] == "FLAG").count();
        assert_eq!(row[7]["value"], flags, "{label} flags");
    }
    for (arm, run_dir, col) in [("satm", "satm", 6), ("ensemble", "ensemble-A", 4)] {
        let out = tmp(&format!("arms-{arm}"));
        run_with("arms", &out, &["--set", "fold=0", "--set", &format!("arm={arm}")]);
        // The same pretrained networks and the same reseeded arm: every loss of the adversarial run is identical.
        let (want, got) = (losses(&pt.join(format!("fold0-{run_dir}"))), losses(&out.join(run_dir)));
        assert!(want.len() >= 4, "{want:?}");
        assert_eq!(got, want, "arm {arm}: the training differs from paper_tables' fold 0");
        let rows = &results(&out)["arms"]["rows"];
        for j in 0..2 {
            assert_eq!(rows[j][3]["value"], table5[j][col]["value"], "arm {arm}, row {j}: hold-out Cr");
            // The recorded evaluation records agree too, down to every example's prediction.
            let name = format!("holdout_{}", ["A", "B"][j]);
            let (one, all) = (&results(&out)[&name], &results(&pt)[&name][arm]);
            assert_eq!(one["kind"], "eval");
            assert_eq!(one["predictions"], all["predictions"], "{name} {arm}");
            assert_eq!(one["accuracy"], table5[j][col]["value"], "{name} {arm}");
        }
        let _ = std::fs::remove_dir_all(&out);
    }
    let _ = std::fs::remove_dir_all(&pt);
}

#[test]
fn arms_grid_collects_one_row_per_arm_and_network() {
    let dir = tmp("arms-grid");
    let d = dir.to_str().unwrap();
    satm(&[
        "grid",
        "scripts/arms.rhai",
        "--over",
        "fold=0..1",
        "--over",
        "arm=undefended,satm",
        "--set",
        "scale=test",
        "-j",
        "2",
        "--threads",
        "1",
        "--dir",
        d,
    ]);
    let text = satm(&["grid", "collect", d]);
    assert!(text.contains("All points done."), "{text}");
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("collected/arms.json")).unwrap()).unwrap();
    assert_eq!(t["columns"][0], "arm", "{t}");
    let rows = t["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{t}");
    let arms: Vec<&str> = rows.iter().map(|r| r[0]["value"].as_str().unwrap()).collect();
    assert_eq!(arms, ["undefended", "undefended", "satm", "satm"], "{t}");
    assert!(rows.iter().all(|r| r[3]["n"] == 2), "means over the 2 folds: {t}");
    // The recorded hold-out evaluations are paired by fold: satm − undefended over 2 folds for each network.
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("collected/comparisons.json")).unwrap()).unwrap();
    let pairs: Vec<(&str, &str, i64)> = c["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[6]["value"].as_i64() == Some(2))
        .map(|r| (r[0]["value"].as_str().unwrap(), r[1]["value"].as_str().unwrap(), r[6]["value"].as_i64().unwrap()))
        .collect();
    assert_eq!(pairs, [("holdout_A", "satm − undefended", 2), ("holdout_B", "satm − undefended", 2)], "{c}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A full-shaped Adience copy (5 official-format fold files, subject-disjoint users, the 8 age groups plus a row the
/// standard protocol drops, faces/<user>/coarse_tilt_aligned_face.<face_id>.<image>), its images real UTKFace faces.
fn adience_copy(dir: &Path, per_fold: usize) {
    let utk = satm::script::data_root().join("utkface/images");
    let mut faces: Vec<PathBuf> = std::fs::read_dir(&utk).unwrap().map(|e| e.unwrap().path()).collect();
    faces.sort();
    let groups = ["(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)"];
    let header =
        "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\tfiducial_yaw_angle\tfiducial_score";
    let mut n = 0;
    for fold in 0..5 {
        let mut text = format!("{header}\n");
        for j in 0..per_fold {
            let user = format!("{}@N0{fold}", 1000 + fold * 100 + j % 4);
            let image = format!("{}_{j}_o.jpg", 9000 + n);
            let face_id = j + 1;
            let age = if j == 0 { "(27, 32)" } else { groups[j % 8] };
            let gender = if j % 2 == 0 { "m" } else { "f" };
            text += &format!("{user}\t{image}\t{face_id}\t{age}\t{gender}\t10\t10\t200\t200\t0\t0\t60\n");
            let d = dir.join("faces").join(&user);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::copy(&faces[n * 7], d.join(format!("coarse_tilt_aligned_face.{face_id}.{image}"))).unwrap();
            n += 1;
        }
        std::fs::write(dir.join(format!("fold_{fold}_data.txt")), text).unwrap();
    }
}

#[test]
fn scripts_run_on_the_adience_protocol_with_data_adience() {
    let root = tmp("adience-copy");
    adience_copy(&root, 40);
    let out = tmp("adience-quickstart");
    let r = root.to_str().unwrap();
    let text = run_with("quickstart", &out, &["--set", "data=adience", "--set", &format!("root={r}")]);
    // 200 rows, the 5 "(27, 32)" rows dropped by the standard protocol; test = fold 0's 39 kept rows.
    assert!(text.contains("Dataset[adience; 195 items; 8 classes; 32x32]"), "{text}");
    assert!(text.contains("/ 39 test"), "{text}");
    assert!(text.contains("Table 4 analog"), "{text}");
    assert!(results(&out)["table4"]["rows"].as_array().is_some_and(|r| r.len() == 2));
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&root);
}

/// Equal arms by construction: every arm of stdlib/experiment.rhai runs under one protocol (budget, selection rule,
/// evaluation inputs), `check_equal_arms` records it, and it refuses a set of arms whose selection rule differs.
#[test]
fn arms_share_one_protocol_and_a_differing_selection_rule_is_refused() {
    let out = tmp("arms-protocol");
    std::fs::create_dir_all(&out).unwrap();
    let script = out.join("protocol.rhai");
    std::fs::write(
        &script,
        r#"import "stdlib/experiment" as ex;
seed(1);
let s = ex::scale("test");
let f = ex::fold(ex::dataset("utkface", "", s), 0);
let a = ex::pretrained("A", f, s, "pa");
let b = ex::pretrained("B", f, s, "pb");
let arms = ex::arm_names().map(|n| ex::arm(n, a, b, f, s, ""));
ex::check_equal_arms(arms);
for r in arms { record(`arm_${r.name}`, ex::arm_record(r)); }
let c = arms[1];
c.protocol.select = "last";
let msg = "accepted";
try { ex::check_equal_arms([arms[0], c]); } catch (e) { msg = `${e}`; }
record("refused", msg);
"#,
    )
    .unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(env!("CARGO_BIN_EXE_satm"))
        .current_dir(&root)
        .args(["run", script.to_str().unwrap(), "-q", "--threads", "1", "--out"])
        .arg(out.join("run"))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    let r = results(&out.join("run"));
    let names = ["undefended", "clean_continued", "ensemble", "satm", "satm_rda0", "white_box"];
    assert_eq!(r["protocol"]["arms"], serde_json::json!(names), "{r}");
    assert_eq!(r["protocol"]["select"], "best_val");
    // The same budget for every arm that trains (scale "test": 3 steps per network), none for the starting point;
    // runs per arm: one per network, except SATM's joint runs.
    for (name, runs) in [("clean_continued", 2), ("ensemble", 2), ("satm", 1), ("satm_rda0", 1), ("white_box", 2)] {
        let a = &r[format!("arm_{name}")];
        assert_eq!(a["extra_steps"], 3, "{name}: {a}");
        assert_eq!(a["selected_steps"].as_array().unwrap().len(), runs, "{name}: {a}");
        for s in a["selected_steps"].as_array().unwrap() {
            let s = s.as_u64().unwrap();
            assert!((1..=3).contains(&s), "{name}: the selected checkpoint is within the budget: {a}");
        }
        for k in ["select", "eval_seed", "eval_limit", "steps", "lr", "batch"] {
            assert_eq!(a[k], r["protocol"][k], "{name}: {k}");
        }
    }
    assert_eq!(r["arm_undefended"]["extra_steps"], 0);
    let refused = r["refused"].as_str().unwrap();
    assert!(
        refused.contains("arms are not treated alike") && refused.contains("select = last"),
        "a differing selection rule must be refused: {refused}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// The converged reproduction's two stages at `scale=converged_test`: stage 1 pre-trains A, B and the hold-outs C, D
/// per fold and saves them; stage 2 loads them into every arm point (the undefended arm's clean accuracy is exactly
/// stage 1's test accuracy of the same network: the same weights, BN buffers included, on the same inputs), records
/// every evaluation of its protocol, and collect pairs the arms by (fold, seed) for each of them.
#[test]
fn converged_stages_share_the_pretrained_networks_and_collect_every_metric() {
    let dir = tmp("converged");
    let (pre, arms) = (dir.join("pre"), dir.join("arms"));
    let (pre_s, arms_s) = (pre.to_str().unwrap(), arms.to_str().unwrap());
    let common = ["--set", "scale=converged_test", "-j", "2", "--threads", "1", "-q"];
    let mut a = vec!["grid", "scripts/converged_pretrain.rhai", "--over", "fold=0..1", "--over", "net=A,B,C,D"];
    a.extend(common);
    a.extend(["--dir", pre_s]);
    satm(&a);
    let pretrained = format!("pretrained={pre_s}");
    let mut a = vec!["grid", "scripts/converged.rhai", "--over", "fold=0..1", "--over", "seed=1", "--over"];
    a.extend(["arm=undefended,satm", "--set", &pretrained]);
    a.extend(common);
    a.extend(["--dir", arms_s]);
    satm(&a);
    let metrics = [
        "clean",
        "C_rstepll",
        "C_ll",
        "C_pgd10",
        "C_mifgsm",
        "D_rstepll",
        "D_ll",
        "D_pgd10",
        "D_mifgsm",
        "partner_rstepll",
        "wb_rstepll",
        "wb_pgd20_e4",
        "wb_apgdce_e4",
        "wb_apgdt_e4",
        "wb_pgd20_e8",
        "wb_apgdce_e8",
        "wb_apgdt_e8",
    ];
    for fold in 0..2 {
        for net in ["A", "B", "C", "D"] {
            let r = read_json(&pre.join(format!("points/fold={fold},net={net}/results.json")));
            assert_eq!(r["pretrain"]["steps"], 6, "{r}");
            assert_eq!(r["pretrain"]["lr_schedule"], "cosine", "{r}");
            assert_eq!(r["val_clean_acc"].as_array().map(|v| v.len()), Some(3), "a check every 2 of 6 steps: {r}");
        }
        for arm in ["undefended", "satm"] {
            let r = read_json(&arms.join(format!("points/fold={fold},seed=1,arm={arm}/results.json")));
            assert_eq!(r["arm"]["arm"], arm);
            assert_eq!(r["arm"]["lr_schedule"], "cosine");
            for m in metrics {
                for net in ["A", "B"] {
                    let e = &r[format!("{m}_{net}")];
                    assert_eq!(e["kind"], "eval", "{m}_{net} at fold {fold}, {arm}");
                    let n = e["correct"].as_array().map(|c| c.len()).unwrap_or(0);
                    let want = if m.starts_with("wb_") && m != "wb_rstepll" { 16 } else { 24 };
                    assert_eq!(n, want, "{m}_{net}: per-example outcomes on the protocol's inputs");
                }
            }
            for net in ["A", "B"] {
                assert!(r[format!("masking_{net}")]["checks"].as_array().is_some_and(|c| c.len() >= 5), "{r}");
            }
            if arm == "undefended" {
                for net in ["A", "B"] {
                    let p = read_json(&pre.join(format!("points/fold={fold},net={net}/results.json")));
                    assert_eq!(
                        r[format!("clean_{net}")]["correct"],
                        p["test_clean"]["correct"],
                        "fold {fold}: the undefended {net} is stage 1's network"
                    );
                }
            }
        }
    }
    satm(&["grid", "collect", arms_s]);
    let c = read_json(&arms.join("collected/comparisons.json"));
    let rows: Vec<&serde_json::Value> =
        c["rows"].as_array().unwrap().iter().filter(|r| r[6]["value"].as_i64() == Some(2)).collect();
    assert_eq!(rows.len(), 2 * metrics.len(), "satm − undefended for every metric and network, paired over 2 folds");
    assert!(rows.iter().all(|r| r[1]["value"] == "satm − undefended"), "{c}");
    let _ = std::fs::remove_dir_all(&dir);
}
