//! Script API for core::eval: `evaluate`, `transfer_matrix`, `eps_sweep`, the paper's tables (`table_eps`,
//! `table_white_box`, `table_transfer`, `table_black_box`, `table_holdout`), `robust_eval` and `masking_report`.
//!
//! Evaluation results are record maps (`#{kind: "eval", accuracy, one_off, n, confusion, per_class, model, sources,
//! attack, attack_name, setting, seed, index, labels, predictions, correct}`: the setting next to per-example
//! outcomes), so scripts can record them, and the table functions are filled from them: one result per row, or an
//! array of results (one per fold) for mean ± std. `masking_report` and `robust_eval` return typed records with
//! `.table()`.
use crate::core::amp::Autocast;
use crate::core::attacks::{AttackKind, AttackSpec};
use crate::core::eval::tables::{self, ChangeRow, VariantsRow};
use crate::core::eval::{
    EvalOpts, EvalResult, MaskingCheck, MaskingOpts, MaskingReport, Metric, Rates, RobustOpts, RobustResult,
    RobustStage, Sources, eps_sweep, evaluate, fmt_eps, masking_report, robust_eval, transfer_matrix,
};
use crate::core::models::{Classifier, Net};
use crate::core::report::Table;
use crate::script::api::attacks::spec_from_opts;
use crate::script::api::data::DatasetV;
use crate::script::api::models::ModelV;
use crate::script::cell::Ref;
use crate::script::convert::{
    Opts, RResult, dynamic_to_json, friendly_type, guard, i64_array, script_err, str_array, to_anyhow, to_f64,
};
use crate::script::docs::doc;
use crate::script::state;
use anyhow::{Context, bail};
use rhai::{Array, Dynamic, Engine, Map};

/// Evaluation keys every evaluating function takes besides the attack's own.
const EVAL_KEYS: [&str; 5] = ["attack", "sources", "batch", "limit", "seed"];

/// The split of a script option map: evaluation settings, the attack (if any) and the models to craft on.
struct Parsed {
    batch: usize,
    limit: Option<usize>,
    seed: u64,
    attack: Option<AttackSpec>,
    sources: Vec<ModelV>,
    /// The function's own extra options, validated.
    extra: Opts,
}

/// Splits `map` into the evaluation keys, `extra` keys (returned as validated `Opts`) and the attack's keys, which
/// go to the attacks module's parser (so each attack accepts exactly its own settings). `default_attack` applies
/// when no `attack` key is given (`None`: clean evaluation).
fn parse(func: &str, mut map: Map, extra: &[&str], default_attack: Option<&str>) -> RResult<Parsed> {
    let mut mine = Map::new();
    for k in EVAL_KEYS.iter().chain(extra) {
        if let Some(v) = map.remove(*k) {
            mine.insert((*k).into(), v);
        }
    }
    let mut valid: Vec<&str> = EVAL_KEYS.to_vec();
    valid.extend_from_slice(extra);
    let o = Opts::new(func, mine, &valid)?;
    let attack_name = o.opt_str("attack")?.or(default_attack.map(str::to_string));
    let attack = match attack_name {
        None => {
            if !map.is_empty() {
                let mut keys: Vec<String> = map.keys().map(|k| k.to_string()).collect();
                keys.sort();
                return Err(script_err(format!(
                    "{func}: option(s) {} need an attack (attack: \"pgd\", ...); without one the evaluation is clean. Valid options: {}",
                    keys.join(", "),
                    valid.join(", ")
                )));
            }
            None
        }
        Some(name) => {
            let kind: AttackKind = name.parse().map_err(|e: anyhow::Error| script_err(format!("{func}: {e:#}")))?;
            Some(spec_from_opts(func, kind, map, &valid)?)
        }
    };
    let sources = match o.raw("sources") {
        None => vec![],
        Some(v) => models_of(func, "sources", v)?,
    };
    if !sources.is_empty() && attack.is_none() {
        return Err(script_err(format!("{func}: 'sources' given but no attack to craft with them")));
    }
    let seed = seed_opt(&o)?;
    let batch = batch_opt(&o, 64)?;
    let limit = limit_opt(&o)?;
    Ok(Parsed { batch, limit, seed, attack, sources, extra: o })
}

/// Option `seed`: >= 0, default the session seed.
fn seed_opt(o: &Opts) -> RResult<u64> {
    match o.opt_i64("seed")? {
        Some(s) if s < 0 => Err(script_err(format!("{}: option 'seed' must be >= 0, got {s}", o.func()))),
        Some(s) => Ok(s as u64),
        None => Ok(state::with(|s| s.seed)),
    }
}

