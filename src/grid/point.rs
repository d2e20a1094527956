//! One grid point: its markers (`done`, `failed`, `running`), its state, and the `satm run` child that computes it.
//!
//! Markers are JSON files written atomically, so a point is never half-marked: `done` appears only after the child
//! exited 0; `failed` after it exited otherwise on its own; an interrupted run (Ctrl-C, SIGTERM, preemption) leaves
//! neither and counts as missing, so the next run or the requeued array task starts it again (resuming from
//! whatever checkpoints the script left in the run directory).
use super::GridFile;
use crate::core::fsutil;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const DONE: &str = "done";
pub const FAILED: &str = "failed";
pub const RUNNING: &str = "running";
pub const LOG: &str = "log.txt";
/// How much of the child's output log.txt keeps (the tail).
const LOG_KEEP: usize = 256 << 10;
/// How much of the output tail goes into the `failed` marker.
const FAILED_TAIL: usize = 4 << 10;

/// Written atomically after the point's `satm run` exited 0.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoneMarker {
    pub exit_code: i32,
    pub wall_s: f64,
    pub finished: String,
    pub host: String,
    #[serde(default)]
    pub slurm_job: Option<String>,
}

/// Written atomically after the point's `satm run` failed on its own (not interrupted by satm grid).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedMarker {
    /// The exit code, or None when a signal killed it.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub wall_s: f64,
    pub finished: String,
    pub host: String,
    #[serde(default)]
    pub slurm_job: Option<String>,
    /// The last few KiB of the child's stdout and stderr (all of the kept tail is in log.txt).
    pub output_tail: String,
}

/// Present while a point runs: who runs it, so `status` can tell a live run from a crashed one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningMarker {
    pub pid: u32,
    pub host: String,
    pub started: String,
    #[serde(default)]
    pub slurm_job: Option<String>,
}

/// A point's state as seen from its markers (and from squeue, see `status`).
#[derive(Debug, Clone, PartialEq)]
pub enum PointState {
    Done,
    /// Running, with who runs it.
    Running(String),
    /// Waiting in the Slurm queue (with squeue's reason).
    Queued(String),
    Failed(String),
    /// Never run, or interrupted (the detail says which).
    Missing(String),
}

impl PointState {
    pub fn label(&self) -> &'static str {
        match self {
            PointState::Done => "done",
            PointState::Running(_) => "running",
            PointState::Queued(_) => "queued",
            PointState::Failed(_) => "failed",
            PointState::Missing(_) => "missing",
        }
    }
    pub fn detail(&self) -> &str {
        match self {
            PointState::Done => "",
            PointState::Running(s) | PointState::Queued(s) | PointState::Failed(s) | PointState::Missing(s) => s,
        }
    }
}

/// This machine's host name (for markers; a pid only means something on its own host).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "?".into())
}

/// `jobid_taskid` when running as a Slurm array task.
pub fn slurm_job() -> Option<String> {
    let job = std::env::var("SLURM_ARRAY_JOB_ID").or_else(|_| std::env::var("SLURM_JOB_ID")).ok()?;
    match std::env::var("SLURM_ARRAY_TASK_ID") {
        Ok(t) => Some(format!("{job}_{t}")),
        Err(_) => Some(job),
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    fsutil::atomic_write(path, serde_json::to_string_pretty(v)?.as_bytes())
}

/// Whether a process with this pid is alive (not a zombie) and its command line mentions `needle`
/// (so a recycled pid does not count).
fn pid_alive_with(pid: u32, needle: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the first field after the parenthesised command name.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).unwrap_or("?");
    if state == "Z" || state == "X" {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).contains(needle)
}

