//! `satm grid`: expansion, idempotent points, Ctrl-C, status, collect (mean ± std over folds, missing points named),
//! --retry-failed, and a real single-node Slurm when one is up (tools/slurm_local.sh start; SATM_SLURM=1 makes its
//! absence a failure instead of a loud skip).
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::cli::{SATM, read_json, satm, text};

/// A table with a Rate cell = 0.1·fold + arm offset, a before → after cell, and a scalar, built with the script
/// table API.
const TABLE_SCRIPT: &str = r#"
let off = if arm == "satm" { 0.3 } else if arm == "ensemble" { 0.2 } else { 0.0 };
let cr = 0.1 * fold + off;
let t = table("Accuracy", ["net", "Cr", "bb"]);
t.add_row(["A", rate(cr), change(cr, cr * 2.0)]);
t.add_row(["B", rate(cr / 2.0), change(0.5, 0.5)]);
t.note("eps = 16/256");
record("acc", t);
record("loss", 1.0 + fold * fold);
"#;

/// The same results, the table written as a map in the Table JSON form (with `kind: "table"`, as `record` writes a
/// table: collect merges tables by their kind, never by their shape).
const MAP_TABLE_SCRIPT: &str = r#"
let off = if arm == "satm" { 0.3 } else if arm == "ensemble" { 0.2 } else { 0.0 };
let cr = 0.1 * fold + off;
record("acc", #{
    kind: "table",
    title: "Accuracy",
    columns: ["net", "Cr", "bb"],
    rows: [
        [#{type: "text", value: "A"}, #{type: "rate", value: cr}, #{type: "rate_change", before: cr, after: cr * 2.0, before_std: (), after_std: ()}],
        [#{type: "text", value: "B"}, #{type: "rate", value: cr / 2.0}, #{type: "rate_change", before: 0.5, after: 0.5, before_std: (), after_std: ()}]
    ],
    notes: ["eps = 16/256"]
});
record("loss", 1.0 + fold * fold);
"#;

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("satm-grid-test-").tempdir().expect("temp dir")
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, v.sqrt())
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|x| (x - b).abs() < 1e-9)
}

