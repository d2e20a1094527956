//! A result table: typed cells (numbers stay numbers in JSON/CSV), printed with comfy-table.
use serde::{Deserialize, Serialize};
use std::fmt;

/// One table cell. Rates are stored as fractions in [0, 1] and shown as percentages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Cell {
    Text { value: String },
    Int { value: i64 },
    Num { value: f64, digits: usize },
    /// A rate (accuracy, one-off) in [0, 1], shown as `56.29%`.
    Rate { value: f64 },
    /// Mean ± standard deviation over folds (rates).
    RateMeanStd { mean: f64, std: f64, n: usize },
    /// "before → after" like the paper's tables (rates), optionally with stds over folds.
    RateChange { before: f64, after: f64, before_std: Option<f64>, after_std: Option<f64> },
    Empty,
}

impl Cell {
    pub fn text(s: impl Into<String>) -> Cell {
        Cell::Text { value: s.into() }
    }
    pub fn rate(v: f64) -> Cell {
        Cell::Rate { value: v }
    }
    pub fn num(v: f64, digits: usize) -> Cell {
        Cell::Num { value: v, digits }
    }
}

fn pct(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Text { value } => write!(f, "{value}"),
            Cell::Int { value } => write!(f, "{value}"),
            Cell::Num { value, digits } => write!(f, "{value:.digits$}"),
            Cell::Rate { value } => write!(f, "{}", pct(*value)),
            Cell::RateMeanStd { mean, std, n } => {
                if *n > 1 { write!(f, "{} ± {:.2}", pct(*mean), std * 100.0) } else { write!(f, "{}", pct(*mean)) }
            }
            Cell::RateChange { before, after, before_std, after_std } => {
                let b = match before_std {
                    Some(s) => format!("{} ± {:.2}", pct(*before), s * 100.0),
                    None => pct(*before),
                };
                let a = match after_std {
                    Some(s) => format!("{} ± {:.2}", pct(*after), s * 100.0),
                    None => pct(*after),
                };
                write!(f, "{b} → {a}")
            }
            Cell::Empty => Ok(()),
        }
    }
}

/// A titled table with named columns; every row has one cell per column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    /// Free-form notes printed under the table (attack settings, seeds, flags).
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Table {
        Table { title: title.into(), columns: columns.iter().map(|s| s.to_string()).collect(), rows: vec![], notes: vec![] }
    }

    /// Appends a row; its length must match the columns.
    pub fn push(&mut self, row: Vec<Cell>) -> anyhow::Result<()> {
        if row.len() != self.columns.len() {
            anyhow::bail!("table '{}': row has {} cells, the table has {} columns", self.title, row.len(), self.columns.len());
        }
        self.rows.push(row);
        Ok(())
    }

    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    /// The table drawn with comfy-table (what `print(t)` shows).
    pub fn render(&self) -> String {
        let mut t = comfy_table::Table::new();
        t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
        t.set_header(self.columns.clone());
        for r in &self.rows {
            t.add_row(r.iter().map(|c| c.to_string()).collect::<Vec<_>>());
        }
        let mut out = String::new();
        if !self.title.is_empty() {
            out.push_str(&self.title);
            out.push('\n');
        }
        out.push_str(&t.to_string());
        for n in &self.notes {
            out.push('\n');
            out.push_str(n);
        }
        out
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.render())
    }
}
