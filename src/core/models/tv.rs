//! torchvision-compatible VGG16 (with and without BN) and ResNet18/50/101: the parameter names are torchvision's
//! `state_dict()` keys, so converted checkpoints load with no renaming. Any class count; adaptive pooling lets any
//! input size through (at least 32×32).
use super::cpu::Body;
use super::layers::{Bn, Conv, ConvOpts, Ctx, InitStyle, Linear, Module, Op, Stage};
use anyhow::Result;
use tch::{Tensor, nn};

/// torchvision's VGG16 ("D" configuration). `features_t` ends after classifier.5 (4096-d), `head` is classifier.6.
pub fn vgg16(ctx: &Ctx, root: &nn::Path, classes: i64, bn: bool) -> Result<Body> {
    let cfg = [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0];
    let f = root / "features";
    let mut stages: Vec<Stage> = vec![];
    let mut c = 3;
    let mut n = 0usize;
    let push = |stages: &mut Vec<Stage>, n: &mut usize, m: Box<dyn Module>| {
        stages.push(Stage { name: format!("features.{n}"), m });
        *n += 1;
    };
    for v in cfg {
        if v == 0 {
            push(&mut stages, &mut n, Box::new(Op::MaxPool { k: 2, s: 2, p: 0, ceil: false }));
            continue;
        }
        let conv = Conv::new(ctx, &f / n, c, v, ConvOpts::sq(3, 1, 1, true), InitStyle::KaimingFanOut)?;
        push(&mut stages, &mut n, Box::new(conv));
        if bn {
            let b = Bn::new(ctx, &f / n, v, 1e-5)?;
            push(&mut stages, &mut n, Box::new(b));
        }
        push(&mut stages, &mut n, Box::new(Op::Relu));
        c = v;
    }
    stages.push(Stage::new("avgpool", Op::AdaptiveAvg([7, 7])));
    stages.push(Stage::new("flatten", Op::Flatten));
    let cl = root / "classifier";
    let lin = InitStyle::Normal(0.01);
    stages.push(Stage::new("classifier.0", Linear::new(ctx, &cl / 0, 512 * 7 * 7, 4096, lin)?));
    stages.push(Stage::new("classifier.1", Op::Relu));
    stages.push(Stage::new("classifier.2", Op::Dropout(0.5)));
    stages.push(Stage::new("classifier.3", Linear::new(ctx, &cl / 3, 4096, 4096, lin)?));
    stages.push(Stage::new("classifier.4", Op::Relu));
    stages.push(Stage::new("classifier.5", Op::Dropout(0.5)));
    let head = Linear::new(ctx, &cl / 6, 4096, classes, lin)?;
    Ok(Body { stages, head, head_name: "classifier.6".into(), feature_dim: 4096 })
}

/// torchvision's `downsample`: 1×1 conv with stride + BN.
fn downsample(ctx: &Ctx, p: &nn::Path, cin: i64, cout: i64, stride: i64) -> Result<(Conv, Bn)> {
    Ok((
        Conv::new(ctx, p / "downsample" / 0, cin, cout, ConvOpts::sq(1, stride, 0, false), InitStyle::KaimingFanOut)?,
        Bn::new(ctx, p / "downsample" / 1, cout, 1e-5)?,
    ))
}

fn conv(ctx: &Ctx, p: nn::Path, cin: i64, cout: i64, k: i64, s: i64) -> Result<Conv> {
    Conv::new(ctx, p, cin, cout, ConvOpts::sq(k, s, k / 2, false), InitStyle::KaimingFanOut)
}

/// torchvision's BasicBlock (ResNet18/34).
pub struct BasicBlock {
    convs: Vec<(Conv, Bn)>,
    down: Option<(Conv, Bn)>,
}

/// torchvision's Bottleneck, ResNet v1.5 (stride on the 3×3 conv).
pub struct Bottleneck {
    convs: Vec<(Conv, Bn)>,
    down: Option<(Conv, Bn)>,
}

