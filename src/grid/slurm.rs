//! The Slurm executor: a job-array script (one array task per point), `sbatch --parsable`, and `squeue` queries.
//! Slurm does all the scheduling; each task runs `satm grid run-point GRIDDIR $SLURM_ARRAY_TASK_ID`.
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Resources and behaviour of the array tasks: a RON profile (configs/slurm_*.ron), overridden by command-line flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmProfile {
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--gres`, e.g. "gpu:1".
    pub gres: Option<String>,
    /// `--time` (HH:MM:SS, D-HH:MM:SS, or minutes).
    pub time: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// `--mem`, e.g. "16G".
    pub mem: Option<String>,
    /// Seconds before the time limit at which Slurm sends SIGTERM to the task (`--signal=B:TERM@N`); satm forwards it
    /// to the point as SIGINT so the trainer checkpoints.
    pub signal_seconds: u32,
    /// `--requeue`: let Slurm requeue tasks after preemption or node failure.
    pub requeue: bool,
    /// After a SIGTERM, the task requeues itself (`scontrol requeue`) at most this many times, so a point that
    /// outlives its time limit resumes from its checkpoint in a fresh task.
    pub max_requeues: u32,
    /// At most this many tasks at once (`--array=...%N`).
    pub max_parallel: Option<u32>,
    /// Further sbatch options, one per entry, e.g. "--qos=normal".
    pub extra: Vec<String>,
    /// Shell lines run before the point (e.g. "module load cuda/12.4").
    pub setup: Vec<String>,
}

impl Default for SlurmProfile {
    fn default() -> Self {
        SlurmProfile {
            cpus_per_task: None,
            gres: None,
            time: None,
            partition: None,
            account: None,
            mem: None,
            signal_seconds: 60,
            requeue: true,
            max_requeues: 3,
            max_parallel: None,
            extra: vec![],
            setup: vec![],
        }
    }
}

fn check_token(field: &str, v: &str, extra_ok: &str) -> Result<()> {
    if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || extra_ok.contains(c)) {
        bail!("slurm {field} '{v}': only letters, digits and '{extra_ok}' are allowed");
    }
    Ok(())
}

impl SlurmProfile {
    /// Rejects values that would break the `#SBATCH` lines (spaces, newlines, quotes) or that Slurm would reject.
    pub fn validate(&self) -> Result<()> {
        if self.cpus_per_task == Some(0) {
            bail!("slurm cpus_per_task must be at least 1");
        }
        if let Some(g) = &self.gres {
            check_token("gres", g, ":_-.,")?;
        }
        if let Some(t) = &self.time {
            check_token("time", t, ":-")?;
            if !t.chars().next().is_some_and(|c| c.is_ascii_digit()) || t.chars().any(|c| c.is_ascii_alphabetic()) {
                bail!("slurm time '{t}': expected HH:MM:SS, D-HH:MM:SS or minutes");
            }
        }
        if let Some(p) = &self.partition {
            check_token("partition", p, "_-.,")?;
        }
        if let Some(a) = &self.account {
            check_token("account", a, "_-.")?;
        }
        if let Some(m) = &self.mem {
            check_token("mem", m, "")?;
        }
        if self.max_parallel == Some(0) {
            bail!("slurm max_parallel must be at least 1");
        }
        for e in &self.extra {
            if !e.starts_with("--") || e.contains(['\n', '\r', ' ', '\t']) {
                bail!("slurm extra '{e}': each entry is one sbatch option like \"--qos=normal\" (no spaces)");
            }
        }
        for l in &self.setup {
            if l.contains(['\n', '\r']) {
                bail!("slurm setup: one shell line per entry, got a line break in '{l}'");
            }
        }
        Ok(())
    }
}

/// `0-4,7,9-10` from sorted indices, with `%N` when at most N tasks may run at once.
pub fn array_spec(indices: &[usize], max_parallel: Option<u32>) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        parts.push(if j == i { indices[i].to_string() } else { format!("{}-{}", indices[i], indices[j]) });
        i = j + 1;
    }
    let mut s = parts.join(",");
    if let Some(n) = max_parallel {
        s.push_str(&format!("%{n}"));
    }
    s
}

