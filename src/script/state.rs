//! Session settings shared by all script functions: default device, precision, seed, `--set` parameters and the run
//! directory where outputs go. One per thread (the REPL and `satm run` each have one; tests get a fresh one per thread).
use crate::core::device::Precision;
use rhai::{Dynamic, Map};
use std::cell::RefCell;
use std::path::PathBuf;
use tch::Device;

#[derive(Clone)]
pub struct SessionState {
    pub device: Device,
    pub precision: Precision,
    pub seed: u64,
    /// `--set key=value` parameters, visible to scripts as constants and through `param(name, default)`.
    pub params: Map,
    /// Where this run's outputs go (tables, plots, checkpoints, results.json). Created on first use.
    pub out_dir: Option<PathBuf>,
    /// Default stem for the run directory when none was given (`runs/<stem>/<time>`).
    pub run_name: String,
    /// Quiet mode for tests and grid points: no progress bars.
    pub quiet: bool,
}

impl Default for SessionState {
    fn default() -> Self {
        SessionState {
            device: Device::Cpu,
            precision: Precision::Auto,
            seed: 0,
            params: Map::new(),
            out_dir: None,
            run_name: "repl".into(),
            quiet: std::env::var_os("SATM_QUIET").is_some(),
        }
    }
}

thread_local! {
    static STATE: RefCell<SessionState> = RefCell::new(SessionState::default());
}

pub fn with<R>(f: impl FnOnce(&SessionState) -> R) -> R {
    STATE.with(|s| f(&s.borrow()))
}

pub fn update<R>(f: impl FnOnce(&mut SessionState) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

pub fn reset() {
    STATE.with(|s| *s.borrow_mut() = SessionState::default());
}

pub fn device() -> Device {
    with(|s| s.device)
}

pub fn quiet() -> bool {
    with(|s| s.quiet)
}

pub fn param(name: &str) -> Option<Dynamic> {
    with(|s| s.params.get(name).cloned())
}

/// The run directory, created on first use: the one given with `--out`, else `runs/<run_name>/<YYYYmmdd-HHMMSS>`.
pub fn out_dir() -> anyhow::Result<PathBuf> {
    let dir = update(|s| {
        if s.out_dir.is_none() {
            s.out_dir = Some(PathBuf::from("runs").join(&s.run_name).join(timestamp()));
        }
        s.out_dir.clone().unwrap()
    });
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create run directory {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Local time as YYYYmmdd-HHMMSS (UTC when the local offset is unknown).
pub fn timestamp() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, secs) = (now.div_euclid(86400), now.rem_euclid(86400));
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", secs / 3600, secs % 3600 / 60, secs % 60)
}
