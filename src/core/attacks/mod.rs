//! Attacks in [0, 1] pixel space under L∞: R+Step-LL (as the paper writes it and as Tramèr et al. do), the FGSM
//! family, iterative attacks (BIM / I-FGSM, PGD, iterative least-likely, MI-FGSM), APGD-CE and targeted APGD-DLR
//! (Croce & Hein 2020), and the score-based Square attack (Andriushchenko et al. 2020).
//!
//! Every attack works against [`Classifier`]s: one source is a white-box attack on it, several are an ensemble
//! (logits averaged, as in MI-FGSM's ensemble attack) for transfer attacks. Input gradients come from
//! `Tensor::run_backward(&[loss], &[x])`, so parameters' `.grad` is never touched and weight gradients are not computed.
//! Logits are cast to fp32 before any loss, so under bf16 autocast the perturbation stays fp32.
//! Randomness (R+ noise, random starts, Square's proposals) is drawn on the CPU from the calling thread's random
//! stream (`core::random`) and moved to the input's device, so one seed gives the same attack on every device.
mod apgd;
mod gradient;
pub mod grid;
mod square;

pub use grid::save_adversarial_grid;

use crate::core::models::Classifier;
use anyhow::{Context, Result, bail, ensure};
use std::fmt;
use std::str::FromStr;
use tch::{Device, Kind, Tensor};

/// The attacks satm implements. All are L∞-bounded by `eps` in [0, 1] pixel space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttackKind {
    /// x + ε·sign(∇J(x, y)) (Goodfellow et al.).
    Fgsm,
    /// x − ε·sign(∇J(x, y_LL)) with the least-likely class (Kurakin et al.).
    StepLl,
    /// x' = x + α·sign(N(0, I)); x' + (ε − α)·sign(∇J(x', y)) (Tramèr et al.).
    RFgsm,
    /// R+Step-LL; `Target::True` is the paper's Algorithm 1 (identical to R+FGSM), `Target::LeastLikely` Tramèr's.
    RStepLl,
    /// Fast gradient value (Rozsa et al.): the raw gradient, scaled per example so that its largest entry is ε.
    Fgv,
    /// Basic iterative method / I-FGSM (Kurakin et al.): signed steps from x, projected onto the ε-ball.
    Bim,
    /// PGD (Madry et al.): BIM from a uniform random start in the ε-ball, with optional restarts.
    Pgd,
    /// Iterative least-likely class method (Kurakin et al.).
    IterLl,
    /// Momentum iterative FGSM (Dong et al. 2018), momentum μ on L1-normalised gradients.
    MiFgsm,
    /// APGD with the cross-entropy loss (Croce & Hein 2020).
    ApgdCe,
    /// Targeted APGD with the DLR loss against the top `n_target_classes` other classes (AutoAttack's APGD-T).
    ApgdDlr,
    /// Square attack (Andriushchenko et al. 2020): score-based, uses only the logits.
    Square,
}

impl AttackKind {
    pub const ALL: [AttackKind; 12] = [
        AttackKind::Fgsm,
        AttackKind::StepLl,
        AttackKind::RFgsm,
        AttackKind::RStepLl,
        AttackKind::Fgv,
        AttackKind::Bim,
        AttackKind::Pgd,
        AttackKind::IterLl,
        AttackKind::MiFgsm,
        AttackKind::ApgdCe,
        AttackKind::ApgdDlr,
        AttackKind::Square,
    ];

