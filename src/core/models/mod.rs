//! Models: torchvision-compatible architectures, the CPU-scale networks of the benchmark, DA heads, weights.
//!
//! Every tensor is registered under PyTorch's `state_dict()` name, so weights move between satm and PyTorch as
//! safetensors files with no renaming (tools/convert_weights.py turns .pt/.pth files into safetensors).
pub mod cpu;
pub mod da;
pub mod inception;
pub mod layers;
pub mod net;
pub mod spec;
pub mod tv;

pub use da::DaHead;
pub use net::{LoadReport, Net, load_named, read_weights, write_weights};
pub use spec::ModelSpec;

use anyhow::Result;
use tch::{Device, Tensor};

/// Anything that maps pixel images in [0, 1] (`[B, 3, H, W]`) to class logits (`[B, C]`): a network, an ensemble,
/// or a wrapper. Attacks and evaluation work against this trait.
pub trait Classifier {
    /// Logits `[B, C]`; `train` selects batch statistics / dropout (attacks pass `false` by default).
    fn logits_t(&self, x: &Tensor, train: bool) -> Result<Tensor>;
    fn num_classes(&self) -> i64;
    fn device(&self) -> Device;
    /// A short name for tables and logs.
    fn label(&self) -> String;
}
