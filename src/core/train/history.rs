//! The metrics a training run records: one point per (step, split, network, metric). Plots (Figures 3–4 analogs) and
//! tables read it; the trainer appends to it and mirrors it to metrics.jsonl in the run directory.
use serde::{Deserialize, Serialize};

/// One measured value. `split` is "train" or "val"; `net` the network's label ("A", "vgg_s#1", ...); `metric` one of
/// clean_acc, adv_acc, clean_loss, adv_loss, da_loss, domain_acc, lambda, lr, total_loss (val: the early-stopping sum).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub step: usize,
    pub epoch: usize,
    pub split: String,
    pub net: String,
    pub metric: String,
    pub value: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    pub points: Vec<Point>,
}

impl History {
    pub fn push(&mut self, step: usize, epoch: usize, split: &str, net: &str, metric: &str, value: f64) {
        self.points.push(Point { step, epoch, split: split.into(), net: net.into(), metric: metric.into(), value });
    }

    /// (step, value) pairs of one series, in recorded order.
    pub fn series(&self, split: &str, net: &str, metric: &str) -> Vec<(usize, f64)> {
        self.points
            .iter()
            .filter(|p| p.split == split && p.net == net && p.metric == metric)
            .map(|p| (p.step, p.value))
            .collect()
    }

    /// Network labels in first-seen order.
    pub fn nets(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.points {
            if !out.contains(&p.net) {
                out.push(p.net.clone());
            }
        }
        out
    }

    /// Metric names in first-seen order.
    pub fn metrics(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.points {
            if !out.contains(&p.metric) {
                out.push(p.metric.clone());
            }
        }
        out
    }

    /// The last value of a series, if any.
    pub fn last(&self, split: &str, net: &str, metric: &str) -> Option<f64> {
        self.series(split, net, metric).last().map(|p| p.1)
    }
}
