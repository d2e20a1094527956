//! Gradient reversal (Ganin et al., DANN) without a custom autograd function.
use tch::Tensor;

/// Identity in the forward pass, −λ × the incoming gradient in the backward pass.
/// `x.detach() + (x − x.detach()) · (−λ)`: the forward value is exactly x (the second term is exactly 0) and the
/// only path that carries gradient is scaled by −λ.
pub fn grl(x: &Tensor, lambda: f64) -> Tensor {
    let d = x.detach();
    &d + (x - &d) * (-lambda)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// The feature extractor receives the negated, λ-scaled gradient of what follows the GRL (checked against autograd
    /// without the GRL).
    #[test]
    fn grl_negates_and_scales_gradient() {
        let w = Tensor::from_slice(&[0.5f32, -1.5, 2.0]).set_requires_grad(true);
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let f = &w * &x; // "features"
        let y = grl(&f, 0.3);
        assert_eq!(Vec::<f32>::try_from(&y.detach()).unwrap(), Vec::<f32>::try_from(&f.detach()).unwrap());
        let head = Tensor::from_slice(&[1.0f32, 4.0, -2.0]);
        (&y * &y * &head).sum(Kind::Float).backward();
        let g_rev = Vec::<f32>::try_from(&w.grad()).unwrap();
        let w2 = w.detach().set_requires_grad(true);
        let f2 = &w2 * &x;
        (&f2 * &f2 * &head).sum(Kind::Float).backward();
        let g = Vec::<f32>::try_from(&w2.grad()).unwrap();
        for (a, b) in g_rev.iter().zip(&g) {
            assert!((a + 0.3 * b).abs() < 1e-5, "reversed {a} vs plain {b}");
        }
    }
}
