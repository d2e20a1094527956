//! The training loop: SATM (Algorithm 1, Sections 4.1–4.3) for K trainees and any number of frozen sources, with
//! standard training as the special case r_adv = r_da = 0. The loop only calls its parts:
//!   - `trainees`: networks with their DA heads and optimizers, built before the loop; checkpoints of them;
//!   - `step`: the step's adversarial sources and one update per trainee (the loss, written once);
//!   - `steer`: the settings changed while the run trains (planned, replayed on resume, or live via `RunControl`);
//!   - `sink`: metrics.jsonl, the History, the progress bar, the status published to the `RunControl`;
//!   - `guard`: the catastrophic-overfitting guard;
//!   - `validate`: validation and early stopping.
//!
//! With a `RunControl`, at each step boundary the loop waits while the run is paused, ends (checkpoint first) when a
//! stop was asked for, and applies the queued changes; after each step it publishes a `RunStatus`.
use super::History;
use super::checkpoint::CheckpointState;
use super::config::{SourcePolicy, TrainConfig};
use super::control::{RunControl, RunState};
use super::guard::Guard;
use super::parallel::SideBySide;
use super::sink::Sink;
use super::steer::{Settings, Steering, has_source, logged_events};
use super::step::{self, LossWeights, OnDevices};
use super::trainees::{self, Trainee};
use super::validate::{EarlyStopping, validate};
use crate::core::attacks::AttackSpec;
use crate::core::cancel;
use crate::core::data::{Batch, BatchOpts, Batches, Dataset};
use crate::core::models::{Classifier, Net};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::Device;

pub use super::step::{mix, sources_for};

/// What to train and where to write.
pub struct Run<'a> {
    pub trainees: Vec<&'a mut Net>,
    pub frozen: Vec<&'a Net>,
    pub train: &'a Dataset,
    pub val: Option<&'a Dataset>,
    pub cfg: TrainConfig,
    /// Run directory (metrics.jsonl, config.ron, checkpoints/); None = nothing written.
    pub dir: Option<PathBuf>,
    /// A run directory or checkpoint directory to continue from.
    pub resume: Option<PathBuf>,
    /// Show a progress bar (the caller decides, e.g. not in quiet mode).
    pub progress: bool,
    /// Pause, steer, stop and watch the run from elsewhere (a background run); None = a run nobody steers live.
    pub control: Option<Arc<RunControl>>,
}

/// Per-trainee summary at the end of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraineeSummary {
    pub label: String,
    pub train_clean_acc: Option<f64>,
    pub train_adv_acc: Option<f64>,
    pub val_clean_acc: Option<f64>,
    pub val_adv_acc: Option<f64>,
    /// How many steps each network (by index: trainees, then frozen) served as this trainee's source.
    pub source_counts: Vec<usize>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainResult {
    pub history: History,
    pub steps: usize,
    pub best_step: Option<usize>,
    pub best_val_loss: Option<f64>,
    /// "completed", "early_stopping", "guard", or "stopped" (asked to through the `RunControl`).
    pub stopped: String,
    pub dir: Option<PathBuf>,
    pub checkpoint: Option<PathBuf>,
    pub wall_s: f64,
    pub trainees: Vec<TraineeSummary>,
    pub labels: Vec<String>,
}

fn batches_per_epoch(n: usize, b: usize) -> usize {
    if n >= b { n / b } else { 1 }
}

/// Runs training; see the module docs. With a control, its final state is set (Finished, or Failed with the error).
pub fn run(run: Run) -> Result<TrainResult> {
    let control = run.control.clone();
    let res = train(run);
    if let Some(c) = &control {
        match &res {
            Ok(_) => c.finish(RunState::Finished, None),
            Err(e) => c.finish(RunState::Failed, Some(format!("{e:#}"))),
        }
    }
    res
}

