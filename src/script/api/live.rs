//! Script API for live runs: `satm(#{..., background: true})` / `train(net, data, #{..., background: true})` return a
//! `Run` at once and train on their own thread while the prompt stays usable (status, history, pause, resume, set,
//! stop, wait, snapshot); `watch(dir)` follows a run directory another process writes.
//!
//! Locking: a background run holds every network it uses (trainees and frozen sources) for its whole length
//! (`script::cell::Shared::hold`); anything else touching one meanwhile gets an error naming the run. `snapshot` reads
//! the trainees' weights while the run is paused at a step boundary (`RunControl::is_parked`).
//!
//! Threads: a run's thread sets its own libtorch intra-op thread count (option `threads`, default the session's count
//! when it starts); the prompt keeps the session's count. Runs do not share out cores among themselves: give each of
//! several runs at once `threads` so that together they do not exceed the cores.
use crate::core::cancel;
use crate::core::data::Dataset;
use crate::core::models::{ModelSpec, Net};
use crate::core::train::control::{RunControl, RunState, RunStatus, STEERABLE, SteerEvent};
use crate::core::train::steer::Settings;
use crate::core::train::watch::{Watch, WatchStatus, state_name, status_line, watch_state_name};
use crate::core::train::{self, History, TrainConfig, TrainResult};
use crate::script::api::models::ModelV;
use crate::script::api::train::TrainResultV;
use crate::script::cell::Hold;
use crate::script::convert::{Opts, RResult, guard, script_err};
use crate::script::docs::doc;
use anyhow::{Result, bail};
use rhai::{Array, Dynamic, Engine, Map};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How a trainee's weights can be copied while its run holds it: the VarStore's own variable table (shared with
/// the run's thread, locked per access) and what a fresh network of the same kind needs.
struct Source {
    vars: Arc<Mutex<tch::nn::Variables>>,
    /// BN counters (`num_batches_tracked`), by their state_dict name.
    counters: Vec<(String, Arc<std::sync::atomic::AtomicI64>)>,
    spec: ModelSpec,
    device: tch::Device,
    frozen: Vec<String>,
    channels_last: bool,
}

/// One background run.
pub struct LiveRun {
    pub name: String,
    /// "satm" or "train".
    pub kind: &'static str,
    pub dir: PathBuf,
    pub threads: usize,
    pub control: Arc<RunControl>,
    handle: RefCell<Option<JoinHandle<Result<TrainResult>>>>,
    result: RefCell<Option<std::result::Result<Rc<TrainResult>, String>>>,
    sources: Vec<Source>,
    /// The settings as they will be once every queued `set` is applied.
    queued: RefCell<Settings>,
    /// Whether the run has domain heads (started with r_da > 0): r_da and lambda can only be steered then.
    has_da: bool,
    /// Whether some trainee has a source network (r_adv and r_da have examples to work on).
    has_source: bool,
}

/// A background run as scripts see it; assignment shares it.
#[derive(Clone)]
pub struct RunV(pub Rc<LiveRun>);

/// A run directory followed read-only.
#[derive(Clone)]
pub struct WatcherV(pub Rc<RefCell<Watch>>);

thread_local! {
    /// The session's background runs, in start order (what `:runs` and `runs()` list).
    static RUNS: RefCell<Vec<Rc<LiveRun>>> = const { RefCell::new(Vec::new()) };
}

/// A copy of a data set for another thread: the images tensor shares its storage (read-only for training).
fn detached(d: &Dataset) -> Dataset {
    Dataset {
        name: d.name.clone(),
        images: d.images.shallow_clone(),
        labels: d.labels.clone(),
        groups: d.groups.clone(),
        folds: d.folds.clone(),
        classes: d.classes.clone(),
        paths: d.paths.clone(),
        report: d.report.clone(),
    }
}

/// Everything `spawn` needs from the blocking call's parsing.
pub struct Launch<'a> {
    pub kind: &'static str,
    pub cfg: TrainConfig,
    pub nets: Vec<ModelV>,
    pub frozen: Vec<ModelV>,
    pub data: &'a Dataset,
    pub val: Option<&'a Dataset>,
    pub dir: PathBuf,
    pub resume: Option<PathBuf>,
    pub threads: Option<usize>,
}

