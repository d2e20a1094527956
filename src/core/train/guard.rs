//! The catastrophic-overfitting guard (Wong et al. 2020): every `every` steps, PGD on the step's training batch;
//! PGD accuracy falling by more than `drop` since the last check is a collapse, answered by `GuardAction`.
use super::config::{GuardAction, GuardConfig, TrainConfig};
use super::sink::Sink;
use super::step::{OnDevices, accuracy};
use super::trainees::{Trainee, Weights, restore, snapshot};
use crate::core::attacks::{self, AttackKind, AttackSpec};
use crate::core::models::Classifier;
use anyhow::Result;

pub struct Guard {
    on: bool,
    every: usize,
    cfg: GuardConfig,
    /// PGD accuracy of each trainee at the last check (None: no check yet, or just rolled back).
    prev: Vec<Option<f64>>,
    /// The weights at the last check without a collapse.
    good: Option<Weights>,
}

impl Guard {
    /// `steps_per_epoch`: the default interval.
    pub fn new(cfg: &TrainConfig, k_tr: usize, steps_per_epoch: usize) -> Guard {
        Guard {
            on: cfg.guard_enabled(),
            every: if cfg.guard.every > 0 { cfg.guard.every } else { steps_per_epoch },
            cfg: cfg.guard,
            prev: vec![None; k_tr],
            good: None,
        }
    }

    /// Checks after `step` (when one is due) with PGD of budget `eps`; true when the run should stop.
    pub fn check(
        &mut self,
        trainees: &mut [Trainee],
        batch: &mut OnDevices,
        eps: f64,
        step: usize,
        epoch: usize,
        sink: &mut Sink,
    ) -> Result<bool> {
        if !(self.on && step.is_multiple_of(self.every)) {
            return Ok(false);
        }
        let mut pgd = AttackSpec::new(AttackKind::Pgd);
        pgd.eps = eps;
        pgd.steps = self.cfg.pgd_steps;
        pgd.step_size = eps / 4.0;
        let mut collapsed = false;
        for (k, t) in trainees.iter().enumerate() {
            let net = &*t.net;
            let (x, y) = batch.get(net.device());
            let xa = attacks::craft(&pgd, &[net as &dyn Classifier], &x, &y)?;
            let acc = tch::no_grad(|| accuracy(&net.forward_t(&xa, false)?, &y))?;
            let label = sink.label(k);
            sink.emit(step, epoch, "train", &label, "guard_pgd_acc", acc);
            if let Some(prev) = self.prev[k]
                && prev - acc > self.cfg.drop
            {
                collapsed = true;
                sink.emit(step, epoch, "train", &label, "guard_collapse", 1.0);
                sink.println(format!(
                    "satm: catastrophic overfitting? {label}: PGD accuracy fell {prev:.3} -> {acc:.3} at step {step}"
                ));
            }
            self.prev[k] = Some(acc);
        }
        if !collapsed {
            self.good = Some(snapshot(trainees));
            return Ok(false);
        }
        match self.cfg.action {
            GuardAction::Warn => {}
            GuardAction::Stop => return Ok(true),
            GuardAction::Rollback => {
                if let Some(w) = &self.good {
                    restore(trainees, w)?;
                    self.prev = vec![None; trainees.len()];
                }
            }
        }
        Ok(false)
    }
}
