//! The `satm>` REPL: persistent scope, multi-line input, errors with a caret, Ctrl-C cancels the running command.
use crate::core::cancel;
use crate::script;
use rhai::{Dynamic, Engine, ParseErrorType, Scope};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

/// How the REPL and `satm -e` print a value: custom types through their registered `to_string`.
pub fn display_value(engine: &Engine, v: &Dynamic) -> String {
    if v.is_string() {
        return format!("{:?}", v.to_string());
    }
    let mut scope = Scope::new();
    scope.push("__satm_value", v.clone());
    engine.eval_with_scope::<String>(&mut scope, "to_string(__satm_value)").unwrap_or_else(|_| v.to_string())
}

/// Whether `src` is an incomplete statement (so the REPL asks for another line).
pub fn is_incomplete(engine: &Engine, src: &str) -> bool {
    match engine.compile(src) {
        Err(e) => matches!(e.err_type(), ParseErrorType::MissingToken(..) | ParseErrorType::UnexpectedEOF),
        Ok(_) => false,
    }
}

pub fn run() -> i32 {
    cancel::install_handler(false);
    let engine = script::new_engine();
    let mut scope = script::scope_with_params();
    let mut rl = match DefaultEditor::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("satm: cannot open the line editor: {e}");
            return 1;
        }
    };
    println!("satm {} — Rhai REPL. :help for commands, Ctrl-D to quit.", crate::VERSION);
    let mut buf = String::new();
    loop {
        let prompt = if buf.is_empty() { "satm> " } else { "  ... " };
        match rl.readline(prompt) {
            Ok(line) => {
                if buf.is_empty() && line.trim() == ":quit" {
                    break;
                }
                buf.push_str(&line);
                buf.push('\n');
                if is_incomplete(&engine, &buf) {
                    continue;
                }
                let src = std::mem::take(&mut buf);
                let _ = rl.add_history_entry(src.trim_end());
                cancel::reset();
                match script::run_source(&engine, &src, "<repl>", &mut scope) {
                    Ok(v) if !v.is_unit() => println!("{}", display_value(&engine, &v)),
                    Ok(_) => {}
                    Err(msg) => eprintln!("{msg}"),
                }
            }
            Err(ReadlineError::Interrupted) => {
                buf.clear();
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("satm: {e}");
                return 1;
            }
        }
    }
    0
}