/// Starts a background run: holds its networks, starts its thread, returns at once.
pub fn spawn(l: Launch) -> Result<RunV> {
    let name = l.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| l.kind.to_string());
    if let Some(r) = RUNS.with(|r| r.borrow().iter().find(|r| r.name == name && !r.done()).cloned()) {
        bail!("a background run named {} is still going ({}); give another 'name'", name, r.dir.display());
    }
    let threads = l.threads.unwrap_or_else(crate::core::device::threads);
    if !(1..=crate::core::device::MAX_THREADS).contains(&threads) {
        bail!("option 'threads' must be between 1 and {}, got {threads}", crate::core::device::MAX_THREADS);
    }
    let all: Vec<&ModelV> = l.nets.iter().chain(&l.frozen).collect();
    for (i, a) in all.iter().enumerate() {
        if all[..i].iter().any(|b| Arc::ptr_eq(&a.0, &b.0)) {
            bail!("the same model appears twice among nets and frozen");
        }
    }
    let mut sources = vec![];
    let mut holds: Vec<Hold<Net>> = vec![];
    for m in &l.nets {
        let (label, src) = {
            let n = m.read()?;
            let src = Source {
                vars: Arc::clone(&n.vs.variables_),
                counters: n.bn_counters(),
                spec: n.spec.clone(),
                device: n.device(),
                frozen: n.frozen_names(),
                channels_last: n.is_channels_last(),
            };
            (n.label(), src)
        };
        sources.push(src);
        holds.push(m.0.hold(format!(
            "network {label} is being trained by background run {name}; use run.snapshot() for a copy, or run.wait()"
        ))?);
    }
    let mut frozen_holds: Vec<Hold<Net>> = vec![];
    for m in &l.frozen {
        let label = m.read()?.label();
        frozen_holds.push(m.0.hold(format!(
            "network {label} is a frozen source of background run {name}; it is free again when the run ends \
             (run.wait(), or run.stop())"
        ))?);
    }
    let control = Arc::new(RunControl::new());
    let queued = Settings::new(&l.cfg);
    let has_source = crate::core::train::steer::has_source(&l.cfg, l.nets.len() + l.frozen.len());
    control.publish(
        RunStatus { state: RunState::Starting, total: l.cfg.steps, ..RunStatus::default() },
        Some(&History::default()),
    );
    let has_da = l.cfg.r_da > 0.0;
    let (data, val) = (detached(l.data), l.val.map(detached));
    let (ctl, cfg, dir, resume) = (Arc::clone(&control), l.cfg, l.dir.clone(), l.resume);
    let handle = std::thread::Builder::new()
        .name(format!("run {name}"))
        .spawn(move || {
            cancel::detach_current_thread();
            tch::set_num_threads(threads as i32);
            let (mut holds, frozen_holds) = (holds, frozen_holds);
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                train::run(train::Run {
                    trainees: holds.iter_mut().map(|h| h.get_mut()).collect(),
                    frozen: frozen_holds.iter().map(|h| h.get()).collect(),
                    train: &data,
                    val: val.as_ref(),
                    cfg,
                    dir: Some(dir),
                    resume,
                    progress: false,
                    control: Some(Arc::clone(&ctl)),
                })
            }))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the training thread panicked")));
            // The networks are free before the run says it ended.
            drop(holds);
            drop(frozen_holds);
            match &res {
                Ok(r) => {
                    let mut st = ctl.status();
                    st.step = r.steps;
                    st.eta_s = None;
                    ctl.publish(st, Some(&r.history));
                    ctl.finish(RunState::Finished, None);
                }
                Err(e) => ctl.finish(RunState::Failed, Some(format!("{e:#}"))),
            }
            res
        })
        .map_err(|e| anyhow::anyhow!("cannot start a thread for the run: {e}"))?;
    let run = Rc::new(LiveRun {
        name,
        kind: l.kind,
        dir: l.dir,
        threads,
        control,
        handle: RefCell::new(Some(handle)),
        result: RefCell::new(None),
        sources,
        queued: RefCell::new(queued),
        has_da,
        has_source,
    });
    RUNS.with(|r| r.borrow_mut().push(Rc::clone(&run)));
    Ok(RunV(run))
}

