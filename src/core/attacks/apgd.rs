//! APGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
//! attacks", ICML 2020), L∞: momentum 0.75, step size 2ε halved at checkpoints p₀ = 0, p₁ = 0.22,
//! p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06) when the loss oscillates or stalls, restarting from the best point.
//! APGD-CE maximises the cross-entropy; APGD-DLR-T maximises the targeted DLR loss against each of the top other
//! classes in turn (AutoAttack's APGD-T). Restarts and targets only run on examples not fooled yet.
use super::{AttackKind, AttackSpec, Ctx, attack_labels, cross_entropy, project, reached, select_rows, uniform_pm1};
use crate::core::cancel;
use anyhow::{Result, ensure};
use tch::{Kind, Tensor};

/// The loss APGD maximises.
enum Loss {
    /// CE against the labels (ascended), or −CE against target classes when `towards`.
    Ce { towards: bool },
    /// Targeted DLR: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12).
    DlrTargeted { targets: Tensor },
}

impl Loss {
    fn eval(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        match self {
            Loss::Ce { towards } => {
                let ce = cross_entropy(logits, labels)?;
                Ok(if *towards { ce.f_neg()? } else { ce })
            }
            Loss::DlrTargeted { targets } => dlr_targeted(logits, labels, targets),
        }
    }
}

/// Targeted DLR loss per example (Croce & Hein 2020, Eq. 7); needs at least 4 classes.
fn dlr_targeted(logits: &Tensor, labels: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (sorted, _) = logits.f_sort(1, true)?;
    let zy = logits.f_gather(1, &labels.f_unsqueeze(1)?, false)?.f_squeeze_dim(1)?;
    let zt = logits.f_gather(1, &targets.f_unsqueeze(1)?, false)?.f_squeeze_dim(1)?;
    let p1 = sorted.f_select(1, 0)?;
    let p3 = sorted.f_select(1, 2)?;
    let p4 = sorted.f_select(1, 3)?;
    let denom = p1.f_sub(&p3.f_add(&p4)?.f_mul_scalar(0.5)?)?.f_add_scalar(1e-12)?;
    Ok(zy.f_sub(&zt)?.f_neg()?.f_div(&denom)?)
}

pub(super) fn apgd(ctx: &Ctx, spec: &AttackSpec, x: &Tensor, y: &Tensor, noise: Option<&Tensor>) -> Result<Tensor> {
    let k = spec.kind;
    let towards = k == AttackKind::ApgdCe && spec.targeted;
    let labels = if towards { y.f_to_kind(Kind::Int64)? } else { attack_labels(ctx, spec, x, y)? };
    let clean = ctx.logits_nograd(x)?;
    let n_targets = if k == AttackKind::ApgdDlr {
        ensure!(ctx.num_classes >= 4, "{k}: the DLR loss needs at least 4 classes, the model has {}", ctx.num_classes);
        spec.n_target_classes.min(ctx.num_classes as usize - 1)
    } else {
        1
    };
    // Classes by clean logit, highest first: column 0 is the (correct) prediction, then the candidate targets.
    let (_, order) = clean.f_sort(1, true)?;
    // Examples misclassified already (or at their target) are left as they are, as in AutoAttack.
    let mut fooled = reached(&clean, &labels, towards)?;
    let mut out = x.f_detach()?;
    let mut best_loss = Tensor::f_full([x.size()[0]], f64::NEG_INFINITY, (Kind::Float, x.device()))?;
    for t in 0..n_targets {
        for _ in 0..spec.restarts {
            let idx = fooled.f_logical_not()?.f_nonzero()?.f_squeeze_dim(1)?;
            if idx.size()[0] == 0 {
                return Ok(out);
            }
            let xs = x.f_index_select(0, &idx)?;
            let ls = labels.f_index_select(0, &idx)?;
            let loss = if k == AttackKind::ApgdDlr {
                Loss::DlrTargeted { targets: order.f_select(1, t as i64 + 1)?.f_index_select(0, &idx)? }
            } else {
                Loss::Ce { towards }
            };
            let ns = noise.map(|n| n.f_index_select(0, &idx)).transpose()?;
            let run = single_run(ctx, spec, &xs, &ls, towards, &loss, ns.as_ref())?;
            // Fooled: the adversarial point; not fooled: the highest-loss point seen over all runs.
            let cur = out.f_index_select(0, &idx)?;
            let cur_loss = best_loss.f_index_select(0, &idx)?;
            let improved = run.loss_best.f_gt_tensor(&cur_loss)?;
            let merged = select_rows(&run.success, &run.x_best_adv, &select_rows(&improved, &run.x_best, &cur)?)?;
            out = out.f_index_copy(0, &idx, &merged)?;
            best_loss = best_loss.f_index_copy(0, &idx, &run.loss_best.f_where_self(&improved, &cur_loss)?)?;
            fooled = fooled.f_index_copy(0, &idx, &run.success)?;
        }
    }
    Ok(out)
}

struct Run {
    /// Per example, the last iterate that reached the goal (or the start point).
    x_best_adv: Tensor,
    success: Tensor,
    /// The iterate with the highest loss and that loss.
    x_best: Tensor,
    loss_best: Tensor,
}

