//! `Net`: one network (its VarStore, its layers, its spec) with features/head/forward, freezing, weights in and out,
//! cloning and device moves.
use super::Classifier;
use super::cpu::{self, Body};
use super::inception::{self, InceptionAux};
use super::layers::{Ctx, Linear, Stage};
use super::spec::ModelSpec;
use super::tv;
use crate::core::report::{Cell, Table};
use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tch::{Device, Kind, Tensor, nn};

/// What `Net::load` did: names loaded, names the model has but the file lacks, names the file has but the model
/// lacks, and names whose shapes differ (name, the model's shape, the file's shape).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    pub mismatched: Vec<(String, Vec<i64>, Vec<i64>)>,
}

impl LoadReport {
    /// True when every tensor of the model came from the file and the file had nothing else.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }

    /// A one-paragraph account naming the offending keys (at most 20 of each kind).
    pub fn problems(&self) -> String {
        fn list(v: &[String]) -> String {
            let mut s = v.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 20 {
                s.push_str(&format!(", … and {} more", v.len() - 20));
            }
            s
        }
        let mut parts = vec![];
        if !self.missing.is_empty() {
            parts.push(format!("missing {}: {}", self.missing.len(), list(&self.missing)));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected {}: {}", self.unexpected.len(), list(&self.unexpected)));
        }
        if !self.mismatched.is_empty() {
            let m: Vec<String> =
                self.mismatched.iter().map(|(n, want, got)| format!("{n} (model {want:?}, file {got:?})")).collect();
            parts.push(format!("shape mismatch {}: {}", m.len(), list(&m)));
        }
        parts.join("; ")
    }
}

/// One network. `vs` holds every tensor under PyTorch's state_dict names; `spec` says what was built.
pub struct Net {
    pub vs: nn::VarStore,
    pub spec: ModelSpec,
    stages: Vec<Stage>,
    head: Linear,
    head_name: String,
    feature_dim: i64,
    /// inception_v3's auxiliary classifier, present only with `spec.aux_logits`.
    aux: Option<InceptionAux>,
    bns: Vec<(String, Arc<AtomicI64>)>,
    /// Names of parameters (as opposed to buffers such as running statistics), fixed at construction.
    param_names: BTreeSet<String>,
    frozen: BTreeSet<String>,
    /// `[1, 3, 1, 1]` mean and std, or None when normalization is the identity.
    norm: Option<(Tensor, Tensor)>,
    channels_last: bool,
}

const BN_COUNTER: &str = "num_batches_tracked";

fn norm_tensors(spec: &ModelSpec, device: Device) -> Result<Option<(Tensor, Tensor)>> {
    if !spec.normalizes() {
        return Ok(None);
    }
    let m = Tensor::f_from_slice(&spec.mean)?.f_to_kind(Kind::Float)?.f_view([1, 3, 1, 1])?.f_to_device(device)?;
    let s = Tensor::f_from_slice(&spec.std)?.f_to_kind(Kind::Float)?.f_view([1, 3, 1, 1])?.f_to_device(device)?;
    Ok(Some((m, s)))
}

/// `name` is `prefix` or lies under it (`features.1` covers `features.1.weight`, not `features.10.weight`);
/// a prefix ending in '.' matches as plain text.
fn under(name: &str, prefix: &str) -> bool {
    if prefix.ends_with('.') {
        name.starts_with(prefix)
    } else {
        name == prefix || name.strip_prefix(prefix).is_some_and(|r| r.starts_with('.'))
    }
}

/// Reads named tensors from a `.safetensors` or `.ot` file.
pub fn read_weights(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !path.exists() {
        bail!("weights file {} does not exist", path.display());
    }
    match ext {
        "safetensors" => Tensor::read_safetensors(path).with_context(|| format!("reading {}", path.display())),
        "ot" => Tensor::load_multi(path).with_context(|| format!("reading {}", path.display())),
        _ => bail!(
            "{}: unknown weights format '.{ext}' (use .safetensors, or .ot from tch; convert PyTorch .pt/.pth files with tools/convert_weights.py)",
            path.display()
        ),
    }
}

