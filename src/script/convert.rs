//! Conversions between Rhai values and Rust, option maps that reject unknown keys, and the guard that turns every
//! Rust error or panic inside a registered function into a Rhai error naming the function.
use rhai::{Array, Dynamic, EvalAltResult, ImmutableString, Map, Position};
use std::panic::{AssertUnwindSafe, catch_unwind};

pub type RResult<T> = Result<T, Box<EvalAltResult>>;

/// A Rhai runtime error with `msg` (the engine fills in the call site's position).
pub fn script_err(msg: impl Into<String>) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(Dynamic::from(msg.into()), Position::NONE).into()
}

/// Whether a Rhai error is a Ctrl-C cancellation (from on_progress or from a long operation).
pub fn is_cancel(e: &EvalAltResult) -> bool {
    match e {
        EvalAltResult::ErrorTerminated(..) => true,
        EvalAltResult::ErrorRuntime(v, _) => v.to_string().contains("cancelled by Ctrl-C"),
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) | EvalAltResult::ErrorInModule(_, inner, _) => {
            is_cancel(inner)
        }
        _ => false,
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Runs the body of a registered function: an `anyhow` error becomes "`name`: message (with causes)", and a panic
/// from libtorch (a shape mismatch in a non-fallible op) becomes an error instead of killing the REPL.
pub fn guard<T>(name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> RResult<T> {
    GUARDED.with(|g| g.set(g.get() + 1));
    let caught = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get() - 1));
    match caught {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            if crate::core::cancel::is_cancel_error(&e) {
                Err(script_err("cancelled by Ctrl-C"))
            } else {
                Err(script_err(prefixed(name, first_torch_line(&format!("{e:#}")))))
            }
        }
        Err(p) => Err(script_err(prefixed(name, first_torch_line(&torch_panic_message(&panic_text(p)))))),
    }
}

/// tch's infallible ops (and a few fallible ones, whose temporary `Scalar` checks the error flag on drop) panic with
/// "called `Result::unwrap()` on an `Err` value: Torch(\"msg\nframe #0 ...\")": keep libtorch's message.
fn torch_panic_message(p: &str) -> String {
    const PREFIX: &str = "called `Result::unwrap()` on an `Err` value: Torch(\"";
    match p.strip_prefix(PREFIX) {
        Some(rest) => rest.strip_suffix("\")").unwrap_or(rest).replace("\\n", "\n").replace("\\\"", "\""),
        None => p.to_string(),
    }
}

/// libtorch errors carry a C++ backtrace; keep the message, drop the frames.
fn first_torch_line(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines() {
        let t = line.trim_start();
        if t.starts_with("Exception raised from") || t.starts_with("frame #") {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(line.trim());
    }
    out
}

thread_local! {
    /// How many `guard`s this thread is inside: a panic there becomes a script error, reported by the guard.
    static GUARDED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Quietens the default panic message for panics that `guard` catches (it reports them itself); every other panic
/// (a bug outside a guard, a failing assertion in a test that uses the engine) prints as usual. SATM_PANIC_BACKTRACE
/// prints the caught ones too.
pub fn install_quiet_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(|g| g.get()) == 0 || std::env::var_os("SATM_PANIC_BACKTRACE").is_some() {
                default(info);
            }
        }));
    });
}

/// An option map with a fixed set of valid keys. Unknown keys are rejected up front with the list of valid ones;
/// getters convert with errors that name the function and the key.
pub struct Opts {
    func: String,
    map: Map,
}

impl Opts {
    pub fn new(func: &str, map: Map, valid: &[&str]) -> RResult<Self> {
        let mut unknown: Vec<String> =
            map.keys().filter(|k| !valid.contains(&k.as_str())).map(|k| k.to_string()).collect();
        if !unknown.is_empty() {
            unknown.sort();
            let mut v: Vec<&str> = valid.to_vec();
            v.sort();
            return Err(script_err(format!(
                "{func}: unknown option(s) {}; valid options: {}",
                unknown.join(", "),
                v.join(", ")
            )));
        }
        Ok(Opts { func: func.to_string(), map })
    }

    pub fn empty(func: &str) -> Self {
        Opts { func: func.to_string(), map: Map::new() }
    }