fn residual(convs: &[(Conv, Bn)], down: &Option<(Conv, Bn)>, x: &Tensor, train: bool) -> Result<Tensor> {
    let mut o = x.shallow_clone();
    for (i, (c, b)) in convs.iter().enumerate() {
        o = b.forward(&c.forward(&o)?, train)?;
        if i + 1 < convs.len() {
            o = o.f_relu()?;
        }
    }
    let id = match down {
        None => x.shallow_clone(),
        Some((c, b)) => b.forward(&c.forward(x)?, train)?,
    };
    Ok(o.f_add(&id)?.f_relu()?)
}

impl Module for BasicBlock {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        residual(&self.convs, &self.down, x, train)
    }
    fn kind(&self) -> &'static str {
        "BasicBlock"
    }
}

impl Module for Bottleneck {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        residual(&self.convs, &self.down, x, train)
    }
    fn kind(&self) -> &'static str {
        "Bottleneck"
    }
}

/// A `layerN` of a ResNet: a sequence of blocks.
pub struct ResLayer(Vec<Box<dyn Module>>);

impl Module for ResLayer {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut o = x.shallow_clone();
        for b in &self.0 {
            o = b.forward(&o, train)?;
        }
        Ok(o)
    }
    fn kind(&self) -> &'static str {
        "Sequential"
    }
}

/// torchvision ResNet: `blocks` per layer (18: [2,2,2,2], 50: [3,4,6,3], 101: [3,4,23,3]); `bottleneck` selects the
/// block type (expansion 4).
pub fn resnet(ctx: &Ctx, root: &nn::Path, classes: i64, blocks: [usize; 4], bottleneck: bool) -> Result<Body> {
    let mut stages = vec![
        Stage::new("conv1", conv(ctx, root / "conv1", 3, 64, 7, 2)?),
        Stage::new("bn1", Bn::new(ctx, root / "bn1", 64, 1e-5)?),
        Stage::new("relu", Op::Relu),
        Stage::new("maxpool", Op::MaxPool { k: 3, s: 2, p: 1, ceil: false }),
    ];
    let expansion = if bottleneck { 4 } else { 1 };
    let mut cin = 64;
    for (li, (&nb, planes)) in blocks.iter().zip([64i64, 128, 256, 512]).enumerate() {
        let name = format!("layer{}", li + 1);
        let lp = root / name.as_str();
        let mut bl: Vec<Box<dyn Module>> = vec![];
        for bi in 0..nb {
            let p = &lp / bi;
            let stride = if bi == 0 && li > 0 { 2 } else { 1 };
            let cout = planes * expansion;
            let down = if stride != 1 || cin != cout { Some(downsample(ctx, &p, cin, cout, stride)?) } else { None };
            let bn = |n: &str, c| Bn::new(ctx, &p / n, c, 1e-5);
            if bottleneck {
                let convs = vec![
                    (conv(ctx, &p / "conv1", cin, planes, 1, 1)?, bn("bn1", planes)?),
                    (conv(ctx, &p / "conv2", planes, planes, 3, stride)?, bn("bn2", planes)?),
                    (conv(ctx, &p / "conv3", planes, cout, 1, 1)?, bn("bn3", cout)?),
                ];
                bl.push(Box::new(Bottleneck { convs, down }));
            } else {
                let convs = vec![
                    (conv(ctx, &p / "conv1", cin, planes, 3, stride)?, bn("bn1", planes)?),
                    (conv(ctx, &p / "conv2", planes, planes, 3, 1)?, bn("bn2", planes)?),
                ];
                bl.push(Box::new(BasicBlock { convs, down }));
            }
            cin = cout;
        }
        stages.push(Stage::new(name, ResLayer(bl)));
    }
    stages.push(Stage::new("avgpool", Op::AdaptiveAvg([1, 1])));
    stages.push(Stage::new("flatten", Op::Flatten));
    let head = Linear::new(ctx, root / "fc", cin, classes, InitStyle::Torch)?;
    Ok(Body { stages, head, head_name: "fc".into(), feature_dim: cin })
}
