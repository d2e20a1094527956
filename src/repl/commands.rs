//! The REPL's `:commands`: help from the registered functions' docs, the function list, the scope, loading a file,
//! resetting the session. Text is built by functions that return Strings, so they can be tested without a terminal.
use super::helper::{KEYWORDS, truncate};
use super::{Flow, Session, display_value};
use crate::script::docs::{self, FnDoc};
use std::collections::BTreeMap;

/// (command, aliases, arguments, what it does)
pub const COMMANDS: &[(&str, &[&str], &str, &str)] = &[
    (":help", &[":h", ":?"], "[name]", "this overview, or the signature and doc of a function"),
    (":functions", &[":f"], "[filter]", "list functions whose name or signature contains filter"),
    (":scope", &[":s"], "", "variables (type, value), functions and modules of this session"),
    (":load", &[":l"], "FILE", "run a .rhai file into this session"),
    (":reset", &[], "", "fresh scope, no session functions, settings as at start"),
    (":quit", &[":q", ":exit"], "", "leave the REPL (also Ctrl-D; background runs stop with a checkpoint)"),
    (":runs", &[], "", "background runs of this session: state, threads, progress, directory"),
];

/// Every command name and alias, for completion.
pub fn names() -> Vec<&'static str> {
    COMMANDS.iter().flat_map(|(c, a, _, _)| std::iter::once(*c).chain(a.iter().copied())).collect()
}

fn canonical(cmd: &str) -> Option<&'static str> {
    COMMANDS.iter().find(|(c, a, _, _)| *c == cmd || a.contains(&cmd)).map(|(c, _, _, _)| *c)
}

/// Runs one `:command` line.
pub fn run(session: &mut Session, line: &str) -> Flow {
    let (cmd, arg) = line.split_once(char::is_whitespace).map_or((line, ""), |(c, a)| (c, a.trim()));
    match canonical(cmd) {
        Some(":help") if arg.is_empty() => println!("{}", overview()),
        Some(":help") => println!("{}", help_for(session, arg)),
        Some(":functions") => println!("{}", function_list(session, arg)),
        Some(":scope") => println!("{}", scope_listing(session)),
        Some(":runs") => println!("{}", crate::script::api::live::runs_listing()),
        Some(":load") => {
            let path = arg.trim_matches(|c| c == '"' || c == '\'');
            if path.is_empty() {
                eprintln!("usage: :load FILE.rhai");
            } else {
                match session.load(path) {
                    Ok(v) if !v.is_unit() => println!("{}", display_value(&session.engine, &v)),
                    Ok(_) => println!("loaded {path}"),
                    Err(msg) => eprintln!("{msg}"),
                }
            }
        }
        Some(":reset") => {
            session.reset();
            println!("session reset: empty scope, no session functions or modules, settings as at start");
        }
        Some(":quit") => return Flow::Quit,
        _ => {
            eprintln!("unknown command {cmd}; commands: {}", COMMANDS.iter().map(|c| c.0).collect::<Vec<_>>().join(" "))
        }
    }
    Flow::Continue
}

/// The type a function belongs with in the overview: its receiver (first parameter) when that is a satm type,
/// else what it makes, else "general".
fn group_of(d: &FnDoc) -> String {
    let is_domain = |t: &str| {
        let t = t.trim().trim_start_matches("&mut ").trim_start_matches('&').trim();
        let ok = t.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && !matches!(t, "Map" | "Array" | "String");
        ok.then(|| t.to_string())
    };
    let params = d.signature.split_once('(').map_or("", |(_, r)| r.split(')').next().unwrap_or(""));
    let first_type = params.split(',').next().and_then(|p| p.split_once(':')).and_then(|(_, t)| is_domain(t));
    let ret_type = d.signature.rsplit_once("->").and_then(|(_, r)| is_domain(r));
    first_type.or(ret_type).unwrap_or_else(|| "general".into())
}

/// `names` wrapped to `width` columns after `indent`.
fn wrap_words(words: &[String], indent: usize, width: usize) -> String {
    let mut out = String::new();
    let mut col = indent;
    for w in words {
        if col + w.len() + 1 > width && col > indent {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            col = indent;
        }
        if col > indent {
            out.push(' ');
            col += 1;
        }
        out.push_str(w);
        col += w.len();
    }
    out
}