    /// The name scripts use (`"r_step_ll"`).
    pub fn name(self) -> &'static str {
        match self {
            AttackKind::Fgsm => "fgsm",
            AttackKind::StepLl => "step_ll",
            AttackKind::RFgsm => "r_fgsm",
            AttackKind::RStepLl => "r_step_ll",
            AttackKind::Fgv => "fgv",
            AttackKind::Bim => "bim",
            AttackKind::Pgd => "pgd",
            AttackKind::IterLl => "iter_ll",
            AttackKind::MiFgsm => "mi_fgsm",
            AttackKind::ApgdCe => "apgd_ce",
            AttackKind::ApgdDlr => "apgd_dlr",
            AttackKind::Square => "square",
        }
    }

    /// The name papers use (`"R+Step-LL"`).
    pub fn title(self) -> &'static str {
        match self {
            AttackKind::Fgsm => "FGSM",
            AttackKind::StepLl => "Step-LL",
            AttackKind::RFgsm => "R+FGSM",
            AttackKind::RStepLl => "R+Step-LL",
            AttackKind::Fgv => "FGV",
            AttackKind::Bim => "I-FGSM",
            AttackKind::Pgd => "PGD",
            AttackKind::IterLl => "Iter-LL",
            AttackKind::MiFgsm => "MI-FGSM",
            AttackKind::ApgdCe => "APGD-CE",
            AttackKind::ApgdDlr => "APGD-DLR-T",
            AttackKind::Square => "Square",
        }
    }

    /// Multi-step gradient attacks driven by `steps` and `step_size`.
    fn is_iterative_gradient(self) -> bool {
        matches!(self, AttackKind::Bim | AttackKind::Pgd | AttackKind::IterLl | AttackKind::MiFgsm)
    }

    fn is_apgd(self) -> bool {
        matches!(self, AttackKind::ApgdCe | AttackKind::ApgdDlr)
    }

    /// The script option keys (`attack(name, m, x, y, #{...})`) that mean something for this attack; the script layer
    /// rejects every other key so that a setting is never silently ignored.
    pub fn option_keys(self) -> &'static [&'static str] {
        use AttackKind::*;
        match self {
            Fgsm | Fgv => &["eps", "labels", "target", "targeted", "train_mode", "seed"],
            StepLl => &["eps", "train_mode", "seed"],
            RFgsm => &["eps", "alpha", "labels", "targeted", "train_mode", "seed"],
            RStepLl => &["eps", "alpha", "target", "labels", "targeted", "train_mode", "seed"],
            Bim | Pgd => &[
                "eps",
                "steps",
                "step",
                "random_start",
                "restarts",
                "labels",
                "target",
                "targeted",
                "early_stop",
                "train_mode",
                "seed",
            ],
            IterLl => &["eps", "steps", "step", "random_start", "restarts", "early_stop", "train_mode", "seed"],
            MiFgsm => &[
                "eps",
                "steps",
                "step",
                "momentum",
                "random_start",
                "restarts",
                "labels",
                "target",
                "targeted",
                "early_stop",
                "train_mode",
                "seed",
            ],
            ApgdCe => {
                &["eps", "steps", "momentum", "random_start", "restarts", "labels", "targeted", "train_mode", "seed"]
            }
            ApgdDlr => {
                &["eps", "steps", "momentum", "random_start", "restarts", "labels", "targets", "train_mode", "seed"]
            }
            Square => &["eps", "queries", "p_init", "restarts", "labels", "train_mode", "seed"],
        }
    }
}

impl fmt::Display for AttackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AttackKind {
    type Err = anyhow::Error;

    /// Accepts the script names and the papers' spellings: `"R+Step-LL"`, `"i-fgsm"`, `"APGD-T"` …
    fn from_str(s: &str) -> Result<Self> {
        let norm: String =
            s.trim().to_ascii_lowercase().chars().map(|c| if matches!(c, '-' | '+' | ' ') { '_' } else { c }).collect();
        Ok(match norm.as_str() {
            "fgsm" => AttackKind::Fgsm,
            "step_ll" | "stepll" => AttackKind::StepLl,
            "r_fgsm" | "rfgsm" => AttackKind::RFgsm,
            "r_step_ll" | "rstepll" | "r_stepll" => AttackKind::RStepLl,
            "fgv" => AttackKind::Fgv,
            "bim" | "i_fgsm" | "ifgsm" => AttackKind::Bim,
            "pgd" => AttackKind::Pgd,
            "iter_ll" | "iterll" | "iterative_ll" => AttackKind::IterLl,
            "mi_fgsm" | "mifgsm" => AttackKind::MiFgsm,
            "apgd_ce" | "apgd" => AttackKind::ApgdCe,
            "apgd_dlr" | "apgd_t" | "apgd_dlr_t" => AttackKind::ApgdDlr,
            "square" => AttackKind::Square,
            _ => bail!(
                "unknown attack '{s}'; known attacks: {}",
                AttackKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
            ),
        })
    }
}

/// Which class the gradient step is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The labels (true or predicted): ascend J(x, y) — R+Step-LL as the SATM paper's Algorithm 1 writes it.
    True,
    /// The clean input's least-likely class y_LL: descend J(x, y_LL) — Tramèr et al.'s R+Step-LL, Kurakin's Step-LL.
    LeastLikely,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::True => "true",
            Target::LeastLikely => "least_likely",
        }
    }
}