/// Quotes a string for bash (single quotes).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The sbatch script: `#SBATCH` lines, then `exec satm grid run-point GRIDDIR $SLURM_ARRAY_TASK_ID`.
pub fn job_script(
    p: &SlurmProfile,
    job_name: &str,
    array: &str,
    grid_dir: &Path,
    cwd: &Path,
    exe: &Path,
) -> Result<String> {
    p.validate()?;
    for (what, path) in [("grid directory", grid_dir), ("working directory", cwd)] {
        let s = path.to_str().with_context(|| format!("{what} {} is not UTF-8", path.display()))?;
        if s.contains(char::is_whitespace) || s.contains(['%', '\'', '"']) {
            bail!(
                "the slurm executor needs a {what} without spaces, quotes or '%' (#SBATCH lines cannot quote), got '{s}'"
            );
        }
    }
    let gd = grid_dir.display();
    let mut s = String::new();
    s.push_str("#!/bin/bash\n");
    s.push_str(&format!(
        "# satm {} grid job array: one task per grid point. Written by `satm grid`; rerun it rather than editing.\n",
        crate::VERSION
    ));
    s.push_str(&format!("#SBATCH --job-name={job_name}\n"));
    s.push_str(&format!("#SBATCH --array={array}\n"));
    s.push_str(&format!("#SBATCH --output={gd}/slurm/%A_%a.out\n"));
    // A requeued task appends to its log instead of truncating the attempt that was preempted.
    s.push_str("#SBATCH --open-mode=append\n");
    s.push_str(&format!("#SBATCH --chdir={}\n", cwd.display()));
    if p.requeue {
        s.push_str("#SBATCH --requeue\n");
    }
    if p.signal_seconds > 0 {
        s.push_str(&format!("#SBATCH --signal=B:TERM@{}\n", p.signal_seconds));
    }
    if let Some(c) = p.cpus_per_task {
        s.push_str(&format!("#SBATCH --cpus-per-task={c}\n"));
    }
    if let Some(g) = &p.gres {
        s.push_str(&format!("#SBATCH --gres={g}\n"));
    }
    if let Some(m) = &p.mem {
        s.push_str(&format!("#SBATCH --mem={m}\n"));
    }
    if let Some(t) = &p.time {
        s.push_str(&format!("#SBATCH --time={t}\n"));
    }
    if let Some(x) = &p.partition {
        s.push_str(&format!("#SBATCH --partition={x}\n"));
    }
    if let Some(x) = &p.account {
        s.push_str(&format!("#SBATCH --account={x}\n"));
    }
    for e in &p.extra {
        s.push_str(&format!("#SBATCH {e}\n"));
    }
    s.push('\n');
    s.push_str("# libtorch would otherwise use every core of the node, not the task's share.\n");
    s.push_str("if [ -n \"${SLURM_CPUS_PER_TASK:-}\" ]; then export OMP_NUM_THREADS=\"$SLURM_CPUS_PER_TASK\"; fi\n");
    for l in &p.setup {
        s.push_str(l);
        s.push('\n');
    }
    // exec: the batch shell becomes satm, so `--signal=B:TERM` reaches the process that forwards it to the point.
    s.push_str(&format!(
        "exec {} grid run-point {} \"$SLURM_ARRAY_TASK_ID\"\n",
        shell_quote(&exe.display().to_string()),
        shell_quote(&grid_dir.display().to_string())
    ));
    Ok(s)
}

/// Whether a Slurm command exists on PATH.
pub fn have(cmd: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file())).unwrap_or(false)
}

/// Submits `script` with `sbatch --parsable`; returns the job id.
pub fn submit(script: &Path) -> Result<String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(script)
        .output()
        .context("running sbatch (is Slurm installed and on PATH?)")?;
    if !out.status.success() {
        bail!("sbatch {} failed ({}): {}", script.display(), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // --parsable prints "jobid" or "jobid;cluster".
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch --parsable printed '{}', expected a job id", text.trim());
    }
    Ok(id)
}

