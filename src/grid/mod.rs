//! Experiment grids: expand, run locally or as a Slurm job array, report status, collect into tables.
//!
//! `satm grid SCRIPT --over fold=0..4 --over arm=a,b` writes GRIDDIR/grid.json (the points, the exact command, the
//! satm version, the seed, the script and its sha256) and runs every point as `satm run SCRIPT --set ... --out
//! GRIDDIR/points/<name> --quiet`, either here (`--executor local`, N at a time) or as one Slurm array task per point
//! (`--executor slurm`, through `satm grid run-point GRIDDIR I`). Points are idempotent: a point with a `done` marker
//! is never run again. `satm grid status` and `satm grid collect` read the markers and the results.
pub mod collect;
pub mod expand;
pub mod local;
pub mod point;
pub mod slurm;

use crate::core::{cancel, fsutil};
use anyhow::{Context, Result, bail};
use expand::Param;
use point::PointState;
use serde::{Deserialize, Serialize};
use slurm::SlurmProfile;
use std::path::{Path, PathBuf};

/// What `satm grid` is asked to do (the command line's clap types are in `cli::grid`).
#[derive(Debug, Clone)]
pub enum Action {
    /// Run (or submit) a grid: a script and its axes, or an existing grid directory to resume.
    Launch(Launch),
    /// done / running / queued / failed / missing per point.
    Status(PathBuf),
    /// Merge every point's results.json into tables (saved to GRIDDIR/collected/ or `Session::out`).
    Collect { dir: PathBuf, fold_key: String, strict: bool },
    /// Run (or submit) the missing points of an existing grid again.
    Submit(Launch),
    /// Run point `index` of the grid (what each Slurm array task does).
    RunPoint { dir: PathBuf, index: usize },
}

/// How to launch a grid: `satm grid SCRIPT ...` and `satm grid submit GRIDDIR ...` (see `cli::grid::LaunchArgs` for
/// each option's meaning). No `Default`: a grace of 0 s would kill stopped points at once.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The script to run at every point, or an existing grid directory.
    pub target: Option<PathBuf>,
    /// Axes, `KEY=A..B[:STEP]` or `KEY=V1,V2,...`.
    pub over: Vec<String>,
    /// `local` or `slurm`.
    pub executor: Option<String>,
    pub dir: Option<PathBuf>,
    /// Points at once.
    pub jobs: Option<usize>,
    pub dry_run: bool,
    pub retry_failed: bool,
    /// Slurm: wait until the tasks have left the queue.
    pub wait: bool,
    /// Seconds a stopped point gets after SIGINT before SIGTERM (and again before SIGKILL).
    pub grace: u64,
    pub slurm: SlurmFlags,
}

/// Slurm resources given on the command line; they override the profile.
#[derive(Debug, Clone, Default)]
pub struct SlurmFlags {
    /// A RON file, or a name under configs/.
    pub profile: Option<String>,
    pub cpus_per_task: Option<u32>,
    pub gres: Option<String>,
    pub time: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
}

/// The session options of the command line that a grid passes on to every point (`--set` values become the
/// points' fixed parameters; `out` is where `collect` writes).
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub set: Vec<String>,
    pub out: Option<PathBuf>,
    pub device: Option<String>,
    pub threads: Option<usize>,
    pub seed: Option<u64>,
    pub precision: Option<String>,
    pub quiet: bool,
}

/// One point of the grid as grid.json records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointSpec {
    pub index: usize,
    /// `k=v,k=v` in axis order.
    pub name: String,
    /// The run directory, relative to the grid directory.
    pub dir: String,
    pub params: Vec<Param>,
    /// Arguments of `satm` for this point, without `--out` (added with the absolute run directory at run time).
    pub run_args: Vec<String>,
}

/// One `sbatch` submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub job_id: String,
    pub array: String,
    pub submitted: String,
}

/// The Slurm side of a grid: the resources used and every submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlurmRecord {
    pub profile: SlurmProfile,
    /// The satm binary the array tasks run.
    pub exe: PathBuf,
    pub submissions: Vec<Submission>,
}

