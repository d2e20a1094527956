//! Script API for core::models: the `Model` type (`model("vgg16", #{...})`), summaries, weights in and out,
//! freezing, device moves, and eval-mode inference (`predict`, `logits`, `features`).
use crate::core::device;
use crate::core::models::spec::{CPU_ARCHS, NORM_PRESETS, TORCHVISION_ARCHS, norm_preset};
use crate::core::models::{LoadReport, ModelSpec, Net};
use crate::core::report::Table;
use crate::script::cell::{Ref, RefMut, Shared};
use crate::script::convert::{Opts, RResult, guard, script_err, str_array};
use crate::script::docs::doc;
use crate::script::state;
use crate::script::types::TensorV;
use anyhow::{Result, bail};
use rhai::{Array, Dynamic, Engine, Map};
use std::path::Path;
use std::sync::Arc;
use tch::{Kind, Tensor};

/// A network as scripts see it. Assignment shares the network (like Python references); `m.clone()` deep-copies.
/// A background run holds the networks it trains (see `script::cell`): touching one meanwhile is an error naming it.
#[derive(Clone)]
pub struct ModelV(pub Arc<Shared<Net>>);

impl ModelV {
    pub fn new(net: Net) -> ModelV {
        ModelV(Arc::new(Shared::new(net)))
    }

    /// Shared access, or an error saying who has the network (a background run: which one, and what to do).
    pub fn read(&self) -> Result<Ref<'_, Net>> {
        Ok(self.0.try_borrow()?)
    }

    /// Exclusive access, or an error saying who has the network.
    pub fn write(&self) -> Result<RefMut<'_, Net>> {
        Ok(self.0.try_borrow_mut()?)
    }
}

impl std::fmt::Display for ModelV {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.try_borrow() {
            Ok(n) => write!(
                f,
                "Model[{}; {} classes; {} params; {}]",
                n.label(),
                n.spec.classes,
                n.param_count(),
                device::device_name(n.device())
            ),
            Err(_) => write!(f, "Model[busy: {}]", self.0.held_by().unwrap_or_else(|| "in use".into())),
        }
    }
}

const MODEL_OPTS: [&str; 11] =
    ["classes", "width", "size", "pretrained", "strict", "device", "mean", "std", "norm", "aux_logits", "verbose"];

fn three(o: &Opts, key: &str) -> RResult<Option<[f64; 3]>> {
    match o.f64_array(key)? {
        None => Ok(None),
        Some(v) if v.len() == 3 => Ok(Some([v[0], v[1], v[2]])),
        Some(v) => Err(script_err(format!("{}: option '{key}' needs 3 numbers (R, G, B), got {}", o.func(), v.len()))),
    }
}

/// The load report as a map: loaded (count), missing / unexpected (names), mismatched (#{name, model, file}), complete.
pub fn report_map(r: &LoadReport) -> Map {
    let mut m = Map::new();
    m.insert("loaded".into(), Dynamic::from_int(r.loaded.len() as i64));
    m.insert("missing".into(), Dynamic::from_array(str_array(&r.missing)));
    m.insert("unexpected".into(), Dynamic::from_array(str_array(&r.unexpected)));
    let mm: Array = r
        .mismatched
        .iter()
        .map(|(n, want, got)| {
            let mut e = Map::new();
            e.insert("name".into(), n.clone().into());
            e.insert("model".into(), Dynamic::from_array(want.iter().map(|d| Dynamic::from_int(*d)).collect()));
            e.insert("file".into(), Dynamic::from_array(got.iter().map(|d| Dynamic::from_int(*d)).collect()));
            Dynamic::from_map(e)
        })
        .collect();
    m.insert("mismatched".into(), Dynamic::from_array(mm));
    m.insert("complete".into(), Dynamic::from_bool(r.is_complete()));
    m
}

fn build_model(arch: &str, map: Map) -> RResult<ModelV> {
    let o = Opts::new("model", map, &MODEL_OPTS)?;
    if !CPU_ARCHS.contains(&arch) && !TORCHVISION_ARCHS.contains(&arch) {
        return Err(script_err(format!(
            "model: unknown architecture '{arch}' (valid: {}, {})",
            CPU_ARCHS.join(", "),
            TORCHVISION_ARCHS.join(", ")
        )));
    }
    let mut spec = ModelSpec::new(arch, o.i64_or("classes", 8)?);
    spec.width = o.f64_or("width", 1.0)?;
    spec.size = o.i64_or("size", spec.size)?;
    spec.aux_logits = o.bool_or("aux_logits", false)?;
    let norm = o.choice_or("norm", "default", &NORM_PRESETS)?;
    let (mean, std) = guard("model", || norm_preset(&norm, arch))?;
    spec.mean = three(&o, "mean")?.unwrap_or(mean);
    spec.std = three(&o, "std")?.unwrap_or(std);
    let dev = match o.opt_str("device")? {
        Some(d) => guard("model", || device::parse_device(&d))?,
        None => state::device(),
    };
    let strict = o.bool_or("strict", true)?;
    let verbose = o.bool_or("verbose", !state::quiet())?;
    let pretrained = o.opt_str("pretrained")?;
    if o.has("strict") && pretrained.is_none() {
        return Err(script_err("model: 'strict' applies to 'pretrained' weights, and none were given"));
    }
    guard("model", || {
        let net = match pretrained {
            None => Net::new(&spec, dev)?,
            Some(p) => {
                let (net, r) = Net::with_weights(&spec, dev, Path::new(&p), strict)?;
                if verbose && !r.is_complete() {
                    eprintln!("model: {p}: loaded {} tensors; {}", r.loaded.len(), r.problems());
                }
                net
            }
        };
        Ok(ModelV::new(net))
    })
}

