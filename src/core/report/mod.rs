//! Reports: tables (comfy-table, Markdown, CSV, JSON) and PNG plots.
pub mod plot;
pub mod table;

pub use plot::{CurveOpts, PlotOpts, Series, plot_confusion, plot_curves, plot_eps};
pub use table::{Cell, Table};