/// Rejects runs that cannot start: no trainee, no data, class counts that differ, SATM without a source, a sources
/// graph that names missing networks or a trainee itself.
fn check_run(run: &Run, cfg: &TrainConfig) -> Result<()> {
    let k_tr = run.trainees.len();
    let n_total = k_tr + run.frozen.len();
    if k_tr == 0 {
        bail!("no trainee: give at least one network to train");
    }
    if run.train.is_empty() {
        bail!("the training set is empty");
    }
    let classes = run.train.num_classes();
    for n in run.trainees.iter().map(|n| &**n).chain(run.frozen.iter().copied()) {
        if n.num_classes() != classes {
            bail!("network {} has {} classes but the data has {classes}", n.label(), n.num_classes());
        }
    }
    if cfg.needs_adversarial() && !matches!(cfg.sources, SourcePolicy::Graph(_)) && n_total < 2 && cfg.white_box == 0.0
    {
        bail!(
            "SATM needs at least two networks (trainees + frozen sources); for standard training set r_adv: 0, r_da: 0"
        );
    }
    if let SourcePolicy::Graph(g) = &cfg.sources {
        if g.len() != k_tr {
            bail!("sources graph has {} rows but there are {k_tr} trainees", g.len());
        }
        for (k, row) in g.iter().enumerate() {
            for &s in row {
                if s >= n_total {
                    bail!("sources graph: trainee {k} lists network {s}, but there are only {n_total} networks");
                }
                if s == k {
                    bail!("sources graph: trainee {k} lists itself (use white_box for white-box training)");
                }
            }
        }
    }
    Ok(())
}

/// The attack crafting training examples under the settings in force.
fn attack_spec(cfg: &TrainConfig, s: &Settings) -> AttackSpec {
    let mut spec = cfg.attack_spec();
    spec.eps = s.eps;
    spec.alpha = s.alpha();
    spec
}

/// The batch of `step`. The batch order of each epoch depends only on (seed, epoch): a resumed run skips to its
/// position.
fn next_batch(
    it: &mut Option<(usize, Batches)>,
    data: &Dataset,
    cfg: &TrainConfig,
    step: usize,
    bpe: usize,
) -> Result<Batch> {
    let (epoch, in_epoch) = (step / bpe, step % bpe);
    if it.as_ref().map(|(e, _)| *e) != Some(epoch) {
        let opts = BatchOpts {
            batch_size: cfg.batch_size,
            shuffle: true,
            seed: mix(cfg.seed ^ mix(epoch as u64)),
            augment: cfg.augment,
            drop_last: data.len() >= cfg.batch_size,
            device: Device::Cpu,
        };
        let mut batches = data.batches(&opts)?;
        for _ in 0..in_epoch {
            batches.next().transpose()?;
        }
        *it = Some((epoch, batches));
    }
    match it.as_mut().and_then(|(_, b)| b.next()) {
        Some(b) => b,
        None => bail!("the training set ran out of batches at step {step} (epoch {epoch})"),
    }
}

/// The loop state a checkpoint holds besides the weights.
struct Progress {
    step: usize,
    early: EarlyStopping,
    source_counts: Vec<Vec<usize>>,
}

/// The run directory holding a checkpoint given as `resume` (a run directory, or one of its checkpoint directories).
fn run_dir_of(resume: &Path) -> Option<&Path> {
    if resume.join("state.json").is_file() { resume.parent().and_then(|p| p.parent()) } else { Some(resume) }
}

/// The resolved config and the run's identity, written before the first step.
fn write_run_files(dir: &Path, cfg: &TrainConfig, labels: &[String], k_tr: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating run directory {}", dir.display()))?;
    let text = ron::ser::to_string_pretty(cfg, ron::ser::PrettyConfig::default())?;
    crate::core::fsutil::atomic_write(&dir.join("config.ron"), text.as_bytes())?;
    let meta = serde_json::json!({"satm": crate::VERSION, "seed": cfg.seed, "networks": labels, "trainees": k_tr});
    crate::core::fsutil::atomic_write(&dir.join("run.json"), serde_json::to_string_pretty(&meta)?.as_bytes())
}