impl FromStr for Target {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "true" | "true_label" | "y" => Ok(Target::True),
            "least_likely" | "ll" => Ok(Target::LeastLikely),
            _ => bail!("target '{s}': expected \"true\" or \"least_likely\""),
        }
    }
}

/// Which labels an untargeted attack moves away from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Labels {
    /// The labels passed in.
    True,
    /// The model's own predictions on the clean input (avoids label leaking, Kurakin et al. 2017).
    Predicted,
}

impl Labels {
    pub fn name(self) -> &'static str {
        match self {
            Labels::True => "true",
            Labels::Predicted => "predicted",
        }
    }
}

impl FromStr for Labels {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Labels::True),
            "predicted" | "pred" => Ok(Labels::Predicted),
            _ => bail!("labels '{s}': expected \"true\" or \"predicted\""),
        }
    }
}

/// Every setting of an attack. Fields a given kind does not use are ignored by it (see [`AttackKind::option_keys`]);
/// [`AttackSpec::validate`] rejects values that make no sense.
#[derive(Debug, Clone, PartialEq)]
pub struct AttackSpec {
    pub kind: AttackKind,
    /// L∞ budget in [0, 1] pixel units (16/256 in the paper).
    pub eps: f64,
    /// R+ attacks: size of the random step (ε/2 in the paper).
    pub alpha: f64,
    /// Iterations of iterative and APGD attacks.
    pub steps: usize,
    /// Step size of BIM / PGD / Iter-LL / MI-FGSM (APGD adapts its own, starting at 2ε).
    pub step_size: f64,
    /// MI-FGSM's μ (1.0) and APGD's momentum (0.75).
    pub momentum: f64,
    /// Start from a uniform random point in the ε-ball (PGD, APGD; optional for BIM / Iter-LL / MI-FGSM).
    pub random_start: bool,
    /// `y` are target classes: descend J(x, y) and succeed when the prediction is y.
    pub targeted: bool,
    pub target: Target,
    pub labels: Labels,
    /// Iterative attacks: stop updating an example once it is misclassified (reached its target when targeted).
    pub early_stop: bool,
    /// Run the sources in training mode (batch statistics, dropout) while crafting. BN running statistics then
    /// update as in any training-mode forward.
    pub train_mode: bool,
    /// Random restarts (PGD, APGD, Square); later restarts only work on examples not yet fooled (APGD, Square) or
    /// keep per example the fooling / highest-loss result (PGD and friends).
    pub restarts: usize,
    /// APGD-DLR-T: how many of the top other classes to target (capped at C − 1).
    pub n_target_classes: usize,
    /// Square: queries per restart.
    pub queries: usize,
    /// Square: initial fraction of pixels changed per query.
    pub p_init: f64,
    /// Reseeds the calling thread's random stream (`core::random::seed`) before crafting; `None` draws from the stream
    /// as the caller left it.
    pub seed: Option<u64>,
}

const DEFAULT_EPS: f64 = 16.0 / 256.0;

impl AttackSpec {
    /// Defaults: ε = 16/256, α = ε/2, 10 steps for iterative attacks (100 for APGD), step ε/steps (2.5ε/steps for
    /// PGD, Madry et al.), μ = 1 for MI-FGSM and 0.75 for APGD, random start for PGD and APGD, least-likely target
    /// for Step-LL and Iter-LL, 9 target classes for APGD-DLR-T, 1000 queries and p_init = 0.8 for Square.
    pub fn new(kind: AttackKind) -> Self {
        let mut spec = AttackSpec {
            kind,
            eps: DEFAULT_EPS,
            alpha: DEFAULT_EPS / 2.0,
            steps: 1,
            step_size: DEFAULT_EPS,
            momentum: 0.0,
            random_start: false,
            targeted: false,
            target: if matches!(kind, AttackKind::StepLl | AttackKind::IterLl) {
                Target::LeastLikely
            } else {
                Target::True
            },
            labels: Labels::True,
            early_stop: false,
            train_mode: false,
            restarts: 1,
            n_target_classes: 9,
            queries: 1000,
            p_init: 0.8,
            seed: None,
        };
        match kind {
            AttackKind::Bim | AttackKind::IterLl | AttackKind::Pgd => spec.steps = 10,
            AttackKind::MiFgsm => {
                spec.steps = 10;
                spec.momentum = 1.0;
            }
            AttackKind::ApgdCe | AttackKind::ApgdDlr => {
                spec.steps = 100;
                spec.momentum = 0.75;
            }
            _ => {}
        }
        spec.random_start = matches!(kind, AttackKind::Pgd | AttackKind::ApgdCe | AttackKind::ApgdDlr);
        spec.step_size = Self::default_step_size(kind, spec.eps, spec.steps);
        spec
    }

