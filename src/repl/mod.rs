//! The `satm>` REPL: a persistent scope, functions and imported modules that outlive the input defining them,
//! multi-line input while a statement is incomplete, `:commands`, errors with a caret that leave the session intact,
//! Ctrl-C that cancels the running command, and history in the user's data directory.
pub mod commands;
pub mod helper;
pub mod scan;

use crate::core::{cancel, device};
use crate::script::{self, state};
use helper::{Known, SatmHelper, ScriptFn};
use rhai::{AST, Dynamic, Engine, EvalAltResult, Module, ParseErrorType, Position, Scope, Shared};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, Editor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

/// How the REPL and `satm -e` print a value: custom types through their registered `to_string`, arrays and maps
/// element by element (so an array of tensors shows each tensor), multi-line strings (rendered reports) as text.
pub fn display_value(engine: &Engine, v: &Dynamic) -> String {
    if v.is_string() {
        let s = v.to_string();
        return if s.contains('\n') { s } else { format!("{s:?}") };
    }
    Render { engine, to_string: engine.compile_expression("to_string(__satm_value)").ok() }.show(v, 0)
}

/// Longest array or map shown in full; longer ones show this many elements and a count.
const SHOW_ITEMS: usize = 64;
/// The same inside another value (e.g. an evaluation record's per-example arrays), so a record fits on the screen.
const SHOW_NESTED: usize = 8;

struct Render<'e> {
    engine: &'e Engine,
    to_string: Option<AST>,
}

impl Render<'_> {
    fn show(&self, v: &Dynamic, depth: usize) -> String {
        if depth > 8 {
            return "…".into();
        }
        if v.is_string() {
            return format!("{:?}", v.to_string());
        }
        if v.is_unit() || v.is_int() || v.is_float() || v.is_bool() || v.is_char() || v.is_fnptr() {
            return v.to_string();
        }
        if v.is_array() {
            let a = v.read_lock::<rhai::Array>().map(|a| a.clone()).unwrap_or_default();
            let limit = if depth == 0 { SHOW_ITEMS } else { SHOW_NESTED };
            let mut items: Vec<String> = a.iter().take(limit).map(|x| self.show(x, depth + 1)).collect();
            if a.len() > limit {
                items.push(format!("… {} more", a.len() - limit));
            }
            return join_block("[", "]", items);
        }
        if v.is_map() {
            let m = v.read_lock::<rhai::Map>().map(|m| m.clone()).unwrap_or_default();
            let mut items: Vec<String> = m
                .iter()
                .take(SHOW_ITEMS)
                .map(|(k, x)| {
                    let key = if is_ident(k) { k.to_string() } else { format!("{:?}", k.as_str()) };
                    let val = self.show(x, depth + 1);
                    if val.contains('\n') { format!("{key}:\n{val}") } else { format!("{key}: {val}") }
                })
                .collect();
            if m.len() > SHOW_ITEMS {
                items.push(format!("… {} more", m.len() - SHOW_ITEMS));
            }
            return join_block("#{", "}", items);
        }
        // A custom type (Tensor, Table, Model, ...): its registered to_string, else its type name.
        if let Some(ast) = &self.to_string {
            let mut scope = Scope::new();
            scope.push_dynamic("__satm_value", v.clone());
            if let Ok(s) = self.engine.eval_ast_with_scope::<String>(&mut scope, ast) {
                return s;
            }
        }
        format!("<{}>", self.engine.map_type_name(v.type_name()))
    }
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_') && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// `[a, b]` on one line, or one element per line when any is multi-line (tables) or the line would be long.
fn join_block(open: &str, close: &str, items: Vec<String>) -> String {
    let one_line = items.join(", ");
    if items.iter().any(|s| s.contains('\n')) {
        format!("{open}\n{}\n{close}", items.join(",\n"))
    } else if one_line.len() > 100 {
        format!("{open}\n  {}\n{close}", items.join(",\n  "))
    } else {
        format!("{open}{one_line}{close}")
    }
}

