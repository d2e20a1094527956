//! A result table: typed cells (numbers stay numbers in JSON/CSV), printed with comfy-table.
use crate::core::eval::metrics::mean_std;
use crate::core::fsutil;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// JSON has no NaN: serde_json writes it as `null`; read `null` back as NaN so every saved table loads again.
fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// One table cell. Rates are stored as fractions in [0, 1] and shown as percentages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Cell {
    Text {
        value: String,
    },
    Int {
        value: i64,
    },
    Num {
        #[serde(deserialize_with = "f64_or_nan")]
        value: f64,
        digits: usize,
    },
    /// A rate (accuracy, one-off) in [0, 1], shown as `56.29%`.
    Rate {
        #[serde(deserialize_with = "f64_or_nan")]
        value: f64,
    },
    /// Mean ± standard deviation over folds (rates).
    RateMeanStd {
        #[serde(deserialize_with = "f64_or_nan")]
        mean: f64,
        #[serde(deserialize_with = "f64_or_nan")]
        std: f64,
        n: usize,
    },
    /// "before → after" like the paper's tables (rates), optionally with stds over folds.
    RateChange {
        #[serde(deserialize_with = "f64_or_nan")]
        before: f64,
        #[serde(deserialize_with = "f64_or_nan")]
        after: f64,
        #[serde(default)]
        before_std: Option<f64>,
        #[serde(default)]
        after_std: Option<f64>,
    },
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
    pub fn int(v: i64) -> Cell {
        Cell::Int { value: v }
    }
    /// "before → after" without stds.
    pub fn change(before: f64, after: f64) -> Cell {
        Cell::RateChange { before, after, before_std: None, after_std: None }
    }
    /// Mean ± sample std of rates over folds.
    pub fn mean_std(values: &[f64]) -> Result<Cell> {
        let (mean, std) = mean_std(values)?;
        Ok(Cell::RateMeanStd { mean, std, n: values.len() })
    }

    /// The cell's kind as its JSON tag names it (`rate`, `rate_change`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Cell::Text { .. } => "text",
            Cell::Int { .. } => "int",
            Cell::Num { .. } => "num",
            Cell::Rate { .. } => "rate",
            Cell::RateMeanStd { .. } => "rate_mean_std",
            Cell::RateChange { .. } => "rate_change",
            Cell::Empty => "empty",
        }
    }

    /// The main number of a cell: a rate, a mean, the "after" of a change, a number; `None` for text and empty.
    pub fn value(&self) -> Option<f64> {
        match self {
            Cell::Int { value } => Some(*value as f64),
            Cell::Num { value, .. } | Cell::Rate { value } => Some(*value),
            Cell::RateMeanStd { mean, .. } => Some(*mean),
            Cell::RateChange { after, .. } => Some(*after),
            Cell::Text { .. } | Cell::Empty => None,
        }
    }
}

/// Full-precision number text for CSV (rates stay fractions in [0, 1]).
fn num_text(v: f64) -> String {
    if v.is_nan() { String::new() } else { format!("{v}") }
}

/// How one table column spreads over CSV columns, decided by the kinds of cell it holds.
#[derive(Clone, Copy)]
enum CsvLayout {
    Plain,
    MeanStd,
    Change { with_std: bool },
}

impl CsvLayout {
    fn of(rows: &[Vec<Cell>], col: usize) -> CsvLayout {
        let cells = rows.iter().filter_map(|r| r.get(col));
        let mut layout = CsvLayout::Plain;
        for c in cells {
            match c {
                Cell::RateChange { before_std, after_std, .. } => {
                    let s = before_std.is_some() || after_std.is_some();
                    layout = match layout {
                        CsvLayout::Change { with_std } => CsvLayout::Change { with_std: with_std || s },
                        CsvLayout::MeanStd => CsvLayout::Change { with_std: true },
                        CsvLayout::Plain => CsvLayout::Change { with_std: s },
                    };
                }
                Cell::RateMeanStd { .. } => {
                    layout = match layout {
                        CsvLayout::Plain => CsvLayout::MeanStd,
                        CsvLayout::Change { .. } => CsvLayout::Change { with_std: true },
                        l => l,
                    };
                }
                _ => {}
            }
        }
        layout
    }

    fn headers(self, name: &str) -> Vec<String> {
        match self {
            CsvLayout::Plain => vec![name.to_string()],
            CsvLayout::MeanStd => vec![name.to_string(), format!("{name} std")],
            CsvLayout::Change { with_std: false } => {
                vec![format!("{name} before"), format!("{name} after")]
            }
            CsvLayout::Change { with_std: true } => vec![
                format!("{name} before"),
                format!("{name} after"),
                format!("{name} before std"),
                format!("{name} after std"),
            ],
        }
    }