/// GRIDDIR/grid.json: everything needed to run, rerun and collect the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridFile {
    pub satm_version: String,
    pub created: String,
    /// The exact command line that created the grid.
    pub command: Vec<String>,
    /// Working directory of every point (relative paths in the script resolve from here).
    pub cwd: PathBuf,
    pub script: PathBuf,
    pub script_sha256: String,
    pub seed: u64,
    /// `--set` parameters shared by every point.
    pub base: Vec<Param>,
    /// Session flags passed on to every point (--seed, --device, --threads, --precision).
    pub session_args: Vec<String>,
    /// The axis keys in order.
    pub axes: Vec<String>,
    pub points: Vec<PointSpec>,
    pub executor: String,
    #[serde(default)]
    pub slurm: Option<SlurmRecord>,
    /// Later invocations on this grid (resumes, script changes), one line each.
    #[serde(default)]
    pub history: Vec<String>,
}

pub const GRID_JSON: &str = "grid.json";

/// Reads GRIDDIR/grid.json.
pub fn load_grid(dir: &Path) -> Result<GridFile> {
    let path = dir.join(GRID_JSON);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (is {} a grid directory?)", path.display(), dir.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Writes GRIDDIR/grid.json atomically.
pub fn save_grid(dir: &Path, g: &GridFile) -> Result<()> {
    fsutil::atomic_write(&dir.join(GRID_JSON), serde_json::to_string_pretty(g)?.as_bytes())
}

pub const LOCK: &str = "grid.lock";

/// An advisory lock on a grid directory (flock on GRIDDIR/grid.lock, which names the holder): one `satm grid` at a
/// time reads, runs and rewrites a grid, so two never run the same point or lose each other's grid.json updates.
/// The kernel releases it when the holder exits, however it exits.
pub struct GridLock {
    _file: std::fs::File,
}

/// Takes the lock on `dir` (created if missing), or fails at once naming the process that holds it.
pub fn lock_grid(dir: &Path) -> Result<GridLock> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir).with_context(|| format!("creating grid directory {}", dir.display()))?;
    let path = dir.join(LOCK);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err).with_context(|| format!("locking {}", path.display()));
        }
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        let holder = holder.trim();
        bail!(
            "{} is in use by another satm grid ({}); wait for it to finish or stop it, then run again",
            dir.display(),
            if holder.is_empty() { "its pid is not written yet".to_string() } else { holder.to_string() }
        );
    }
    let me =
        format!("pid {} on {}, since {}", std::process::id(), point::hostname(), crate::script::state::timestamp());
    f.set_len(0)
        .and_then(|_| f.rewind())
        .and_then(|_| f.write_all(me.as_bytes()))
        .and_then(|_| f.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(GridLock { _file: f })
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir().context("reading the working directory")?.join(p))
}

/// Builds the grid (not yet written) from the command line.
pub fn build_grid(script: &Path, args: &Launch, session: &Session) -> Result<GridFile> {
    let script = absolute(script)?;
    let bytes = std::fs::read(&script).with_context(|| format!("reading script {}", script.display()))?;
    let axes = args.over.iter().map(|s| expand::parse_axis(s)).collect::<Result<Vec<_>>>()?;
    let mut base = Vec::new();
    for kv in &session.set {
        let (k, v) = kv.split_once('=').with_context(|| format!("--set '{kv}': expected key=value"))?;
        let k = k.trim();
        expand::check_key(k, "--set", kv)?;
        if axes.iter().any(|a| a.key == k) {
            bail!("'{k}' is both a --set parameter and a --over axis");
        }
        let raw = v.trim().to_string();
        base.push(Param { key: k.to_string(), value: expand::typed(&raw), raw });
    }
    let seed = session.seed.unwrap_or(0);
    let mut session_args = vec!["--seed".to_string(), seed.to_string()];
    for (flag, v) in [("--device", &session.device), ("--precision", &session.precision)] {
        if let Some(v) = v {
            session_args.extend([flag.to_string(), v.clone()]);
        }
    }
    if let Some(t) = session.threads {
        session_args.extend(["--threads".to_string(), t.to_string()]);
    }
    let script_s =
        script.to_str().with_context(|| format!("script path {} is not UTF-8", script.display()))?.to_string();
    let mut points = Vec::new();
    for (index, params) in expand::cartesian(&axes)?.into_iter().enumerate() {
        let mut run_args = vec!["run".to_string(), script_s.clone()];
        for p in base.iter().chain(params.iter()) {
            run_args.extend(["--set".to_string(), p.set_arg()]);
        }
        run_args.push("--quiet".into());
        run_args.extend(session_args.iter().cloned());
        points.push(PointSpec {
            index,
            name: expand::point_name(&params),
            dir: format!("points/{}", expand::dir_name(&params)),
            params,
            run_args,
        });
    }
    Ok(GridFile {
        satm_version: crate::VERSION.to_string(),
        created: crate::script::state::timestamp(),
        command: std::env::args().collect(),
        cwd: std::env::current_dir().context("reading the working directory")?,
        script,
        script_sha256: sha256_hex(&bytes),
        seed,
        base,
        session_args,
        axes: axes.iter().map(|a| a.key.clone()).collect(),
        points,
        executor: args.executor.clone().unwrap_or_else(|| "local".into()),
        slurm: None,
        history: vec![],
    })
}

