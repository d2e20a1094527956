//! Evaluation: metrics (classification rate, one-off, confusion), white/black-box evaluation, masking checks.
pub mod metrics;

pub use metrics::{Confusion, Rates, mean_std};
