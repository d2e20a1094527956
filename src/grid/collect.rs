//! `satm grid collect`: every point's results.json merged by record kind, over folds and seeds.
//!
//! Points are grouped by every grid key except the replicate keys (the fold key and `seed`): within a group the
//! replicates (fold × seed) are merged. What merging means is decided by what each recorded value is, never by its
//! shape or by reading rendered text: a JSON number is a scalar (mean ± std and a 95% t interval); an object with
//! `kind: "table"` is a table merged with `Table::merge_folds` (same columns, rows and labels; rates become mean ±
//! sample std with n − 1 in the denominator); records of kind `eval`, `masking`, `robust` and `confusion` (and maps
//! from names to numbers or such records) contribute their numbers (accuracy, one-off, each masking check's value and
//! the flagged count, each robustness stage) to a "records" table with mean ± std and a 95% t interval. A record
//! named `compare` (`#{pairs: [["satm", "ensemble"]], metrics: ["holdout_A"], axis: "arm", test: "paired_t", field:
//! "accuracy"}`) asks for paired comparisons: for each pair, Δ = mean(a − b) over the (fold, seed) replicates both
//! arms have, its 95% t interval and p (see [`compare_arms`]). Points that are not done, or that did not record a
//! name, are listed by name in the printed output, in the table notes and in the saved files: a mean over fewer
//! replicates is never silent.
use super::GridFile;
use super::point::{PointState, marker_state};
use crate::core::eval::metrics::mean_std;
use crate::core::fsutil;
use crate::core::report::{Cell, Table};
use crate::core::stats::{self, PairedTest};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The record kind of a recorded value (`kind` of a tagged object; "number" for a JSON number).
fn kind_of(v: &serde_json::Value) -> Option<&str> {
    if v.is_number() {
        return Some("number");
    }
    v.get("kind").and_then(|k| k.as_str())
}

/// The record kinds whose numbers go into the "records" table.
const RECORD_KINDS: [&str; 4] = ["eval", "masking", "robust", "confusion"];

/// The named numbers of one record: accuracy and one-off of an evaluation or confusion matrix, each masking check's
/// value and the number of flagged checks, each robustness stage's robust accuracy; for a map of names to numbers or
/// records, those of each entry prefixed by its name. `None` when the value is none of these.
pub fn record_numbers(v: &serde_json::Value) -> Option<Vec<(String, f64)>> {
    let num = |k: &str| v.get(k).and_then(|x| x.as_f64());
    match kind_of(v) {
        Some("number") => v.as_f64().map(|x| vec![("value".to_string(), x)]),
        Some("eval") | Some("confusion") => {
            Some(vec![("accuracy".to_string(), num("accuracy")?), ("one_off".to_string(), num("one_off")?)])
        }
        Some("masking") => {
            let checks = v.get("checks")?.as_array()?;
            let mut out: Vec<(String, f64)> = checks
                .iter()
                .filter_map(|c| Some((c.get("key")?.as_str()?.to_string(), c.get("value")?.as_f64()?)))
                .collect();
            let flagged = checks.iter().filter(|c| c.get("flagged").and_then(|f| f.as_bool()) == Some(true)).count();
            out.push(("flagged checks".to_string(), flagged as f64));
            Some(out)
        }
        Some("robust") => {
            let stages = v.get("stages")?.as_array()?;
            stages
                .iter()
                .enumerate()
                .map(|(k, s)| Some((format!("{k} {}", s.get("attack")?.as_str()?), s.get("accuracy")?.as_f64()?)))
                .collect()
        }
        Some(_) => None,
        None => {
            let m = v.as_object()?;
            if m.is_empty() {
                return None;
            }
            let mut out = vec![];
            for (k, x) in m {
                if x.is_object() && x.get("kind").is_none() {
                    return None; // nested plain maps: not a record
                }
                for (q, y) in record_numbers(x)? {
                    out.push((if q == "value" { k.clone() } else { format!("{k} {q}") }, y));
                }
            }
            Some(out)
        }
    }
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
    /// The fold key.
    pub fold_key: String,
    /// The replicate keys merged within a group: the fold key and `seed` where the grid has them.
    pub replicate_keys: Vec<String>,
}