    pub fn func(&self) -> &str {
        &self.func
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_unit())
    }

    pub fn raw(&self, key: &str) -> Option<&Dynamic> {
        self.map.get(key).filter(|v| !v.is_unit())
    }

    fn bad(&self, key: &str, want: &str, v: &Dynamic) -> Box<EvalAltResult> {
        script_err(format!("{}: option '{key}' must be {want}, got {}", self.func, type_and_value(v)))
    }

    pub fn f64_or(&self, key: &str, default: f64) -> RResult<f64> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => to_f64(v).ok_or_else(|| self.bad(key, "a number", v)),
        }
    }

    pub fn opt_f64(&self, key: &str) -> RResult<Option<f64>> {
        self.raw(key).map(|v| to_f64(v).ok_or_else(|| self.bad(key, "a number", v))).transpose()
    }

    pub fn i64_or(&self, key: &str, default: i64) -> RResult<i64> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v.as_int().map_err(|_| self.bad(key, "an integer", v)),
        }
    }

    pub fn opt_i64(&self, key: &str) -> RResult<Option<i64>> {
        self.raw(key).map(|v| v.as_int().map_err(|_| self.bad(key, "an integer", v))).transpose()
    }

    /// A non-negative integer (sizes, counts, steps).
    pub fn usize_or(&self, key: &str, default: usize) -> RResult<usize> {
        let v = self.i64_or(key, default as i64)?;
        if v < 0 {
            return Err(script_err(format!("{}: option '{key}' must be >= 0, got {v}", self.func)));
        }
        Ok(v as usize)
    }

    pub fn bool_or(&self, key: &str, default: bool) -> RResult<bool> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v.as_bool().map_err(|_| self.bad(key, "true or false", v)),
        }
    }

    pub fn str_or(&self, key: &str, default: &str) -> RResult<String> {
        match self.raw(key) {
            None => Ok(default.to_string()),
            Some(v) => {
                v.clone().into_immutable_string().map(|s| s.to_string()).map_err(|_| self.bad(key, "a string", v))
            }
        }
    }

    pub fn opt_str(&self, key: &str) -> RResult<Option<String>> {
        self.raw(key)
            .map(|v| v.clone().into_immutable_string().map(|s| s.to_string()).map_err(|_| self.bad(key, "a string", v)))
            .transpose()
    }

    /// A string that must be one of `choices`.
    pub fn choice_or(&self, key: &str, default: &str, choices: &[&str]) -> RResult<String> {
        let s = self.str_or(key, default)?;
        if choices.contains(&s.as_str()) {
            Ok(s)
        } else {
            Err(script_err(format!("{}: option '{key}' is '{s}'; expected one of: {}", self.func, choices.join(", "))))
        }
    }

    pub fn array_or_empty(&self, key: &str) -> RResult<Array> {
        match self.raw(key) {
            None => Ok(Array::new()),
            Some(v) => v.clone().into_array().map_err(|_| self.bad(key, "an array", v)),
        }
    }

    /// An array of items of one custom type `T` (models, datasets, ...).
    pub fn items<T: Clone + 'static>(&self, key: &str, type_name: &str) -> RResult<Vec<T>> {
        self.array_or_empty(key)?
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.clone().try_cast::<T>().ok_or_else(|| {
                    script_err(format!("{}: {key}[{i}] must be a {type_name}, got {}", self.func, type_label(&v)))
                })
            })
            .collect()
    }

    pub fn f64_array(&self, key: &str) -> RResult<Option<Vec<f64>>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => {
                let arr = v.clone().into_array().map_err(|_| self.bad(key, "an array of numbers", v))?;
                arr.iter()
                    .map(|x| to_f64(x).ok_or_else(|| self.bad(key, "an array of numbers", v)))
                    .collect::<RResult<Vec<_>>>()
                    .map(Some)
            }
        }
    }

    /// A custom-typed value (a model, a dataset), if given.
    pub fn opt_item<T: Clone + 'static>(&self, key: &str, type_name: &str) -> RResult<Option<T>> {
        self.raw(key)
            .map(|v| v.clone().try_cast::<T>().ok_or_else(|| self.bad(key, &format!("a {type_name}"), v)))
            .transpose()
    }

    pub fn map(&self) -> &Map {
        &self.map
    }
}

/// The script-facing name of a Rhai type name: `Tensor` rather than `satm::script::types::TensorV`.
pub fn friendly_type(name: &str) -> String {
    match name.rsplit("::").next().unwrap_or(name) {
        "TensorV" => "Tensor",
        "ModelV" => "Model",
        "DatasetV" => "Dataset",
        "BatchesV" => "Batches",
        "BatchV" => "Batch",
        "TrainResultV" => "TrainResult",
        "ImmutableString" => "string",
        other => other,
    }
    .to_string()
}

/// The script-facing type of a value (see [`friendly_type`]).
pub fn type_label(v: &Dynamic) -> String {
    friendly_type(v.type_name())
}

/// "i64 (3)" for plain values; just the type for tensors, models and other objects, whose text is long.
fn type_and_value(v: &Dynamic) -> String {
    if v.is_int() || v.is_float() || v.is_bool() || v.is_string() || v.is_char() {
        format!("{} ({v})", type_label(v))
    } else {
        type_label(v)
    }
}

/// An option-parsing error raised inside a `guard` body, as an `anyhow` error with the bare message (the guard adds
/// the function name once; Rhai's Display would add "Runtime error: " and the position).
#[allow(clippy::boxed_local)] // the Box is what `map_err(to_anyhow)` receives from every RResult
pub fn to_anyhow(e: Box<EvalAltResult>) -> anyhow::Error {
    match *e {
        EvalAltResult::ErrorRuntime(v, _) => anyhow::anyhow!("{v}"),
        other => anyhow::anyhow!("{other}"),
    }
}

