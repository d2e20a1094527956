//! Statistics for comparing runs: mean ± sample std with a t confidence interval, paired tests of two arms over
//! (fold, seed) scores (paired t-test, Wilcoxon signed-rank), McNemar's exact test of two networks on the same inputs,
//! a seeded percentile bootstrap over examples, and the ratio of paired throughputs (satm bench's rounds).
//!
//! Distributions come from `statrs`; every p-value is two-sided. The tests follow scipy.stats' defaults, so their
//! numbers can be checked against `ttest_rel`, `wilcoxon`, `binomtest` and `t.interval` (tests/stats.rs does).
use crate::core::data::rng;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, Normal, StudentsT};

/// Mean, sample standard deviation (n − 1) and a two-sided t confidence interval of the mean.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanCi {
    pub mean: f64,
    pub std: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub n: usize,
    pub level: f64,
}

fn check_level(level: f64) -> Result<()> {
    if !(level > 0.0 && level < 1.0) {
        bail!("confidence level must be in (0, 1) (e.g. 0.95), got {level}");
    }
    Ok(())
}

fn check_finite(what: &str, values: &[f64]) -> Result<()> {
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        bail!("{what}[{i}] is {v}; every value must be a finite number");
    }
    Ok(())
}

/// The quantile `1 − (1 − level)/2` of Student's t with `df` degrees of freedom.
fn t_quantile(level: f64, df: f64) -> Result<f64> {
    let t =
        StudentsT::new(0.0, 1.0, df).map_err(|e| anyhow::anyhow!("Student's t with {df} degrees of freedom: {e}"))?;
    Ok(t.inverse_cdf(0.5 + level / 2.0))
}

/// Mean ± sample std and the t interval `mean ± t(level, n−1) · std/√n` (scipy: `t.interval(level, n-1, loc=mean,
/// scale=sem)`). Needs at least two values (one value has no spread to build an interval from).
pub fn mean_ci(values: &[f64], level: f64) -> Result<MeanCi> {
    check_level(level)?;
    check_finite("values", values)?;
    let n = values.len();
    if n < 2 {
        bail!("a confidence interval needs at least 2 values, got {n}");
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    let half = t_quantile(level, (n - 1) as f64)? * std / (n as f64).sqrt();
    Ok(MeanCi { mean, std, ci_low: mean - half, ci_high: mean + half, n, level })
}

/// The paired test of [`compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairedTest {
    /// Student's paired t-test (scipy `ttest_rel`).
    PairedT,
    /// Wilcoxon signed-rank test (scipy `wilcoxon` with its defaults).
    Wilcoxon,
}

impl PairedTest {
    pub fn name(self) -> &'static str {
        match self {
            PairedTest::PairedT => "paired_t",
            PairedTest::Wilcoxon => "wilcoxon",
        }
    }
}

impl std::str::FromStr for PairedTest {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "paired_t" | "t" => Ok(PairedTest::PairedT),
            "wilcoxon" => Ok(PairedTest::Wilcoxon),
            _ => bail!("unknown test '{s}': use \"paired_t\" or \"wilcoxon\""),
        }
    }
}

/// Two arms compared on paired scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub test: PairedTest,
    /// Mean of a − b.
    pub delta: f64,
    /// The t interval of the mean difference (for both tests: the Wilcoxon test only changes `p`).
    pub ci_low: f64,
    pub ci_high: f64,
    pub level: f64,
    /// Two-sided p-value.
    pub p: f64,
    /// Number of pairs.
    pub n: usize,
    /// t for the t-test; min(W+, W−) for Wilcoxon (scipy's two-sided statistic).
    pub statistic: f64,
    /// How p was computed: "t", "exact", "permutation" (all 2^n sign flips) or "normal".
    pub method: String,
}

