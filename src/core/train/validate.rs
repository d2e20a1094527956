//! Validation (clean and black-box accuracy and loss of every trainee) and early stopping on the validation loss.
use super::config::{SourcePolicy, TrainConfig};
use super::sink::Sink;
use super::step::{LossWeights, accuracy, ce, mix};
use super::trainees::{Trainee, Weights, snapshot};
use crate::core::amp::Autocast;
use crate::core::attacks::{self, AttackSpec};
use crate::core::cancel;
use crate::core::data::{BatchOpts, Dataset};
use crate::core::models::{Classifier, Net};
use anyhow::{Result, bail};
use std::collections::BTreeMap;
use tch::{Device, Tensor};

/// Each trainee's clean accuracy/loss and its accuracy/loss on adversarial examples crafted on its sources
/// (black-box for SATM; none when the loss `w` has no adversarial term), written to `sink`, and the early-stopping
/// criterion Σ_k (CE clean + r_adv·CE adv), returned.
#[allow(clippy::too_many_arguments)]
pub fn validate(
    trainees: &[Trainee],
    frozen: &[&Net],
    frozen_bf16: &[bool],
    val: &Dataset,
    cfg: &TrainConfig,
    spec: &AttackSpec,
    w: &LossWeights,
    step: usize,
    epoch: usize,
    sink: &mut Sink,
) -> Result<f64> {
    let k_tr = trainees.len();
    let n_total = k_tr + frozen.len();
    let net_at = |i: usize| -> (&Net, bool) {
        if i < k_tr { (&*trainees[i].net, trainees[i].bf16) } else { (frozen[i - k_tr], frozen_bf16[i - k_tr]) }
    };
    // Every potential source of each trainee (all of them for round-robin/random/all; the graph's rows otherwise).
    let srcs: Vec<Vec<usize>> = (0..k_tr)
        .map(|k| {
            if w.r_adv == 0.0 && w.r_da == 0.0 && w.white_box == 0.0 {
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
        crate::core::random::seed(mix(cfg.seed ^ mix(0xE7A1 + bi as u64)) & i64::MAX as u64)?;
        let mut adv: BTreeMap<usize, Tensor> = BTreeMap::new();
        for &s in &needed {
            let (net, bf16) = net_at(s);
            let (x, y) = (b.x.to_device(net.device()), b.y.to_device(net.device()));
            let _ac = Autocast::new(net.device(), bf16)?;
            adv.insert(s, attacks::craft(spec, &[net as &dyn Classifier], &x, &y)?);
        }
        for (k, sum) in sums.iter_mut().enumerate() {
            let (net, bf16) = net_at(k);
            let dev = net.device();
            let (x, y) = (b.x.to_device(dev), b.y.to_device(dev));
            let _ac = Autocast::new(dev, bf16)?;
            tch::no_grad(|| -> Result<()> {
                let lc = net.forward_t(&x, false)?;
                sum[0] += accuracy(&lc, &y)? * bs;
                sum[1] += ce(&lc, &y)?.f_double_value(&[])? * bs;
                for s in &srcs[k] {
                    let la = net.forward_t(&adv[s].to_device(dev), false)?;
                    sum[2] += accuracy(&la, &y)? * bs;
                    sum[3] += ce(&la, &y)?.f_double_value(&[])? * bs;
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
        let label = sink.label(k);
        let clean_loss = sums[k][1] / n;
        sink.emit(step, epoch, "val", &label, "clean_acc", sums[k][0] / n);
        sink.emit(step, epoch, "val", &label, "clean_loss", clean_loss);
        let mut t = clean_loss;
        if n_adv[k] > 0.0 {
            let adv_loss = sums[k][3] / n_adv[k];
            sink.emit(step, epoch, "val", &label, "adv_acc", sums[k][2] / n_adv[k]);
            sink.emit(step, epoch, "val", &label, "adv_loss", adv_loss);
            t += w.r_adv * adv_loss;
        }
        total += t;
    }
    sink.emit(step, epoch, "val", "all", "total_loss", total);
    Ok(total)
}

/// Early stopping on the validation loss, and the weights of its best evaluation.
pub struct EarlyStopping {
    /// (loss, step) of the best evaluation so far.
    pub best: Option<(f64, usize)>,
    /// Evaluations since the best.
    pub since_best: usize,
    patience: usize,
    keep_best: bool,
    /// The trainees' weights at the best evaluation of this process (with `keep_best`).
    pub best_weights: Option<Weights>,
}

impl EarlyStopping {
    pub fn new(cfg: &TrainConfig) -> EarlyStopping {
        EarlyStopping {
            best: None,
            since_best: 0,
            patience: cfg.patience,
            keep_best: cfg.keep_best,
            best_weights: None,
        }
    }

    /// Records one evaluation's loss at `step`; true when the run should stop (`patience` evaluations without
    /// improvement).
    pub fn update(&mut self, total: f64, step: usize, trainees: &[Trainee]) -> bool {
        if self.best.is_none_or(|(b, _)| total < b) {
            self.best = Some((total, step));
            self.since_best = 0;
            if self.keep_best {
                self.best_weights = Some(snapshot(trainees));
            }
            false
        } else {
            self.since_best += 1;
            self.patience > 0 && self.since_best >= self.patience
        }
    }
}
