//! Where a run's measurements go: the History, metrics.jsonl (one JSON object a line: metric points
//! `{"step","epoch","split","net","metric","value"}`, and steering events `{"event":"set"|"rejected",...}`), the
//! progress bar, and the `RunControl` (a `RunStatus` after every step, the History at log points).
use super::History;
use super::control::{RunControl, RunState, RunStatus, SteerEvent, TraineeStatus};
use super::steer::{Origin, Rejected, event_line};
use super::step::StepOut;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Running sums of one trainee's training metrics between two log points.
#[derive(Default, Clone)]
struct Acc {
    n: f64,
    sums: BTreeMap<&'static str, f64>,
}

impl Acc {
    fn mean(&self, k: &str) -> Option<f64> {
        (self.n > 0.0).then(|| self.sums.get(k).map(|s| s / self.n)).flatten()
    }

    fn status(&self, label: &str) -> TraineeStatus {
        TraineeStatus {
            label: label.to_string(),
            clean_loss: self.mean("clean_loss"),
            clean_acc: self.mean("clean_acc"),
            adv_loss: self.mean("adv_loss"),
            adv_acc: self.mean("adv_acc"),
            da_loss: self.mean("da_loss"),
            domain_acc: self.mean("domain_acc"),
        }
    }
}

/// Steps timed for the images-per-second estimate.
const RATE_WINDOW: usize = 20;

pub struct Sink {
    pub history: History,
    file: Option<std::fs::File>,
    pb: indicatif::ProgressBar,
    control: Option<Arc<RunControl>>,
    /// The trainees' labels.
    labels: Vec<String>,
    accs: Vec<Acc>,
    /// The trainees' means over the last complete log window.
    last: Vec<TraineeStatus>,
    total: usize,
    batch_size: usize,
    times: VecDeque<(usize, Instant)>,
}

impl Sink {
    /// Appends to `dir/metrics.jsonl` when `dir` is given; shows a progress bar when `progress`. `history` holds
    /// what a resumed run recorded so far; `step0` is where it starts.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        dir: Option<&Path>,
        progress: bool,
        control: Option<Arc<RunControl>>,
        labels: Vec<String>,
        history: History,
        step0: usize,
        total: usize,
        batch_size: usize,
    ) -> Result<Sink> {
        if let (Some(d), true) = (dir, step0 > 0) {
            trim_to_checkpoint(&d.join("metrics.jsonl"), step0)?;
        }
        let file = match dir {
            Some(d) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(d.join("metrics.jsonl"))
                    .with_context(|| format!("opening {}", d.join("metrics.jsonl").display()))?,
            ),
            None => None,
        };
        let pb = if progress {
            let pb = indicatif::ProgressBar::new(total as u64);
            pb.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed}<{eta} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb.set_position(step0 as u64);
            pb
        } else {
            indicatif::ProgressBar::hidden()
        };
        let k = labels.len();
        let last = labels.iter().map(|l| TraineeStatus { label: l.clone(), ..Default::default() }).collect();
        let mut times = VecDeque::new();
        times.push_back((step0, Instant::now()));
        Ok(Sink { history, file, pb, control, labels, accs: vec![Acc::default(); k], last, total, batch_size, times })
    }

    pub fn label(&self, k: usize) -> String {
        self.labels[k].clone()
    }

    fn write_line(&mut self, v: &serde_json::Value) {
        if let Some(f) = self.file.as_mut() {
            // One write per line: a killed process leaves whole lines behind.
            let _ = f.write_all(format!("{v}\n").as_bytes());
        }
    }

    /// One measured value: into the History and metrics.jsonl.
    pub fn emit(&mut self, step: usize, epoch: usize, split: &str, net: &str, metric: &str, v: f64) {
        self.history.push(step, epoch, split, net, metric, v);
        let line =
            serde_json::json!({"step": step, "epoch": epoch, "split": split, "net": net, "metric": metric, "value": v});
        self.write_line(&line);
    }

    /// A message above the progress bar (nothing when it is hidden).
    pub fn println(&self, msg: String) {
        self.pb.println(msg);
    }

    /// An applied steering change (a replayed one is in metrics.jsonl already).
    pub fn event(&mut self, e: &SteerEvent, origin: Origin) {
        if origin != Origin::Replay {
            self.write_line(&event_line(e, origin));
        }
        self.println(format!("satm: step {}: {} {} -> {}", e.step, e.key, e.old, e.new));
    }

    /// A live change that was not applied.
    pub fn rejected(&mut self, r: &Rejected) {
        let line =
            serde_json::json!({"event": "rejected", "step": r.step, "key": r.key, "value": r.value, "error": r.error});
        self.write_line(&line);
        self.println(format!("satm: step {}: set {} = {} rejected: {}", r.step, r.key, r.value, r.error));
    }

    /// Adds trainee `k`'s step to its log window.
    pub fn add(&mut self, k: usize, out: &StepOut) {
        let a = &mut self.accs[k];
        for (name, v) in &out.metrics {
            *a.sums.entry(name).or_insert(0.0) += v;
        }
        *a.sums.entry("total_loss").or_insert(0.0) += out.total;
        a.n += 1.0;
    }

    /// A log point after `step`: each trainee's means over the window (and λ when it has a DA term, and the lr),
    /// the progress bar's message, and the History to the control.
    pub fn log(&mut self, step: usize, epoch: usize, lambda: Option<f64>, lr: f64) {
        let mut msg = String::new();
        for k in 0..self.labels.len() {
            let a = std::mem::take(&mut self.accs[k]);
            if a.n == 0.0 {
                continue;
            }
            let label = self.labels[k].clone();
            for (name, sum) in &a.sums {
                self.emit(step, epoch, "train", &label, name, sum / a.n);
            }
            if let Some(l) = lambda {
                self.emit(step, epoch, "train", &label, "lambda", l);
            }
            self.emit(step, epoch, "train", &label, "lr", lr);
            msg.push_str(&format!(
                "{label}: clean {:.2} adv {} ",
                a.mean("clean_acc").unwrap_or(f64::NAN),
                a.mean("adv_acc").map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
            ));
            if let Some(d) = a.mean("da_loss") {
                msg.push_str(&format!("da {d:.3}/{:.2} ", a.mean("domain_acc").unwrap_or(f64::NAN)));
            }
            self.last[k] = a.status(&label);
        }
        self.pb.set_message(msg);
        self.publish_history();
    }

    pub fn publish_history(&self) {
        if let Some(c) = &self.control {
            c.publish(c.status(), Some(&self.history));
        }
    }

    /// The step counter after `step` steps.
    pub fn position(&mut self, step: usize) {
        self.pb.set_position(step as u64);
        self.times.push_back((step, Instant::now()));
        while self.times.len() > RATE_WINDOW + 1 {
            self.times.pop_front();
        }
    }

    /// Restarts the rate estimate (after a pause).
    pub fn restart_clock(&mut self, step: usize) {
        self.times.clear();
        self.times.push_back((step, Instant::now()));
    }

    /// Publishes the run's status at `step` to the control (if any).
    pub fn publish(&self, state: RunState, step: usize, settings: Vec<(String, f64)>) {
        let Some(c) = &self.control else { return };
        let (img_per_s, eta_s) = match (self.times.front(), self.times.back()) {
            (Some((s0, t0)), Some((s1, t1))) if s1 > s0 => {
                let dt = t1.duration_since(*t0).as_secs_f64().max(1e-9);
                let steps_per_s = (s1 - s0) as f64 / dt;
                (steps_per_s * self.batch_size as f64, Some(self.total.saturating_sub(step) as f64 / steps_per_s))
            }
            _ => (0.0, None),
        };
        // The current window when it has steps, else the last complete one.
        let trainees = self
            .accs
            .iter()
            .zip(&self.last)
            .zip(&self.labels)
            .map(|((a, last), l)| if a.n > 0.0 { a.status(l) } else { last.clone() })
            .collect();
        let status = RunStatus { state, step, total: self.total, img_per_s, eta_s, trainees, settings, error: None };
        c.publish(status, None);
    }

    pub fn abandon(&self) {
        self.pb.abandon();
    }

    pub fn finish(&self) {
        self.pb.finish_and_clear();
    }
}

