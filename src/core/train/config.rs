//! Everything a training run is configured by: a RON preset (configs/*.ron) and/or script options, validated.
use super::control::STEERABLE;
use super::optim::{OptimSettings, OptimizerKind};
use crate::core::attacks::{AttackKind, AttackSpec, Target};
use crate::core::device::Precision;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// How each trainee picks the networks whose adversarial examples it trains on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SourcePolicy {
    /// One source per step, cycling over the others (the paper's "interchangeably"; clean data stays 50%).
    #[default]
    RoundRobin,
    /// One source per step, drawn uniformly (seeded).
    Random,
    /// Adversarial examples of every other network, concatenated.
    All,
    /// An explicit graph: `graph[k]` lists the network indices trainee k learns from (round-robin among them).
    /// Indices count trainees first, then frozen networks.
    Graph(Vec<Vec<usize>>),
}

/// The gradient reversal layer's λ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LambdaSchedule {
    Constant(f64),
    /// DANN: λ_p = 2 / (1 + exp(−γ p)) − 1 with p the fraction of training done (γ = 10 in the paper).
    Dann {
        gamma: f64,
    },
}

impl Default for LambdaSchedule {
    fn default() -> Self {
        LambdaSchedule::Constant(1.0)
    }
}

impl LambdaSchedule {
    pub fn at(&self, progress: f64) -> f64 {
        match *self {
            LambdaSchedule::Constant(l) => l,
            LambdaSchedule::Dann { gamma } => 2.0 / (1.0 + (-gamma * progress).exp()) - 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    #[default]
    Constant,
    /// Cosine decay from lr to 0 over the run.
    Cosine,
    /// Multiply by `gamma` every `every` steps.
    Step { every: usize, gamma: f64 },
    /// DANN's annealing: lr / (1 + 10 p)^0.75.
    Dann,
}

impl LrSchedule {
    pub fn at(&self, lr: f64, step: usize, progress: f64) -> f64 {
        match *self {
            LrSchedule::Constant => lr,
            LrSchedule::Cosine => lr * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos()),
            LrSchedule::Step { every, gamma } => lr * gamma.powi((step / every.max(1)) as i32),
            LrSchedule::Dann => lr / (1.0 + 10.0 * progress).powf(0.75),
        }
    }
}

/// What the catastrophic-overfitting guard does when PGD accuracy collapses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    /// Log it and go on.
    #[default]
    Warn,
    /// Stop the run (the last good checkpoint is kept).
    Stop,
    /// Restore the weights of the last good check and go on.
    Rollback,
}

/// The catastrophic-overfitting guard (Wong et al. 2020): each check runs PGD on a training batch; a drop of PGD
/// accuracy by more than `drop` (absolute) since the last check counts as a collapse.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// None = on for runs with a white-box term (single-step white-box training), off otherwise.
    pub enabled: Option<bool>,
    pub every: usize,
    pub pgd_steps: usize,
    pub drop: f64,
    pub action: GuardAction,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig { enabled: None, every: 0, pgd_steps: 5, drop: 0.3, action: GuardAction::Warn }
    }
}

/// One training run's settings. Standard training is the same run with one trainee and r_adv = r_da = 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Maximum optimizer steps (each step updates every trainee once).
    pub steps: usize,
    /// Alternatively a number of epochs over the training data (overrides steps when > 0).
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub lr_schedule: LrSchedule,
    pub optimizer: OptimizerKind,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    /// Weight of the adversarial cross-entropy (examples from a source network).
    pub r_adv: f64,
    /// Weight of the domain-adaptation loss (0 = no DA head at all).
    pub r_da: f64,
    /// Weight of a white-box term (the trainee's own adversarial examples): 0 in SATM, > 0 for standard adversarial training.
    pub white_box: f64,
    /// The attack crafting training examples (any attack; the paper: r_step_ll). Written by name in RON presets.
    #[serde(with = "attack_name")]
    pub attack: AttackKind,
    /// R+Step-LL's target: "true" (the paper's Algorithm 1) or "least_likely" (Tramèr et al.).
    #[serde(with = "target_name")]
    pub target: Target,
    pub eps: f64,
    /// R+Step-LL's random step; default eps/2.
    pub alpha: Option<f64>,
    pub sources: SourcePolicy,
    pub lambda: LambdaSchedule,
    /// Hidden width of each DA head (two FC layers → 1 logit).
    pub da_hidden: i64,
    /// Random flip + crop of training batches.
    pub augment: bool,
    /// Validate (clean + black-box accuracy, validation loss) every N steps; 0 = once per epoch.
    pub eval_every: usize,
    /// At most this many validation batches per evaluation (0 = the whole validation set).
    pub val_batches: usize,
    /// Early stopping: stop after this many evaluations without improvement of the validation loss sum (0 = never).
    pub patience: usize,
    /// Restore the weights of the best validation loss at the end.
    pub keep_best: bool,
    /// Write a checkpoint every N steps (0 = only at the end and on Ctrl-C).
    pub checkpoint_every: usize,
    /// Log training metrics every N steps.
    pub log_every: usize,
    pub seed: u64,
    pub precision: Precision,
    pub channels_last: bool,
    pub guard: GuardConfig,
    /// Planned steering: changes of steerable settings at given steps, applied through the same events as a live
    /// `set` (recorded in metrics.jsonl and checkpoints, replayed on resume). In step order; same-step changes in
    /// the order given.
    pub steer: Vec<PlannedChange>,
}