/// Option `batch`: at least 1.
fn batch_opt(o: &Opts, default: usize) -> RResult<usize> {
    match o.usize_or("batch", default)? {
        0 => Err(script_err(format!("{}: option 'batch' must be at least 1", o.func()))),
        b => Ok(b),
    }
}

/// Option `limit` (evaluate a seeded subset of this many examples): at least 1 when given.
fn limit_opt(o: &Opts) -> RResult<Option<usize>> {
    match o.opt_i64("limit")? {
        Some(l) if l < 1 => Err(script_err(format!("{}: option 'limit' must be at least 1, got {l}", o.func()))),
        l => Ok(l.map(|l| l as usize)),
    }
}

/// A list of ε values: an array of at least one number, each in [0, 1] pixel units.
fn eps_list(func: &str, v: Option<Dynamic>) -> RResult<Vec<f64>> {
    let Some(v) = v else { return Ok(vec![32.0 / 256.0, 16.0 / 256.0, 8.0 / 256.0, 4.0 / 256.0]) };
    let a = v
        .into_array()
        .map_err(|t| script_err(format!("{func}: 'eps' must be an array of numbers, got {}", friendly_type(t))))?;
    if a.is_empty() {
        return Err(script_err(format!("{func}: 'eps' is empty; give at least one ε (e.g. [16.0/256])")));
    }
    a.iter()
        .map(|x| match to_f64(x) {
            Some(e) if (0.0..=1.0).contains(&e) => Ok(e),
            Some(e) => {
                Err(script_err(format!("{func}: 'eps' values are in [0, 1] pixel units (16/256 = 0.0625), got {e}")))
            }
            None => Err(script_err(format!("{func}: 'eps' must hold numbers, got {}", friendly_type(x.type_name())))),
        })
        .collect()
}

/// A finite number in [0, 1] (tolerances, fractions).
fn unit_opt(o: &Opts, key: &str, default: f64) -> RResult<f64> {
    let v = o.f64_or(key, default)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(script_err(format!("{}: option '{key}' must be in [0, 1], got {v}", o.func())));
    }
    Ok(v)
}

/// One Model or an array of Models.
fn models_of(func: &str, key: &str, v: &Dynamic) -> RResult<Vec<ModelV>> {
    if let Some(m) = v.clone().try_cast::<ModelV>() {
        return Ok(vec![m]);
    }
    let arr = v.clone().into_array().map_err(|t| {
        script_err(format!("{func}: '{key}' must be a Model or an array of Models, got {}", friendly_type(t)))
    })?;
    arr.into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.clone().try_cast::<ModelV>().ok_or_else(|| {
                script_err(format!("{func}: {key}[{i}] must be a Model, got {}", friendly_type(m.type_name())))
            })
        })
        .collect()
}

impl Parsed {
    /// The core evaluation settings, crafting on `src_nets` (the borrowed `sources`; none: white-box).
    fn eval_opts<'a>(&self, src_nets: &'a [Ref<'a, Net>]) -> EvalOpts<'a> {
        let sources = if src_nets.is_empty() { Sources::WhiteBox } else { Sources::From(dyns(src_nets)) };
        EvalOpts {
            batch_size: self.batch,
            attack: self.attack.clone(),
            sources,
            limit: self.limit,
            seed: self.seed,
            device: None,
        }
    }
}

fn borrow(models: &[ModelV]) -> anyhow::Result<Vec<Ref<'_, Net>>> {
    models.iter().map(|m| m.read()).collect()
}

fn dyns<'a>(nets: &'a [Ref<'a, Net>]) -> Vec<&'a dyn Classifier> {
    nets.iter().map(|n| &**n as &dyn Classifier).collect()
}

/// Runs `f` under the session's precision (bf16 autocast where it resolves so) on `device`.
fn with_precision<T>(device: tch::Device, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let (bf16, _) = state::with(|s| s.precision).resolve(device);
    let _ac = Autocast::new(device, bf16)?;
    f()
}

/// An evaluation result as a script map.
pub fn result_map(r: &EvalResult) -> Map {
    let mut m = Map::new();
    m.insert("accuracy".into(), Dynamic::from_float(r.accuracy));
    m.insert("one_off".into(), Dynamic::from_float(r.one_off));
    m.insert("n".into(), Dynamic::from_int(r.n as i64));
    let rows: Array = r
        .confusion
        .counts
        .iter()
        .map(|row| Dynamic::from_array(i64_array(&row.iter().map(|&c| c as i64).collect::<Vec<_>>())))
        .collect();
    m.insert("confusion".into(), Dynamic::from_array(rows));
    let per: Array =
        r.confusion.per_class().into_iter().map(|p| p.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT)).collect();
    m.insert("per_class".into(), Dynamic::from_array(per));
    m.insert("model".into(), Dynamic::from(r.model.clone()));
    m.insert("sources".into(), Dynamic::from_array(str_array(&r.sources)));
    m.insert("attack".into(), r.attack.clone().map(Dynamic::from).unwrap_or(Dynamic::UNIT));
    m.insert("setting".into(), Dynamic::from(r.setting()));
    m.insert("seed".into(), Dynamic::from_int(r.seed as i64));
    m.insert("attack_name".into(), r.attack_name.clone().map(Dynamic::from).unwrap_or(Dynamic::UNIT));
    m.insert("white_box".into(), Dynamic::from_bool(r.white_box));
    m.insert("index".into(), Dynamic::from_array(i64_array(&r.index)));
    m.insert("labels".into(), Dynamic::from_array(i64_array(&r.labels)));
    m.insert("predictions".into(), Dynamic::from_array(i64_array(&r.predictions)));
    m.insert("correct".into(), Dynamic::from_array(r.correct().into_iter().map(Dynamic::from_bool).collect()));
    // What `record` and `satm grid collect` recognise an evaluation record by.
    m.insert("kind".into(), Dynamic::from("eval"));
    m
}