/// `attack_single_run` of Croce & Hein's reference implementation (L∞).
fn single_run(
    ctx: &Ctx,
    spec: &AttackSpec,
    x: &Tensor,
    labels: &Tensor,
    towards: bool,
    loss: &Loss,
    noise: Option<&Tensor>,
) -> Result<Run> {
    let n_iter = spec.steps;
    let n_iter_2 = ((0.22 * n_iter as f64) as usize).max(1);
    let n_iter_min = ((0.06 * n_iter as f64) as usize).max(1);
    let size_decr = ((0.03 * n_iter as f64) as usize).max(1);
    const RHO: f64 = 0.75;
    let eps = spec.eps;
    let b = x.size()[0];
    let loss_fn = |l: &Tensor| loss.eval(l, labels);

    let mut x_adv = if spec.random_start {
        let t = match noise {
            Some(n) => n.shallow_clone(),
            None => uniform_pm1(&x.size(), x.device())?,
        };
        // Uniform direction scaled so its largest entry is ε (AutoAttack's `normalize` for L∞).
        let m = t.f_abs()?.f_amax([1, 2, 3], true)?.f_clamp_min(1e-12)?;
        x.f_add(&t.f_div(&m)?.f_mul_scalar(eps)?)?.f_clamp(0.0, 1.0)?
    } else {
        x.shallow_clone()
    };
    let first = ctx.grad(&x_adv, &loss_fn)?;
    let mut grad = first.grad;
    let mut grad_best = grad.shallow_clone();
    let mut success = reached(&first.logits, labels, towards)?;
    let mut x_best_adv = x_adv.shallow_clone();
    let mut x_best = x_adv.shallow_clone();
    let mut loss_best = first.loss.shallow_clone();
    let mut loss_prev = first.loss;

    let mut step = Tensor::f_full([b, 1, 1, 1], 2.0 * eps, (Kind::Float, x.device()))?;
    let mut x_adv_old = x_adv.shallow_clone();
    let mut k = n_iter_2;
    let mut counter3 = 0usize;
    let mut increases = Tensor::f_zeros([b], (Kind::Float, x.device()))?;
    let mut loss_best_last_check = loss_best.shallow_clone();
    // AutoAttack starts with "reduced at the last check" set, so condition 2 cannot fire at the first checkpoint.
    let mut reduced_last_check = Tensor::f_ones([b], (Kind::Bool, x.device()))?;

    for i in 0..n_iter {
        cancel::check()?;
        let grad2 = x_adv.f_sub(&x_adv_old)?;
        x_adv_old = x_adv.shallow_clone();
        let a = if i > 0 { spec.momentum } else { 1.0 };
        let z = project(&x_adv.f_add(&step.f_mul(&grad.f_sign()?)?)?, x, eps)?;
        // x^(k+1) = P(x^(k) + a·(z^(k+1) − x^(k)) + (1 − a)·(x^(k) − x^(k−1)))
        let moved = x_adv.f_add(&z.f_sub(&x_adv)?.f_mul_scalar(a)?)?.f_add(&grad2.f_mul_scalar(1.0 - a)?)?;
        x_adv = project(&moved, x, eps)?;

        let out = ctx.grad(&x_adv, &loss_fn)?;
        grad = out.grad;
        let now = reached(&out.logits, labels, towards)?;
        x_best_adv = select_rows(&now, &x_adv, &x_best_adv)?;
        success = success.f_logical_or(&now)?;

        let improved = out.loss.f_gt_tensor(&loss_best)?;
        x_best = select_rows(&improved, &x_adv, &x_best)?;
        grad_best = select_rows(&improved, &grad, &grad_best)?;
        loss_best = out.loss.f_where_self(&improved, &loss_best)?;
        increases = increases.f_add(&out.loss.f_gt_tensor(&loss_prev)?.f_to_kind(Kind::Float)?)?;
        loss_prev = out.loss;

        counter3 += 1;
        if counter3 == k {
            // Condition 1: the loss increased in at most ρ·k of the last k steps.
            let oscillating = increases.f_le(k as f64 * RHO)?;
            // Condition 2: the step size was not reduced last time and the best loss has not improved since.
            let stalled =
                reduced_last_check.f_logical_not()?.f_logical_and(&loss_best_last_check.f_ge_tensor(&loss_best)?)?;
            let reduce = oscillating.f_logical_or(&stalled)?;
            reduced_last_check = reduce.shallow_clone();
            loss_best_last_check = loss_best.shallow_clone();
            step = select_rows(&reduce, &step.f_mul_scalar(0.5)?, &step)?;
            x_adv = select_rows(&reduce, &x_best, &x_adv)?;
            grad = select_rows(&reduce, &grad_best, &grad)?;
            k = k.saturating_sub(size_decr).max(n_iter_min);
            counter3 = 0;
            increases = increases.f_zero_()?;
        }
    }
    Ok(Run { x_best_adv, success, x_best, loss_best })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlr_targeted_matches_hand_computation() {
        // logits 4, 3, 1, 0, −1; label 0, target 1: −(4 − 3) / (4 − (1 + 0)/2) = −1/3.5.
        let logits = Tensor::from_slice(&[4.0f32, 3.0, 1.0, 0.0, -1.0]).view([1, 5]);
        let v = dlr_targeted(&logits, &Tensor::from_slice(&[0i64]), &Tensor::from_slice(&[1i64])).unwrap();
        assert!((v.double_value(&[0]) + 1.0 / 3.5).abs() < 1e-6);
    }
}
