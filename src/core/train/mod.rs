//! Training: standard training and the SATM loop for K networks (sources, frozen networks, GRL domain adaptation).
pub mod checkpoint;
pub mod config;
pub mod control;
pub mod grl;
pub mod history;
pub mod optim;
pub mod satm;
pub mod watch;

pub use config::{LambdaSchedule, LrSchedule, SourcePolicy, TrainConfig};
pub use history::{History, Point};
pub use satm::{Run, TrainResult, run};
