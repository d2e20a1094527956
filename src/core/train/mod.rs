//! Training: standard training and the SATM loop for K networks (sources, frozen networks, GRL domain adaptation).
pub mod history;

pub use history::{History, Point};