/// The loop's parts, built before it starts.
struct Trainer<'a> {
    cfg: TrainConfig,
    trainees: Vec<Trainee<'a>>,
    frozen: Vec<&'a Net>,
    frozen_bf16: Vec<bool>,
    data: &'a Dataset,
    val: Option<&'a Dataset>,
    dir: Option<PathBuf>,
    control: Option<Arc<RunControl>>,
    /// Every network's label: trainees, then frozen.
    labels: Vec<String>,
    total_steps: usize,
    steps_per_epoch: usize,
    eval_every: usize,
    da_heads: bool,
    p: Progress,
    steer: Steering,
    sink: Sink,
    guard: Guard,
    /// The attack under the settings in force.
    spec: AttackSpec,
    par: SideBySide,
    epoch_batches: Option<(usize, Batches)>,
    last_checkpoint: Option<PathBuf>,
}

impl<'a> Trainer<'a> {
    /// Checks the run, builds the trainees and every part, and continues from the checkpoint to resume from.
    fn new(run: Run<'a>) -> Result<Trainer<'a>> {
        let cfg = run.cfg.clone();
        cfg.validate()?;
        check_run(&run, &cfg)?;
        let Run { trainees: nets, frozen, train: data, val, dir, resume, progress, control, .. } = run;
        let k_tr = nets.len();
        let n_total = k_tr + frozen.len();
        let labels = unique_labels(nets.iter().map(|n| n.label()).chain(frozen.iter().map(|n| n.label())).collect());
        let frozen_bf16: Vec<bool> = frozen.iter().map(|n| cfg.precision.resolve(n.device()).0).collect();
        let mut trainees = trainees::build(nets, &cfg)?;
        let steps_per_epoch = batches_per_epoch(data.len(), cfg.batch_size);
        let total_steps = if cfg.epochs > 0 { cfg.epochs * steps_per_epoch } else { cfg.steps };
        let eval_every = if cfg.eval_every > 0 { cfg.eval_every } else { steps_per_epoch };
        let da_heads = cfg.r_da > 0.0;
        let mut steer = Steering::new(&cfg, total_steps, da_heads, has_source(&cfg, n_total), control.clone())?;
        if let Some(dir) = &dir {
            write_run_files(dir, &cfg, &labels, k_tr)?;
        }
        let mut p =
            Progress { step: 0, early: EarlyStopping::new(&cfg), source_counts: vec![vec![0usize; n_total]; k_tr] };
        let mut history = History::default();
        if let Some(from) = &resume {
            let st =
                trainees::load(from, &mut trainees).with_context(|| format!("resuming from {}", from.display()))?;
            if st.labels != labels {
                bail!(
                    "checkpoint {} was written for networks {:?}, this run has {:?}",
                    from.display(),
                    st.labels,
                    labels
                );
            }
            p.step = st.step;
            history = st.history;
            p.early.best = st.best;
            p.early.since_best = st.since_best;
            p.source_counts = st.source_counts;
            let logged = run_dir_of(from).map(|d| logged_events(&d.join("metrics.jsonl"))).unwrap_or_default();
            steer.resume(p.step, &st.events, logged);
        }
        let sink = Sink::open(
            dir.as_deref(),
            progress,
            control.clone(),
            labels[..k_tr].to_vec(),
            history,
            p.step,
            total_steps,
            cfg.batch_size,
        )?;
        let spec = attack_spec(&cfg, &steer.settings);
        let par = SideBySide::plan(trainees.iter().map(|t| &*t.net), &frozen, &spec);
        let guard = Guard::new(&cfg, k_tr, steps_per_epoch);
        let t = Trainer {
            cfg,
            trainees,
            frozen,
            frozen_bf16,
            data,
            val,
            dir,
            control,
            labels,
            total_steps,
            steps_per_epoch,
            eval_every,
            da_heads,
            p,
            steer,
            sink,
            guard,
            spec,
            par,
            epoch_batches: None,
            last_checkpoint: None,
        };
        t.publish(RunState::Running);
        Ok(t)
    }

    /// The fraction of training done after `step` steps.
    fn progress(&self, step: usize) -> f64 {
        step as f64 / self.total_steps.max(1) as f64
    }

    fn publish(&self, state: RunState) {
        self.sink.publish(state, self.p.step, self.steer.settings.list(self.progress(self.p.step)));
    }

    fn checkpoint(&mut self) -> Result<Option<PathBuf>> {
        let Some(dir) = &self.dir else { return Ok(None) };
        let state = CheckpointState {
            step: self.p.step,
            history: self.sink.history.clone(),
            best: self.p.early.best,
            since_best: self.p.early.since_best,
            source_counts: self.p.source_counts.clone(),
            labels: self.labels.clone(),
            satm: crate::VERSION.to_string(),
            events: self.steer.events.clone(),
        };
        trainees::save(dir, &mut self.trainees, &state).map(Some)
    }

    /// The step boundary: Ctrl-C (an error, after a checkpoint), pause, stop, then the steering changes due.
    /// Some(reason) ends the run.
    fn boundary(&mut self) -> Result<Option<&'static str>> {
        let step = self.p.step;
        if let Err(e) = cancel::check() {
            self.sink.abandon();
            let ck = self.checkpoint()?;
            return Err(e.context(match ck {
                Some(c) => format!(
                    "training stopped at step {step}; checkpoint {} (continue with resume: \"{}\")",
                    c.display(),
                    c.display()
                ),
                None => format!("training stopped at step {step} (no run directory, nothing saved)"),
            }));
        }
        if let Some(c) = self.control.clone() {
            if c.is_paused() && !c.stop_requested() {
                self.publish(RunState::Paused);
                c.wait_while_paused();
                self.sink.restart_clock(step);
            }
            if c.stop_requested() {
                self.publish(RunState::Stopping);
                return Ok(Some("stopped"));
            }
        }
        let (applied, rejected) = self.steer.due(step, self.progress(step));
        for (e, origin) in &applied {
            self.sink.event(e, *origin);
        }
        for r in &rejected {
            self.sink.rejected(r);
        }
        if !applied.is_empty() {
            self.spec = attack_spec(&self.cfg, &self.steer.settings);
        }
        Ok(None)
    }