/// The default grid directory: runs/<script stem>/grid-<hash of script path, points and flags>, so repeating a
/// command resumes its grid and a different grid never lands in the same place.
fn default_dir(g: &GridFile) -> PathBuf {
    let stem = g.script.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "grid".into());
    let key = serde_json::json!([g.script, g.points.iter().map(|p| &p.run_args).collect::<Vec<_>>()]).to_string();
    PathBuf::from("runs").join(stem).join(format!("grid-{}", &sha256_hex(key.as_bytes())[..8]))
}

/// Every point's state: markers, refined by squeue when the grid has Slurm submissions.
pub fn point_states(g: &GridFile, dir: &Path) -> Vec<PointState> {
    let jobs: Vec<String> =
        g.slurm.as_ref().map(|s| s.submissions.iter().map(|x| x.job_id.clone()).collect()).unwrap_or_default();
    let queue = slurm::queue_states(&jobs);
    g.points
        .iter()
        .map(|p| {
            let ms = point::marker_state(&dir.join(&p.dir));
            if ms == PointState::Done {
                return ms;
            }
            match queue.as_ref().and_then(|q| q.get(&p.index)) {
                Some((st, reason)) => match st.as_str() {
                    "RUNNING" | "COMPLETING" | "CONFIGURING" => PointState::Running(format!("slurm {st}")),
                    "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESIZING" | "SUSPENDED" => {
                        PointState::Queued(format!("slurm {st} {reason}").trim().to_string())
                    }
                    _ => ms,
                },
                None => ms,
            }
        })
        .collect()
}

fn counts(states: &[PointState]) -> String {
    let mut parts = Vec::new();
    for label in ["done", "running", "queued", "failed", "missing"] {
        let n = states.iter().filter(|s| s.label() == label).count();
        if n > 0 || label == "done" {
            parts.push(format!("{n} {label}"));
        }
    }
    format!("{} points: {}", states.len(), parts.join(", "))
}

/// Prints the status table; returns the states.
fn print_status(g: &GridFile, dir: &Path) -> Vec<PointState> {
    let states = point_states(g, dir);
    let mut t = crate::core::report::Table::new(format!("grid {}", dir.display()), &["#", "point", "state", "detail"]);
    for (p, s) in g.points.iter().zip(&states) {
        let _ = t.push(vec![
            crate::core::report::Cell::Int { value: p.index as i64 },
            crate::core::report::Cell::text(p.name.clone()),
            crate::core::report::Cell::text(s.label()),
            crate::core::report::Cell::text(s.detail().to_string()),
        ]);
    }
    t.note(counts(&states));
    println!("{}", t.render());
    states
}

fn resolve_profile(name: &str) -> Result<PathBuf> {
    if !Path::new(name).is_file()
        && !name.starts_with("slurm_")
        && let Ok(p) = crate::config::resolve(&format!("slurm_{name}"))
    {
        return Ok(p);
    }
    crate::config::resolve(name)
}

