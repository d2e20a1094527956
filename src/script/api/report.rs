//! Script API for core::report (registered by register_all).
use rhai::Engine;

pub fn register(_engine: &mut Engine) {}