    /// The paper's attack: R+Step-LL as Algorithm 1 writes it (y_true, "+"), ε = 16/256, α = ε/2.
    pub fn paper_r_step_ll() -> Self {
        AttackSpec::new(AttackKind::RStepLl)
    }

    /// The step size `new` would pick for this budget: ε for single-step attacks, 2.5ε/steps for PGD, ε/steps else.
    pub fn default_step_size(kind: AttackKind, eps: f64, steps: usize) -> f64 {
        let steps = steps.max(1) as f64;
        match kind {
            AttackKind::Pgd => 2.5 * eps / steps,
            k if k.is_iterative_gradient() => eps / steps,
            _ => eps,
        }
    }

    /// Sets ε and the settings derived from it (α = ε/2, the default step size for `steps`).
    pub fn with_budget(mut self, eps: f64, steps: usize) -> Self {
        self.eps = eps;
        self.alpha = eps / 2.0;
        self.steps = steps;
        self.step_size = Self::default_step_size(self.kind, eps, steps);
        self
    }

    /// A short name for tables: `r_step_ll`, `r_step_ll_ll`, `pgd10`, `apgd_ce100`, `square1000`.
    pub fn name(&self) -> String {
        let mut n = self.kind.name().to_string();
        if self.kind == AttackKind::RStepLl && self.target == Target::LeastLikely {
            n.push_str("_ll");
        }
        if self.kind.is_iterative_gradient() || self.kind.is_apgd() {
            n.push_str(&self.steps.to_string());
        }
        if self.kind == AttackKind::Square {
            n.push_str(&self.queries.to_string());
        }
        n
    }

    /// Every setting that matters for this attack, for reports:
    /// `R+Step-LL [paper Alg. 1: x' + (ε−α)·sign ∇J(x', y)] ε=16/256 α=8/256 labels=true`.
    pub fn describe(&self) -> String {
        let k = self.kind;
        let mut parts = vec![k.title().to_string()];
        match (k, self.target) {
            (AttackKind::RStepLl, Target::True) => parts.push("[paper Alg. 1: x' + (ε−α)·sign ∇J(x', y)]".into()),
            (AttackKind::RStepLl, Target::LeastLikely) => {
                parts.push("[Tramèr et al.: x' − (ε−α)·sign ∇J(x', y_LL)]".into())
            }
            (AttackKind::StepLl | AttackKind::IterLl, _) => {}
            (_, Target::LeastLikely) => parts.push("target=least_likely".into()),
            _ => {}
        }
        parts.push(format!("ε={}", fmt_pixels(self.eps)));
        if matches!(k, AttackKind::RFgsm | AttackKind::RStepLl) {
            parts.push(format!("α={}", fmt_pixels(self.alpha)));
        }
        if k.is_iterative_gradient() {
            parts.push(format!("steps={} step={}", self.steps, fmt_pixels(self.step_size)));
        }
        if k == AttackKind::MiFgsm || k.is_apgd() {
            parts.push(format!("μ={}", self.momentum));
        }
        if k.is_apgd() {
            parts.push(format!("steps={}", self.steps));
        }
        if k == AttackKind::ApgdDlr {
            parts.push(format!("target_classes={}", self.n_target_classes));
        }
        if k == AttackKind::Square {
            parts.push(format!("queries={} p_init={}", self.queries, self.p_init));
        }
        if self.random_start && (k.is_iterative_gradient() || k.is_apgd()) {
            parts.push("random_start".into());
        }
        if self.restarts > 1 {
            parts.push(format!("restarts={}", self.restarts));
        }
        if self.targeted {
            parts.push("targeted".into());
        }
        if self.target == Target::True && !self.targeted {
            parts.push(format!("labels={}", self.labels.name()));
        }
        if self.early_stop {
            parts.push("early_stop".into());
        }
        if self.train_mode {
            parts.push("train_mode".into());
        }
        if let Some(s) = self.seed {
            parts.push(format!("seed={s}"));
        }
        parts.join(" ")
    }