/// Whether `src` is a statement that continues on the next line: it fails to parse only because it ended early
/// (a missing `}`, `)`, `]` or expression at the very end). A missing token in the middle is a real error.
pub fn is_incomplete(engine: &Engine, src: &str) -> bool {
    if src.trim().is_empty() {
        return false;
    }
    match engine.compile(src) {
        Ok(_) => false,
        Err(e) => {
            matches!(e.err_type(), ParseErrorType::MissingToken(..) | ParseErrorType::UnexpectedEOF)
                && past_last_char(src, e.position())
        }
    }
}

/// Whether `pos` lies after the last non-blank character of `src`.
fn past_last_char(src: &str, pos: Position) -> bool {
    let Some(line) = pos.line() else { return true };
    let col = pos.position().unwrap_or(usize::MAX);
    let body = src.trim_end();
    let last_line = body.split('\n').count();
    let last_col = body.split('\n').next_back().map_or(0, |l| l.chars().count());
    (line, col) > (last_line, last_col)
}

/// What the REPL does after an input.
#[derive(Debug, PartialEq)]
pub enum Flow {
    Continue,
    Quit,
}

/// One REPL session: engine, scope, the functions and modules defined so far. Usable without a terminal (tests).
pub struct Session {
    pub engine: Engine,
    pub scope: Scope<'static>,
    /// Functions defined by earlier inputs (statements dropped), merged into every later input.
    fns: AST,
    /// The text of inputs that defined functions, by source name, so an error inside them shows its own line.
    sources: HashMap<String, String>,
    /// Which input defined each session function (rhai reports the calling input as their source).
    fn_sources: HashMap<String, String>,
    inputs: usize,
    /// Modules imported at top level with an alias: kept as static modules so later inputs can call `alias::f`.
    modules: Vec<(String, String, Shared<Module>)>,
    /// Session settings at start (`--set`, `--device`, ...), restored by `:reset`.
    initial: state::SessionState,
    initial_threads: usize,
    known: Rc<RefCell<Known>>,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    pub fn new() -> Self {
        let mut s = Session {
            engine: script::new_engine(),
            scope: script::scope_with_params(),
            fns: AST::empty(),
            sources: HashMap::new(),
            fn_sources: HashMap::new(),
            inputs: 0,
            modules: Vec::new(),
            initial: state::with(|s| s.clone()),
            initial_threads: device::threads(),
            known: Rc::new(RefCell::new(Known::default())),
        };
        s.refresh_known();
        s
    }

    /// What completion and hints read; updated after every input.
    pub fn known(&self) -> Rc<RefCell<Known>> {
        self.known.clone()
    }

    fn lookup_source(&self, name: &str) -> Option<String> {
        self.sources.get(name).cloned().or_else(|| script::read_named_source(name))
    }

    /// Runs `code` in the session. `source` names it in errors (`<repl:3>`, or a file for `:load`). On error the
    /// scope keeps every variable set before the failing statement.
    pub fn eval(&mut self, code: &str, source: &str) -> Result<Dynamic, String> {
        let with_code =
            |this: &Self, name: &str| if name == source { Some(code.to_string()) } else { this.lookup_source(name) };
        let mut ast = match self.engine.compile_with_scope(&self.scope, code) {
            Ok(a) => a,
            Err(e) => return Err(script::format_error_with(&e.into(), source, &|n| with_code(self, n))),
        };
        ast.set_source(source);
        if ast.iter_functions().next().is_some() {
            self.sources.insert(source.to_string(), code.to_string());
            for f in ast.iter_functions() {
                self.fn_sources.insert(f.name.to_string(), source.to_string());
            }
            self.fns = self.fns.merge(&ast.clone_functions_only());
        }
        let mut full = self.fns.merge(&ast);
        full.set_source(source);
        cancel::reset();
        let result = self.engine.eval_ast_with_scope::<Dynamic>(&mut self.scope, &full);
        self.keep_imports(code);
        self.compact_scope();
        self.refresh_known();
        result.map_err(|e| {
            if script::convert::is_cancel(&e) {
                "cancelled (Ctrl-C); variables keep the values they had when it stopped".to_string()
            } else {
                script::format_error_with(&self.relabel(*e, source), source, &|n| with_code(self, n))
            }
        })
    }

