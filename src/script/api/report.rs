//! Script API for core::report: the Table type (building, printing, saving, merging folds), the History type of a
//! training run, and PNG plots.
use crate::core::eval::{Confusion, mean_std};
use crate::core::report::{self, Cell, CurveOpts, PlotOpts, Series, Table};
use crate::core::train::History;
use crate::script::api::core::record_json;
use crate::script::convert::{Opts, RResult, friendly_type, guard, json_to_dynamic, str_array, to_f64};
use crate::script::docs::doc;
use anyhow::{Context, anyhow, bail};
use rhai::{Array, Dynamic, Engine, Map};
use std::path::Path;

/// A table as scripts see it.
pub type TableV = Table;

/// A script value as a table cell: `()` → empty, string → text, int → integer, float → number (4 digits),
/// `rate(x)`/`#{rate: x}` → rate, `change(b, a)`/`#{before, after}` → "before → after", `#{mean, std}` →
/// mean ± std, an `evaluate` result (a map with `accuracy`) → its accuracy as a rate, a map with `type` → that
/// cell as the table JSON writes it.
pub fn dynamic_to_cell(v: &Dynamic) -> anyhow::Result<Cell> {
    if v.is_unit() {
        return Ok(Cell::Empty);
    }
    if v.is_string() {
        return Ok(Cell::text(v.to_string()));
    }
    if let Ok(i) = v.as_int() {
        return Ok(Cell::int(i));
    }
    if let Ok(f) = v.as_float() {
        return Ok(Cell::num(f, 4));
    }
    if let Some(m) = v.read_lock::<Map>() {
        let num = |k: &str| -> anyhow::Result<Option<f64>> {
            match m.get(k) {
                None => Ok(None),
                Some(x) if x.is_unit() => Ok(None),
                Some(x) => to_f64(x)
                    .map(Some)
                    .ok_or_else(|| anyhow!("cell key '{k}' must be a number, got {}", friendly_type(x.type_name()))),
            }
        };
        if m.contains_key("type") {
            let json = crate::script::convert::dynamic_to_json(v);
            return serde_json::from_value::<Cell>(json).context("reading a cell map with a 'type' key");
        }
        if let (Some(before), Some(after)) = (num("before")?, num("after")?) {
            return Ok(Cell::RateChange {
                before,
                after,
                before_std: num("before_std")?,
                after_std: num("after_std")?,
            });
        }
        if let (Some(mean), Some(std)) = (num("mean")?, num("std")?) {
            let n = num("n")?.map(|n| n as usize).unwrap_or(2);
            return Ok(Cell::RateMeanStd { mean, std, n });
        }
        if let Some(r) = num("rate")? {
            return Ok(Cell::rate(r));
        }
        if let Some(r) = num("accuracy")? {
            return Ok(Cell::rate(r));
        }
        let mut keys: Vec<String> = m.keys().map(|k| k.to_string()).collect();
        keys.sort();
        bail!(
            "a map cell needs 'rate', 'before'+'after', 'mean'+'std', 'accuracy' or 'type' keys; got keys {}",
            keys.join(", ")
        );
    }
    bail!("cannot put a {} in a table cell", friendly_type(v.type_name()))
}

/// A table cell as a script value (a map tagged by `type`, like the table JSON).
fn cell_to_dynamic(c: &Cell) -> Dynamic {
    json_to_dynamic(&serde_json::to_value(c).unwrap_or(serde_json::Value::Null))
}

/// Reads a confusion matrix from a Confusion, an `evaluate` result (its `confusion` key) or an array of integer rows.
pub fn confusion_from_dynamic(v: &Dynamic) -> anyhow::Result<Confusion> {
    if let Some(c) = v.read_lock::<Confusion>() {
        return Ok(c.clone());
    }
    let rows = if let Some(m) = v.read_lock::<Map>() {
        m.get("confusion").cloned().context("the map has no 'confusion' key (pass an evaluate result)")?
    } else {
        v.clone()
    };
    let rows = rows
        .into_array()
        .map_err(|t| anyhow!("a confusion matrix must be an array of rows, got {}", friendly_type(t)))?;
    let mut counts = Vec::with_capacity(rows.len());
    for (i, r) in rows.into_iter().enumerate() {
        let r = r.into_array().map_err(|t| anyhow!("confusion row {i} must be an array, got {}", friendly_type(t)))?;
        let row = r
            .iter()
            .map(|x| x.as_int().ok().filter(|&n| n >= 0).map(|n| n as u64))
            .collect::<Option<Vec<u64>>>()
            .with_context(|| format!("confusion row {i} must hold non-negative integers"))?;
        counts.push(row);
    }
    Confusion::from_counts(counts)
}

