//! The Rhai layer: one engine setup shared by `satm run`, `satm -e`, the REPL and the tests.
pub mod api;
pub mod convert;
pub mod docs;
pub mod state;
pub mod types;

use rhai::module_resolvers::{FileModuleResolver, ModuleResolversCollection};
use rhai::{Dynamic, Engine, EvalAltResult, Position, Scope};
use std::path::{Path, PathBuf};

/// Where satm's own files (stdlib/, configs/, scripts/) are: $SATM_HOME, else the first ancestor of the executable
/// holding stdlib/ (a cargo build in the checkout), else the checkout this binary was built from.
pub fn satm_home() -> PathBuf {
    if let Some(h) = std::env::var_os("SATM_HOME") {
        return PathBuf::from(h);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            if dir.join("stdlib").is_dir() && dir.join("Cargo.toml").is_file() {
                return dir.to_path_buf();
            }
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped data sets: $SATM_DATA, else ../shared/data beside the satm checkout.
pub fn data_root() -> PathBuf {
    if let Some(d) = std::env::var_os("SATM_DATA") {
        return PathBuf::from(d);
    }
    let home = satm_home();
    let shared = home.join("../shared/data");
    shared.canonicalize().unwrap_or(shared)
}

/// A fully set-up engine: limits, Ctrl-C polling, the stdlib module resolver and every satm function.
pub fn new_engine() -> Engine {
    convert::install_quiet_panic_hook();
    let mut engine = Engine::new();
    engine.set_max_call_levels(64);
    engine.set_max_expr_depths(128, 64);
    engine.set_max_string_size(16 << 20);
    engine.set_max_array_size(10_000_000);
    engine.set_max_map_size(1_000_000);
    engine.on_progress(|_| if crate::core::cancel::is_cancelled() { Some(Dynamic::from("cancelled by Ctrl-C")) } else { None });
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
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || k.chars().next().unwrap().is_ascii_digit() {
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

/// The innermost position that points into the main source (errors inside imported modules or functions keep the
/// call site in the user's file).
fn error_position(err: &EvalAltResult) -> Position {
    err.position()
}

/// `file:line:col: error: message`, the source line and a caret under the column.
pub fn format_error(err: &EvalAltResult, source: &str, file: &str) -> String {
    let pos = error_position(err);
    let mut msg = err.to_string();
    // rhai appends " (line L, position P)"; we show the position ourselves.
    if let Some(i) = msg.rfind(" (line ") {
        if msg.ends_with(')') {
            msg.truncate(i);
        }
    }
    match (pos.line(), pos.position()) {
        (Some(line), col) => {
            let col = col.unwrap_or(1);
            let text = source.lines().nth(line - 1).unwrap_or("");
            let gutter = format!("{line}");
            format!(
                "{file}:{line}:{col}: error: {msg}\n{pad} |\n{gutter} | {text}\n{pad} | {caret}^",
                pad = " ".repeat(gutter.len()),
                caret = " ".repeat(col.saturating_sub(1))
            )
        }
        _ => format!("{file}: error: {msg}"),
    }
}

/// Runs a script's source with the session's parameters; on error returns the formatted message.
pub fn run_source(engine: &Engine, source: &str, file: &str, scope: &mut Scope) -> Result<Dynamic, String> {
    let mut ast = engine.compile_with_scope(scope, source).map_err(|e| format_error(&e.into(), source, file))?;
    ast.set_source(file);
    engine.eval_ast_with_scope::<Dynamic>(scope, &ast).map_err(|e| format_error(&e, source, file))
}

/// Reads and runs a script file.
pub fn run_file(engine: &Engine, path: &Path, scope: &mut Scope) -> Result<Dynamic, String> {
    let source = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read script: {e}", path.display()))?;
    run_source(engine, &source, &path.display().to_string(), scope)
}
