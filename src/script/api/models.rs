//! Script API for core::models (registered by register_all).
use rhai::Engine;

pub fn register(_engine: &mut Engine) {}