/// `:help`: the commands, the keys, and every function name grouped by the type it works on.
pub fn overview() -> String {
    let mut out = String::from(
        "Type Rhai statements; an unfinished one (open brace, bracket, call) continues on the next line.\n\nCommands:\n",
    );
    for (c, aliases, args, what) in COMMANDS {
        let head = format!("{c} {args}");
        let alias = if aliases.is_empty() { String::new() } else { format!(" ({})", aliases.join(" ")) };
        out.push_str(&format!("  {head:<20} {what}{alias}\n"));
    }
    out.push_str(
        "\nKeys: Tab completes names, modules (import \"stdlib/<Tab>) and paths; → accepts a hint; Ctrl-R searches\n\
         history; Ctrl-C cancels a running command or clears the line; Ctrl-D quits.\n\nFunctions (:help NAME for one):\n",
    );
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in docs::all() {
        let g = groups.entry(group_of(&d)).or_default();
        if !g.contains(&d.name) {
            g.push(d.name.clone());
        }
    }
    let mut order: Vec<(String, Vec<String>)> = groups.into_iter().collect();
    // "general" last: the typed groups are what people look for.
    if let Some(i) = order.iter().position(|g| g.0 == "general") {
        let g = order.remove(i);
        order.push(g);
    }
    for (g, names) in &order {
        out.push_str(&format!("  {g:<10} {}\n", wrap_words(names, 13, 110)));
    }
    out.trim_end().to_string()
}

