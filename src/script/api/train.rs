//! Script API for training: `train(net, data, #{...})` (standard training) and `satm(#{nets, frozen, data, ...})`.
use crate::core::device::Precision;
use crate::core::report::{Cell, Table};
use crate::core::train::config::{GuardAction, LambdaSchedule, LrSchedule, PlannedChange, SourcePolicy, TrainConfig};
use crate::core::train::control::STEERABLE;
use crate::core::train::optim::OptimizerKind;
use crate::core::train::{self, TrainResult};
use crate::script::api::data::DatasetV;
use crate::script::api::models::ModelV;
use crate::script::cell::{Ref, RefMut};
use crate::script::convert::{Opts, RResult, friendly_type, guard, json_to_dynamic, script_err, to_anyhow, to_f64};
use crate::script::docs::doc;
use crate::script::state;
use anyhow::{Result, bail};
use rhai::{Array, Dynamic, Engine, Map};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A finished training run as scripts see it.
#[derive(Clone)]
pub struct TrainResultV(pub std::rc::Rc<TrainResult>);

/// Options shared by train() and satm().
const COMMON: &[&str] = &[
    "config",
    "steps",
    "epochs",
    "batch",
    "lr",
    "lr_schedule",
    "optimizer",
    "momentum",
    "weight_decay",
    "nesterov",
    "val",
    "eval_every",
    "val_batches",
    "patience",
    "keep_best",
    "augment",
    "seed",
    "precision",
    "channels_last",
    "log_every",
    "checkpoint_every",
    "name",
    "resume",
    "progress",
    "guard",
    "steer",
    "background",
    "threads",
];
/// Options only satm() takes.
const SATM_ONLY: &[&str] = &[
    "nets",
    "frozen",
    "data",
    "r_adv",
    "r_da",
    "white_box",
    "eps",
    "alpha",
    "attack",
    "target",
    "sources",
    "lambda",
    "da_hidden",
];

static RUN_COUNTER: AtomicUsize = AtomicUsize::new(0);

fn lr_schedule(o: &Opts) -> Result<Option<LrSchedule>> {
    let Some(v) = o.raw("lr_schedule") else { return Ok(None) };
    if v.is_map() {
        let m = v.clone().cast::<Map>();
        let sub = Opts::new("lr_schedule", m, &["every", "gamma"]).map_err(to_anyhow)?;
        let every = sub.usize_or("every", 0).map_err(to_anyhow)?;
        if every == 0 {
            bail!("lr_schedule: #{{every, gamma}} needs every >= 1");
        }
        return Ok(Some(LrSchedule::Step { every, gamma: sub.f64_or("gamma", 0.1).map_err(to_anyhow)? }));
    }
    if !v.is_string() {
        bail!(
            "option 'lr_schedule' must be \"constant\", \"cosine\", \"dann\" or #{{every, gamma}}, got {}",
            friendly_type(v.type_name())
        );
    }
    Ok(Some(match v.to_string().as_str() {
        "constant" => LrSchedule::Constant,
        "cosine" => LrSchedule::Cosine,
        "dann" => LrSchedule::Dann,
        o => bail!("lr_schedule '{o}': expected \"constant\", \"cosine\", \"dann\" or #{{every, gamma}}"),
    }))
}