    /// Rejects settings that make no sense for this kind (the errors name the setting).
    pub fn validate(&self) -> Result<()> {
        use AttackKind::*;
        let k = self.kind;
        ensure!(self.eps.is_finite() && self.eps >= 0.0, "{k}: eps must be >= 0, got {}", self.eps);
        ensure!(self.eps <= 1.0, "{k}: eps is in [0, 1] pixel units (16/256 = 0.0625), got {}", self.eps);
        if matches!(k, RFgsm | RStepLl) {
            ensure!(self.alpha.is_finite() && self.alpha >= 0.0, "{k}: alpha must be >= 0, got {}", self.alpha);
            ensure!(self.alpha <= self.eps, "{k}: alpha ({}) must not exceed eps ({})", self.alpha, self.eps);
        }
        if k.is_iterative_gradient() || k.is_apgd() {
            ensure!(self.steps >= 1, "{k}: steps must be at least 1");
        }
        if k.is_iterative_gradient() {
            ensure!(
                self.step_size.is_finite() && self.step_size > 0.0,
                "{k}: step must be > 0, got {}",
                self.step_size
            );
        }
        if k == MiFgsm || k.is_apgd() {
            ensure!(self.momentum.is_finite() && self.momentum >= 0.0, "{k}: momentum must be >= 0");
        }
        if k.is_apgd() {
            ensure!(self.momentum <= 1.0, "{k}: APGD's momentum must be in [0, 1], got {}", self.momentum);
        }
        ensure!(self.restarts >= 1, "{k}: restarts must be at least 1");
        if self.restarts > 1 {
            ensure!(
                k == Square || (self.random_start && (k.is_iterative_gradient() || k.is_apgd())),
                "{k}: restarts > 1 repeat the same deterministic attack; they need random_start"
            );
        }
        if self.random_start {
            ensure!(
                k.is_iterative_gradient() || k.is_apgd(),
                "{k}: random_start applies to iterative attacks (bim, pgd, iter_ll, mi_fgsm, apgd_*)"
            );
        }
        if matches!(k, StepLl | IterLl) {
            ensure!(self.target == Target::LeastLikely, "{k} always targets the least-likely class; use fgsm / bim");
        }
        if matches!(k, RFgsm | ApgdCe | ApgdDlr | Square) {
            ensure!(self.target == Target::True, "{k}: target least_likely is not defined (use r_step_ll / iter_ll)");
        }
        if self.targeted {
            ensure!(
                !matches!(k, StepLl | IterLl | ApgdDlr | Square),
                "{k}: targeted (y = target classes) is not supported; apgd_dlr picks its own targets"
            );
            ensure!(self.target == Target::True, "{k}: targeted and target least_likely exclude each other");
            ensure!(
                self.labels == Labels::True,
                "{k}: targeted attacks take target classes, not labels: \"predicted\""
            );
        }
        if self.early_stop {
            ensure!(
                k.is_iterative_gradient(),
                "{k}: early_stop applies to bim, pgd, iter_ll and mi_fgsm (APGD and Square keep the first success anyway)"
            );
        }
        if k == ApgdDlr {
            ensure!(self.n_target_classes >= 1, "{k}: targets must be at least 1");
        }
        if k == Square {
            ensure!(self.queries >= 1, "{k}: queries must be at least 1");
            ensure!(self.p_init > 0.0 && self.p_init <= 1.0, "{k}: p_init must be in (0, 1], got {}", self.p_init);
        }
        Ok(())
    }
}

/// `16/256` when ε is a whole number of 1/256 steps, else the decimal.
fn fmt_pixels(v: f64) -> String {
    let n = v * 256.0;
    if (n - n.round()).abs() < 1e-9 { format!("{}/256", n.round() as i64) } else { format!("{v:.4}") }
}

/// Crafts adversarial examples for `x` (f32 `[B, C, H, W]` in [0, 1]) with labels `y` (i64 `[B]`; target classes
/// when `spec.targeted`) on `sources` (one: white-box; several: their averaged logits). Returns `x_adv`, detached,
/// fp32, on `x`'s device, with ‖x_adv − x‖∞ ≤ ε and values in [0, 1]. Never changes the sources' parameters or
/// their gradients.
pub fn craft(spec: &AttackSpec, sources: &[&dyn Classifier], x: &Tensor, y: &Tensor) -> Result<Tensor> {
    craft_impl(spec, sources, x, y, None)
}

