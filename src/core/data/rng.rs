//! Seeded randomness for data handling (shuffles, folds, splits, augmentation, synthetic images).
//!
//! Everything here draws raw `u64`s from ChaCha8 and does its own arithmetic (Fisher–Yates, Lemire-style bounded
//! integers, Box–Muller), so the results depend only on the seed: the same on any machine, pointer width or rand
//! release.
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

/// A ChaCha8 stream for `seed`; `stream` separates independent uses of one seed (shuffle vs. augmentation).
pub fn chacha(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// A uniform integer in `0..n` (`n > 0`), unbiased (rejection on the 128-bit product).
pub fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    debug_assert!(n > 0);
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = (rng.next_u64() as u128) * (n as u128);
        if (m as u64) >= threshold {
            return (m >> 64) as u64;
        }
    }
}

/// A uniform float in `[0, 1)` with 53 random bits.
pub fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal sample (Box–Muller; one of the pair is discarded for simplicity).
pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - unit(rng); // (0, 1]: ln is finite
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Shuffles `v` in place (Fisher–Yates).
pub fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// `0..n` in a seeded random order.
pub fn permutation(n: usize, seed: u64, stream: u64) -> Vec<i64> {
    let mut v: Vec<i64> = (0..n as i64).collect();
    shuffle(&mut v, &mut chacha(seed, stream));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_permutation_and_seeded() {
        let a = permutation(100, 7, 0);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_eq!(a, permutation(100, 7, 0));
        assert_ne!(a, permutation(100, 8, 0));
        assert_ne!(a, permutation(100, 7, 1));
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut r = chacha(1, 0);
        let mut c = [0usize; 3];
        for _ in 0..30_000 {
            c[below(&mut r, 3) as usize] += 1;
        }
        for x in c {
            assert!((9_500..10_500).contains(&x), "{c:?}");
        }
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut r = chacha(3, 0);
        let xs: Vec<f64> = (0..20_000).map(|_| normal(&mut r)).collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64;
        assert!(m.abs() < 0.03 && (v - 1.0).abs() < 0.05, "mean {m} var {v}");
    }
}