/// The state from the markers alone. A `running` marker counts only when its process is alive on this host, or
/// when it was written by a Slurm task (squeue decides those in `status`).
pub fn marker_state(dir: &Path) -> PointState {
    if dir.join(DONE).exists() {
        return PointState::Done;
    }
    if let Some(r) = read_json::<RunningMarker>(&dir.join(RUNNING)) {
        let here = hostname();
        let needle = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if r.host == here && pid_alive_with(r.pid, &needle) {
            return PointState::Running(format!("pid {} on {}", r.pid, r.host));
        }
        if r.host != here {
            return PointState::Running(format!(
                "pid {} on {}{} (another host; cannot check)",
                r.pid,
                r.host,
                r.slurm_job.as_deref().map(|j| format!(", slurm {j}")).unwrap_or_default()
            ));
        }
        return PointState::Missing(format!("interrupted (started {}, its process is gone)", r.started));
    }
    if let Some(f) = read_json::<FailedMarker>(&dir.join(FAILED)) {
        let how = match (f.exit_code, f.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown exit".into(),
        };
        let last = f.output_tail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
        return PointState::Failed(if last.is_empty() { how } else { format!("{how}: {last}") });
    }
    if dir.join(FAILED).exists() {
        return PointState::Failed("unreadable failed marker".into());
    }
    PointState::Missing(String::new())
}

/// Keeps the last `cap` bytes written to it.
struct Tail {
    buf: Vec<u8>,
    cap: usize,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > self.cap {
            let cut = self.buf.len() - self.cap;
            self.buf.drain(..cut);
        }
    }
}

/// How a point's run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done {
        wall_s: f64,
    },
    Failed {
        exit_code: Option<i32>,
        signal: Option<i32>,
        wall_s: f64,
    },
    /// Stopped by satm grid (Ctrl-C, SIGTERM): no marker, the point stays missing.
    Interrupted {
        wall_s: f64,
    },
}

/// A running `satm run` child for one point.
pub struct ChildRun {
    child: Child,
    tail: Arc<Mutex<Tail>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
    dir: PathBuf,
    pub index: usize,
    pub name: String,
}

/// The absolute run directory of point `index`.
pub fn point_dir(grid: &GridFile, grid_dir: &Path, index: usize) -> PathBuf {
    grid_dir.join(&grid.points[index].dir)
}

fn pump(mut src: impl Read, tail: Arc<Mutex<Tail>>, tee: Option<Box<dyn Write + Send>>) {
    let mut tee = tee;
    let mut chunk = [0u8; 8192];
    loop {
        match src.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(t) = tee.as_mut() {
                    let _ = t.write_all(&chunk[..n]);
                    let _ = t.flush();
                }
                if let Ok(mut t) = tail.lock() {
                    t.push(&chunk[..n]);
                }
            }
        }
    }
}