    /// Points each error raised inside a session function at the input that defined it: rhai names the source of
    /// the evaluation instead, since every input runs merged with the functions of earlier ones.
    fn relabel(&self, err: EvalAltResult, current: &str) -> EvalAltResult {
        match err {
            EvalAltResult::ErrorInFunctionCall(name, src, inner, pos) => {
                let src = match self.fn_sources.get(&name) {
                    Some(defined_in)
                        if src.is_empty()
                            || src == current
                            || src.starts_with("<repl:")
                            || self.sources.contains_key(&src) =>
                    {
                        defined_in.clone()
                    }
                    _ => src,
                };
                EvalAltResult::ErrorInFunctionCall(name, src, Box::new(self.relabel(*inner, current)), pos)
            }
            other => other,
        }
    }

    /// Registers the modules of `import "path" as alias` statements as static modules: rhai forgets imports when an
    /// evaluation ends, and a REPL user expects `alias::f` to keep working on the next line.
    fn keep_imports(&mut self, code: &str) {
        for (path, alias) in scan::top_level_imports(code) {
            // Already loaded by the evaluation, so this hits the resolver's cache; a failed import was reported there.
            if let Ok(m) = self.engine.module_resolver().resolve(&self.engine, None, &path, Position::NONE) {
                self.engine.register_static_module(alias.as_str(), m.clone());
                self.modules.retain(|x| x.0 != alias);
                self.modules.push((alias, path, m));
            }
        }
    }

    /// Drops shadowed variables (`let x` typed twice keeps only the newest), so an old tensor's memory is freed.
    fn compact_scope(&mut self) {
        let names: Vec<&str> = self.scope.iter_raw().map(|(n, _, _)| n).collect();
        let mut seen = std::collections::HashSet::new();
        if names.iter().all(|n| seen.insert(*n)) {
            return;
        }
        // iter_raw runs newest first and keeps shared (closure-captured) values shared.
        let mut entries: Vec<(String, bool, Dynamic)> =
            self.scope.iter_raw().map(|(n, c, v)| (n.to_string(), c, v.clone())).collect();
        entries.reverse();
        let mut keep = vec![true; entries.len()];
        let mut later = std::collections::HashSet::new();
        for (i, e) in entries.iter().enumerate().rev() {
            keep[i] = later.insert(e.0.clone());
        }
        self.scope.clear();
        for ((name, is_const, v), k) in entries.into_iter().zip(keep) {
            if k {
                if is_const {
                    self.scope.push_constant_dynamic(name, v);
                } else {
                    self.scope.push_dynamic(name, v);
                }
            }
        }
    }

    fn refresh_known(&mut self) {
        let mut k = self.known.borrow_mut();
        k.vars = self.scope.iter_raw().map(|(n, _, _)| n.to_string()).collect();
        k.vars.reverse();
        k.script_fns = self
            .fns
            .iter_functions()
            .map(|f| ScriptFn {
                name: f.name.to_string(),
                signature: format!("{}({})", f.name, f.params.join(", ")),
                doc: f
                    .comments
                    .iter()
                    .flat_map(|c| c.lines())
                    .map(|l| l.trim().trim_start_matches("///").trim_start_matches("/**").trim_end_matches("*/").trim())
                    .collect::<Vec<_>>()
                    .join("\n")
                    .trim()
                    .to_string(),
            })
            .collect();
        k.modules = self
            .modules
            .iter()
            .map(|(alias, path, m)| {
                (alias.clone(), path.clone(), m.gen_fn_signatures_with_mapper(|s| s.into()).collect())
            })
            .collect();
    }

    /// A fresh scope, no session functions or modules, and the session settings the REPL started with.
    pub fn reset(&mut self) {
        state::update(|s| *s = self.initial.clone());
        if let Err(e) = device::seed_everything(self.initial.seed) {
            eprintln!("warning: :reset could not reseed: {e:#}");
        }
        // Best effort: the thread count is process-wide; failing to restore it is not worth an error.
        let _ = device::set_threads(self.initial_threads);
        self.engine = script::new_engine();
        self.scope = script::scope_with_params();
        self.fns = AST::empty();
        self.sources.clear();
        self.fn_sources.clear();
        self.modules.clear();
        self.refresh_known();
    }

