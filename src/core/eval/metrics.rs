//! Classification metrics computed batch by batch: a confusion matrix (`update` per batch, rates on demand), the
//! classification rate, the paper's one-off rate (Eq. 4), per-class accuracy, and mean ± std across folds.
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// A confusion matrix: `counts[c][k]` is the number of examples of true class `c` predicted as class `k`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub classes: usize,
    pub counts: Vec<Vec<u64>>,
}

/// The rates of one evaluation, as `Confusion::compute` returns them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub accuracy: f64,
    pub one_off: f64,
    pub n: u64,
}

impl Confusion {
    /// An empty `classes` × `classes` matrix.
    pub fn new(classes: usize) -> Confusion {
        Confusion { classes, counts: vec![vec![0; classes]; classes] }
    }

    /// A matrix from explicit counts (rows: true class, columns: predicted class); it must be square.
    pub fn from_counts(counts: Vec<Vec<u64>>) -> Result<Confusion> {
        let classes = counts.len();
        if let Some((i, r)) = counts.iter().enumerate().find(|(_, r)| r.len() != classes) {
            bail!("confusion matrix row {i} has {} entries, expected {classes} (the matrix must be square)", r.len());
        }
        Ok(Confusion { classes, counts })
    }

    /// Adds one example.
    pub fn add(&mut self, truth: usize, pred: usize) -> Result<()> {
        if truth >= self.classes || pred >= self.classes {
            bail!("confusion: class pair ({truth}, {pred}) is outside 0..{}", self.classes);
        }
        self.counts[truth][pred] += 1;
        Ok(())
    }

    /// Adds a batch. `pred` is either predicted classes `[B]` (integers) or logits/scores `[B, C]` (argmax is
    /// taken); `y` holds the true classes `[B]`. Counting happens on the tensors' device with one bincount, so
    /// only `C²` numbers cross to the CPU per batch.
    pub fn update(&mut self, pred: &Tensor, y: &Tensor) -> Result<()> {
        let pred = match pred.dim() {
            1 => pred.shallow_clone(),
            2 => {
                let c = pred.size()[1];
                if c != self.classes as i64 {
                    bail!("confusion: scores have {c} classes, the matrix has {}", self.classes);
                }
                pred.f_argmax(-1, false)?
            }
            d => bail!("confusion: predictions must be [B] classes or [B, C] scores, got {d} dimensions"),
        };
        if y.dim() != 1 || y.size()[0] != pred.size()[0] {
            bail!("confusion: labels {:?} do not match predictions {:?}", y.size(), pred.size());
        }
        if pred.numel() == 0 {
            return Ok(());
        }
        let c = self.classes as i64;
        let pred = pred.f_to_kind(Kind::Int64)?.f_to_device(y.device())?;
        let y = y.f_to_kind(Kind::Int64)?;
        let lo = i64::min(y.f_min()?.int64_value(&[]), pred.f_min()?.int64_value(&[]));
        let hi = i64::max(y.f_max()?.int64_value(&[]), pred.f_max()?.int64_value(&[]));
        if lo < 0 || hi >= c {
            bail!("confusion: a class index in [{lo}, {hi}] is outside 0..{c}");
        }
        // [B] -> [C*C]: cell (truth, pred) is bin truth*C + pred.
        let idx = y.f_mul_scalar(c)?.f_add(&pred)?;
        let bins = idx.f_bincount::<Tensor>(None, c * c)?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Int64)?;
        let bins = Vec::<i64>::try_from(&bins).context("confusion: reading bin counts")?;
        for (i, n) in bins.into_iter().enumerate() {
            self.counts[i / self.classes][i % self.classes] += n as u64;
        }
        Ok(())
    }

    /// Adds another matrix of the same size (e.g. from another batch worker or fold).
    pub fn merge(&mut self, other: &Confusion) -> Result<()> {
        if other.classes != self.classes {
            bail!("confusion: cannot merge a {0}×{0} matrix into a {1}×{1} one", other.classes, self.classes);
        }
        for (r, o) in self.counts.iter_mut().zip(&other.counts) {
            for (a, b) in r.iter_mut().zip(o) {
                *a += b;
            }
        }
        Ok(())
    }

    /// Number of examples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Classification rate: the trace over the total (NaN when nothing was counted).
    pub fn accuracy(&self) -> f64 {
        let hit: u64 = (0..self.classes).map(|c| self.counts[c][c]).sum();
        hit as f64 / self.total() as f64
    }

    /// One-off rate (paper Eq. 4): predictions within ±1 class of the truth over all examples; for class 0 the
    /// window is {0, 1} and for class C−1 it is {C−2, C−1}, as the equation's max/min bounds say.
    pub fn one_off(&self) -> f64 {
        let mut hit = 0u64;
        for c in 0..self.classes {
            let lo = c.saturating_sub(1);
            let hi = (c + 1).min(self.classes - 1);
            hit += self.counts[c][lo..=hi].iter().sum::<u64>();
        }
        hit as f64 / self.total() as f64
    }

    /// Accuracy of each true class (recall); `None` for a class with no examples.
    pub fn per_class(&self) -> Vec<Option<f64>> {
        self.counts
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let n: u64 = row.iter().sum();
                (n > 0).then(|| row[c] as f64 / n as f64)
            })
            .collect()
    }

    /// Accuracy, one-off rate and the number of examples.
    pub fn compute(&self) -> Rates {
        Rates { accuracy: self.accuracy(), one_off: self.one_off(), n: self.total() }
    }
}

