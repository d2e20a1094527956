//! The SATM loop (Algorithm 1, Sections 4.1–4.3) for K trainees and any number of frozen sources, with standard
//! training as the special case r_adv = r_da = 0. One step:
//!   1. one clean batch;
//!   2. adversarial examples of every source needed this step, crafted on that source from the same clean batch
//!      before any weight update (Algorithm 1 lines 5–6);
//!   3. for each trainee: CE(clean) + r_adv·CE(adv from its source) + r_da·DA(clean vs adv features through a GRL)
//!      [+ white_box·CE(own adv)], one optimizer step on the trainee and its DA head.
use super::History;
use super::checkpoint::{self, CheckpointState};
use super::config::{GuardAction, SourcePolicy, TrainConfig};
use super::grl::grl;
use super::optim::Optimizer;
use crate::core::amp::Autocast;
use crate::core::attacks::{self, AttackKind, AttackSpec, Target};
use crate::core::cancel;
use crate::core::data::{Batch, BatchOpts, Dataset};
use crate::core::models::{Classifier, DaHead, Net};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use tch::{Device, Kind, Reduction, Tensor, nn};

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
    /// Show a progress bar.
    pub progress: bool,
    /// Steering while it trains (pause, set, stop) and its live status; see `control`.
    pub control: Option<std::sync::Arc<super::control::RunControl>>,
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
    /// "completed", "early_stopping", or "guard".
    pub stopped: String,
    pub dir: Option<PathBuf>,
    pub checkpoint: Option<PathBuf>,
    pub wall_s: f64,
    pub trainees: Vec<TraineeSummary>,
    pub labels: Vec<String>,
}

/// A deterministic 64-bit mix (splitmix64), so per-step randomness depends only on (seed, step).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Which networks (indices: trainees 0..K, then frozen K..K+F) trainee `k` learns from at `step`.
pub fn sources_for(
    policy: &SourcePolicy,
    k: usize,
    n_trainees: usize,
    n_total: usize,
    step: usize,
    seed: u64,
) -> Vec<usize> {
    let others: Vec<usize> = match policy {
        SourcePolicy::Graph(g) => g.get(k).cloned().unwrap_or_default(),
        // The order (k+1, k+2, ... mod K, then frozen) makes round-robin match ref_satm.py's (k + 1 + it % (K−1)) % K.
        _ => (1..n_trainees).map(|d| (k + d) % n_trainees).chain(n_trainees..n_total).collect(),
    };
    if others.is_empty() {
        return others;
    }
    match policy {
        SourcePolicy::All => others,
        SourcePolicy::Random => {
            let r = mix(seed ^ mix(step as u64) ^ mix(0xA11CE + k as u64));
            vec![others[(r % others.len() as u64) as usize]]
        }
        SourcePolicy::RoundRobin | SourcePolicy::Graph(_) => vec![others[step % others.len()]],
    }
}

/// Whether a network keeps batch statistics (then clean and adversarial batches need separate forward passes, as
/// concatenating them would change the statistics).
fn has_batch_stats(net: &Net) -> bool {
    net.named_variables().iter().any(|(n, _)| n.ends_with("running_mean"))
}

struct Member {
    da_vs: Option<nn::VarStore>,
    da: Option<DaHead>,
    opt: Optimizer,
    batch_stats: bool,
}

/// Running sums of one trainee's training metrics between two log points.
#[derive(Default, Clone)]
struct Acc {
    n: f64,
    sums: BTreeMap<&'static str, f64>,
}

impl Acc {
    fn add(&mut self, k: &'static str, v: f64) {
        *self.sums.entry(k).or_insert(0.0) += v;
    }
}

fn ce(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(logits.f_to_kind(Kind::Float)?.f_cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0)?)
}

fn accuracy(logits: &Tensor, y: &Tensor) -> Result<f64> {
    Ok(logits.f_argmax(-1, false)?.f_eq_tensor(y)?.f_to_kind(Kind::Float)?.f_mean(Kind::Float)?.f_double_value(&[])?)
}

fn attack_spec(cfg: &TrainConfig) -> Result<AttackSpec> {
    let kind: AttackKind = cfg.attack.parse().with_context(|| format!("attack '{}'", cfg.attack))?;
    let mut spec = AttackSpec::new(kind);
    spec.eps = cfg.eps;
    spec.alpha = cfg.alpha();
    spec.target = if cfg.target == "least_likely" { Target::LeastLikely } else { Target::True };
    Ok(spec)
}

fn batches_per_epoch(n: usize, b: usize) -> usize {
    if n >= b { n / b } else { 1 }
}

