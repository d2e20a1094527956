//! Kill-and-resume through the real binary: a `satm run` process is SIGKILLed mid-training after a checkpoint, a
//! second process resumes from the run directory, and every saved tensor (integer BN counters included) equals an
//! uninterrupted run's.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SCRIPT: &str = r#"
seed(3);
let ds = synthetic(#{n: 128, classes: 4, size: 16, seed: 1});
let a = model("vgg_s", #{classes: 4, width: 0.25, size: 16});
let b = model("vggbn_s", #{classes: 4, width: 0.25, size: 16});
let r = satm(#{nets: [a, b], data: ds, steps: 24, batch: 32, lr: 0.002, optimizer: "adam", augment: true,
               checkpoint_every: 4, name: "k", resume: param("resume", ""), progress: false, precision: "fp32"});
a.save(out_path("a.safetensors"));
b.save(out_path("b.safetensors"));
print(`steps ${r.steps}`);
"#;

fn satm(script: &Path, out: &Path, resume: Option<&Path>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_satm"));
    c.arg("run").arg(script).arg("--out").arg(out).arg("-q");
    if let Some(r) = resume {
        c.arg("--set").arg(format!("resume={}", r.display()));
    }
    c
}

fn latest_step(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run.join("checkpoints/latest.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
}

/// Every tensor a saved network holds, sorted by name: floats and the integer BN counters (`num_batches_tracked`).
fn read(p: PathBuf) -> Vec<(String, tch::Tensor)> {
    let mut v = tch::Tensor::read_safetensors(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn sigkilled_run_resumes_onto_the_uninterrupted_trajectory() {
    let root = std::env::temp_dir().join(format!("satm-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let script = root.join("k.rhai");
    std::fs::write(&script, SCRIPT).unwrap();

    let full = root.join("full");
    let st = satm(&script, &full, None).status().unwrap();
    assert!(st.success());

    let part = root.join("part");
    let mut child = satm(&script, &part, None).spawn().unwrap();
    let t0 = Instant::now();
    let killed_at = loop {
        if let Some(s) = latest_step(&part.join("k"))
            && s >= 8
        {
            child.kill().unwrap(); // SIGKILL: no chance to write anything more
            break s;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run finished before it could be killed");
        assert!(t0.elapsed() < Duration::from_secs(300), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(10));
    };
    child.wait().unwrap();
    assert!(killed_at < 24);
    assert!(!part.join("a.safetensors").exists());

    let out = satm(&script, &part, Some(&part.join("k"))).output().unwrap();
    assert!(out.status.success(), "resume failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("steps 24"));
    let mut counters = 0;
    for net in ["a", "b"] {
        let (x, y) = (read(full.join(format!("{net}.safetensors"))), read(part.join(format!("{net}.safetensors"))));
        let names = |v: &[(String, tch::Tensor)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&x), names(&y), "{net}: the resumed run saved other tensors");
        for ((n, p), (_, q)) in x.iter().zip(&y) {
            assert_eq!((p.kind(), p.size()), (q.kind(), q.size()), "{net}.{n}");
            if p.is_floating_point() {
                let d = (p - q).abs().max().double_value(&[]);
                assert!(d < 1e-5, "{net}.{n} differs by {d} after resuming from step {killed_at}");
            } else {
                // Integer buffers exactly: a resume that restarts BN's counters ends with fewer batches tracked.
                counters += 1;
                let v = |t: &tch::Tensor| Vec::<i64>::try_from(&t.flatten(0, -1)).unwrap();
                assert!(
                    p.equal(q),
                    "{net}.{n}: {:?} after resuming from step {killed_at}, {:?} uninterrupted",
                    v(q),
                    v(p)
                );
            }
        }
    }
    assert!(counters > 0, "vggbn_s's num_batches_tracked counters were compared");
    let _ = std::fs::remove_dir_all(&root);
}
