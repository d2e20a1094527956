//! satm — Simultaneous Adversarial Training of Multiple networks (Liao), on libtorch, scripted in Rhai.
//!
//! `core` is pure Rust + tch and knows nothing of Rhai; `script` is the only layer that imports rhai;
//! `repl` and `cli` sit on top (`cli` holds every clap type and the `satm bench` command). `grid` expands experiment
//! grids and runs them locally or as Slurm job arrays.
pub mod cli;
pub mod config;
pub mod core;
pub mod grid;
pub mod repl;
pub mod script;

/// satm's version, recorded in every run directory and grid.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