    /// One step: the batch, the sources' adversarial examples, one update per trainee, the log point. Returns the
    /// epoch, the batch and the loss weights, for the checks after the step.
    fn step(&mut self) -> Result<(usize, OnDevices, LossWeights)> {
        let step = self.p.step;
        let progress = self.progress(step);
        let epoch = step / self.steps_per_epoch;
        let batch = next_batch(&mut self.epoch_batches, self.data, &self.cfg, step, self.steps_per_epoch)?;
        let mut batch = OnDevices::new(batch);
        crate::core::random::seed(mix(self.cfg.seed ^ mix(0x5A7A + step as u64)) & i64::MAX as u64)?;
        let s = &self.steer.settings;
        let w =
            LossWeights { r_adv: s.r_adv, r_da: s.r_da, white_box: self.cfg.white_box, lambda: s.lambda.at(progress) };
        let lr = self.cfg.lr_schedule.at(s.lr, step, progress);
        let src = step::craft_sources(
            &mut self.trainees,
            &self.frozen,
            &self.frozen_bf16,
            &mut batch,
            &self.spec,
            &self.cfg,
            &w,
            step,
            &self.par,
            &self.labels,
        )?;
        for (k, chosen) in src.chosen.iter().enumerate() {
            for &s in chosen {
                self.p.source_counts[k][s] += 1;
            }
        }
        let outs = step::update_all(&mut self.trainees, &mut batch, &src, &w, lr, &self.par);
        for (k, out) in outs.into_iter().enumerate() {
            let out = out.with_context(|| format!("training {} at step {step}", self.labels[k]))?;
            if !out.total.is_finite() {
                self.sink.abandon();
                let kept = self
                    .last_checkpoint
                    .as_ref()
                    .map(|c| format!("; the last good checkpoint is {}", c.display()))
                    .unwrap_or_default();
                bail!(
                    "trainee {k} ({}): loss is {} at step {step} (lr {lr}); training stopped{kept}. Lower lr or check the data",
                    self.labels[k],
                    out.total
                );
            }
            self.sink.add(k, &out);
        }
        self.p.step += 1;
        let step = self.p.step;
        self.sink.position(step);
        if step.is_multiple_of(self.cfg.log_every) || step == self.total_steps {
            self.sink.log(step, epoch, self.da_heads.then_some(w.lambda), lr);
        }
        Ok((epoch, batch, w))
    }