impl Collected {
    /// Whether every point is done and every table merged over all its folds.
    pub fn complete(&self) -> bool {
        self.not_done.is_empty() && self.problems.is_empty()
    }
}

/// Merges the results of every done point of the grid.
pub fn collect(grid: &GridFile, grid_dir: &Path, fold_key: &str) -> Result<Collected> {
    let replicate_keys: Vec<String> =
        grid.axes.iter().filter(|k| k.as_str() == fold_key || k.as_str() == SEED_KEY).cloned().collect();
    let group_keys: Vec<&String> = grid.axes.iter().filter(|k| !replicate_keys.contains(k)).collect();
    let has_fold = !replicate_keys.is_empty();
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
    let what = (!has_fold).then(|| format!("one point per row (the grid has no '{fold_key}' or '{SEED_KEY}' key)"));
    let over = if replicate_keys.is_empty() { fold_key.to_string() } else { replicate_keys.join(" × ") };
    let mut tables = Vec::new();
    let mut scalar_names = Vec::new();
    let mut record_names = Vec::new();
    let mut compare_spec = None;
    for name in &names {
        let sample = results.values().find_map(|m| m.get(name)).cloned().unwrap_or(serde_json::Value::Null);
        if name == COMPARE {
            compare_spec = Some(sample);
            continue;
        }
        let kind = kind_of(&sample);
        if kind == Some("table") {
            match merge_named_table(grid, name, &groups, &group_keys, &results, what.as_deref(), &over) {
                Ok((t, mut probs)) => {
                    problems.append(&mut probs);
                    tables.push((name.clone(), t));
                }
                Err(e) => problems.push(format!("table '{name}' not merged: {e:#}")),
            }
        } else if kind == Some("number") {
            scalar_names.push(name.clone());
        } else if kind.is_some_and(|k| RECORD_KINDS.contains(&k))
            || (kind.is_none() && record_numbers(&sample).is_some())
        {
            record_names.push(name.clone());
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
        cols.extend(["name", "mean", "std", "n", "of", "95% CI low", "95% CI high"]);
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
                row.extend(ci_cells(&xs));
                t.push(row)?;
            }
        }
        t.note(what.clone().unwrap_or_else(|| format!("mean ± sample std (n − 1) and 95% t interval over {over}")));
        tables.push(("scalars".to_string(), t));
    }
    if !record_names.is_empty() {
        tables.push((
            "records".to_string(),
            records_table(grid, &record_names, &groups, &group_keys, &results, &mut problems, &over)?,
        ));
    }
    if let Some(spec) = compare_spec {
        match compare_arms(grid, &spec, &replicate_keys, &results) {
            Ok((t, mut probs)) => {
                problems.append(&mut probs);
                tables.push(("comparisons".to_string(), t));
            }
            Err(e) => problems.push(format!("'{COMPARE}' not computed: {e:#}")),
        }
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
    Ok(Collected { tables, not_done, problems, not_merged, fold_key: fold_key.to_string(), replicate_keys })
}

/// The grid axis that is a replicate axis beside the fold key.
pub const SEED_KEY: &str = "seed";
/// The record name of the comparison request.
pub const COMPARE: &str = "compare";

/// The 95% t interval of `xs` as two cells (empty with fewer than two values).
fn ci_cells(xs: &[f64]) -> [Cell; 2] {
    match stats::mean_ci(xs, 0.95) {
        Ok(c) => [Cell::num(c.ci_low, 4), Cell::num(c.ci_high, 4)],
        Err(_) => [Cell::Empty, Cell::Empty],
    }
}

