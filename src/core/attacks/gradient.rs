//! Gradient-sign attacks: FGSM, Step-LL, R+FGSM, R+Step-LL, FGV (single step) and BIM / PGD / Iter-LL / MI-FGSM.
use super::{
    AttackKind, AttackSpec, Ctx, Target, attack_labels, cross_entropy, per_example, project, randn, reached,
    select_rows, uniform_pm1,
};
use crate::core::cancel;
use anyhow::Result;
use tch::{Kind, Tensor};

/// What the gradient step is about: the labels, and whether the attack moves towards them (targeted / least-likely:
/// descend J) or away from them (untargeted: ascend J).
pub(super) struct Goal {
    pub labels: Tensor,
    pub towards: bool,
}

impl Goal {
    pub fn new(ctx: &Ctx, spec: &AttackSpec, x: &Tensor, y: &Tensor) -> Result<Goal> {
        Ok(if spec.target == Target::LeastLikely {
            // y_LL of the clean input, fixed for the whole attack (Kurakin et al.; Tramèr et al.).
            Goal { labels: ctx.logits_nograd(x)?.f_argmin(1, false)?, towards: true }
        } else if spec.targeted {
            Goal { labels: y.f_to_kind(Kind::Int64)?, towards: true }
        } else {
            Goal { labels: attack_labels(ctx, spec, x, y)?, towards: false }
        })
    }

    /// The per-example loss the attack ascends: J(x, y), or −J(x, target).
    pub fn loss(&self, logits: &Tensor) -> Result<Tensor> {
        let ce = cross_entropy(logits, &self.labels)?;
        Ok(if self.towards { ce.f_neg()? } else { ce })
    }

    pub fn reached(&self, logits: &Tensor) -> Result<Tensor> {
        reached(logits, &self.labels, self.towards)
    }
}

pub(super) fn gradient_attack(
    ctx: &Ctx,
    spec: &AttackSpec,
    x: &Tensor,
    y: &Tensor,
    noise: Option<&Tensor>,
) -> Result<Tensor> {
    let goal = Goal::new(ctx, spec, x, y)?;
    let loss = |l: &Tensor| goal.loss(l);
    match spec.kind {
        AttackKind::Fgsm | AttackKind::StepLl => {
            let g = ctx.grad(x, &loss)?.grad;
            Ok(x.f_add(&g.f_sign()?.f_mul_scalar(spec.eps)?)?.f_clamp(0.0, 1.0)?)
        }
        AttackKind::Fgv => {
            let g = ctx.grad(x, &loss)?.grad;
            // Scale each example's raw gradient so that its largest entry is ε (a zero gradient stays zero).
            let m = g.f_abs()?.f_amax([1, 2, 3], true)?.f_clamp_min(1e-30)?;
            Ok(x.f_add(&g.f_div(&m)?.f_mul_scalar(spec.eps)?)?.f_clamp(0.0, 1.0)?)
        }
        AttackKind::RFgsm | AttackKind::RStepLl => {
            let n = match noise {
                Some(n) => n.shallow_clone(),
                None => randn(&x.size(), x.device())?,
            };
            // sign(N(0, I)) is a Rademacher draw; a sample of exactly 0 counts as + so that every pixel moves by α.
            let s = n.f_sign()?;
            let s = s.f_add(&s.f_eq(0.0)?.f_to_kind(Kind::Float)?)?;
            let x1 = x.f_add(&s.f_mul_scalar(spec.alpha)?)?.f_clamp(0.0, 1.0)?;
            let g = ctx.grad(&x1, &loss)?.grad;
            Ok(x1.f_add(&g.f_sign()?.f_mul_scalar(spec.eps - spec.alpha)?)?.f_clamp(0.0, 1.0)?)
        }
        _ => iterative(ctx, spec, x, &goal, noise),
    }
}

/// BIM / PGD / Iter-LL / MI-FGSM with restarts: per example, keep the first run that reaches the goal, else the
/// highest loss.
fn iterative(ctx: &Ctx, spec: &AttackSpec, x: &Tensor, goal: &Goal, noise: Option<&Tensor>) -> Result<Tensor> {
    if spec.restarts == 1 {
        return iterate(ctx, spec, x, goal, noise);
    }
    let mut best: Option<(Tensor, Tensor, Tensor)> = None;
    for _ in 0..spec.restarts {
        let xa = iterate(ctx, spec, x, goal, None)?;
        let logits = ctx.logits_nograd(&xa)?;
        let ok = goal.reached(&logits)?;
        let loss = goal.loss(&logits)?;
        best = Some(match best {
            None => (xa, ok, loss),
            Some((bx, bok, bloss)) => {
                let newly = ok.f_logical_and(&bok.f_logical_not()?)?;
                let higher = ok.f_eq_tensor(&bok)?.f_logical_and(&loss.f_gt_tensor(&bloss)?)?;
                let better = newly.f_logical_or(&higher)?;
                (select_rows(&better, &xa, &bx)?, ok.f_where_self(&better, &bok)?, loss.f_where_self(&better, &bloss)?)
            }
        });
    }
    match best {
        Some((bx, _, _)) => Ok(bx),
        None => anyhow::bail!("{}: no restart ran", spec.kind),
    }
}

/// One run of a signed-gradient iterative attack, projected onto the ε-ball and [0, 1] after every step.
fn iterate(ctx: &Ctx, spec: &AttackSpec, x: &Tensor, goal: &Goal, noise: Option<&Tensor>) -> Result<Tensor> {
    let loss = |l: &Tensor| goal.loss(l);
    let mut xa = if spec.random_start {
        let u = match noise {
            Some(n) => n.f_clamp(-1.0, 1.0)?,
            None => uniform_pm1(&x.size(), x.device())?,
        };
        project(&x.f_add(&u.f_mul_scalar(spec.eps)?)?, x, spec.eps)?
    } else {
        x.shallow_clone()
    };
    let mut momentum = x.f_zeros_like()?;
    for _ in 0..spec.steps {
        cancel::check()?;
        let out = ctx.grad(&xa, &loss)?;
        let mut dir = if spec.kind == AttackKind::MiFgsm {
            // g ← μ·g + ∇ / ‖∇‖₁ per example (Dong et al. 2018, Alg. 1).
            let l1 =
                out.grad.f_abs()?.f_sum_dim_intlist([1i64, 2, 3].as_slice(), true, Kind::Float)?.f_clamp_min(1e-12)?;
            momentum = momentum.f_mul_scalar(spec.momentum)?.f_add(&out.grad.f_div(&l1)?)?;
            momentum.f_sign()?
        } else {
            out.grad.f_sign()?
        };
        if spec.early_stop {
            // The logits of this step's forward tell which examples already reached the goal: they stay put.
            let active = goal.reached(&out.logits)?.f_logical_not()?;
            if !bool::try_from(active.f_any()?)? {
                break;
            }
            dir = dir.f_mul(&per_example(&active.f_to_kind(Kind::Float)?)?)?;
        }
        xa = project(&xa.f_add(&dir.f_mul_scalar(spec.step_size)?)?, x, spec.eps)?;
    }
    Ok(xa)
}