impl ChildRun {
    /// Starts point `index`: clears an old `failed` marker (this is a retry), writes `running`, spawns
    /// `satm run SCRIPT --set ... --out DIR --quiet` in its own process group (so a terminal Ctrl-C reaches only
    /// satm grid, which forwards it) and collects its output; with `tee`, the output also goes to ours (Slurm logs).
    pub fn spawn(grid: &GridFile, grid_dir: &Path, index: usize, tee: bool) -> Result<ChildRun> {
        use std::os::unix::process::CommandExt;
        let spec = grid
            .points
            .get(index)
            .with_context(|| format!("grid has {} points, no point {index}", grid.points.len()))?;
        let dir = point_dir(grid, grid_dir, index);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating run directory {}", dir.display()))?;
        let exe = std::env::current_exe().context("locating the satm binary")?;
        let mut cmd = Command::new(&exe);
        cmd.args(&spec.run_args).arg("--out").arg(&dir);
        cmd.current_dir(&grid.cwd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.process_group(0);
        if dir.join(FAILED).exists() {
            std::fs::remove_file(dir.join(FAILED))
                .with_context(|| format!("removing old {}", dir.join(FAILED).display()))?;
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {} for point {}", exe.display(), spec.name))?;
        let marker = RunningMarker {
            pid: child.id(),
            host: hostname(),
            started: crate::script::state::timestamp(),
            slurm_job: slurm_job(),
        };
        if let Err(e) = write_json(&dir.join(RUNNING), &marker) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        let tail = Arc::new(Mutex::new(Tail { buf: Vec::new(), cap: LOG_KEEP }));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let t = tail.clone();
            let tee: Option<Box<dyn Write + Send>> = if tee { Some(Box::new(std::io::stdout())) } else { None };
            readers.push(std::thread::spawn(move || pump(out, t, tee)));
        }
        if let Some(err) = child.stderr.take() {
            let t = tail.clone();
            let tee: Option<Box<dyn Write + Send>> = if tee { Some(Box::new(std::io::stderr())) } else { None };
            readers.push(std::thread::spawn(move || pump(err, t, tee)));
        }
        Ok(ChildRun { child, tail, readers, started: Instant::now(), dir, index, name: spec.name.clone() })
    }

    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait().with_context(|| format!("waiting for point {}", self.name))
    }

    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Sends `sig` to the child's process group (the child and anything it started).
    pub fn signal(&self, sig: i32) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) with a negative pid signals the process group the child leads (it was spawned with
        // process_group(0)); it has not been reaped yet, so the group id cannot have been recycled.
        unsafe {
            libc::kill(-pid, sig);
        }
    }

    /// Writes log.txt and the marker for how the child ended, and removes `running`. `interrupted`: satm grid
    /// stopped it on purpose, so no marker is written and the point stays missing.
    pub fn finish(mut self, status: ExitStatus, interrupted: bool) -> Result<Outcome> {
        use std::os::unix::process::ExitStatusExt;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let wall_s = self.started.elapsed().as_secs_f64();
        let bytes = self.tail.lock().map(|t| t.buf.clone()).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let mut log = text.clone();
        log.push_str(&format!(
            "\n[satm grid] point {} ended: {} after {:.1} s{}\n",
            self.name,
            status,
            wall_s,
            if interrupted { " (interrupted by satm grid)" } else { "" }
        ));
        fsutil::atomic_write(&self.dir.join(LOG), log.as_bytes())?;
        let outcome = if interrupted && !status.success() {
            Outcome::Interrupted { wall_s }
        } else if status.success() {
            let m = DoneMarker {
                exit_code: 0,
                wall_s,
                finished: crate::script::state::timestamp(),
                host: hostname(),
                slurm_job: slurm_job(),
            };
            write_json(&self.dir.join(DONE), &m)?;
            Outcome::Done { wall_s }
        } else {
            let start = text.len().saturating_sub(FAILED_TAIL);
            let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
            let m = FailedMarker {
                exit_code: status.code(),
                signal: status.signal(),
                wall_s,
                finished: crate::script::state::timestamp(),
                host: hostname(),
                slurm_job: slurm_job(),
                output_tail: text[start..].to_string(),
            };
            write_json(&self.dir.join(FAILED), &m)?;
            Outcome::Failed { exit_code: status.code(), signal: status.signal(), wall_s }
        };
        let _ = std::fs::remove_file(self.dir.join(RUNNING));
        Ok(outcome)
    }
}

static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only atomic stores here: they are async-signal-safe.
    if sig == libc::SIGTERM {
        TERM.store(true, Ordering::SeqCst);
    }
    crate::core::cancel::request();
}

/// Installs a handler that turns SIGTERM (and with `int` also SIGINT) into the cancel flag, so executors stop their
/// children cleanly instead of dying with them running.
pub fn install_signal_handlers(int: bool) {
    let mut sigs = vec![libc::SIGTERM];
    if int {
        sigs.push(libc::SIGINT);
    }
    for sig in sigs {
        // SAFETY: a zeroed sigaction with an async-signal-safe handler, installed with the documented libc call.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Whether a SIGTERM arrived (time limit or preemption under Slurm).
pub fn got_sigterm() -> bool {
    TERM.load(Ordering::SeqCst)
}

/// Stops a child: SIGINT (satm run checkpoints and stops after the current step), then SIGTERM after `grace`,
/// then SIGKILL after another `grace`. Returns its exit status.
pub fn stop_child(run: &mut ChildRun, grace: std::time::Duration) -> Result<ExitStatus> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        run.signal(sig);
        let t0 = Instant::now();
        while t0.elapsed() < grace {
            if let Some(st) = run.try_wait()? {
                return Ok(st);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    run.signal(libc::SIGKILL);
    run.child.wait().with_context(|| format!("waiting for point {}", run.name))
}
