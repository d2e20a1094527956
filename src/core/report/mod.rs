//! Reports: tables (comfy-table, Markdown, CSV, JSON) and PNG plots.
pub mod table;

pub use table::{Cell, Table};
