//! Building blocks with PyTorch semantics and fallible forwards (tch's own modules panic on bad shapes).
//! Every layer registers its tensors under the same names PyTorch's `state_dict()` uses.
use anyhow::{Context, Result};
use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tch::{Tensor, nn};

/// How weights are initialised. Construction must follow the source library so that training from scratch behaves
/// like the reference (ref_satm.py uses PyTorch's defaults, torchvision its own schemes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InitStyle {
    /// `nn.Conv2d` / `nn.Linear` defaults: weight and bias uniform in ±1/sqrt(fan_in).
    Torch,
    /// torchvision VGG/ResNet convs: kaiming normal (fan_out, ReLU gain), bias 0.
    KaimingFanOut,
    /// torchvision VGG linears: normal(0, std), bias 0.
    Normal(f64),
    /// All zeros: used when the values are about to be overwritten (clones), so no RNG state is consumed.
    Zeros,
}

/// Shared construction state: the init to use and the registry of BatchNorm counters (for `num_batches_tracked`).
pub struct Ctx {
    pub zero_init: bool,
    pub bns: RefCell<Vec<(String, Arc<AtomicI64>)>>,
}

impl Ctx {
    pub fn new(zero_init: bool) -> Ctx {
        Ctx { zero_init, bns: RefCell::new(vec![]) }
    }
    fn style(&self, s: InitStyle) -> InitStyle {
        if self.zero_init { InitStyle::Zeros } else { s }
    }
}

/// The dotted name of a path, as PyTorch writes it.
pub fn path_name(p: &nn::Path) -> String {
    p.components().collect::<Vec<_>>().join(".")
}

/// How a variable starts: drawn from this thread's random stream (`core::random`, on the CPU, so a seed gives the
/// same weights on every device) or constant.
enum Init {
    /// `torch.empty(dims).uniform_(-b, b)`.
    Uniform(f64),
    /// `torch.randn(dims) * std`, as `nn.init.normal_(w, 0, std)` and `kaiming_normal_` draw it.
    Normal(f64),
    Zeros,
}

fn new_var(p: &nn::Path, name: &str, dims: &[i64], init: Init) -> Result<Tensor> {
    let ctx = || format!("creating {}.{name}", path_name(p));
    let drawn = match init {
        Init::Uniform(b) => crate::core::random::uniform(dims, -b, b).with_context(ctx)?,
        Init::Normal(std) => crate::core::random::randn(dims).with_context(ctx)?.f_mul_scalar(std)?,
        Init::Zeros => return p.f_var(name, dims, nn::Init::Const(0.0)).with_context(ctx),
    };
    p.f_var_copy(name, &drawn).with_context(ctx)
}

fn init_weight(p: &nn::Path, name: &str, dims: &[i64], style: InitStyle) -> Result<Tensor> {
    let fan_in: i64 = dims.iter().skip(1).product::<i64>().max(1);
    let fan_out: i64 = dims[0] * dims.iter().skip(2).product::<i64>();
    let init = match style {
        InitStyle::Torch => Init::Uniform(1.0 / (fan_in as f64).sqrt()),
        InitStyle::KaimingFanOut => Init::Normal((2.0 / fan_out as f64).sqrt()),
        InitStyle::Normal(std) => Init::Normal(std),
        InitStyle::Zeros => Init::Zeros,
    };
    new_var(p, name, dims, init)
}

fn init_bias(p: &nn::Path, dims: &[i64], fan_in: i64, style: InitStyle) -> Result<Tensor> {
    let init = match style {
        InitStyle::Torch => Init::Uniform(1.0 / (fan_in.max(1) as f64).sqrt()),
        _ => Init::Zeros,
    };
    new_var(p, "bias", dims, init)
}

/// `nn.Conv2d` (groups 1, dilation 1).
pub struct Conv {
    pub w: Tensor,
    pub b: Option<Tensor>,
    stride: [i64; 2],
    pad: [i64; 2],
}

/// Shape options of a convolution: kernel, stride, padding (each per axis) and whether it has a bias.
#[derive(Debug, Clone, Copy)]
pub struct ConvOpts {
    pub k: [i64; 2],
    pub stride: [i64; 2],
    pub pad: [i64; 2],
    pub bias: bool,
}

impl ConvOpts {
    /// Square kernel `k`, stride `s`, padding `p`.
    pub fn sq(k: i64, s: i64, p: i64, bias: bool) -> ConvOpts {
        ConvOpts { k: [k, k], stride: [s, s], pad: [p, p], bias }
    }
}

