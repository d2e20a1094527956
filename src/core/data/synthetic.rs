//! A synthetic ordinal dataset for tests and smoke runs: class k of K is horizontal stripes whose brightness and
//! frequency grow with k, with a random phase per image and Gaussian pixel noise. A small CNN learns it in seconds,
//! and neighbouring classes look more alike than distant ones (so one-off rates mean something).
use super::{Dataset, LoadReport, rng, stratified_folds};
use anyhow::{Result, bail};
use tch::{Kind, Tensor};

#[derive(Debug, Clone)]
pub struct SyntheticOpts {
    pub n: usize,
    pub classes: usize,
    pub size: i64,
    pub seed: u64,
    /// Standard deviation of the pixel noise (pixel range [0, 1]).
    pub noise: f64,
    /// Number of stratified folds to assign (0 = none).
    pub folds: usize,
    /// Number of synthetic subjects: item i belongs to group `s<i % groups>` (0 = no groups).
    pub groups: usize,
}

impl Default for SyntheticOpts {
    fn default() -> Self {
        SyntheticOpts { n: 512, classes: 8, size: 32, seed: 0, noise: 0.1, folds: 0, groups: 0 }
    }
}

/// Builds the synthetic dataset (deterministic in `seed` on any machine).
pub fn synthetic(o: &SyntheticOpts) -> Result<Dataset> {
    if o.n == 0 {
        bail!("synthetic: n must be at least 1");
    }
    if !(2..=1000).contains(&o.classes) {
        bail!("synthetic: classes must be between 2 and 1000, got {}", o.classes);
    }
    if !(4..=1024).contains(&o.size) {
        bail!("synthetic: size must be between 4 and 1024, got {}", o.size);
    }
    if !(0.0..=1.0).contains(&o.noise) {
        bail!("synthetic: noise must be in [0, 1], got {}", o.noise);
    }
    let (n, k, s) = (o.n, o.classes, o.size as usize);
    // The pixel buffer first: it is the largest allocation, and it fails with an error rather than an abort.
    let hw = s * s;
    let mut px = super::zeroed_bytes(n, 3 * hw, &format!("synthetic: n = {n} images of {s}×{s}"))?;
    // Balanced classes in a seeded order.
    let perm = rng::permutation(n, o.seed, 41);
    let labels: Vec<i64> = perm.iter().map(|&p| p % k as i64).collect();
    let mut r = rng::chacha(o.seed, 42);
    for (i, &l) in labels.iter().enumerate() {
        let t = l as f64 / (k - 1) as f64;
        let bright = 0.2 + 0.6 * t;
        let freq = 1.0 + l as f64;
        let phase = rng::unit(&mut r) * std::f64::consts::TAU;
        let img = &mut px[i * 3 * hw..(i + 1) * 3 * hw];
        for y in 0..s {
            let stripe = 0.15 * (std::f64::consts::TAU * freq * y as f64 / s as f64 + phase).sin();
            for x in 0..s {
                for c in 0..3 {
                    // A slight per-channel tint so colour carries a little signal too.
                    let tint = (c as f64 - 1.0) * 0.05 * t;
                    let v = bright + stripe + tint + o.noise * rng::normal(&mut r);
                    img[c * hw + y * s + x] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
    }
    let images = Tensor::f_from_data_size(&px, &[n as i64, 3, o.size, o.size], Kind::Uint8)?;
    let classes: Vec<String> = (0..k).map(|c| format!("c{c}")).collect();
    let folds = if o.folds > 0 { stratified_folds(&labels, k, o.folds, o.seed) } else { vec![] };
    let groups = if o.groups > 0 { (0..n).map(|i| format!("s{}", i % o.groups)).collect() } else { vec![] };
    let mut ds = Dataset::new("synthetic", images, labels, classes, groups, folds, vec![])?;
    ds.report = LoadReport { total: n, kept: n, ..Default::default() };
    Ok(ds)
}