    /// Handles one complete input (a `:command` or code) and prints what it produced.
    pub fn handle(&mut self, input: &str) -> Flow {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Flow::Continue;
        }
        if trimmed.starts_with(':') {
            return commands::run(self, trimmed);
        }
        self.inputs += 1;
        let source = format!("<repl:{}>", self.inputs);
        match self.eval(input, &source) {
            Ok(v) if !v.is_unit() => println!("{}", display_value(&self.engine, &v)),
            Ok(_) => {}
            Err(msg) => eprintln!("{msg}"),
        }
        Flow::Continue
    }

    /// `:load FILE`: runs a script file into the session's scope.
    pub fn load(&mut self, path: &str) -> Result<Dynamic, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: error: cannot read script: {e}"))?;
        self.eval(&text, path)
    }

    /// Variables in the order they were defined, for `:scope`.
    pub fn variables(&self) -> Vec<(String, bool, Dynamic)> {
        self.scope.iter().map(|(n, c, v)| (n.to_string(), c, v)).collect()
    }

    pub fn script_functions(&self) -> Vec<ScriptFn> {
        self.known.borrow().script_fns.clone()
    }

    pub fn module_list(&self) -> Vec<(String, String)> {
        self.modules.iter().map(|(a, p, _)| (a.clone(), p.clone())).collect()
    }
}

/// Where history is kept: $SATM_HISTORY (empty: no history), else `<data dir>/satm/history.txt`.
pub fn history_path() -> Option<PathBuf> {
    match std::env::var_os("SATM_HISTORY") {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(PathBuf::from(p)),
        None => dirs::data_dir().map(|d| d.join("satm").join("history.txt")),
    }
}

/// History file handling that never stops the REPL: the first failure is reported once and history is then kept in
/// memory only. rustyline writes the file itself (append with a lock), so concurrent REPLs do not clobber each other.
struct HistoryFile {
    path: Option<PathBuf>,
}

impl HistoryFile {
    fn open(rl: &mut Editor<SatmHelper, FileHistory>) -> Self {
        let Some(path) = history_path() else { return HistoryFile { path: None } };
        let mut h = HistoryFile { path: Some(path.clone()) };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            h.disable(&format!("cannot create {}: {e}", dir.display()));
            return h;
        }
        if path.exists()
            && let Err(e) = rl.load_history(&path)
        {
            h.disable(&format!("cannot read {}: {e}", path.display()));
        }
        h
    }

    fn disable(&mut self, why: &str) {
        eprintln!("satm: history will not be saved ({why}); set SATM_HISTORY to another file");
        self.path = None;
    }

    fn append(&mut self, rl: &mut Editor<SatmHelper, FileHistory>) {
        if let Some(p) = self.path.clone()
            && let Err(e) = rl.append_history(&p)
        {
            self.disable(&format!("cannot write {}: {e}", p.display()));
        }
    }
}

