//! torchvision's Inception v3 (`Inception3`, transform_input off: the model's mean/std normalization replaces it),
//! with torchvision's parameter names. The auxiliary classifier (`AuxLogits`) is built only on request, to load
//! checkpoints that carry it; satm's forward never uses it (SATM trains on the main logits).
use super::cpu::Body;
use super::layers::{Bn, Conv, ConvOpts, Ctx, InitStyle, Linear, Module, Op, Stage};
use anyhow::Result;
use tch::{Tensor, nn};

/// `BasicConv2d`: conv (no bias) → BN (eps 1e-3) → ReLU; names `<p>.conv.weight`, `<p>.bn.*`.
pub struct BasicConv {
    conv: Conv,
    bn: Bn,
}

impl BasicConv {
    fn new(ctx: &Ctx, p: nn::Path, cin: i64, cout: i64, k: [i64; 2], s: i64, pad: [i64; 2]) -> Result<BasicConv> {
        let o = ConvOpts { k, stride: [s, s], pad, bias: false };
        Ok(BasicConv {
            conv: Conv::new(ctx, &p / "conv", cin, cout, o, InitStyle::Normal(0.1))?,
            bn: Bn::new(ctx, &p / "bn", cout, 1e-3)?,
        })
    }
}

impl Module for BasicConv {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.bn.forward(&self.conv.forward(x)?, train)?.f_relu()?)
    }
    fn kind(&self) -> &'static str {
        "BasicConv2d"
    }
}

/// One step of an Inception branch.
enum Step {
    C(BasicConv),
    /// avg_pool2d(3, stride 1, padding 1), count_include_pad as PyTorch's default.
    Avg,
    /// max_pool2d(3, stride 2).
    Max,
    /// Two convs on the same input, concatenated on channels (InceptionE's 1×3 / 3×1 pairs).
    Split(BasicConv, BasicConv),
}

/// An Inception block: parallel branches concatenated on channels.
pub struct Mixed {
    kind: &'static str,
    branches: Vec<Vec<Step>>,
}

impl Module for Mixed {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut outs = Vec::with_capacity(self.branches.len());
        for b in &self.branches {
            let mut h = x.shallow_clone();
            for s in b {
                h = match s {
                    Step::C(c) => c.forward(&h, train)?,
                    Step::Avg => h.f_avg_pool2d([3, 3], [1, 1], [1, 1], false, true, None::<i64>)?,
                    Step::Max => h.f_max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)?,
                    Step::Split(a, c) => Tensor::f_cat(&[a.forward(&h, train)?, c.forward(&h, train)?], 1)?,
                };
            }
            outs.push(h);
        }
        Ok(Tensor::f_cat(&outs, 1)?)
    }
    fn kind(&self) -> &'static str {
        self.kind
    }
}

/// Builds BasicConvs under one block's path.
struct B<'a> {
    ctx: &'a Ctx,
    p: nn::Path<'a>,
}

impl B<'_> {
    fn c(&self, name: &str, cin: i64, cout: i64, k: [i64; 2], s: i64, pad: [i64; 2]) -> Result<Step> {
        Ok(Step::C(BasicConv::new(self.ctx, &self.p / name, cin, cout, k, s, pad)?))
    }
    fn c1(&self, name: &str, cin: i64, cout: i64) -> Result<Step> {
        self.c(name, cin, cout, [1, 1], 1, [0, 0])
    }
    fn bc(&self, name: &str, cin: i64, cout: i64, k: [i64; 2], pad: [i64; 2]) -> Result<BasicConv> {
        BasicConv::new(self.ctx, &self.p / name, cin, cout, k, 1, pad)
    }
}