impl LiveRun {
    /// Joins the thread once it has ended, keeping its result.
    fn collect(&self) {
        let finished = self.handle.borrow().as_ref().is_some_and(|h| h.is_finished());
        if finished && let Some(h) = self.handle.borrow_mut().take() {
            let r = match h.join() {
                Ok(Ok(r)) => Ok(Rc::new(r)),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("the training thread panicked".to_string()),
            };
            *self.result.borrow_mut() = Some(r);
        }
    }

    pub fn done(&self) -> bool {
        self.collect();
        self.result.borrow().is_some()
    }

    /// The state's name; a run ended by `stop` is "stopped".
    pub fn state(&self) -> String {
        self.collect();
        match &*self.result.borrow() {
            Some(Ok(r)) if r.stopped == "stopped" => "stopped".into(),
            Some(Ok(_)) => "finished".into(),
            Some(Err(_)) => "failed".into(),
            // Parked at a step boundary is paused whatever the last published status says.
            None if self.control.is_parked() => "paused".into(),
            None if self.control.stop_requested() => "stopping".into(),
            // Resumed but not yet through a step since: the last status still says paused.
            None => match self.control.status().state {
                RunState::Paused if !self.control.is_paused() => "running".into(),
                s => state_name(s).into(),
            },
        }
    }

