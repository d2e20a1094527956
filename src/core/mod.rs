//! The research core: devices and precision, data, models, attacks, training, evaluation, statistics, reports.
pub mod amp;
pub mod attacks;
pub mod cancel;
pub mod data;
pub mod device;
pub mod eval;
pub mod fsutil;
pub mod mem;
pub mod models;
pub mod paths;
pub mod random;
pub mod report;
pub mod stats;
pub mod tensorio;
pub mod train;