/// Runs training; see the module docs.
pub fn run(mut run: Run) -> Result<TrainResult> {
    let mut cfg = run.cfg.clone();
    cfg.validate()?;
    // Every step frees and re-allocates the same activation sizes: keep them in the heap (no page faults per step).
    crate::core::amp::retain_freed_memory();
    let t0 = std::time::Instant::now();
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
    let labels =
        unique_labels(run.trainees.iter().map(|n| n.label()).chain(run.frozen.iter().map(|n| n.label())).collect());
    let mut spec = attack_spec(&cfg)?;
    let use_bf16: Vec<bool> = run
        .trainees
        .iter()
        .map(|n| cfg.precision.resolve(n.device()).0)
        .chain(run.frozen.iter().map(|n| cfg.precision.resolve(n.device()).0))
        .collect();
    if cfg.channels_last {
        for n in run.trainees.iter_mut() {
            n.set_channels_last(true);
        }
    }

    // Optimizers and DA heads.
    let mut members: Vec<Member> = Vec::with_capacity(k_tr);
    for net in run.trainees.iter() {
        let mut params = net.trainable_variables();
        let (da_vs, da) = if cfg.r_da > 0.0 {
            let vs = nn::VarStore::new(net.device());
            let head = DaHead::new(vs.root() / "da", net.feature_dim(), cfg.da_hidden);
            params.extend(vs.trainable_variables());
            (Some(vs), Some(head))
        } else {
            (None, None)
        };
        members.push(Member { da_vs, da, opt: Optimizer::new(params, cfg.optim()), batch_stats: has_batch_stats(net) });
    }

    let bpe = batches_per_epoch(run.train.len(), cfg.batch_size);
    let total_steps = if cfg.epochs > 0 { cfg.epochs * bpe } else { cfg.steps };
    let eval_every = if cfg.eval_every > 0 { cfg.eval_every } else { bpe };
    let guard_on = cfg.guard_enabled();
    let guard_every = if cfg.guard.every > 0 { cfg.guard.every } else { bpe };

    let mut history = History::default();
    let mut step0 = 0usize;
    let mut best: Option<(f64, usize)> = None;
    let mut since_best = 0usize;
    let mut best_weights: Option<Vec<Vec<Tensor>>> = None;
    let mut source_counts = vec![vec![0usize; n_total]; k_tr];

    if let Some(dir) = &run.dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating run directory {}", dir.display()))?;
        let text = ron::ser::to_string_pretty(&cfg, ron::ser::PrettyConfig::default())?;
        crate::core::fsutil::atomic_write(&dir.join("config.ron"), text.as_bytes())?;
        let meta = serde_json::json!({"satm": crate::VERSION, "seed": cfg.seed, "networks": labels, "trainees": k_tr});
        crate::core::fsutil::atomic_write(&dir.join("run.json"), serde_json::to_string_pretty(&meta)?.as_bytes())?;
    }

    if let Some(from) = &run.resume {
        let st: CheckpointState = checkpoint::load(
            from,
            &mut run.trainees,
            &mut members.iter_mut().map(|m| (m.da_vs.as_mut(), &mut m.opt)).collect::<Vec<_>>(),
        )
        .with_context(|| format!("resuming from {}", from.display()))?;
        if st.labels != labels {
            bail!("checkpoint {} was written for networks {:?}, this run has {:?}", from.display(), st.labels, labels);
        }
        step0 = st.step;
        history = st.history;
        best = st.best;
        since_best = st.since_best;
        source_counts = st.source_counts;
    }

    let mut metrics_file = match &run.dir {
        Some(d) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(d.join("metrics.jsonl"))
                .with_context(|| format!("opening {}", d.join("metrics.jsonl").display()))?,
        ),
        None => None,
    };
    let mut emit = |history: &mut History, step: usize, epoch: usize, split: &str, net: &str, metric: &str, v: f64| {
        history.push(step, epoch, split, net, metric, v);
        if let Some(f) = metrics_file.as_mut() {
            let line = serde_json::json!({"step": step, "epoch": epoch, "split": split, "net": net, "metric": metric, "value": v});
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    };

    let pb = if run.progress && !crate::script::state::quiet() {
        let pb = indicatif::ProgressBar::new(total_steps as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed}<{eta} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_position(step0 as u64);
        pb
    } else {
        indicatif::ProgressBar::hidden()
    };

    let mut accs = vec![Acc::default(); k_tr];
    let mut guard_prev: Vec<Option<f64>> = vec![None; k_tr];
    let mut guard_good: Option<Vec<Vec<Tensor>>> = None;
    let mut stopped = "completed".to_string();
    let mut epoch_iter: Option<(usize, crate::core::data::Batches)> = None;
    let mut last_checkpoint: Option<PathBuf> = None;

    let snapshot = |trainees: &Vec<&mut Net>| -> Vec<Vec<Tensor>> {
        trainees.iter().map(|n| n.named_variables().into_iter().map(|(_, t)| t.detach().copy()).collect()).collect()
    };
    let restore = |trainees: &mut Vec<&mut Net>, w: &Vec<Vec<Tensor>>| -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (n, ws) in trainees.iter_mut().zip(w) {
                for ((_, mut v), src) in n.named_variables().into_iter().zip(ws) {
                    v.f_copy_(src)?;
                }
            }
            Ok(())
        })
    };

    let par = SideBySide::plan(&run.trainees, &run.frozen, &spec);
    let mut step = step0;
    let mut steer_clock = (std::time::Instant::now(), step0, 0.0f64);
    while step < total_steps {
        if let Some(ctl) = run.control.clone() {
            use super::control::{RunState, RunStatus, SteerEvent, TraineeStatus};
            let (now, progress) = (std::time::Instant::now(), step as f64 / total_steps.max(1) as f64);
            let dt = now.duration_since(steer_clock.0).as_secs_f64();
            if dt >= 2.0 {
                steer_clock = (now, step, (step - steer_clock.1) as f64 * cfg.batch_size as f64 / dt);
            }
            let log_point = step == step0 || step.is_multiple_of(cfg.log_every);
            let trainees = if log_point {
                let m = |k: usize, n: &str| history.last("train", &labels[k], n);
                (0..k_tr)
                    .map(|k| TraineeStatus {
                        label: labels[k].clone(),
                        clean_loss: m(k, "clean_loss"),
                        clean_acc: m(k, "clean_acc"),
                        adv_loss: m(k, "adv_loss"),
                        adv_acc: m(k, "adv_acc"),
                        da_loss: m(k, "da_loss"),
                        domain_acc: m(k, "domain_acc"),
                    })
                    .collect()
            } else {
                ctl.status().trainees
            };
            let (rate, lam) = (steer_clock.2, cfg.lambda.at(progress));
            let mut status = RunStatus {
                state: if ctl.stop_requested() {
                    RunState::Stopping
                } else if ctl.is_paused() {
                    RunState::Paused
                } else {
                    RunState::Running
                },
                step,
                total: total_steps,
                img_per_s: rate,
                eta_s: (rate > 0.0).then(|| (total_steps - step) as f64 * cfg.batch_size as f64 / rate),
                trainees,
                settings: [("r_adv", cfg.r_adv), ("r_da", cfg.r_da), ("lambda", lam), ("lr", cfg.lr)]
                    .into_iter()
                    .chain([("eps", cfg.eps), ("alpha", cfg.alpha())])
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                error: None,
            };
            ctl.publish(status.clone(), log_point.then_some(&history));
            if ctl.is_paused() {
                ctl.wait_while_paused();
                steer_clock = (std::time::Instant::now(), step, steer_clock.2);
                status.state = RunState::Running;
                ctl.publish(status, None);
            }
            if ctl.stop_requested() {
                stopped = "stopped".into();
                break;
            }
            for (key, new) in ctl.take_pending() {
                let old = match key.as_str() {
                    "r_adv" => std::mem::replace(&mut cfg.r_adv, new),
                    "r_da" => std::mem::replace(&mut cfg.r_da, new),
                    "lambda" => {
                        cfg.lambda = super::config::LambdaSchedule::Constant(new);
                        lam
                    }
                    "lr" => std::mem::replace(&mut cfg.lr, new),
                    "eps" => std::mem::replace(&mut cfg.eps, new),
                    "alpha" => {
                        let a = cfg.alpha();
                        cfg.alpha = Some(new);
                        a
                    }
                    other => bail!("'{other}' cannot be changed while a run trains"),
                };
                spec = attack_spec(&cfg)?;
                ctl.record_event(SteerEvent { step, key: key.clone(), old, new });
                if let Some(d) = &run.dir {
                    let line = serde_json::json!({"event": "set", "step": step, "key": key, "old": old, "new": new});
                    let mut f = std::fs::OpenOptions::new().append(true).open(d.join("metrics.jsonl"))?;
                    f.write_all(format!("{line}\n").as_bytes())?;
                }
            }
        }
        if let Err(e) = cancel::check() {
            pb.abandon();
            let ck = save_checkpoint(&run, &members, step, &history, best, since_best, &source_counts, &labels)?;
            return Err(e.context(match ck {
                Some(p) => format!(
                    "training stopped at step {step}; checkpoint {} (continue with resume: \"{}\")",
                    p.display(),
                    p.display()
                ),
                None => format!("training stopped at step {step} (no run directory, nothing saved)"),
            }));
        }
        let epoch = step / bpe;
        let in_epoch = step % bpe;
        // The batch order of each epoch depends only on (seed, epoch): a resumed run skips to its position.
        if epoch_iter.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let opts = BatchOpts {
                batch_size: cfg.batch_size,
                shuffle: true,
                seed: mix(cfg.seed ^ mix(epoch as u64)),
                augment: cfg.augment,
                drop_last: run.train.len() >= cfg.batch_size,
                device: Device::Cpu,
            };
            let mut it = run.train.batches(&opts)?;
            for _ in 0..in_epoch {
                it.next().transpose()?;
            }
            epoch_iter = Some((epoch, it));
        }
        let batch: Batch = match epoch_iter.as_mut().and_then(|(_, it)| it.next()) {
            Some(b) => b?,
            None => bail!("the training set ran out of batches at step {step} (epoch {epoch})"),
        };
        tch::manual_seed(mix(cfg.seed ^ mix(0x5A7A + step as u64)) as i64 & i64::MAX);
        let progress = step as f64 / total_steps.max(1) as f64;
        let lambda = cfg.lambda.at(progress);
        let lr = cfg.lr_schedule.at(cfg.lr, step, progress);

        // Clean batch on each device in use.
        let mut on_dev: BTreeMap<String, (Tensor, Tensor)> = BTreeMap::new();
        let mut xy = |d: Device| -> (Tensor, Tensor) {
            on_dev.entry(format!("{d:?}")).or_insert_with(|| (batch.x.to_device(d), batch.y.to_device(d)));
            let (x, y) = &on_dev[&format!("{d:?}")];
            (x.shallow_clone(), y.shallow_clone())
        };

        // 1–2: sources of this step, crafted before any update.
        let chosen: Vec<Vec<usize>> = (0..k_tr)
            .map(|k| {
                if cfg.r_adv != 0.0 || cfg.r_da != 0.0 {
                    sources_for(&cfg.sources, k, k_tr, n_total, step, cfg.seed)
                } else {
                    vec![]
                }
            })
            .collect();
        let mut needed: Vec<usize> = chosen.iter().flatten().copied().collect();
        if cfg.white_box != 0.0 {
            needed.extend(0..k_tr);
        }
        needed.sort_unstable();
        needed.dedup();
        // R+Step-LL / R+FGSM draw their random step here, in source order, on the main thread: the draws do not
        // depend on whether the sources are then crafted one after another or side by side.
        let noise: BTreeMap<usize, Tensor> = if attack_uses_noise(&spec) {
            needed
                .iter()
                .map(|&s| Ok((s, Tensor::f_randn(batch.x.size(), (Kind::Float, Device::Cpu))?)))
                .collect::<Result<_>>()?
        } else {
            BTreeMap::new()
        };
        let mut adv: BTreeMap<usize, Tensor> = BTreeMap::new();
        let craft_err = |s: usize| format!("crafting adversarial examples on {} at step {step}", labels[s]);
        // Trainee sources side by side (one worker per network), frozen ones on this thread.
        let side_by_side: Vec<usize> =
            if par.craft { needed.iter().copied().filter(|&s| s < k_tr).collect() } else { vec![] };
        if !side_by_side.is_empty() {
            let (x, y) = xy(Device::Cpu);
            let mut jobs: Vec<Job<Tensor>> = vec![];
            for (s, net) in run.trainees.iter_mut().enumerate() {
                if !side_by_side.contains(&s) {
                    continue;
                }
                // `&mut` although crafting only reads the network: a Net may move between threads, not be shared.
                let net: &mut Net = net;
                let (x, y, n) = (x.shallow_clone(), y.shallow_clone(), noise.get(&s).map(|t| t.shallow_clone()));
                let (spec, bf16) = (&spec, use_bf16[s]);
                jobs.push(Box::new(move || craft_on(spec, net, &x, &y, n.as_ref(), bf16)));
            }
            for (s, r) in side_by_side.iter().zip(run_side_by_side(jobs, &par.threads)) {
                adv.insert(*s, r.with_context(|| craft_err(*s))?);
            }
        }
        for &s in needed.iter().filter(|s| !side_by_side.contains(s)) {
            let net: &Net = if s < k_tr { &*run.trainees[s] } else { run.frozen[s - k_tr] };
            let (x, y) = xy(net.device());
            let xa = craft_on(&spec, net, &x, &y, noise.get(&s), use_bf16[s]).with_context(|| craft_err(s))?;
            adv.insert(s, xa);
        }

        // 3: one update per trainee.
        for k in 0..k_tr {
            for &s in &chosen[k] {
                source_counts[k][s] += 1;
            }
        }
        let inputs = |k: usize, dev: Device| -> (Vec<Tensor>, Option<Tensor>) {
            let parts = chosen[k].iter().map(|s| adv[s].to_device(dev)).collect();
            let own = (cfg.white_box != 0.0).then(|| adv[&k].to_device(dev));
            (parts, own)
        };
        let outs: Vec<Result<StepOut>> = if par.train {
            let (x, y) = xy(Device::Cpu);
            let mut jobs: Vec<Job<StepOut>> = vec![];
            for (k, (net, m)) in run.trainees.iter_mut().zip(members.iter_mut()).enumerate() {
                let (parts, own) = inputs(k, Device::Cpu);
                let (x, y, cfg, bf16) = (x.shallow_clone(), y.shallow_clone(), &cfg, use_bf16[k]);
                let net: &mut Net = net;
                jobs.push(Box::new(move || {
                    update_trainee(net, m, &x, &y, &parts, own.as_ref(), cfg, lambda, lr, bf16, true)
                }));
            }
            run_side_by_side(jobs, &par.threads)
        } else {
            let mut outs = vec![];
            for (k, (net, m)) in run.trainees.iter_mut().zip(members.iter_mut()).enumerate() {
                let dev = net.device();
                let (x, y) = xy(dev);
                let (parts, own) = inputs(k, dev);
                let out = update_trainee(net, m, &x, &y, &parts, own.as_ref(), &cfg, lambda, lr, use_bf16[k], false);
                // A failed or non-finite trainee stops the step before the next one is updated.
                let stop = out.as_ref().map_or(true, |o| !o.total.is_finite());
                outs.push(out);
                if stop {
                    break;
                }
            }
            outs
        };
        for (k, out) in outs.into_iter().enumerate() {
            let out = out.with_context(|| format!("training {} at step {step}", labels[k]))?;
            for (name, v) in &out.metrics {
                accs[k].add(name, *v);
            }
            let lv = out.total;
            if !lv.is_finite() {
                pb.abandon();
                let kept = last_checkpoint
                    .as_ref()
                    .map(|p| format!("; the last good checkpoint is {}", p.display()))
                    .unwrap_or_default();
                bail!(
                    "trainee {} ({}): loss is {lv} at step {step} (lr {lr}); training stopped{kept}. Lower lr or check the data",
                    k,
                    labels[k]
                );
            }
            accs[k].add("total_loss", lv);
            accs[k].n += 1.0;
        }
        step += 1;
        pb.set_position(step as u64);

        // Logging.
        if step.is_multiple_of(cfg.log_every) || step == total_steps {
            let mut msg = String::new();
            for k in 0..k_tr {
                let a = std::mem::take(&mut accs[k]);
                if a.n == 0.0 {
                    continue;
                }
                for (name, sum) in &a.sums {
                    emit(&mut history, step, epoch, "train", &labels[k], name, sum / a.n);
                }
                if cfg.r_da > 0.0 {
                    emit(&mut history, step, epoch, "train", &labels[k], "lambda", lambda);
                }
                emit(&mut history, step, epoch, "train", &labels[k], "lr", lr);
                let g = |n: &str| a.sums.get(n).map(|s| s / a.n);
                msg.push_str(&format!(
                    "{}: clean {:.2} adv {} ",
                    labels[k],
                    g("clean_acc").unwrap_or(f64::NAN),
                    g("adv_acc").map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
                ));
                if let Some(d) = g("da_loss") {
                    msg.push_str(&format!("da {d:.3}/{:.2} ", g("domain_acc").unwrap_or(f64::NAN)));
                }
            }
            pb.set_message(msg);
        }

        // Catastrophic-overfitting guard.
        if guard_on && step.is_multiple_of(guard_every) {
            let mut collapsed = false;
            let mut pgd = AttackSpec::new(AttackKind::Pgd);
            pgd.eps = cfg.eps;
            pgd.steps = cfg.guard.pgd_steps;
            pgd.step_size = cfg.eps / 4.0;
            for k in 0..k_tr {
                let net = &*run.trainees[k];
                let (x, y) = xy(net.device());
                let xa = attacks::craft(&pgd, &[net as &dyn Classifier], &x, &y)?;
                let acc = tch::no_grad(|| accuracy(&net.forward_t(&xa, false)?, &y))?;
                emit(&mut history, step, epoch, "train", &labels[k], "guard_pgd_acc", acc);
                if let Some(prev) = guard_prev[k]
                    && prev - acc > cfg.guard.drop
                {
                    collapsed = true;
                    emit(&mut history, step, epoch, "train", &labels[k], "guard_collapse", 1.0);
                    pb.println(format!(
                        "satm: catastrophic overfitting? {}: PGD accuracy fell {prev:.3} -> {acc:.3} at step {step}",
                        labels[k]
                    ));
                }
                guard_prev[k] = Some(acc);
            }
            if collapsed {
                match cfg.guard.action {
                    GuardAction::Warn => {}
                    GuardAction::Stop => {
                        stopped = "guard".into();
                        break;
                    }
                    GuardAction::Rollback => {
                        if let Some(w) = &guard_good {
                            restore(&mut run.trainees, w)?;
                            guard_prev = vec![None; k_tr];
                        }
                    }
                }
            } else {
                guard_good = Some(snapshot(&run.trainees));
            }
        }

        // Validation and early stopping.
        if let Some(val) = run.val
            && (step.is_multiple_of(eval_every) || step == total_steps)
        {
            let total = validate(&run, val, &cfg, &spec, &use_bf16, &labels, step, epoch, &mut |s, e, sp, n, m, v| {
                emit(&mut history, s, e, sp, n, m, v)
            })?;
            if best.is_none_or(|(b, _)| total < b) {
                best = Some((total, step));
                since_best = 0;
                if cfg.keep_best {
                    best_weights = Some(snapshot(&run.trainees));
                }
            } else {
                since_best += 1;
                if cfg.patience > 0 && since_best >= cfg.patience {
                    stopped = "early_stopping".into();
                    break;
                }
            }
        }

        if cfg.checkpoint_every > 0 && step.is_multiple_of(cfg.checkpoint_every) && step < total_steps {
            last_checkpoint =
                save_checkpoint(&run, &members, step, &history, best, since_best, &source_counts, &labels)?;
        }
    }
    pb.finish_and_clear();
    let steps_done = step;
    let final_ck = save_checkpoint(&run, &members, steps_done, &history, best, since_best, &source_counts, &labels)?;
    if cfg.keep_best
        && let Some(w) = &best_weights
    {
        restore(&mut run.trainees, w)?;
    }
    let trainees = (0..k_tr)
        .map(|k| TraineeSummary {
            label: labels[k].clone(),
            train_clean_acc: history.last("train", &labels[k], "clean_acc"),
            train_adv_acc: history.last("train", &labels[k], "adv_acc"),
            val_clean_acc: history.last("val", &labels[k], "clean_acc"),
            val_adv_acc: history.last("val", &labels[k], "adv_acc"),
            source_counts: source_counts[k].clone(),
        })
        .collect();
    Ok(TrainResult {
        history,
        steps: steps_done,
        best_step: best.map(|b| b.1),
        best_val_loss: best.map(|b| b.0),
        stopped,
        dir: run.dir.clone(),
        checkpoint: final_ck,
        wall_s: t0.elapsed().as_secs_f64(),
        trainees,
        labels,
    })
}

