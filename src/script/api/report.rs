//! Script API for core::report: the Table type (printing, saving) and plots.
use crate::core::report::Table;
use rhai::Engine;

/// A table as scripts see it.
pub type TableV = Table;

pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<TableV>("Table");
    engine.register_fn("to_string", |t: &mut TableV| t.render());
    engine.register_fn("to_debug", |t: &mut TableV| t.render());
}