/// [`craft`] with the attack's random draw given explicitly (for cross-checks against other implementations):
/// for R+FGSM / R+Step-LL `noise` replaces the N(0, I) sample (only its sign is used); for a random start it is
/// the start direction in [−1, 1] (scaled by ε; APGD normalises it per example by its largest entry).
/// `noise` must have `x`'s shape; attacks that draw no noise, and several restarts, are rejected.
pub fn craft_with_noise(
    spec: &AttackSpec,
    sources: &[&dyn Classifier],
    x: &Tensor,
    y: &Tensor,
    noise: &Tensor,
) -> Result<Tensor> {
    let k = spec.kind;
    let uses_noise = matches!(k, AttackKind::RFgsm | AttackKind::RStepLl) || spec.random_start;
    ensure!(uses_noise, "{k}: this attack draws no random noise (set random_start for iterative attacks)");
    ensure!(spec.restarts == 1, "{k}: an explicit noise tensor serves a single run, not {} restarts", spec.restarts);
    ensure!(noise.size() == x.size(), "{k}: noise has shape {:?}, the input {:?}", noise.size(), x.size());
    craft_impl(spec, sources, x, y, Some(noise))
}

fn craft_impl(
    spec: &AttackSpec,
    sources: &[&dyn Classifier],
    x: &Tensor,
    y: &Tensor,
    noise: Option<&Tensor>,
) -> Result<Tensor> {
    spec.validate()?;
    let ctx = Ctx::new(sources, spec.train_mode, x.device())?;
    let x = check_input(spec.kind, x, y, ctx.num_classes)?;
    let y = y.f_to_device(x.device())?.f_detach()?;
    let noise = noise
        .map(|n| -> Result<Tensor> { Ok(n.f_to_device(x.device())?.f_to_kind(Kind::Float)?.f_detach()?) })
        .transpose()?;
    if let Some(seed) = spec.seed {
        crate::core::random::seed(seed)?;
    }
    let x_adv = match spec.kind {
        AttackKind::Square => square::square(&ctx, spec, &x, &y)?,
        AttackKind::ApgdCe | AttackKind::ApgdDlr => apgd::apgd(&ctx, spec, &x, &y, noise.as_ref())?,
        _ => gradient::gradient_attack(&ctx, spec, &x, &y, noise.as_ref())?,
    };
    // One last projection: the ε-ball and [0, 1] hold up to float rounding whatever the attack did.
    project(&x_adv, &x, spec.eps)?.f_detach().context("detaching the adversarial examples")
}

/// Checks `x` ([B, C, H, W], float, in [0, 1]) and `y` ([B] integer labels in [0, classes)); returns `x` as a detached
/// fp32 tensor.
fn check_input(kind: AttackKind, x: &Tensor, y: &Tensor, classes: i64) -> Result<Tensor> {
    let xs = x.size();
    ensure!(xs.len() == 4, "{kind}: x must be [B, C, H, W], got shape {xs:?}");
    ensure!(xs[0] > 0, "{kind}: x is an empty batch");
    ensure!(
        matches!(x.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16),
        "{kind}: x must be a float tensor in [0, 1], got {:?} (convert u8 images with x / 255)",
        x.kind()
    );
    ensure!(
        matches!(y.kind(), Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8),
        "{kind}: y must hold integer class labels, got {:?}",
        y.kind()
    );
    ensure!(y.size() == [xs[0]], "{kind}: y has shape {:?}, x has {} examples: expected [{}]", y.size(), xs[0], xs[0]);
    let x = x.f_detach()?.f_to_kind(Kind::Float)?;
    let lo = x.f_min()?.f_double_value(&[])?;
    let hi = x.f_max()?.f_double_value(&[])?;
    ensure!(lo >= 0.0 && hi <= 1.0, "{kind}: x must lie in [0, 1] (pixel space), got values in [{lo}, {hi}]");
    let ylo = y.f_min()?.f_int64_value(&[])?;
    let yhi = y.f_max()?.f_int64_value(&[])?;
    ensure!(
        ylo >= 0 && yhi < classes,
        "{kind}: labels must be in [0, {classes}) for a {classes}-class model, got [{ylo}, {yhi}]"
    );
    Ok(x)
}

