//! Training: standard training and the SATM loop for K networks (sources, frozen networks, GRL domain adaptation),
//! as parts the loop in `satm` calls: `trainees`, `step`, `steer`, `sink`, `guard`, `validate`, `checkpoint`.
pub mod checkpoint;
pub mod config;
pub mod control;
pub mod grl;
pub mod guard;
pub mod history;
pub mod optim;
pub mod parallel;
pub mod satm;
pub mod sink;
pub mod steer;
pub mod step;
pub mod trainees;
pub mod validate;
pub mod watch;

pub use config::{LambdaSchedule, LrSchedule, PlannedChange, SourcePolicy, TrainConfig};
pub use history::{History, Point};
pub use satm::{Run, TrainResult, run};
