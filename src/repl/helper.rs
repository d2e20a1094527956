//! The rustyline helper: completion (functions, keywords, variables, stdlib modules, file paths, `:commands`),
//! dimmed signature hints, bracket highlighting, and the validator that keeps an incomplete statement open on Enter.
use super::scan::{Before, End, enclosing_call, tokens, word_before};
use crate::script::{docs, satm_home};
use rhai::Engine;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::{CmdKind, Highlighter, MatchingBracketHighlighter};
use rustyline::hint::{Hint, Hinter};
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};
use std::borrow::Cow;
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

/// Rhai's keywords and built-in statements, offered by completion next to satm's functions.
pub const KEYWORDS: &[&str] = &[
    "let",
    "const",
    "fn",
    "if",
    "else",
    "switch",
    "while",
    "loop",
    "for",
    "in",
    "do",
    "until",
    "break",
    "continue",
    "return",
    "throw",
    "try",
    "catch",
    "import",
    "export",
    "as",
    "private",
    "true",
    "false",
    "this",
    "global",
    "print",
    "debug",
    "type_of",
    "is_def_var",
    "is_def_fn",
    "Fn",
    "call",
    "curry",
];

/// A function defined by the user in this session (from the accumulated AST).
#[derive(Debug, Clone)]
pub struct ScriptFn {
    pub name: String,
    /// `name(a, b)`
    pub signature: String,
    /// Doc comment lines without the `///` leader.
    pub doc: String,
}

/// What the session knows that completion and hints need; the REPL updates it after every input.
#[derive(Debug, Default)]
pub struct Known {
    pub vars: Vec<String>,
    pub script_fns: Vec<ScriptFn>,
    /// (alias, module path, function signatures) of modules imported with `import "path" as alias`.
    pub modules: Vec<(String, String, Vec<String>)>,
}

impl Known {
    /// Signatures of `name` (a satm function, a function defined in the session, or `alias::f`).
    pub fn signatures(&self, name: &str) -> Vec<String> {
        if let Some((alias, f)) = name.split_once("::") {
            return self
                .modules
                .iter()
                .filter(|m| m.0 == alias)
                .flat_map(|m| m.2.iter().filter(|s| sig_name(s) == f).map(|s| format!("{alias}::{s}")))
                .collect();
        }
        let mut sigs: Vec<String> = docs::lookup(name).into_iter().map(|d| d.signature).collect();
        sigs.extend(self.script_fns.iter().filter(|f| f.name == name).map(|f| f.signature.clone()));
        sigs
    }
}

/// The name part of a signature `name(params) -> ret`.
pub fn sig_name(sig: &str) -> &str {
    sig.split('(').next().unwrap_or(sig).trim()
}

/// A hint: what is shown (dimmed) and what the right arrow inserts.
pub struct SigHint {
    display: String,
    completion: Option<String>,
}

impl Hint for SigHint {
    fn display(&self) -> &str {
        &self.display
    }
    fn completion(&self) -> Option<&str> {
        self.completion.as_deref()
    }
}

pub struct SatmHelper {
    known: Rc<RefCell<Known>>,
    /// Parses input to decide whether it is complete; no functions needed for that.
    parser: Engine,
    files: FilenameCompleter,
    brackets: MatchingBracketHighlighter,
    commands: Vec<&'static str>,
}

impl SatmHelper {
    pub fn new(known: Rc<RefCell<Known>>, commands: Vec<&'static str>) -> Self {
        let mut parser = Engine::new_raw();
        parser.set_max_expr_depths(128, 64);
        SatmHelper {
            known,
            parser,
            files: FilenameCompleter::new(),
            brackets: MatchingBracketHighlighter::new(),
            commands,
        }
    }

    fn function_names(&self) -> Vec<String> {
        let mut names = docs::names();
        names.extend(self.known.borrow().script_fns.iter().map(|f| f.name.clone()));
        names
    }

    fn complete_command(&self, line: &str, pos: usize, ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let lead = before.len() - before.trim_start().len();
        let body = &before[lead..];
        let Some((cmd, _)) = body.split_once(char::is_whitespace) else {
            return Ok((lead, pairs(self.commands.iter().map(|c| c.to_string()), body)));
        };
        match cmd {
            ":load" | ":l" => self.files.complete(line, pos, ctx),
            ":help" | ":h" | ":functions" | ":f" => {
                let (start, word, _) = word_before(before);
                let mut names = self.function_names();
                if cmd.starts_with(":h") {
                    names.extend(self.commands.iter().map(|c| c.trim_start_matches(':').to_string()));
                }
                Ok((start, pairs(names, word)))
            }
            _ => Ok((pos, Vec::new())),
        }
    }
}

/// Sorted, de-duplicated candidates starting with `prefix`.
fn pairs(names: impl IntoIterator<Item = String>, prefix: &str) -> Vec<Pair> {
    let mut v: Vec<String> = names.into_iter().filter(|n| n.starts_with(prefix)).collect();
    v.sort();
    v.dedup();
    v.into_iter().map(|n| Pair { display: n.clone(), replacement: n }).collect()
}