    fn values(self, cell: &Cell) -> Vec<String> {
        let width = self.headers("").len();
        let mut out = match cell {
            Cell::Text { value } => vec![value.clone()],
            Cell::Int { value } => vec![value.to_string()],
            Cell::Num { value, .. } | Cell::Rate { value } => vec![num_text(*value)],
            Cell::RateMeanStd { mean, std, .. } => match self {
                // A mean ± std inside a before → after column: mean under "before", std under "before std".
                CsvLayout::Change { .. } => vec![num_text(*mean), String::new(), num_text(*std), String::new()],
                _ => vec![num_text(*mean), num_text(*std)],
            },
            Cell::RateChange { before, after, before_std, after_std } => vec![
                num_text(*before),
                num_text(*after),
                before_std.map(num_text).unwrap_or_default(),
                after_std.map(num_text).unwrap_or_default(),
            ],
            Cell::Empty => vec![],
        };
        out.resize(width, String::new());
        out
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
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
                if *n > 1 {
                    write!(f, "{} ± {:.2}", pct(*mean), std * 100.0)
                } else {
                    write!(f, "{}", pct(*mean))
                }
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
        Table {
            title: title.into(),
            columns: columns.iter().map(|s| s.to_string()).collect(),
            rows: vec![],
            notes: vec![],
        }
    }

    /// Appends a row; its length must match the columns.
    pub fn push(&mut self, row: Vec<Cell>) -> anyhow::Result<()> {
        if row.len() != self.columns.len() {
            anyhow::bail!(
                "table '{}': row has {} cells, the table has {} columns",
                self.title,
                row.len(),
                self.columns.len()
            );
        }
        self.rows.push(row);
        Ok(())
    }

    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    /// The cell at (row, column).
    pub fn cell(&self, row: usize, col: usize) -> Option<&Cell> {
        self.rows.get(row).and_then(|r| r.get(col))
    }

