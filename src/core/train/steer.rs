//! Steering a run: the settings that may change while it trains (`control::STEERABLE`), and where changes come from.
//! At the top of each step, in this order: the config's planned changes (`TrainConfig.steer`) due at that step, the
//! live changes of an interrupted run read back from metrics.jsonl (resume), then the changes queued on the
//! `RunControl`. Each applied change is an event (step, key, old, new): in the checkpoint, in metrics.jsonl (one
//! `{"event":"set",...}` line; planned ones carry `"by":"plan"`, live ones `"by":"set"`) and on the control.
//!
//! Resuming from a checkpoint at step S replays the checkpoint's events (they rebuild the settings in force at S),
//! the plan from S on, and the live events that metrics.jsonl holds for steps >= S, each at its step: a steered run
//! killed and resumed takes the same settings at the same steps as the same run uninterrupted.
//!
//! `r_da` cannot be raised above 0 in a run that started with r_da = 0: such a run has no domain-classifier heads
//! (nor their optimizer state). The change is rejected with an error that says so (a planned one before the run
//! starts; a live one is not applied and is reported as a `{"event":"rejected",...}` line); start with a small
//! r_da instead, or set it to 0 and back later.
use super::config::{LambdaSchedule, PlannedChange, SourcePolicy, TrainConfig};
use super::control::{RunControl, STEERABLE, SteerEvent};
use anyhow::{Result, bail};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

/// The steerable settings as they stand now.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub r_adv: f64,
    pub r_da: f64,
    /// A set λ replaces the schedule by that constant.
    pub lambda: LambdaSchedule,
    /// The base learning rate (the schedule scales it).
    pub lr: f64,
    pub eps: f64,
    /// None: eps / 2, following eps.
    pub alpha: Option<f64>,
}

impl Settings {
    pub fn new(cfg: &TrainConfig) -> Settings {
        Settings { r_adv: cfg.r_adv, r_da: cfg.r_da, lambda: cfg.lambda, lr: cfg.lr, eps: cfg.eps, alpha: cfg.alpha }
    }

    pub fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(self.eps / 2.0)
    }

    /// The value of `key` now (`lambda`: the schedule's value at `progress`, the fraction of training done).
    pub fn value(&self, key: &str, progress: f64) -> f64 {
        match key {
            "r_adv" => self.r_adv,
            "r_da" => self.r_da,
            "lambda" => self.lambda.at(progress),
            "lr" => self.lr,
            "eps" => self.eps,
            "alpha" => self.alpha(),
            _ => f64::NAN,
        }
    }

    /// Every steerable setting and its value now.
    pub fn list(&self, progress: f64) -> Vec<(String, f64)> {
        STEERABLE.iter().map(|k| (k.to_string(), self.value(k, progress))).collect()
    }

    /// Whether `key = value` may be applied. `da_heads`: the trainees have domain-classifier heads; `has_source`:
    /// some trainee has a network to take adversarial examples from.
    pub fn check(&self, key: &str, value: f64, da_heads: bool, has_source: bool) -> Result<()> {
        if !STEERABLE.contains(&key) {
            bail!("'{key}' cannot be changed while a run trains; steerable: {}", STEERABLE.join(", "));
        }
        if !value.is_finite() {
            bail!("{key} = {value}: the value must be finite");
        }
        let nonneg = || -> Result<()> {
            if value < 0.0 {
                bail!("{key} must be >= 0, got {value}");
            }
            Ok(())
        };
        match key {
            "r_adv" | "r_da" => {
                nonneg()?;
                if value > 0.0 && !has_source {
                    bail!("{key} = {value} needs a source network, and no trainee of this run has one");
                }
                if key == "r_da" && value > 0.0 && !da_heads {
                    bail!(
                        "r_da = {value}: this run started with r_da = 0 and has no domain-classifier heads; start it \
                         with r_da > 0 to steer r_da (setting it to 0 switches the term off)"
                    );
                }
            }
            "lambda" => nonneg()?,
            "lr" if value <= 0.0 => bail!("lr must be > 0, got {value}"),
            "eps" => {
                if !(0.0..=1.0).contains(&value) {
                    bail!("eps is in [0,1] pixel units (16/256 = 0.0625), got {value}");
                }
                if let Some(a) = self.alpha
                    && a > value
                {
                    bail!("eps = {value} is below alpha = {a}; lower alpha first");
                }
            }
            "alpha" if !(0.0..=self.eps).contains(&value) => {
                bail!("alpha must be in [0, eps], got {value} (eps = {})", self.eps)
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies a checked change.
    pub fn set(&mut self, key: &str, value: f64) {
        match key {
            "r_adv" => self.r_adv = value,
            "r_da" => self.r_da = value,
            "lambda" => self.lambda = LambdaSchedule::Constant(value),
            "lr" => self.lr = value,
            "eps" => self.eps = value,
            "alpha" => self.alpha = Some(value),
            _ => {}
        }
    }
}

/// Where an applied change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `TrainConfig.steer`.
    Plan,
    /// A live change of an interrupted run, read back from metrics.jsonl (already logged there).
    Replay,
    /// `RunControl::set`.
    Live,
}

/// A live change that was not applied, and why.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub step: usize,
    pub key: String,
    pub value: f64,
    pub error: String,
}