fn inception_a(b: &B, cin: i64, pool: i64) -> Result<Mixed> {
    Ok(Mixed {
        kind: "InceptionA",
        branches: vec![
            vec![b.c1("branch1x1", cin, 64)?],
            vec![b.c1("branch5x5_1", cin, 48)?, b.c("branch5x5_2", 48, 64, [5, 5], 1, [2, 2])?],
            vec![
                b.c1("branch3x3dbl_1", cin, 64)?,
                b.c("branch3x3dbl_2", 64, 96, [3, 3], 1, [1, 1])?,
                b.c("branch3x3dbl_3", 96, 96, [3, 3], 1, [1, 1])?,
            ],
            vec![Step::Avg, b.c1("branch_pool", cin, pool)?],
        ],
    })
}

fn inception_b(b: &B, cin: i64) -> Result<Mixed> {
    Ok(Mixed {
        kind: "InceptionB",
        branches: vec![
            vec![b.c("branch3x3", cin, 384, [3, 3], 2, [0, 0])?],
            vec![
                b.c1("branch3x3dbl_1", cin, 64)?,
                b.c("branch3x3dbl_2", 64, 96, [3, 3], 1, [1, 1])?,
                b.c("branch3x3dbl_3", 96, 96, [3, 3], 2, [0, 0])?,
            ],
            vec![Step::Max],
        ],
    })
}

fn inception_c(b: &B, cin: i64, c7: i64) -> Result<Mixed> {
    let (k17, p17, k71, p71) = ([1, 7], [0, 3], [7, 1], [3, 0]);
    Ok(Mixed {
        kind: "InceptionC",
        branches: vec![
            vec![b.c1("branch1x1", cin, 192)?],
            vec![
                b.c1("branch7x7_1", cin, c7)?,
                b.c("branch7x7_2", c7, c7, k17, 1, p17)?,
                b.c("branch7x7_3", c7, 192, k71, 1, p71)?,
            ],
            vec![
                b.c1("branch7x7dbl_1", cin, c7)?,
                b.c("branch7x7dbl_2", c7, c7, k71, 1, p71)?,
                b.c("branch7x7dbl_3", c7, c7, k17, 1, p17)?,
                b.c("branch7x7dbl_4", c7, c7, k71, 1, p71)?,
                b.c("branch7x7dbl_5", c7, 192, k17, 1, p17)?,
            ],
            vec![Step::Avg, b.c1("branch_pool", cin, 192)?],
        ],
    })
}

fn inception_d(b: &B, cin: i64) -> Result<Mixed> {
    Ok(Mixed {
        kind: "InceptionD",
        branches: vec![
            vec![b.c1("branch3x3_1", cin, 192)?, b.c("branch3x3_2", 192, 320, [3, 3], 2, [0, 0])?],
            vec![
                b.c1("branch7x7x3_1", cin, 192)?,
                b.c("branch7x7x3_2", 192, 192, [1, 7], 1, [0, 3])?,
                b.c("branch7x7x3_3", 192, 192, [7, 1], 1, [3, 0])?,
                b.c("branch7x7x3_4", 192, 192, [3, 3], 2, [0, 0])?,
            ],
            vec![Step::Max],
        ],
    })
}

fn inception_e(b: &B, cin: i64) -> Result<Mixed> {
    Ok(Mixed {
        kind: "InceptionE",
        branches: vec![
            vec![b.c1("branch1x1", cin, 320)?],
            vec![
                b.c1("branch3x3_1", cin, 384)?,
                Step::Split(
                    b.bc("branch3x3_2a", 384, 384, [1, 3], [0, 1])?,
                    b.bc("branch3x3_2b", 384, 384, [3, 1], [1, 0])?,
                ),
            ],
            vec![
                b.c1("branch3x3dbl_1", cin, 448)?,
                b.c("branch3x3dbl_2", 448, 384, [3, 3], 1, [1, 1])?,
                Step::Split(
                    b.bc("branch3x3dbl_3a", 384, 384, [1, 3], [0, 1])?,
                    b.bc("branch3x3dbl_3b", 384, 384, [3, 1], [1, 0])?,
                ),
            ],
            vec![Step::Avg, b.c1("branch_pool", cin, 192)?],
        ],
    })
}

/// torchvision's `InceptionAux`, kept for its parameters (loading and saving checkpoints); `forward` is provided so
/// the numbers can be checked, satm's training does not call it.
pub struct InceptionAux {
    conv0: BasicConv,
    conv1: BasicConv,
    fc: Linear,
}