/// Edit distance, for "did you mean".
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Names close to `name` (small edit distance, or containing it), closest first.
pub fn suggestions(name: &str, candidates: &[String]) -> Vec<String> {
    let limit = (name.len() / 3).max(2);
    let mut scored: Vec<(usize, &String)> = candidates
        .iter()
        .filter_map(|c| {
            let d = levenshtein(name, c);
            (d <= limit || (name.len() >= 3 && c.contains(name))).then_some((d, c))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(6).map(|(_, c)| c.clone()).collect()
}

fn indent(text: &str, n: usize) -> String {
    text.lines().map(|l| format!("{}{l}", " ".repeat(n))).collect::<Vec<_>>().join("\n")
}

/// `:help name`: every overload's signature and doc; for an unknown name, the closest names.
pub fn help_for(session: &Session, name: &str) -> String {
    let name = name.trim();
    if let Some(c) = canonical(name).or_else(|| canonical(&format!(":{name}")))
        && let Some((c, aliases, args, what)) = COMMANDS.iter().find(|x| x.0 == c)
    {
        return format!(
            "{c} {args}\n    {what}{}",
            if aliases.is_empty() { String::new() } else { format!(" (also {})", aliases.join(" ")) }
        );
    }
    let mut parts: Vec<String> =
        docs::lookup(name).iter().map(|d| format!("{}\n{}", d.signature, indent(&d.doc, 4))).collect();
    for f in session.script_functions().iter().filter(|f| f.name == name) {
        let doc =
            if f.doc.is_empty() { "(defined in this session; no /// doc comment)".to_string() } else { f.doc.clone() };
        parts.push(format!("{}    [defined in this session]\n{}", f.signature, indent(&doc, 4)));
    }
    let known = session.known();
    let sigs = if name.contains("::") { known.borrow().signatures(name) } else { Vec::new() };
    parts.extend(sigs.into_iter().map(|s| format!("{s}    [module function]")));
    if !parts.is_empty() {
        return parts.join("\n\n");
    }
    if KEYWORDS.contains(&name) {
        return format!(
            "`{name}` is part of the Rhai language; see https://rhai.rs/book/ (satm adds functions, not syntax)"
        );
    }
    let mut all = docs::names();
    all.extend(session.script_functions().into_iter().map(|f| f.name));
    let close = suggestions(name, &all);
    if close.is_empty() {
        format!("no function named `{name}`; :functions lists them all")
    } else {
        format!("no function named `{name}`; did you mean: {}?", close.join(", "))
    }
}

/// `:functions [filter]`: one line per signature with the first sentence of its doc.
pub fn function_list(session: &Session, filter: &str) -> String {
    let f = filter.to_lowercase();
    let mut rows: Vec<(String, String)> = docs::all()
        .into_iter()
        .map(|d| (d.signature, d.doc))
        .chain(session.script_functions().into_iter().map(|s| (s.signature, format!("[session] {}", s.doc))))
        .filter(|(sig, _)| f.is_empty() || sig.to_lowercase().contains(&f))
        .collect();
    rows.sort();
    if rows.is_empty() {
        return format!("no function matches `{filter}`");
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).min(52);
    let mut out: Vec<String> = rows
        .iter()
        .map(|(sig, doc)| {
            let first = doc.split(". ").next().unwrap_or("").lines().next().unwrap_or("");
            format!("  {sig:<width$}  {}", truncate(first, 70)).trim_end().to_string()
        })
        .collect();
    out.push(format!("{} function(s); :help NAME for the full doc", rows.len()));
    out.join("\n")
}

/// `:scope`: variables with type and a one-line value, then session functions and modules.
pub fn scope_listing(session: &Session) -> String {
    let vars = session.variables();
    let mut out = Vec::new();
    if vars.is_empty() {
        out.push("no variables yet".to_string());
    } else {
        let rows: Vec<(String, String, String)> = vars
            .iter()
            .map(|(n, is_const, v)| {
                let ty = session.engine.map_type_name(v.type_name()).to_string();
                let ty = if *is_const { format!("const {ty}") } else { ty };
                let shown = display_value(&session.engine, v);
                let first = shown.lines().next().unwrap_or("");
                let shown = if shown.contains('\n') { format!("{first} …") } else { first.to_string() };
                (n.clone(), ty, truncate(&shown, 80))
            })
            .collect();
        let wn = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let wt = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        out.extend(rows.iter().map(|(n, t, v)| format!("  {n:<wn$}  {t:<wt$}  {v}")));
    }
    let fns = session.script_functions();
    if !fns.is_empty() {
        out.push(format!("functions: {}", fns.iter().map(|f| f.signature.as_str()).collect::<Vec<_>>().join(", ")));
    }
    let mods = session.module_list();
    if !mods.is_empty() {
        out.push(format!(
            "modules: {}",
            mods.iter().map(|(a, p)| format!("{a} = \"{p}\"")).collect::<Vec<_>>().join(", ")
        ));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_rank_close_names_first() {
        let names: Vec<String> =
            ["zeros", "ones", "seed", "threads", "to_array"].iter().map(|s| s.to_string()).collect();
        assert_eq!(suggestions("zeroes", &names)[0], "zeros");
        assert_eq!(suggestions("thread", &names), vec!["threads".to_string()]);
        assert!(suggestions("qqqqqqq", &names).is_empty());
    }

    #[test]
    fn help_shows_doc_and_suggests() {
        let s = Session::new();
        let h = help_for(&s, "zeros");
        assert!(h.starts_with("zeros(shape: Array) -> Tensor"), "{h}");
        assert!(h.contains("A float tensor of zeros"), "{h}");
        assert!(help_for(&s, "zerso").contains("did you mean: zeros"), "{}", help_for(&s, "zerso"));
        assert!(help_for(&s, "load").starts_with(":load FILE"));
    }

    #[test]
    fn help_shows_session_functions_with_their_doc_comments() {
        let mut s = Session::new();
        let _ = s.eval("/// Adds one.\n/// Works on ints and floats.\nfn inc(x) { x + 1 }", "<repl:1>").unwrap();
        let h = help_for(&s, "inc");
        assert_eq!(h, "inc(x)    [defined in this session]\n    Adds one.\n    Works on ints and floats.");
        let list = function_list(&s, "inc");
        let line = list.lines().find(|l| l.trim_start().starts_with("inc(x) ")).expect("inc listed");
        assert!(line.trim_end().ends_with("[session] Adds one."), "{list}");
    }

    #[test]
    fn overview_groups_functions_by_type() {
        let _engine_registers_the_docs = Session::new();
        let o = overview();
        // The group's names: its line and the wrapped lines below it.
        let lines: Vec<&str> = o.lines().collect();
        let at = lines.iter().position(|l| l.trim_start().starts_with("Tensor ")).expect("a Tensor group");
        let group: String = std::iter::once(lines[at])
            .chain(lines[at + 1..].iter().copied().take_while(|l| l.starts_with("             ")))
            .collect();
        assert!(group.contains(" abs ") && group.contains(" zeros") && !group.contains(" seed "), "{o}");
        assert!(o.contains(":functions [filter]"));
    }

    #[test]
    fn scope_lists_types_and_values() {
        let mut s = Session::new();
        let _ = s.eval("let t = ones([2, 3]); let n = 7; fn f(a) { a }", "<repl:1>").unwrap();
        let l = scope_listing(&s);
        assert!(l.contains("t  Tensor  Tensor[f32; 2x3; cpu]"), "{l}");
        assert!(l.contains("n  i64"), "{l}");
        assert!(l.contains("functions: f(a)"), "{l}");
    }
}