    /// After a step: the guard, validation and early stopping, the periodic checkpoint, the status. Some(reason)
    /// ends the run.
    fn after_step(&mut self, epoch: usize, batch: &mut OnDevices, w: &LossWeights) -> Result<Option<&'static str>> {
        let step = self.p.step;
        let eps = self.steer.settings.eps;
        if self.guard.check(&mut self.trainees, batch, eps, step, epoch, &mut self.sink)? {
            return Ok(Some("guard"));
        }
        if let Some(val) = self.val
            && (step.is_multiple_of(self.eval_every) || step == self.total_steps)
        {
            let t = &self.trainees;
            let (frozen, bf16) = (&self.frozen, &self.frozen_bf16);
            let total = validate(t, frozen, bf16, val, &self.cfg, &self.spec, w, step, epoch, &mut self.sink)?;
            self.sink.publish_history();
            if self.p.early.update(total, step, &self.trainees) {
                return Ok(Some("early_stopping"));
            }
        }
        if self.cfg.checkpoint_every > 0 && step.is_multiple_of(self.cfg.checkpoint_every) && step < self.total_steps {
            self.last_checkpoint = self.checkpoint()?;
        }
        self.publish(RunState::Running);
        Ok(None)
    }

    /// The final checkpoint, the best weights back (with keep_best), and the result.
    fn finish(mut self, stopped: &str, t0: std::time::Instant) -> Result<TrainResult> {
        self.sink.finish();
        let final_ck = self.checkpoint()?;
        if self.cfg.keep_best
            && let Some(w) = &self.p.early.best_weights
        {
            trainees::restore(&mut self.trainees, w)?;
        }
        self.sink.publish_history();
        let labels = self.labels;
        let history = self.sink.history;
        let summaries = (0..self.trainees.len())
            .map(|k| TraineeSummary {
                label: labels[k].clone(),
                train_clean_acc: history.last("train", &labels[k], "clean_acc"),
                train_adv_acc: history.last("train", &labels[k], "adv_acc"),
                val_clean_acc: history.last("val", &labels[k], "clean_acc"),
                val_adv_acc: history.last("val", &labels[k], "adv_acc"),
                source_counts: self.p.source_counts[k].clone(),
            })
            .collect();
        Ok(TrainResult {
            history,
            steps: self.p.step,
            best_step: self.p.early.best.map(|b| b.1),
            best_val_loss: self.p.early.best.map(|b| b.0),
            stopped: stopped.to_string(),
            dir: self.dir,
            checkpoint: final_ck,
            wall_s: t0.elapsed().as_secs_f64(),
            trainees: summaries,
            labels,
        })
    }
}

/// The loop: a step boundary, a step, the checks after it — until the last step or a reason to end.
fn train(run: Run) -> Result<TrainResult> {
    // Every step frees and re-allocates the same activation sizes: keep them in the heap (no page faults per step).
    crate::core::amp::retain_freed_memory();
    let t0 = std::time::Instant::now();
    // The run draws from a stream of its own (DA heads' initial weights, then reseeded at every step and validation
    // batch): its numbers depend on its seed alone, never on what another thread draws, and the caller's stream is
    // as it was when the run returns.
    let _stream = crate::core::random::scope(mix(run.cfg.seed ^ mix(0xDA7A)))?;
    let mut t = Trainer::new(run)?;
    let mut stopped = "completed";
    while t.p.step < t.total_steps {
        if let Some(why) = t.boundary()? {
            stopped = why;
            break;
        }
        let (epoch, mut batch, w) = t.step()?;
        if let Some(why) = t.after_step(epoch, &mut batch, &w)? {
            stopped = why;
            break;
        }
    }
    t.finish(stopped, t0)
}

/// Network labels for logs and tables; repeated architectures get `#i` (1-based position) appended.
pub fn unique_labels(raw: Vec<String>) -> Vec<String> {
    raw.iter()
        .enumerate()
        .map(|(i, l)| if raw.iter().filter(|m| *m == l).count() > 1 { format!("{l}#{}", i + 1) } else { l.clone() })
        .collect()
}
