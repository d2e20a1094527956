//! `satm grid collect`: every point's results.json merged into tables with mean ± std over folds.
//!
//! Points are grouped by every grid key except the fold key; within a group, the fold tables must have the same
//! columns, rows and labels, and each numeric cell becomes mean ± sample standard deviation (n − 1 in the
//! denominator; 0 for a single fold). Points that are not done, or that did not record a name, are listed by name in
//! the printed output, in the table notes and in the saved files: a mean over fewer folds is never silent.
use super::GridFile;
use super::point::{PointState, marker_state};
use crate::core::fsutil;
use crate::core::report::{Cell, Table};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Mean and sample standard deviation (n − 1; 0 when n = 1).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    (mean, var.sqrt())
}

fn kind(c: &Cell) -> &'static str {
    match c {
        Cell::Text { .. } => "text",
        Cell::Int { .. } => "int",
        Cell::Num { .. } => "num",
        Cell::Rate { .. } => "rate",
        Cell::RateMeanStd { .. } => "rate_mean_std",
        Cell::RateChange { .. } => "rate_change",
        Cell::Empty => "empty",
    }
}

/// Merges one cell across folds: rates → RateMeanStd, before → after changes → RateChange with stds, numbers →
/// text "mean ± std" (Cell has no numeric mean ± std kind), labels must agree.
fn merge_cell(cells: &[&Cell]) -> Result<Cell> {
    let k = kind(cells[0]);
    if let Some(other) = cells.iter().find(|c| kind(c) != k) {
        bail!("cell kinds differ across folds ({k} and {})", kind(other));
    }
    Ok(match cells[0] {
        Cell::Text { value } => {
            if let Some(c) = cells.iter().find(|c| c != &&cells[0]) {
                bail!("labels differ across folds ('{value}' and '{c}'), so rows do not line up");
            }
            cells[0].clone()
        }
        Cell::Empty => Cell::Empty,
        Cell::Int { value } => {
            if cells.iter().all(|c| c == &cells[0]) {
                Cell::Int { value: *value }
            } else {
                let xs: Vec<f64> = cells
                    .iter()
                    .map(|c| {
                        if let Cell::Int { value } = c {
                            *value as f64
                        } else {
                            f64::NAN
                        }
                    })
                    .collect();
                let (m, s) = mean_std(&xs);
                Cell::text(format!("{m:.1} ± {s:.1}"))
            }
        }
        Cell::Num { digits, .. } => {
            let xs: Vec<f64> = cells
                .iter()
                .map(|c| {
                    if let Cell::Num { value, .. } = c {
                        *value
                    } else {
                        f64::NAN
                    }
                })
                .collect();
            let (m, s) = mean_std(&xs);
            if xs.len() == 1 {
                Cell::num(m, *digits)
            } else {
                Cell::text(format!("{m:.d$} ± {s:.d$}", d = *digits))
            }
        }
        Cell::Rate { .. } | Cell::RateMeanStd { .. } => {
            // A RateMeanStd input (already a mean within the fold) contributes its mean.
            let xs: Vec<f64> = cells
                .iter()
                .map(|c| match c {
                    Cell::Rate { value } => *value,
                    Cell::RateMeanStd { mean, .. } => *mean,
                    _ => f64::NAN,
                })
                .collect();
            let (mean, std) = mean_std(&xs);
            Cell::RateMeanStd {
                mean,
                std,
                n: xs.len(),
            }
        }
        Cell::RateChange { .. } => {
            let (mut b, mut a) = (vec![], vec![]);
            for c in cells {
                if let Cell::RateChange { before, after, .. } = c {
                    b.push(*before);
                    a.push(*after);
                }
            }
            let (bm, bs) = mean_std(&b);
            let (am, as_) = mean_std(&a);
            Cell::RateChange {
                before: bm,
                after: am,
                before_std: Some(bs),
                after_std: Some(as_),
            }
        }
    })
}

