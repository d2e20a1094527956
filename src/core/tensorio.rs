//! Named tensors in and out of safetensors files (what `safetensors.torch.load_file` / `save_file` read and write):
//! dtype and shape kept, written atomically, errors that name the file and what is wrong.
use anyhow::{Context, Result, bail};
use safetensors::Dtype;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The kinds both sides know, with their safetensors dtype.
const KINDS: [(Kind, Dtype); 10] = [
    (Kind::Bool, Dtype::BOOL),
    (Kind::Uint8, Dtype::U8),
    (Kind::Int8, Dtype::I8),
    (Kind::Int16, Dtype::I16),
    (Kind::Int, Dtype::I32),
    (Kind::Int64, Dtype::I64),
    (Kind::Half, Dtype::F16),
    (Kind::BFloat16, Dtype::BF16),
    (Kind::Float, Dtype::F32),
    (Kind::Double, Dtype::F64),
];

/// Writes `named` to `path` atomically (nothing appears at `path` on error). Tensors are moved to the CPU and made
/// contiguous first; bool, u8, i8, i16, i32, i64, f16, bf16, f32 and f64 are kept as they are.
pub fn save_tensors(path: &Path, named: &[(String, Tensor)]) -> Result<()> {
    if named.is_empty() {
        bail!("{}: no tensors to save (give a map of name: Tensor)", path.display());
    }
    if path.as_os_str().is_empty() || path.file_name().is_none() {
        bail!("'{}' is not a file path", path.display());
    }
    if path.is_dir() {
        bail!("{} is a directory; give a file path such as adv.safetensors", path.display());
    }
    let mut cpu = Vec::with_capacity(named.len());
    for (name, t) in named {
        if name.is_empty() {
            bail!("{}: a tensor has an empty name", path.display());
        }
        let c = t
            .f_detach()?
            .f_to_device(Device::Cpu)?
            .f_contiguous()
            .with_context(|| format!("{}: tensor '{name}'", path.display()))?;
        if !KINDS.iter().any(|k| k.0 == c.kind()) {
            bail!("{}: tensor '{name}' has kind {:?}, which safetensors cannot hold", path.display(), c.kind());
        }
        cpu.push((name.clone(), c));
    }
    crate::core::fsutil::atomic_write_path(path, |tmp| Tensor::write_safetensors(&cpu, tmp).map_err(Into::into))
        .with_context(|| format!("saving tensors to {}", path.display()))
}

/// Reads every tensor of a safetensors file, sorted by name, on the CPU with the file's dtype and shape.
pub fn load_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file ({e})", path.display()))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let Some(&(kind, _)) = KINDS.iter().find(|k| k.1 == view.dtype()) else {
            bail!("{}: tensor '{name}' has dtype {:?}, which satm cannot hold", path.display(), view.dtype());
        };
        let size: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &size, kind)
            .with_context(|| format!("{}: tensor '{name}'", path.display()))?;
        out.push((name, t));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