/// One planned change: from `step` on (before that step's batch), `key` (one of `control::STEERABLE`) is `value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedChange {
    pub step: usize,
    pub key: String,
    pub value: f64,
}

/// RON presets name the attack as scripts do ("r_step_ll"); the core holds the parsed kind.
mod attack_name {
    use crate::core::attacks::AttackKind;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(k: &AttackKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.name())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AttackKind, D::Error> {
        String::deserialize(d)?.parse().map_err(|e: anyhow::Error| serde::de::Error::custom(e))
    }
}

mod target_name {
    use crate::core::attacks::Target;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(t: &Target, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.name())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
        String::deserialize(d)?.parse().map_err(|e: anyhow::Error| serde::de::Error::custom(e))
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 1000,
            epochs: 0,
            batch_size: 64,
            lr: 0.01,
            lr_schedule: LrSchedule::Constant,
            optimizer: OptimizerKind::Sgd,
            momentum: 0.9,
            weight_decay: 5e-4,
            nesterov: false,
            r_adv: 1.0,
            r_da: 0.1,
            white_box: 0.0,
            attack: AttackKind::RStepLl,
            target: Target::True,
            eps: 16.0 / 256.0,
            alpha: None,
            sources: SourcePolicy::RoundRobin,
            lambda: LambdaSchedule::Constant(1.0),
            da_hidden: 256,
            augment: false,
            eval_every: 0,
            val_batches: 0,
            patience: 0,
            keep_best: true,
            checkpoint_every: 0,
            log_every: 10,
            seed: 0,
            precision: Precision::Fp32,
            channels_last: false,
            guard: GuardConfig::default(),
            steer: vec![],
        }
    }
}

impl TrainConfig {
    /// Standard (clean) training defaults.
    pub fn standard() -> Self {
        TrainConfig { r_adv: 0.0, r_da: 0.0, ..Default::default() }
    }

    pub fn optim(&self) -> OptimSettings {
        OptimSettings {
            kind: self.optimizer,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
            ..Default::default()
        }
    }

    pub fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(self.eps / 2.0)
    }

    /// The attack crafting training examples with this config's eps, alpha and target.
    pub fn attack_spec(&self) -> AttackSpec {
        let mut spec = AttackSpec::new(self.attack);
        spec.eps = self.eps;
        spec.alpha = self.alpha();
        spec.target = self.target;
        spec
    }

    /// Whether any adversarial example is needed in training.
    pub fn needs_adversarial(&self) -> bool {
        self.r_adv != 0.0 || self.r_da != 0.0 || self.white_box != 0.0
    }

    pub fn guard_enabled(&self) -> bool {
        self.guard.enabled.unwrap_or(self.white_box > 0.0)
    }

    /// Checks ranges; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let pos = |name: &str, v: f64| -> Result<()> {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{name} must be a finite number >= 0, got {v}");
            }
            Ok(())
        };
        if self.steps == 0 && self.epochs == 0 {
            bail!("steps (or epochs) must be at least 1");
        }
        if self.batch_size == 0 {
            bail!("batch_size must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("lr must be > 0, got {}", self.lr);
        }
        pos("momentum", self.momentum)?;
        pos("weight_decay", self.weight_decay)?;
        pos("r_adv", self.r_adv)?;
        pos("r_da", self.r_da)?;
        pos("white_box", self.white_box)?;
        pos("eps", self.eps)?;
        if self.eps > 1.0 {
            bail!("eps is in [0,1] pixel units (16/256 = 0.0625), got {}", self.eps);
        }
        let a = self.alpha();
        if !(0.0..=self.eps).contains(&a) {
            bail!("alpha must be in [0, eps], got {a} (eps = {})", self.eps);
        }
        for c in &self.steer {
            if !STEERABLE.contains(&c.key.as_str()) {
                bail!("steer: '{}' at step {} cannot be steered; steerable: {}", c.key, c.step, STEERABLE.join(", "));
            }
            if !c.value.is_finite() {
                bail!("steer: {} = {} at step {}: the value must be finite", c.key, c.value, c.step);
            }
            if self.epochs == 0 && c.step >= self.steps {
                bail!(
                    "steer: a change of {} at step {} never applies (the run has {} steps)",
                    c.key,
                    c.step,
                    self.steps
                );
            }
        }
        if self.da_hidden <= 0 {
            bail!("da_hidden must be >= 1");
        }
        if self.log_every == 0 {
            bail!("log_every must be >= 1");
        }
        if let LrSchedule::Step { gamma, .. } = self.lr_schedule {
            pos("lr_schedule gamma", gamma)?;
        }
        if let LambdaSchedule::Constant(l) = self.lambda {
            pos("lambda", l)?;
        }
        if self.guard_enabled() {
            if self.guard.pgd_steps == 0 {
                bail!("guard pgd_steps must be at least 1");
            }
            if !(self.guard.drop > 0.0 && self.guard.drop <= 1.0) {
                bail!("guard drop is an accuracy drop in (0, 1], got {}", self.guard.drop);
            }
        }
        Ok(())
    }
}