/// The wide form of a history: one row per (split, net, step), one column per metric; rates as percentages.
pub fn history_table(h: &History) -> Table {
    let metrics = h.metrics();
    let mut cols = vec!["split", "net", "step", "epoch"];
    cols.extend(metrics.iter().map(|s| s.as_str()));
    let mut t = Table::new("training history", &cols);
    let mut keys: Vec<(String, String, usize, usize)> = vec![];
    for p in &h.points {
        let k = (p.split.clone(), p.net.clone(), p.step, p.epoch);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (split, net, step, epoch) in keys {
        let mut row = vec![Cell::text(&split), Cell::text(&net), Cell::int(step as i64), Cell::int(epoch as i64)];
        for m in &metrics {
            let v =
                h.points.iter().rev().find(|p| p.split == split && p.net == net && p.step == step && &p.metric == m);
            row.push(match v {
                None => Cell::Empty,
                Some(p) if m.ends_with("acc") => Cell::rate(p.value),
                Some(p) => Cell::num(p.value, 4),
            });
        }
        t.rows.push(row);
    }
    t
}

fn plot_opts(o: &Opts, w: u32, h: u32) -> RResult<PlotOpts> {
    // A value past u32 would wrap to a small, valid-looking size; report it as given.
    let side = |key: &str, default: u32| -> RResult<u32> {
        let v = o.usize_or(key, default as usize)?;
        u32::try_from(v).map_err(|_| {
            crate::script::convert::script_err(format!("{}: option '{key}' is {v} pixels; at most 8192", o.func()))
        })
    };
    Ok(PlotOpts { width: side("width", w)?, height: side("height", h)?, title: o.str_or("title", "")? })
}

/// A rate for a table cell: a finite fraction in [0, 1] (a NaN would print as an empty cell and hide a bug upstream).
fn fraction(x: f64) -> anyhow::Result<f64> {
    if !(0.0..=1.0).contains(&x) {
        bail!("a rate must be a fraction in [0, 1], got {x}");
    }
    Ok(x)
}

fn strings(o: &Opts, key: &str) -> RResult<Vec<String>> {
    o.array_or_empty(key)?.into_iter().map(|v| Ok(v.to_string())).collect()
}

fn history_of(v: &Dynamic) -> anyhow::Result<History> {
    if let Some(h) = v.clone().try_cast::<History>() {
        return Ok(h);
    }
    if let Some(r) = v.clone().try_cast::<crate::script::api::train::TrainResultV>() {
        return Ok(r.0.history.clone());
    }
    if let Some(h) = v.read_lock::<Map>().and_then(|m| m.get("history").and_then(|h| h.clone().try_cast::<History>())) {
        return Ok(h);
    }
    bail!("expected a History or a training result with a 'history' key, got {}", friendly_type(v.type_name()))
}

/// Series for plot_eps from script values: an `eps_sweep` result (`#{model, eps, accuracy}`), an array of them, or a
/// map label → (sweep result | array of [eps, rate] pairs).
fn eps_series(v: &Dynamic) -> anyhow::Result<Vec<Series>> {
    fn sweep(label: &str, m: &Map) -> anyhow::Result<Series> {
        let nums = |k: &str| -> anyhow::Result<Vec<f64>> {
            let a = m.get(k).cloned().with_context(|| format!("sweep '{label}' has no '{k}'"))?;
            let a = a
                .into_array()
                .map_err(|t| anyhow!("sweep '{label}': '{k}' must be an array, got {}", friendly_type(t)))?;
            a.iter().map(|x| to_f64(x).with_context(|| format!("sweep '{label}': '{k}' must hold numbers"))).collect()
        };
        let (e, a) = (nums("eps")?, nums("accuracy")?);
        if e.len() != a.len() {
            bail!("sweep '{label}': {} eps values but {} accuracies", e.len(), a.len());
        }
        let label = m.get("model").map(|x| x.to_string()).unwrap_or_else(|| label.to_string());
        Ok((label, e.into_iter().zip(a).collect()))
    }
    fn pairs(label: &str, a: Array) -> anyhow::Result<Series> {
        let pts = a
            .into_iter()
            .map(|p| {
                let p = p.into_array().ok().filter(|p| p.len() == 2);
                p.and_then(|p| Some((to_f64(&p[0])?, to_f64(&p[1])?)))
            })
            .collect::<Option<Vec<_>>>()
            .with_context(|| format!("series '{label}' must be an array of [eps, rate] pairs"))?;
        Ok((label.to_string(), pts))
    }
    if let Some(m) = v.read_lock::<Map>() {
        if m.contains_key("eps") {
            return Ok(vec![sweep("series", &m)?]);
        }
        let mut out = vec![];
        for (k, x) in m.iter() {
            if let Some(sm) = x.read_lock::<Map>() {
                let (_, pts) = sweep(k, &sm)?;
                out.push((k.to_string(), pts));
            } else {
                let a = x
                    .clone()
                    .into_array()
                    .map_err(|t| anyhow!("series '{k}' must be a sweep map or an array, got {}", friendly_type(t)))?;
                out.push(pairs(k, a)?);
            }
        }
        return Ok(out);
    }
    if let Ok(a) = v.clone().into_array() {
        return a
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let m = x.read_lock::<Map>().with_context(|| format!("series {i} must be an eps_sweep result map"))?;
                sweep(&format!("series {i}"), &m)
            })
            .collect();
    }
    bail!(
        "plot_eps: expected an eps_sweep result, an array of them, or a map label -> points; got {}",
        friendly_type(v.type_name())
    )
}