/// Builds the config: defaults (or a RON preset given as `config`), then every option given.
fn build_config(o: &Opts, satm: bool) -> Result<TrainConfig> {
    let e = to_anyhow;
    let mut c = match o.opt_str("config").map_err(e)? {
        Some(name) => crate::config::load::<TrainConfig>(&crate::config::resolve(&name)?)?,
        None if satm => TrainConfig::default(),
        None => TrainConfig::standard(),
    };
    if !satm {
        c.r_adv = 0.0;
        c.r_da = 0.0;
        c.white_box = 0.0;
    }
    c.seed = state::with(|s| s.seed);
    c.precision = state::with(|s| s.precision);
    c.steps = o.usize_or("steps", c.steps).map_err(e)?;
    c.epochs = o.usize_or("epochs", c.epochs).map_err(e)?;
    if o.has("epochs") && !o.has("steps") {
        c.steps = 0;
    }
    c.batch_size = o.usize_or("batch", c.batch_size).map_err(e)?;
    c.lr = o.f64_or("lr", c.lr).map_err(e)?;
    if let Some(s) = lr_schedule(o)? {
        c.lr_schedule = s;
    }
    if let Some(s) = o.opt_str("optimizer").map_err(e)? {
        c.optimizer = OptimizerKind::parse(&s)?;
    }
    c.momentum = o.f64_or("momentum", c.momentum).map_err(e)?;
    c.weight_decay = o.f64_or("weight_decay", c.weight_decay).map_err(e)?;
    c.nesterov = o.bool_or("nesterov", c.nesterov).map_err(e)?;
    c.eval_every = o.usize_or("eval_every", c.eval_every).map_err(e)?;
    c.val_batches = o.usize_or("val_batches", c.val_batches).map_err(e)?;
    c.patience = o.usize_or("patience", c.patience).map_err(e)?;
    c.keep_best = o.bool_or("keep_best", c.keep_best).map_err(e)?;
    c.augment = o.bool_or("augment", c.augment).map_err(e)?;
    c.seed = o.usize_or("seed", c.seed as usize).map_err(e)? as u64;
    if let Some(p) = o.opt_str("precision").map_err(e)? {
        c.precision = Precision::parse(&p)?;
    }
    c.channels_last = o.bool_or("channels_last", c.channels_last).map_err(e)?;
    c.log_every = o.usize_or("log_every", c.log_every).map_err(e)?;
    c.checkpoint_every = o.usize_or("checkpoint_every", c.checkpoint_every).map_err(e)?;
    if let Some(g) = o.raw("guard") {
        if let Ok(b) = g.as_bool() {
            c.guard.enabled = Some(b);
        } else if g.is_map() {
            let sub = Opts::new("guard", g.clone().cast::<Map>(), &["enabled", "every", "pgd_steps", "drop", "action"])
                .map_err(e)?;
            c.guard.enabled = Some(sub.bool_or("enabled", true).map_err(e)?);
            c.guard.every = sub.usize_or("every", c.guard.every).map_err(e)?;
            c.guard.pgd_steps = sub.usize_or("pgd_steps", c.guard.pgd_steps).map_err(e)?;
            c.guard.drop = sub.f64_or("drop", c.guard.drop).map_err(e)?;
            c.guard.action = match sub.choice_or("action", "warn", &["warn", "stop", "rollback"]).map_err(e)?.as_str() {
                "stop" => GuardAction::Stop,
                "rollback" => GuardAction::Rollback,
                _ => GuardAction::Warn,
            };
        } else {
            bail!("option 'guard' must be true/false or #{{enabled, every, pgd_steps, drop, action}}");
        }
    }
    if satm {
        c.r_adv = o.f64_or("r_adv", c.r_adv).map_err(e)?;
        c.r_da = o.f64_or("r_da", c.r_da).map_err(e)?;
        c.white_box = o.f64_or("white_box", c.white_box).map_err(e)?;
        c.eps = o.f64_or("eps", c.eps).map_err(e)?;
        if let Some(a) = o.opt_f64("alpha").map_err(e)? {
            c.alpha = Some(a);
        }
        if let Some(a) = o.opt_str("attack").map_err(e)? {
            c.attack = a.parse().map_err(|err: anyhow::Error| anyhow::anyhow!("option 'attack': {err}"))?;
        }
        c.target = o
            .choice_or("target", c.target.name(), &["true", "least_likely"])
            .map_err(e)?
            .parse()
            .map_err(|err: anyhow::Error| anyhow::anyhow!("option 'target': {err}"))?;
        c.da_hidden = o.i64_or("da_hidden", c.da_hidden).map_err(e)?;
        if let Some(l) = o.raw("lambda") {
            c.lambda = if let Some(x) = to_f64(l) {
                LambdaSchedule::Constant(x)
            } else if l.to_string() == "dann" {
                LambdaSchedule::Dann { gamma: 10.0 }
            } else {
                bail!(
                    "option 'lambda' must be a number (constant λ) or \"dann\" (2/(1+exp(-10p))-1), got {}",
                    if l.is_string() { format!("\"{l}\"") } else { friendly_type(l.type_name()) }
                );
            };
        }
        if let Some(s) = o.raw("sources") {
            c.sources = if s.is_array() {
                let rows = s.clone().into_array().unwrap_or_default();
                let g: Result<Vec<Vec<usize>>> = rows
                    .iter()
                    .map(|r| {
                        r.clone()
                            .into_array()
                            .map_err(|_| {
                                anyhow::anyhow!("option 'sources': a graph is an array of arrays of network indices")
                            })?
                            .iter()
                            .map(|i| match i.as_int() {
                                Ok(v) if v >= 0 => Ok(v as usize),
                                _ => bail!("option 'sources': network indices must be integers >= 0, got {i}"),
                            })
                            .collect()
                    })
                    .collect();
                SourcePolicy::Graph(g?)
            } else {
                let name = if s.is_string() { s.to_string() } else { friendly_type(s.type_name()) };
                match name.as_str() {
                    "round_robin" => SourcePolicy::RoundRobin,
                    "random" => SourcePolicy::Random,
                    "all" => SourcePolicy::All,
                    o => bail!(
                        "option 'sources' is '{o}'; expected \"round_robin\", \"random\", \"all\" or a graph [[1], [0], ...]"
                    ),
                }
            };
        }
    }
    if let Some(v) = o.raw("steer") {
        c.steer = steer_plan(v)?;
    }
    c.validate()?;
    Ok(c)
}