/// Compares paired scores `a[i]`, `b[i]` (one pair per fold and seed): Δ = mean(a − b), its t interval at `level`,
/// and a two-sided p from `test`.
///
/// Paired t: t = mean(d)/(sd(d)/√n) with n − 1 degrees of freedom. If every difference is the same, sd = 0: p = 0
/// when that difference is not zero, p = 1 when all are zero (scipy returns NaN for the latter).
///
/// Wilcoxon (scipy's defaults: `zero_method="wilcox"`, no continuity correction, `method="auto"`): zero differences
/// are dropped from the ranks, tied |d| get average ranks (ties are exact equality, as in scipy). With n ≤ 50 pairs,
/// no zeros and no ties, p comes from the exact null distribution of W+; with zeros or ties and n ≤ 13, from all 2^n
/// sign flips (what scipy's permutation test enumerates); otherwise from the normal approximation with the tie
/// correction. All differences zero: p = 1. Note that with n = 5 pairs the smallest possible exact p is 0.0625.
pub fn compare(a: &[f64], b: &[f64], test: PairedTest, level: f64) -> Result<Comparison> {
    if a.len() != b.len() {
        bail!("compare: the arms have {} and {} scores; they must be paired (one per fold and seed)", a.len(), b.len());
    }
    check_finite("a", a)?;
    check_finite("b", b)?;
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let ci = mean_ci(&d, level).map_err(|e| anyhow::anyhow!("compare: {e}"))?;
    let n = d.len();
    let (statistic, p, method) = match test {
        PairedTest::PairedT => {
            let se = ci.std / (n as f64).sqrt();
            if se == 0.0 {
                let p = if ci.mean == 0.0 { 1.0 } else { 0.0 };
                (if ci.mean == 0.0 { 0.0 } else { ci.mean.signum() * f64::INFINITY }, p, "t")
            } else {
                let t = ci.mean / se;
                let dist = StudentsT::new(0.0, 1.0, (n - 1) as f64)?;
                (t, (2.0 * dist.sf(t.abs())).min(1.0), "t")
            }
        }
        PairedTest::Wilcoxon => wilcoxon(&d)?,
    };
    Ok(Comparison {
        test,
        delta: ci.mean,
        ci_low: ci.ci_low,
        ci_high: ci.ci_high,
        level,
        p,
        n,
        statistic,
        method: method.to_string(),
    })
}

/// The ratio of two paired positive measurements (throughputs of two programs timed in alternating rounds): the
/// geometric mean of `a[i] / b[i]`, its t interval at `level` and the paired t-test's two-sided p for "ratio = 1",
/// all on the log scale (scipy: `t.interval` and `ttest_rel` on `log(a)`, `log(b)`, exponentiated). Needs 2 pairs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatioCi {
    /// exp(mean(log a − log b)).
    pub ratio: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub level: f64,
    pub p: f64,
    pub n: usize,
}

/// See [`RatioCi`].
pub fn ratio_ci(a: &[f64], b: &[f64], level: f64) -> Result<RatioCi> {
    for (what, v) in [("a", a), ("b", b)] {
        check_finite(what, v)?;
        if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| **x <= 0.0) {
            bail!("ratio: {what}[{i}] is {x}; a ratio of measurements needs positive values");
        }
    }
    let ln = |v: &[f64]| v.iter().map(|x| x.ln()).collect::<Vec<_>>();
    let c = compare(&ln(a), &ln(b), PairedTest::PairedT, level).map_err(|e| anyhow::anyhow!("ratio: {e}"))?;
    Ok(RatioCi { ratio: c.delta.exp(), ci_low: c.ci_low.exp(), ci_high: c.ci_high.exp(), level, p: c.p, n: c.n })
}

/// Average ranks (1-based) of `v`, ties sharing the mean of their positions, and the sizes of the tie groups.
fn average_ranks(v: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut ranks = vec![0.0; v.len()];
    let mut groups = vec![];
    let mut s = 0;
    while s < idx.len() {
        let mut e = s + 1;
        while e < idx.len() && v[idx[e]] == v[idx[s]] {
            e += 1;
        }
        let r = (s + 1 + e) as f64 / 2.0; // mean of positions s+1..=e
        for &i in &idx[s..e] {
            ranks[i] = r;
        }
        groups.push(e - s);
        s = e;
    }
    (ranks, groups)
}

/// The number of subsets of {1, …, n} with each sum 0..=n(n+1)/2: the exact null distribution of W+ times 2^n.
fn signed_rank_counts(n: usize) -> Vec<f64> {
    let max = n * (n + 1) / 2;
    let mut c = vec![0.0f64; max + 1];
    c[0] = 1.0;
    for k in 1..=n {
        for s in (k..=max).rev() {
            c[s] += c[s - k];
        }
    }
    c
}