/// Merges the same table from several folds (each named by its point) into one with mean ± std cells.
pub fn merge_fold_tables(tables: &[(String, Table)]) -> Result<Table> {
    let Some((first_name, first)) = tables.first() else {
        bail!("no tables to merge")
    };
    for (name, t) in &tables[1..] {
        if t.columns != first.columns {
            bail!(
                "{name} has columns {:?}, {first_name} has {:?}",
                t.columns,
                first.columns
            );
        }
        if t.rows.len() != first.rows.len() {
            bail!(
                "{name} has {} rows, {first_name} has {}",
                t.rows.len(),
                first.rows.len()
            );
        }
    }
    let mut out = Table {
        title: first.title.clone(),
        columns: first.columns.clone(),
        rows: vec![],
        notes: vec![],
    };
    for (r, row) in first.rows.iter().enumerate() {
        let mut merged = Vec::with_capacity(row.len());
        for c in 0..row.len() {
            let mut cells = Vec::with_capacity(tables.len());
            for (name, t) in tables {
                let cell = t.rows[r]
                    .get(c)
                    .with_context(|| format!("{name}: row {r} has {} cells", t.rows[r].len()))?;
                cells.push(cell);
            }
            merged.push(
                merge_cell(&cells)
                    .with_context(|| format!("row {r}, column '{}'", first.columns[c]))?,
            );
        }
        out.rows.push(merged);
    }
    for (_, t) in tables {
        for n in &t.notes {
            if !out.notes.contains(n) {
                out.notes.push(n.clone());
            }
        }
    }
    Ok(out)
}

/// A value that looks like a table in results.json (an object with columns and rows).
fn is_table(v: &serde_json::Value) -> bool {
    v.get("columns").is_some_and(|c| c.is_array()) && v.get("rows").is_some_and(|r| r.is_array())
}

/// What `collect` produced.
#[derive(Debug, Clone, Serialize)]
pub struct Collected {
    /// (record name, merged table), tables first in the order first recorded, then "scalars".
    pub tables: Vec<(String, Table)>,
    /// Points not done, by name, with their state: "fold=2,arm=satm: failed (exit code 1: ...)".
    pub not_done: Vec<String>,
    /// Other problems: names a done point did not record, tables that could not be merged.
    pub problems: Vec<String>,
    /// Recorded values that are neither numbers nor tables (strings, bools, arrays, maps): listed, not merged.
    pub not_merged: Vec<String>,
    /// The fold key and how many points each group should average.
    pub fold_key: String,
}

impl Collected {
    /// Whether every point is done and every table merged over all its folds.
    pub fn complete(&self) -> bool {
        self.not_done.is_empty() && self.problems.is_empty()
    }
}

