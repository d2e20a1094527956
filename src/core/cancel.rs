//! One process-wide cancel flag: Ctrl-C sets it, every long operation (rhai's on_progress, training steps, attacks,
//! evaluation loops, grid executors) polls it and stops cleanly.
use std::cell::Cell;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

static CANCEL: AtomicBool = AtomicBool::new(false);
static PRESSES: AtomicU32 = AtomicU32::new(0);
static INSTALL: Once = Once::new();

/// The error every cancelled operation returns; the REPL recognises it and returns to the prompt.
#[derive(Debug)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cancelled by Ctrl-C")
    }
}
impl std::error::Error for Cancelled {}

/// Installs the SIGINT/SIGTERM handler once. The first signal sets the flag (training checkpoints and stops after the
/// current step; a Slurm time limit or preemption sends SIGTERM); with `hard_exit_on_second`, a second one while the
/// first is still pending exits at once with 130 (for `satm run`, where nobody else would ask again).
pub fn install_handler(hard_exit_on_second: bool) {
    INSTALL.call_once(|| {
        let _ = ctrlc::set_handler(move || {
            let n = PRESSES.fetch_add(1, Ordering::SeqCst);
            CANCEL.store(true, Ordering::SeqCst);
            if n == 0 {
                if hard_exit_on_second {
                    eprintln!("\nsatm: interrupted — stopping after the current step (Ctrl-C again aborts at once)");
                } else {
                    eprintln!("\nsatm: interrupted — stopping after the current step");
                }
            } else if hard_exit_on_second {
                eprintln!("satm: aborted");
                std::process::exit(130);
            }
        });
    });
}

pub fn request() {
    CANCEL.store(true, Ordering::SeqCst);
}

thread_local! {
    /// Set on a background run's thread: Ctrl-C at the prompt stops the foreground command, never a background run
    /// (which stops through its own `train::control::RunControl`).
    static DETACHED: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as a background run's: from now on `check()` and `is_cancelled()` ignore Ctrl-C there.
pub fn detach_current_thread() {
    DETACHED.with(|d| d.set(true));
}

pub fn is_cancelled() -> bool {
    CANCEL.load(Ordering::Relaxed) && !DETACHED.with(|d| d.get())
}

/// Clears the flag (the REPL does this before each command).
pub fn reset() {
    CANCEL.store(false, Ordering::SeqCst);
    PRESSES.store(0, Ordering::SeqCst);
}

/// `Err(Cancelled)` once Ctrl-C was pressed; call it between steps of any long loop.
pub fn check() -> anyhow::Result<()> {
    if is_cancelled() { Err(Cancelled.into()) } else { Ok(()) }
}

/// Whether an error (anywhere in its chain) is a cancellation.
pub fn is_cancel_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Cancelled>())
}
