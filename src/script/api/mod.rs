//! Everything scripts can call, registered per domain. `register_all` is the one entry point used by `satm run`,
//! `satm -e`, the REPL and the tests.
pub mod attacks;
pub mod core;
pub mod data;
pub mod eval;
pub mod live;
pub mod models;
pub mod report;
pub mod stats;
pub mod tensor;
pub mod train;

use rhai::Engine;

pub fn register_all(engine: &mut Engine) {
    core::register(engine);
    tensor::register(engine);
    data::register(engine);
    models::register(engine);
    attacks::register(engine);
    train::register(engine);
    live::register(engine);
    eval::register(engine);
    report::register(engine);
    stats::register(engine);
}
