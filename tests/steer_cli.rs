//! Steering is reproducible: a `satm run` with planned steering (`steer:`) is SIGKILLed after its first change, a
//! second process resumes from the run directory (the change comes back from the checkpoint's events, the later
//! one from the plan), and the final weights equal the uninterrupted steered run's; a run with a different change
//! does not. Bad `steer:` entries are errors that say what is wrong.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SCRIPT: &str = r#"
seed(3);
let ds = synthetic(#{n: 256, classes: 4, size: 16, seed: 1});
let a = model("vgg_s", #{classes: 4, width: 0.25, size: 16});
let b = model("vggbn_s", #{classes: 4, width: 0.25, size: 16});
let r = satm(#{nets: [a, b], data: ds, steps: 20, batch: 64, lr: 0.002, optimizer: "adam",
               steer: [#{step: 3, r_da: 0.3}, #{step: 12, lr: param("lr2", 0.004), lambda: 0.5}],
               checkpoint_every: 1, name: "k", resume: param("resume", ""), progress: false, precision: "fp32"});
a.save(out_path("a.safetensors"));
b.save(out_path("b.safetensors"));
print(`steps ${r.steps}`);
"#;

fn satm(script: &Path, out: &Path, sets: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_satm"));
    c.arg("run").arg(script).arg("--out").arg(out).arg("-q");
    for s in sets {
        c.arg("--set").arg(s);
    }
    c
}

fn latest_step(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run.join("checkpoints/latest.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
}

fn read(p: PathBuf) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = tch::Tensor::read_safetensors(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .into_iter()
        .filter(|(_, t)| t.kind() == tch::Kind::Float)
        .map(|(n, t)| (n, Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The largest absolute difference between the two runs' weights of both networks.
fn max_diff(x: &Path, y: &Path) -> f32 {
    let mut m = 0f32;
    for net in ["a", "b"] {
        let (p, q) = (read(x.join(format!("{net}.safetensors"))), read(y.join(format!("{net}.safetensors"))));
        assert_eq!(p.len(), q.len());
        for ((n, u), (n2, v)) in p.iter().zip(&q) {
            assert_eq!(n, n2);
            m = u.iter().zip(v).map(|(a, b)| (a - b).abs()).fold(m, f32::max);
        }
    }
    m
}

/// The `{"event":"set"}` lines of a metrics.jsonl: (step, key, new).
fn events(run: &Path) -> Vec<(u64, String, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "set")
        .map(|v| (v["step"].as_u64().unwrap(), v["key"].as_str().unwrap().to_string(), v["new"].as_f64().unwrap()))
        .collect()
}

#[test]
fn sigkilled_steered_run_resumes_onto_the_uninterrupted_steered_trajectory() {
    let root = std::env::temp_dir().join(format!("satm-steer-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let script = root.join("k.rhai");
    std::fs::write(&script, SCRIPT).unwrap();

    let full = root.join("full");
    let o = satm(&script, &full, &[]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = vec![(3, "r_da".to_string(), 0.3), (12, "lambda".to_string(), 0.5), (12, "lr".to_string(), 0.004)];
    assert_eq!(events(&full.join("k")), want, "the plan's events, in metrics.jsonl");
    let ck =
        std::fs::read_to_string(full.join("k/checkpoints").join(format!("step-{:07}", 20)).join("state.json")).unwrap();
    let ck: serde_json::Value = serde_json::from_str(&ck).unwrap();
    // state.json: {"checkpoint": {"state": ..., "files": checksums}, "sha256": ...}
    let events_saved = &ck["checkpoint"]["state"]["events"];
    assert_eq!(events_saved.as_array().map(|a| a.len()), Some(3), "the final checkpoint holds the events: {ck}");

    // The control: the same run with a different second change.
    let other = root.join("other");
    let o = satm(&script, &other, &["lr2=0.001".into()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = max_diff(&full, &other);
    assert!(d > 1e-3, "a different steering change left the weights within {d} of the first run's");

    let part = root.join("part");
    let mut child = satm(&script, &part, &[]).spawn().unwrap();
    let t0 = Instant::now();
    let killed_at = loop {
        if let Some(s) = latest_step(&part.join("k"))
            && s >= 5
        {
            child.kill().unwrap(); // SIGKILL: no chance to write anything more
            break s;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run finished before it could be killed");
        assert!(t0.elapsed() < Duration::from_secs(300), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(5));
    };
    child.wait().unwrap();
    assert!(killed_at < 20);
    assert!(!part.join("a.safetensors").exists());
    let resume = format!("resume={}", part.join("k").display());
    let out = satm(&script, &part, &[resume]).output().unwrap();
    assert!(out.status.success(), "resume failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("steps 20"));
    let d = max_diff(&full, &part);
    assert!(d < 1e-5, "the resumed steered run (killed after step {killed_at}) differs by {d}");
    eprintln!("killed after step {killed_at}; resumed run within {d} of the uninterrupted one");
    let _ = std::fs::remove_dir_all(&root);
}

fn script_error(body: &str) -> String {
    let root = std::env::temp_dir().join(format!("satm-steer-bad-{}-{}", std::process::id(), body.len()));
    std::fs::create_dir_all(&root).unwrap();
    let script = root.join("bad.rhai");
    let text = format!(
        "let ds = synthetic(#{{n: 32, classes: 4, size: 16, seed: 1}});\n\
         let a = model(\"vgg_s\", #{{classes: 4, width: 0.25, size: 16}});\n\
         let b = model(\"vgg_s\", #{{classes: 4, width: 0.25, size: 16}});\n\
         satm(#{{nets: [a, b], data: ds, steps: 4, batch: 16, progress: false, {body}}});\n"
    );
    std::fs::write(&script, text).unwrap();
    let o = satm(&script, &root.join("out"), &[]).output().unwrap();
    let _ = std::fs::remove_dir_all(&root);
    assert!(!o.status.success(), "{body}: the script ran");
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn bad_steer_entries_are_clear_errors() {
    let e = script_error("steer: [#{step: 1, r_dax: 0.3}]");
    assert!(e.contains("r_dax") && e.contains("r_da") && e.contains("lambda"), "{e}");
    let e = script_error("steer: [#{step: 4, lr: 0.1}]");
    assert!(e.contains("never applies") && e.contains("4 steps"), "{e}");
    let e = script_error("steer: [#{r_da: 0.3}]");
    assert!(e.contains("steer[0]") && e.contains("step"), "{e}");
    let e = script_error("steer: [#{step: 1}]");
    assert!(e.contains("changes nothing"), "{e}");
    let e = script_error("r_da: 0.0, steer: [#{step: 1, r_da: 0.3}]");
    assert!(e.contains("no domain-classifier heads"), "{e}");
    let e = script_error("steer: [#{step: 1, lr: -1.0}]");
    assert!(e.contains("lr must be > 0"), "{e}");
    let e = script_error("steer: 3");
    assert!(e.contains("'steer' must be an array"), "{e}");
}