/// Merges the results of every done point of the grid.
pub fn collect(grid: &GridFile, grid_dir: &Path, fold_key: &str) -> Result<Collected> {
    let group_keys: Vec<&String> = grid
        .axes
        .iter()
        .filter(|k| k.as_str() != fold_key)
        .collect();
    let has_fold = grid.axes.iter().any(|k| k == fold_key);
    let mut not_done = Vec::new();
    let mut problems = Vec::new();
    let mut not_merged = Vec::new();
    // group name → (group values, [(point index, results)])
    let mut groups: Vec<(String, Vec<String>, Vec<usize>)> = Vec::new();
    let mut results: BTreeMap<usize, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
    let mut names: Vec<String> = Vec::new();
    for (i, p) in grid.points.iter().enumerate() {
        let gvals: Vec<String> = group_keys
            .iter()
            .map(|k| {
                p.params
                    .iter()
                    .find(|q| &&q.key == k)
                    .map(|q| q.raw.clone())
                    .unwrap_or_default()
            })
            .collect();
        let gname = group_keys
            .iter()
            .zip(&gvals)
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        match groups.iter_mut().find(|g| g.0 == gname) {
            Some(g) => g.2.push(i),
            None => groups.push((gname, gvals, vec![i])),
        }
        let dir = grid_dir.join(&p.dir);
        let state = marker_state(&dir);
        if state != PointState::Done {
            let d = state.detail();
            not_done.push(if d.is_empty() {
                format!("{}: {}", p.name, state.label())
            } else {
                format!("{}: {} ({d})", p.name, state.label())
            });
            continue;
        }
        let path = dir.join("results.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!(
                    "{}: done but {} cannot be read: {e}",
                    p.name,
                    path.display()
                ));
                continue;
            }
        };
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(m)) => {
                for k in m.keys() {
                    if !names.contains(k) {
                        names.push(k.clone());
                    }
                }
                results.insert(i, m);
            }
            Ok(_) => problems.push(format!(
                "{}: {} is not a JSON object",
                p.name,
                path.display()
            )),
            Err(e) => problems.push(format!(
                "{}: {} is not valid JSON: {e}",
                p.name,
                path.display()
            )),
        }
    }

    let what = if has_fold {
        format!("mean ± std over {fold_key}")
    } else {
        format!("one point per row (the grid has no '{fold_key}' key)")
    };
    let mut tables = Vec::new();
    let mut scalar_names = Vec::new();
    for name in &names {
        let sample = results
            .values()
            .find_map(|m| m.get(name))
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        if is_table(&sample) {
            match merge_named_table(grid, name, &groups, &group_keys, &results, &what) {
                Ok((t, mut probs)) => {
                    problems.append(&mut probs);
                    tables.push((name.clone(), t));
                }
                Err(e) => problems.push(format!("table '{name}' not merged: {e:#}")),
            }
        } else if sample.is_number() {
            scalar_names.push(name.clone());
        } else {
            let kind = match sample {
                serde_json::Value::String(_) => "string",
                serde_json::Value::Array(_) => "array",
                serde_json::Value::Object(_) => "map",
                serde_json::Value::Bool(_) => "bool",
                _ => "null",
            };
            not_merged.push(format!("'{name}' ({kind})"));
        }
    }
    if !scalar_names.is_empty() {
        let mut cols: Vec<&str> = group_keys.iter().map(|k| k.as_str()).collect();
        cols.extend(["name", "mean", "std", "n", "of"]);
        let mut t = Table::new("Scalar results", &cols);
        for name in &scalar_names {
            for (gname, gvals, members) in &groups {
                let mut xs = Vec::new();
                for &i in members {
                    match results.get(&i).map(|m| m.get(name)) {
                        Some(Some(v)) => match v.as_f64() {
                            Some(x) => xs.push(x),
                            None => problems
                                .push(format!("{}: '{name}' is not a number", grid.points[i].name)),
                        },
                        Some(None) => problems.push(format!(
                            "{}: done but did not record '{name}'",
                            grid.points[i].name
                        )),
                        None => {}
                    }
                }
                if xs.len() < members.len() {
                    t.note(format!(
                        "INCOMPLETE {}: '{name}' averages {} of {} points",
                        if gname.is_empty() { "grid" } else { gname },
                        xs.len(),
                        members.len()
                    ));
                }
                let mut row: Vec<Cell> = gvals.iter().map(Cell::text).collect();
                let (m, s) = mean_std(&xs);
                row.push(Cell::text(name.clone()));
                if xs.is_empty() {
                    row.extend([Cell::Empty, Cell::Empty]);
                } else {
                    row.extend([Cell::num(m, 4), Cell::num(s, 4)]);
                }
                row.push(Cell::Int {
                    value: xs.len() as i64,
                });
                row.push(Cell::Int {
                    value: members.len() as i64,
                });
                t.push(row)?;
            }
        }
        t.note(what.clone());
        tables.push(("scalars".to_string(), t));
    }
    if !not_done.is_empty() {
        for (_, t) in tables.iter_mut() {
            t.note(format!(
                "points not done ({}): {}",
                not_done.len(),
                not_done
                    .iter()
                    .map(|s| s.split(": ").next().unwrap_or(s))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
    }
    Ok(Collected {
        tables,
        not_done,
        problems,
        not_merged,
        fold_key: fold_key.to_string(),
    })
}

/// One recorded table across the grid: each group's folds merged, the group values as leading columns.
fn merge_named_table(
    grid: &GridFile,
    name: &str,
    groups: &[(String, Vec<String>, Vec<usize>)],
    group_keys: &[&String],
    results: &BTreeMap<usize, serde_json::Map<String, serde_json::Value>>,
    what: &str,
) -> Result<(Table, Vec<String>)> {
    let mut problems = Vec::new();
    let mut out: Option<Table> = None;
    for (gname, gvals, members) in groups {
        let mut folds = Vec::new();
        let mut absent = Vec::new();
        for &i in members {
            let pname = &grid.points[i].name;
            match results.get(&i) {
                None => absent.push(pname.clone()),
                Some(m) => match m.get(name) {
                    None => {
                        problems.push(format!("{pname}: done but did not record '{name}'"));
                        absent.push(pname.clone());
                    }
                    Some(v) => {
                        let t: Table = serde_json::from_value(v.clone())
                            .with_context(|| format!("{pname}: '{name}' is not a table"))?;
                        folds.push((pname.clone(), t));
                    }
                },
            }
        }
        let label = if gname.is_empty() {
            "grid".to_string()
        } else {
            gname.clone()
        };
        if folds.is_empty() {
            let t = out.get_or_insert_with(Table::default);
            t.notes.push(format!(
                "MISSING {label}: no results ({} points not available: {})",
                absent.len(),
                absent.join("; ")
            ));
            continue;
        }
        let merged = merge_fold_tables(&folds).with_context(|| format!("group {label}"))?;
        let t = out.get_or_insert_with(Table::default);
        if t.columns.is_empty() {
            t.title = merged.title.clone();
            t.columns = group_keys
                .iter()
                .map(|k| k.to_string())
                .chain(merged.columns.iter().cloned())
                .collect();
        } else if t.columns[group_keys.len()..] != merged.columns[..] {
            bail!(
                "group {label} has columns {:?}, others have {:?}",
                merged.columns,
                &t.columns[group_keys.len()..]
            );
        }
        for row in merged.rows {
            let mut r: Vec<Cell> = gvals.iter().map(Cell::text).collect();
            r.extend(row);
            t.push(r)?;
        }
        for n in merged.notes {
            if !t.notes.contains(&n) {
                t.notes.push(n);
            }
        }
        if !absent.is_empty() {
            t.notes.push(format!(
                "INCOMPLETE {label}: {} of {} points averaged; missing: {}",
                folds.len(),
                members.len(),
                absent.join("; ")
            ));
        }
    }
    let mut t = out.unwrap_or_default();
    t.notes.push(what.to_string());
    Ok((t, problems))
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The table as Markdown (title as a heading, notes as a list).
pub fn to_markdown(t: &Table) -> String {
    let mut s = String::new();
    if !t.title.is_empty() {
        s.push_str(&format!("### {}\n\n", md_escape(&t.title)));
    }
    if !t.columns.is_empty() {
        s.push_str(&format!(
            "| {} |\n",
            t.columns
                .iter()
                .map(|c| md_escape(c))
                .collect::<Vec<_>>()
                .join(" | ")
        ));
        s.push_str(&format!("|{}\n", "---|".repeat(t.columns.len())));
        for r in &t.rows {
            s.push_str(&format!(
                "| {} |\n",
                r.iter()
                    .map(|c| md_escape(&c.to_string()))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
    }
    if !t.notes.is_empty() {
        s.push('\n');
        for n in &t.notes {
            s.push_str(&format!("- {}\n", md_escape(n)));
        }
    }
    s
}

/// The CSV header names and values for one cell: numbers stay numbers (rates as fractions), mean ± std and
/// before → after cells spread over several columns.
fn csv_cells(col: &str, c: &Cell, k: &str) -> (Vec<String>, Vec<String>) {
    let f = |x: f64| format!("{x}");
    match (k, c) {
        ("rate_mean_std", Cell::RateMeanStd { mean, std, n }) => (
            vec![col.into(), format!("{col} std"), format!("{col} n")],
            vec![f(*mean), f(*std), n.to_string()],
        ),
        ("rate_mean_std", _) => (
            vec![col.into(), format!("{col} std"), format!("{col} n")],
            vec![String::new(); 3],
        ),
        (
            "rate_change",
            Cell::RateChange {
                before,
                after,
                before_std,
                after_std,
            },
        ) => (
            vec![
                format!("{col} before"),
                format!("{col} after"),
                format!("{col} before std"),
                format!("{col} after std"),
            ],
            vec![
                f(*before),
                f(*after),
                before_std.map(f).unwrap_or_default(),
                after_std.map(f).unwrap_or_default(),
            ],
        ),
        ("rate_change", _) => (
            vec![
                format!("{col} before"),
                format!("{col} after"),
                format!("{col} before std"),
                format!("{col} after std"),
            ],
            vec![String::new(); 4],
        ),
        (_, Cell::Rate { value }) => (vec![col.into()], vec![f(*value)]),
        (_, Cell::Num { value, .. }) => (vec![col.into()], vec![f(*value)]),
        (_, Cell::Int { value }) => (vec![col.into()], vec![value.to_string()]),
        (_, Cell::Empty) => (vec![col.into()], vec![String::new()]),
        (_, other) => (vec![col.into()], vec![other.to_string()]),
    }
}

/// The table as CSV (notes are left to the Markdown and JSON files).
pub fn to_csv(t: &Table) -> Result<String> {
    // A column whose cells are all mean ± std (or all before → after) is spread; a mixed column is written as text.
    let kinds: Vec<&str> = (0..t.columns.len())
        .map(|c| {
            let ks: Vec<&str> = t
                .rows
                .iter()
                .filter_map(|r| r.get(c))
                .filter(|x| **x != Cell::Empty)
                .map(kind)
                .collect();
            match ks.first() {
                Some(k)
                    if ks.iter().all(|x| x == k)
                        && (*k == "rate_mean_std" || *k == "rate_change") =>
                {
                    *k
                }
                _ => "plain",
            }
        })
        .collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    let header: Vec<String> = t
        .columns
        .iter()
        .zip(&kinds)
        .flat_map(|(c, k)| csv_cells(c, &Cell::Empty, k).0)
        .collect();
    w.write_record(&header)?;
    for r in &t.rows {
        let vals: Vec<String> = t
            .columns
            .iter()
            .zip(&kinds)
            .zip(r)
            .flat_map(|((col, k), c)| csv_cells(col, c, k).1)
            .collect();
        w.write_record(&vals)?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A file name from a record name.
fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "table".into() } else { s }
}

/// The whole collection as text: every table, then the points not done and the problems.
pub fn render_text(c: &Collected) -> String {
    let mut s = String::new();
    for (name, t) in &c.tables {
        s.push_str(&format!("[{name}]\n{}\n\n", t.render()));
    }
    s.push_str(&listing(c, ""));
    s
}

fn listing(c: &Collected, bullet: &str) -> String {
    let mut s = String::new();
    if c.not_done.is_empty() {
        s.push_str("All points done.\n");
    } else {
        s.push_str(&format!(
            "Points not done ({}), left out of the means:\n",
            c.not_done.len()
        ));
        for p in &c.not_done {
            s.push_str(&format!("{bullet}  {p}\n"));
        }
    }
    if !c.not_merged.is_empty() {
        s.push_str(&format!(
            "Not merged (neither numbers nor tables): {}\n",
            c.not_merged.join(", ")
        ));
    }
    if !c.problems.is_empty() {
        s.push_str(&format!("Problems ({}):\n", c.problems.len()));
        for p in &c.problems {
            s.push_str(&format!("{bullet}  {p}\n"));
        }
    }
    s
}

/// Saves every table as NAME.md, NAME.csv and NAME.json, plus summary.md and collected.json (all tables and the
/// lists of missing points and problems) into `out`, each written atomically.
pub fn save(c: &Collected, out: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::new();
    let mut summary = String::from("# Collected results\n\n");
    for (name, t) in &c.tables {
        let stem = file_stem(name);
        let md = to_markdown(t);
        summary.push_str(&md);
        summary.push('\n');
        for (ext, body) in [
            ("md", md),
            ("csv", to_csv(t)?),
            ("json", serde_json::to_string_pretty(t)?),
        ] {
            let p = out.join(format!("{stem}.{ext}"));
            fsutil::atomic_write(&p, body.as_bytes())?;
            written.push(p);
        }
    }
    summary.push_str("## Completeness\n\n");
    summary.push_str(&listing(c, "-"));
    let p = out.join("summary.md");
    fsutil::atomic_write(&p, summary.as_bytes())?;
    written.push(p);
    let all = serde_json::json!({
        "tables": c.tables.iter().map(|(n, t)| (n.clone(), serde_json::to_value(t).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
        "not_done": c.not_done,
        "problems": c.problems,
        "not_merged": c.not_merged,
        "fold_key": c.fold_key,
        "complete": c.complete(),
    });
    let p = out.join("collected.json");
    fsutil::atomic_write(&p, serde_json::to_string_pretty(&all)?.as_bytes())?;
    written.push(p);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rate: f64, label: &str) -> Table {
        let mut t = Table::new("acc", &["net", "Cr", "bb"]);
        t.push(vec![
            Cell::text(label),
            Cell::rate(rate),
            Cell::RateChange {
                before: rate,
                after: rate + 0.1,
                before_std: None,
                after_std: None,
            },
        ])
        .unwrap();
        t
    }

    #[test]
    fn sample_std() {
        let (m, s) = mean_std(&[0.1, 0.2, 0.3, 0.4]);
        assert!((m - 0.25).abs() < 1e-12);
        // sqrt(((0.15^2 + 0.05^2) * 2) / 3)
        assert!((s - (0.05f64 / 3.0).sqrt()).abs() < 1e-12, "{s}");
        assert_eq!(mean_std(&[0.7]), (0.7, 0.0));
    }

    #[test]
    fn merges_rates_and_changes() {
        let m =
            merge_fold_tables(&[("f0".into(), t(0.2, "A")), ("f1".into(), t(0.4, "A"))]).unwrap();
        match &m.rows[0][1] {
            Cell::RateMeanStd { mean, std, n } => {
                assert!((mean - 0.3).abs() < 1e-12);
                assert!((std - 0.02f64.sqrt()).abs() < 1e-12);
                assert_eq!(*n, 2);
            }
            c => panic!("expected RateMeanStd, got {c:?}"),
        }
        match &m.rows[0][2] {
            Cell::RateChange {
                before,
                after,
                before_std: Some(bs),
                after_std: Some(as_),
            } => {
                assert!((before - 0.3).abs() < 1e-12 && (after - 0.4).abs() < 1e-12);
                assert!((bs - as_).abs() < 1e-12 && *bs > 0.14);
            }
            c => panic!("expected RateChange with stds, got {c:?}"),
        }
    }

    #[test]
    fn misaligned_rows_are_an_error() {
        assert!(
            merge_fold_tables(&[("f0".into(), t(0.2, "A")), ("f1".into(), t(0.4, "B"))]).is_err()
        );
        let mut other = t(0.1, "A");
        other.columns[1] = "one-off".into();
        assert!(merge_fold_tables(&[("f0".into(), t(0.2, "A")), ("f1".into(), other)]).is_err());
    }

    #[test]
    fn csv_spreads_mean_and_std() {
        let m =
            merge_fold_tables(&[("f0".into(), t(0.2, "A")), ("f1".into(), t(0.4, "A"))]).unwrap();
        let csv = to_csv(&m).unwrap();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next().unwrap(),
            "net,Cr,Cr std,Cr n,bb before,bb after,bb before std,bb after std"
        );
        assert!(lines.next().unwrap().starts_with("A,0.3"));
    }
}
