//! Following a run directory that another process writes (a `satm run` in another terminal, a Slurm array task):
//! run.json, config.ron, metrics.jsonl (metric points and `{"event":"set",...}` lines; the last line may be half
//! written) and checkpoints/latest.json. Read-only: nothing here writes to the directory. Each `refresh` reads only
//! what was appended since the last one.
use super::History;
use super::config::TrainConfig;
use super::control::{RunState, RunStatus, SteerEvent, TraineeStatus};
use anyhow::{Context, Result, bail};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// What a watcher knows about a run directory.
pub struct Watch {
    dir: PathBuf,
    /// Bytes of metrics.jsonl read so far (always at a line end).
    offset: u64,
    history: History,
    events: Vec<SteerEvent>,
    /// Lines that are complete but not JSON metric or event lines.
    skipped: usize,
    cfg: Option<TrainConfig>,
    networks: Vec<String>,
    /// (when, step) as seen by successive refreshes, for the rate.
    seen: Vec<(Instant, usize)>,
    /// The furthest position read (see `rewind`).
    max_pos: usize,
}

/// A watched run's status: the fields a live run has, plus what only files tell.
#[derive(Debug, Clone)]
pub struct WatchStatus {
    /// state: Starting (nothing logged yet), Running, or Finished (also when it ended early: see `ended_early`).
    pub status: RunStatus,
    /// The run ended before its last step (early stopping, the guard, stop or Ctrl-C: a final checkpoint at the
    /// last logged step that is no periodic one).
    pub ended_early: bool,
    /// Total steps unknown (an epoch-based run: the files do not say how many batches an epoch has).
    pub total_known: bool,
    pub epoch: usize,
    /// The newest complete checkpoint: (step, directory).
    pub checkpoint: Option<(usize, PathBuf)>,
    /// Seconds since metrics.jsonl last changed.
    pub idle_s: Option<f64>,
    pub networks: Vec<String>,
    pub events: usize,
    /// Complete lines of metrics.jsonl that were not understood.
    pub skipped: usize,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl Watch {
    /// Starts watching `dir` (it must hold run.json or metrics.jsonl) and reads what is there.
    pub fn open(dir: &Path) -> Result<Watch> {
        if !dir.is_dir() {
            bail!("{} is not a directory (give a run directory such as runs/<script>/<time>/satm-1)", dir.display());
        }
        if !dir.join("run.json").is_file() && !dir.join("metrics.jsonl").is_file() {
            bail!(
                "{} is not a run directory: it has neither run.json nor metrics.jsonl (runs are written as \
                 runs/<script>/<time>/<name>)",
                dir.display()
            );
        }
        let mut w = Watch {
            dir: dir.to_path_buf(),
            offset: 0,
            history: History::default(),
            events: vec![],
            skipped: 0,
            cfg: None,
            networks: vec![],
            seen: vec![],
            max_pos: 0,
        };
        w.refresh()?;
        Ok(w)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads what was appended to metrics.jsonl since the last call (a half-written last line waits for the next
    /// call), and re-reads run.json and config.ron (a resumed run rewrites them).
    pub fn refresh(&mut self) -> Result<()> {
        if let Ok(t) = std::fs::read_to_string(self.dir.join("run.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&t)
        {
            self.networks = v["networks"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
        }
        if let Ok(t) = std::fs::read_to_string(self.dir.join("config.ron")) {
            self.cfg = ron::from_str::<TrainConfig>(&t).ok();
        }
        let path = self.dir.join("metrics.jsonl");
        let Ok(mut f) = std::fs::File::open(&path) else { return Ok(()) };
        let len = f.metadata().with_context(|| format!("reading {}", path.display()))?.len();
        if len < self.offset {
            // Replaced or truncated: start over.
            self.offset = 0;
            self.history = History::default();
            self.events.clear();
            self.skipped = 0;
            self.max_pos = 0;
        }
        f.seek(SeekFrom::Start(self.offset)).with_context(|| format!("reading {}", path.display()))?;
        let mut buf = Vec::new();
        f.take(len - self.offset).read_to_end(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else { return Ok(()) };
        for line in String::from_utf8_lossy(&buf[..end]).lines() {
            self.line(line);
        }
        self.offset += end as u64 + 1;
        let step = self.last_step();
        if self.seen.last().is_none_or(|&(_, s)| s != step) {
            self.seen.push((Instant::now(), step));
            if self.seen.len() > 64 {
                self.seen.remove(0);
            }
        }
        Ok(())
    }

    fn line(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            self.skipped += 1;
            return;
        };
        let step = v["step"].as_u64().map(|s| s as usize);
        if v["event"].as_str() == Some("set") {
            match (step, v["key"].as_str(), v["old"].as_f64(), v["new"].as_f64()) {
                (Some(step), Some(key), Some(old), Some(new)) => {
                    self.rewind(2 * step + 1);
                    self.events.push(SteerEvent { step, key: key.to_string(), old, new })
                }
                _ => self.skipped += 1,
            }
            return;
        }
        // Other event lines (a change the loop rejected) change nothing.
        if v["event"].is_string() {
            return;
        }
        match (step, v["split"].as_str(), v["net"].as_str(), v["metric"].as_str()) {
            (Some(step), Some(split), Some(net), Some(metric)) => {
                // JSON has no NaN: serde_json writes a non-finite value as null.
                let value = v["value"].as_f64().unwrap_or(f64::NAN);
                let epoch = v["epoch"].as_u64().unwrap_or(0) as usize;
                self.rewind(2 * step);
                self.history.push(step, epoch, split, net, metric, value);
            }
            _ => self.skipped += 1,
        }
    }

    /// A resumed run appends again from its checkpoint's step: what was written after that point before the
    /// interruption is superseded. Positions order the file: the points logged at step s (2s), then a `set` applied
    /// at the boundary before step s's batch (2s+1), then the points logged at s+1 (2s+2).
    fn rewind(&mut self, pos: usize) {
        if self.max_pos > pos {
            self.history.points.retain(|p| 2 * p.step < pos);
            self.events.retain(|e| 2 * e.step + 1 < pos);
        }
        self.max_pos = pos;
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn events(&self) -> &[SteerEvent] {
        &self.events
    }

    pub fn config(&self) -> Option<&TrainConfig> {
        self.cfg.as_ref()
    }

    fn last_step(&self) -> usize {
        self.history.points.iter().map(|p| p.step).max().unwrap_or(0)
    }

    /// The status as of the last refresh.
    pub fn status(&self) -> WatchStatus {
        let step = self.last_step();
        let epoch = self.history.points.iter().map(|p| p.epoch).max().unwrap_or(0);
        let cfg = self.cfg.as_ref();
        let total = cfg.filter(|c| c.epochs == 0).map(|c| c.steps);
        let checkpoint = super::checkpoint::latest(&self.dir).ok().and_then(|d| {
            let t = std::fs::read_to_string(self.dir.join("checkpoints").join("latest.json")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&t).ok()?;
            Some((v["step"].as_u64()? as usize, d))
        });
        let metrics_t = mtime(&self.dir.join("metrics.jsonl"));
        let idle_s = metrics_t.and_then(|t| t.elapsed().ok()).map(|d| d.as_secs_f64());
        let ck_every = cfg.map_or(0, |c| c.checkpoint_every);
        let (finished, early) = match &checkpoint {
            Some((s, _)) if total.is_some_and(|t| *s >= t) => (true, false),
            // A checkpoint written after the last line, at or past the last logged step, and not a periodic one.
            Some((s, _))
                if *s >= step
                    && *s > 0
                    && mtime(&self.dir.join("checkpoints").join("latest.json")) >= metrics_t
                    && !(ck_every > 0 && s.is_multiple_of(ck_every)) =>
            {
                (true, total.is_some())
            }
            _ => (false, false),
        };
        let state = if finished {
            RunState::Finished
        } else if self.history.points.is_empty() {
            RunState::Starting
        } else {
            RunState::Running
        };
        let batch = cfg.map_or(0, |c| c.batch_size) as f64;
        let recent: Vec<&(Instant, usize)> =
            self.seen.iter().filter(|(t, _)| t.elapsed().as_secs_f64() < 60.0).collect();
        let img_per_s = match (recent.first(), self.seen.last()) {
            (Some(a), Some(b)) if b.1 > a.1 && b.0 > a.0 => (b.1 - a.1) as f64 * batch / (b.0 - a.0).as_secs_f64(),
            _ => 0.0,
        };
        let eta_s = match total {
            Some(t) if img_per_s > 0.0 && !finished => Some(t.saturating_sub(step) as f64 * batch / img_per_s),
            _ => None,
        };
        let labels: Vec<String> = if self.networks.is_empty() { self.history.nets() } else { self.networks.clone() };
        let trainees = labels
            .iter()
            .filter(|l| self.history.last("train", l, "clean_acc").is_some())
            .map(|l| {
                let m = |n: &str| self.history.last("train", l, n);
                TraineeStatus {
                    label: l.clone(),
                    clean_loss: m("clean_loss"),
                    clean_acc: m("clean_acc"),
                    adv_loss: m("adv_loss"),
                    adv_acc: m("adv_acc"),
                    da_loss: m("da_loss"),
                    domain_acc: m("domain_acc"),
                }
            })
            .collect();
        let settings = cfg.map(|c| self.settings(c, step, total)).unwrap_or_default();
        WatchStatus {
            status: RunStatus {
                state,
                step,
                total: total.unwrap_or(0),
                img_per_s,
                eta_s,
                trainees,
                settings,
                error: None,
            },
            ended_early: early,
            total_known: total.is_some(),
            epoch,
            checkpoint,
            idle_s,
            networks: self.networks.clone(),
            events: self.events.len(),
            skipped: self.skipped,
        }
    }

    /// The steerable settings in force: config.ron's, then every recorded `set` (lambda: its schedule at `step`).
    fn settings(&self, c: &TrainConfig, step: usize, total: Option<usize>) -> Vec<(String, f64)> {
        let progress = total.map_or(0.0, |t| step as f64 / t.max(1) as f64);
        let mut s: Vec<(String, f64)> = [
            ("r_adv", c.r_adv),
            ("r_da", c.r_da),
            ("lambda", c.lambda.at(progress)),
            ("lr", c.lr),
            ("eps", c.eps),
            ("alpha", c.alpha()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let alpha_given = c.alpha.is_some();
        let mut alpha_set = alpha_given;
        // Every recorded event is in force: the run writes one when it applies the change.
        for e in &self.events {
            if let Some(slot) = s.iter_mut().find(|(k, _)| *k == e.key) {
                slot.1 = e.new;
            }
            alpha_set |= e.key == "alpha";
            // Without its own alpha, alpha follows eps (eps / 2).
            if e.key == "eps" && !alpha_set {
                s[5].1 = e.new / 2.0;
            }
        }
        s
    }
}

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The lowercase name of a state, as `status()` maps and `:runs` show it.
pub fn state_name(s: RunState) -> &'static str {
    match s {
        RunState::Starting => "starting",
        RunState::Running => "running",
        RunState::Paused => "paused",
        RunState::Stopping => "stopping",
        RunState::Finished => "finished",
        RunState::Failed => "failed",
    }
}

/// One line: `step 120/400 (30%)  45.1 img/s  ETA 1m02s  A: clean 0.52 adv 0.31 da 0.690/0.50 ...`.
pub fn status_line(st: &RunStatus) -> String {
    let mut out = if st.total > 0 {
        format!("step {}/{} ({:.0}%)", st.step, st.total, 100.0 * st.step as f64 / st.total as f64)
    } else {
        format!("step {}", st.step)
    };
    if st.img_per_s > 0.0 {
        out.push_str(&format!("  {:.1} img/s", st.img_per_s));
    }
    if let Some(e) = st.eta_s {
        out.push_str(&format!("  ETA {}", fmt_secs(e)));
    }
    let f = |v: Option<f64>, p: usize| v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "-".into());
    for t in &st.trainees {
        out.push_str(&format!("  {}: clean {} adv {}", t.label, f(t.clean_acc, 2), f(t.adv_acc, 2)));
        if t.da_loss.is_some() {
            out.push_str(&format!(" da {}/{}", f(t.da_loss, 3), f(t.domain_acc, 2)));
        }
    }
    out
}

/// The state as `satm watch` and `w.status()` name it: "ended" is finished before the last step.
pub fn watch_state_name(w: &WatchStatus) -> &'static str {
    match (w.status.state, w.ended_early) {
        (RunState::Finished, true) => "ended",
        (s, _) => state_name(s),
    }
}

/// `satm watch`'s line: state, progress, rate, per-network metrics, settings, idle time.
pub fn watch_line(w: &WatchStatus) -> String {
    let mut out = format!("{:<8} {}", watch_state_name(w), status_line(&w.status));
    if !w.total_known && w.status.step > 0 {
        out.push_str(&format!("  epoch {}", w.epoch));
    }
    if !w.status.settings.is_empty() {
        let s: Vec<String> = w.status.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("  [{}]", s.join(" ")));
    }
    if w.events > 0 {
        out.push_str(&format!("  {} set event(s)", w.events));
    }
    if w.status.state != RunState::Finished
        && let Some(i) = w.idle_s
        && i >= 30.0
    {
        out.push_str(&format!("  (no new line for {})", fmt_secs(i)));
    }
    out
}

/// `satm watch DIR [--once] [--every S]`: prints a status line whenever the run advances, until it ends or Ctrl-C.
/// Exit code 0, or 2 when DIR is no run directory.
pub fn main(dir: &Path, once: bool, every: f64) -> i32 {
    if !(every.is_finite() && every > 0.0) {
        eprintln!("satm watch: --every must be a positive number of seconds, got {every}");
        return 2;
    }
    let mut w = match Watch::open(dir) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("satm watch: {e:#}");
            return 2;
        }
    };
    let st = w.status();
    if once {
        println!("{}", dir.display());
        println!("{}", watch_line(&st));
        if let Some((s, d)) = &st.checkpoint {
            println!("checkpoint step {s}: {}", d.display());
        }
        return 0;
    }
    crate::core::cancel::install_handler(false);
    let nets = if st.networks.is_empty() { String::from("(not yet known)") } else { st.networks.join(", ") };
    println!("watching {} (networks {nets}); Ctrl-C stops watching, not the run", dir.display());
    let mut last: Option<(usize, RunState, usize)> = None;
    loop {
        if let Err(e) = w.refresh() {
            eprintln!("satm watch: {e:#}");
            return 1;
        }
        let st = w.status();
        let key = (st.status.step, st.status.state, st.events);
        if last != Some(key) {
            println!("{}", watch_line(&st));
            last = Some(key);
        }
        if st.status.state == RunState::Finished {
            if let Some((s, d)) = &st.checkpoint {
                println!("checkpoint step {s}: {}", d.display());
            }
            return 0;
        }
        let until = Instant::now() + std::time::Duration::from_secs_f64(every);
        while Instant::now() < until {
            if crate::core::cancel::is_cancelled() {
                return 0;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_complete_lines_events_and_waits_for_a_half_written_one() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("run.json"), r#"{"networks": ["A", "B"], "trainees": 2}"#).unwrap();
        let cfg = TrainConfig { steps: 10, log_every: 2, ..TrainConfig::default() };
        std::fs::write(d.path().join("config.ron"), ron::to_string(&cfg).unwrap()).unwrap();
        let m = d.path().join("metrics.jsonl");
        std::fs::write(
            &m,
            concat!(
                r#"{"step":2,"epoch":0,"split":"train","net":"A","metric":"clean_acc","value":0.5}"#,
                "\n",
                r#"{"event":"set","step":3,"key":"r_da","old":0.1,"new":0.4}"#,
                "\n",
                r#"{"event":"rejected","step":3,"key":"eps","value":2.0,"error":"eps is in [0,1]"}"#,
                "\n",
                r#"{"step":4,"epoch":0,"split":"train","net":"A","metric":"clean_acc","val"#
            ),
        )
        .unwrap();
        let mut w = Watch::open(d.path()).unwrap();
        assert_eq!(w.history().points.len(), 1);
        assert_eq!(w.events().len(), 1);
        let s = w.status();
        assert_eq!((s.status.step, s.status.total, s.status.state), (2, 10, RunState::Running));
        // The run wrote the event when it applied the change: in force now.
        assert_eq!(s.status.settings.iter().find(|(k, _)| k == "r_da").unwrap().1, 0.4);
        let mut f = std::fs::OpenOptions::new().append(true).open(&m).unwrap();
        use std::io::Write;
        f.write_all(b"ue\":0.75}\n").unwrap();
        w.refresh().unwrap();
        assert_eq!(w.history().series("train", "A", "clean_acc"), vec![(2, 0.5), (4, 0.75)]);
        let s = w.status();
        assert_eq!(s.status.step, 4);
        assert_eq!(s.status.settings.iter().find(|(k, _)| k == "r_da").unwrap().1, 0.4);
        assert_eq!(s.skipped, 0);
        assert!(Watch::open(&d.path().join("nope")).is_err());
        // A resumed run writes again from step 2: the old step-4 point and the step-3 event are superseded.
        f.write_all(
            concat!(
                r#"{"step":2,"epoch":0,"split":"train","net":"A","metric":"clean_acc","value":0.25}"#,
                "\n",
                r#"{"step":4,"epoch":0,"split":"train","net":"A","metric":"clean_acc","value":0.5}"#,
                "\n"
            )
            .as_bytes(),
        )
        .unwrap();
        w.refresh().unwrap();
        assert_eq!(w.history().series("train", "A", "clean_acc"), vec![(2, 0.25), (4, 0.5)]);
        assert!(w.events().is_empty());
    }
}
