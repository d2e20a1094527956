//! The Rhai layer: one engine setup shared by `satm run`, `satm -e`, the REPL and the tests.
pub mod api;
pub mod cell;
pub mod convert;
pub mod docs;
pub mod state;
pub mod types;

use crate::core::{amp, device, paths};
use rhai::module_resolvers::{FileModuleResolver, ModuleResolversCollection};
use rhai::{Dynamic, Engine, EvalAltResult, Position, Scope};
use std::path::{Path, PathBuf};

pub use crate::core::paths::{data_root, satm_home};

/// A fully set-up engine: limits, Ctrl-C polling, the stdlib module resolver and every satm function.
pub fn new_engine() -> Engine {
    convert::install_quiet_panic_hook();
    let mut engine = Engine::new();
    engine.set_max_call_levels(64);
    engine.set_max_expr_depths(128, 64);
    engine.set_max_string_size(16 << 20);
    engine.set_max_array_size(10_000_000);
    engine.set_max_map_size(1_000_000);
    engine.on_progress(|_| {
        if crate::core::cancel::is_cancelled() { Some(Dynamic::from("cancelled by Ctrl-C")) } else { None }
    });
    engine.on_print(|s| println!("{s}"));
    engine.on_debug(|s, src, pos| match src {
        Some(src) => eprintln!("[{src}:{pos}] {s}"),
        None => eprintln!("[{pos}] {s}"),
    });
    let mut resolvers = ModuleResolversCollection::new();
    // `import "stdlib/experiment"` works from any directory: first relative to the current directory, then to satm's home.
    resolvers.push(FileModuleResolver::new());
    resolvers.push(FileModuleResolver::new_with_path(satm_home()));
    engine.set_module_resolver(resolvers);
    api::register_all(&mut engine);
    engine
}

/// Parses `key=value` from `--set`: int, then float, then bool, else string. The key must be an identifier.
pub fn parse_set(s: &str) -> Result<(String, Dynamic), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("--set '{s}': expected key=value"))?;
    let k = k.trim();
    if k.is_empty()
        || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || k.chars().next().unwrap().is_ascii_digit()
    {
        return Err(format!("--set '{s}': '{k}' is not a valid name (letters, digits, _; not starting with a digit)"));
    }
    let v = v.trim();
    let val = if let Ok(i) = v.parse::<i64>() {
        Dynamic::from_int(i)
    } else if let Ok(f) = v.parse::<f64>() {
        Dynamic::from_float(f)
    } else if v == "true" || v == "false" {
        Dynamic::from_bool(v == "true")
    } else {
        Dynamic::from(v.trim_matches('"').to_string())
    };
    Ok((k.to_string(), val))
}

/// A scope with the `--set` parameters as constants.
pub fn scope_with_params() -> Scope<'static> {
    let mut scope = Scope::new();
    state::with(|s| {
        for (k, v) in s.params.iter() {
            scope.push_constant(k.as_str(), v.clone());
        }
    });
    scope
}

/// One place an error passed through: the outermost is the statement in the user's file, then each function call or
/// module load down to where the error was raised.
struct Frame {
    source: String,
    pos: Position,
    note: String,
}

/// The message of the innermost error, without rhai's " (line L, position P)" suffix and the "Runtime error: " prefix
/// (the position is shown with a caret instead).
fn leaf_message(err: &EvalAltResult) -> String {
    let msg = match err {
        EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
        EvalAltResult::ErrorTerminated(..) => "cancelled by Ctrl-C".to_string(),
        _ => {
            let mut m = err.to_string();
            if let Some(i) = m.rfind(" (line ")
                && m.ends_with(')')
            {
                m.truncate(i);
            }
            m
        }
    };
    // A call with the wrong argument types or count: say what the function does take.
    let msg = match err {
        EvalAltResult::ErrorFunctionNotFound(sig, _) => {
            let name = sig.split(" (").next().unwrap_or(sig);
            let docs = docs::lookup(name);
            if docs.is_empty() {
                msg
            } else {
                let sigs: Vec<String> = docs.iter().map(|d| d.signature.clone()).collect();
                format!("{msg}; {name} takes: {}", sigs.join(" | "))
            }
        }
        _ => msg,
    };
    // tch prefixes every libtorch error with this; it says nothing to a script author.
    msg.replace("Internal torch error: ", "")
}

/// Walks nested function-call and module errors from the outside in, collecting one frame per level.
fn unwind<'a>(err: &'a EvalAltResult, source: &str, frames: &mut Vec<Frame>) -> &'a EvalAltResult {
    match err {
        EvalAltResult::ErrorInFunctionCall(name, src, inner, pos) => {
            let note =
                if name.starts_with("anon$") { "in a closure".to_string() } else { format!("in call to `{name}`") };
            frames.push(Frame { source: source.to_string(), pos: *pos, note });
            let next = if src.is_empty() { source } else { src.as_str() };
            unwind(inner, next, frames)
        }
        EvalAltResult::ErrorInModule(path, inner, pos) => {
            frames.push(Frame {
                source: source.to_string(),
                pos: *pos,
                note: format!("while loading module `{path}`"),
            });
            unwind(inner, path, frames)
        }
        leaf => {
            frames.push(Frame { source: source.to_string(), pos: leaf.position(), note: String::new() });
            leaf
        }
    }
}

