//! The loop's side of `RunControl`: live changes become events (control, metrics.jsonl, checkpoint); a live change
//! that metrics.jsonl recorded after the last checkpoint is replayed at its step when the run resumes (a process
//! killed between the two leaves exactly that behind); r_da cannot be raised on a run without DA heads; stop ends
//! the run with a checkpoint.
use satm::core::data::Dataset;
use satm::core::models::{ModelSpec, Net};
use satm::core::train::control::{RunControl, RunState};
use satm::core::train::{self, TrainConfig, TrainResult};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Tensor};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn data() -> Dataset {
    satm::core::data::synthetic(&satm::core::data::SyntheticOpts {
        n: 96,
        classes: 4,
        size: 16,
        seed: 2,
        ..Default::default()
    })
    .unwrap()
}

fn nets() -> Vec<Net> {
    ["vgg_s", "vggbn_s"]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            satm::core::device::seed_everything(40 + i as u64).unwrap();
            let spec = ModelSpec { arch: a.to_string(), classes: 4, width: 0.25, size: 16, ..ModelSpec::default() };
            Net::new(&spec, Device::Cpu).unwrap()
        })
        .collect()
}

fn cfg(steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 32,
        lr: 0.002,
        optimizer: satm::core::train::optim::OptimizerKind::Adam,
        weight_decay: 0.0,
        log_every: 1,
        keep_best: false,
        seed: 7,
        precision: satm::core::device::Precision::Fp32,
        ..TrainConfig::default()
    }
}

fn go(
    nets: &mut [Net],
    d: &Dataset,
    cfg: TrainConfig,
    dir: &Path,
    resume: bool,
    control: Option<Arc<RunControl>>,
) -> TrainResult {
    train::run(train::Run {
        trainees: nets.iter_mut().collect(),
        frozen: vec![],
        train: d,
        val: None,
        cfg,
        dir: Some(dir.to_path_buf()),
        resume: resume.then(|| dir.to_path_buf()),
        progress: false,
        control,
    })
    .unwrap()
}

fn weights(nets: &[Net]) -> Vec<Tensor> {
    nets.iter().flat_map(|n| n.named_variables().into_iter().map(|(_, t)| t.detach().copy())).collect()
}