#[test]
fn grid_expansion_ranges_lists_types_and_names() {
    let d = tmp();
    std::fs::write(
        d.path().join("t.rhai"),
        r#"record("types", type_of(fold) + "," + type_of(lr) + "," + type_of(base)); record("lr", lr);"#,
    )
    .unwrap();
    // Dry run: 5 × 2 × 3 points in order, nothing written.
    let o = satm(
        d.path(),
        &[
            "grid",
            "t.rhai",
            "--over",
            "fold=0..4",
            "--over",
            "lr=0.5,1.0",
            "--over",
            "arm=u,e,s",
            "--dir",
            "g",
            "--dry-run",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let names: Vec<&str> = out.lines().map(|l| l.split_whitespace().next().unwrap_or("")).collect();
    assert_eq!(names.len(), 30, "{out}");
    assert_eq!(names[0], "fold=0,lr=0.5,arm=u");
    assert_eq!(names[1], "fold=0,lr=0.5,arm=e");
    assert_eq!(names[3], "fold=0,lr=1.0,arm=u");
    assert_eq!(names[29], "fold=4,lr=1.0,arm=s");
    assert!(!d.path().join("g").exists(), "a dry run writes nothing");

    // Real run of a small grid: the script sees int, float (1.0 stays a float) and the --set string.
    let o = satm(
        d.path(),
        &["grid", "t.rhai", "--over", "fold=3..4", "--over", "lr=0.5,1.0", "--set", "base=x", "--dir", "g", "-j", "2"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let g = read_json(&d.path().join("g/grid.json"));
    assert_eq!(g["points"].as_array().unwrap().len(), 4);
    assert_eq!(g["axes"], serde_json::json!(["fold", "lr"]));
    assert_eq!(g["seed"], 0);
    assert_eq!(g["satm_version"], env!("CARGO_PKG_VERSION"));
    let sha = g["script_sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64);
    assert!(g["command"].as_array().unwrap().iter().any(|a| a == "fold=3..4"));
    assert_eq!(g["points"][3]["name"], "fold=4,lr=1.0");
    assert!(g["points"][3]["params"][1]["value"].is_f64());
    let r = read_json(&d.path().join("g/points/fold=4,lr=1.0/results.json"));
    assert_eq!(r["types"], "i64,f64,string");
    assert!(close(&r["lr"], 1.0));

    // Bad specs are errors that name the spec.
    for bad in ["fold=4..0", "fold=0..x", "9x=1,2", "arm=a,,b"] {
        let o = satm(d.path(), &["grid", "t.rhai", "--over", bad, "--dry-run"]);
        assert_eq!(o.status.code(), Some(1), "{bad}: {}", text(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains(bad), "{bad}: {}", text(&o));
    }
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).and_then(|m| m.modified()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn grid_points_are_idempotent() {
    let d = tmp();
    std::fs::write(d.path().join("t.rhai"), TABLE_SCRIPT).unwrap();
    let args = ["grid", "t.rhai", "--over", "fold=0..1", "--over", "arm=satm", "--dir", "g", "-j", "2"];
    let o = satm(d.path(), &args);
    assert!(o.status.success(), "{}", text(&o));
    let pts = ["g/points/fold=0,arm=satm", "g/points/fold=1,arm=satm"];
    let before: Vec<_> = pts
        .iter()
        .map(|p| (mtime(&d.path().join(p).join("done")), mtime(&d.path().join(p).join("results.json"))))
        .collect();
    let done = read_json(&d.path().join(pts[0]).join("done"));
    assert_eq!(done["exit_code"], 0);
    assert!(done["wall_s"].as_f64().unwrap() > 0.0);
    std::thread::sleep(Duration::from_millis(1100));

    // The same command again runs nothing: no marker or result is rewritten.
    let o = satm(d.path(), &args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 done, 0 running or queued); 0 to run"), "{}", text(&o));
    for (p, (dm, rm)) in pts.iter().zip(&before) {
        assert_eq!(mtime(&d.path().join(p).join("done")), *dm, "{p}: done marker rewritten");
        assert_eq!(mtime(&d.path().join(p).join("results.json")), *rm, "{p}: results rewritten");
    }

    // Without its marker a point counts as missing and only it runs again.
    std::fs::remove_file(d.path().join(pts[1]).join("done")).unwrap();
    let o = satm(d.path(), &["grid", "g"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 to run"), "{}", text(&o));
    assert_eq!(mtime(&d.path().join(pts[0]).join("done")), before[0].0);
    assert!(mtime(&d.path().join(pts[1]).join("done")) > before[1].0);

    // A different grid in the same directory is refused.
    let o = satm(d.path(), &["grid", "t.rhai", "--over", "fold=0..2", "--over", "arm=satm", "--dir", "g"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("different grid"), "{}", text(&o));
}

/// Checks the collected "acc" table of a grid over fold=0..F-1 and the given arms against a hand computation.
fn check_acc_table(acc: &Value, folds: &[f64], arms: &[(&str, f64)]) {
    assert_eq!(acc["columns"], serde_json::json!(["arm", "net", "Cr", "bb"]));
    assert_eq!(acc["title"], "Accuracy");
    let rows = acc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * arms.len());
    for (a, (arm, off)) in arms.iter().enumerate() {
        let cr: Vec<f64> = folds.iter().map(|f| 0.1 * f + off).collect();
        let (m, s) = mean_std(&cr);
        let ra = &rows[2 * a];
        assert_eq!(ra[0], serde_json::json!({"type": "text", "value": arm}));
        assert_eq!(ra[1]["value"], "A");
        assert_eq!(ra[2]["type"], "rate_mean_std");
        assert!(close(&ra[2]["mean"], m) && close(&ra[2]["std"], s), "{arm}: {} vs {m} ± {s}", ra[2]);
        assert_eq!(ra[2]["n"], folds.len());
        let after: Vec<f64> = cr.iter().map(|x| x * 2.0).collect();
        let (am, as_) = mean_std(&after);
        assert_eq!(ra[3]["type"], "rate_change");
        assert!(close(&ra[3]["before"], m) && close(&ra[3]["before_std"], s));
        assert!(close(&ra[3]["after"], am) && close(&ra[3]["after_std"], as_), "{}", ra[3]);
        let rb = &rows[2 * a + 1];
        let (bm, bs) = mean_std(&cr.iter().map(|x| x / 2.0).collect::<Vec<_>>());
        assert!(close(&rb[2]["mean"], bm) && close(&rb[2]["std"], bs));
        assert!(close(&rb[3]["before_std"], 0.0));
    }
}

#[test]
fn grid_collect_equals_hand_computed_mean_std() {
    let d = tmp();
    std::fs::write(d.path().join("t.rhai"), TABLE_SCRIPT).unwrap();
    let o = satm(
        d.path(),
        &["grid", "t.rhai", "--over", "fold=0..2", "--over", "arm=undefended,satm", "--dir", "g", "-j", "2"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = satm(d.path(), &["grid", "collect", "g"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("All points done."), "{out}");
    // 0.1·fold + 0.3 over folds 0,1,2: 40.00% ± 10.00
    assert!(out.contains("40.00% ± 10.00"), "{out}");
    let acc = read_json(&d.path().join("g/collected/acc.json"));
    check_acc_table(&acc, &[0.0, 1.0, 2.0], &[("undefended", 0.0), ("satm", 0.3)]);
    // Scalars: loss = 1 + fold² → 1, 2, 5 per arm.
    let sc = read_json(&d.path().join("g/collected/scalars.json"));
    assert_eq!(
        sc["columns"],
        serde_json::json!(["arm", "name", "mean", "std", "n", "of", "95% CI low", "95% CI high"])
    );
    let (m, s) = mean_std(&[1.0, 2.0, 5.0]);
    assert!(close(&sc["rows"][0][2]["value"], m) && close(&sc["rows"][0][3]["value"], s), "{}", sc["rows"][0]);
    // 95% t interval with 2 degrees of freedom: t(0.975, 2) = 4.302652729749464.
    let half = 4.302652729749464 * s / 3f64.sqrt();
    assert!(
        close(&sc["rows"][0][6]["value"], m - half) && close(&sc["rows"][0][7]["value"], m + half),
        "{}",
        sc["rows"][0]
    );
    assert_eq!(sc["rows"][0][4]["value"], 3);
    let csv = std::fs::read_to_string(d.path().join("g/collected/acc.csv")).unwrap();
    assert_eq!(csv.lines().next().unwrap(), "arm,net,Cr,Cr std,bb before,bb after,bb before std,bb after std");
    assert!(
        std::fs::read_to_string(d.path().join("g/collected/acc.md")).unwrap().contains("| satm | A | 40.00% ± 10.00 |")
    );
    let all = read_json(&d.path().join("g/collected/collected.json"));
    assert_eq!(all["complete"], true);

    // --out puts the files elsewhere.
    let o = satm(d.path(), &["grid", "collect", "g", "--out", "elsewhere"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read_json(&d.path().join("elsewhere/acc.json")), acc);
}

#[test]
fn grid_collect_names_missing_and_failed_points_and_retry_failed_reruns_them() {
    let d = tmp();
    // fold=1 fails on its first attempt only (results.json remembers the attempt).
    let script = format!(
        "if fold == 1 && !(\"tried\" in results()) {{ record(\"tried\", true); throw \"deliberate failure\"; }}\n{MAP_TABLE_SCRIPT}"
    );
    std::fs::write(d.path().join("t.rhai"), script).unwrap();
    let o = satm(d.path(), &["grid", "t.rhai", "--over", "fold=0..2", "--over", "arm=satm", "--dir", "g", "-j", "3"]);
    assert_eq!(o.status.code(), Some(1), "a failed point makes the run fail: {}", text(&o));
    let pdir = d.path().join("g/points/fold=1,arm=satm");
    let failed = read_json(&pdir.join("failed"));
    assert_eq!(failed["exit_code"], 1);
    assert!(failed["output_tail"].as_str().unwrap().contains("deliberate failure"), "{failed}");
    assert!(std::fs::read_to_string(pdir.join("log.txt")).unwrap().contains("deliberate failure"));
    assert!(!pdir.join("done").exists() && !pdir.join("running").exists());
    // A second point goes missing.
    std::fs::remove_file(d.path().join("g/points/fold=2,arm=satm/done")).unwrap();

    let o = satm(d.path(), &["grid", "status", "g"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("3 points: 1 done, 1 failed, 1 missing"), "{out}");

    let o = satm(d.path(), &["grid", "collect", "g", "--strict"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("fold=1,arm=satm: failed (exit code 1"), "{out}");
    assert!(out.contains("fold=2,arm=satm: missing"), "{out}");
    assert!(
        out.contains("INCOMPLETE arm=satm: 1 of 3 points averaged; missing: fold=1,arm=satm; fold=2,arm=satm"),
        "{out}"
    );
    let acc = read_json(&d.path().join("g/collected/acc.json"));
    assert_eq!(acc["rows"][0][2]["n"], 1, "the mean is over the one done fold");
    assert!(acc["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("fold=2,arm=satm")));
    let all = read_json(&d.path().join("g/collected/collected.json"));
    assert_eq!(all["complete"], false);
    assert_eq!(all["not_done"].as_array().unwrap().len(), 2);
    assert!(
        std::fs::read_to_string(d.path().join("g/collected/summary.md")).unwrap().contains("fold=1,arm=satm: failed")
    );

    // A plain rerun runs the missing point but not the failed one.
    let o = satm(d.path(), &["grid", "g"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 failed — add --retry-failed"), "{}", text(&o));
    assert!(d.path().join("g/points/fold=2,arm=satm/done").exists());
    assert!(pdir.join("failed").exists());
    // --retry-failed runs exactly that one; now collect is complete and equals the hand computation.
    let o = satm(d.path(), &["grid", "submit", "--retry-failed", "g"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 to run"), "{}", text(&o));
    assert!(pdir.join("done").exists() && !pdir.join("failed").exists());
    let o = satm(d.path(), &["grid", "collect", "g", "--strict"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Not merged (not a number, table or record): 'tried' (bool)"),
        "{}",
        text(&o)
    );
    check_acc_table(&read_json(&d.path().join("g/collected/acc.json")), &[0.0, 1.0, 2.0], &[("satm", 0.3)]);
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs until Ctrl-C the first time, finishes the second time (its results.json remembers).
const RESUMABLE_SCRIPT: &str = r#"
if "started" in results() {
    record("value", 1.0 * fold);
} else {
    record("started", true);
    let i = 0;
    loop { i += 1; }
}
"#;

#[test]
fn grid_ctrl_c_stops_running_points_cleanly() {
    let d = tmp();
    std::fs::write(d.path().join("t.rhai"), RESUMABLE_SCRIPT).unwrap();
    let mut child = Command::new(SATM)
        .args(["grid", "t.rhai", "--over", "fold=0..1", "--dir", "g", "-j", "2", "--grace", "10"])
        .current_dir(d.path())
        .env("SATM_QUIET", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let p0 = d.path().join("g/points/fold=0");
    let p1 = d.path().join("g/points/fold=1");
    wait_until("both points to start", Duration::from_secs(30), || {
        [&p0, &p1].iter().all(|p| std::fs::read_to_string(p.join("results.json")).is_ok_and(|s| s.contains("started")))
    });
    let t0 = Instant::now();
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(9),
        "children stopped on SIGINT, before the grace period: {:?}",
        t0.elapsed()
    );
    assert!(err.contains("interrupted"), "{err}");
    for p in [&p0, &p1] {
        for m in ["done", "failed", "running"] {
            assert!(!p.join(m).exists(), "{}: no {m} marker after Ctrl-C", p.display());
        }
        assert!(std::fs::read_to_string(p.join("log.txt")).unwrap().contains("interrupted by satm grid"));
        let leftovers: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".satm-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "half-written files left: {leftovers:?}");
    }
    let o = satm(d.path(), &["grid", "status", "g"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 points: 0 done, 2 missing"), "{}", text(&o));
    // Rerunning resumes them (the script sees its earlier state) and finishes.
    let o = satm(d.path(), &["grid", "g", "-j", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(close(&read_json(&p1.join("results.json"))["value"], 1.0));
}

/// Ok(()) when a real Slurm answers, else why not. Asked once per test binary: with the controller down, sinfo
/// retries for about 9 s before it fails.
fn slurm_probe() -> &'static Result<(), String> {
    static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    PROBE.get_or_init(|| match Command::new("sinfo").arg("-h").output() {
        Err(e) => Err(format!("sinfo: {e}")),
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("sinfo failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
    })
}

/// Whether a real Slurm answers. Under CI (CI=true) or with SATM_SLURM=1 it must: the test fails instead of
/// passing without having run Slurm once. Elsewhere the test is skipped loudly, with the reason.
fn slurm_available(test: &str) -> bool {
    let why = match slurm_probe() {
        Ok(()) => return true,
        Err(why) => why,
    };
    if std::env::var("SATM_SLURM").as_deref() == Ok("1") {
        panic!("SATM_SLURM=1 but Slurm does not work ({why}); start it with: bash tools/slurm_local.sh start");
    }
    if common::under_ci() {
        panic!(
            "CI={} but Slurm does not work ({why}): under CI the real-Slurm tests must run; tools/test.sh starts it (as root) with tools/slurm_local.sh",
            std::env::var("CI").unwrap_or_default()
        );
    }
    // Straight to the stderr handle: eprintln! output of a passing test is captured and never shown.
    let msg = format!(
        "\n*** {test}: SKIPPED: real Slurm not available ({why}); run `bash tools/slurm_local.sh start` (root) first ***\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
    false
}

fn squeue_state(task: &str) -> String {
    let o = Command::new("squeue").args(["-h", "-j", task, "-o", "%T"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn grid_real_slurm_job_array_collects_the_same_table_as_local() {
    if !slurm_available("grid_real_slurm_job_array_collects_the_same_table_as_local") {
        return;
    }
    let d = tmp();
    std::fs::write(d.path().join("t.rhai"), TABLE_SCRIPT).unwrap();
    let common = ["grid", "t.rhai", "--over", "fold=0..2", "--over", "arm=ensemble"];
    let mut slurm_args = common.to_vec();
    slurm_args.extend(["--dir", "gs", "--executor", "slurm", "--profile", "local", "--wait"]);
    let o = satm(d.path(), &slurm_args);
    assert!(o.status.success(), "{}", text(&o));
    let g = read_json(&d.path().join("gs/grid.json"));
    let job = g["slurm"]["submissions"][0]["job_id"].as_str().unwrap().to_string();
    assert_eq!(g["slurm"]["submissions"][0]["array"], "0-2");
    let sbatch = std::fs::read_to_string(d.path().join("gs/job.sbatch")).unwrap();
    assert!(sbatch.contains("#SBATCH --array=0-2") && sbatch.contains("#SBATCH --requeue"), "{sbatch}");
    // Every point really ran as an array task of that job.
    for i in 0..3 {
        let done = read_json(&d.path().join(format!("gs/points/fold={i},arm=ensemble/done")));
        assert_eq!(done["slurm_job"], format!("{job}_{i}"));
        assert!(d.path().join(format!("gs/slurm/{job}_{i}.out")).exists());
    }
    let mut local_args = common.to_vec();
    local_args.extend(["--dir", "gl", "-j", "2"]);
    let o = satm(d.path(), &local_args);
    assert!(o.status.success(), "{}", text(&o));
    for g in ["gs", "gl"] {
        let o = satm(d.path(), &["grid", "collect", g, "--strict"]);
        assert!(o.status.success(), "{g}: {}", text(&o));
    }
    let s = read_json(&d.path().join("gs/collected/collected.json"));
    let l = read_json(&d.path().join("gl/collected/collected.json"));
    assert_eq!(s["tables"], l["tables"]);
    check_acc_table(&s["tables"]["acc"], &[0.0, 1.0, 2.0], &[("ensemble", 0.2)]);

    // Resubmitting a finished grid submits nothing.
    let o = satm(d.path(), &["grid", "submit", "gs"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stderr).contains("nothing to submit"), "{}", text(&o));
}

#[test]
fn grid_real_slurm_sigterm_checkpoints_requeues_and_resumes() {
    if !slurm_available("grid_real_slurm_sigterm_checkpoints_requeues_and_resumes") {
        return;
    }
    let d = tmp();
    std::fs::write(d.path().join("t.rhai"), RESUMABLE_SCRIPT).unwrap();
    let o = satm(
        d.path(),
        &["grid", "t.rhai", "--over", "fold=7..7", "--dir", "g", "--executor", "slurm", "--cpus-per-task", "1"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let job = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let task = format!("{job}_0");
    let p = d.path().join("g/points/fold=7");
    wait_until("the task to start the point", Duration::from_secs(180), || {
        std::fs::read_to_string(p.join("results.json")).is_ok_and(|s| s.contains("started"))
    });
    // What Slurm does before a time limit (--signal=B:TERM@60): SIGTERM to the batch process only.
    let o = Command::new("scancel").args(["--batch", "--signal=TERM", &task]).output().unwrap();
    assert!(o.status.success(), "scancel: {}", String::from_utf8_lossy(&o.stderr));
    wait_until("the task to requeue itself", Duration::from_secs(30), || squeue_state(&task) == "PENDING");
    assert!(!p.join("failed").exists() && !p.join("done").exists(), "an interrupted point is neither failed nor done");
    // Slurm holds a requeued job for ~2 minutes (BeginTime); release it sooner. Not in the same second as the
    // requeue: slurmd revokes the old run's credential at second granularity and kills a restart within that second
    // ("Killing non-startable batch job: Job credential revoked"), which is why Slurm itself holds the job.
    std::thread::sleep(Duration::from_secs(3));
    let o = Command::new("scontrol").args(["update", &format!("JobId={task}"), "StartTime=now"]).output().unwrap();
    assert!(o.status.success(), "scontrol update: {}", String::from_utf8_lossy(&o.stderr));
    wait_until("the requeued task to finish the point", Duration::from_secs(180), || {
        if p.join("done").exists() {
            return true;
        }
        // Fail at once, with Slurm's account, when the task ended without finishing the point.
        let state = squeue_state(&task);
        let ended = ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY"];
        if ended.contains(&state.as_str()) {
            std::thread::sleep(Duration::from_secs(2));
            if !p.join("done").exists() {
                let job = Command::new("scontrol").args(["show", "job", &task]).output().unwrap();
                panic!(
                    "the requeued task ended (squeue state '{state}') without finishing the point:\n{}",
                    String::from_utf8_lossy(&job.stdout)
                );
            }
        }
        false
    });
    let r = read_json(&p.join("results.json"));
    assert_eq!(r["started"], true);
    assert!(close(&r["value"], 7.0), "{r}");
    let log: String = std::fs::read_dir(d.path().join("g/slurm"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(log.contains("requeued job"), "{log}");
}