/// A masking report's check as a script map.
fn check_map(c: &MaskingCheck) -> Map {
    let mut m = Map::new();
    let num = |v: Option<f64>| v.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT);
    m.insert("key".into(), Dynamic::from(c.key.clone()));
    m.insert("name".into(), Dynamic::from(c.name.clone()));
    m.insert("value".into(), num(c.value));
    m.insert("reference".into(), num(c.reference));
    m.insert("flagged".into(), Dynamic::from_bool(c.flagged));
    m.insert("expected".into(), Dynamic::from(c.expected.clone()));
    m.insert("why".into(), Dynamic::from(c.why.clone()));
    m.insert("verdict".into(), Dynamic::from(c.verdict.clone()));
    m
}

/// A robustness stage as a script map.
fn stage_map(s: &RobustStage) -> Map {
    let mut m = Map::new();
    m.insert("attack".into(), Dynamic::from(s.attack.clone()));
    m.insert("setting".into(), s.setting.clone().map(Dynamic::from).unwrap_or(Dynamic::UNIT));
    m.insert("accuracy".into(), Dynamic::from_float(s.accuracy));
    m.insert("one_off".into(), Dynamic::from_float(s.one_off));
    m
}

/// `robust_eval`'s result as scripts see it.
pub type RobustV = std::sync::Arc<RobustResult>;

/// The JSON `record` stores for a masking report: `kind: "masking"` and the report's fields.
pub fn masking_json(r: &MaskingReport) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), "masking".into());
    }
    v
}

/// The JSON `record` stores for a robustness result: `kind: "robust"`, the stages, the clean and worst-case
/// evaluation records and the settings.
pub fn robust_json(r: &RobustResult) -> serde_json::Value {
    serde_json::json!({
        "kind": "robust",
        "model": r.model,
        "eps": r.eps,
        "seed": r.seed,
        "stages": r.stages,
        "clean": dynamic_to_json(&Dynamic::from_map(result_map(&r.clean))),
        "worst": dynamic_to_json(&Dynamic::from_map(result_map(&r.worst))),
        "notes": r.notes,
    })
}

/// Rates from a result map (or an array of them, one per fold), with the model / sources labels of the first.
fn rates_of(v: &Dynamic, what: &str) -> anyhow::Result<(Vec<Rates>, String, String)> {
    let items: Vec<Dynamic> = match v.clone().into_array() {
        Ok(a) => a,
        Err(_) => vec![v.clone()],
    };
    if items.is_empty() {
        bail!("{what}: an empty array of fold results");
    }
    let mut out = vec![];
    let (mut model, mut sources) = (String::new(), String::new());
    for (k, it) in items.iter().enumerate() {
        let m = it.read_lock::<Map>().with_context(|| {
            format!("{what}: expected an evaluate() result map, got {}", friendly_type(it.type_name()))
        })?;
        let num = |key: &str| -> anyhow::Result<f64> {
            m.get(key).and_then(to_f64).with_context(|| format!("{what}: result {k} has no number '{key}'"))
        };
        let n = m.get("n").and_then(|x| x.as_int().ok()).unwrap_or(0).max(0) as u64;
        out.push(Rates { accuracy: num("accuracy")?, one_off: num("one_off")?, n });
        if k == 0 {
            model = m.get("model").map(|x| x.to_string()).unwrap_or_default();
            sources = match m.get("sources").and_then(|s| s.clone().into_array().ok()) {
                Some(a) => a.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("+"),
                None => String::new(),
            };
        }
    }
    Ok((out, model, sources))
}

fn arr(func: &str, what: &str, v: Dynamic) -> RResult<Array> {
    v.into_array()
        .map_err(|t| script_err(format!("{func}: '{what}' must be an array of results, got {}", friendly_type(t))))
}