/// Writes named tensors (moved to the CPU, made contiguous) atomically as `.safetensors` or `.ot` by extension.
pub fn write_weights(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_string();
    if ext != "safetensors" && ext != "ot" {
        bail!("{}: unknown weights format '.{ext}' (use .safetensors or .ot)", path.display());
    }
    let cpu = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?)))
        .collect::<Result<Vec<_>>>()?;
    crate::core::fsutil::atomic_write_path(path, |tmp| {
        if ext == "safetensors" {
            Tensor::write_safetensors(&cpu, tmp)?;
        } else {
            Tensor::save_multi(&cpu, tmp)?;
        }
        Ok(())
    })
}

/// Copies named tensors into the variables of `vs` (a model's, or a trainer's DA head's). Strict: any missing,
/// unexpected or wrongly shaped tensor is an error naming them, and nothing is changed. Not strict: what matches is
/// loaded and the rest reported.
pub fn load_named(vs: &nn::VarStore, tensors: &[(String, Tensor)], strict: bool) -> Result<LoadReport> {
    let vars = vs.variables();
    let mut report = LoadReport::default();
    let mut seen = BTreeSet::new();
    let mut to_copy = vec![];
    for (name, t) in tensors {
        match vars.get(name) {
            None => report.unexpected.push(name.clone()),
            Some(v) => {
                seen.insert(name.clone());
                if v.size() != t.size() {
                    report.mismatched.push((name.clone(), v.size(), t.size()));
                } else if !t.is_floating_point() {
                    bail!("{name}: expected a floating-point tensor, the file has {:?}", t.kind());
                } else {
                    to_copy.push((name.clone(), v, t));
                }
            }
        }
    }
    report.missing = vars.keys().filter(|n| !seen.contains(*n)).cloned().collect();
    report.missing.sort();
    report.unexpected.sort();
    report.mismatched.sort();
    if strict && !report.is_complete() {
        bail!("strict load failed: {}", report.problems());
    }
    tch::no_grad(|| -> Result<()> {
        for (name, v, t) in &to_copy {
            let mut v = v.shallow_clone();
            v.f_copy_(t).with_context(|| format!("copying {name}"))?;
        }
        Ok(())
    })?;
    report.loaded = to_copy.into_iter().map(|(n, _, _)| n).collect();
    report.loaded.sort();
    Ok(report)
}

impl Net {
    /// Builds `spec` on `device` with its architecture's initialisation.
    pub fn new(spec: &ModelSpec, device: Device) -> Result<Net> {
        Net::build(spec, device, false)
    }

    /// Builds `spec` and loads `path` into it. A strict load overwrites every tensor, so the network is then built
    /// without random initialisation (faster for big nets, and the RNG stream is left untouched).
    pub fn with_weights(spec: &ModelSpec, device: Device, path: &Path, strict: bool) -> Result<(Net, LoadReport)> {
        let tensors = read_weights(path)?;
        let mut net = Net::build(spec, device, strict)?;
        let report = net
            .load_tensors(&tensors, strict)
            .with_context(|| format!("loading {} into {}", path.display(), net.label()))?;
        Ok((net, report))
    }

    /// Builds `spec` from a full state (every variable, and BN counters under `<bn>.num_batches_tracked`) without
    /// drawing initial weights: a strict load, so anything missing or extra is an error.
    pub fn from_state(spec: &ModelSpec, device: Device, state: &[(String, Tensor)]) -> Result<Net> {
        let mut net = Net::build(spec, device, true)?;
        net.load_tensors(state, true)?;
        Ok(net)
    }

    /// Each BatchNorm's `num_batches_tracked` counter, by the BN's name: handles that another thread may read while
    /// this network trains (a live snapshot reads them between two steps).
    pub fn bn_counters(&self) -> Vec<(String, Arc<AtomicI64>)> {
        self.bns.iter().map(|(n, c)| (format!("{n}.{BN_COUNTER}"), Arc::clone(c))).collect()
    }

