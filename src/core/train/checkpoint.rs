//! Checkpoints: every trainee's state (variables, BN running statistics and `num_batches_tracked` counters), DA heads, optimizer state, step, history and
//! early-stopping state. A checkpoint is a directory `checkpoints/step-NNNNNNN/`, written completely before the pointer
//! `checkpoints/latest.json` is atomically replaced to name it, so a reader never sees a half-written checkpoint.
//! The RNG needs no saving: every step reseeds from (seed, step).
use super::History;
use super::control::SteerEvent;
use super::optim::Optimizer;
use crate::core::fsutil;
use crate::core::models::Net;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
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
    fsutil::atomic_write(&dir.join("state.json"), serde_json::to_string(state)?.as_bytes())?;
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

/// The newest complete checkpoint of a run directory (or `path` itself when it is a checkpoint directory).
pub fn latest(path: &Path) -> Result<PathBuf> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    let ptr = path.join("checkpoints").join("latest.json");
    let text = std::fs::read_to_string(&ptr)
        .with_context(|| format!("{} has no checkpoint ({} missing)", path.display(), ptr.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is corrupt", ptr.display()))?;
    let name = v["dir"].as_str().ok_or_else(|| anyhow::anyhow!("{} names no checkpoint", ptr.display()))?;
    Ok(path.join("checkpoints").join(name))
}

/// Loads the checkpoint at `path` (a run directory or a checkpoint directory) into the trainees, DA heads and
/// optimizers, and returns the loop state.
pub fn load(
    path: &Path,
    trainees: &mut [&mut Net],
    parts: &mut [(Option<&mut nn::VarStore>, &mut Optimizer)],
) -> Result<CheckpointState> {
    let dir = latest(path)?;
    let state: CheckpointState = serde_json::from_str(
        &std::fs::read_to_string(dir.join("state.json"))
            .with_context(|| format!("reading {}", dir.join("state.json").display()))?,
    )
    .with_context(|| format!("{} is corrupt", dir.join("state.json").display()))?;
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