    /// Blocks until the run ends; Ctrl-C ends the wait, not the run.
    fn wait(&self) -> Result<Rc<TrainResult>> {
        while !self.done() {
            if cancel::is_cancelled() {
                return Err(anyhow::Error::new(cancel::Cancelled)
                    .context(format!("stopped waiting; background run {} goes on", self.name)));
            }
            if self.control.is_paused() && !self.control.stop_requested() {
                bail!(
                    "background run {} is paused and would never end: run.resume() it first (or run.stop())",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match self.result.borrow().as_ref() {
            Some(Ok(r)) => Ok(Rc::clone(r)),
            Some(Err(e)) => bail!("background run {} failed: {e}", self.name),
            None => bail!("background run {} left no result", self.name),
        }
    }

    /// Checks the changes against the settings as they will stand once everything queued so far is applied
    /// (the loop's own check, `steer::Settings::check`), then queues them.
    fn set(&self, changes: Vec<(String, f64)>) -> Result<()> {
        if self.done() {
            bail!("background run {} has ended ({}); there is nothing to steer", self.name, self.state());
        }
        if let Some((k, _)) = changes.iter().find(|(k, _)| self.kind == "train" && k != "lr") {
            bail!("{k}: a train() run has no adversarial or domain terms; only lr can be set");
        }
        if changes.iter().any(|(k, _)| k == "lambda") && !self.has_da {
            bail!("lambda: run {} was started with r_da = 0 and has no domain classifier to weigh", self.name);
        }
        let mut next = self.queued.borrow().clone();
        // eps and alpha together: lowering both needs alpha first, raising both eps first.
        let mut changes = changes;
        let alpha_first = changes.iter().any(|(k, v)| k == "alpha" && *v <= next.eps);
        let order = |k: &str| match k {
            "alpha" if alpha_first => 0,
            _ => 1 + STEERABLE.iter().position(|s| *s == k).unwrap_or(STEERABLE.len()),
        };
        changes.sort_by_key(|(k, _)| order(k));
        for (k, v) in &changes {
            next.check(k, *v, self.has_da, self.has_source)?;
            next.set(k, *v);
        }
        for (k, v) in &changes {
            self.control.set(k, *v)?;
        }
        *self.queued.borrow_mut() = next;
        Ok(())
    }

    /// Copies of the trainees' current weights, taken between two steps (the run pauses for the copy and goes on).
    fn snapshot(&self) -> Result<Vec<ModelV>> {
        if !self.done() {
            let was_paused = self.control.is_paused();
            self.control.pause();
            let copied = (|| -> Result<Vec<ModelV>> {
                while !self.control.is_parked() && !self.done() {
                    if cancel::is_cancelled() {
                        return Err(anyhow::Error::new(cancel::Cancelled)
                            .context("snapshot: stopped waiting for the step to end"));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                self.sources.iter().map(copy_of).collect()
            })();
            if !was_paused {
                self.control.resume();
            }
            return copied;
        }
        self.sources.iter().map(copy_of).collect()
    }
}

/// A new network with the current values of `s`'s variables and BN counters (built without drawing initial weights,
/// so a snapshot leaves the prompt's random stream as it was).
fn copy_of(s: &Source) -> Result<ModelV> {
    let mut named: Vec<(String, tch::Tensor)> = {
        let vars = s.vars.lock().unwrap_or_else(|e| e.into_inner());
        tch::no_grad(|| vars.named_variables.iter().map(|(n, t)| (n.clone(), t.detach().copy())).collect())
    };
    named.extend(
        s.counters.iter().map(|(n, c)| (n.clone(), tch::Tensor::from(c.load(std::sync::atomic::Ordering::Relaxed)))),
    );
    let mut net = Net::from_state(&s.spec, s.device, &named)?;
    for f in &s.frozen {
        net.freeze(Some(f));
    }
    if s.channels_last {
        net.set_channels_last(true);
    }
    Ok(ModelV::new(net))
}

fn opt_f(v: Option<f64>) -> Dynamic {
    v.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT)
}

/// The map `status()` returns (live runs and watchers alike).
fn status_map(st: &RunStatus, state: &str) -> Map {
    let mut m = Map::new();
    m.insert("state".into(), state.to_string().into());
    m.insert("step".into(), Dynamic::from_int(st.step as i64));
    m.insert("total".into(), if st.total > 0 { Dynamic::from_int(st.total as i64) } else { Dynamic::UNIT });
    m.insert("img_per_s".into(), Dynamic::from_float(st.img_per_s));
    m.insert("eta_s".into(), opt_f(st.eta_s));
    let trainees: Array = st
        .trainees
        .iter()
        .map(|t| {
            let mut e = Map::new();
            e.insert("label".into(), t.label.clone().into());
            for (k, v) in [
                ("clean_loss", t.clean_loss),
                ("clean_acc", t.clean_acc),
                ("adv_loss", t.adv_loss),
                ("adv_acc", t.adv_acc),
                ("da_loss", t.da_loss),
                ("domain_acc", t.domain_acc),
            ] {
                e.insert(k.into(), opt_f(v));
            }
            Dynamic::from_map(e)
        })
        .collect();
    m.insert("trainees".into(), Dynamic::from_array(trainees));
    let settings: Map = st.settings.iter().map(|(k, v)| (k.as_str().into(), Dynamic::from_float(*v))).collect();
    m.insert("settings".into(), Dynamic::from_map(settings));
    m.insert("error".into(), st.error.clone().map(Dynamic::from).unwrap_or(Dynamic::UNIT));
    m.insert("line".into(), status_line(st).into());
    m
}

fn events_array(events: &[SteerEvent]) -> Array {
    events
        .iter()
        .map(|e| {
            let mut m = Map::new();
            m.insert("step".into(), Dynamic::from_int(e.step as i64));
            m.insert("key".into(), e.key.clone().into());
            m.insert("old".into(), Dynamic::from_float(e.old));
            // `new` is a reserved word in Rhai (`e.new` would not parse): the new value is `value`.
            m.insert("value".into(), Dynamic::from_float(e.new));
            Dynamic::from_map(m)
        })
        .collect()
}

fn run_status(r: &LiveRun) -> Map {
    let st = r.control.status();
    let mut m = status_map(&st, &r.state());
    m.insert("name".into(), r.name.clone().into());
    m.insert("dir".into(), r.dir.display().to_string().into());
    m.insert("threads".into(), Dynamic::from_int(r.threads as i64));
    m.insert("events".into(), Dynamic::from_int(r.control.events().len() as i64));
    if let Some(Err(e)) = &*r.result.borrow() {
        m.insert("error".into(), e.clone().into());
    }
    m
}

fn run_summary(r: &LiveRun) -> String {
    let st = r.control.status();
    let state = r.state();
    let progress = if st.total > 0 { format!("{}/{}", st.step, st.total) } else { format!("{}", st.step) };
    format!("Run[{}: {state}, step {progress}]", r.name)
}

/// `:runs`: every background run of this session with its state and progress.
pub fn runs_listing() -> String {
    let runs: Vec<Rc<LiveRun>> = RUNS.with(|r| r.borrow().clone());
    if runs.is_empty() {
        return "no background runs (start one with satm(#{..., background: true}))".into();
    }
    let mut out = String::new();
    for r in runs {
        let st = r.control.status();
        out.push_str(&format!("{:<12} {:<9} {:>2} threads  {}\n", r.name, r.state(), r.threads, status_line(&st)));
        if let Some(Err(e)) = &*r.result.borrow() {
            out.push_str(&format!("{:<12} error: {e}\n", ""));
        }
        out.push_str(&format!("{:<12} {}\n", "", r.dir.display()));
    }
    out.trim_end().to_string()
}

/// At the end of `satm run` / `satm -e`: waits for the script's background runs (Ctrl-C stops them, with a
/// checkpoint). At the REPL's end (`stop`): stops them, each with a checkpoint.
pub fn finish_all(stop: bool) {
    let runs: Vec<Rc<LiveRun>> = RUNS.with(|r| r.borrow().iter().filter(|r| !r.done()).cloned().collect());
    for r in &runs {
        if stop {
            eprintln!("satm: stopping background run {} (checkpoint in {})", r.name, r.dir.display());
            r.control.stop();
            r.control.resume();
        } else {
            eprintln!("satm: waiting for background run {} to finish (Ctrl-C stops it with a checkpoint)", r.name);
        }
    }
    for r in &runs {
        while !r.done() {
            if cancel::is_cancelled() {
                r.control.stop();
                r.control.resume();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(Err(e)) = &*r.result.borrow() {
            eprintln!("satm: background run {} failed: {e}", r.name);
        }
    }
}

fn watch_status(w: &WatchStatus, dir: &Path) -> Map {
    let mut m = status_map(&w.status, watch_state_name(w));
    m.insert("dir".into(), dir.display().to_string().into());
    m.insert("epoch".into(), Dynamic::from_int(w.epoch as i64));
    m.insert("idle_s".into(), opt_f(w.idle_s));
    m.insert("events".into(), Dynamic::from_int(w.events as i64));
    m.insert(
        "checkpoint".into(),
        w.checkpoint.as_ref().map(|(_, d)| Dynamic::from(d.display().to_string())).unwrap_or(Dynamic::UNIT),
    );
    m.insert("networks".into(), Dynamic::from_array(w.networks.iter().map(|n| n.clone().into()).collect()));
    m
}

pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<RunV>("Run");
    engine.register_fn("to_string", |r: &mut RunV| run_summary(&r.0));
    engine.register_fn("to_debug", |r: &mut RunV| run_summary(&r.0));
    engine.register_get("name", |r: &mut RunV| r.0.name.clone());
    engine.register_get("dir", |r: &mut RunV| r.0.dir.display().to_string());
    engine.register_get("history", |r: &mut RunV| r.0.control.history());
    engine.register_get("events", |r: &mut RunV| events_array(&r.0.control.events()));
    doc(
        "status",
        &["run: Run"],
        "Map",
        "The run now: state (starting | running | paused | stopping | finished | stopped | failed), step, total,\n\
         img_per_s, eta_s, trainees (per network: label, clean_loss, clean_acc, adv_loss, adv_acc, da_loss,\n\
         domain_acc; means over the last log window), settings (r_adv, r_da, lambda, lr, eps, alpha in force),\n\
         events (count), threads, name, dir, error, line (the one-line summary :runs shows).",
    )
    .register_into_engine(engine, |r: &mut RunV| run_status(&r.0));
    doc("pause", &["run: Run"], "()", "Pauses the run at the next step boundary (its networks stay held).")
        .register_into_engine(engine, |r: &mut RunV| -> RResult<()> {
            if r.0.done() {
                return Err(script_err(format!("pause: background run {} has ended ({})", r.0.name, r.0.state())));
            }
            r.0.control.pause();
            Ok(())
        });
    doc("resume", &["run: Run"], "()", "Resumes a paused run.").register_into_engine(engine, |r: &mut RunV| {
        r.0.control.resume();
    });
    doc(
        "set",
        &["run: Run", "changes: Map"],
        "()",
        "Changes settings of a running run from the next step boundary on: r_adv, r_da, lambda (a constant from\n\
         then on), lr (the base rate; the schedule still applies), eps, alpha. Each change is an event (step, key,\n\
         old, value) in run.events and in metrics.jsonl. r_da and lambda need a run started with r_da > 0; a train()\n\
         run takes only lr.",
    )
    .register_into_engine(engine, |r: &mut RunV, changes: Map| -> RResult<()> {
        let o = Opts::new("set", changes, STEERABLE)?;
        let mut list = vec![];
        for k in STEERABLE {
            if let Some(v) = o.opt_f64(k)? {
                list.push((k.to_string(), v));
            }
        }
        if list.is_empty() {
            return Err(script_err(format!("set: give at least one of {}", STEERABLE.join(", "))));
        }
        guard("set", || r.0.set(list))
    });
    doc(
        "stop",
        &["run: Run"],
        "TrainResult",
        "Stops the run after the current step with a checkpoint (resume from it with resume: run.dir), waits for\n\
         it, and returns its result (stopped: \"stopped\"). Ctrl-C ends the wait; the stop still happens.",
    )
    .register_into_engine(engine, |r: &mut RunV| -> RResult<TrainResultV> {
        if !r.0.done() {
            r.0.control.stop();
        }
        guard("stop", || Ok(TrainResultV(r.0.wait()?)))
    });
    doc(
        "wait",
        &["run: Run"],
        "TrainResult",
        "Waits for the run to end and returns what the blocking call would have (an error if the run failed).\n\
         Ctrl-C ends the wait, not the run.",
    )
    .register_into_engine(engine, |r: &mut RunV| -> RResult<TrainResultV> {
        guard("wait", || Ok(TrainResultV(r.0.wait()?)))
    });
    doc(
        "snapshot",
        &["run: Run"],
        "Array",
        "Copies of the trainees' current weights (new Models, one per network in nets), taken between two steps:\n\
         the run pauses for the copy and goes on. Evaluate them while the run trains.",
    )
    .register_into_engine(engine, |r: &mut RunV| -> RResult<Array> {
        guard("snapshot", || Ok(r.0.snapshot()?.into_iter().map(Dynamic::from).collect()))
    });
    doc("runs", &[], "Array", "This session's background runs (Run values), in start order.")
        .register_into_engine(engine, || -> Array {
            RUNS.with(|r| r.borrow().iter().map(|r| Dynamic::from(RunV(Rc::clone(r)))).collect())
        });

    engine.register_type_with_name::<WatcherV>("Watcher");
    let show = |w: &mut WatcherV| -> String {
        let mut b = w.0.borrow_mut();
        let _ = b.refresh();
        let st = b.status();
        format!("Watcher[{}: {}]", b.dir().display(), status_line(&st.status))
    };
    engine.register_fn("to_string", show);
    engine.register_fn("to_debug", show);
    doc(
        "watch",
        &["dir: &str"],
        "Watcher",
        "Follows a run directory another process writes (a `satm run` in another terminal, a Slurm task),\n\
         read-only: w.status() (as run.status(), plus epoch, idle_s, checkpoint, networks; state starting |\n\
         running | finished | ended = stopped before its last step), w.history (plot_curves works), w.events.\n\
         Each access reads what was appended since the last one.",
    )
    .register_into_engine(engine, |dir: &str| -> RResult<WatcherV> {
        guard("watch", || Ok(WatcherV(Rc::new(RefCell::new(Watch::open(Path::new(dir))?)))))
    });
    doc("status", &["w: Watcher"], "Map", "The watched run now (reads what was appended since the last access).")
        .register_into_engine(engine, |w: &mut WatcherV| -> RResult<Map> {
            let mut b = w.0.borrow_mut();
            guard("status", || b.refresh())?;
            Ok(watch_status(&b.status(), b.dir()))
        });
    engine.register_get("history", |w: &mut WatcherV| -> RResult<History> {
        let mut b = w.0.borrow_mut();
        guard("history", || b.refresh())?;
        Ok(b.history().clone())
    });
    engine.register_get("events", |w: &mut WatcherV| -> RResult<Array> {
        let mut b = w.0.borrow_mut();
        guard("events", || b.refresh())?;
        Ok(events_array(b.events()))
    });
}