/// A resumed run's metrics.jsonl as of its checkpoint at `step0`: metric lines after `step0` (the killed process
/// logged them, the resumed one logs them again) and a half-written last line are dropped; steering events are kept
/// (live ones after the checkpoint are replayed, and not written twice). Rewritten atomically.
fn trim_to_checkpoint(path: &Path, step0: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let mut kept = String::with_capacity(text.len());
    let mut dropped = 0usize;
    for line in text.lines() {
        let keep = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) if v.get("event").is_some() => true,
            Ok(v) => v["step"].as_u64().is_some_and(|s| s as usize <= step0),
            Err(_) => false,
        };
        if keep {
            kept.push_str(line);
            kept.push('\n');
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        crate::core::fsutil::atomic_write(path, kept.as_bytes())
            .with_context(|| format!("rewriting {} as of the checkpoint at step {step0}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn resumed_metrics_keep_lines_up_to_the_checkpoint_and_every_event() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let lines = [
            r#"{"step":2,"epoch":0,"split":"train","net":"A","metric":"clean_loss","value":1.0}"#,
            r#"{"event":"set","step":3,"key":"lr","old":0.1,"new":0.2,"by":"set"}"#,
            r#"{"step":4,"epoch":0,"split":"train","net":"A","metric":"clean_loss","value":0.9}"#,
            r#"{"event":"set","step":5,"key":"lr","old":0.2,"new":0.3,"by":"set"}"#,
            r#"{"step":6,"epoch":0,"split":"train","net":"A","metric":"clean_loss","value":0.8}"#,
        ];
        std::fs::write(&p, format!("{}\n{{\"step\":8,\"epo", lines.join("\n"))).unwrap();
        super::trim_to_checkpoint(&p, 4).unwrap();
        let got = std::fs::read_to_string(&p).unwrap();
        assert_eq!(got, format!("{}\n{}\n{}\n{}\n", lines[0], lines[1], lines[2], lines[3]));
    }
}