/// Array task id → (state, reason) for the given jobs, from `squeue -r`. None when squeue is missing or fails
/// for another reason than jobs that are already gone.
pub fn queue_states(job_ids: &[String]) -> Option<BTreeMap<usize, (String, String)>> {
    if job_ids.is_empty() || !have("squeue") {
        return None;
    }
    let out = Command::new("squeue").args(["-h", "-r", "-o", "%K|%T|%r", "-j", &job_ids.join(",")]).output().ok()?;
    let mut m = BTreeMap::new();
    if !out.status.success() {
        // Finished jobs drop out of squeue after MinJobAge; asking for them is an error, not an unknown queue.
        let err = String::from_utf8_lossy(&out.stderr);
        return if err.contains("Invalid job id") { Some(m) } else { None };
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split('|');
        let (Some(task), Some(state)) = (f.next(), f.next()) else {
            continue;
        };
        let reason = f.next().unwrap_or("").trim().to_string();
        if let Ok(t) = task.trim().parse::<usize>() {
            m.insert(t, (state.trim().to_string(), reason));
        }
    }
    Some(m)
}

/// Whether any task of these jobs is still in the queue (pending, running, completing, requeued).
pub fn any_queued(job_ids: &[String]) -> Result<bool> {
    let out =
        Command::new("squeue").args(["-h", "-o", "%i", "-j", &job_ids.join(",")]).output().context("running squeue")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("Invalid job id") {
            return Ok(false);
        }
        bail!("squeue failed ({}): {}", out.status, err.trim());
    }
    Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty())
}

/// Waits (polling squeue every second, Ctrl-C aware) until no task of these jobs is queued.
pub fn wait_for(job_ids: &[String]) -> Result<()> {
    while any_queued(job_ids)? {
        crate::core::cancel::check()?;
        std::thread::sleep(std::time::Duration::from_millis(1000));
    }
    Ok(())
}

/// Asks Slurm to requeue this task (after a SIGTERM) so it resumes from its checkpoint in a new allocation.
pub fn requeue_self() -> Result<String> {
    let id = std::env::var("SLURM_JOB_ID").context("SLURM_JOB_ID is not set (not inside a Slurm job)")?;
    let out = Command::new("scontrol").args(["requeue", &id]).output().context("running scontrol requeue")?;
    if !out.status.success() {
        bail!("scontrol requeue {id} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs_compress_runs() {
        assert_eq!(array_spec(&[0, 1, 2, 3, 4], None), "0-4");
        assert_eq!(array_spec(&[0, 1, 2, 4, 7, 8], Some(2)), "0-2,4,7-8%2");
        assert_eq!(array_spec(&[5], None), "5");
    }

    #[test]
    fn script_has_the_array_and_resources() {
        let p = SlurmProfile {
            cpus_per_task: Some(4),
            gres: Some("gpu:1".into()),
            time: Some("02:00:00".into()),
            ..Default::default()
        };
        let s = job_script(&p, "satm-x", "0-9", Path::new("/g/d"), Path::new("/w"), Path::new("/bin/satm")).unwrap();
        for line in [
            "#SBATCH --array=0-9",
            "#SBATCH --output=/g/d/slurm/%A_%a.out",
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --time=02:00:00",
            "#SBATCH --requeue",
            "#SBATCH --signal=B:TERM@60",
            "exec '/bin/satm' grid run-point '/g/d' \"$SLURM_ARRAY_TASK_ID\"",
        ] {
            assert!(s.lines().any(|l| l == line), "missing line {line} in\n{s}");
        }
        assert!(!s.contains("--partition"));
    }

    #[test]
    fn bad_values_are_rejected() {
        let p = SlurmProfile { partition: Some("a b".into()), ..Default::default() };
        assert!(p.validate().is_err());
        let p = SlurmProfile { time: Some("1h".into()), ..Default::default() };
        assert!(p.validate().is_err());
        let p = SlurmProfile::default();
        assert!(job_script(&p, "x", "0", Path::new("/a b"), Path::new("/w"), Path::new("/s")).is_err());
    }
}