fn do_plot_curves(v: Dynamic, path: &str, o: Map) -> RResult<()> {
    let o = Opts::new("plot_curves", o, &["width", "height", "title", "metrics", "nets", "splits"])?;
    let mut c = CurveOpts::default();
    c.plot = plot_opts(&o, c.plot.width, c.plot.height)?;
    if o.has("metrics") {
        c.metrics = strings(&o, "metrics")?;
    }
    c.nets = strings(&o, "nets")?;
    if o.has("splits") {
        c.splits = strings(&o, "splits")?;
    }
    guard("plot_curves", || report::plot_curves(&history_of(&v)?, Path::new(path), &c))
}

fn do_plot_eps(v: Dynamic, path: &str, o: Map) -> RResult<()> {
    let o = Opts::new("plot_eps", o, &["width", "height", "title"])?;
    let p = plot_opts(&o, 900, 600)?;
    guard("plot_eps", || report::plot_eps(&eps_series(&v)?, Path::new(path), &p))
}

fn do_plot_confusion(v: Dynamic, path: &str, o: Map) -> RResult<()> {
    let o = Opts::new("plot_confusion", o, &["width", "height", "title", "labels"])?;
    let p = plot_opts(&o, 640, 680)?;
    let labels = strings(&o, "labels")?;
    guard("plot_confusion", || report::plot_confusion(&confusion_from_dynamic(&v)?, &labels, Path::new(path), &p))
}

fn saved(paths: Vec<std::path::PathBuf>) -> Array {
    str_array(&paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>())
}

pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<TableV>("Table");
    engine.register_fn("to_string", |t: &mut TableV| t.render());
    engine.register_fn("to_debug", |t: &mut TableV| t.render());
    engine.register_type_with_name::<History>("History");
    engine.register_fn("to_string", |h: &mut History| {
        format!("History[{} points; nets {:?}; metrics {:?}]", h.points.len(), h.nets(), h.metrics())
    });
    engine.register_fn("to_debug", |h: &mut History| format!("History[{} points]", h.points.len()));

    // --- building tables ---
    doc(
        "table",
        &["title: &str", "columns: Array"],
        "Table",
        "A new empty table with these column names; fill it with t.add_row([...]).",
    )
    .register_into_engine(engine, |title: &str, cols: Array| -> Table {
        Table {
            title: title.to_string(),
            columns: cols.iter().map(|c| c.to_string()).collect(),
            rows: vec![],
            notes: vec![],
        }
    });
    doc(
        "add_row",
        &["t: Table", "row: Array"],
        "()",
        "Appends a row (one value per column): () empty, string text, int, float (4 digits), rate(x), change(before, after), #{mean, std}, or an evaluate() result (its accuracy as a rate).",
    )
    .register_into_engine(engine, |t: &mut TableV, row: Array| -> RResult<()> {
        guard("add_row", || {
            let cells = row
                .iter()
                .enumerate()
                .map(|(i, v)| dynamic_to_cell(v).with_context(|| format!("cell {i}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            t.push(cells)
        })
    });
    doc("note", &["t: Table", "text: &str"], "()", "Adds a note printed under the table (settings, seeds, flags).")
        .register_into_engine(engine, |t: &mut TableV, s: &str| t.note(s));
    doc("rate", &["x: f64"], "Map", "A rate cell (a fraction in [0, 1], shown as a percentage) for add_row.")
        .register_into_engine(engine, |x: f64| -> RResult<Map> {
            guard("rate", || Ok(cell_to_dynamic(&Cell::rate(fraction(x)?)).cast::<Map>()))
        });
    doc(
        "change",
        &["before: ?", "after: ?"],
        "Map",
        "A \"before → after\" cell for add_row; each side a rate or an evaluate() result (its accuracy).",
    )
    .register_into_engine(engine, |b: Dynamic, a: Dynamic| -> RResult<Map> {
        guard("change", || {
            let side = |v: &Dynamic| -> anyhow::Result<f64> {
                let x = dynamic_to_cell(v)?
                    .value()
                    .context("each side of a change must be a number or an evaluate result")?;
                fraction(x)
            };
            Ok(cell_to_dynamic(&Cell::change(side(&b)?, side(&a)?)).cast::<Map>())
        })
    });

    // --- reading tables ---
    engine.register_get("title", |t: &mut TableV| t.title.clone());
    engine.register_get("columns", |t: &mut TableV| str_array(&t.columns));
    engine.register_get("notes", |t: &mut TableV| str_array(&t.notes));
    doc("rows", &["t: Table"], "int", "Number of rows.")
        .register_into_engine(engine, |t: &mut TableV| t.rows.len() as i64);
    doc(
        "cell",
        &["t: Table", "row: int", "col: ?"],
        "Map",
        "The cell at (row, column index or name), as a map tagged by its type (numbers as numbers).",
    )
    .register_into_engine(engine, |t: &mut TableV, row: i64, col: Dynamic| -> RResult<Map> {
        guard("cell", || {
            let j = match col.as_int() {
                Ok(j) => usize::try_from(j).ok(),
                Err(_) => t.column(&col.to_string()),
            }
            .with_context(|| format!("no column {col} in {:?}", t.columns))?;
            let c = usize::try_from(row)
                .ok()
                .and_then(|i| t.cell(i, j))
                .with_context(|| format!("no cell ({row}, {col})"))?;
            Ok(cell_to_dynamic(c).cast::<Map>())
        })
    });
    doc("to_markdown", &["t: Table"], "String", "The table as GitHub Markdown (title, table, notes as a list).")
        .register_into_engine(engine, |t: &mut TableV| t.to_markdown());
    doc(
        "to_csv",
        &["t: Table"],
        "String",
        "The table as CSV: rates as fractions, before → after split into '<col> before' / '<col> after'.",
    )
    .register_into_engine(engine, |t: &mut TableV| -> RResult<String> { guard("to_csv", || t.to_csv()) });
    doc(
        "to_json",
        &["t: Table"],
        "String",
        "The table as JSON (cells tagged by type, values as numbers); load_table reads it back.",
    )
    .register_into_engine(engine, |t: &mut TableV| t.to_json());
    doc(
        "save",
        &["t: Table", "path: &str"],
        "Array",
        "Saves atomically: 'x.md', 'x.csv', 'x.json' or 'x.txt' write that format; any other path is a stem and gets .md, .csv and .json. Relative paths are relative to the current directory (use out_path(\"tables/x\") for the run directory). Returns the files written.",
    )
    .register_into_engine(engine, |t: &mut TableV, path: &str| -> RResult<Array> { guard("save", || Ok(saved(t.save(path)?))) });
    doc("load_table", &["path: &str"], "Table", "Reads a table saved as JSON.").register_into_engine(
        engine,
        |path: &str| -> RResult<Table> {
            guard("load_table", || {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
                Table::from_json(&text).with_context(|| format!("in {path}"))
            })
        },
    );
    doc(
        "merge_folds",
        &["tables: Array"],
        "Table",
        "The same table from several folds merged: rates become mean ± sample std, before → after cells get stds on both sides.",
    )
    .register_into_engine(engine, |ts: Array| -> RResult<Table> {
        guard("merge_folds", || {
            let ts = ts
                .into_iter()
                .enumerate()
                .map(|(i, v)| v.try_cast::<Table>().with_context(|| format!("tables[{i}] is not a Table")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Table::merge_folds(&ts)
        })
    });
    doc(
        "record",
        &["name: &str", "t: Table"],
        "()",
        "Stores the table's JSON under `name` in the run directory's results.json.",
    )
    .register_into_engine(engine, |name: &str, t: TableV| -> RResult<()> {
        guard("record", || record_json(name, crate::script::convert::table_json(&t)))
    });
    doc("mean_std", &["values: Array"], "Map", "#{mean, std, n} of numbers (sample std with n − 1; 0 for one value).")
        .register_into_engine(engine, |a: Array| -> RResult<Map> {
            guard("mean_std", || {
                let v = a
                    .iter()
                    .map(|x| to_f64(x).context("values must be numbers"))
                    .collect::<anyhow::Result<Vec<f64>>>()?;
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    bail!("values[{i}] is {}; every value must be a finite number", v[i]);
                }
                let (mean, std) = mean_std(&v)?;
                let mut m = Map::new();
                m.insert("mean".into(), Dynamic::from_float(mean));
                m.insert("std".into(), Dynamic::from_float(std));
                m.insert("n".into(), Dynamic::from_int(v.len() as i64));
                Ok(m)
            })
        });

    // --- History ---
    doc(
        "to_table",
        &["h: History"],
        "Table",
        "The history as a table: one row per (split, network, step), one column per metric.",
    )
    .register_into_engine(engine, |h: &mut History| history_table(h));
    engine.register_get("nets", |h: &mut History| str_array(&h.nets()));
    engine.register_get("metrics", |h: &mut History| str_array(&h.metrics()));
    doc(
        "series",
        &["h: History", "split: &str", "net: &str", "metric: &str"],
        "Array",
        "[[step, value], ...] of one series.",
    )
    .register_into_engine(engine, |h: &mut History, split: &str, net: &str, metric: &str| -> Array {
        h.series(split, net, metric)
            .into_iter()
            .map(|(s, v)| Dynamic::from_array(vec![Dynamic::from_int(s as i64), Dynamic::from_float(v)]))
            .collect()
    });
    doc(
        "last",
        &["h: History", "split: &str", "net: &str", "metric: &str"],
        "?",
        "The last value of a series, or () if it has none.",
    )
    .register_into_engine(engine, |h: &mut History, split: &str, net: &str, metric: &str| -> Dynamic {
        h.last(split, net, metric).map(Dynamic::from_float).unwrap_or(Dynamic::UNIT)
    });

    // --- plots ---
    let curves_doc = "Training/validation curves as a PNG (Figures 3–4): one panel per split (train, val), one colour per network, solid clean_acc and dashed adv_acc. `h` is a History or a training result with a `history` key. Options: width, height, title, metrics (default [\"clean_acc\", \"adv_acc\"]), nets, splits.";
    doc("plot_curves", &["h: ?", "path: &str"], "()", curves_doc)
        .register_into_engine(engine, |v: Dynamic, path: &str| do_plot_curves(v, path, Map::new()));
    doc("plot_curves", &["h: ?", "path: &str", "opts: Map"], "()", curves_doc)
        .register_into_engine(engine, do_plot_curves);
    let eps_doc = "Accuracy vs ε as a PNG: `series` is an eps_sweep result, an array of them, or a map label -> (sweep result | [[eps, rate], ...]). Options: width, height, title.";
    doc("plot_eps", &["series: ?", "path: &str"], "()", eps_doc)
        .register_into_engine(engine, |v: Dynamic, path: &str| do_plot_eps(v, path, Map::new()));
    doc("plot_eps", &["series: ?", "path: &str", "opts: Map"], "()", eps_doc).register_into_engine(engine, do_plot_eps);
    let conf_doc = "Confusion-matrix heat map as a PNG (rows true class, columns prediction, colour = row fraction, text = count). `c` is an evaluate() result or an array of rows. Options: width, height, title, labels.";
    doc("plot_confusion", &["c: ?", "path: &str"], "()", conf_doc)
        .register_into_engine(engine, |v: Dynamic, path: &str| do_plot_confusion(v, path, Map::new()));
    doc("plot_confusion", &["c: ?", "path: &str", "opts: Map"], "()", conf_doc)
        .register_into_engine(engine, do_plot_confusion);
}