    fn build(spec: &ModelSpec, device: Device, zero_init: bool) -> Result<Net> {
        spec.validate()?;
        let vs = nn::VarStore::new(device);
        let ctx = Ctx::new(zero_init);
        let root = vs.root();
        let (c, w) = (spec.classes, spec.width);
        let mut aux = None;
        let body: Body = match spec.arch.as_str() {
            "vgg_s" => cpu::vgg_s(&ctx, &root, c, w, false)?,
            "vggbn_s" => cpu::vgg_s(&ctx, &root, c, w, true)?,
            "resnet_s" => cpu::resnet_s(&ctx, &root, c, w)?,
            "vgg16" => tv::vgg16(&ctx, &root, c, false)?,
            "vgg16_bn" => tv::vgg16(&ctx, &root, c, true)?,
            "resnet18" => tv::resnet(&ctx, &root, c, [2, 2, 2, 2], false)?,
            "resnet50" => tv::resnet(&ctx, &root, c, [3, 4, 6, 3], true)?,
            "resnet101" => tv::resnet(&ctx, &root, c, [3, 4, 23, 3], true)?,
            "inception_v3" => {
                let (b, a) = inception::inception_v3(&ctx, &root, c, spec.aux_logits)?;
                aux = a;
                b
            }
            other => bail!("unknown architecture '{other}'"),
        };
        let param_names: BTreeSet<String> =
            vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).map(|(n, _)| n).collect();
        let bns = ctx.bns.into_inner();
        Ok(Net {
            norm: norm_tensors(spec, device)?,
            vs,
            spec: spec.clone(),
            stages: body.stages,
            head: body.head,
            head_name: body.head_name,
            feature_dim: body.feature_dim,
            aux,
            bns,
            param_names,
            frozen: BTreeSet::new(),
            channels_last: false,
        })
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let s = x.size();
        if s.len() != 4 || s[1] != 3 {
            bail!("{}: expected images [B, 3, H, W], got {s:?}", self.label());
        }
        let m = self.spec.min_size();
        if s[2] < m || s[3] < m {
            bail!("{}: images of {}×{} are too small (at least {m}×{m})", self.label(), s[2], s[3]);
        }
        Ok(())
    }

    /// Pixels `[B, 3, H, W]` in [0, 1] → features `[B, F]` (the vector the DA head sees); normalization is inside.
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.run_stages(x, train, false)?.0)
    }

    /// Runs the feature stages; with `want_aux` also inception_v3's AuxLogits on Mixed_6e's output.
    fn run_stages(&self, x: &Tensor, train: bool, want_aux: bool) -> Result<(Tensor, Option<Tensor>)> {
        self.check_input(x)?;
        let mut h = match &self.norm {
            Some((m, s)) => x.f_sub(m)?.f_div(s)?,
            None => x.shallow_clone(),
        };
        if self.channels_last {
            h = crate::core::amp::channels_last(&h);
        }
        let mut aux_out = None;
        let mut i = 0;
        while i < self.stages.len() {
            let st = &self.stages[i];
            let next = self.stages.get(i + 1);
            let ctx = || format!("{} at {}", self.label(), st.name);
            match (st.m.kind(), next.map(|n| n.m.kind())) {
                // ReLU then max-pool = max-pool then ReLU (ReLU is monotone; gradients agree too, ties included),
                // on a quarter of the elements; the pooled output is fresh, so the ReLU runs in place.
                ("ReLU", Some("MaxPool2d")) => {
                    let pool = next.map(|n| &n.m).context("max-pool stage")?;
                    let mut p = pool.forward(&h, train).with_context(ctx)?;
                    h = p.f_relu_().with_context(ctx)?;
                    i += 2;
                    continue;
                }
                // A ReLU right after a conv / BN / linear owns its input (fresh, and not saved for those layers'
                // backward passes), so it runs in place: no new activation buffer.
                ("ReLU", _) if i > 0 && matches!(self.stages[i - 1].m.kind(), "Conv2d" | "BatchNorm2d" | "Linear") => {
                    h = h.f_relu_().with_context(ctx)?;
                }
                _ => h = st.m.forward(&h, train).with_context(ctx)?,
            }
            if let (true, Some(a), "Mixed_6e") = (want_aux, &self.aux, st.name.as_str()) {
                aux_out = Some(a.forward(&h, train).with_context(|| format!("{} at AuxLogits", self.label()))?);
            }
            i += 1;
        }
        Ok((h, aux_out))
    }

    /// inception_v3 built with `aux_logits`: (logits, aux logits) as torchvision's training-mode output.
    /// Other networks: (logits, None).
    pub fn forward_with_aux(&self, x: &Tensor, train: bool) -> Result<(Tensor, Option<Tensor>)> {
        let m = super::spec::AUX_MIN_SIZE;
        if self.aux.is_some() && x.dim() == 4 && (x.size()[2] < m || x.size()[3] < m) {
            bail!("{}: AuxLogits needs inputs of at least {m}×{m}, got {:?}", self.label(), x.size());
        }
        let (f, a) = self.run_stages(x, train, true)?;
        Ok((self.head(&f)?, a))
    }

    /// Features `[B, F]` → logits `[B, C]`.
    pub fn head(&self, f: &Tensor) -> Result<Tensor> {
        self.head.forward(f).with_context(|| format!("{} head {}", self.label(), self.head_name))
    }

    /// Pixels → logits.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.head(&self.features_t(x, train)?)
    }

    pub fn feature_dim(&self) -> i64 {
        self.feature_dim
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The architecture, with the width when it is not 1 (`vgg_s@w0.5`).
    pub fn label(&self) -> String {
        if self.spec.width == 1.0 { self.spec.arch.clone() } else { format!("{}@w{}", self.spec.arch, self.spec.width) }
    }

    /// The name of the classifier head's parameters' prefix (`head`, `fc`, `classifier.6`).
    pub fn head_name(&self) -> &str {
        &self.head_name
    }

    /// Parameters that are not frozen, sorted by name (so optimizer state lines up across runs).
    pub fn trainable_variables(&self) -> Vec<Tensor> {
        self.named_variables()
            .into_iter()
            .filter(|(n, _)| self.param_names.contains(n) && !self.frozen.contains(n))
            .map(|(_, t)| t)
            .collect()
    }

    /// Every tensor of the model (parameters and BN running statistics), sorted by name.
    pub fn named_variables(&self) -> Vec<(String, Tensor)> {
        self.vs.variables().into_iter().collect::<BTreeMap<_, _>>().into_iter().collect()
    }

    /// Parameter names (no buffers), sorted.
    pub fn param_names(&self) -> Vec<String> {
        self.param_names.iter().cloned().collect()
    }

    /// How many parameters lie under `prefix` (all for None); lets callers reject a prefix that matches nothing.
    pub fn matching_params(&self, prefix: Option<&str>) -> usize {
        self.param_names.iter().filter(|n| prefix.is_none_or(|p| under(n, p))).count()
    }

    fn set_frozen(&mut self, prefix: Option<&str>, frozen: bool) {
        let vars = self.vs.variables();
        for n in self.param_names.iter().filter(|n| prefix.is_none_or(|p| under(n, p))) {
            if let Some(t) = vars.get(n) {
                let _ = t.set_requires_grad(!frozen);
            }
            if frozen {
                self.frozen.insert(n.clone());
            } else {
                self.frozen.remove(n);
            }
        }
    }

    /// Stops gradients for all parameters, or those under a name prefix (`features`, `layer4`, `features.3`).
    pub fn freeze(&mut self, prefix: Option<&str>) {
        self.set_frozen(prefix, true)
    }

    /// Undoes `freeze` for all parameters or those under a prefix.
    pub fn unfreeze(&mut self, prefix: Option<&str>) {
        self.set_frozen(prefix, false)
    }

    /// Names of frozen parameters, sorted.
    pub fn frozen_names(&self) -> Vec<String> {
        self.frozen.iter().cloned().collect()
    }

    /// Number of parameter elements, frozen or not — PyTorch's `sum(p.numel() for p in net.parameters())`.
    pub fn param_count(&self) -> i64 {
        self.count_where(|n| self.param_names.contains(n))
    }

    /// Number of parameter elements that are not frozen.
    pub fn trainable_param_count(&self) -> i64 {
        self.count_where(|n| self.param_names.contains(n) && !self.frozen.contains(n))
    }

    fn count_where(&self, keep: impl Fn(&str) -> bool) -> i64 {
        self.vs.variables().iter().filter(|(n, _)| keep(n)).map(|(_, t)| t.numel() as i64).sum()
    }

    /// Everything `save` writes: the variables plus each BN's `num_batches_tracked` (0-d int64), sorted by name.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut all: BTreeMap<String, Tensor> = self.vs.variables().into_iter().collect();
        for (name, c) in &self.bns {
            all.insert(format!("{name}.{BN_COUNTER}"), Tensor::from(c.load(Ordering::Relaxed)));
        }
        all.into_iter().collect()
    }

    /// Saves the weights as `.safetensors` or `.ot` (by extension), atomically, with PyTorch's state_dict names.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_weights(path, &self.state_dict()).with_context(|| format!("saving {}", self.label()))
    }

    /// Loads weights from a file (see `load_tensors`).
    pub fn load(&mut self, path: &Path, strict: bool) -> Result<LoadReport> {
        let tensors = read_weights(path)?;
        self.load_tensors(&tensors, strict).with_context(|| format!("loading {} into {}", path.display(), self.label()))
    }

    /// Copies named tensors into the model. Strict: any missing, unexpected or wrongly shaped tensor is an error
    /// naming them, and nothing is changed. Not strict: what matches is loaded and the rest reported (this is how a
    /// checkpoint with another class count loads everything but the head). `num_batches_tracked` keys are accepted.
    pub fn load_tensors(&mut self, tensors: &[(String, Tensor)], strict: bool) -> Result<LoadReport> {
        let counters: BTreeMap<String, &Arc<AtomicI64>> =
            self.bns.iter().map(|(n, c)| (format!("{n}.{BN_COUNTER}"), c)).collect();
        let (counts, rest): (Vec<_>, Vec<_>) = tensors.iter().partition(|(n, _)| counters.contains_key(n));
        let rest: Vec<(String, Tensor)> = rest.into_iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        let report = load_named(&self.vs, &rest, strict)?;
        for (n, t) in counts {
            // A counter that is not a 0-d integer is ignored: PyTorch only reads it when momentum is None.
            if let (Some(c), Ok(v)) = (counters.get(n), i64::try_from(t)) {
                c.store(v, Ordering::Relaxed);
            }
        }
        Ok(report)
    }

    /// A deep copy on the same device with independent weights (same frozen set, same memory format).
    pub fn try_clone(&self) -> Result<Net> {
        let mut n = Net::build(&self.spec, self.device(), true)?;
        n.copy_from(self)?;
        for f in &self.frozen {
            n.freeze(Some(f));
        }
        if self.channels_last {
            n.set_channels_last(true);
        }
        Ok(n)
    }

    /// Copies every variable (and BN counters) from a network of the same architecture and shapes.
    pub fn copy_from(&mut self, other: &Net) -> Result<()> {
        if other.spec.arch != self.spec.arch {
            bail!("copy_from: architectures differ ({} vs {})", self.label(), other.label());
        }
        let src = other.vs.variables();
        let dst = self.vs.variables();
        for (n, d) in &dst {
            match src.get(n) {
                None => bail!("copy_from: {} lacks {n}", other.label()),
                Some(s) if s.size() != d.size() => {
                    bail!("copy_from: {n} has shape {:?} here and {:?} in the source", d.size(), s.size())
                }
                _ => {}
            }
        }
        tch::no_grad(|| -> Result<()> {
            for (n, d) in &dst {
                let mut d = d.shallow_clone();
                d.f_copy_(&src[n])?;
            }
            Ok(())
        })?;
        for ((_, c), (_, o)) in self.bns.iter().zip(other.bns.iter()) {
            c.store(o.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Moves every tensor to `device` (the layers share the VarStore's tensors, so they follow).
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        if let Device::Cuda(i) = device {
            let n = tch::Cuda::device_count();
            if i as i64 >= n {
                bail!("cuda:{i} does not exist ({n} CUDA device(s) visible)");
            }
        }
        self.vs.set_device(device);
        self.norm = norm_tensors(&self.spec, device)?;
        Ok(())
    }

    /// Converts 4-D conv weights to channels_last (NHWC strides) or back; inputs are then converted in `features_t`.
    pub fn set_channels_last(&mut self, on: bool) {
        let vars = self.vs.variables();
        tch::no_grad(|| {
            for (_, t) in vars.iter().filter(|(_, t)| t.dim() == 4) {
                let new = if on { crate::core::amp::channels_last(t) } else { t.contiguous() };
                let mut t = t.shallow_clone();
                t.set_data(&new);
            }
        });
        self.channels_last = on;
    }

    /// Whether the forward pass draws random numbers in training mode (a dropout layer).
    pub fn has_dropout(&self) -> bool {
        self.stages.iter().any(|s| s.m.kind() == "Dropout")
    }

    /// Whether weights and inputs use channels_last.
    pub fn is_channels_last(&self) -> bool {
        self.channels_last
    }

    fn params_under(&self, prefix: &str) -> i64 {
        self.count_where(|n| self.param_names.contains(n) && under(n, prefix))
    }

    /// A table of the top-level layers: name, type, output shape (from a dummy eval forward of one
    /// `size`×`size` image) and parameter count; the last row is the total.
    pub fn summary(&self) -> Result<Table> {
        let mut t = Table::new(
            format!("{} ({} classes, input 3×{}×{})", self.label(), self.spec.classes, self.spec.size, self.spec.size),
            &["layer", "type", "output shape", "params"],
        );
        let x = Tensor::f_zeros([1, 3, self.spec.size, self.spec.size], (Kind::Float, self.device()))?;
        let _g = tch::no_grad_guard();
        let mut h = x;
        if let Some((m, s)) = &self.norm {
            h = h.f_sub(m)?.f_div(s)?;
        }
        for st in &self.stages {
            h = st.m.forward(&h, false).with_context(|| format!("summary of {} at {}", self.label(), st.name))?;
            t.push(vec![
                Cell::text(&st.name),
                Cell::text(st.m.kind()),
                Cell::text(format!("{:?}", h.size())),
                Cell::Int { value: self.params_under(&st.name) },
            ])?;
            if let (Some(a), "Mixed_6e") = (&self.aux, st.name.as_str()) {
                let y = a.forward(&h, false)?;
                t.push(vec![
                    Cell::text("AuxLogits"),
                    Cell::text("InceptionAux (not used by forward)"),
                    Cell::text(format!("{:?}", y.size())),
                    Cell::Int { value: self.params_under("AuxLogits") },
                ])?;
            }
        }
        let y = self.head.forward(&h)?;
        t.push(vec![
            Cell::text(&self.head_name),
            Cell::text("Linear"),
            Cell::text(format!("{:?}", y.size())),
            Cell::Int { value: self.params_under(&self.head_name) },
        ])?;
        let listed: i64 =
            t.rows.iter().filter_map(|r| if let Cell::Int { value } = r[3] { Some(value) } else { None }).sum();
        let total = self.param_count();
        if listed != total {
            t.push(vec![
                Cell::text("(not in forward)"),
                Cell::Empty,
                Cell::Empty,
                Cell::Int { value: total - listed },
            ])?;
        }
        t.push(vec![Cell::text("total"), Cell::Empty, Cell::Empty, Cell::Int { value: total }])?;
        let trainable = self.trainable_param_count();
        if trainable != total {
            t.note(format!("trainable: {trainable} of {total} parameters ({} tensors frozen)", self.frozen.len()));
        }
        Ok(t)
    }
}

impl Classifier for Net {
    fn logits_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_t(x, train)
    }
    fn num_classes(&self) -> i64 {
        self.spec.classes
    }
    fn device(&self) -> Device {
        self.vs.device()
    }
    fn label(&self) -> String {
        Net::label(self)
    }
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Net({}, {} classes, {} params, {:?})",
            self.label(),
            self.spec.classes,
            self.param_count(),
            self.device()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matching_respects_components() {
        assert!(under("features.1.weight", "features.1"));
        assert!(!under("features.10.weight", "features.1"));
        assert!(!under("features.1", "features.1.weight"));
        assert!(under("features.10.weight", "features."));
        assert!(under("fc.weight", "fc.weight"));
    }

    #[test]
    fn nets_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<Net>();
    }

    #[test]
    fn load_report_lists_keys_and_truncates() {
        let r = LoadReport {
            missing: (0..25).map(|i| format!("m{i:02}")).collect(),
            mismatched: vec![("fc.weight".into(), vec![3, 8], vec![5, 8])],
            ..Default::default()
        };
        let p = r.problems();
        assert!(p.starts_with("missing 25: m00, m01"), "{p}");
        assert!(p.contains("m19, … and 5 more") && !p.contains("m20"), "{p}");
        assert!(p.contains("shape mismatch 1: fc.weight (model [3, 8], file [5, 8])"), "{p}");
        assert!(!r.is_complete() && LoadReport::default().is_complete());
    }
}
