//! Checkpoints: every trainee's state (variables, BN running statistics and `num_batches_tracked` counters), DA heads, optimizer state, step, history and
//! early-stopping state. A checkpoint is a directory `checkpoints/step-NNNNNNN/`, written completely before the pointer
//! `checkpoints/latest.json` is atomically replaced to name it, so a reader never sees a half-written checkpoint.
//! The RNG needs no saving: every step reseeds from (seed, step).
//!
//! `state.json` records the size and sha256 of every other file of its checkpoint, and its own body's sha256, as
//! `{"sha256":"<hex of BODY>","checkpoint":BODY}` with BODY = `{"format":2,"files":{...},"state":{...}}`. Loading
//! verifies all of them first: a truncated, bit-flipped or missing file is an error naming it, and resuming from a
//! run directory then falls back to the newest older checkpoint that verifies (saying so on stderr).
use super::History;
use super::control::SteerEvent;
use super::optim::Optimizer;
use crate::core::fsutil;
use crate::core::models::Net;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Tensor, nn};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub step: usize,
    pub history: History,
    pub best: Option<(f64, usize)>,
    pub since_best: usize,
    pub source_counts: Vec<Vec<usize>>,
    pub labels: Vec<String>,
    pub satm: String,
    /// Every steering change applied before `step` (resume replays them).
    #[serde(default)]
    pub events: Vec<SteerEvent>,
}

fn write_tensors(path: &Path, named: &[(String, Tensor)]) -> Result<()> {
    let cpu: Vec<(String, Tensor)> =
        named.iter().map(|(n, t)| (n.clone(), t.detach().to_device(tch::Device::Cpu).contiguous())).collect();
    fsutil::atomic_write_path(path, |tmp| Tensor::write_safetensors(&cpu, tmp).map_err(Into::into))
}

fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    Tensor::read_safetensors(path).with_context(|| format!("reading {}", path.display()))
}

/// Copies saved tensors into `vars` by name; every variable must be present with the same shape.
fn copy_into(what: &str, vars: Vec<(String, Tensor)>, saved: &[(String, Tensor)]) -> Result<()> {
    let map: std::collections::HashMap<&str, &Tensor> = saved.iter().map(|(n, t)| (n.as_str(), t)).collect();
    tch::no_grad(|| -> Result<()> {
        for (name, mut v) in vars {
            let src = map.get(name.as_str()).ok_or_else(|| anyhow::anyhow!("{what}: checkpoint lacks {name}"))?;
            if src.size() != v.size() {
                bail!("{what}: {name} has shape {:?} in the checkpoint, {:?} in the network", src.size(), v.size());
            }
            v.f_copy_(src)?;
        }
        Ok(())
    })
}

/// Copies a saved state into network `k`: every tensor of its state_dict (integer BN counters included) must be
/// there with the same shape.
fn restore_net(k: usize, net: &mut Net, saved: &[(String, Tensor)]) -> Result<()> {
    let have: std::collections::HashSet<&str> = saved.iter().map(|(n, _)| n.as_str()).collect();
    if let Some((name, _)) = net.state_dict().into_iter().find(|(n, _)| !have.contains(n.as_str())) {
        bail!("network {k}: checkpoint lacks {name}");
    }
    net.load_tensors(saved, true).with_context(|| format!("network {k}"))?;
    Ok(())
}

fn var_list(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Writes a checkpoint for `step` under `run_dir/checkpoints/` and returns its directory. Older ones but the
/// previous are removed.
pub fn save(
    run_dir: &Path,
    trainees: &[&mut Net],
    parts: &[(Option<&nn::VarStore>, &Optimizer)],
    state: &CheckpointState,
) -> Result<PathBuf> {
    let root = run_dir.join("checkpoints");
    let name = format!("step-{:07}", state.step);
    let dir = root.join(&name);
    // A leftover from an interrupted earlier write of the same step is replaced.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing stale {}", dir.display()))?;
    }
    let write = || -> Result<()> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (k, net) in trainees.iter().enumerate() {
            // state_dict, not named_variables: the BN counters live outside the VarStore.
            write_tensors(&dir.join(format!("net{k}.safetensors")), &net.state_dict())?;
            let (da, opt) = &parts[k];
            if let Some(vs) = da {
                write_tensors(&dir.join(format!("da{k}.safetensors")), &var_list(vs))?;
            }
            write_tensors(&dir.join(format!("opt{k}.safetensors")), &opt.state())?;
        }
        write_state(&dir, state)
    };
    if let Err(e) = write() {
        // An incomplete directory is never named by latest.json; remove it so nothing mistakes it for a checkpoint.
        let _ = std::fs::remove_dir_all(&dir);
        let kept = latest(run_dir).map(|p| format!("; the previous checkpoint {} is unchanged", p.display()));
        return Err(e.context(format!("checkpoint of step {} not written{}", state.step, kept.unwrap_or_default())));
    }
    let prev = latest(run_dir).ok();
    fsutil::atomic_write(
        &root.join("latest.json"),
        serde_json::json!({"dir": name, "step": state.step}).to_string().as_bytes(),
    )?;
    // Keep the newest two.
    if let Ok(rd) = std::fs::read_dir(&root) {
        let keep: Vec<PathBuf> = [Some(dir.clone()), prev].into_iter().flatten().collect();
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir()
                && p.file_name().is_some_and(|f| f.to_string_lossy().starts_with("step-"))
                && !keep.contains(&p)
            {
                let _ = std::fs::remove_dir_all(&p);
            }
        }
    }
    Ok(dir)
}

