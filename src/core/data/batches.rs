//! Mini-batches over a [`Dataset`]: a seeded shuffle, `index_select` on the u8 images, optional flip/crop
//! augmentation (vectorized, on the batch's device, still in u8), then conversion to f32 in [0, 1].
use super::{Dataset, rng};
use anyhow::{Result, bail};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// Options for one epoch of batches. For epoch `e` pass `seed: base + e` (see [`BatchOpts::epoch`]).
#[derive(Debug, Clone)]
pub struct BatchOpts {
    pub batch_size: usize,
    pub shuffle: bool,
    pub seed: u64,
    /// Random horizontal flip and random crop with 4-pixel zero padding.
    pub augment: bool,
    /// Leave out the last, smaller batch.
    pub drop_last: bool,
    pub device: Device,
}

impl Default for BatchOpts {
    fn default() -> Self {
        BatchOpts { batch_size: 32, shuffle: true, seed: 0, augment: false, drop_last: false, device: Device::Cpu }
    }
}

impl BatchOpts {
    /// The same options for epoch `e` of a run seeded with `self.seed`: the shuffle and augmentation use `seed + e`.
    pub fn epoch(&self, e: u64) -> BatchOpts {
        BatchOpts { seed: self.seed.wrapping_add(e), ..self.clone() }
    }
}

/// Padding of the random crop, in pixels.
pub const CROP_PAD: i64 = 4;

/// One mini-batch.
pub struct Batch {
    /// f32 `[B, 3, H, W]` in [0, 1], on the requested device.
    pub x: Tensor,
    /// i64 `[B]` class indices, on the requested device.
    pub y: Tensor,
    /// Dataset indices of the rows of `x`.
    pub idx: Vec<i64>,
}

/// An epoch of batches: `Iterator<Item = Result<Batch>>` with an exact length.
///
/// Batches are assembled with plain byte copies rather than libtorch ops: on a busy CPU, tiny intra-op-parallel
/// kernels (index_select, casts) spend most of their time waiting for worker threads.
pub struct Batches {
    /// u8 `[N, 3, H, W]`, contiguous, on the CPU (a shallow clone keeps the storage alive).
    images: Tensor,
    labels: Vec<i64>,
    chw: (usize, usize, usize),
    order: Vec<i64>,
    pos: usize,
    end: usize,
    batch_size: usize,
    augment: bool,
    device: Device,
    aug_rng: ChaCha8Rng,
}

impl Batches {
    pub(super) fn new(ds: &Dataset, o: &BatchOpts) -> Result<Batches> {
        if o.batch_size == 0 {
            bail!("batch size must be at least 1");
        }
        let sz = ds.images.size();
        if sz.len() != 4 || ds.images.kind() != Kind::Uint8 || sz[0] as usize != ds.len() {
            bail!(
                "dataset '{}': images must be u8 [N, 3, H, W] with N = {}, got {:?} {sz:?}",
                ds.name,
                ds.len(),
                ds.images.kind()
            );
        }
        let images = ds.images.f_to_device(Device::Cpu)?.f_contiguous()?;
        let n = ds.len();
        let order = if o.shuffle { rng::permutation(n, o.seed, 0) } else { (0..n as i64).collect() };
        let end = if o.drop_last { n - n % o.batch_size } else { n };
        Ok(Batches {
            images,
            labels: ds.labels.clone(),
            chw: (sz[1] as usize, sz[2] as usize, sz[3] as usize),
            order,
            pos: 0,
            end,
            batch_size: o.batch_size,
            augment: o.augment,
            device: o.device,
            aug_rng: rng::chacha(o.seed, 1),
        })
    }

    /// Batches left in this epoch.
    pub fn remaining(&self) -> usize {
        (self.end - self.pos).div_ceil(self.batch_size)
    }

    fn make(&mut self, idx: Vec<i64>) -> Result<Batch> {
        crate::core::cancel::check()?;
        let (c, h, w) = self.chw;
        let per = c * h * w;
        let n = self.labels.len();
        // SAFETY: `images` is a contiguous u8 CPU tensor of n * per elements (checked in `new`), kept alive by `self`,
        // and only read here.
        let all: &[u8] = unsafe { std::slice::from_raw_parts(self.images.data_ptr() as *const u8, n * per) };
        let b = idx.len();
        let mut buf = vec![0u8; b * per];
        for (j, &i) in idx.iter().enumerate() {
            let src = &all[i as usize * per..(i as usize + 1) * per];
            let dst = &mut buf[j * per..(j + 1) * per];
            if self.augment {
                let (flip, dy, dx) = draw(&mut self.aug_rng);
                augment_item(src, dst, (c, h, w), flip, dy, dx);
            } else {
                dst.copy_from_slice(src);
            }
        }
        let shape = [b as i64, c as i64, h as i64, w as i64];
        let x = if self.device == Device::Cpu {
            let xf: Vec<f32> = buf.iter().map(|&v| v as f32 / 255.0).collect();
            Tensor::f_from_slice(&xf)?.f_view(shape)?
        } else {
            // Move bytes (4x less traffic than f32) and convert on the device.
            Tensor::f_from_data_size(&buf, &shape, Kind::Uint8)?
                .f_to_device(self.device)?
                .f_to_kind(Kind::Float)?
                .f_div_scalar(255.0)?
        };
        let ys: Vec<i64> = idx.iter().map(|&i| self.labels[i as usize]).collect();
        let y = Tensor::f_from_slice(&ys)?.f_to_device(self.device)?;
        Ok(Batch { x, y, idx })
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        if self.pos >= self.end {
            return None;
        }
        let stop = (self.pos + self.batch_size).min(self.end);
        let idx = self.order[self.pos..stop].to_vec();
        self.pos = stop;
        Some(self.make(idx))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let r = self.remaining();
        (r, Some(r))
    }
}