/// Module paths `import "..."` accepts: `stdlib/<name>` for every .rhai file under satm's stdlib/ (and a stdlib/ in
/// the current directory, which the resolver tries first), plus .rhai files in the current directory.
pub fn module_paths() -> Vec<String> {
    fn walk(dir: &Path, rel: &str, depth: usize, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            if p.is_dir() && depth > 0 && !name.starts_with('.') {
                walk(&p, &format!("{rel}{name}/"), depth - 1, out);
            } else if let Some(stem) = name.strip_suffix(".rhai") {
                out.push(format!("{rel}{stem}"));
            }
        }
    }
    let mut out = Vec::new();
    walk(&satm_home().join("stdlib"), "stdlib/", 3, &mut out);
    if let Ok(cwd) = std::env::current_dir() {
        walk(&cwd.join("stdlib"), "stdlib/", 3, &mut out);
        walk(&cwd, "", 0, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

impl Completer for SatmHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        if before.trim_start().starts_with(':') {
            return self.complete_command(line, pos, ctx);
        }
        match tokens(before).1 {
            End::Comment => Ok((pos, Vec::new())),
            End::Str { start } => {
                let head = before[..start].trim_end();
                let is_import = head.ends_with("import")
                    && !head[..head.len() - 6].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
                if is_import {
                    Ok((start + 1, pairs(module_paths(), &before[start + 1..])))
                } else {
                    self.files.complete(line, pos, ctx)
                }
            }
            End::Code => {
                let (start, word, ctx) = word_before(before);
                let known = self.known.borrow();
                let names: Vec<String> = match ctx {
                    Before::Module(alias) => known
                        .modules
                        .iter()
                        .filter(|m| m.0 == alias)
                        .flat_map(|m| m.2.iter().map(|s| sig_name(s).to_string()))
                        .collect(),
                    Before::Method => self.function_names(),
                    Before::Plain => {
                        let mut n = self.function_names();
                        n.extend(KEYWORDS.iter().map(|k| k.to_string()));
                        n.extend(known.vars.iter().cloned());
                        n.extend(known.modules.iter().map(|m| format!("{}::", m.0)));
                        n
                    }
                };
                Ok((start, pairs(names, word)))
            }
        }
    }
}

/// At most `n` characters of `s`, with an ellipsis when cut.
pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n.saturating_sub(1)).collect::<String>())
    }
}

impl Hinter for SatmHelper {
    type Hint = SigHint;

    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<SigHint> {
        if pos < line.len() || line.trim_start().starts_with(':') {
            return None;
        }
        let before = &line[..pos];
        if tokens(before).1 != End::Code {
            return None;
        }
        let known = self.known.borrow();
        let (_, word, ctx) = word_before(before);
        if !word.is_empty() && !matches!(ctx, Before::Method) {
            let qualified = |n: &str| match &ctx {
                Before::Module(a) => format!("{a}::{n}"),
                _ => n.to_string(),
            };
            let candidates: Vec<String> = match &ctx {
                Before::Module(a) => known
                    .modules
                    .iter()
                    .filter(|m| &m.0 == a)
                    .flat_map(|m| m.2.iter().map(|s| sig_name(s).to_string()))
                    .collect(),
                _ => self.function_names(),
            };
            let mut matching: Vec<&String> = candidates.iter().filter(|n| n.starts_with(word)).collect();
            matching.sort();
            matching.dedup();
            // A unique function name: offer its rest (accepted with →) and show its parameters.
            if let [one] = matching.as_slice() {
                let sigs = known.signatures(&qualified(one));
                let params: Vec<&str> = sigs.iter().filter_map(|s| s.find('(').map(|i| &s[i..])).collect();
                let rest = &one[word.len()..];
                if !params.is_empty() {
                    return Some(SigHint {
                        display: truncate(&format!("{rest}{}", params.join("  |  ")), 160),
                        completion: if rest.is_empty() { None } else { Some(rest.to_string()) },
                    });
                }
            }
        }
        let call = enclosing_call(before)?;
        let sigs = known.signatures(&call);
        if sigs.is_empty() {
            return None;
        }
        Some(SigHint { display: truncate(&format!("   {}", sigs.join("  |  ")), 160), completion: None })
    }
}

impl Highlighter for SatmHelper {
    fn highlight<'l>(&self, line: &'l str, pos: usize) -> Cow<'l, str> {
        self.brackets.highlight(line, pos)
    }

    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        Cow::Owned(format!("\x1b[2m{hint}\x1b[0m"))
    }

    fn highlight_char(&self, line: &str, pos: usize, kind: CmdKind) -> bool {
        self.brackets.highlight_char(line, pos, kind)
    }
}

impl Validator for SatmHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        // Commands are one line; two empty lines end a statement that will not complete (the error then shows).
        if input.trim_start().starts_with(':') || input.ends_with("\n\n") {
            return Ok(ValidationResult::Valid(None));
        }
        Ok(if super::is_incomplete(&self.parser, input) {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

impl Helper for SatmHelper {}