/// Network labels for logs and tables; repeated architectures get `#i` (1-based position) appended.
pub fn unique_labels(raw: Vec<String>) -> Vec<String> {
    raw.iter()
        .enumerate()
        .map(|(i, l)| if raw.iter().filter(|m| *m == l).count() > 1 { format!("{l}#{}", i + 1) } else { l.clone() })
        .collect()
}

/// Whether the attack draws its random step from N(0, I) (then the trainer draws it, see `craft_on`).
fn attack_uses_noise(spec: &AttackSpec) -> bool {
    matches!(spec.kind, AttackKind::RFgsm | AttackKind::RStepLl) && spec.restarts == 1
}

/// Whether crafting with `spec` draws no random numbers beyond the noise the trainer passes in, so that sources can
/// be crafted side by side without changing any result.
fn attack_is_deterministic(spec: &AttackSpec) -> bool {
    attack_uses_noise(spec) || matches!(spec.kind, AttackKind::Fgsm | AttackKind::StepLl | AttackKind::Fgv)
}

/// Adversarial examples of `x` on one source, with bf16 autocast when `bf16`; `noise` is the attack's random draw.
fn craft_on(
    spec: &AttackSpec,
    net: &Net,
    x: &Tensor,
    y: &Tensor,
    noise: Option<&Tensor>,
    bf16: bool,
) -> Result<Tensor> {
    let _ac = Autocast::new(net.device(), bf16)?;
    match noise {
        Some(n) => attacks::craft_with_noise(spec, &[net as &dyn Classifier], x, y, n),
        None => attacks::craft(spec, &[net as &dyn Classifier], x, y),
    }
}