const STATE: &str = "state.json";
const FORMAT: u32 = 2;
const PREFIX: &str = "{\"sha256\":\"";
const MIDDLE: &str = "\",\"checkpoint\":";

/// Size and sha256 of one checkpoint file, as state.json records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FileSum {
    bytes: u64,
    sha256: String,
}

#[derive(Serialize)]
struct BodyOut<'a> {
    format: u32,
    files: &'a BTreeMap<String, FileSum>,
    state: &'a CheckpointState,
}

#[derive(Deserialize)]
struct BodyIn {
    format: u32,
    files: BTreeMap<String, FileSum>,
    state: CheckpointState,
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn file_sum(path: &Path) -> Result<FileSum> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(FileSum { bytes: bytes.len() as u64, sha256: hex(&bytes) })
}

/// The checkpoint's data files: every plain file in `dir` but state.json and temporaries (dot files).
fn data_files(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name != STATE && !name.starts_with('.') && e.file_type().is_ok_and(|t| t.is_file()) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Writes state.json last, with the size and sha256 of every file already in `dir` (read back from disk, so what
/// is recorded is what was written).
fn write_state(dir: &Path, state: &CheckpointState) -> Result<()> {
    let mut files = BTreeMap::new();
    for name in data_files(dir)? {
        files.insert(name.clone(), file_sum(&dir.join(&name))?);
    }
    let body = serde_json::to_string(&BodyOut { format: FORMAT, files: &files, state })?;
    let text = format!("{PREFIX}{}{MIDDLE}{body}}}\n", hex(body.as_bytes()));
    fsutil::atomic_write(&dir.join(STATE), text.as_bytes())
}

/// Reads state.json and checks every file it lists; an error names the damaged or missing file.
fn verify(dir: &Path) -> Result<CheckpointState> {
    let sp = dir.join(STATE);
    if !dir.is_dir() {
        bail!("checkpoint directory {} does not exist", dir.display());
    }
    let text = match std::fs::read_to_string(&sp) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{} is missing: the checkpoint was not completely written", sp.display())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {} (damaged?)", sp.display())),
    };
    let Some(rest) = text.strip_prefix(PREFIX) else {
        // A checkpoint from before checksums: the plain state, nothing to verify against.
        let state: CheckpointState = serde_json::from_str(&text).with_context(|| {
            format!("{} is damaged (neither a checksummed nor an older checkpoint state)", sp.display())
        })?;
        eprintln!(
            "satm: warning: {} has no checksums (written by an older satm); its files are not verified",
            sp.display()
        );
        return Ok(state);
    };
    let damaged = || anyhow::anyhow!("{} is damaged or truncated (its layout is broken)", sp.display());
    let (want, rest) = rest.split_at_checked(64).ok_or_else(damaged)?;
    let body = rest.strip_prefix(MIDDLE).and_then(|b| b.trim_end().strip_suffix('}')).ok_or_else(damaged)?;
    let got = hex(body.as_bytes());
    if got != want {
        bail!(
            "{} is damaged: its sha256 is {}…, the recorded one {}…",
            sp.display(),
            &got[..12],
            &want[..12.min(want.len())]
        );
    }
    let b: BodyIn = serde_json::from_str(body).with_context(|| format!("{} is damaged", sp.display()))?;
    if b.format != FORMAT {
        bail!("{} has checkpoint format {}; this satm reads format {FORMAT}", sp.display(), b.format);
    }
    for (name, want) in &b.files {
        let p = dir.join(name);
        let got = match file_sum(&p) {
            Ok(s) => s,
            Err(_) if !p.exists() => bail!("checkpoint file {} is missing (state.json lists it)", p.display()),
            Err(e) => return Err(e),
        };
        if got.bytes != want.bytes {
            bail!(
                "checkpoint file {} is truncated or damaged: {} bytes, state.json records {}",
                p.display(),
                got.bytes,
                want.bytes
            );
        }
        if got.sha256 != want.sha256 {
            bail!(
                "checkpoint file {} is damaged: its sha256 is {}…, state.json records {}…",
                p.display(),
                &got.sha256[..12],
                &want.sha256[..12.min(want.sha256.len())]
            );
        }
    }
    Ok(b.state)
}