/// Two-sided Wilcoxon signed-rank test of differences `d` as scipy's `wilcoxon(d)` does it: (min(W+, W−), p,
/// method).
fn wilcoxon(d: &[f64]) -> Result<(f64, f64, &'static str)> {
    let n = d.len();
    let nz: Vec<f64> = d.iter().copied().filter(|x| *x != 0.0).collect();
    let zeros = n - nz.len();
    if nz.is_empty() {
        return Ok((0.0, 1.0, "exact"));
    }
    let abs: Vec<f64> = nz.iter().map(|x| x.abs()).collect();
    let (ranks, groups) = average_ranks(&abs);
    let r_plus: f64 = nz.iter().zip(&ranks).filter(|(x, _)| **x > 0.0).map(|(_, r)| r).sum();
    let r_minus: f64 = nz.iter().zip(&ranks).filter(|(x, _)| **x < 0.0).map(|(_, r)| r).sum();
    let statistic = r_plus.min(r_minus);
    let ties = groups.iter().any(|&g| g > 1);
    let m = nz.len();
    if n <= 50 && !ties && zeros == 0 {
        // Exact: W+ is an integer here; p = 2·min(P(W ≥ W+), P(W ≤ W+)), clipped to 1.
        let counts = signed_rank_counts(m);
        let total: f64 = counts.iter().sum();
        let w = r_plus.round() as usize;
        let cdf: f64 = counts[..=w].iter().sum::<f64>() / total;
        let sf: f64 = counts[w..].iter().sum::<f64>() / total;
        return Ok((statistic, (2.0 * cdf.min(sf)).min(1.0), "exact"));
    }
    if n <= 13 {
        // Every sign assignment of the non-zero differences is equally likely under H0 (flipping a zero changes
        // nothing, so the 2^n flips scipy enumerates give the same proportions). Ranks are multiples of 1/2:
        // count in half-rank units, exactly.
        let half: Vec<usize> = ranks.iter().map(|r| (r * 2.0).round() as usize).collect();
        let max: usize = half.iter().sum();
        let mut c = vec![0.0f64; max + 1];
        c[0] = 1.0;
        for &h in &half {
            for s in (h..=max).rev() {
                c[s] += c[s - h];
            }
        }
        let total: f64 = c.iter().sum();
        let w = (r_plus * 2.0).round() as usize;
        let le: f64 = c[..=w].iter().sum::<f64>() / total;
        let ge: f64 = c[w..].iter().sum::<f64>() / total;
        return Ok((statistic, (2.0 * le.min(ge)).min(1.0), "permutation"));
    }
    // Normal approximation with the tie correction, no continuity correction (scipy's default).
    let mf = m as f64;
    let mean = mf * (mf + 1.0) / 4.0;
    let tie: f64 = groups.iter().map(|&t| (t as f64).powi(3) - t as f64).sum();
    let se = ((mf * (mf + 1.0) * (2.0 * mf + 1.0) - tie / 2.0) / 24.0).sqrt();
    let z = (r_plus - mean) / se;
    let p = 2.0 * Normal::new(0.0, 1.0)?.sf(z.abs());
    Ok((statistic, p.min(1.0), "normal"))
}

/// McNemar's exact test of two classifiers on the same examples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct McNemar {
    /// Two-sided exact binomial p of `only_a` among the discordant pairs with probability 1/2 (scipy
    /// `binomtest(only_a, only_a + only_b, 0.5)`); 1 when there are no discordant pairs.
    pub p: f64,
    /// Examples A gets right and B wrong.
    pub only_a: u64,
    /// Examples B gets right and A wrong.
    pub only_b: u64,
    pub both: u64,
    pub neither: u64,
}

/// McNemar's exact test from per-example correctness of A and B on the same inputs, in the same order.
pub fn mcnemar(correct_a: &[bool], correct_b: &[bool]) -> Result<McNemar> {
    if correct_a.len() != correct_b.len() {
        bail!(
            "mcnemar: {} outcomes for A but {} for B; both must be on the same examples in the same order",
            correct_a.len(),
            correct_b.len()
        );
    }
    if correct_a.is_empty() {
        bail!("mcnemar: no examples");
    }
    let (mut only_a, mut only_b, mut both, mut neither) = (0u64, 0u64, 0u64, 0u64);
    for (&x, &y) in correct_a.iter().zip(correct_b) {
        match (x, y) {
            (true, false) => only_a += 1,
            (false, true) => only_b += 1,
            (true, true) => both += 1,
            (false, false) => neither += 1,
        }
    }
    let n = only_a + only_b;
    let p = if n == 0 {
        1.0
    } else {
        // The binomial with p = 1/2 is symmetric: outcomes at most as likely as k are those at most min(k, n−k)
        // away from either end.
        let bin = Binomial::new(0.5, n)?;
        (2.0 * bin.cdf(only_a.min(only_b))).min(1.0)
    };
    Ok(McNemar { p, only_a, only_b, both, neither })
}

/// A percentile bootstrap interval of a mean.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapCi {
    /// Mean of the values themselves.
    pub mean: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub level: f64,
    pub resamples: usize,
    pub seed: u64,
    pub n: usize,
}

/// The `q`-quantile of sorted `v` with linear interpolation between order statistics (numpy's default).
fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The most resamples [`bootstrap_ci`] takes (80 MB of means).
pub const MAX_RESAMPLES: usize = 10_000_000;