/// One row per (group, record, quantity): mean ± std and the 95% t interval over the group's replicates.
fn records_table(
    grid: &GridFile,
    names: &[String],
    groups: &[(String, Vec<String>, Vec<usize>)],
    group_keys: &[&String],
    results: &BTreeMap<usize, serde_json::Map<String, serde_json::Value>>,
    problems: &mut Vec<String>,
    over: &str,
) -> Result<Table> {
    let mut cols: Vec<&str> = group_keys.iter().map(|k| k.as_str()).collect();
    cols.extend(["record", "quantity", "mean", "std", "n", "of", "95% CI low", "95% CI high"]);
    let mut t = Table::new("Recorded evaluations, masking checks and robustness stages", &cols);
    for name in names {
        for (gname, gvals, members) in groups {
            // quantity → values, in the order first seen
            let mut qs: Vec<(String, Vec<f64>)> = vec![];
            for &i in members {
                let Some(m) = results.get(&i) else { continue };
                let pname = &grid.points[i].name;
                match m.get(name).map(|v| (v, record_numbers(v))) {
                    None => problems.push(format!("{pname}: done but did not record '{name}'")),
                    Some((v, None)) => problems
                        .push(format!("{pname}: '{name}' is not a record ({})", kind_of(v).unwrap_or("untagged"))),
                    Some((_, Some(nums))) => {
                        for (q, x) in nums {
                            match qs.iter_mut().find(|e| e.0 == q) {
                                Some(e) => e.1.push(x),
                                None => qs.push((q, vec![x])),
                            }
                        }
                    }
                }
            }
            for (q, xs) in qs {
                if xs.len() < members.len() {
                    t.note(format!(
                        "INCOMPLETE {}: '{name}' {q} averages {} of {} points",
                        if gname.is_empty() { "grid" } else { gname },
                        xs.len(),
                        members.len()
                    ));
                }
                let (m, sd) = mean_std(&xs)?;
                let mut row: Vec<Cell> = gvals.iter().map(Cell::text).collect();
                row.extend([Cell::text(name.clone()), Cell::text(q), Cell::num(m, 4), Cell::num(sd, 4)]);
                row.push(Cell::Int { value: xs.len() as i64 });
                row.push(Cell::Int { value: members.len() as i64 });
                row.extend(ci_cells(&xs));
                t.push(row)?;
            }
        }
    }
    t.note(format!("mean ± sample std (n − 1) and 95% t interval over {over}; rates are fractions"));
    Ok(t)
}

/// The comparison request recorded under `compare`.
struct CompareSpec {
    pairs: Vec<(String, String)>,
    metrics: Vec<String>,
    axis: String,
    test: PairedTest,
    field: String,
}

fn parse_spec(v: &serde_json::Value) -> Result<CompareSpec> {
    let o = v.as_object().context(
        "expected a map #{pairs: [[\"satm\", \"ensemble\"]], metrics: [\"name\"], axis: \"arm\", test: \"paired_t\", field: \"accuracy\"}",
    )?;
    const VALID: [&str; 5] = ["pairs", "metrics", "axis", "test", "field"];
    if let Some(k) = o.keys().find(|k| !VALID.contains(&k.as_str())) {
        bail!("unknown key '{k}'; valid keys: {}", VALID.join(", "));
    }
    let strings = |x: &serde_json::Value| -> Option<Vec<String>> {
        x.as_array()?.iter().map(|s| s.as_str().map(str::to_string)).collect()
    };
    let pairs = o
        .get("pairs")
        .and_then(|p| p.as_array())
        .context("'pairs' must be an array of [arm, arm] pairs")?
        .iter()
        .map(|p| match strings(p).as_deref() {
            Some([a, b]) => Ok((a.clone(), b.clone())),
            _ => bail!("each pair must be two arm names, like [\"satm\", \"ensemble\"]; got {p}"),
        })
        .collect::<Result<Vec<_>>>()?;
    let metrics = o.get("metrics").and_then(strings).context("'metrics' must be an array of recorded names")?;
    if pairs.is_empty() || metrics.is_empty() {
        bail!("'pairs' and 'metrics' must each name at least one");
    }
    let text = |k: &str, d: &str| -> Result<String> {
        match o.get(k) {
            None => Ok(d.to_string()),
            Some(x) => x.as_str().map(str::to_string).with_context(|| format!("'{k}' must be a string")),
        }
    };
    let field = text("field", "accuracy")?;
    if field != "accuracy" && field != "one_off" {
        bail!("'field' must be \"accuracy\" or \"one_off\", got '{field}'");
    }
    Ok(CompareSpec { pairs, metrics, axis: text("axis", "arm")?, test: text("test", "paired_t")?.parse()?, field })
}