/// `names[i]` if given, else `fallback`.
fn name_at(names: &[String], i: usize, fallback: &str) -> String {
    names.get(i).cloned().unwrap_or_else(|| fallback.to_string())
}

fn strings(o: &Opts, key: &str) -> RResult<Vec<String>> {
    Ok(o.array_or_empty(key)?.iter().map(|v| v.to_string()).collect())
}

fn add_notes(t: &mut Table, o: &Opts) -> RResult<()> {
    if let Some(title) = o.opt_str("title")? {
        t.title = title;
    }
    for n in strings(o, "notes")? {
        t.note(n);
    }
    Ok(())
}

/// Table 2/3/4 from results: `before` and `after` are arrays with one entry per row (a result map, or an array of
/// per-fold result maps); labels come from `names`/the results.
fn change_from_results(
    func: &str,
    before: Dynamic,
    after: Dynamic,
    opts: Map,
    title: &str,
    two_labels: bool,
) -> RResult<Table> {
    let o = Opts::new(func, opts, &["names", "adv_names", "title", "notes"])?;
    let (b, a) = (arr(func, "before", before)?, arr(func, "after", after)?);
    if b.len() != a.len() {
        return Err(script_err(format!("{func}: {} results before but {} after", b.len(), a.len())));
    }
    let names = strings(&o, "names")?;
    let adv = strings(&o, "adv_names")?;
    guard(func, || {
        let mut rows = vec![];
        for (i, (bv, av)) in b.iter().zip(&a).enumerate() {
            let (br, model, sources) = rates_of(bv, &format!("before[{i}]"))?;
            let (ar, _, _) = rates_of(av, &format!("after[{i}]"))?;
            let mut labels = vec![name_at(&names, i, &model)];
            if two_labels {
                labels.push(name_at(&adv, i, &sources));
            }
            rows.push(ChangeRow { labels, before: br, after: ar });
        }
        let cols: &[&str] = if two_labels { &["Target", "Adv model"] } else { &["Model"] };
        let mut t = tables::change_table(title, cols, &rows)?;
        add_notes(&mut t, &o).map_err(to_anyhow)?;
        Ok(t)
    })
}

fn do_evaluate(m: ModelV, d: DatasetV, opts: Map) -> RResult<Map> {
    let p = parse("evaluate", opts, &[], None)?;
    guard("evaluate", || {
        let net = m.read()?;
        let src_nets = borrow(&p.sources)?;
        let o = p.eval_opts(&src_nets);
        let r = with_precision(net.device(), || evaluate(&*net, &d.0, &o))?;
        Ok(result_map(&r))
    })
}

fn do_eps_sweep(m: ModelV, d: DatasetV, mut opts: Map) -> RResult<Map> {
    let eps = opts.remove("eps");
    let p = parse("eps_sweep", opts, &[], Some("r_step_ll"))?;
    let eps = eps_list("eps_sweep", eps)?;
    guard("eps_sweep", || {
        let net = m.read()?;
        let src_nets = borrow(&p.sources)?;
        let o = p.eval_opts(&src_nets);
        let (res, clean) = with_precision(net.device(), || {
            let res = eps_sweep(&*net, &d.0, &eps, &o)?;
            let clean = evaluate(&*net, &d.0, &EvalOpts { attack: None, sources: Sources::WhiteBox, ..o.clone() })?;
            Ok((res, clean))
        })?;
        let mut out = Map::new();
        out.insert("model".into(), Dynamic::from(net.label()));
        out.insert("attack".into(), p.attack.as_ref().map(|a| Dynamic::from(a.describe())).unwrap_or(Dynamic::UNIT));
        out.insert("eps".into(), Dynamic::from_array(res.iter().map(|r| Dynamic::from_float(r.0)).collect()));
        out.insert(
            "accuracy".into(),
            Dynamic::from_array(res.iter().map(|r| Dynamic::from_float(r.1.accuracy)).collect()),
        );
        out.insert(
            "one_off".into(),
            Dynamic::from_array(res.iter().map(|r| Dynamic::from_float(r.1.one_off)).collect()),
        );
        out.insert(
            "results".into(),
            Dynamic::from_array(res.iter().map(|r| Dynamic::from_map(result_map(&r.1))).collect()),
        );
        out.insert("clean".into(), Dynamic::from_float(clean.accuracy));
        Ok(out)
    })
}

