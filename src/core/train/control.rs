//! Steering a run while it trains: the handle shared between the training loop and whoever watches it (a background
//! run in the REPL, a test). The loop reads it only at step boundaries, so every change applies between two steps and
//! is recorded as an event (step, key, old, new); `resume` replays the events at the same steps.
//!
//! Contract (the loop's side): at the top of each step the loop calls `take_pending()` and applies the changes in
//! order, recording each as a `SteerEvent` in metrics.jsonl and in the checkpoint; it blocks in `wait_while_paused()`
//! while paused; it checkpoints and ends when `stop_requested()`; after each step it publishes `RunStatus` and its
//! History with `publish()`.
use super::History;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// The settings a running run accepts through `set`.
pub const STEERABLE: &[&str] = &["r_adv", "r_da", "lambda", "lr", "eps", "alpha"];

/// One applied change: from `step` on (before that step's batch), `key` is `new` instead of `old`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteerEvent {
    pub step: usize,
    pub key: String,
    pub old: f64,
    pub new: f64,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    #[default]
    Starting,
    Running,
    Paused,
    /// Stop requested; finishing the current step and writing a checkpoint.
    Stopping,
    Finished,
    Failed,
}

/// One trainee's latest training metrics (means over the last log window).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TraineeStatus {
    pub label: String,
    pub clean_loss: Option<f64>,
    pub clean_acc: Option<f64>,
    pub adv_loss: Option<f64>,
    pub adv_acc: Option<f64>,
    pub da_loss: Option<f64>,
    pub domain_acc: Option<f64>,
}

/// A live snapshot of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunStatus {
    pub state: RunState,
    pub step: usize,
    pub total: usize,
    /// Training images per second over the recent steps.
    pub img_per_s: f64,
    /// Estimated seconds to the end.
    pub eta_s: Option<f64>,
    pub trainees: Vec<TraineeStatus>,
    /// The settings in force now (after every applied `set`).
    pub settings: Vec<(String, f64)>,
    /// The error, when `state` is Failed.
    pub error: Option<String>,
}

/// The shared handle. All methods take `&self`; put it in an `Arc`.
#[derive(Default)]
pub struct RunControl {
    stop: AtomicBool,
    paused: Mutex<bool>,
    /// The loop is blocked in `wait_while_paused` (between two steps: it touches no weights).
    parked: AtomicBool,
    resumed: Condvar,
    pending: Mutex<Vec<(String, f64)>>,
    status: Mutex<RunStatus>,
    history: Mutex<History>,
    events: Mutex<Vec<SteerEvent>>,
}

impl RunControl {
    pub fn new() -> RunControl {
        RunControl::default()
    }

    /// Queues a change for the next step boundary; `key` must be one of `STEERABLE`.
    pub fn set(&self, key: &str, value: f64) -> anyhow::Result<()> {
        if !STEERABLE.contains(&key) {
            anyhow::bail!("'{key}' cannot be changed while a run trains; steerable: {}", STEERABLE.join(", "));
        }
        if !value.is_finite() {
            anyhow::bail!("{key} = {value}: the value must be finite");
        }
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).push((key.to_string(), value));
        Ok(())
    }

    /// The loop's side: the changes queued since the last call, in the order they were made.
    pub fn take_pending(&self) -> Vec<(String, f64)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn pause(&self) {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }

    pub fn resume(&self) {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.resumed.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the loop to checkpoint and end after the current step (also wakes a paused loop).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.resumed.notify_all();
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The loop's side: blocks while paused (returns at once when a stop is requested).
    pub fn wait_while_paused(&self) {
        let mut p = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        self.parked.store(*p && !self.stop_requested(), Ordering::SeqCst);
        while *p && !self.stop_requested() {
            p = self
                .resumed
                .wait_timeout(p, std::time::Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        self.parked.store(false, Ordering::SeqCst);
    }

    /// Whether the loop is blocked in `wait_while_paused` now: paused at a step boundary, so its networks may be read
    /// (what `snapshot` of a background run waits for).
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }

    /// The loop's side: the latest status and history.
    pub fn publish(&self, status: RunStatus, history: Option<&History>) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
        if let Some(h) = history {
            *self.history.lock().unwrap_or_else(|e| e.into_inner()) = h.clone();
        }
    }

    /// The loop's side: records an applied change.
    pub fn record_event(&self, e: SteerEvent) {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).push(e);
    }

    pub fn status(&self) -> RunStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A copy of the history as of the last published step.
    pub fn history(&self) -> History {
        self.history.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn events(&self) -> Vec<SteerEvent> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Marks the run's final state (Finished / Failed with its error).
    pub fn finish(&self, state: RunState, error: Option<String>) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.state = state;
        s.error = error;
    }
}
