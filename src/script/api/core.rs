//! Session-level functions: seeding, devices, threads, precision, parameters, the run directory, recorded results.
use crate::core::{device, fsutil};
use crate::script::convert::{RResult, dynamic_to_json, guard, json_to_dynamic, script_err};
use crate::script::docs::doc;
use crate::script::state;
use rhai::{Dynamic, Engine, Map};

/// Reads the run directory's results.json (a JSON object), or an empty object.
pub fn read_results() -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let path = state::out_dir()?.join("results.json");
    if !path.exists() {
        return Ok(serde_json::Map::new());
    }
    let text = std::fs::read_to_string(&path)?;
    match serde_json::from_str::<serde_json::Value>(&text)? {
        serde_json::Value::Object(m) => Ok(m),
        _ => anyhow::bail!("{} is not a JSON object", path.display()),
    }
}

/// Records `value` under `name` in the run directory's results.json (rewritten atomically). `satm grid collect`
/// merges these files across grid points.
pub fn record_json(name: &str, value: serde_json::Value) -> anyhow::Result<()> {
    anyhow::ensure!(!name.trim().is_empty(), "the name to record under is empty");
    let mut m = read_results()?;
    m.insert(name.to_string(), value);
    let path = state::out_dir()?.join("results.json");
    fsutil::atomic_write(&path, serde_json::to_string_pretty(&serde_json::Value::Object(m))?.as_bytes())
}

pub fn register(engine: &mut Engine) {
    doc("seed", &["seed: int"], "()", "Seeds this session's random stream (initial weights, random starts of attacks, rand/randn/randint, dropout; background runs and seeded evaluations draw from streams of their own) and libtorch's CPU and CUDA generators; data shuffles and folds take their seed from their options (default: this seed).")
        .register_into_engine(engine, |seed: i64| -> RResult<()> {
            if seed < 0 {
                return Err(script_err(format!("seed: must be >= 0, got {seed}")));
            }
            device::seed_everything(seed as u64).map_err(|e| script_err(format!("seed: {e:#}")))?;
            state::update(|s| s.seed = seed as u64);
            Ok(())
        });
    doc("seed", &[], "int", "The session seed last set with seed(n) (0 by default).")
        .register_into_engine(engine, || state::with(|s| s.seed as i64));
    doc("device", &["name: &str"], "String", "Sets the default device for new models and tensors: \"cpu\", \"cuda\", \"cuda:N\" or \"auto\". Returns the device chosen.")
        .register_into_engine(engine, |name: &str| -> RResult<String> {
            guard("device", || {
                let d = device::parse_device(name)?;
                state::update(|s| s.device = d);
                Ok(device::device_name(d))
            })
        });
    doc("device", &[], "String", "The session's default device.")
        .register_into_engine(engine, || device::device_name(state::device()));
    doc("cuda_available", &[], "bool", "Whether libtorch sees a CUDA device.")
        .register_into_engine(engine, tch::Cuda::is_available);
    doc("threads", &["n: int"], "()", "Sets the number of intra-op CPU threads libtorch uses.").register_into_engine(
        engine,
        |n: i64| -> RResult<()> {
            guard("threads", || {
                anyhow::ensure!(n >= 1, "threads must be at least 1");
                device::set_threads(usize::try_from(n)?)
            })
        },
    );
    doc("threads", &[], "int", "The number of intra-op CPU threads.")
        .register_into_engine(engine, || device::threads() as i64);
    doc("precision", &["p: &str"], "String", "Sets the precision of network passes: \"fp32\", \"bf16\" or \"auto\" (bf16 where the hardware is fast at it). Returns what auto resolved to and why.")
        .register_into_engine(engine, |p: &str| -> RResult<String> {
            guard("precision", || {
                let p = device::Precision::parse(p)?;
                state::update(|s| s.precision = p);
                let (bf16, why) = p.resolve(state::device());
                Ok(format!("{} ({why})", if bf16 { "bf16" } else { "fp32" }))
            })
        });
    doc("precision", &[], "String", "The session's precision setting (fp32, bf16 or auto).")
        .register_into_engine(engine, || state::with(|s| s.precision.name().to_string()));
    doc("param", &["name: &str", "default: ?"], "?", "The value given with `--set name=value`, or `default` when none was given. The value keeps the default's type when it can (an int default with --set n=3 gives 3).")
        .register_into_engine(engine, |name: &str, default: Dynamic| -> RResult<Dynamic> {
            match state::param(name) {
                None => Ok(default),
                Some(v) => {
                    if default.is_float()
                        && let Ok(i) = v.as_int()
                    {
                        return Ok(Dynamic::from_float(i as f64));
                    }
                    if default.is_string() && !v.is_string() {
                        return Ok(Dynamic::from(v.to_string()));
                    }
                    Ok(v)
                }
            }
        });
    doc("params", &[], "Map", "All `--set` parameters of this run.")
        .register_into_engine(engine, || state::with(|s| s.params.clone()));
    doc(
        "out_dir",
        &[],
        "String",
        "This run's output directory (created on first use): --out DIR, else runs/<script>/<time>.",
    )
    .register_into_engine(engine, || -> RResult<String> {
        guard("out_dir", || Ok(state::out_dir()?.display().to_string()))
    });
    doc("out_path", &["name: &str"], "String", "A path inside this run's output directory.").register_into_engine(
        engine,
        |name: &str| -> RResult<String> {
            guard("out_path", || Ok(state::out_dir()?.join(name).display().to_string()))
        },
    );
    doc(
        "data_root",
        &[],
        "String",
        "Where the shipped data sets are: $SATM_DATA, else ../shared/data beside the satm checkout.",
    )
    .register_into_engine(engine, || crate::script::data_root().display().to_string());
    doc("record", &["name: &str", "value: ?"], "()", "Stores a value (number, string, array, map, table) under `name` in the run directory's results.json; `satm grid collect` merges these across points.")
        .register_into_engine(engine, |name: &str, value: Dynamic| -> RResult<()> {
            guard("record", || record_json(name, dynamic_to_json(&value)))
        });
    doc("results", &[], "Map", "The values recorded so far in this run's results.json.").register_into_engine(
        engine,
        || -> RResult<Map> {
            guard("results", || {
                let m = read_results()?;
                Ok(json_to_dynamic(&serde_json::Value::Object(m)).cast::<Map>())
            })
        },
    );
    doc(
        "info",
        &[],
        "Map",
        "Versions, CPU features, CUDA devices, threads, default device and precision (what `satm info` prints).",
    )
    .register_into_engine(engine, || -> RResult<Map> {
        guard("info", || Ok(json_to_dynamic(&crate::script::info_json()).cast::<Map>()))
    });
    doc("cancelled", &[], "bool", "Whether Ctrl-C was pressed (long script loops can poll it and stop cleanly).")
        .register_into_engine(engine, crate::core::cancel::is_cancelled);
    doc("timestamp", &[], "String", "The current time as YYYYmmdd-HHMMSS (UTC).")
        .register_into_engine(engine, state::timestamp);
}