fn table_holdout(variants: Map, opts: Map) -> RResult<Table> {
    let o = Opts::new("table_holdout", opts, &["order", "names", "adv_names", "title", "notes"])?;
    let mut order = strings(&o, "order")?;
    if order.is_empty() {
        for k in ["Undefended", "Ensemble", "SATM"] {
            if variants.contains_key(k) {
                order.push(k.to_string());
            }
        }
        let mut rest: Vec<String> = variants.keys().map(|k| k.to_string()).filter(|k| !order.contains(k)).collect();
        rest.sort();
        order.extend(rest);
    }
    let names = strings(&o, "names")?;
    let adv = strings(&o, "adv_names")?;
    let cols: Vec<Array> = order
        .iter()
        .map(|k| {
            let v = variants
                .get(k.as_str())
                .cloned()
                .ok_or_else(|| script_err(format!("table_holdout: no variant '{k}'")))?;
            arr("table_holdout", k, v)
        })
        .collect::<RResult<_>>()?;
    guard("table_holdout", || {
        let n = cols.first().map(|c| c.len()).unwrap_or(0);
        if let Some((k, c)) = order.iter().zip(&cols).find(|(_, c)| c.len() != n) {
            bail!("variant '{k}' has {} rows, '{}' has {n}", c.len(), order[0]);
        }
        let mut rows = vec![];
        for i in 0..n {
            let mut vs = vec![];
            let mut labels = vec![];
            for (j, (k, c)) in order.iter().zip(&cols).enumerate() {
                let (r, model, sources) = rates_of(&c[i], &format!("{k}[{i}]"))?;
                if j == 0 {
                    labels = vec![name_at(&names, i, &model), name_at(&adv, i, &sources)];
                }
                vs.push(r);
            }
            rows.push(VariantsRow { labels, variants: vs });
        }
        let mut t = tables::variants_table(
            "Table 5. Black-box attacks from hold-out networks",
            &["Target", "Adv model"],
            &order,
            &rows,
        )?;
        add_notes(&mut t, &o).map_err(to_anyhow)?;
        Ok(t)
    })
}

