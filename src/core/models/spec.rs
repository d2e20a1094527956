//! What network to build: architecture, classes, width, nominal input size and the input normalization.
use anyhow::{Result, bail};

/// The CPU-scale networks of the benchmark (ref_satm.py).
pub const CPU_ARCHS: [&str; 3] = ["vgg_s", "vggbn_s", "resnet_s"];
/// torchvision-compatible architectures (parameter names equal torchvision's state_dict keys).
pub const TORCHVISION_ARCHS: [&str; 6] = ["vgg16", "vgg16_bn", "resnet18", "resnet50", "resnet101", "inception_v3"];

/// ImageNet mean/std (torchvision's pretrained weights).
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];
/// VGG-Face (Parkhi et al. 2015, the converted `vgg_face_dag` weights): RGB mean (129.186, 104.762, 93.594) on
/// 0–255 pixels and no std division, i.e. std 1/255 on [0, 1] pixels.
pub const VGGFACE_MEAN: [f64; 3] =
    [129.186_279_296_875 / 255.0, 104.762_382_507_324_22 / 255.0, 93.593_963_623_046_88 / 255.0];
/// VGGFace2 ResNet50 (Cao et al. 2018): RGB mean (131.0912, 103.8827, 91.4953) on 0–255 pixels, no std division.
pub const VGGFACE2_MEAN: [f64; 3] = [131.0912 / 255.0, 103.8827 / 255.0, 91.4953 / 255.0];
/// std 1/255: the Caffe-era face models subtract the mean from 0–255 pixels and do not divide.
pub const PIXEL255_STD: [f64; 3] = [1.0 / 255.0; 3];

/// The smallest input for which inception_v3's AuxLogits is defined (Mixed_6e must be at least 17×17).
pub const AUX_MIN_SIZE: i64 = 299;

/// Normalization presets by name (`model(..., #{norm: "vggface"})`).
pub const NORM_PRESETS: [&str; 6] = ["none", "imagenet", "inception", "vggface", "vggface2", "default"];

/// Mean/std of a preset; `default` is the architecture's own default.
pub fn norm_preset(name: &str, arch: &str) -> Result<([f64; 3], [f64; 3])> {
    Ok(match name {
        "none" => ([0.0; 3], [1.0; 3]),
        "imagenet" => (IMAGENET_MEAN, IMAGENET_STD),
        // torchvision's transform_input for Google's Inception weights maps ImageNet-normalized input to (x - 0.5) / 0.5.
        "inception" => ([0.5; 3], [0.5; 3]),
        "vggface" => (VGGFACE_MEAN, PIXEL255_STD),
        "vggface2" => (VGGFACE2_MEAN, PIXEL255_STD),
        "default" => default_norm(arch),
        other => bail!("unknown normalization preset '{other}' (valid: {})", NORM_PRESETS.join(", ")),
    })
}

/// The architecture's default normalization: none for the CPU-scale nets (ref_satm.py has none), 0.5/0.5 for
/// inception_v3 (what torchvision's `transform_input` gives Google's weights), ImageNet for the other torchvision nets.
pub fn default_norm(arch: &str) -> ([f64; 3], [f64; 3]) {
    if CPU_ARCHS.contains(&arch) {
        ([0.0; 3], [1.0; 3])
    } else if arch == "inception_v3" {
        ([0.5; 3], [0.5; 3])
    } else {
        (IMAGENET_MEAN, IMAGENET_STD)
    }
}

/// A network's specification. `width` scales the channels of the CPU-scale nets (1.0 = ref_satm.py exactly) and must
/// be 1.0 for torchvision archs. `size` is the nominal square input size (summaries, checks). `aux_logits` adds
/// inception_v3's AuxLogits parameters (to load torchvision checkpoints that have them; they are not used by forward).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub arch: String,
    pub classes: i64,
    pub width: f64,
    pub size: i64,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    pub aux_logits: bool,
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec::new("vgg_s", 8)
    }
}

impl ModelSpec {
    /// `arch` with `classes` classes and the architecture's defaults: width 1, size 32 for the CPU-scale nets,
    /// 299 for inception_v3, 224 otherwise, and the default normalization.
    pub fn new(arch: &str, classes: i64) -> ModelSpec {
        let (mean, std) = default_norm(arch);
        let size = if CPU_ARCHS.contains(&arch) {
            32
        } else if arch == "inception_v3" {
            299
        } else {
            224
        };
        ModelSpec { arch: arch.to_string(), classes, width: 1.0, size, mean, std, aux_logits: false }
    }

    /// The smallest input side the architecture accepts.
    pub fn min_size(&self) -> i64 {
        match self.arch.as_str() {
            "vgg_s" | "vggbn_s" | "resnet_s" => 8,
            "inception_v3" => 75,
            _ => 32,
        }
    }

    /// Checks every field; errors say which and what is valid.
    pub fn validate(&self) -> Result<()> {
        let a = self.arch.as_str();
        if !CPU_ARCHS.contains(&a) && !TORCHVISION_ARCHS.contains(&a) {
            bail!("unknown architecture '{a}' (valid: {}, {})", CPU_ARCHS.join(", "), TORCHVISION_ARCHS.join(", "));
        }
        if self.classes < 1 {
            bail!("classes must be at least 1, got {}", self.classes);
        }
        if !(self.width.is_finite() && self.width > 0.0 && self.width <= 16.0) {
            bail!("width must be in (0, 16], got {}", self.width);
        }
        if !CPU_ARCHS.contains(&a) && self.width != 1.0 {
            bail!("width applies to the CPU-scale nets ({}) only; {a} needs width 1", CPU_ARCHS.join(", "));
        }
        if self.size < self.min_size() {
            bail!("size {} is too small for {a} (at least {})", self.size, self.min_size());
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || self.mean.iter().any(|m| !m.is_finite()) {
            bail!("std must be positive and mean finite, got mean {:?} std {:?}", self.mean, self.std);
        }
        if self.aux_logits && a != "inception_v3" {
            bail!("aux_logits applies to inception_v3 only, not {a}");
        }
        if self.aux_logits && self.size < AUX_MIN_SIZE {
            bail!(
                "inception_v3's AuxLogits needs inputs of at least {AUX_MIN_SIZE}×{AUX_MIN_SIZE}, size is {}",
                self.size
            );
        }
        Ok(())
    }

    /// Normalization is skipped when it would be the identity.
    pub fn normalizes(&self) -> bool {
        self.mean != [0.0; 3] || self.std != [1.0; 3]
    }
}