/// The Slurm profile: --profile (else what the grid used, else defaults), then the flags on top.
fn slurm_profile(args: &Launch, recorded: Option<&SlurmProfile>) -> Result<SlurmProfile> {
    let s = &args.slurm;
    let mut p = match &s.profile {
        Some(n) => {
            let path = resolve_profile(n)?;
            crate::config::load::<SlurmProfile>(&path).with_context(|| format!("slurm profile {}", path.display()))?
        }
        None => recorded.cloned().unwrap_or_default(),
    };
    if let Some(c) = s.cpus_per_task {
        p.cpus_per_task = Some(c);
    }
    for (field, v) in
        [(&mut p.gres, &s.gres), (&mut p.time, &s.time), (&mut p.partition, &s.partition), (&mut p.account, &s.account)]
    {
        if let Some(v) = v {
            *field = Some(v.clone());
        }
    }
    if let Some(j) = args.jobs {
        p.max_parallel = Some(j as u32);
    }
    p.validate()?;
    Ok(p)
}

/// `satm grid SCRIPT ...` and `satm grid submit GRIDDIR ...`.
fn launch(args: &Launch, session: &Session) -> Result<i32> {
    let target = args.target.as_ref().context("give a script (satm grid SCRIPT --over k=a,b) or a grid directory")?;
    if session.out.is_some() {
        bail!("--out is per point; give the grid directory with --dir");
    }
    let resume = target.is_dir();
    // Held until this function returns: the whole read, run and rewrite of grid.json.
    let mut _lock: Option<GridLock> = None;
    let (mut grid, dir) = if resume {
        if !args.over.is_empty() || !session.set.is_empty() || args.dir.is_some() {
            bail!(
                "{} is a grid directory: its points are fixed; --over, --set and --dir apply to a new grid",
                target.display()
            );
        }
        _lock = Some(lock_grid(target)?);
        let g = load_grid(target)?;
        (g, target.clone())
    } else {
        if args.over.is_empty() {
            bail!("give at least one axis with --over KEY=VALUES (e.g. --over fold=0..4)");
        }
        let g = build_grid(target, args, session)?;
        let dir = args.dir.clone().unwrap_or_else(|| default_dir(&g));
        if !args.dry_run || dir.is_dir() {
            _lock = Some(lock_grid(&dir)?);
        }
        match load_grid(&dir) {
            Ok(old) => {
                let same = old
                    .points
                    .iter()
                    .map(|p| (&p.name, &p.run_args))
                    .eq(g.points.iter().map(|p| (&p.name, &p.run_args)));
                if !same {
                    bail!(
                        "{} already holds a different grid ({} points; see its grid.json); choose another --dir",
                        dir.display(),
                        old.points.len()
                    );
                }
                let mut old = old;
                if old.script_sha256 != g.script_sha256 {
                    eprintln!(
                        "satm grid: warning: {} changed since the grid was created (sha256 {} → {}); done points keep their results",
                        g.script.display(),
                        &old.script_sha256[..12.min(old.script_sha256.len())],
                        &g.script_sha256[..12]
                    );
                    old.history.push(format!(
                        "{}: script sha256 changed from {} to {}",
                        g.created, old.script_sha256, g.script_sha256
                    ));
                    old.script_sha256 = g.script_sha256.clone();
                }
                (old, dir)
            }
            Err(_) if dir.join(GRID_JSON).exists() => {
                bail!("{} has an unreadable grid.json", dir.display())
            }
            Err(_) => (g, dir),
        }
    };
    let dir = absolute(&dir)?;
    let executor = args.executor.clone().unwrap_or_else(|| grid.executor.clone());
    if executor != "local" && executor != "slurm" {
        bail!("--executor '{executor}': expected local or slurm");
    }
    let states = point_states(&grid, &dir);
    let mut todo = Vec::new();
    let (mut done, mut failed, mut busy) = (0, 0, 0);
    for (i, s) in states.iter().enumerate() {
        match s {
            PointState::Done => done += 1,
            PointState::Running(_) | PointState::Queued(_) => busy += 1,
            PointState::Failed(_) if !args.retry_failed => failed += 1,
            PointState::Failed(_) | PointState::Missing(_) => todo.push(i),
        }
    }
    eprintln!(
        "satm grid: {} points in {} ({} done, {} running or queued{}); {} to run",
        grid.points.len(),
        dir.display(),
        done,
        busy,
        if failed > 0 { format!(", {failed} failed — add --retry-failed to rerun them") } else { String::new() },
        todo.len()
    );
    if args.dry_run && executor == "local" {
        for &i in &todo {
            let p = &grid.points[i];
            println!("{}  satm {} --out {}", p.name, p.run_args.join(" "), dir.join(&p.dir).display());
        }
        return Ok(0);
    }
    if executor == "local" {
        grid.executor = executor;
        if resume || !args.dry_run {
            grid.history.push(format!(
                "{}: {}",
                crate::script::state::timestamp(),
                std::env::args().collect::<Vec<_>>().join(" ")
            ));
        }
        save_grid(&dir, &grid)?;
        cancel::install_handler(false);
        point::install_signal_handlers(false);
        let quiet = session.quiet;
        let s =
            local::run(&grid, &dir, &todo, args.jobs.unwrap_or(1), std::time::Duration::from_secs(args.grace), quiet)?;
        eprintln!(
            "satm grid: {} done, {} failed, {} interrupted this run; {} were already done",
            s.done, s.failed, s.interrupted, done
        );
        if s.interrupted > 0 || cancel::is_cancelled() {
            return Ok(130);
        }
        return Ok(if s.failed > 0 || failed > 0 { 1 } else { 0 });
    }

    // slurm
    let profile = slurm_profile(args, grid.slurm.as_ref().map(|s| &s.profile))?;
    let exe = std::env::current_exe().context("locating the satm binary")?;
    let stem = grid.script.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "grid".into());
    let job_name: String = format!("satm-{stem}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect();
    if todo.is_empty() {
        eprintln!("satm grid: nothing to submit");
        return Ok(if failed > 0 { 1 } else { 0 });
    }
    let array = slurm::array_spec(&todo, profile.max_parallel);
    let script = slurm::job_script(&profile, &job_name, &array, &dir, &grid.cwd, &exe)?;
    if args.dry_run {
        print!("{script}");
        return Ok(0);
    }
    if !slurm::have("sbatch") {
        bail!(
            "sbatch is not on PATH: the slurm executor needs a Slurm client (try --executor local, or --dry-run to see the script)"
        );
    }
    grid.executor = executor;
    let rec = grid.slurm.get_or_insert_with(|| SlurmRecord {
        profile: profile.clone(),
        exe: exe.clone(),
        submissions: vec![],
    });
    rec.profile = profile;
    rec.exe = exe;
    std::fs::create_dir_all(dir.join("slurm")).with_context(|| format!("creating {}", dir.join("slurm").display()))?;
    // grid.json must be complete before any task can start and read it.
    save_grid(&dir, &grid)?;
    let script_path = dir.join("job.sbatch");
    fsutil::atomic_write(&script_path, script.as_bytes())?;
    let job_id = slurm::submit(&script_path)?;
    if let Some(rec) = grid.slurm.as_mut() {
        rec.submissions.push(Submission {
            job_id: job_id.clone(),
            array: array.clone(),
            submitted: crate::script::state::timestamp(),
        });
    }
    grid.history.push(format!("{}: submitted slurm job {job_id} (array {array})", crate::script::state::timestamp()));
    save_grid(&dir, &grid)?;
    println!("{job_id}");
    eprintln!(
        "satm grid: submitted job {job_id} with {} array tasks; follow it with: satm grid status {}",
        todo.len(),
        dir.display()
    );
    if args.wait {
        cancel::install_handler(false);
        slurm::wait_for(&[job_id])?;
        let states = print_status(&grid, &dir);
        return Ok(if states.iter().all(|s| *s == PointState::Done) { 0 } else { 1 });
    }
    Ok(0)
}