/// The sources, the mode they run in, and the device attacks work on.
pub(crate) struct Ctx<'a> {
    sources: &'a [&'a dyn Classifier],
    train: bool,
    num_classes: i64,
}

impl<'a> Ctx<'a> {
    fn new(sources: &'a [&'a dyn Classifier], train: bool, _device: Device) -> Result<Self> {
        ensure!(!sources.is_empty(), "an attack needs at least one source model");
        let num_classes = sources[0].num_classes();
        for s in sources {
            ensure!(
                s.num_classes() == num_classes,
                "ensemble sources disagree on the number of classes: {} has {}, {} has {num_classes}",
                s.label(),
                s.num_classes(),
                sources[0].label()
            );
        }
        Ok(Ctx { sources, train, num_classes })
    }

    /// fp32 logits `[B, C]` on `x`'s device, averaged over the sources (each runs on its own device).
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let mut sum: Option<Tensor> = None;
        for s in self.sources {
            let xi = x.f_to_device(s.device())?;
            let l = s
                .logits_t(&xi, self.train)
                .with_context(|| format!("forward pass of {}", s.label()))?
                .f_to_device(x.device())?
                .f_to_kind(Kind::Float)?;
            ensure!(
                l.size() == [x.size()[0], self.num_classes],
                "{} returned logits of shape {:?}, expected [{}, {}]",
                s.label(),
                l.size(),
                x.size()[0],
                self.num_classes
            );
            sum = Some(match sum {
                None => l,
                Some(acc) => acc.f_add(&l)?,
            });
        }
        let sum = sum.context("no sources")?;
        if self.sources.len() == 1 { Ok(sum) } else { Ok(sum.f_div_scalar(self.sources.len() as f64)?) }
    }

    /// Logits without building a graph.
    fn logits_nograd(&self, x: &Tensor) -> Result<Tensor> {
        let _g = tch::no_grad_guard();
        Ok(self.logits(x)?.f_detach()?)
    }

    /// Per-example loss, its input gradient (summed loss, so each example's gradient is its own), and the logits at
    /// `x`. Only `x` requires grad, so autograd computes no weight gradient and never touches `.grad`.
    fn grad(&self, x: &Tensor, loss_fn: &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<GradOut> {
        tch::with_grad(|| -> Result<GradOut> {
            let xv = x.f_detach()?.set_requires_grad(true);
            let logits = self.logits(&xv)?;
            let loss = loss_fn(&logits)?;
            let total = loss.f_sum(Kind::Float)?;
            const NO_GRAD: &str = "the sources' logits do not depend on the input (no gradient); gradient attacks need a differentiable model";
            ensure!(total.requires_grad(), NO_GRAD);
            let mut g = Tensor::f_run_backward(&[&total], &[&xv], false, false).context("input gradient")?;
            let grad = g.pop().context("autograd returned no gradient")?;
            // The loss can require grad through the weights alone (a wrapper that detaches its input): autograd then
            // returns an undefined gradient for x, which libtorch would only report at the next op.
            ensure!(grad.defined(), NO_GRAD);
            Ok(GradOut { grad, logits: logits.f_detach()?, loss: loss.f_detach()? })
        })
    }
}

struct GradOut {
    grad: Tensor,
    logits: Tensor,
    loss: Tensor,
}

/// Per-example cross-entropy `[B]` of fp32 logits `[B, C]` against labels `[B]`.
fn cross_entropy(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    let lp = logits.f_log_softmax(-1, Kind::Float)?;
    Ok(lp.f_gather(1, &y.f_unsqueeze(1)?, false)?.f_squeeze_dim(1)?.f_neg()?)
}

/// Clamps `x_adv` into the ε-ball around `x` and into [0, 1].
fn project(x_adv: &Tensor, x: &Tensor, eps: f64) -> Result<Tensor> {
    let lo = x.f_sub_scalar(eps)?;
    let hi = x.f_add_scalar(eps)?;
    Ok(x_adv.f_maximum(&lo)?.f_minimum(&hi)?.f_clamp(0.0, 1.0)?)
}

/// Broadcasts a per-example `[B]` tensor to `[B, 1, 1, 1]`.
fn per_example(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_view([-1, 1, 1, 1])?)
}