/// Percentile bootstrap CI of the mean of `values` (e.g. per-example correctness as 0/1, or per-example differences
/// of two networks): `resamples` resamples of n values drawn with replacement from a ChaCha8 stream seeded by
/// `seed`, and the (1 − level)/2 and (1 + level)/2 quantiles of their means (linear interpolation). The same seed
/// gives the same interval on any machine. At most [`MAX_RESAMPLES`]; Ctrl-C stops it between resamples.
pub fn bootstrap_ci(values: &[f64], level: f64, resamples: usize, seed: u64) -> Result<BootstrapCi> {
    check_level(level)?;
    check_finite("values", values)?;
    let n = values.len();
    if n == 0 {
        bail!("bootstrap_ci: no values");
    }
    if !(2..=MAX_RESAMPLES).contains(&resamples) {
        bail!(
            "bootstrap_ci: resamples must be at least 2 and at most {MAX_RESAMPLES} (each resample's mean is kept and \
             sorted; 2000 to 10000 is usual), got {resamples}"
        );
    }
    let mut r = rng::chacha(seed, 11);
    let mut means: Vec<f64> = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        crate::core::cancel::check()?; // many resamples of many values take a while: Ctrl-C stops them
        means.push((0..n).map(|_| values[rng::below(&mut r, n as u64) as usize]).sum::<f64>() / n as f64);
    }
    means.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    Ok(BootstrapCi {
        mean: values.iter().sum::<f64>() / n as f64,
        ci_low: quantile_sorted(&means, alpha),
        ci_high: quantile_sorted(&means, 1.0 - alpha),
        level,
        resamples,
        seed,
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_rank_counts_match_hand_enumeration() {
        // n = 3: subsets of {1,2,3} by sum: 0:{} 1:{1} 2:{2} 3:{3},{1,2} 4:{1,3} 5:{2,3} 6:{1,2,3}
        assert_eq!(signed_rank_counts(3), vec![1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0]);
        assert_eq!(signed_rank_counts(10).iter().sum::<f64>(), 1024.0);
    }

    #[test]
    fn wilcoxon_all_positive_five_pairs_is_one_sixteenth() {
        // W+ = 15 of 15: P(W ≥ 15) = 1/32, two-sided 1/16.
        let c = compare(&[1.0, 2.0, 3.0, 4.0, 5.0], &[0.0; 5], PairedTest::Wilcoxon, 0.95).unwrap();
        assert!((c.p - 0.0625).abs() < 1e-12);
        assert_eq!(c.statistic, 0.0);
        assert_eq!(c.method, "exact");
    }

    #[test]
    fn mcnemar_counts_and_symmetric_binomial() {
        let a = [true, true, true, false, true, false];
        let b = [false, false, false, false, true, true];
        let m = mcnemar(&a, &b).unwrap();
        assert_eq!((m.only_a, m.only_b, m.both, m.neither), (3, 1, 1, 1));
        // P(X ≤ 1 | n = 4, 1/2) = 5/16, two-sided 10/16.
        assert!((m.p - 0.625).abs() < 1e-12);
        assert_eq!(mcnemar(&[true], &[true]).unwrap().p, 1.0);
        assert!(mcnemar(&[true], &[]).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(mean_ci(&[1.0], 0.95).is_err());
        assert!(mean_ci(&[1.0, f64::NAN], 0.95).is_err());
        assert!(mean_ci(&[1.0, 2.0], 1.5).is_err());
        assert!(compare(&[1.0, 2.0], &[1.0], PairedTest::PairedT, 0.95).is_err());
        assert!(bootstrap_ci(&[], 0.95, 100, 0).is_err());
        assert!("sign".parse::<PairedTest>().is_err());
    }

    #[test]
    fn identical_arms_have_p_one() {
        let c = compare(&[0.3, 0.4], &[0.3, 0.4], PairedTest::PairedT, 0.95).unwrap();
        assert_eq!((c.delta, c.p), (0.0, 1.0));
        let c = compare(&[0.3, 0.4], &[0.3, 0.4], PairedTest::Wilcoxon, 0.95).unwrap();
        assert_eq!(c.p, 1.0);
    }

    #[test]
    fn bootstrap_is_seeded_and_near_the_normal_interval() {
        // 1000 Bernoulli outcomes with mean 0.3: the percentile interval is close to 0.3 ± 1.96·√(0.21/1000).
        let v: Vec<f64> = (0..1000).map(|i| if i % 10 < 3 { 1.0 } else { 0.0 }).collect();
        let a = bootstrap_ci(&v, 0.95, 4000, 5).unwrap();
        assert_eq!(a, bootstrap_ci(&v, 0.95, 4000, 5).unwrap());
        assert_ne!(a.ci_low, bootstrap_ci(&v, 0.95, 4000, 6).unwrap().ci_low);
        let half = 1.959964 * (0.21f64 / 1000.0).sqrt();
        assert!((a.ci_low - (0.3 - half)).abs() < 0.004, "{a:?}");
        assert!((a.ci_high - (0.3 + half)).abs() < 0.004, "{a:?}");
        let c = bootstrap_ci(&[0.5; 20], 0.9, 100, 1).unwrap();
        assert_eq!((c.ci_low, c.ci_high), (0.5, 0.5));
    }
}