fn step_of(dir: &Path) -> Option<usize> {
    dir.file_name()?.to_str()?.strip_prefix("step-")?.parse().ok()
}

/// Picks the checkpoint to load from `path` and verifies it. A checkpoint directory is verified as it is. For a run
/// directory, the one latest.json names comes first; when it is damaged or incomplete, the newest older one that
/// verifies is used, with a warning naming both.
fn choose(path: &Path) -> Result<(PathBuf, CheckpointState)> {
    let root = path.join("checkpoints");
    if !root.is_dir() {
        if !path.join(STATE).is_file() && step_of(path).is_none() {
            bail!("{} has no checkpoint ({} missing)", path.display(), root.join("latest.json").display());
        }
        return Ok((path.to_path_buf(), verify(path)?));
    }
    let pointed = latest(path);
    let mut dirs: Vec<(usize, PathBuf)> = std::fs::read_dir(&root)
        .with_context(|| format!("listing {}", root.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter_map(|p| step_of(&p).map(|s| (s, p)))
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    let which = if pointed.is_ok() { "previous" } else { "newest" };
    let (first_err, fallback): (anyhow::Error, Vec<PathBuf>) = match &pointed {
        Ok(dir) => match verify(dir) {
            Ok(st) => return Ok((dir.clone(), st)),
            Err(e) => {
                let limit = step_of(dir).unwrap_or(usize::MAX);
                (e, dirs.into_iter().filter(|(s, p)| *s < limit && p != dir).map(|(_, p)| p).collect())
            }
        },
        Err(e) => (anyhow::anyhow!("{e:#}"), dirs.into_iter().map(|(_, p)| p).collect()),
    };
    let mut skipped = Vec::new();
    for dir in fallback {
        match verify(&dir) {
            Ok(st) => {
                eprintln!("satm: warning: {first_err:#}");
                for s in &skipped {
                    eprintln!("satm: warning: {s}");
                }
                eprintln!(
                    "satm: warning: resuming from the {which} complete checkpoint {} (step {})",
                    dir.display(),
                    st.step
                );
                return Ok((dir, st));
            }
            Err(e) => skipped.push(format!("{e:#}")),
        }
    }
    let mut msg = format!("{first_err:#}");
    for s in &skipped {
        msg.push_str(&format!("; {s}"));
    }
    bail!("{} has no complete checkpoint to resume from: {msg}", path.display())
}

/// The checkpoint latest.json names in a run directory (or `path` itself when it is a checkpoint directory); not
/// verified (`load` verifies, and falls back when it is damaged).
pub fn latest(path: &Path) -> Result<PathBuf> {
    if path.join(STATE).is_file() {
        return Ok(path.to_path_buf());
    }
    let ptr = path.join("checkpoints").join("latest.json");
    let text = std::fs::read_to_string(&ptr)
        .with_context(|| format!("{} has no checkpoint ({} missing)", path.display(), ptr.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is corrupt", ptr.display()))?;
    let name = v["dir"].as_str().ok_or_else(|| anyhow::anyhow!("{} names no checkpoint", ptr.display()))?;
    if name.is_empty() || name.contains('/') || name.contains("..") {
        bail!("{} is corrupt (names {name:?})", ptr.display());
    }
    Ok(path.join("checkpoints").join(name))
}

/// Loads the checkpoint at `path` (a run directory or a checkpoint directory) into the trainees, DA heads and
/// optimizers, and returns the loop state. Every file is verified against state.json before anything is loaded.
pub fn load(
    path: &Path,
    trainees: &mut [&mut Net],
    parts: &mut [(Option<&mut nn::VarStore>, &mut Optimizer)],
) -> Result<CheckpointState> {
    let (dir, state) = choose(path)?;
    if state.labels.len() < trainees.len() {
        bail!("checkpoint {} holds {} networks, this run trains {}", dir.display(), state.labels.len(), trainees.len());
    }
    for (k, net) in trainees.iter_mut().enumerate() {
        let path = dir.join(format!("net{k}.safetensors"));
        restore_net(k, net, &read_tensors(&path)?).with_context(|| format!("restoring {}", path.display()))?;
        let (da, opt) = &mut parts[k];
        if let Some(vs) = da {
            let p = dir.join(format!("da{k}.safetensors"));
            if !p.is_file() {
                bail!("checkpoint {} has no DA head for network {k} (was it written with r_da = 0?)", dir.display());
            }
            copy_into(&format!("DA head {k}"), var_list(vs), &read_tensors(&p)?)?;
        }
        opt.load_state(&read_tensors(&dir.join(format!("opt{k}.safetensors")))?)?;
    }
    Ok(state)
}