/// The score of one arm in a recorded value: a number; an evaluation record's or confusion's `field`; a robustness
/// record's worst-case accuracy; or, for a map from arm names to those, its entry `arm` (arms within one point).
fn score(v: &serde_json::Value, arm: Option<&str>, field: &str) -> Option<f64> {
    match kind_of(v) {
        Some("number") => v.as_f64(),
        Some("eval") | Some("confusion") => v.get(field)?.as_f64(),
        Some("robust") => v.get("stages")?.as_array()?.last()?.get("accuracy")?.as_f64(),
        Some(_) => None,
        None => score(v.as_object()?.get(arm?)?, None, field),
    }
}

/// Paired comparisons of arms over the replicates (fold, seed). Arms are either values of the grid axis
/// `spec.axis` (each point one arm, its metric a number or record), or keys of a recorded map (one point holds every
/// arm: `record("holdout_A", #{satm: r1, ensemble: r2})`). Points are grouped by the grid keys other than the
/// replicate keys and the arm axis; within a group, the scores of the two arms are paired by their (fold, seed) and
/// compared with `spec.test`: Δ = mean(a − b), the 95% t interval of the mean difference, the two-sided p and n.
/// A replicate where either arm has no score is left out and named in the problems.
fn compare_arms(
    grid: &GridFile,
    spec_v: &serde_json::Value,
    replicate_keys: &[String],
    results: &BTreeMap<usize, serde_json::Map<String, serde_json::Value>>,
) -> Result<(Table, Vec<String>)> {
    let spec = parse_spec(spec_v)?;
    let arm_axis = grid.axes.contains(&spec.axis);
    let group_keys: Vec<&String> =
        grid.axes.iter().filter(|k| !replicate_keys.contains(k) && **k != spec.axis).collect();
    let param = |i: usize, k: &str| -> String {
        grid.points[i].params.iter().find(|q| q.key == k).map(|q| q.raw.clone()).unwrap_or_default()
    };
    let mut cols: Vec<&str> = group_keys.iter().map(|k| k.as_str()).collect();
    cols.extend(["metric", "a − b", "Δ", "95% CI low", "95% CI high", "p", "n", "test"]);
    let mut t = Table::new("Paired comparisons of arms (Δ = mean of a − b over paired replicates)", &cols);
    let mut problems = vec![];
    // group values → [(replicate name, point index)]
    type Members = Vec<(String, usize)>;
    let mut groups: Vec<(Vec<String>, Members)> = vec![];
    for i in 0..grid.points.len() {
        let g: Vec<String> = group_keys.iter().map(|k| param(i, k)).collect();
        let rep = replicate_keys.iter().map(|k| format!("{k}={}", param(i, k))).collect::<Vec<_>>().join(",");
        match groups.iter_mut().find(|e| e.0 == g) {
            Some(e) => e.1.push((rep, i)),
            None => groups.push((g, vec![(rep, i)])),
        }
    }
    // A script names the pairs of its whole study; a grid that runs some of its arms compares those pairs whose arms it
    // runs, and says which it left out (a misspelled arm shows there too: it matches no grid value).
    let grid_arms: Vec<String> = (0..grid.points.len()).map(|i| param(i, &spec.axis)).collect();
    let mut not_run: Vec<String> = vec![];
    for (gvals, members) in &groups {
        let mut reps: Vec<&String> = vec![];
        for (r, _) in members {
            if !reps.contains(&r) {
                reps.push(r);
            }
        }
        for metric in &spec.metrics {
            for (a, b) in &spec.pairs {
                if arm_axis && !(grid_arms.contains(a) && grid_arms.contains(b)) {
                    let msg = format!("{a} − {b}");
                    if !not_run.contains(&msg) {
                        not_run.push(msg);
                    }
                    continue;
                }
                let score_of = |rep: &String, arm: &str| -> Option<f64> {
                    members.iter().filter(|(r, _)| r == rep).find_map(|&(_, i)| {
                        if arm_axis && param(i, &spec.axis) != arm {
                            return None;
                        }
                        let v = results.get(&i)?.get(metric)?;
                        score(v, if arm_axis { kind_of(v).is_none().then_some(arm) } else { Some(arm) }, &spec.field)
                    })
                };
                let (mut xa, mut xb) = (vec![], vec![]);
                let mut missing_msgs = vec![];
                for rep in &reps {
                    match (score_of(rep, a), score_of(rep, b)) {
                        (Some(x), Some(y)) => {
                            xa.push(x);
                            xb.push(y);
                        }
                        (x, y) => {
                            let missing: Vec<&str> =
                                [(x, a), (y, b)].iter().filter(|(v, _)| v.is_none()).map(|(_, n)| n.as_str()).collect();
                            missing_msgs.push(format!(
                                "compare {metric} {a} − {b}: {rep}{}{} has no score for {}; left out of the pairs",
                                if gvals.is_empty() { "" } else { " " },
                                gvals.join(","),
                                missing.join(" and ")
                            ));
                        }
                    }
                }
                if xa.is_empty() && !reps.is_empty() {
                    // Nothing pairs at all (an arm this grid does not run, a metric never recorded): say it once.
                    problems.push(format!(
                        "compare {metric} {a} − {b}{}: no replicate has scores for both arms (is each an arm of this grid, and '{metric}' recorded?)",
                        if gvals.is_empty() { String::new() } else { format!(" ({})", gvals.join(",")) }
                    ));
                } else {
                    problems.append(&mut missing_msgs);
                }
                let mut row: Vec<Cell> = gvals.iter().map(Cell::text).collect();
                row.push(Cell::text(metric.clone()));
                row.push(Cell::text(format!("{a} − {b}")));
                match stats::compare(&xa, &xb, spec.test, 0.95) {
                    Ok(c) => {
                        row.extend([
                            Cell::num(c.delta, 4),
                            Cell::num(c.ci_low, 4),
                            Cell::num(c.ci_high, 4),
                            Cell::num(c.p, 4),
                        ]);
                        row.push(Cell::Int { value: c.n as i64 });
                    }
                    Err(e) => {
                        if !xa.is_empty() {
                            problems.push(format!("compare {metric} {a} − {b}: {e:#}"));
                        }
                        row.extend([Cell::Empty, Cell::Empty, Cell::Empty, Cell::Empty]);
                        row.push(Cell::Int { value: xa.len() as i64 });
                    }
                }
                row.push(Cell::text(spec.test.name()));
                t.push(row)?;
            }
        }
    }
    if !not_run.is_empty() {
        t.note(format!(
            "not compared: {} (an arm of the pair is not a value of '{}' in this grid)",
            not_run.join(", "),
            spec.axis
        ));
    }
    let by = if replicate_keys.is_empty() { "point".to_string() } else { format!("({})", replicate_keys.join(", ")) };
    t.note(format!(
        "paired by {by}; 95% t interval of the mean difference; two-sided p ({}); scores: {} (rates are fractions: 0.025 = 2.5 points)",
        spec.test.name(),
        spec.field
    ));
    Ok((t, problems))
}

/// One recorded table across the grid: each group's replicates (`over`: the replicate keys, e.g. "fold × seed")
/// merged, the group values as leading columns.
fn merge_named_table(
    grid: &GridFile,
    name: &str,
    groups: &[(String, Vec<String>, Vec<usize>)],
    group_keys: &[&String],
    results: &BTreeMap<usize, serde_json::Map<String, serde_json::Value>>,
    what: Option<&str>,
    over: &str,
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
            // merge_folds counts tables as folds; with seeds among the replicates they are (fold, seed) pairs.
            let n = match n.strip_prefix("mean ± sample std (n − 1) over ").and_then(|r| r.strip_suffix(" folds")) {
                Some(k) if over != "fold" => format!("mean ± sample std (n − 1) over {k} replicates ({over})"),
                _ => n,
            };
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
        s.push_str(&format!("Not merged (not a number, table or record): {}\n", c.not_merged.join(", ")));
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
        "replicate_keys": c.replicate_keys,
        "complete": c.complete(),
    });
    let p = out.join("collected.json");
    fsutil::atomic_write(&p, serde_json::to_string_pretty(&all)?.as_bytes())?;
    written.push(p);
    Ok(written)
}