/// Mean and sample standard deviation (n − 1 in the denominator; 0 for a single value). Errors on no values.
pub fn mean_std(values: &[f64]) -> Result<(f64, f64)> {
    let n = values.len();
    if n == 0 {
        bail!("mean ± std of no values");
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Ok((mean, 0.0));
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    Ok((mean, var.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn accuracy_and_one_off_from_hand_made_matrix() {
        // 4 classes. Row = truth, column = prediction.
        let m = Confusion::from_counts(vec![
            vec![5, 2, 1, 0], // class 0: window {0,1} -> 7 of 8
            vec![1, 4, 1, 3], // class 1: window {0,1,2} -> 6 of 9
            vec![0, 0, 3, 2], // class 2: window {1,2,3} -> 5 of 5
            vec![2, 1, 1, 6], // class 3 (edge): window {2,3} -> 7 of 10
        ])
        .unwrap();
        assert_eq!(m.total(), 32);
        assert!(close(m.accuracy(), 18.0 / 32.0));
        assert!(close(m.one_off(), 25.0 / 32.0));
        let pc = m.per_class();
        assert!(close(pc[0].unwrap(), 5.0 / 8.0));
        assert!(close(pc[3].unwrap(), 6.0 / 10.0));
    }

    #[test]
    fn one_off_edges_do_not_wrap_or_widen() {
        // Everything of class 0 predicted as the last class and vice versa: far off, so one-off = 0
        // (a wrap-around window would count them).
        let mut m = Confusion::new(5);
        for _ in 0..3 {
            m.add(0, 4).unwrap();
            m.add(4, 0).unwrap();
        }
        assert_eq!(m.one_off(), 0.0);
        // Edge classes count only their single neighbour: class 0 -> 2 is two away.
        let mut m = Confusion::new(3);
        m.add(0, 2).unwrap();
        m.add(0, 1).unwrap();
        m.add(2, 1).unwrap();
        m.add(2, 0).unwrap();
        assert!(close(m.one_off(), 0.5));
        assert!(close(m.accuracy(), 0.0));
    }

    #[test]
    fn two_classes_one_off_is_everything() {
        let m = Confusion::from_counts(vec![vec![1, 2], vec![3, 4]]).unwrap();
        assert!(close(m.one_off(), 1.0));
        assert!(close(m.accuracy(), 0.5));
    }

    #[test]
    fn update_counts_batches_from_labels_and_logits() {
        let mut m = Confusion::new(3);
        let y = Tensor::from_slice(&[0i64, 1, 2, 2]);
        m.update(&Tensor::from_slice(&[0i64, 2, 2, 1]), &y).unwrap();
        let logits = Tensor::from_slice(&[0.9f32, 0.1, 0.0, 0.0, 0.2, 0.7]).view([2, 3]);
        m.update(&logits, &Tensor::from_slice(&[1i64, 2])).unwrap();
        assert_eq!(m.counts, vec![vec![1, 0, 0], vec![1, 0, 1], vec![0, 1, 2]]);
        assert!(close(m.accuracy(), 3.0 / 6.0));
        assert!(m.update(&Tensor::from_slice(&[3i64]), &Tensor::from_slice(&[0i64])).is_err());
        assert!(m.update(&Tensor::from_slice(&[0i64, 1]), &Tensor::from_slice(&[0i64])).is_err());
    }

    #[test]
    fn merge_adds_and_checks_size() {
        let mut a = Confusion::from_counts(vec![vec![1, 0], vec![0, 1]]).unwrap();
        let b = Confusion::from_counts(vec![vec![0, 2], vec![1, 0]]).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.counts, vec![vec![1, 2], vec![1, 1]]);
        assert!(a.merge(&Confusion::new(3)).is_err());
        assert!(Confusion::from_counts(vec![vec![1, 2], vec![1]]).is_err());
    }

    #[test]
    fn mean_std_uses_sample_std() {
        let (m, s) = mean_std(&[0.2, 0.4, 0.6]).unwrap();
        assert!(close(m, 0.4));
        assert!(close(s, 0.2)); // population std would be 0.1633
        assert_eq!(mean_std(&[0.7]).unwrap(), (0.7, 0.0));
        assert!(mean_std(&[]).is_err());
    }
}