    /// The index of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// GitHub-flavoured Markdown: the title in bold, the table, the notes as a list.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        if !self.title.is_empty() {
            out.push_str(&format!("**{}**\n\n", md_escape(&self.title)));
        }
        let head: Vec<String> = self.columns.iter().map(|c| md_escape(c)).collect();
        out.push_str(&format!("| {} |\n", head.join(" | ")));
        out.push_str(&format!("|{}\n", " --- |".repeat(self.columns.len())));
        for r in &self.rows {
            let cells: Vec<String> = r.iter().map(|c| md_escape(&c.to_string())).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                out.push_str(&format!("- {}\n", n.replace(['\n', '\r'], " ")));
            }
        }
        out
    }

    /// CSV with numbers as numbers: rates as fractions in [0, 1], a "before → after" column split into
    /// `<col> before` / `<col> after` (and `... std` columns when folds were merged), a mean ± std column into
    /// `<col>` / `<col> std`. Title and notes are not part of the CSV (the JSON has them).
    pub fn to_csv(&self) -> Result<String> {
        let layouts: Vec<CsvLayout> = (0..self.columns.len()).map(|j| CsvLayout::of(&self.rows, j)).collect();
        let mut w = csv::Writer::from_writer(Vec::new());
        let header: Vec<String> = self.columns.iter().zip(&layouts).flat_map(|(c, l)| l.headers(c)).collect();
        w.write_record(&header)?;
        for r in &self.rows {
            let rec: Vec<String> = r.iter().zip(&layouts).flat_map(|(c, l)| l.values(c)).collect();
            w.write_record(&rec)?;
        }
        let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("writing CSV: {e}"))?;
        Ok(String::from_utf8(bytes)?)
    }

    /// JSON: `{title, columns, rows, notes}`, each cell an object tagged by `type` with numeric fields, e.g.
    /// `{"type": "rate_change", "before": 0.3539, "after": 0.524, "before_std": null, "after_std": null}`.
    pub fn to_json(&self) -> String {
        format!("{:#}", self.to_json_value())
    }

    /// The JSON value of `to_json` (for results.json).
    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Reads a table written by `to_json`; rows must match the columns.
    pub fn from_json(text: &str) -> Result<Table> {
        let t: Table = serde_json::from_str(text).context("reading a table from JSON")?;
        if let Some((i, r)) = t.rows.iter().enumerate().find(|(_, r)| r.len() != t.columns.len()) {
            bail!("table '{}': row {i} has {} cells, the table has {} columns", t.title, r.len(), t.columns.len());
        }
        Ok(t)
    }

    /// Saves the table atomically. A path ending in `.md`, `.csv`, `.json` or `.txt` (the printed form) writes that
    /// one format; any other path is a stem and gets all three of `.md`, `.csv`, `.json` appended.
    /// Returns the files written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        let path = path.as_ref();
        if path.file_name().is_none() {
            bail!("saving table '{}': '{}' is not a file path", self.title, path.display());
        }
        let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
        let one = |p: &Path, fmt: &str| -> Result<()> {
            let text = match fmt {
                "md" => self.to_markdown(),
                "csv" => self.to_csv()?,
                "json" => self.to_json(),
                _ => format!("{}\n", self.render()),
            };
            fsutil::atomic_write(p, text.as_bytes()).with_context(|| format!("saving table '{}'", self.title))
        };
        match ext.as_deref() {
            Some(e @ ("md" | "csv" | "json" | "txt")) => {
                one(path, e)?;
                Ok(vec![path.to_path_buf()])
            }
            _ => {
                let mut out = vec![];
                for e in ["md", "csv", "json"] {
                    let mut p = path.as_os_str().to_owned();
                    p.push(format!(".{e}"));
                    let p = PathBuf::from(p);
                    one(&p, e)?;
                    out.push(p);
                }
                Ok(out)
            }
        }
    }

    /// Merges the same table computed on several folds: rates become mean ± sample std, "before → after" cells get
    /// means and stds on both sides, numbers their mean; text, ints and empty cells must agree across folds (ints that
    /// differ, like per-fold example counts, become their mean). Notes are kept once each, plus one saying how many
    /// folds were merged.
    pub fn merge_folds(tables: &[Table]) -> Result<Table> {
        let Some(first) = tables.first() else { bail!("merge_folds: no tables given") };
        for (k, t) in tables.iter().enumerate() {
            if t.columns != first.columns || t.rows.len() != first.rows.len() {
                bail!(
                    "merge_folds: table {k} has {} rows × columns {:?}, table 0 has {} rows × {:?}",
                    t.rows.len(),
                    t.columns,
                    first.rows.len(),
                    first.columns
                );
            }
        }
        let n = tables.len();
        let mut out = Table { title: first.title.clone(), columns: first.columns.clone(), rows: vec![], notes: vec![] };
        for (i, row) in first.rows.iter().enumerate() {
            let mut merged = Vec::with_capacity(row.len());
            for (j, c0) in row.iter().enumerate() {
                let cells: Vec<&Cell> = tables.iter().map(|t| &t.rows[i][j]).collect();
                let at = || format!("merge_folds: row {i}, column '{}'", first.columns[j]);
                if let Some((k, c)) = cells.iter().enumerate().find(|(_, c)| c.kind() != c0.kind()) {
                    bail!("{}: table {k} holds a {} cell, table 0 a {} cell", at(), c.kind(), c0.kind());
                }
                let nums = |f: &dyn Fn(&Cell) -> f64| -> Result<(f64, f64)> {
                    mean_std(&cells.iter().map(|c| f(c)).collect::<Vec<_>>()).with_context(at)
                };
                let m = match c0 {
                    Cell::Rate { .. } => {
                        let (mean, std) = nums(&|c| c.value().unwrap_or(f64::NAN))?;
                        Cell::RateMeanStd { mean, std, n }
                    }
                    Cell::RateChange { .. } => {
                        let get = |c: &Cell, after: bool| match c {
                            Cell::RateChange { before, after: a, .. } => {
                                if after {
                                    *a
                                } else {
                                    *before
                                }
                            }
                            _ => f64::NAN,
                        };
                        let (b, bs) = nums(&|c| get(c, false))?;
                        let (a, as_) = nums(&|c| get(c, true))?;
                        Cell::RateChange { before: b, after: a, before_std: Some(bs), after_std: Some(as_) }
                    }
                    Cell::Num { digits, .. } => {
                        Cell::Num { value: nums(&|c| c.value().unwrap_or(f64::NAN))?.0, digits: *digits }
                    }
                    Cell::RateMeanStd { .. } => {
                        bail!("{}: already a mean ± std (merge per-fold tables, not merged ones)", at())
                    }
                    Cell::Int { value } => {
                        if cells.iter().all(|c| *c == c0) {
                            Cell::Int { value: *value }
                        } else {
                            Cell::Num { value: nums(&|c| c.value().unwrap_or(f64::NAN))?.0, digits: 1 }
                        }
                    }
                    Cell::Text { .. } | Cell::Empty => {
                        if let Some((k, c)) = cells.iter().enumerate().find(|(_, c)| **c != c0) {
                            bail!("{}: table {k} has '{c}', table 0 has '{c0}'", at());
                        }
                        c0.clone()
                    }
                };
                merged.push(m);
            }
            out.rows.push(merged);
        }
        for t in tables {
            for note in &t.notes {
                if !out.notes.contains(note) {
                    out.notes.push(note.clone());
                }
            }
        }
        out.note(format!("mean ± sample std (n − 1) over {n} folds"));
        Ok(out)
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