/// The text of a script named in an error: the main source, else the file itself, else `<name>.rhai` in the current
/// directory or in satm's home (how `import "stdlib/x"` names its module).
pub fn read_named_source(name: &str) -> Option<String> {
    let candidates = [
        PathBuf::from(name),
        PathBuf::from(format!("{name}.rhai")),
        satm_home().join(name),
        satm_home().join(format!("{name}.rhai")),
    ];
    candidates.iter().filter(|p| p.is_file()).find_map(|p| std::fs::read_to_string(p).ok())
}

/// How an error names a source: modules are imported without their extension (`stdlib/experiment`), shown with it.
fn display_source(name: &str) -> String {
    if name.starts_with('<') || Path::new(name).extension().is_some() {
        name.to_string()
    } else {
        format!("{name}.rhai")
    }
}

/// `file:line:col: error: message`, the source line and a caret under the column. Errors raised inside a function
/// (defined in the script or in an imported module) point at the call in the user's file, then show each inner
/// location with its own source line.
pub fn format_error(err: &EvalAltResult, source: &str, file: &str) -> String {
    format_error_with(err, file, &|name: &str| {
        if name == file { Some(source.to_string()) } else { read_named_source(name) }
    })
}

/// [`format_error`] with a caller-supplied way to find the text of a named source (the REPL keeps earlier inputs).
pub fn format_error_with(err: &EvalAltResult, file: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut frames = Vec::new();
    let leaf = unwind(err, file, &mut frames);
    let msg = leaf_message(leaf);
    frames.retain(|f| !f.pos.is_none());
    let Some(first) = frames.first() else {
        return format!("{file}: error: {msg}");
    };
    let width = frames.iter().filter_map(|f| f.pos.line()).max().unwrap_or(1).to_string().len();
    let pad = " ".repeat(width);
    let loc = |f: &Frame| {
        format!("{}:{}:{}", display_source(&f.source), f.pos.line().unwrap_or(0), f.pos.position().unwrap_or(1))
    };
    let mut out = format!("{}: error: {msg}", loc(first));
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            out.push_str(&format!("\n{pad}--> {}", loc(f)));
        }
        let line = f.pos.line().unwrap_or(1);
        let col = f.pos.position().unwrap_or(1);
        match lookup(&f.source).and_then(|text| text.lines().nth(line - 1).map(str::to_string)) {
            Some(text) => {
                let caret = " ".repeat(col.saturating_sub(1));
                let note = if f.note.is_empty() { String::new() } else { format!(" {}", f.note) };
                out.push_str(&format!("\n{pad} |\n{line:>width$} | {text}\n{pad} | {caret}^{note}"));
            }
            None if !f.note.is_empty() => out.push_str(&format!("\n{pad} = {}", f.note)),
            None => {}
        }
    }
    out
}

/// Runs a script's source with the session's parameters; on error returns the formatted message.
pub fn run_source(engine: &Engine, source: &str, file: &str, scope: &mut Scope) -> Result<Dynamic, String> {
    let mut ast = engine.compile_with_scope(scope, source).map_err(|e| format_error(&e.into(), source, file))?;
    ast.set_source(file);
    engine.eval_ast_with_scope::<Dynamic>(scope, &ast).map_err(|e| format_error(&e, source, file))
}

/// Reads and runs a script file.
pub fn run_file(engine: &Engine, path: &Path, scope: &mut Scope) -> Result<Dynamic, String> {
    let source =
        std::fs::read_to_string(path).map_err(|e| format!("{}: error: cannot read script: {e}", path.display()))?;
    run_source(engine, &source, &path.display().to_string(), scope)
}

/// Everything `satm info` reports, as JSON (the script function `info()` returns the same).
pub fn info_json() -> serde_json::Value {
    let cpu = device::cpu_info();
    let cuda = device::cuda_devices();
    let dev = state::device();
    let prec = state::with(|s| s.precision);
    let (bf16, why) = device::Precision::Auto.resolve(dev);
    serde_json::json!({
        "satm": crate::VERSION,
        "libtorch": amp::torch_version(),
        "rhai": env!("SATM_RHAI_VERSION"),
        "cpu": cpu,
        "cuda_available": tch::Cuda::is_available(),
        "cuda_devices": cuda,
        "cudnn": amp::cudnn_version(),
        "threads": device::threads(),
        "default_device": device::device_name(dev),
        "precision": prec.name(),
        "auto_precision": if bf16 { "bf16" } else { "fp32" },
        "auto_precision_reason": why,
        "satm_home": satm_home().display().to_string(),
        "data_root": paths::data_root_with_source().0.display().to_string(),
        "data_source": format!("{:?}", paths::data_root_with_source().1).to_lowercase(),
    })
}
