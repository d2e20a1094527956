//! Reports: tables (comfy-table, Markdown, CSV, JSON) and PNG plots.
