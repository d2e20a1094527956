//! Square attack, L∞ (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): a score-based random search that only
//! reads the logits. Starts from vertical stripes of ±ε, then proposes per example a random square window set to
//! x ± ε (one sign per channel) and keeps it when the margin loss drops. The window's area follows the paper's
//! p schedule, rescaled to the query budget as in AutoAttack. Everything runs under `no_grad` on a detached input,
//! so no gradient can be requested.
use super::{AttackSpec, Ctx, attack_labels, project, select_rows};
use crate::core::{cancel, random};
use anyhow::Result;
use tch::{Device, Kind, Tensor};

pub(super) fn square(ctx: &Ctx, spec: &AttackSpec, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let _no_grad = tch::no_grad_guard();
    let x = x.f_detach()?;
    let labels = attack_labels(ctx, spec, &x, y)?;
    let mut best_margin = margin(ctx, &x, &labels)?;
    let mut out = x.shallow_clone();
    for _ in 0..spec.restarts {
        // Examples misclassified already (margin ≤ 0) are done.
        let idx = best_margin.f_gt(0.0)?.f_nonzero()?.f_squeeze_dim(1)?;
        if idx.size()[0] == 0 {
            break;
        }
        let xs = x.f_index_select(0, &idx)?;
        let ls = labels.f_index_select(0, &idx)?;
        let (xb, m) = single_run(ctx, spec, &xs, &ls)?;
        let cur = best_margin.f_index_select(0, &idx)?;
        let better = m.f_lt_tensor(&cur)?;
        out = out.f_index_copy(0, &idx, &select_rows(&better, &xb, &out.f_index_select(0, &idx)?)?)?;
        best_margin = best_margin.f_index_copy(0, &idx, &m.f_where_self(&better, &cur)?)?;
    }
    Ok(out)
}

/// The margin z_y − max_{i≠y} z_i per example (negative once misclassified); Square's loss and success test.
fn margin(ctx: &Ctx, x: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let logits = ctx.logits(x)?;
    let y = labels.f_unsqueeze(1)?;
    let zy = logits.f_gather(1, &y, false)?.f_squeeze_dim(1)?;
    let others = logits.f_scatter_value(1, &y, f64::NEG_INFINITY)?.f_amax([1], false)?;
    Ok(zy.f_sub(&others)?)
}

/// ±1 with equal probability, drawn on the CPU, on `device`.
fn random_signs(shape: &[i64], device: Device) -> Result<Tensor> {
    Ok(random::randint(2, shape, Kind::Float)?.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?.f_to_device(device)?)
}

/// The fraction of pixels a window covers at query `it` of `n_queries` (Andriushchenko et al., schedule for 10 000
/// queries, rescaled).
fn p_selection(p_init: f64, it: usize, n_queries: usize) -> f64 {
    let it = (it as f64 / n_queries as f64 * 10_000.0) as usize;
    let div = match it {
        0..=10 => 1.0,
        11..=50 => 2.0,
        51..=200 => 4.0,
        201..=500 => 8.0,
        501..=1000 => 16.0,
        1001..=2000 => 32.0,
        2001..=4000 => 64.0,
        4001..=6000 => 128.0,
        6001..=8000 => 256.0,
        _ => 512.0,
    };
    p_init / div
}

/// One run on examples `x` (all not yet fooled): returns the best point and its margin per example.
fn single_run(ctx: &Ctx, spec: &AttackSpec, x: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
    let eps = spec.eps;
    let dev = x.device();
    let size = x.size();
    let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
    // Initialisation: vertical stripes, each column of each channel at x ± ε.
    let mut x_best = x.f_add(&random_signs(&[b, c, 1, w], dev)?.f_mul_scalar(eps)?)?.f_clamp(0.0, 1.0)?;
    let mut margin_min = margin(ctx, &x_best, labels)?;
    let rows = Tensor::f_arange(h, (Kind::Int64, dev))?.f_view([1, 1, h, 1])?;
    let cols = Tensor::f_arange(w, (Kind::Int64, dev))?.f_view([1, 1, 1, w])?;
    for i in 0..spec.queries {
        cancel::check()?;
        let idx = margin_min.f_gt(0.0)?.f_nonzero()?.f_squeeze_dim(1)?;
        let n = idx.size()[0];
        if n == 0 {
            break;
        }
        let x_curr = x.f_index_select(0, &idx)?;
        let xb_curr = x_best.f_index_select(0, &idx)?;
        let y_curr = labels.f_index_select(0, &idx)?;
        let m_curr = margin_min.f_index_select(0, &idx)?;

        let p = p_selection(spec.p_init, i, spec.queries);
        let s = ((p * (h * w) as f64).sqrt().round() as i64).clamp(1, h.min(w));
        // A random s×s window per example; inside it every channel moves by 2ε·(±1), then the ε-ball projection
        // puts it at x ± ε.
        let vh = random::randint(h - s + 1, &[n], Kind::Int64)?.f_to_device(dev)?.f_view([n, 1, 1, 1])?;
        let vw = random::randint(w - s + 1, &[n], Kind::Int64)?.f_to_device(dev)?.f_view([n, 1, 1, 1])?;
        let in_rows = rows.f_ge_tensor(&vh)?.f_logical_and(&rows.f_lt_tensor(&vh.f_add_scalar(s)?)?)?;
        let in_cols = cols.f_ge_tensor(&vw)?.f_logical_and(&cols.f_lt_tensor(&vw.f_add_scalar(s)?)?)?;
        let window = in_rows.f_logical_and(&in_cols)?.f_to_kind(Kind::Float)?; // [n, 1, h, w]
        let deltas = window.f_mul(&random_signs(&[n, c, 1, 1], dev)?.f_mul_scalar(2.0 * eps)?)?; // [n, c, h, w]
        let x_new = project(&xb_curr.f_add(&deltas)?, &x_curr, eps)?;

        let m_new = margin(ctx, &x_new, &y_curr)?;
        // The margin is both the loss and the success test here: keep improvements and any misclassification.
        let improved = m_new.f_lt_tensor(&m_curr)?.f_logical_or(&m_new.f_le(0.0)?)?;
        margin_min = margin_min.f_index_copy(0, &idx, &m_new.f_where_self(&improved, &m_curr)?)?;
        x_best = x_best.f_index_copy(0, &idx, &select_rows(&improved, &x_new, &xb_curr)?)?;
    }
    Ok((x_best, margin_min))
}

#[cfg(test)]
mod tests {
    use super::p_selection;

    #[test]
    fn p_schedule_halves_at_the_papers_iterations() {
        assert_eq!(p_selection(0.8, 0, 10_000), 0.8);
        assert_eq!(p_selection(0.8, 11, 10_000), 0.4);
        assert_eq!(p_selection(0.8, 9_000, 10_000), 0.8 / 512.0);
        // Rescaled: query 100 of 1000 is query 1000 of 10 000.
        assert_eq!(p_selection(0.8, 100, 1000), 0.8 / 16.0);
    }
}