/// `steer: [#{step: 5, r_da: 0.3}, #{step: 9, lr: 0.01}]`: planned changes, in the order of `control::STEERABLE`
/// within one entry.
fn steer_plan(v: &Dynamic) -> Result<Vec<PlannedChange>> {
    let Some(entries) = v.clone().try_cast::<Array>() else {
        bail!(
            "option 'steer' must be an array of maps like #{{step: 5, r_da: 0.3}}, got {}",
            friendly_type(v.type_name())
        );
    };
    let mut valid = vec!["step"];
    valid.extend(STEERABLE);
    let mut plan = vec![];
    for (i, entry) in entries.into_iter().enumerate() {
        let what = format!("steer[{i}]");
        let Some(m) = entry.clone().try_cast::<Map>() else {
            bail!("{what} must be a map like #{{step: 5, r_da: 0.3}}, got {}", friendly_type(entry.type_name()));
        };
        let sub = Opts::new(&what, m, &valid).map_err(to_anyhow)?;
        if !sub.has("step") {
            bail!("{what} needs a step (the step before whose batch the change applies)");
        }
        let step = sub.usize_or("step", 0).map_err(to_anyhow)?;
        let before = plan.len();
        for key in STEERABLE {
            if let Some(value) = sub.opt_f64(key).map_err(to_anyhow)? {
                plan.push(PlannedChange { step, key: key.to_string(), value });
            }
        }
        if plan.len() == before {
            bail!("{what} changes nothing; give one or more of: {}", STEERABLE.join(", "));
        }
    }
    Ok(plan)
}

fn run_dir(o: &Opts, kind: &str) -> Result<PathBuf> {
    let n = RUN_COUNTER.fetch_add(1, Ordering::SeqCst) + 1;
    let name = o.str_or("name", &format!("{kind}-{n}")).map_err(to_anyhow)?;
    if name.is_empty() || name.contains('/') || name.contains("..") {
        bail!("option 'name' must be a plain directory name, got '{name}'");
    }
    Ok(state::out_dir()?.join(name))
}

fn borrow_all<'a>(models: &'a [ModelV], what: &str) -> Result<Vec<RefMut<'a, crate::core::models::Net>>> {
    models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.0.try_borrow_mut().map_err(|e| match e.held() {
                true => anyhow::Error::from(e),
                false => anyhow::anyhow!("{what}[{i}] is the same model as another one in this call"),
            })
        })
        .collect()
}