impl Conv {
    pub fn new(ctx: &Ctx, p: nn::Path, cin: i64, cout: i64, o: ConvOpts, style: InitStyle) -> Result<Conv> {
        let style = ctx.style(style);
        let w = init_weight(&p, "weight", &[cout, cin, o.k[0], o.k[1]], style)?;
        let b = if o.bias { Some(init_bias(&p, &[cout], cin * o.k[0] * o.k[1], style)?) } else { None };
        Ok(Conv { w, b, stride: o.stride, pad: o.pad })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_conv2d(&self.w, self.b.as_ref(), self.stride, self.pad, [1, 1], 1)?)
    }
}

/// `nn.BatchNorm2d` with PyTorch's momentum 0.1; `eps` is 1e-5 except Inception's 1e-3.
pub struct Bn {
    w: Tensor,
    b: Tensor,
    mean: Tensor,
    var: Tensor,
    eps: f64,
    /// PyTorch's `num_batches_tracked` (tch's VarStore holds float tensors only, so it lives here).
    tracked: Arc<AtomicI64>,
}

impl Bn {
    pub fn new(ctx: &Ctx, p: nn::Path, c: i64, eps: f64) -> Result<Bn> {
        let ctxerr = || format!("creating batch norm {}", path_name(&p));
        let w = p.f_var("weight", &[c], nn::Init::Const(1.0)).with_context(ctxerr)?;
        let b = p.f_var("bias", &[c], nn::Init::Const(0.0)).with_context(ctxerr)?;
        let mean = p.f_zeros_no_train("running_mean", &[c]).with_context(ctxerr)?;
        let var = p.f_ones_no_train("running_var", &[c]).with_context(ctxerr)?;
        let tracked = Arc::new(AtomicI64::new(0));
        ctx.bns.borrow_mut().push((path_name(&p), tracked.clone()));
        Ok(Bn { w, b, mean, var, eps, tracked })
    }
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            self.tracked.fetch_add(1, Ordering::Relaxed);
        }
        Ok(x.f_batch_norm(Some(&self.w), Some(&self.b), Some(&self.mean), Some(&self.var), train, 0.1, self.eps, true)?)
    }
}

/// `nn.Linear`.
pub struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    pub fn new(ctx: &Ctx, p: nn::Path, din: i64, dout: i64, style: InitStyle) -> Result<Linear> {
        let style = ctx.style(style);
        let w = init_weight(&p, "weight", &[dout, din], style)?;
        let b = init_bias(&p, &[dout], din, style)?;
        Ok(Linear { w, b })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_linear(&self.w, Some(&self.b))?)
    }
}

/// A layer of a network's top-level sequence; the composite blocks live in the architecture files.
pub trait Module: Send {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor>;
    /// PyTorch's class name, for summaries.
    fn kind(&self) -> &'static str;
}

impl Module for Conv {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Conv::forward(self, x)
    }
    fn kind(&self) -> &'static str {
        "Conv2d"
    }
}

impl Module for Bn {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Bn::forward(self, x, train)
    }
    fn kind(&self) -> &'static str {
        "BatchNorm2d"
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Linear::forward(self, x)
    }
    fn kind(&self) -> &'static str {
        "Linear"
    }
}

/// Parameter-free layers.
pub enum Op {
    Relu,
    MaxPool { k: i64, s: i64, p: i64, ceil: bool },
    AvgPool { k: i64, s: i64, p: i64 },
    AdaptiveAvg([i64; 2]),
    Flatten,
    Dropout(f64),
}

impl Module for Op {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(match self {
            Op::Relu => x.f_relu()?,
            Op::MaxPool { k, s, p, ceil } => x.f_max_pool2d([*k, *k], [*s, *s], [*p, *p], [1, 1], *ceil)?,
            Op::AvgPool { k, s, p } => x.f_avg_pool2d([*k, *k], [*s, *s], [*p, *p], false, true, None::<i64>)?,
            Op::AdaptiveAvg(o) => x.f_adaptive_avg_pool2d(o)?,
            Op::Flatten => x.f_flatten(1, -1)?,
            Op::Dropout(p) => crate::core::random::dropout(x, *p, train)?,
        })
    }
    fn kind(&self) -> &'static str {
        match self {
            Op::Relu => "ReLU",
            Op::MaxPool { .. } => "MaxPool2d",
            Op::AvgPool { .. } => "AvgPool2d",
            Op::AdaptiveAvg(_) => "AdaptiveAvgPool2d",
            Op::Flatten => "Flatten",
            Op::Dropout(_) => "Dropout",
        }
    }
}

/// A named entry of a network's top-level sequence (`features.3`, `layer2`, `Mixed_5b`, ...).
pub struct Stage {
    pub name: String,
    pub m: Box<dyn Module>,
}

impl Stage {
    pub fn new(name: impl Into<String>, m: impl Module + 'static) -> Stage {
        Stage { name: name.into(), m: Box::new(m) }
    }
}