impl ExactSizeIterator for Batches {}

/// One sample's augmentation draw: (flip, dy, dx) with offsets in `-CROP_PAD..=CROP_PAD`.
fn draw(r: &mut ChaCha8Rng) -> (bool, isize, isize) {
    let p = CROP_PAD as u64;
    let flip = rng::below(r, 2) == 1;
    let dy = rng::below(r, 2 * p + 1) as isize - p as isize;
    let dx = rng::below(r, 2 * p + 1) as isize - p as isize;
    (flip, dy, dx)
}

/// Writes the flipped (optional) and shifted copy of one `[C, H, W]` image into `dst`: output (y, x) reads source
/// (y + dy, x + dx) of the flipped image, zero outside it (= a crop of the zero-padded image).
fn augment_item(src: &[u8], dst: &mut [u8], (c, h, w): (usize, usize, usize), flip: bool, dy: isize, dx: isize) {
    for ch in 0..c {
        let plane = ch * h * w;
        for y in 0..h {
            let drow = &mut dst[plane + y * w..plane + (y + 1) * w];
            let sy = y as isize + dy;
            if sy < 0 || sy >= h as isize {
                drow.fill(0);
                continue;
            }
            let srow = &src[plane + sy as usize * w..plane + (sy as usize + 1) * w];
            for (xo, d) in drow.iter_mut().enumerate() {
                let sx = xo as isize + dx;
                *d = if sx < 0 || sx >= w as isize {
                    0
                } else if flip {
                    srow[w - 1 - sx as usize]
                } else {
                    srow[sx as usize]
                };
            }
        }
    }
}

/// Random horizontal flip (p = 1/2) and random crop with [`CROP_PAD`]-pixel zero padding, per sample, on a u8
/// `[B, C, H, W]` tensor (the same draws, in the same order, as the batch iterator uses).
pub fn augment(x: &Tensor, r: &mut ChaCha8Rng) -> Result<Tensor> {
    let sz = x.size();
    if sz.len() != 4 || x.kind() != Kind::Uint8 {
        bail!("augment: expected u8 [B, C, H, W], got {:?} {sz:?}", x.kind());
    }
    let (b, c, h, w) = (sz[0] as usize, sz[1] as usize, sz[2] as usize, sz[3] as usize);
    let per = c * h * w;
    let mut src = vec![0u8; b * per];
    x.f_to_device(Device::Cpu)?.f_contiguous()?.f_copy_data_u8(&mut src, b * per)?;
    let mut dst = vec![0u8; b * per];
    for i in 0..b {
        let (flip, dy, dx) = draw(r);
        augment_item(&src[i * per..(i + 1) * per], &mut dst[i * per..(i + 1) * per], (c, h, w), flip, dy, dx);
    }
    Ok(Tensor::f_from_data_size(&dst, &sz, Kind::Uint8)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn augment_is_a_shifted_possibly_flipped_copy() {
        // One 1x6x6 image with distinct values; every output pixel must be 0 (padding) or the source pixel at a
        // single common offset, possibly mirrored.
        let img: Vec<u8> = (1..=36).collect();
        let x = Tensor::from_slice(&img).view([1, 1, 6, 6]);
        let mut r = rng::chacha(5, 1);
        let mut flips = 0;
        for _ in 0..40 {
            let out = Vec::<u8>::try_from(augment(&x, &mut r).unwrap().view([-1])).unwrap();
            let mut ok = false;
            for flip in [false, true] {
                for dy in -4isize..=4 {
                    for dx in -4isize..=4 {
                        let expect: Vec<u8> = (0..36)
                            .map(|k| {
                                let (y, xx) = ((k / 6) as isize + dy, (k % 6) as isize + dx);
                                if !(0..6).contains(&y) || !(0..6).contains(&xx) {
                                    0
                                } else {
                                    let xx = if flip { 5 - xx } else { xx };
                                    img[(y * 6 + xx) as usize]
                                }
                            })
                            .collect();
                        if expect == out {
                            ok = true;
                            flips += flip as usize;
                        }
                    }
                }
            }
            assert!(ok, "{out:?}");
        }
        assert!(flips > 5 && flips < 35, "flips {flips}");
    }
}
