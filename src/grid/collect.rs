//! `satm grid collect`: every point's results.json merged into tables with mean ± std over folds.
//!
//! Points are grouped by every grid key except the fold key; within a group the fold tables are merged with
//! `Table::merge_folds` (same columns, rows and labels; rates become mean ± sample std with n − 1 in the
//! denominator, before → after cells get stds on both sides). Numeric scalars get a mean ± std table of their own. Points that are not done, or that did not record a name, are listed by name in
//! the printed output, in the table notes and in the saved files: a mean over fewer folds is never silent.
use super::GridFile;
use super::point::{PointState, marker_state};
use crate::core::eval::metrics::mean_std;
use crate::core::fsutil;
use crate::core::report::{Cell, Table};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

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
    let group_keys: Vec<&String> = grid.axes.iter().filter(|k| k.as_str() != fold_key).collect();
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
            .map(|k| p.params.iter().find(|q| &&q.key == k).map(|q| q.raw.clone()).unwrap_or_default())
            .collect();
        let gname = group_keys.iter().zip(&gvals).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
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
                problems.push(format!("{}: done but {} cannot be read: {e}", p.name, path.display()));
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
            Ok(_) => problems.push(format!("{}: {} is not a JSON object", p.name, path.display())),
            Err(e) => problems.push(format!("{}: {} is not valid JSON: {e}", p.name, path.display())),
        }
    }

    // Table::merge_folds notes how many folds each mean covers; without a fold key each row is one point.
    let what = (!has_fold).then(|| format!("one point per row (the grid has no '{fold_key}' key)"));
    let mut tables = Vec::new();
    let mut scalar_names = Vec::new();
    for name in &names {
        let sample = results.values().find_map(|m| m.get(name)).cloned().unwrap_or(serde_json::Value::Null);
        if is_table(&sample) {
            match merge_named_table(grid, name, &groups, &group_keys, &results, what.as_deref()) {
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
                            None => problems.push(format!("{}: '{name}' is not a number", grid.points[i].name)),
                        },
                        Some(None) => {
                            problems.push(format!("{}: done but did not record '{name}'", grid.points[i].name))
                        }
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
                row.push(Cell::text(name.clone()));
                if xs.is_empty() {
                    row.extend([Cell::Empty, Cell::Empty]);
                } else {
                    let (m, s) = mean_std(&xs)?;
                    row.extend([Cell::num(m, 4), Cell::num(s, 4)]);
                }
                row.push(Cell::Int { value: xs.len() as i64 });
                row.push(Cell::Int { value: members.len() as i64 });
                t.push(row)?;
            }
        }
        t.note(what.clone().unwrap_or_else(|| format!("mean ± sample std (n − 1) over {fold_key}")));
        tables.push(("scalars".to_string(), t));
    }
    if !not_done.is_empty() {
        for (_, t) in tables.iter_mut() {
            t.note(format!(
                "points not done ({}): {}",
                not_done.len(),
                not_done.iter().map(|s| s.split(": ").next().unwrap_or(s)).collect::<Vec<_>>().join("; ")
            ));
        }
    }
    Ok(Collected { tables, not_done, problems, not_merged, fold_key: fold_key.to_string() })
}

/// One recorded table across the grid: each group's folds merged, the group values as leading columns.
fn merge_named_table(
    grid: &GridFile,
    name: &str,
    groups: &[(String, Vec<String>, Vec<usize>)],
    group_keys: &[&String],
    results: &BTreeMap<usize, serde_json::Map<String, serde_json::Value>>,
    what: Option<&str>,
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
                        let t = Table::from_json(&v.to_string())
                            .with_context(|| format!("{pname}: '{name}' is not a table"))?;
                        folds.push((pname.clone(), t));
                    }
                },
            }
        }
        let label = if gname.is_empty() { "grid".to_string() } else { gname.clone() };
        if folds.is_empty() {
            let t = out.get_or_insert_with(Table::default);
            t.notes.push(format!(
                "MISSING {label}: no results ({} points not available: {})",
                absent.len(),
                absent.join("; ")
            ));
            continue;
        }
        let (pnames, tables): (Vec<String>, Vec<Table>) = folds.into_iter().unzip();
        let merged = Table::merge_folds(&tables)
            .with_context(|| format!("group {label} (table k is point k of: {})", pnames.join("; ")))?;
        let t = out.get_or_insert_with(Table::default);
        if t.columns.is_empty() {
            t.title = merged.title.clone();
            t.columns = group_keys.iter().map(|k| k.to_string()).chain(merged.columns.iter().cloned()).collect();
        } else if t.columns[group_keys.len()..] != merged.columns[..] {
            bail!("group {label} has columns {:?}, others have {:?}", merged.columns, &t.columns[group_keys.len()..]);
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
                pnames.len(),
                members.len(),
                absent.join("; ")
            ));
        }
    }
    let mut t = out.unwrap_or_default();
    if let Some(w) = what {
        t.notes.push(w.to_string());
    }
    Ok((t, problems))
}

/// A file name from a record name.
fn file_stem(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
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
        s.push_str(&format!("Points not done ({}), left out of the means:\n", c.not_done.len()));
        for p in &c.not_done {
            s.push_str(&format!("{bullet}  {p}\n"));
        }
    }
    if !c.not_merged.is_empty() {
        s.push_str(&format!("Not merged (neither numbers nor tables): {}\n", c.not_merged.join(", ")));
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
        let md = t.to_markdown();
        summary.push_str(&md);
        summary.push('\n');
        for (ext, body) in [("md", md), ("csv", t.to_csv()?), ("json", t.to_json())] {
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