/// Per-example `where`: rows of `a` where `mask[B]` is true, rows of `b` elsewhere.
fn select_rows(mask: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let m = mask.f_view(
        std::iter::once(-1).chain(std::iter::repeat_n(1, a.dim().saturating_sub(1))).collect::<Vec<i64>>().as_slice(),
    )?;
    Ok(a.f_where_self(&m, b)?)
}

/// A standard normal sample of `shape`, drawn on the CPU (device-independent for a given seed), on `device`.
fn randn(shape: &[i64], device: Device) -> Result<Tensor> {
    Ok(crate::core::random::randn(shape)?.f_to_device(device)?)
}

/// Uniform in [−1, 1) (`2·rand − 1`), drawn on the CPU, on `device`.
fn uniform_pm1(shape: &[i64], device: Device) -> Result<Tensor> {
    Ok(crate::core::random::rand(shape)?.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?.f_to_device(device)?)
}

/// Whether the attack's goal is reached per example: the prediction differs from `labels` (untargeted) or
/// equals them (targeted / least-likely).
fn reached(logits: &Tensor, labels: &Tensor, towards: bool) -> Result<Tensor> {
    let pred = logits.f_argmax(1, false)?;
    Ok(if towards { pred.f_eq_tensor(labels)? } else { pred.f_ne_tensor(labels)? })
}

/// The labels an untargeted attack moves away from: `y`, or the sources' predictions on the clean input.
fn attack_labels(ctx: &Ctx, spec: &AttackSpec, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(match spec.labels {
        Labels::True => y.f_to_kind(Kind::Int64)?,
        Labels::Predicted => ctx.logits_nograd(x)?.f_argmax(1, false)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_paper_spellings_parse() {
        for k in AttackKind::ALL {
            assert_eq!(k.name().parse::<AttackKind>().unwrap(), k);
        }
        assert_eq!("R+Step-LL".parse::<AttackKind>().unwrap(), AttackKind::RStepLl);
        assert_eq!("I-FGSM".parse::<AttackKind>().unwrap(), AttackKind::Bim);
        assert_eq!("APGD-T".parse::<AttackKind>().unwrap(), AttackKind::ApgdDlr);
        assert!("cw".parse::<AttackKind>().is_err());
        assert_eq!("least_likely".parse::<Target>().unwrap(), Target::LeastLikely);
        assert_eq!("predicted".parse::<Labels>().unwrap(), Labels::Predicted);
    }

    #[test]
    fn paper_defaults() {
        let s = AttackSpec::paper_r_step_ll();
        assert_eq!(s.kind, AttackKind::RStepLl);
        assert_eq!(s.target, Target::True);
        assert_eq!(s.eps, 16.0 / 256.0);
        assert_eq!(s.alpha, 8.0 / 256.0);
        assert!(s.describe().contains("ε=16/256 α=8/256"), "{}", s.describe());
        assert_eq!(AttackSpec::new(AttackKind::StepLl).target, Target::LeastLikely);
        let p = AttackSpec::new(AttackKind::Pgd);
        assert!(p.random_start);
        assert!((p.step_size - 2.5 * p.eps / 10.0).abs() < 1e-12);
        assert_eq!(p.name(), "pgd10");
        let b = AttackSpec::new(AttackKind::Bim).with_budget(8.0 / 256.0, 4);
        assert!((b.step_size - 2.0 / 256.0).abs() < 1e-12);
        for k in AttackKind::ALL {
            AttackSpec::new(k).validate().unwrap();
        }
    }

    #[test]
    fn validation_rejects_nonsense() {
        let mut s = AttackSpec::paper_r_step_ll();
        s.alpha = s.eps * 1.5;
        assert!(s.validate().unwrap_err().to_string().contains("alpha"));
        let mut s = AttackSpec::new(AttackKind::Fgsm);
        s.eps = -0.1;
        assert!(s.validate().is_err());
        let mut s = AttackSpec::new(AttackKind::Pgd);
        s.steps = 0;
        assert!(s.validate().unwrap_err().to_string().contains("steps"));
        let mut s = AttackSpec::new(AttackKind::Bim);
        s.restarts = 3;
        assert!(s.validate().unwrap_err().to_string().contains("random_start"));
        let mut s = AttackSpec::new(AttackKind::StepLl);
        s.target = Target::True;
        assert!(s.validate().is_err());
        let mut s = AttackSpec::new(AttackKind::Fgsm);
        s.targeted = true;
        s.labels = Labels::Predicted;
        assert!(s.validate().is_err());
    }
}