/// Whether some trainee has a source network (so r_adv / r_da have examples to work on).
pub fn has_source(cfg: &TrainConfig, n_total: usize) -> bool {
    match &cfg.sources {
        SourcePolicy::Graph(g) => g.iter().any(|row| !row.is_empty()),
        _ => n_total >= 2,
    }
}

/// The settings in force and the changes still to come.
pub struct Steering {
    pub settings: Settings,
    plan: VecDeque<PlannedChange>,
    replay: VecDeque<SteerEvent>,
    /// Every applied change so far (checkpoints store them).
    pub events: Vec<SteerEvent>,
    da_heads: bool,
    has_source: bool,
    control: Option<Arc<RunControl>>,
}

impl Steering {
    /// Checks the plan against the run (every change valid where it applies, every step inside the run).
    pub fn new(
        cfg: &TrainConfig,
        total_steps: usize,
        da_heads: bool,
        has_source: bool,
        control: Option<Arc<RunControl>>,
    ) -> Result<Steering> {
        let mut plan = cfg.steer.clone();
        plan.sort_by_key(|c| c.step);
        let mut sim = Settings::new(cfg);
        for c in &plan {
            if c.step >= total_steps {
                bail!(
                    "steer: a change of {} at step {} never applies (the run has {total_steps} steps)",
                    c.key,
                    c.step
                );
            }
            sim.check(&c.key, c.value, da_heads, has_source)
                .map_err(|e| anyhow::anyhow!("steer: at step {}: {e}", c.step))?;
            sim.set(&c.key, c.value);
        }
        Ok(Steering {
            settings: Settings::new(cfg),
            plan: plan.into(),
            replay: VecDeque::new(),
            events: vec![],
            da_heads,
            has_source,
            control,
        })
    }

    /// Continues from a checkpoint at `step`: its `events` rebuild the settings; `logged` (the live events of
    /// metrics.jsonl, see `logged_events`) from `step` on are replayed at their steps; the plan goes on from `step`.
    pub fn resume(&mut self, step: usize, events: &[SteerEvent], logged: Vec<SteerEvent>) {
        for e in events {
            self.settings.set(&e.key, e.new);
            self.record(e.clone());
        }
        while self.plan.front().is_some_and(|c| c.step < step) {
            self.plan.pop_front();
        }
        self.replay = logged.into_iter().filter(|e| e.step >= step).collect();
    }

    fn record(&mut self, e: SteerEvent) {
        if let Some(c) = &self.control {
            c.record_event(e.clone());
        }
        self.events.push(e);
    }

    fn apply(&mut self, step: usize, key: &str, value: f64, progress: f64) -> SteerEvent {
        let old = self.settings.value(key, progress);
        self.settings.set(key, value);
        let e = SteerEvent { step, key: key.to_string(), old, new: value };
        self.record(e.clone());
        e
    }

    /// Applies the changes due at the top of `step` (`progress`: the fraction of training done) and returns them,
    /// with the live changes that were rejected.
    pub fn due(&mut self, step: usize, progress: f64) -> (Vec<(SteerEvent, Origin)>, Vec<Rejected>) {
        let mut applied = vec![];
        let mut rejected = vec![];
        while let Some(c) = self.plan.front().filter(|c| c.step <= step).cloned() {
            self.plan.pop_front();
            applied.push((self.apply(step, &c.key, c.value, progress), Origin::Plan));
        }
        while let Some(e) = self.replay.front().filter(|e| e.step <= step).cloned() {
            self.replay.pop_front();
            applied.push((self.apply(step, &e.key, e.new, progress), Origin::Replay));
        }
        let pending = self.control.as_ref().map(|c| c.take_pending()).unwrap_or_default();
        for (key, value) in pending {
            match self.settings.check(&key, value, self.da_heads, self.has_source) {
                Ok(()) => applied.push((self.apply(step, &key, value, progress), Origin::Live)),
                Err(e) => rejected.push(Rejected { step, key, value, error: format!("{e:#}") }),
            }
        }
        (applied, rejected)
    }
}

/// The metrics.jsonl line of an applied change.
pub fn event_line(e: &SteerEvent, origin: Origin) -> serde_json::Value {
    let by = if origin == Origin::Plan { "plan" } else { "set" };
    serde_json::json!({"event": "set", "step": e.step, "key": e.key, "old": e.old, "new": e.new, "by": by})
}

/// The live (not planned) changes recorded in a metrics.jsonl, in order; lines that are not events (or not
/// complete) are skipped. A missing file holds none.
pub fn logged_events(path: &Path) -> Vec<SteerEvent> {
    let Ok(text) = std::fs::read_to_string(path) else { return vec![] };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "set" && v["by"] == "set")
        .filter_map(|v| {
            Some(SteerEvent {
                step: v["step"].as_u64()? as usize,
                key: v["key"].as_str()?.to_string(),
                old: v["old"].as_f64()?,
                new: v["new"].as_f64()?,
            })
        })
        .collect()
}
