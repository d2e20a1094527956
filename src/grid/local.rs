//! The local executor: N points at a time as `satm run` children, a progress line per point, and a clean stop on
//! Ctrl-C or SIGTERM (children get SIGINT, then SIGTERM after the grace period; no marker is half-written, and
//! interrupted points stay missing so the next run picks them up).
use super::GridFile;
use super::point::{self, ChildRun, Outcome};
use crate::core::cancel;
use anyhow::Result;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::Path;
use std::time::Duration;

/// How a local run went.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub done: usize,
    pub failed: usize,
    pub interrupted: usize,
    pub skipped: usize,
}

/// Runs the points `todo` (indices into the grid), `jobs` at a time. `skipped` is how many were already done.
pub fn run(
    grid: &GridFile,
    grid_dir: &Path,
    todo: &[usize],
    jobs: usize,
    grace: Duration,
    quiet: bool,
) -> Result<Summary> {
    let mut summary = Summary::default();
    let total = todo.len();
    let mp = MultiProgress::with_draw_target(if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let overall = mp.add(ProgressBar::new(total as u64));
    overall.set_style(
        ProgressStyle::with_template("grid {pos}/{len} points [{elapsed_precise}] {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let spinner_style = ProgressStyle::with_template("  {spinner} {msg} [{elapsed}]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let say = |line: String| {
        if !quiet {
            mp.suspend(|| eprintln!("{line}"));
        }
    };
    let mut queue = todo.iter().copied().collect::<std::collections::VecDeque<_>>();
    let mut active: Vec<(ChildRun, ProgressBar)> = Vec::new();
    let mut finished = 0usize;
    loop {
        if cancel::is_cancelled() {
            say(format!(
                "satm grid: stopping {} running point(s): SIGINT now, SIGTERM after {} s",
                active.len(),
                grace.as_secs()
            ));
            // Stop all children at once (in parallel), so the grace periods overlap.
            let handles = std::mem::take(&mut active);
            let results: Vec<_> = std::thread::scope(|s| {
                let hs: Vec<_> = handles
                    .into_iter()
                    .map(|(mut run, pb)| {
                        s.spawn(move || {
                            let st = point::stop_child(&mut run, grace);
                            (run, pb, st)
                        })
                    })
                    .collect();
                hs.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            for (run, pb, st) in results {
                let name = run.name.clone();
                pb.finish_and_clear();
                match st.and_then(|st| run.finish(st, true)) {
                    Ok(Outcome::Done { wall_s }) => {
                        summary.done += 1;
                        say(format!("  done        {name} ({wall_s:.1} s, finished before it stopped)"));
                    }
                    Ok(_) => {
                        summary.interrupted += 1;
                        say(format!("  interrupted {name} (stays missing; rerun the grid to resume it)"));
                    }
                    Err(e) => say(format!("  error       {name}: {e:#}")),
                }
            }
            break;
        }
        while active.len() < jobs.max(1) {
            let Some(i) = queue.pop_front() else { break };
            match ChildRun::spawn(grid, grid_dir, i, false) {
                Ok(run) => {
                    let pb = mp.insert_before(&overall, ProgressBar::new_spinner());
                    pb.set_style(spinner_style.clone());
                    pb.set_message(run.name.clone());
                    pb.enable_steady_tick(Duration::from_millis(200));
                    active.push((run, pb));
                }
                Err(e) => {
                    summary.failed += 1;
                    finished += 1;
                    overall.inc(1);
                    say(format!("  failed      {}: could not start: {e:#}", grid.points[i].name));
                }
            }
        }
        if active.is_empty() && queue.is_empty() {
            break;
        }
        let mut k = 0;
        while k < active.len() {
            let status = active[k].0.try_wait();
            match status {
                Ok(None) => k += 1,
                Ok(Some(st)) => {
                    let (run, pb) = active.swap_remove(k);
                    let (name, idx) = (run.name.clone(), run.index);
                    pb.finish_and_clear();
                    finished += 1;
                    overall.inc(1);
                    let tag = format!("[{finished}/{total}]");
                    match run.finish(st, false) {
                        Ok(Outcome::Done { wall_s }) => {
                            summary.done += 1;
                            say(format!("{tag} done   {name} ({wall_s:.1} s)"));
                        }
                        Ok(Outcome::Failed { exit_code, signal, wall_s }) => {
                            summary.failed += 1;
                            let how = match (exit_code, signal) {
                                (Some(c), _) => format!("exit code {c}"),
                                (None, Some(s)) => format!("signal {s}"),
                                _ => "unknown exit".into(),
                            };
                            say(format!(
                                "{tag} FAILED {name} ({how}, {wall_s:.1} s; see {}/log.txt)",
                                grid_dir.join(&grid.points[idx].dir).display()
                            ));
                        }
                        Ok(Outcome::Interrupted { .. }) => summary.interrupted += 1,
                        Err(e) => {
                            summary.failed += 1;
                            say(format!("{tag} error  {name}: {e:#}"));
                        }
                    }
                }
                Err(e) => {
                    say(format!("satm grid: {e:#}"));
                    k += 1;
                }
            }
        }
        overall.set_message(format!("{} running, {} queued", active.len(), queue.len()));
        std::thread::sleep(Duration::from_millis(100));
    }
    overall.finish_and_clear();
    Ok(summary)
}