/// Pixels for the model: on its device, float.
fn input(net: &Net, x: &Tensor) -> Result<Tensor> {
    let x = if x.is_floating_point() { x.shallow_clone() } else { x.f_to_kind(Kind::Float)? };
    Ok(if x.device() != net.device() { x.f_to_device(net.device())? } else { x })
}

fn infer(m: &ModelV, name: &str, x: &TensorV, f: impl FnOnce(&Net, &Tensor) -> Result<Tensor>) -> RResult<TensorV> {
    guard(name, || {
        let net = m.read()?;
        let x = input(&net, &x.0)?;
        let _g = tch::no_grad_guard();
        Ok(TensorV(f(&net, &x)?))
    })
}

fn with_mut<T>(m: &ModelV, name: &str, f: impl FnOnce(&mut Net) -> Result<T>) -> RResult<T> {
    guard(name, || {
        let mut net = m.write()?;
        f(&mut net)
    })
}

fn with_ref<T>(m: &ModelV, name: &str, f: impl FnOnce(&Net) -> Result<T>) -> RResult<T> {
    guard(name, || {
        let net = m.read()?;
        f(&net)
    })
}

fn freeze(m: &ModelV, name: &str, prefix: Option<&str>, on: bool) -> RResult<()> {
    with_mut(m, name, |n| {
        if n.matching_params(prefix) == 0 {
            let p = prefix.unwrap_or("");
            let mut tops: Vec<String> =
                n.param_names().iter().map(|s| s.split('.').next().unwrap_or("").to_string()).collect();
            tops.dedup();
            bail!("no parameter of {} lies under '{p}' (top-level names: {})", n.label(), tops.join(", "));
        }
        if on {
            n.freeze(prefix)
        } else {
            n.unfreeze(prefix)
        }
        Ok(())
    })
}

fn load(m: &ModelV, path: &str, strict: bool) -> RResult<Map> {
    with_mut(m, "load", |n| Ok(report_map(&n.load(Path::new(path), strict)?)))
}

pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<ModelV>("Model");
    engine.register_fn("to_string", |m: &mut ModelV| m.to_string());
    engine.register_fn("to_debug", |m: &mut ModelV| m.to_string());

    let archs = format!("{}, {}", CPU_ARCHS.join(", "), TORCHVISION_ARCHS.join(", "));
    doc("model", &["arch: &str"], "Model", &format!("A new network with default options. Architectures: {archs}."))
        .register_into_engine(engine, |arch: &str| build_model(arch, Map::new()));
    doc(
        "model",
        &["arch: &str", "opts: Map"],
        "Model",
        "A new network. Options: classes (8), width (1.0, CPU-scale nets only: scales every channel count), \
         size (nominal input side: 32 CPU nets, 299 inception_v3, else 224), pretrained (a .safetensors/.ot file; \
         convert PyTorch .pth with tools/convert_weights.py), strict (true: every tensor must match; false loads \
         what matches, e.g. all but a head of another class count), device (session device), \
         norm (default | none | imagenet | inception | vggface | vggface2), mean / std ([r, g, b] on [0,1] pixels, \
         override norm), aux_logits (inception_v3's AuxLogits parameters, for checkpoints that have them), \
         verbose (print what a non-strict load skipped).",
    )
    .register_into_engine(engine, |arch: &str, opts: Map| build_model(arch, opts));

    doc("summary", &["m: Model"], "Table", "Layers, output shapes (one nominal-size image) and parameter counts.")
        .register_into_engine(engine, |m: &mut ModelV| -> RResult<Table> { with_ref(m, "summary", |n| n.summary()) });
    doc("save", &["m: Model", "path: &str"], "()", "Saves the weights (.safetensors or .ot), with PyTorch's names.")
        .register_into_engine(engine, |m: &mut ModelV, path: &str| -> RResult<()> {
            with_ref(m, "save", |n| n.save(Path::new(path)))
        });
    doc(
        "load",
        &["m: Model", "path: &str"],
        "Map",
        "Loads weights strictly (missing, unexpected or wrongly shaped tensors are an error naming them). \
         Returns #{loaded, missing, unexpected, mismatched, complete}.",
    )
    .register_into_engine(engine, |m: &mut ModelV, path: &str| load(m, path, true));
    doc(
        "load",
        &["m: Model", "path: &str", "opts: Map"],
        "Map",
        "Loads weights; #{strict: false} loads what matches and reports the rest (a head of another class count).",
    )
    .register_into_engine(engine, |m: &mut ModelV, path: &str, opts: Map| -> RResult<Map> {
        let o = Opts::new("load", opts, &["strict"])?;
        load(m, path, o.bool_or("strict", true)?)
    });
    doc("freeze", &["m: Model"], "()", "Stops gradients for every parameter.")
        .register_into_engine(engine, |m: &mut ModelV| freeze(m, "freeze", None, true));
    doc(
        "freeze",
        &["m: Model", "prefix: &str"],
        "()",
        "Stops gradients for parameters under a name prefix (`features`, `layer4`, `features.3`); a prefix that \
         matches nothing is an error.",
    )
    .register_into_engine(engine, |m: &mut ModelV, p: &str| freeze(m, "freeze", Some(p), true));
    doc("unfreeze", &["m: Model"], "()", "Makes every parameter trainable again.")
        .register_into_engine(engine, |m: &mut ModelV| freeze(m, "unfreeze", None, false));
    doc("unfreeze", &["m: Model", "prefix: &str"], "()", "Makes parameters under a name prefix trainable again.")
        .register_into_engine(engine, |m: &mut ModelV, p: &str| freeze(m, "unfreeze", Some(p), false));
    doc(
        "to",
        &["m: Model", "device: &str"],
        "Model",
        "Moves the model to `cpu`, `cuda`, `cuda:N` or `auto`; returns it.",
    )
    .register_into_engine(engine, |m: &mut ModelV, d: &str| -> RResult<ModelV> {
        let dev = guard("to", || device::parse_device(d))?;
        with_mut(m, "to", |n| n.to_device(dev))?;
        Ok(m.clone())
    });
    doc(
        "predict",
        &["m: Model", "x: Tensor"],
        "Tensor",
        "Predicted classes [B] (i64) for pixels [B,3,H,W] in [0,1], eval mode.",
    )
    .register_into_engine(engine, |m: &mut ModelV, x: TensorV| {
        infer(m, "predict", &x, |n, x| Ok(n.forward_t(x, false)?.f_argmax(-1, false)?))
    });
    doc("logits", &["m: Model", "x: Tensor"], "Tensor", "Logits [B, C] for pixels [B,3,H,W] in [0,1], eval mode.")
        .register_into_engine(engine, |m: &mut ModelV, x: TensorV| {
            infer(m, "logits", &x, |n, x| n.forward_t(x, false))
        });
    doc(
        "features",
        &["m: Model", "x: Tensor"],
        "Tensor",
        "Features [B, F] (what the DA head sees: pooled vector, VGG's 4096-d hidden layer), eval mode.",
    )
    .register_into_engine(engine, |m: &mut ModelV, x: TensorV| infer(m, "features", &x, |n, x| n.features_t(x, false)));
    doc("clone", &["m: Model"], "Model", "A deep copy with independent weights (same device, same frozen parameters).")
        .register_into_engine(engine, |m: &mut ModelV| -> RResult<ModelV> {
            with_ref(m, "clone", |n| Ok(ModelV::new(n.try_clone()?)))
        });

    engine.register_get("params", |m: &mut ModelV| -> RResult<i64> { with_ref(m, "params", |n| Ok(n.param_count())) });
    engine.register_get("trainable_params", |m: &mut ModelV| -> RResult<i64> {
        with_ref(m, "trainable_params", |n| Ok(n.trainable_param_count()))
    });
    engine
        .register_get("arch", |m: &mut ModelV| -> RResult<String> { with_ref(m, "arch", |n| Ok(n.spec.arch.clone())) });
    engine.register_get("classes", |m: &mut ModelV| -> RResult<i64> { with_ref(m, "classes", |n| Ok(n.spec.classes)) });
    engine.register_get("device", |m: &mut ModelV| -> RResult<String> {
        with_ref(m, "device", |n| Ok(device::device_name(n.device())))
    });
    engine.register_get("feature_dim", |m: &mut ModelV| -> RResult<i64> {
        with_ref(m, "feature_dim", |n| Ok(n.feature_dim()))
    });
    engine.register_get("size", |m: &mut ModelV| -> RResult<i64> { with_ref(m, "size", |n| Ok(n.spec.size)) });
    engine.register_get("frozen", |m: &mut ModelV| -> RResult<Array> {
        with_ref(m, "frozen", |n| Ok(str_array(&n.frozen_names())))
    });
}