/// How the per-network work of a step is spread over CPU threads.
struct SideBySide {
    /// Craft the trainees' adversarial examples side by side.
    craft: bool,
    /// Update the trainees side by side.
    train: bool,
    /// Intra-op threads of each worker (one worker per trainee).
    threads: Vec<usize>,
}

impl SideBySide {
    /// K trainees on the CPU with at least K intra-op threads run one worker per network, each with its share of the
    /// threads, instead of one network after another on all threads: the networks of a step are independent
    /// (crafting reads only its source, each update touches only its trainee), small convolutions scale poorly
    /// across threads, and the workers never wait on each other inside an op. Results are those of the sequential
    /// loop (up to the rounding of a different thread count per op): random draws stay on the main thread, so
    /// networks that draw random numbers in their forward pass (dropout) and attacks with their own random starts
    /// keep the sequential loop.
    fn plan(trainees: &[&mut Net], frozen: &[&Net], spec: &AttackSpec) -> SideBySide {
        let k = trainees.len();
        let threads = crate::core::device::threads();
        let on_cpu = trainees.iter().all(|n| n.device() == Device::Cpu);
        let random_forward = trainees.iter().any(|n| n.has_dropout()) || frozen.iter().any(|n| n.has_dropout());
        let ok = k >= 2 && threads >= k && on_cpu && !random_forward;
        SideBySide {
            craft: ok && attack_is_deterministic(spec),
            train: ok,
            threads: (0..k).map(|i| threads / k + usize::from(i < threads % k)).collect(),
        }
    }
}

