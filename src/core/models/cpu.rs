//! The CPU-scale networks of ../shared/bench/ref_satm.py (`vgg_s`, `vggbn_s`, `resnet_s`): same layers, same shapes,
//! same parameter names (`features.<i>....`, `head.*`), PyTorch default initialisation. `width` scales every channel
//! count (1.0 = the reference exactly).
use super::layers::{Bn, Conv, ConvOpts, Ctx, InitStyle, Linear, Module, Op, Stage};
use anyhow::Result;
use tch::{Tensor, nn};

/// A network body: the stages that produce features, the classifier head and its name.
pub struct Body {
    pub stages: Vec<Stage>,
    pub head: Linear,
    pub head_name: String,
    pub feature_dim: i64,
}

/// Channel count `c` scaled by `width`, at least 1.
pub fn scaled(c: i64, width: f64) -> i64 {
    ((c as f64 * width).round() as i64).max(1)
}

/// VGG-style for 32×32 inputs: [64,64,M,128,128,M,256,256,M] → global average pool → Linear(256, 512) → ReLU.
pub fn vgg_s(ctx: &Ctx, root: &nn::Path, classes: i64, width: f64, bn: bool) -> Result<Body> {
    let f = root / "features";
    let cfg = [64, 64, 0, 128, 128, 0, 256, 256, 0];
    let mut stages = vec![];
    let mut c = 3;
    let push = |stages: &mut Vec<Stage>, m: Box<dyn Module>| {
        let name = format!("features.{}", stages.len());
        stages.push(Stage { name, m });
    };
    for v in cfg {
        if v == 0 {
            push(&mut stages, Box::new(Op::MaxPool { k: 2, s: 2, p: 0, ceil: false }));
            continue;
        }
        let v = scaled(v, width);
        let i = stages.len();
        push(&mut stages, Box::new(Conv::new(ctx, &f / i, c, v, ConvOpts::sq(3, 1, 1, true), InitStyle::Torch)?));
        if bn {
            let i = stages.len();
            push(&mut stages, Box::new(Bn::new(ctx, &f / i, v, 1e-5)?));
        }
        push(&mut stages, Box::new(Op::Relu));
        c = v;
    }
    push(&mut stages, Box::new(Op::AdaptiveAvg([1, 1])));
    push(&mut stages, Box::new(Op::Flatten));
    let hidden = scaled(512, width);
    let i = stages.len();
    push(&mut stages, Box::new(Linear::new(ctx, &f / i, c, hidden, InitStyle::Torch)?));
    push(&mut stages, Box::new(Op::Relu));
    let head = Linear::new(ctx, root / "head", hidden, classes, InitStyle::Torch)?;
    Ok(Body { stages, head, head_name: "head".into(), feature_dim: hidden })
}

/// ref_satm.py's `Block`: 3×3 conv (c1, b1), ReLU, 3×3 conv (c2, b2), shortcut `sc` (1×1 conv + BN) when the shape changes.
pub struct SBlock {
    c1: Conv,
    b1: Bn,
    c2: Conv,
    b2: Bn,
    sc: Option<(Conv, Bn)>,
}

impl SBlock {
    fn new(ctx: &Ctx, p: nn::Path, cin: i64, cout: i64, stride: i64) -> Result<SBlock> {
        let st = InitStyle::Torch;
        let sc = if stride == 1 && cin == cout {
            None
        } else {
            Some((
                Conv::new(ctx, &p / "sc" / 0, cin, cout, ConvOpts::sq(1, stride, 0, false), st)?,
                Bn::new(ctx, &p / "sc" / 1, cout, 1e-5)?,
            ))
        };
        Ok(SBlock {
            c1: Conv::new(ctx, &p / "c1", cin, cout, ConvOpts::sq(3, stride, 1, false), st)?,
            b1: Bn::new(ctx, &p / "b1", cout, 1e-5)?,
            c2: Conv::new(ctx, &p / "c2", cout, cout, ConvOpts::sq(3, 1, 1, false), st)?,
            b2: Bn::new(ctx, &p / "b2", cout, 1e-5)?,
            sc,
        })
    }
}

impl Module for SBlock {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // The ReLUs run in place on fresh outputs that nothing saves for backward (BatchNorm keeps its input, the
        // sum keeps nothing): one activation buffer less per ReLU, as PyTorch's ReLU(inplace=True).
        let o = self.b1.forward(&self.c1.forward(x)?, train)?.f_relu_()?;
        let o = self.b2.forward(&self.c2.forward(&o)?, train)?;
        let s = match &self.sc {
            None => x.shallow_clone(),
            Some((c, b)) => b.forward(&c.forward(x)?, train)?,
        };
        Ok(o.f_add(&s)?.f_relu_()?)
    }
    fn kind(&self) -> &'static str {
        "Block"
    }
}

/// ResNet-18-style for 32×32: 3×3 stem 64, stages 64, 128, 256, 512 of two blocks each, global average pool.
pub fn resnet_s(ctx: &Ctx, root: &nn::Path, classes: i64, width: f64) -> Result<Body> {
    let f = root / "features";
    let stem = scaled(64, width);
    let mut stages = vec![
        Stage::new("features.0", Conv::new(ctx, &f / 0, 3, stem, ConvOpts::sq(3, 1, 1, false), InitStyle::Torch)?),
        Stage::new("features.1", Bn::new(ctx, &f / 1, stem, 1e-5)?),
        Stage::new("features.2", Op::Relu),
    ];
    let mut c = stem;
    for (i, w) in [64, 128, 256, 512].into_iter().enumerate() {
        let w = scaled(w, width);
        let stride = if i == 0 { 1 } else { 2 };
        for (cin, s) in [(c, stride), (w, 1)] {
            let n = stages.len();
            stages.push(Stage::new(format!("features.{n}"), SBlock::new(ctx, &f / n, cin, w, s)?));
        }
        c = w;
    }
    let n = stages.len();
    stages.push(Stage::new(format!("features.{n}"), Op::AdaptiveAvg([1, 1])));
    stages.push(Stage::new(format!("features.{}", n + 1), Op::Flatten));
    let head = Linear::new(ctx, root / "head", c, classes, InitStyle::Torch)?;
    Ok(Body { stages, head, head_name: "head".into(), feature_dim: c })
}