fn max_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs().max().double_value(&[])).fold(0.0, f64::max)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Puts back the checkpoints saved at step 3, as if the process that went on had been killed before its next one.
fn back_to_step_3(run: &Path, saved: &Path) {
    std::fs::remove_dir_all(run.join("checkpoints")).unwrap();
    copy_dir(saved, &run.join("checkpoints"));
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("satm-steer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn live_changes_logged_after_the_checkpoint_are_replayed_on_resume() {
    let _serial = serial();
    let d = data();
    let root = tmp("replay");
    let run = root.join("run");
    let saved = root.join("saved");
    let mut n = nets();
    go(&mut n, &d, cfg(3), &run, false, None);
    copy_dir(&run.join("checkpoints"), &saved);

    // The steered continuation: two changes queued before it starts apply at its first step (3).
    let control = Arc::new(RunControl::new());
    control.set("r_da", 0.3).unwrap();
    control.set("lr", 0.004).unwrap();
    let mut n = nets();
    let r = go(&mut n, &d, cfg(8), &run, true, Some(control.clone()));
    assert_eq!(r.steps, 8);
    let want = weights(&n);
    let ev = control.events();
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!((ev[0].step, ev[0].key.as_str(), ev[0].old, ev[0].new), (3, "r_da", 0.1, 0.3));
    assert_eq!((ev[1].step, ev[1].key.as_str(), ev[1].old, ev[1].new), (3, "lr", 0.002, 0.004));
    let st = control.status();
    assert_eq!((st.state, st.step, st.total), (RunState::Finished, 8, 8));
    assert!(st.settings.contains(&("r_da".to_string(), 0.3)), "{:?}", st.settings);
    assert_eq!(st.trainees.len(), 2);
    assert!(st.trainees[0].da_loss.is_some() && st.trainees[0].clean_acc.is_some(), "{:?}", st.trainees[0]);
    assert!(control.history().series("train", &r.labels[0], "clean_loss").len() >= 8);
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"event\":\"set\"") && l.contains("\"by\":\"set\"")).count(), 2);

    // Killed before any checkpoint after step 3: the events are only in metrics.jsonl. The resumed run (nobody
    // steering it) replays them at step 3 and ends where the steered run ended.
    back_to_step_3(&run, &saved);
    let mut n = nets();
    let control = Arc::new(RunControl::new());
    go(&mut n, &d, cfg(8), &run, true, Some(control.clone()));
    let diff = max_diff(&weights(&n), &want);
    assert!(diff < 1e-5, "the replayed run differs from the steered one by {diff}");
    assert_eq!(control.events().len(), 2, "the replayed events are the run's events");

    // The control: without the logged events the same resume ends elsewhere.
    back_to_step_3(&run, &saved);
    let stripped: Vec<&str> = log.lines().filter(|l| !l.contains("\"event\"")).collect();
    std::fs::write(run.join("metrics.jsonl"), stripped.join("\n") + "\n").unwrap();
    let mut n = nets();
    go(&mut n, &d, cfg(8), &run, true, None);
    let diff = max_diff(&weights(&n), &want);
    assert!(diff > 1e-3, "dropping the changes moved the weights by only {diff}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn raising_r_da_without_da_heads_is_rejected_and_stop_checkpoints() {
    let _serial = serial();
    let d = data();
    let root = tmp("reject");
    let control = Arc::new(RunControl::new());
    control.set("r_da", 0.3).unwrap();
    control.set("r_adv", 0.5).unwrap();
    let mut n = nets();
    let r = go(&mut n, &d, TrainConfig { r_da: 0.0, ..cfg(2) }, &root, false, Some(control.clone()));
    assert_eq!(r.stopped, "completed");
    let ev = control.events();
    assert_eq!(ev.len(), 1, "only r_adv applies: {ev:?}");
    assert_eq!(ev[0].key, "r_adv");
    let log = std::fs::read_to_string(root.join("metrics.jsonl")).unwrap();
    let rejected: Vec<&str> = log.lines().filter(|l| l.contains("\"event\":\"rejected\"")).collect();
    assert_eq!(rejected.len(), 1, "{log}");
    assert!(rejected[0].contains("r_da") && rejected[0].contains("no domain-classifier heads"), "{}", rejected[0]);

    // A stop asked for before the next step: the run ends at once, normally, with a checkpoint of where it is.
    let control = Arc::new(RunControl::new());
    control.stop();
    let mut n = nets();
    let r = go(&mut n, &d, TrainConfig { r_da: 0.0, ..cfg(6) }, &root, true, Some(control.clone()));
    assert_eq!((r.stopped.as_str(), r.steps), ("stopped", 2));
    assert!(r.checkpoint.as_ref().is_some_and(|c| c.ends_with("step-0000002")), "{:?}", r.checkpoint);
    assert_eq!(control.status().state, RunState::Finished);
    let _ = std::fs::remove_dir_all(&root);
}

/// A run paused before it starts waits at its first step boundary (the step does not advance), takes a change made
/// meanwhile at that boundary, and goes on when resumed.
#[test]
fn a_paused_run_waits_at_a_step_boundary_and_goes_on_when_resumed() {
    let _serial = serial();
    let root = tmp("pause");
    let control = Arc::new(RunControl::new());
    control.pause();
    let (c, dir) = (control.clone(), root.clone());
    let h = std::thread::spawn(move || {
        let d = data();
        let mut n = nets();
        go(&mut n, &d, cfg(3), &dir, false, Some(c)).steps
    });
    let t0 = std::time::Instant::now();
    while control.status().state != RunState::Paused {
        assert!(t0.elapsed() < std::time::Duration::from_secs(120), "the run never reported Paused");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    control.set("lr", 0.001).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!((control.status().state, control.status().step), (RunState::Paused, 0), "a paused run moved");
    assert!(control.events().is_empty(), "a change applied while paused, not at the boundary after it");
    control.resume();
    assert_eq!(h.join().unwrap(), 3);
    let ev = control.events();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].step, ev[0].key.as_str(), ev[0].new), (0, "lr", 0.001));
    assert_eq!(control.status().state, RunState::Finished);
    let _ = std::fs::remove_dir_all(&root);
}
