//! Image decoding: files to a u8 `[N, 3, S, S]` tensor, in parallel, with a tensor cache in front.
use super::cache;
use anyhow::{Context, Result, bail};
use image::imageops::FilterType;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// How an image of another shape becomes `size x size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// Center crop to a square, then resize (keeps the aspect ratio of faces).
    CenterCrop,
    /// Resize the whole image to the square (distorts non-square images).
    Stretch,
}

impl Resize {
    pub fn parse(s: &str) -> Result<Resize> {
        match s {
            "crop" | "center_crop" => Ok(Resize::CenterCrop),
            "stretch" | "resize" => Ok(Resize::Stretch),
            _ => bail!("resize '{s}': expected 'crop' (center crop to square, then resize) or 'stretch'"),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Resize::CenterCrop => "crop",
            Resize::Stretch => "stretch",
        }
    }
}

/// Options shared by every loader that decodes files.
#[derive(Debug, Clone)]
pub struct DecodeOpts {
    /// Output side length in pixels.
    pub size: i64,
    pub resize: Resize,
    /// Use (and fill) the tensor cache.
    pub cache: bool,
    /// Cache directory; `None` = `cache::default_dir()`.
    pub cache_dir: Option<PathBuf>,
    /// Decoder threads; 0 = available parallelism (at most 8).
    pub threads: usize,
}

impl Default for DecodeOpts {
    fn default() -> Self {
        DecodeOpts { size: 64, resize: Resize::CenterCrop, cache: true, cache_dir: None, threads: 0 }
    }
}

impl DecodeOpts {
    pub fn validate(&self) -> Result<()> {
        if !(1..=4096).contains(&self.size) {
            bail!("size must be between 1 and 4096 pixels, got {}", self.size);
        }
        Ok(())
    }
}

/// Decoded images: `images` is u8 `[N, 3, S, S]` in the order of the input paths; a file that failed to decode has
/// an all-zero image there and an entry `(index, message)` in `failed`.
pub struct Decoded {
    pub images: Tensor,
    pub failed: Vec<(usize, String)>,
}

/// Decodes one file to `size x size` RGB, channel-major (CHW) bytes.
pub fn decode_file(path: &Path, size: i64, resize: Resize) -> Result<Vec<u8>> {
    let s = size as u32;
    // The decoders should not panic on bad data; if one does, it is still this file's error, not a crash.
    let r = std::panic::catch_unwind(|| -> Result<Vec<u8>> {
        let img = image::ImageReader::open(path)?.with_guessed_format()?.decode()?;
        let rgb = img.to_rgb8();
        let (w, h) = rgb.dimensions();
        if w == 0 || h == 0 {
            bail!("image has no pixels ({w}x{h})");
        }
        let rgb = match resize {
            Resize::CenterCrop if w != h => {
                let m = w.min(h);
                image::imageops::crop_imm(&rgb, (w - m) / 2, (h - m) / 2, m, m).to_image()
            }
            _ => rgb,
        };
        let rgb =
            if rgb.dimensions() == (s, s) { rgb } else { image::imageops::resize(&rgb, s, s, FilterType::Triangle) };
        let hw = (s * s) as usize;
        let mut out = vec![0u8; 3 * hw];
        for (i, p) in rgb.pixels().enumerate() {
            out[i] = p[0];
            out[hw + i] = p[1];
            out[2 * hw + i] = p[2];
        }
        Ok(out)
    });
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e).with_context(|| format!("cannot decode image {}", path.display())),
        Err(_) => bail!("cannot decode image {}: the decoder panicked (corrupt file?)", path.display()),
    }
}

fn threads(opts: &DecodeOpts, n: usize) -> usize {
    let avail = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
    let t = if opts.threads == 0 { avail } else { opts.threads };
    t.clamp(1, n.max(1))
}

/// Decodes `paths` (through the cache when enabled). Decoding failures are collected, not raised: the loader decides
/// (error or counted skip). `tag` names the cache file (the dataset's name).
pub fn decode_all(tag: &str, paths: &[PathBuf], opts: &DecodeOpts) -> Result<Decoded> {
    opts.validate()?;
    let key = if opts.cache { Some(cache::key(paths, opts)?) } else { None };
    let dir = opts.cache_dir.clone().unwrap_or_else(cache::default_dir);
    if let Some(k) = &key
        && let Some(d) = cache::load(&dir, tag, k, paths.len(), opts.size)
    {
        return Ok(d);
    }
    let d = decode_uncached(paths, opts)?;
    if let Some(k) = &key {
        // A cache that cannot be written (read-only home, full disk) must not fail the load.
        if let Err(e) = cache::store(&dir, tag, k, &d) {
            eprintln!("satm: warning: data cache not written: {e:#}");
        }
    }
    Ok(d)
}

/// Decodes without the cache, in `threads` contiguous chunks.
pub fn decode_uncached(paths: &[PathBuf], opts: &DecodeOpts) -> Result<Decoded> {
    opts.validate()?;
    let s = opts.size;
    let per = (3 * s * s) as usize;
    let n = paths.len();
    let mut buf = super::zeroed_bytes(n, per, &format!("{n} images of {s}×{s}"))?;
    let nt = threads(opts, n);
    let chunk = n.div_ceil(nt).max(1);
    let mut failed: Vec<(usize, String)> = Vec::new();
    std::thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::new();
        for (c, (out, ps)) in buf.chunks_mut(chunk * per).zip(paths.chunks(chunk)).enumerate() {
            let resize = opts.resize;
            handles.push(scope.spawn(move || -> Result<Vec<(usize, String)>> {
                let mut bad = Vec::new();
                for (i, p) in ps.iter().enumerate() {
                    crate::core::cancel::check()?;
                    match decode_file(p, s, resize) {
                        Ok(px) => out[i * per..(i + 1) * per].copy_from_slice(&px),
                        Err(e) => bad.push((c * chunk + i, format!("{e:#}"))),
                    }
                }
                Ok(bad)
            }));
        }
        for h in handles {
            let bad = h.join().map_err(|_| anyhow::anyhow!("a decoder thread panicked"))??;
            failed.extend(bad);
        }
        Ok(())
    })?;
    failed.sort_by_key(|f| f.0);
    let images = Tensor::f_from_data_size(&buf, &[n as i64, 3, s, s], Kind::Uint8)?;
    Ok(Decoded { images, failed })
}