pub fn register(engine: &mut Engine) {
    let eval_doc = "Evaluates a model on a dataset. Without `attack`: clean accuracy. With `attack` (any attack name, \
e.g. \"pgd\", \"r_step_ll\", \"square\") and its options (eps, alpha, steps, step, ...): white-box, crafted on the model \
itself, or black-box when `sources` (a Model or an array: an ensemble) is given. Options: batch (64), limit (a seeded \
subset of this many examples), seed (reseeds before evaluating; default: the session seed). Returns #{accuracy, one_off, \
n, confusion, per_class, model, sources, attack, attack_name, setting, seed, white_box, kind: \"eval\"} and the per-example \
outcomes in evaluation order: index (into `data`; a `limit` subset keeps the full set's indices), labels, predictions, \
correct (bools). mcnemar(r1.correct, r2.correct) compares two models on the same seed and limit.";
    doc("evaluate", &["model: Model", "data: Dataset", "opts: Map"], "Map", eval_doc)
        .register_into_engine(engine, do_evaluate);
    doc("evaluate", &["model: Model", "data: Dataset"], "Map", eval_doc)
        .register_into_engine(engine, |m: ModelV, d: DatasetV| do_evaluate(m, d, Map::new()));

    doc(
        "transfer_matrix",
        &["opts: Map"],
        "Table",
        "N×M transfer matrix: #{sources: [Model], targets: [Model], data: Dataset, attack: \"r_step_ll\", <attack options>, \
metric: \"accuracy\" | \"one_off\", batch, limit, seed}. Row = model the attack is crafted on, column = evaluated model; a \
model in both lists gives its white-box rate on the diagonal (same seed = same numbers as evaluate). A last row holds \
clean rates.",
    )
    .register_into_engine(engine, |opts: Map| -> RResult<Table> {
        let mut opts = opts;
        let srcs = opts.remove("sources");
        let p = parse("transfer_matrix", opts, &["targets", "data", "metric"], Some("r_step_ll"))?;
        let srcs = models_of("transfer_matrix", "sources", &srcs.ok_or_else(|| script_err("transfer_matrix: 'sources' is required"))?)?;
        let targets = models_of(
            "transfer_matrix",
            "targets",
            p.extra.raw("targets").ok_or_else(|| script_err("transfer_matrix: 'targets' is required"))?,
        )?;
        let data: DatasetV =
            p.extra.opt_item("data", "Dataset")?.ok_or_else(|| script_err("transfer_matrix: 'data' is required"))?;
        let metric = match p.extra.choice_or("metric", "accuracy", &["accuracy", "one_off"])?.as_str() {
            "one_off" => Metric::OneOff,
            _ => Metric::Accuracy,
        };
        let attack = p.attack.clone().ok_or_else(|| script_err("transfer_matrix: no attack"))?;
        if srcs.is_empty() || targets.is_empty() {
            return Err(script_err("transfer_matrix: 'sources' and 'targets' must each hold at least one Model"));
        }
        guard("transfer_matrix", || {
            let s_nets = borrow(&srcs)?;
            let t_nets = borrow(&targets)?;
            let (s, t) = (dyns(&s_nets), dyns(&t_nets));
            let o = EvalOpts { batch_size: p.batch, limit: p.limit, seed: p.seed, ..EvalOpts::default() };
            with_precision(t[0].device(), || transfer_matrix(&s, &t, &data.0, &attack, &o, metric))
        })
    });

    let sweep_doc = "Accuracy vs ε: #{attack (\"r_step_ll\"), eps: [32/256, 16/256, 8/256, 4/256], sources, batch, limit, \
seed, <attack options>} (α and the step size scale with ε). Returns #{model, attack, eps, accuracy, one_off, results, \
clean}; plot_eps draws it.";
    doc("eps_sweep", &["model: Model", "data: Dataset", "opts: Map"], "Map", sweep_doc)
        .register_into_engine(engine, do_eps_sweep);
    doc("eps_sweep", &["model: Model", "data: Dataset"], "Map", sweep_doc)
        .register_into_engine(engine, |m: ModelV, d: DatasetV| do_eps_sweep(m, d, Map::new()));

    doc(
        "table_eps",
        &["models: Array", "data: Dataset", "opts: Map"],
        "Table",
        "The paper's Table 1: white-box classification rate of each model at each ε, plus clean data. Options: eps (array, \
default [32, 16, 8, 4]/256), attack (\"r_step_ll\") and its options, batch, limit, seed, title.",
    )
    .register_into_engine(engine, |models: Array, d: DatasetV, mut opts: Map| -> RResult<Table> {
        let eps = opts.remove("eps");
        let p = parse("table_eps", opts, &["title"], Some("r_step_ll"))?;
        let eps = eps_list("table_eps", eps)?;
        let ms = models_of("table_eps", "models", &Dynamic::from_array(models))?;
        let title = p.extra.opt_str("title")?;
        guard("table_eps", || {
            let nets = borrow(&ms)?;
            let cl = dyns(&nets);
            let Some(first) = cl.first() else { bail!("no models given") };
            let o = EvalOpts { batch_size: p.batch, attack: p.attack.clone(), limit: p.limit, seed: p.seed, ..EvalOpts::default() };
            let mut t = with_precision(first.device(), || tables::table1(&cl, &d.0, &eps, &o))?;
            if let Some(title) = title {
                t.title = title;
            }
            Ok(t)
        })
    });

    let change_opts = "Options: names (row labels; default: the results' model), title, notes.";
    doc(
        "table_white_box",
        &["before: Array", "after: Array", "opts: Map"],
        "Table",
        &format!(
            "The paper's Table 2 from evaluate() results: one row per network, Cr and one-off \"before → after\". before[i] / \
after[i] are white-box results of network i before / after the defence (or arrays of per-fold results: mean ± std). {change_opts}"
        ),
    )
    .register_into_engine(engine, |b: Dynamic, a: Dynamic, o: Map| {
        change_from_results("table_white_box", b, a, o, "Table 2. White-box attacks, before → after", false)
    });
    doc(
        "table_transfer",
        &["before: Array", "after: Array", "opts: Map"],
        "Table",
        &format!(
            "The paper's Table 3 from evaluate() results: an undefended third network attacked with examples crafted on each \
network before / after the defence. Columns Target (the result's model), Adv model (its sources). {change_opts} adv_names \
(the Adv model column)."
        ),
    )
    .register_into_engine(engine, |b: Dynamic, a: Dynamic, o: Map| {
        change_from_results("table_transfer", b, a, o, "Table 3. Transfer to an undefended network, before → after", true)
    });
    doc(
        "table_black_box",
        &["before: Array", "after: Array", "opts: Map"],
        "Table",
        &format!(
            "The paper's Table 4 from evaluate() results: each row a black-box evaluation (target attacked from another \
network), before → after the defence. {change_opts} adv_names (the Adv model column)."
        ),
    )
    .register_into_engine(engine, |b: Dynamic, a: Dynamic, o: Map| {
        change_from_results("table_black_box", b, a, o, "Table 4. Black-box attacks, before → after", true)
    });
    for (name, text) in [("table_white_box", "Table 2"), ("table_transfer", "Table 3"), ("table_black_box", "Table 4")]
    {
        let name: &'static str = name;
        doc(name, &["before: Array", "after: Array"], "Table", &format!("{text} with default options."))
            .register_into_engine(engine, move |b: Dynamic, a: Dynamic| -> RResult<Table> {
                let title = match name {
                    "table_white_box" => "Table 2. White-box attacks, before → after",
                    "table_transfer" => "Table 3. Transfer to an undefended network, before → after",
                    _ => "Table 4. Black-box attacks, before → after",
                };
                change_from_results(name, b, a, Map::new(), title, name != "table_white_box")
            });
    }

    doc(
        "table_holdout",
        &["variants: Map", "opts: Map"],
        "Table",
        "The paper's Table 5 from evaluate() results: `variants` maps a variant name (\"Undefended\", \"Ensemble\", \"SATM\") to \
an array with one black-box result per row (a target attacked from a hold-out network; an array of per-fold results gives \
mean ± std). Options: order (variant names in column order; default Undefended, Ensemble, SATM where present, then the rest), \
names (Target labels), adv_names (Adv model labels), title, notes.",
    )
    .register_into_engine(engine, table_holdout);
    doc("table_holdout", &["variants: Map"], "Table", "Table 5 with default options.")
        .register_into_engine(engine, |v: Map| table_holdout(v, Map::new()));

    let robust_doc = "AutoAttack-style robustness evaluation (L∞): APGD-CE, targeted APGD-DLR (≥ 3 classes), Square, each on \
the examples all earlier attacks failed on; worst case per example. Options: eps (16/256), steps (APGD iterations, 100), \
targets (APGD-DLR-T target classes, 9), queries (Square, 1000), batch, limit, seed. Returns a Robust record: .stages \
(#{attack, setting, accuracy, one_off} per cumulative stage, clean first), .clean and .worst (evaluate-style records with \
per-example outcomes), .accuracy (worst case), .table() (ε, norm, seed and every attack setting in its notes); record() \
stores it.";
    let robust = |m: ModelV, d: DatasetV, opts: Map| -> RResult<RobustV> {
        let o = Opts::new("robust_eval", opts, &["eps", "steps", "targets", "queries", "batch", "limit", "seed"])?;
        let def = RobustOpts::default();
        let ro = RobustOpts {
            eps: o.f64_or("eps", def.eps)?,
            batch_size: batch_opt(&o, def.batch_size)?,
            limit: limit_opt(&o)?,
            seed: seed_opt(&o)?,
            apgd_steps: o.usize_or("steps", def.apgd_steps)?,
            n_target_classes: o.usize_or("targets", def.n_target_classes)?,
            square_queries: o.usize_or("queries", def.square_queries)?,
            attacks: vec![],
        };
        guard("robust_eval", || {
            let net = m.read()?;
            Ok(std::sync::Arc::new(with_precision(net.device(), || robust_eval(&*net, &d.0, &ro))?))
        })
    };
    doc("robust_eval", &["model: Model", "data: Dataset", "opts: Map"], "Robust", robust_doc)
        .register_into_engine(engine, robust);
    doc("robust_eval", &["model: Model", "data: Dataset"], "Robust", robust_doc)
        .register_into_engine(engine, move |m: ModelV, d: DatasetV| robust(m, d, Map::new()));

    let masking_doc = "Gradient-masking report: zero/NaN input gradients, PGD vs FGSM and R+FGSM (multi-step must not be \
weaker), R+FGSM vs FGSM, Square (black-box) vs PGD, transfer from `source` vs white-box, PGD accuracy vs ε (monotonic); \
each check ok/FLAG and an overall verdict. Options: eps (16/256), steps (PGD, 20), queries (Square, 1000), source (a Model), \
eps_factors ([0.25, 0.5, 1, 2]), tolerance (0.02), max_bad_grad (0.05), batch, limit, seed. Returns a MaskingReport: \
.flagged, .verdict, .checks (#{key, name, value, reference, flagged, expected, why, verdict}; keys clean, bad_gradients, \
saturated, pgd_vs_fgsm, pgd_vs_rfgsm, rfgsm_vs_fgsm, square_vs_pgd, transfer_vs_pgd (with a source), eps_monotone), \
.check(key), .table(), .save(path); record() stores it.";
    let masking = |m: ModelV, d: DatasetV, opts: Map| -> RResult<MaskingReport> {
        let o = Opts::new(
            "masking_report",
            opts,
            &[
                "eps",
                "steps",
                "queries",
                "source",
                "eps_factors",
                "tolerance",
                "max_bad_grad",
                "batch",
                "limit",
                "seed",
            ],
        )?;
        let def = MaskingOpts::default();
        let source: Option<ModelV> = o.opt_item("source", "Model")?;
        let eps_factors = o.f64_array("eps_factors")?.unwrap_or(def.eps_factors.clone());
        if eps_factors.is_empty() || eps_factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
            return Err(script_err(format!(
                "masking_report: option 'eps_factors' must be a non-empty array of numbers > 0, got {eps_factors:?}"
            )));
        }
        let (eps, steps, queries) = (
            o.f64_or("eps", def.eps)?,
            o.usize_or("steps", def.pgd_steps)?,
            o.usize_or("queries", def.square_queries)?,
        );
        let (tolerance, max_bad_grad) =
            (unit_opt(&o, "tolerance", def.tolerance)?, unit_opt(&o, "max_bad_grad", def.max_bad_grad)?);
        let batch = batch_opt(&o, def.batch_size)?;
        let limit = limit_opt(&o)?;
        let seed = seed_opt(&o)?;
        guard("masking_report", || {
            let net = m.read()?;
            let src = source.as_ref().map(|s| s.read()).transpose()?;
            let mo = MaskingOpts {
                eps,
                batch_size: batch,
                limit,
                seed,
                pgd_steps: steps,
                square_queries: queries,
                eps_factors: eps_factors.clone(),
                source: src.as_ref().map(|s| &**s as &dyn Classifier),
                tolerance,
                max_bad_grad,
            };
            with_precision(net.device(), || masking_report(&*net, &d.0, &mo))
        })
    };
    doc("masking_report", &["model: Model", "data: Dataset", "opts: Map"], "MaskingReport", masking_doc)
        .register_into_engine(engine, masking);
    doc("masking_report", &["model: Model", "data: Dataset"], "MaskingReport", masking_doc)
        .register_into_engine(engine, move |m: ModelV, d: DatasetV| masking(m, d, Map::new()));

    engine.register_type_with_name::<MaskingReport>("MaskingReport");
    engine.register_fn("to_string", |r: &mut MaskingReport| r.to_string());
    engine.register_fn("to_debug", |r: &mut MaskingReport| r.to_string());
    engine.register_get("flagged", |r: &mut MaskingReport| r.flagged);
    engine.register_get("verdict", |r: &mut MaskingReport| r.verdict.clone());
    engine.register_get("model", |r: &mut MaskingReport| r.model.clone());
    engine.register_get("checks", |r: &mut MaskingReport| -> Array {
        r.checks.iter().map(|c| Dynamic::from_map(check_map(c))).collect()
    });
    doc("check", &["r: MaskingReport", "key: &str"], "Map", "The check with this key (clean, bad_gradients, saturated, \
pgd_vs_fgsm, pgd_vs_rfgsm, rfgsm_vs_fgsm, square_vs_pgd, transfer_vs_pgd, eps_monotone): #{key, name, value, reference, \
flagged, expected, why, verdict}. An error names the keys the report has.")
    .register_into_engine(engine, |r: &mut MaskingReport, key: &str| -> RResult<Map> {
        r.check(key).map(check_map).ok_or_else(|| {
            let keys: Vec<&str> = r.checks.iter().map(|c| c.key.as_str()).collect();
            script_err(format!("check: the report of {} has no check '{key}'; it has: {}", r.model, keys.join(", ")))
        })
    });
    doc("table", &["r: MaskingReport"], "Table", "The report as a table: one row per check and the overall verdict.")
        .register_into_engine(engine, |r: &mut MaskingReport| r.table());
    doc("save", &["r: MaskingReport", "path: &str"], "Array", "Saves the report's table (like Table.save).")
        .register_into_engine(engine, |r: &mut MaskingReport, path: &str| -> RResult<Array> {
            guard("save", || Ok(r.table().save(path)?.iter().map(|p| Dynamic::from(p.display().to_string())).collect()))
        });

    engine.register_type_with_name::<RobustV>("Robust");
    engine.register_fn("to_string", |r: &mut RobustV| r.table().render());
    engine.register_fn("to_debug", |r: &mut RobustV| r.table().render());
    engine.register_get("stages", |r: &mut RobustV| -> Array {
        r.stages.iter().map(|s| Dynamic::from_map(stage_map(s))).collect()
    });
    engine.register_get("clean", |r: &mut RobustV| result_map(&r.clean));
    engine.register_get("worst", |r: &mut RobustV| result_map(&r.worst));
    engine.register_get("accuracy", |r: &mut RobustV| r.worst.accuracy);
    engine.register_get("model", |r: &mut RobustV| r.model.clone());
    doc("table", &["r: Robust"], "Table", "The robustness result as a table: clean, then the cumulative robust rates.")
        .register_into_engine(engine, |r: &mut RobustV| r.table());
    doc("save", &["r: Robust", "path: &str"], "Array", "Saves the result's table (like Table.save).")
        .register_into_engine(engine, |r: &mut RobustV, path: &str| -> RResult<Array> {
            guard("save", || Ok(r.table().save(path)?.iter().map(|p| Dynamic::from(p.display().to_string())).collect()))
        });

    doc("fmt_eps", &["eps: f64"], "String", "ε as the paper writes it: \"16/256\" for whole multiples of 1/256.")
        .register_into_engine(engine, fmt_eps);
}