fn do_train(
    func: &str,
    o: Opts,
    satm: bool,
    nets: Vec<ModelV>,
    frozen: Vec<ModelV>,
    data: DatasetV,
) -> Result<Dynamic> {
    let cfg = build_config(&o, satm)?;
    let background = o.bool_or("background", false).map_err(to_anyhow)?;
    let threads = o.usize_or("threads", 0).map_err(to_anyhow)?;
    if o.has("threads") && !background {
        bail!("{func}: option 'threads' is for background runs; set the session's with threads(n)");
    }
    let val: Option<DatasetV> = o.opt_item::<DatasetV>("val", "Dataset").map_err(to_anyhow)?;
    // An empty string means "no resume", so scripts can pass `param("resume", "")` through.
    let resume = o.opt_str("resume").map_err(to_anyhow)?.filter(|s| !s.is_empty()).map(PathBuf::from);
    let progress = o.bool_or("progress", true).map_err(to_anyhow)? && !state::quiet();
    for f in &frozen {
        if nets.iter().any(|n| std::sync::Arc::ptr_eq(&n.0, &f.0)) {
            bail!("{func}: a model is both in nets and in frozen");
        }
    }
    let dir = match &resume {
        Some(r) if r.join("run.json").is_file() => r.clone(),
        _ => run_dir(&o, if satm { "satm" } else { "train" })?,
    };
    if background {
        let launch = crate::script::api::live::Launch {
            kind: if satm { "satm" } else { "train" },
            cfg,
            nets,
            frozen,
            data: &data.0,
            val: val.as_ref().map(|v| &*v.0),
            dir,
            resume,
            threads: (threads > 0).then_some(threads),
        };
        return Ok(Dynamic::from(crate::script::api::live::spawn(launch)?));
    }
    let mut tr = borrow_all(&nets, "nets")?;
    let fr: Vec<Ref<crate::core::models::Net>> = frozen.iter().map(|m| m.read()).collect::<Result<_>>()?;
    let res = train::run(train::Run {
        trainees: tr.iter_mut().map(|r| &mut **r).collect(),
        frozen: fr.iter().map(|r| &**r).collect(),
        train: &data.0,
        val: val.as_ref().map(|v| &*v.0),
        cfg,
        dir: Some(dir),
        resume,
        progress,
        control: None,
    })?;
    Ok(Dynamic::from(TrainResultV(std::rc::Rc::new(res))))
}

fn summary_table(r: &TrainResult) -> Table {
    let mut t = Table::new(
        format!("training: {} steps ({}), {:.1} s", r.steps, r.stopped, r.wall_s),
        &["network", "train clean", "train adv", "val clean", "val adv (black-box)"],
    );
    let c = |v: Option<f64>| v.map(Cell::rate).unwrap_or(Cell::Empty);
    for s in &r.trainees {
        let _ = t.push(vec![
            Cell::text(&s.label),
            c(s.train_clean_acc),
            c(s.train_adv_acc),
            c(s.val_clean_acc),
            c(s.val_adv_acc),
        ]);
    }
    if let Some(d) = &r.dir {
        t.note(format!("run directory: {}", d.display()));
    }
    t
}

pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<TrainResultV>("TrainResult");
    engine.register_fn("to_string", |r: &mut TrainResultV| summary_table(&r.0).render());
    engine.register_fn("to_debug", |r: &mut TrainResultV| summary_table(&r.0).render());
    engine.register_get("history", |r: &mut TrainResultV| r.0.history.clone());
    engine.register_get("steps", |r: &mut TrainResultV| r.0.steps as i64);
    engine.register_get("stopped", |r: &mut TrainResultV| r.0.stopped.clone());
    engine.register_get("wall_s", |r: &mut TrainResultV| r.0.wall_s);
    engine.register_get("best_step", |r: &mut TrainResultV| {
        r.0.best_step.map(|s| Dynamic::from_int(s as i64)).unwrap_or(Dynamic::UNIT)
    });
    engine.register_get("dir", |r: &mut TrainResultV| {
        r.0.dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default()
    });
    engine.register_get("checkpoint", |r: &mut TrainResultV| {
        r.0.checkpoint.as_ref().map(|d| d.display().to_string()).unwrap_or_default()
    });
    engine.register_get("trainees", |r: &mut TrainResultV| -> Array {
        r.0.trainees.iter().map(|s| json_to_dynamic(&serde_json::to_value(s).unwrap_or_default())).collect()
    });
    doc(
        "table",
        &["r: TrainResult"],
        "Table",
        "Per-network summary: last train clean/adversarial accuracy and validation clean/black-box accuracy.",
    )
    .register_into_engine(engine, |r: &mut TrainResultV| summary_table(&r.0));

    doc(
        "train",
        &["net: Model", "data: Dataset", "opts: Map"],
        "TrainResult | Run",
        "Standard (clean) training of one network: the paper's fine-tuning step and undefended baselines.\n\
         Options: steps | epochs, batch, lr, optimizer (\"sgd\"|\"adam\"), momentum, weight_decay, nesterov,\n\
         lr_schedule (\"constant\"|\"cosine\"|\"dann\"|#{every, gamma}), val (Dataset), eval_every, val_batches,\n\
         patience (early stopping), keep_best, augment, seed, precision, channels_last, log_every,\n\
         checkpoint_every, name (run sub-directory), resume (run or checkpoint dir), progress, config (RON preset), guard,\n\
         steer ([#{step: 5, lr: 0.01}, ...]: planned changes of r_adv, r_da, lambda, lr, eps, alpha at given steps),\n\
         background (true: return a Run at once and train on its own thread; see :help status), threads (a\n\
         background run's intra-op CPU threads; default the session's).",
    )
    .register_into_engine(engine, |net: ModelV, data: DatasetV, opts: Map| -> RResult<Dynamic> {
        let valid: Vec<&str> = COMMON.to_vec();
        let o = Opts::new("train", opts, &valid)?;
        guard("train", || do_train("train", o, false, vec![net], vec![], data))
    });
    doc("train", &["net: Model", "data: Dataset"], "TrainResult", "Standard training with default options.")
        .register_into_engine(engine, |net: ModelV, data: DatasetV| -> RResult<Dynamic> {
            guard("train", || do_train("train", Opts::empty("train"), false, vec![net], vec![], data))
        });
    doc(
        "satm",
        &["opts: Map"],
        "TrainResult | Run",
        "Simultaneous Adversarial Training (Algorithm 1) of the networks in `nets`, with optional `frozen` sources\n\
         (frozen only = Ensemble Adversarial Training). Each step every trainee trains on clean data + r_adv × CE on\n\
         adversarial examples crafted on a source network (never itself) + r_da × DA loss through a gradient reversal layer.\n\
         Options: nets (array of Models, required), frozen, data (Dataset, required), val, r_adv (1.0), r_da (0.1),\n\
         white_box (0), eps (16/256), alpha (eps/2), attack (\"r_step_ll\"), target (\"true\" = the paper's Algorithm 1 |\n\
         \"least_likely\" = Tramèr), sources (\"round_robin\" | \"random\" | \"all\" | [[1],[0]]), lambda (number | \"dann\"),\n\
         da_hidden (256), and every option of train() (background: true returns a Run at once).",
    )
    .register_into_engine(engine, |opts: Map| -> RResult<Dynamic> {
        let valid: Vec<&str> = COMMON.iter().chain(SATM_ONLY).copied().collect();
        let o = Opts::new("satm", opts, &valid)?;
        let nets = o.items::<ModelV>("nets", "Model")?;
        let frozen = o.items::<ModelV>("frozen", "Model")?;
        let data = o.opt_item::<DatasetV>("data", "Dataset")?.ok_or_else(|| script_err("satm: option 'data' (a Dataset) is required"))?;
        if nets.is_empty() {
            return Err(script_err("satm: option 'nets' must hold at least one Model to train"));
        }
        guard("satm", || do_train("satm", o, true, nets, frozen, data))
    });
}
