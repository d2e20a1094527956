//! Script API for core::data (registered by register_all).
use rhai::Engine;

pub fn register(_engine: &mut Engine) {}