/// Runs the interactive prompt until `:quit` or Ctrl-D; returns the exit code.
pub fn run() -> i32 {
    cancel::install_handler(false);
    let mut session = Session::new();
    let config = Config::builder()
        .max_history_size(10_000)
        .and_then(|b| b.history_ignore_dups(true))
        .map(|b| b.history_ignore_space(true).completion_type(CompletionType::List).auto_add_history(false).build());
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("satm: cannot configure the line editor: {e}");
            return 1;
        }
    };
    let mut rl: Editor<SatmHelper, FileHistory> = match Editor::with_config(config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("satm: cannot open the line editor: {e}");
            return 1;
        }
    };
    rl.set_helper(Some(SatmHelper::new(session.known(), commands::names())));
    let mut history = HistoryFile::open(&mut rl);
    println!("satm {} — Rhai with satm's functions. :help for commands, Tab completes, Ctrl-D quits.", crate::VERSION);
    loop {
        match rl.readline("satm> ") {
            Ok(input) => {
                if !input.trim().is_empty() && rl.add_history_entry(input.trim_end()).unwrap_or(false) {
                    history.append(&mut rl);
                }
                if session.handle(&input) == Flow::Quit {
                    break;
                }
            }
            // Ctrl-C at the prompt: rustyline already dropped the line; start a fresh one.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("satm: {e}");
                crate::script::api::live::finish_all(true);
                return 1;
            }
        }
    }
    crate::script::api::live::finish_all(true);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_only_when_input_ends_early() {
        let e = Engine::new_raw();
        assert!(is_incomplete(&e, "fn f(x) {"));
        assert!(is_incomplete(&e, "fn f(x) {\n  x * 2"));
        assert!(is_incomplete(&e, "let a = [1, 2,"));
        assert!(is_incomplete(&e, "let a = foo(1,\n"));
        assert!(is_incomplete(&e, "if x > 1 { // more to come"));
        assert!(!is_incomplete(&e, "fn f(x) { x }"));
        assert!(!is_incomplete(&e, "let x = (1 2)"));
        assert!(!is_incomplete(&e, "let = 5"));
        assert!(!is_incomplete(&e, ""));
    }

    #[test]
    fn functions_and_imports_outlive_their_input() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("helpers.rhai");
        std::fs::write(&module, "fn triple(x) { x * 3 }\n").unwrap();
        let mut s = Session::new();
        let _ = s.eval("fn double(x) {\n  x * 2\n}", "<repl:1>").unwrap();
        assert_eq!(s.eval("double(21)", "<repl:2>").unwrap().as_int().unwrap(), 42);
        let path = module.display().to_string().trim_end_matches(".rhai").to_string();
        let _ = s.eval(&format!("import \"{path}\" as h;"), "<repl:3>").unwrap();
        assert_eq!(s.eval("h::triple(5)", "<repl:4>").unwrap().as_int().unwrap(), 15);
        assert_eq!(s.module_list(), vec![("h".to_string(), path)]);
        s.reset();
        assert!(s.eval("double(1)", "<repl:5>").is_err());
    }

    #[test]
    fn failed_input_keeps_earlier_variables_and_shadowing_is_compacted() {
        let mut s = Session::new();
        let _ = s.eval("let a = 40;", "<repl:1>").unwrap();
        let err = s.eval("let b = 2; b + nope", "<repl:2>").unwrap_err();
        assert!(err.contains("<repl:2>:1:16"), "{err}");
        assert_eq!(s.eval("a + b", "<repl:3>").unwrap().as_int().unwrap(), 42);
        let _ = s.eval("let a = 1;", "<repl:4>").unwrap();
        assert_eq!(s.variables().iter().filter(|v| v.0 == "a").count(), 1);
        assert_eq!(s.eval("a", "<repl:5>").unwrap().as_int().unwrap(), 1);
    }

    #[test]
    fn error_inside_an_earlier_function_shows_both_lines() {
        let mut s = Session::new();
        let _ = s.eval("fn bad(x) {\n  x + missing_var\n}", "<repl:1>").unwrap();
        let err = s.eval("let y = 1;\nbad(y)", "<repl:2>").unwrap_err();
        assert!(err.starts_with("<repl:2>:2:1: error:"), "{err}");
        assert!(err.contains("bad(y)") && err.contains("x + missing_var"), "{err}");
    }

    #[test]
    fn values_print_readably() {
        let e = script::new_engine();
        let v = e.eval::<Dynamic>("[zeros([2]), #{n: 1, s: \"a b\"}]").unwrap();
        assert_eq!(display_value(&e, &v), "[Tensor[f32; 2; cpu] [0, 0], #{n: 1, s: \"a b\"}]");
        assert_eq!(display_value(&e, &Dynamic::from("x\ny".to_string())), "x\ny");
        assert_eq!(display_value(&e, &Dynamic::from("xy".to_string())), "\"xy\"");
    }
}
