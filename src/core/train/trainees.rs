//! The trainees, built before the loop starts: each network to train with its domain-classifier head (when r_da > 0)
//! and its optimizer over both; copies of their weights (guard rollback, best weights); checkpoints of them.
use super::TrainConfig;
use super::checkpoint::{self, CheckpointState};
use super::optim::Optimizer;
use crate::core::models::{DaHead, Net};
use anyhow::Result;
use std::path::{Path, PathBuf};
use tch::{Tensor, nn};

/// One network being trained, with what trains along with it.
pub struct Trainee<'a> {
    pub net: &'a mut Net,
    /// The DA head's variables (None when the run started with r_da = 0).
    pub da_vs: Option<nn::VarStore>,
    pub da: Option<DaHead>,
    /// Over the network's trainable variables, then the DA head's.
    pub opt: Optimizer,
    /// The network keeps batch statistics: its clean and adversarial batches need separate forward passes.
    pub batch_stats: bool,
    /// Forward passes run under bf16 autocast.
    pub bf16: bool,
}

impl<'a> Trainee<'a> {
    /// A DA head (when `cfg.r_da > 0`, initialised from this thread's random stream: the run's) and the optimizer for
    /// `net`.
    pub fn new(net: &'a mut Net, cfg: &TrainConfig) -> Result<Trainee<'a>> {
        let mut params = net.trainable_variables();
        let (da_vs, da) = if cfg.r_da > 0.0 {
            let vs = nn::VarStore::new(net.device());
            let head = DaHead::try_new(vs.root() / "da", net.feature_dim(), cfg.da_hidden)?;
            params.extend(vs.trainable_variables());
            (Some(vs), Some(head))
        } else {
            (None, None)
        };
        let batch_stats = has_batch_stats(net);
        let bf16 = cfg.precision.resolve(net.device()).0;
        Ok(Trainee { net, da_vs, da, opt: Optimizer::new(params, cfg.optim()), batch_stats, bf16 })
    }
}

/// Whether a network keeps batch statistics (then clean and adversarial batches need separate forward passes, as
/// concatenating them would change the statistics).
pub fn has_batch_stats(net: &Net) -> bool {
    net.named_variables().iter().any(|(n, _)| n.ends_with("running_mean"))
}

/// Every trainee (channels_last first when asked, so that the optimizer holds the converted variables).
pub fn build<'a>(nets: Vec<&'a mut Net>, cfg: &TrainConfig) -> Result<Vec<Trainee<'a>>> {
    nets.into_iter()
        .map(|net| {
            if cfg.channels_last {
                net.set_channels_last(true);
            }
            Trainee::new(net, cfg)
        })
        .collect()
}

/// Copies of every trainee's variables.
pub struct Weights(Vec<Vec<Tensor>>);

pub fn snapshot(trainees: &[Trainee]) -> Weights {
    Weights(
        trainees
            .iter()
            .map(|t| t.net.named_variables().into_iter().map(|(_, v)| v.detach().copy()).collect())
            .collect(),
    )
}

pub fn restore(trainees: &mut [Trainee], w: &Weights) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        for (t, ws) in trainees.iter_mut().zip(&w.0) {
            for ((_, mut v), src) in t.net.named_variables().into_iter().zip(ws) {
                v.f_copy_(src)?;
            }
        }
        Ok(())
    })
}

/// Writes a checkpoint of every trainee (network, DA head, optimizer) and `state` under `dir`.
pub fn save(dir: &Path, trainees: &mut [Trainee], state: &CheckpointState) -> Result<PathBuf> {
    let mut nets: Vec<&mut Net> = vec![];
    let mut parts: Vec<(Option<&nn::VarStore>, &Optimizer)> = vec![];
    for t in trainees.iter_mut() {
        nets.push(&mut *t.net);
        parts.push((t.da_vs.as_ref(), &t.opt));
    }
    checkpoint::save(dir, &nets, &parts, state)
}

/// Loads a checkpoint (a run or checkpoint directory) into every trainee and returns the loop state.
pub fn load(from: &Path, trainees: &mut [Trainee]) -> Result<CheckpointState> {
    let mut nets: Vec<&mut Net> = vec![];
    let mut parts: Vec<(Option<&mut nn::VarStore>, &mut Optimizer)> = vec![];
    for t in trainees.iter_mut() {
        nets.push(&mut *t.net);
        parts.push((t.da_vs.as_mut(), &mut t.opt));
    }
    checkpoint::load(from, &mut nets, &mut parts)
}