impl InceptionAux {
    fn new(ctx: &Ctx, p: nn::Path, cin: i64, classes: i64) -> Result<InceptionAux> {
        Ok(InceptionAux {
            conv0: BasicConv::new(ctx, &p / "conv0", cin, 128, [1, 1], 1, [0, 0])?,
            conv1: BasicConv::new(ctx, &p / "conv1", 128, 768, [5, 5], 1, [0, 0])?,
            fc: Linear::new(ctx, &p / "fc", 768, classes, InitStyle::Normal(0.001))?,
        })
    }

    /// Mixed_6e's output `[B, 768, 17, 17]` → aux logits.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = x.f_avg_pool2d([5, 5], [3, 3], [0, 0], false, true, None::<i64>)?;
        let h = self.conv1.forward(&self.conv0.forward(&h, train)?, train)?;
        self.fc.forward(&h.f_adaptive_avg_pool2d([1, 1])?.f_flatten(1, -1)?)
    }
}

/// Inception v3 for any class count; needs inputs of at least 75×75 (299×299 nominal).
pub fn inception_v3(ctx: &Ctx, root: &nn::Path, classes: i64, aux: bool) -> Result<(Body, Option<InceptionAux>)> {
    let bc = |name: &str, cin, cout, k: i64, s, p: i64| -> Result<Stage> {
        Ok(Stage::new(name, BasicConv::new(ctx, root / name, cin, cout, [k, k], s, [p, p])?))
    };
    let blk = |name: &str| B { ctx, p: root / name };
    let mut stages = vec![
        bc("Conv2d_1a_3x3", 3, 32, 3, 2, 0)?,
        bc("Conv2d_2a_3x3", 32, 32, 3, 1, 0)?,
        bc("Conv2d_2b_3x3", 32, 64, 3, 1, 1)?,
        Stage::new("maxpool1", Op::MaxPool { k: 3, s: 2, p: 0, ceil: false }),
        bc("Conv2d_3b_1x1", 64, 80, 1, 1, 0)?,
        bc("Conv2d_4a_3x3", 80, 192, 3, 1, 0)?,
        Stage::new("maxpool2", Op::MaxPool { k: 3, s: 2, p: 0, ceil: false }),
        Stage::new("Mixed_5b", inception_a(&blk("Mixed_5b"), 192, 32)?),
        Stage::new("Mixed_5c", inception_a(&blk("Mixed_5c"), 256, 64)?),
        Stage::new("Mixed_5d", inception_a(&blk("Mixed_5d"), 288, 64)?),
        Stage::new("Mixed_6a", inception_b(&blk("Mixed_6a"), 288)?),
        Stage::new("Mixed_6b", inception_c(&blk("Mixed_6b"), 768, 128)?),
        Stage::new("Mixed_6c", inception_c(&blk("Mixed_6c"), 768, 160)?),
        Stage::new("Mixed_6d", inception_c(&blk("Mixed_6d"), 768, 160)?),
        Stage::new("Mixed_6e", inception_c(&blk("Mixed_6e"), 768, 192)?),
    ];
    let aux = if aux { Some(InceptionAux::new(ctx, root / "AuxLogits", 768, classes)?) } else { None };
    stages.extend([
        Stage::new("Mixed_7a", inception_d(&blk("Mixed_7a"), 768)?),
        Stage::new("Mixed_7b", inception_e(&blk("Mixed_7b"), 1280)?),
        Stage::new("Mixed_7c", inception_e(&blk("Mixed_7c"), 2048)?),
        Stage::new("avgpool", Op::AdaptiveAvg([1, 1])),
        Stage::new("dropout", Op::Dropout(0.5)),
        Stage::new("flatten", Op::Flatten),
    ]);
    let head = Linear::new(ctx, root / "fc", 2048, classes, InitStyle::Normal(0.1))?;
    Ok((Body { stages, head, head_name: "fc".into(), feature_dim: 2048 }, aux))
}
