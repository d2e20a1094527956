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
        BatchOpts {
            batch_size: 32,
            shuffle: true,
            seed: 0,
            augment: false,
            drop_last: false,
            device: Device::Cpu,
        }
    }
}

impl BatchOpts {
    /// The same options for epoch `e` of a run seeded with `self.seed`: the shuffle and augmentation use `seed + e`.
    pub fn epoch(&self, e: u64) -> BatchOpts {
        BatchOpts {
            seed: self.seed.wrapping_add(e),
            ..self.clone()
        }
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
pub struct Batches {
    images: Tensor,
    labels: Tensor,
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
        let n = ds.len();
        let order = if o.shuffle {
            rng::permutation(n, o.seed, 0)
        } else {
            (0..n as i64).collect()
        };
        let end = if o.drop_last { n - n % o.batch_size } else { n };
        Ok(Batches {
            images: ds.images.shallow_clone(),
            labels: Tensor::from_slice(&ds.labels),
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
        let it = Tensor::from_slice(&idx);
        // [N, 3, H, W] u8 -> [B, 3, H, W] u8; moved as bytes (4x less traffic than f32)
        let mut xb = self
            .images
            .f_index_select(0, &it)?
            .f_to_device(self.device)?;
        if self.augment {
            xb = augment(&xb, &mut self.aug_rng)?;
        }
        let x = xb.f_to_kind(Kind::Float)?.f_div_scalar(255.0)?;
        let y = self
            .labels
            .f_index_select(0, &it)?
            .f_to_device(self.device)?;
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

/// Random horizontal flip (p = 1/2) and random crop with [`CROP_PAD`]-pixel zero padding, per sample, vectorized:
/// the random numbers come from `rng` (so they are seeded and machine independent), the pixel work is two gathers.
pub fn augment(x: &Tensor, r: &mut ChaCha8Rng) -> Result<Tensor> {
    let sz = x.size();
    if sz.len() != 4 {
        bail!("augment: expected [B, C, H, W], got {sz:?}");
    }
    let (b, c, h, w) = (sz[0], sz[1], sz[2], sz[3]);
    let dev = x.device();
    let p = CROP_PAD;
    let mut flip = Vec::with_capacity(b as usize);
    let mut dy = Vec::with_capacity(b as usize);
    let mut dx = Vec::with_capacity(b as usize);
    for _ in 0..b {
        flip.push(rng::below(r, 2) == 1);
        dy.push(rng::below(r, 2 * p as u64 + 1) as i64);
        dx.push(rng::below(r, 2 * p as u64 + 1) as i64);
    }
    let mask = Tensor::from_slice(&flip)
        .f_view([b, 1, 1, 1])?
        .f_to_device(dev)?;
    let flipped = x.f_flip([3])?.f_where_self(&mask, x)?;
    // [B, C, H+2p, W+2p], zeros around the image
    let padded = flipped.f_constant_pad_nd([p, p, p, p])?;
    let ar_h = Tensor::f_arange(h, (Kind::Int64, dev))?;
    let ar_w = Tensor::f_arange(w, (Kind::Int64, dev))?;
    // rows[b, i] = dy[b] + i: [B, 1, H, 1] -> expand over channels and padded width
    let rows = Tensor::from_slice(&dy)
        .f_to_device(dev)?
        .f_view([b, 1, 1, 1])?
        .f_add(&ar_h.f_view([1, 1, h, 1])?)?;
    let rows = rows.f_expand([b, c, h, w + 2 * p], false)?;
    let cut = padded.f_gather(2, &rows, false)?; // [B, C, H, W+2p]
    let cols = Tensor::from_slice(&dx)
        .f_to_device(dev)?
        .f_view([b, 1, 1, 1])?
        .f_add(&ar_w.f_view([1, 1, 1, w])?)?;
    let cols = cols.f_expand([b, c, h, w], false)?;
    Ok(cut.f_gather(3, &cols, false)?) // [B, C, H, W]
}