/// "`name`: msg", unless the message already starts with it (core errors that name the attack, options parsed
/// inside a guard), which would read "fgsm: fgsm: ...".
pub fn prefixed(name: &str, msg: String) -> String {
    if msg.starts_with(name) && msg[name.len()..].starts_with(": ") { msg } else { format!("{name}: {msg}") }
}

/// Numbers from scripts: ints and floats both accepted where a float is wanted.
pub fn to_f64(v: &Dynamic) -> Option<f64> {
    if let Ok(f) = v.as_float() { Some(f) } else { v.as_int().ok().map(|i| i as f64) }
}

pub fn str_array(v: &[String]) -> Array {
    v.iter().map(|s| Dynamic::from(ImmutableString::from(s.as_str()))).collect()
}

pub fn f64_array(v: &[f64]) -> Array {
    v.iter().map(|x| Dynamic::from_float(*x)).collect()
}

pub fn i64_array(v: &[i64]) -> Array {
    v.iter().map(|x| Dynamic::from_int(*x)).collect()
}

/// Converts a serde_json value (results, metrics) into a Rhai value: objects to maps, arrays to arrays.
pub fn json_to_dynamic(v: &serde_json::Value) -> Dynamic {
    use serde_json::Value;
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Dynamic::from(s.clone()),
        Value::Array(a) => Dynamic::from_array(a.iter().map(json_to_dynamic).collect()),
        Value::Object(o) => {
            let mut m = Map::new();
            for (k, v) in o {
                m.insert(k.as_str().into(), json_to_dynamic(v));
            }
            Dynamic::from_map(m)
        }
    }
}

/// A table's JSON as `record` stores it: `kind: "table"` beside `{title, columns, rows, notes}`, so that `satm grid
/// collect` knows it is a table without guessing from its shape.
pub fn table_json(t: &crate::core::report::Table) -> serde_json::Value {
    let mut v = t.to_json_value();
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), "table".into());
    }
    v
}

/// Converts a Rhai value (numbers, strings, arrays, maps) into JSON, for recorded results. Records become JSON
/// objects tagged with their `kind`: tables ("table"), masking reports ("masking"), robustness results ("robust"),
/// confusion matrices ("confusion"); evaluate results are maps that carry `kind: "eval"` themselves. Other custom
/// types become their `to_string` text.
pub fn dynamic_to_json(v: &Dynamic) -> serde_json::Value {
    use serde_json::Value;
    if v.is_unit() {
        Value::Null
    } else if let Ok(b) = v.as_bool() {
        Value::Bool(b)
    } else if let Ok(i) = v.as_int() {
        Value::from(i)
    } else if let Ok(f) = v.as_float() {
        serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)
    } else if v.is_string() {
        Value::String(v.to_string())
    } else if v.is_array() {
        Value::Array(v.clone().into_array().unwrap_or_default().iter().map(dynamic_to_json).collect())
    } else if v.is_map() {
        let m = v.clone().cast::<Map>();
        Value::Object(m.iter().map(|(k, v)| (k.to_string(), dynamic_to_json(v))).collect())
    } else if let Some(t) = v.read_lock::<crate::core::report::Table>() {
        table_json(&t)
    } else if let Some(r) = v.read_lock::<crate::core::eval::MaskingReport>() {
        crate::script::api::eval::masking_json(&r)
    } else if let Some(r) = v.read_lock::<crate::script::api::eval::RobustV>() {
        crate::script::api::eval::robust_json(&r)
    } else if let Some(c) = v.read_lock::<crate::core::eval::Confusion>() {
        crate::script::api::stats::confusion_json(&c)
    } else {
        Value::String(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_panics_keep_libtorch_message_only() {
        let p = "called `Result::unwrap()` on an `Err` value: Torch(\"can't allocate \\\"x\\\"\\nframe #0: c10::f\\nframe #1: g\")";
        assert_eq!(first_torch_line(&torch_panic_message(p)), "can't allocate \"x\"");
        assert_eq!(torch_panic_message("index out of bounds"), "index out of bounds");
    }

    #[test]
    fn prefix_is_added_once() {
        assert_eq!(prefixed("fgsm", "fgsm: eps must be >= 0".into()), "fgsm: eps must be >= 0");
        assert_eq!(prefixed("fgsm", "fgsmx: y".into()), "fgsm: fgsmx: y");
        assert_eq!(prefixed("attack", "fgsm: eps".into()), "attack: fgsm: eps");
    }

    #[test]
    fn custom_types_get_script_names() {
        assert_eq!(friendly_type("satm::script::types::TensorV"), "Tensor");
        assert_eq!(friendly_type("satm::core::report::table::Table"), "Table");
        assert_eq!(friendly_type("i64"), "i64");
    }
}