/// One worker's job: borrows one network (and its optimizer), returns its result.
type Job<'a, T> = Box<dyn FnOnce() -> Result<T> + Send + 'a>;

/// Runs each job on its own scoped thread with `threads[i]` intra-op threads; the results come back in job order.
/// The caller's thread count is restored afterwards.
fn run_side_by_side<T: Send>(jobs: Vec<Job<'_, T>>, threads: &[usize]) -> Vec<Result<T>> {
    let caller = crate::core::device::threads();
    let out = std::thread::scope(|sc| {
        let handles: Vec<_> = jobs
            .into_iter()
            .enumerate()
            .map(|(i, job)| {
                let n = threads.get(i).copied().unwrap_or(1).max(1);
                sc.spawn(move || {
                    tch::set_num_threads(n as i32);
                    job()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a training worker thread panicked"))))
            .collect()
    });
    tch::set_num_threads(caller as i32);
    out
}

/// What one trainee's update logged, and its total loss (not finite: no update was made).
struct StepOut {
    metrics: Vec<(&'static str, f64)>,
    total: f64,
}

/// Step 3 for one trainee: CE(clean) + r_adv·CE(adv from its sources) + r_da·DA(clean vs adv features through the
/// GRL) [+ white_box·CE(own adv)], then one optimizer step (skipped when the loss is not finite). With `split`, see
/// `update_trainee_split`.
#[allow(clippy::too_many_arguments)]
fn update_trainee(
    net: &mut Net,
    m: &mut Member,
    x: &Tensor,
    y: &Tensor,
    adv_parts: &[Tensor],
    own_adv: Option<&Tensor>,
    cfg: &TrainConfig,
    lambda: f64,
    lr: f64,
    bf16: bool,
    split: bool,
) -> Result<StepOut> {
    if split {
        return update_trainee_split(net, m, x, y, adv_parts, own_adv, cfg, lambda, lr, bf16);
    }
    let dev = net.device();
    let b = x.size()[0];
    let mut metrics: Vec<(&'static str, f64)> = vec![];
    let loss = {
        let _ac = Autocast::new(dev, bf16)?;
        // (Net converts its input to channels_last itself when its weights are.)
        let xa: Option<Tensor> = if adv_parts.is_empty() { None } else { Some(Tensor::f_cat(adv_parts, 0)?) };
        // Without batch statistics one forward pass over [clean; adv] is the same math, and faster.
        let (fc, fa) = match (&xa, m.batch_stats) {
            (Some(xa), false) => {
                let f = net.features_t(&Tensor::f_cat(&[x, xa], 0)?, true)?;
                (f.narrow(0, 0, b), Some(f.narrow(0, b, f.size()[0] - b)))
            }
            (Some(xa), true) => (net.features_t(x, true)?, Some(net.features_t(xa, true)?)),
            (None, _) => (net.features_t(x, true)?, None),
        };
        let lc = net.head(&fc)?;
        let clean_loss = ce(&lc, y)?;
        metrics.push(("clean_loss", clean_loss.f_double_value(&[])?));
        metrics.push(("clean_acc", accuracy(&lc, y)?));
        let mut loss = clean_loss;
        if let Some(fa) = &fa {
            let reps = fa.size()[0] / b;
            let ya = y.f_repeat([reps])?;
            let la = net.head(fa)?;
            let adv_loss = ce(&la, &ya)?;
            metrics.push(("adv_loss", adv_loss.f_double_value(&[])?));
            metrics.push(("adv_acc", accuracy(&la, &ya)?));
            if cfg.r_adv != 0.0 {
                loss = loss.f_add(&(adv_loss * cfg.r_adv))?;
            }
            if let Some(da) = &m.da {
                let f = Tensor::f_cat(&[&fc, fa], 0)?;
                let d = da.f_forward(&grl(&f, lambda))?.f_to_kind(Kind::Float)?.f_squeeze_dim(1)?;
                let dom = Tensor::f_cat(
                    &[Tensor::f_zeros([b], (Kind::Float, dev))?, Tensor::f_ones([fa.size()[0]], (Kind::Float, dev))?],
                    0,
                )?;
                let da_loss = d.f_binary_cross_entropy_with_logits::<Tensor>(&dom, None, None, Reduction::Mean)?;
                let dom_acc = d
                    .f_gt(0.0)?
                    .f_to_kind(Kind::Float)?
                    .f_eq_tensor(&dom)?
                    .f_to_kind(Kind::Float)?
                    .f_mean(Kind::Float)?;
                metrics.push(("da_loss", da_loss.f_double_value(&[])?));
                metrics.push(("domain_acc", dom_acc.f_double_value(&[])?));
                loss = loss.f_add(&(da_loss * cfg.r_da))?;
            }
        }
        if let Some(own) = own_adv {
            let lw = net.head(&net.features_t(own, true)?)?;
            let wb = ce(&lw, y)?;
            metrics.push(("white_box_loss", wb.f_double_value(&[])?));
            loss = loss.f_add(&(wb * cfg.white_box))?;
        }
        loss
    };
    let total = loss.f_double_value(&[])?;
    if total.is_finite() {
        m.opt.zero_grad();
        loss.f_backward()?;
        m.opt.step(lr)?;
    }
    Ok(StepOut { metrics, total })
}

/// `update_trainee` with one forward and one backward pass per part of the loss (clean, adversarial, white-box),
/// gradients accumulating: the loss is a sum of terms that each depend on one part only (the DA loss is a mean over
/// clean and adversarial examples, i.e. (Σ_clean + Σ_adv) / n), so this is the same gradient while only one part's
/// activations are alive at a time. Used when the trainees are updated side by side, so that their activations
/// together take no more memory than one trainee's joint pass.
#[allow(clippy::too_many_arguments)]
fn update_trainee_split(
    net: &mut Net,
    m: &mut Member,
    x: &Tensor,
    y: &Tensor,
    adv_parts: &[Tensor],
    own_adv: Option<&Tensor>,
    cfg: &TrainConfig,
    lambda: f64,
    lr: f64,
    bf16: bool,
) -> Result<StepOut> {
    let dev = net.device();
    let b = x.size()[0];
    let xa: Option<Tensor> = if adv_parts.is_empty() { None } else { Some(Tensor::f_cat(adv_parts, 0)?) };
    let n_adv = xa.as_ref().map_or(0, |t| t.size()[0]);
    // The DA loss's mean runs over clean and adversarial examples together.
    let n_dom = (b + n_adv) as f64;
    let ya = y.f_repeat([n_adv / b])?;
    let mut metrics: Vec<(&'static str, f64)> = vec![];
    let (mut total, mut da_sum, mut dom_hits) = (0.0, 0.0, 0.0);
    m.opt.zero_grad();
    let parts = [(Some(x.shallow_clone()), false)].into_iter().chain([(xa, true)]);
    for (input, adv) in parts {
        let Some(input) = input else { continue };
        let labels = if adv { &ya } else { y };
        let loss = {
            let _ac = Autocast::new(dev, bf16)?;
            let f = net.features_t(&input, true)?;
            let logits = net.head(&f)?;
            let l = ce(&logits, labels)?;
            let (lname, aname) = if adv { ("adv_loss", "adv_acc") } else { ("clean_loss", "clean_acc") };
            metrics.push((lname, l.f_double_value(&[])?));
            metrics.push((aname, accuracy(&logits, labels)?));
            let mut loss = match (adv, cfg.r_adv != 0.0) {
                (false, _) => Some(l),
                (true, true) => Some(l * cfg.r_adv),
                (true, false) => None,
            };
            if let (Some(da), true) = (&m.da, n_adv > 0) {
                let d = da.f_forward(&grl(&f, lambda))?.f_to_kind(Kind::Float)?.f_squeeze_dim(1)?;
                let dom = if adv { d.f_ones_like()? } else { d.f_zeros_like()? };
                let s = d.f_binary_cross_entropy_with_logits::<Tensor>(&dom, None, None, Reduction::Sum)?;
                da_sum += s.f_double_value(&[])?;
                dom_hits +=
                    d.f_gt(0.0)?.f_to_kind(Kind::Float)?.f_eq_tensor(&dom)?.f_sum(Kind::Float)?.f_double_value(&[])?;
                let term = s * (cfg.r_da / n_dom);
                loss = Some(match loss {
                    Some(l) => l.f_add(&term)?,
                    None => term,
                });
            }
            loss
        };
        if let Some(loss) = loss {
            total += loss.f_double_value(&[])?;
            loss.f_backward()?;
        }
    }
    if n_adv > 0 && m.da.is_some() {
        metrics.push(("da_loss", da_sum / n_dom));
        metrics.push(("domain_acc", dom_hits / n_dom));
    }
    if let Some(own) = own_adv {
        let loss = {
            let _ac = Autocast::new(dev, bf16)?;
            let wb = ce(&net.head(&net.features_t(own, true)?)?, y)?;
            metrics.push(("white_box_loss", wb.f_double_value(&[])?));
            wb * cfg.white_box
        };
        total += loss.f_double_value(&[])?;
        loss.f_backward()?;
    }
    if total.is_finite() {
        m.opt.step(lr)?;
    }
    Ok(StepOut { metrics, total })
}

/// Receives one validation point: (step, epoch, split, net, metric, value).
type Emit<'a> = dyn FnMut(usize, usize, &str, &str, &str, f64) + 'a;

/// Validation: each trainee's clean accuracy/loss and its accuracy/loss on adversarial examples crafted on its
/// sources (black-box for SATM), and the early-stopping criterion Σ_k (CE clean + r_adv·CE adv). Returns that sum.
#[allow(clippy::too_many_arguments)]
fn validate(
    run: &Run,
    val: &Dataset,
    cfg: &TrainConfig,
    spec: &AttackSpec,
    use_bf16: &[bool],
    labels: &[String],
    step: usize,
    epoch: usize,
    emit: &mut Emit<'_>,
) -> Result<f64> {
    let k_tr = run.trainees.len();
    let n_total = k_tr + run.frozen.len();
    let net_at = |i: usize| -> &Net { if i < k_tr { &*run.trainees[i] } else { run.frozen[i - k_tr] } };
    // Every potential source of each trainee (all of them for round-robin/random/all; the graph's rows otherwise).
    let srcs: Vec<Vec<usize>> = (0..k_tr)
        .map(|k| {
            if !cfg.needs_adversarial() {
                return vec![];
            }
            match &cfg.sources {
                SourcePolicy::Graph(g) => g[k].clone(),
                _ => (0..n_total).filter(|&s| s != k).collect(),
            }
        })
        .collect();
    let mut needed: Vec<usize> = srcs.iter().flatten().copied().collect();
    needed.sort_unstable();
    needed.dedup();
    let opts = BatchOpts {
        batch_size: cfg.batch_size,
        shuffle: false,
        seed: 0,
        augment: false,
        drop_last: false,
        device: Device::Cpu,
    };
    let mut sums = vec![[0f64; 4]; k_tr]; // clean correct, clean loss·n, adv correct, adv loss·n
    let (mut n, mut n_adv) = (0f64, vec![0f64; k_tr]);
    for (bi, b) in val.batches(&opts)?.enumerate() {
        if cfg.val_batches > 0 && bi >= cfg.val_batches {
            break;
        }
        cancel::check()?;
        let b = b?;
        let bs = b.y.size()[0] as f64;
        tch::manual_seed(mix(cfg.seed ^ mix(0xE7A1 + bi as u64)) as i64 & i64::MAX);
        let mut adv: BTreeMap<usize, Tensor> = BTreeMap::new();
        for &s in &needed {
            let net = net_at(s);
            let (x, y) = (b.x.to_device(net.device()), b.y.to_device(net.device()));
            let _ac = Autocast::new(net.device(), use_bf16[s])?;
            adv.insert(s, attacks::craft(spec, &[net as &dyn Classifier], &x, &y)?);
        }
        for k in 0..k_tr {
            let net = net_at(k);
            let dev = net.device();
            let (x, y) = (b.x.to_device(dev), b.y.to_device(dev));
            let _ac = Autocast::new(dev, use_bf16[k])?;
            tch::no_grad(|| -> Result<()> {
                let lc = net.forward_t(&x, false)?;
                sums[k][0] += accuracy(&lc, &y)? * bs;
                sums[k][1] += ce(&lc, &y)?.f_double_value(&[])? * bs;
                for s in &srcs[k] {
                    let la = net.forward_t(&adv[s].to_device(dev), false)?;
                    sums[k][2] += accuracy(&la, &y)? * bs;
                    sums[k][3] += ce(&la, &y)?.f_double_value(&[])? * bs;
                    n_adv[k] += bs;
                }
                Ok(())
            })?;
        }
        n += bs;
    }
    if n == 0.0 {
        bail!("the validation set is empty");
    }
    let mut total = 0.0;
    for k in 0..k_tr {
        let clean_loss = sums[k][1] / n;
        emit(step, epoch, "val", &labels[k], "clean_acc", sums[k][0] / n);
        emit(step, epoch, "val", &labels[k], "clean_loss", clean_loss);
        let mut t = clean_loss;
        if n_adv[k] > 0.0 {
            let adv_loss = sums[k][3] / n_adv[k];
            emit(step, epoch, "val", &labels[k], "adv_acc", sums[k][2] / n_adv[k]);
            emit(step, epoch, "val", &labels[k], "adv_loss", adv_loss);
            t += cfg.r_adv * adv_loss;
        }
        total += t;
    }
    emit(step, epoch, "val", "all", "total_loss", total);
    Ok(total)
}

#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    run: &Run,
    members: &[Member],
    step: usize,
    history: &History,
    best: Option<(f64, usize)>,
    since_best: usize,
    source_counts: &[Vec<usize>],
    labels: &[String],
) -> Result<Option<PathBuf>> {
    let Some(dir) = &run.dir else { return Ok(None) };
    let state = CheckpointState {
        step,
        history: history.clone(),
        best,
        since_best,
        source_counts: source_counts.to_vec(),
        labels: labels.to_vec(),
        satm: crate::VERSION.to_string(),
    };
    let parts: Vec<(Option<&nn::VarStore>, &Optimizer)> = members.iter().map(|m| (m.da_vs.as_ref(), &m.opt)).collect();
    checkpoint::save(dir, &run.trainees, &parts, &state).map(Some)
}