/// `satm grid run-point GRIDDIR I`: what one array task does. Skips a done point; forwards SIGTERM/SIGINT to the
/// point as SIGINT (the trainer checkpoints), and after a SIGTERM requeues the task so it resumes.
fn run_point(dir: &Path, index: usize) -> Result<i32> {
    let dir = absolute(dir)?;
    let grid = load_grid(&dir)?;
    let spec = grid
        .points
        .get(index)
        .with_context(|| format!("{} has {} points, no point {index}", dir.display(), grid.points.len()))?;
    let pdir = dir.join(&spec.dir);
    if point::marker_state(&pdir) == PointState::Done {
        eprintln!("satm grid: point {index} ({}) is already done; skipping", spec.name);
        return Ok(0);
    }
    point::install_signal_handlers(true);
    let profile = grid.slurm.as_ref().map(|s| s.profile.clone()).unwrap_or_default();
    // Leave room before Slurm's own kill at the time limit.
    let grace = std::time::Duration::from_secs((u64::from(profile.signal_seconds) * 3 / 4).max(5));
    eprintln!("satm grid: point {index} ({}) in {}", spec.name, pdir.display());
    let mut run = point::ChildRun::spawn(&grid, &dir, index, true)?;
    let (status, interrupted) = loop {
        if let Some(st) = run.try_wait()? {
            break (st, cancel::is_cancelled());
        }
        if cancel::is_cancelled() {
            eprintln!(
                "satm grid: signal received; stopping point {index} (SIGINT, then SIGTERM after {} s)",
                grace.as_secs()
            );
            break (point::stop_child(&mut run, grace)?, true);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let outcome = run.finish(status, interrupted)?;
    match outcome {
        point::Outcome::Done { wall_s } => {
            eprintln!("satm grid: point {index} done ({wall_s:.1} s)");
            Ok(0)
        }
        point::Outcome::Failed { exit_code, .. } => {
            eprintln!("satm grid: point {index} failed (see {})", pdir.join(point::LOG).display());
            Ok(exit_code.filter(|c| *c != 0).unwrap_or(1))
        }
        point::Outcome::Interrupted { .. } => {
            let restarts: u32 = std::env::var("SLURM_RESTART_COUNT").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
            if point::got_sigterm() && std::env::var_os("SLURM_JOB_ID").is_some() {
                if restarts < profile.max_requeues {
                    match slurm::requeue_self() {
                        Ok(id) => eprintln!(
                            "satm grid: requeued job {id} (restart {} of {})",
                            restarts + 1,
                            profile.max_requeues
                        ),
                        Err(e) => eprintln!("satm grid: could not requeue: {e:#}"),
                    }
                } else {
                    eprintln!("satm grid: not requeueing: already restarted {restarts} times (max_requeues)");
                }
            }
            Ok(if point::got_sigterm() { 143 } else { 130 })
        }
    }
}

fn status(dir: &Path) -> Result<i32> {
    let g = load_grid(dir)?;
    print_status(&g, dir);
    Ok(0)
}

fn collect_cmd(dir: &Path, fold_key: &str, strict: bool, out: Option<&Path>) -> Result<i32> {
    let g = load_grid(dir)?;
    if !g.axes.iter().any(|k| k == fold_key) {
        eprintln!(
            "satm grid: note: the grid has no '{fold_key}' axis (axes: {}); each point is its own row",
            g.axes.join(", ")
        );
    }
    let c = collect::collect(&g, dir, fold_key)?;
    print!("{}", collect::render_text(&c));
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| dir.join("collected"));
    let files = collect::save(&c, &out)?;
    eprintln!("satm grid: wrote {} files to {}", files.len(), out.display());
    Ok(if strict && !c.complete() { 3 } else { 0 })
}

/// `satm grid ...`; returns the exit code (0 ok, 1 error or failed points, 2 usage, 3 incomplete with --strict,
/// 130 interrupted).
pub fn main(action: &Action, session: &Session) -> i32 {
    let res = match action {
        Action::Status(dir) => status(dir),
        Action::Collect { dir, fold_key, strict } => collect_cmd(dir, fold_key, *strict, session.out.as_deref()),
        Action::Submit(l) => {
            if l.target.as_ref().is_some_and(|t| !t.is_dir()) {
                Err(anyhow::anyhow!(
                    "satm grid submit takes a grid directory, got {}",
                    l.target.as_ref().map(|t| t.display().to_string()).unwrap_or_default()
                ))
            } else {
                launch(l, session)
            }
        }
        Action::RunPoint { dir, index } => run_point(dir, *index),
        Action::Launch(l) => launch(l, session),
    };
    match res {
        Ok(code) => code,
        Err(e) if cancel::is_cancel_error(&e) => {
            eprintln!("satm grid: {e}");
            130
        }
        Err(e) => {
            eprintln!("satm grid: {e:#}");
            1
        }
    }
}
