//! The domain-adaptation head (DANN, paper Sec. 4.2): two fully connected layers on a network's features → one
//! logit (clean vs adversarial). It lives in the trainer's VarStore; names match ref_satm.py's `da.0.*`, `da.2.*`
//! when the caller passes `vs.root() / "da"`.
use super::layers::{Ctx, InitStyle, Linear};
use anyhow::Result;
use tch::{Tensor, nn};

/// Linear(in_dim, hidden) → ReLU → Linear(hidden, 1), PyTorch default initialisation.
pub struct DaHead {
    l0: Linear,
    l2: Linear,
    in_dim: i64,
}

impl DaHead {
    /// Registers `<p>.0.{weight,bias}` and `<p>.2.{weight,bias}` under `p`. Panics only if libtorch cannot allocate
    /// the tensors; use `try_new` where that must be an error.
    pub fn new(p: nn::Path, in_dim: i64, hidden: i64) -> DaHead {
        match DaHead::try_new(p, in_dim, hidden) {
            Ok(h) => h,
            Err(e) => panic!("DaHead::new: {e:#}"),
        }
    }

    /// Fallible `new`; rejects non-positive sizes.
    pub fn try_new(p: nn::Path, in_dim: i64, hidden: i64) -> Result<DaHead> {
        if in_dim < 1 || hidden < 1 {
            anyhow::bail!("DA head sizes must be positive, got in_dim {in_dim}, hidden {hidden}");
        }
        let ctx = Ctx::new(false);
        Ok(DaHead {
            l0: Linear::new(&ctx, &p / 0, in_dim, hidden, InitStyle::Torch)?,
            l2: Linear::new(&ctx, &p / 2, hidden, 1, InitStyle::Torch)?,
            in_dim,
        })
    }

    /// Features `[B, F]` → domain logits `[B, 1]`. Panics on a shape mismatch; `f_forward` returns the error instead.
    pub fn forward(&self, f: &Tensor) -> Tensor {
        match self.f_forward(f) {
            Ok(t) => t,
            Err(e) => panic!("DaHead::forward: {e:#}"),
        }
    }

    /// Fallible `forward`.
    pub fn f_forward(&self, f: &Tensor) -> Result<Tensor> {
        if f.dim() != 2 || f.size()[1] != self.in_dim {
            anyhow::bail!("DA head expects features [B, {}], got {:?}", self.in_dim, f.size());
        }
        self.l2.forward(&self.l0.forward(f)?.f_relu()?)
    }

    pub fn in_dim(&self) -> i64 {
        self.in_dim
    }
}
