//! Running the satm binary from integration tests (tests/grid.rs, tests/collect.rs).
#![allow(dead_code)] // each test binary uses a part of it
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

pub const SATM: &str = env!("CARGO_BIN_EXE_satm");

/// `satm ARGS` in `cwd`, quiet, its output collected.
pub fn satm(cwd: &Path, args: &[&str]) -> Output {
    Command::new(SATM).args(args).current_dir(cwd).env("SATM_QUIET", "1").output().expect("running satm")
}

/// Both streams of a finished command, for assertion messages.
pub fn text(o: &Output) -> String {
    format!("--- stdout\n{}\n--- stderr\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).expect("json")
}
