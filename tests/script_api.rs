//! Script API hardening (issue 9): every registered function is called with wrong argument types, too many
//! arguments, unknown option keys, wrongly typed option values, empty datasets and out-of-range numbers, plus a
//! hand-written list of targeted bad inputs (wrong shapes, bad labels, missing and corrupt files). Each must be a
//! script error whose message names the function and the problem; nothing may panic or abort.
//!
//! The generated calls come from the docs registry (`satm::script::docs::all()`), so a function registered later is
//! covered without editing this file; a new parameter type makes the test fail until it gets a fixture here.
//! Every evaluation runs under `catch_unwind` (a panic that escapes `guard` fails the test with the case), and the
//! few inputs that could abort the process (huge allocations, corrupt libtorch archives) run in a `satm -e`
//! subprocess, where a signal is reported instead of killing the test binary.
use rhai::{Dynamic, Engine, Scope};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

mod common;

/// Tests share libtorch's global generator and thread pool: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

enum Outcome {
    Ok(String),
    Err(String),
    Panic(String),
}

/// An engine, the fixtures (one value of each script type) in a scope, and a temporary run directory.
struct Fx {
    engine: Engine,
    scope: Scope<'static>,
    dir: tempfile::TempDir,
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// Fixtures: `t` images [2,3,16,16], `y` labels [2], `m` a tiny 4-class model, `d` a 16-item 4-class dataset with
/// 4 folds, `e` an empty dataset, `tb` a table, `bs`/`b` batches and one batch, `ev` an evaluate() result, `r` a
/// one-step training result and `h` its history, `run` a finished background run, `w` a watcher of `r`'s directory.
const FIXTURES: &str = r#"
    threads(1);
    seed(1);
    let d = synthetic(#{n: 16, classes: 4, size: 16, seed: 1, folds: 4});
    let e = d.take(0);
    let m = model("vgg_s", #{classes: 4, width: 0.125});
    let m2 = model("vgg_s", #{classes: 4, width: 0.125});
    let mt = model("vgg_s", #{classes: 4, width: 0.125});
    let t = rand([2, 3, 16, 16]);
    let y = tensor([0, 1]);
    let tb = table("t", ["a", "b"]);
    tb.add_row(["x", 1]);
    let bs = d.batches(4, #{shuffle: false});
    let b = ();
    for x in bs { b = x; break; }
    let ev = evaluate(m, d, #{batch: 8});
    let r = train(mt, d, #{steps: 1, batch: 4, progress: false, log_every: 1, name: "fixture"});
    let h = r.history;
    let mb = model("vgg_s", #{classes: 4, width: 0.125});
    let run = train(mb, d, #{steps: 2, batch: 4, background: true, threads: 1, name: "fixture_bg"});
    run.wait();
    let w = watch(r.dir);
    let nan = parse_float("NaN");
    let inf = parse_float("inf");
    let mr = masking_report(m, d, #{limit: 2, steps: 1, queries: 1, eps_factors: [1.0]});
    let rb = robust_eval(m, d, #{limit: 2, steps: 1, queries: 1});
"#;

/// Every panic in this process, caught or not (a registered function's `guard` turns a panic into a script error:
/// still a bug, which the cases below must see). Filled by the hook `count_panics` installs.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Installs, once, a panic hook that records each panic's message and place, then defers to the hook before it
/// (satm's quiet one).
fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let before = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            PANICS.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{}{at}", short(&msg)));
            before(info);
        }));
    });
}

fn panics_so_far() -> usize {
    PANICS.lock().unwrap_or_else(|e| e.into_inner()).len()
}

fn setup() -> Fx {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (engine, mut scope) = common::script_session(dir.path());
    count_panics();
    if let Err(e) = engine.run_with_scope(&mut scope, FIXTURES) {
        panic!("fixtures failed: {}", satm::script::format_error(&e, FIXTURES, "<fixtures>"));
    }
    Fx { engine, scope, dir, _serial: serial }
}

impl Fx {
    /// Evaluates `code` in a copy of the fixture scope (cases cannot disturb each other's variables).
    /// A panic caught inside (by `guard`, which reports it as an ordinary error) is an `Outcome::Panic` too.
    fn eval(&self, code: &str) -> Outcome {
        self.eval_value(code).0
    }

    fn eval_value(&self, code: &str) -> (Outcome, Option<Dynamic>) {
        let mut scope = self.scope.clone();
        let before = panics_so_far();
        let res = catch_unwind(AssertUnwindSafe(|| self.engine.eval_with_scope::<Dynamic>(&mut scope, code)));
        let caught: Vec<String> = PANICS.lock().unwrap_or_else(|e| e.into_inner())[before..].to_vec();
        if let (Ok(_), Some(first)) = (&res, caught.first()) {
            return (Outcome::Panic(format!("caught by guard: {first}")), None);
        }
        match res {
            Ok(Ok(v)) => (Outcome::Ok(format!("{} {}", v.type_name(), short(&v.to_string()))), Some(v)),
            Ok(Err(e)) => (Outcome::Err(satm::script::format_error(&e, code, "<case>")), None),
            Err(p) => (
                Outcome::Panic(
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "non-string panic".into()),
                ),
                None,
            ),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn short(s: &str) -> String {
    let s: String = s.chars().take(160).collect();
    s.replace('\n', " ")
}

/// Collects failures instead of stopping at the first, so one run shows every broken case.
#[derive(Default)]
struct Report {
    cases: usize,
    failures: Vec<String>,
}

impl Report {
    /// `code` must be a script error whose message contains `func` and each of `want` (case-insensitive).
    fn expect_err(&mut self, fx: &Fx, func: &str, code: &str, want: &[&str]) {
        self.cases += 1;
        match fx.eval(code) {
            Outcome::Err(msg) => {
                if std::env::var_os("SATM_SHOW").is_some() {
                    eprintln!("{code}\n    -> {}", short(msg.lines().next().unwrap_or("")));
                }
                let low = msg.to_lowercase();
                let missing: Vec<&&str> =
                    std::iter::once(&func).chain(want).filter(|w| !low.contains(&w.to_lowercase())).collect();
                if !missing.is_empty() {
                    self.failures.push(format!("{code}\n    error lacks {missing:?}: {}", short(&msg)));
                }
                if let Some(noise) = unclear(&msg, func) {
                    self.failures.push(format!("{code}\n    unclear error ({noise}): {}", short(&msg)));
                }
            }
            Outcome::Ok(v) => self.failures.push(format!("{code}\n    expected an error, got {v}")),
            Outcome::Panic(p) => self.failures.push(format!("{code}\n    PANIC: {}", short(&p))),
        }
    }

    /// `code` may succeed or fail, but must not panic; an error must name `func`.
    fn expect_no_panic(&mut self, fx: &Fx, func: &str, code: &str) {
        self.cases += 1;
        match fx.eval(code) {
            Outcome::Ok(_) => {}
            Outcome::Err(msg) => {
                if !msg.to_lowercase().contains(&func.to_lowercase()) {
                    self.failures.push(format!("{code}\n    error does not name {func}: {}", short(&msg)));
                }
            }
            Outcome::Panic(p) => self.failures.push(format!("{code}\n    PANIC: {}", short(&p))),
        }
    }

    fn finish(self, what: &str) {
        // new_engine() installs a quiet panic hook (the REPL reports caught panics itself), so print the failures
        // before the assertion rather than relying on its message.
        eprintln!("{what}: {} cases, {} failures", self.cases, self.failures.len());
        for f in &self.failures {
            eprintln!("  {f}");
        }
        assert!(self.failures.is_empty(), "{what}: {} of {} cases failed:\n{}", self.failures.len(), self.cases, {
            self.failures.join("\n")
        });
    }
}

/// Text that makes an error message unclear to a script author: Rust type paths, Rhai's "Runtime error:" inside a
/// message, unwrap/panic text, libtorch's undefined-tensor message, or the function named twice.
fn unclear(msg: &str, func: &str) -> Option<String> {
    let first = msg.lines().next().unwrap_or("");
    for noise in [
        "satm::",
        "Runtime error:",
        "called `Result::unwrap()`",
        "called `Option::unwrap()`",
        "proper Tensor",
        "panicked",
    ] {
        if first.contains(noise) {
            return Some(noise.to_string());
        }
    }
    let twice = format!("{func}: {func}: ");
    first.contains(&twice).then_some(twice)
}

/// One documented overload: name and (parameter name, type) pairs.
#[derive(Debug, Clone)]
struct Sig {
    name: String,
    params: Vec<(String, String)>,
}

fn parse_sig(s: &str) -> Sig {
    let open = s.find('(').unwrap();
    let close = s.rfind(')').unwrap();
    let inner = &s[open + 1..close];
    let params = if inner.trim().is_empty() {
        vec![]
    } else {
        inner
            .split(", ")
            .map(|p| {
                let (n, t) = p.split_once(':').unwrap_or((p, "?"));
                (n.trim().to_string(), t.trim().to_string())
            })
            .collect()
    };
    Sig { name: s[..open].to_string(), params }
}

fn documented() -> Vec<Sig> {
    let _ = satm::script::new_engine();
    satm::script::docs::all().iter().map(|d| parse_sig(&d.signature)).collect()
}

/// The Rhai type names a documented parameter type accepts at dispatch (Dynamic parameters take anything: their
/// own checks are what is tested).
fn accepted(ty: &str) -> &'static [&'static str] {
    match ty {
        "Tensor" => &["Tensor"],
        "Model" | "Model | Array" => &["Model"],
        "Dataset" => &["Dataset"],
        "Map" => &["map"],
        "int" => &["int"],
        "float" | "f64" => &["float"],
        "&str" => &["string"],
        "Array" => &["array"],
        "Table" => &["Table"],
        "History" => &["History"],
        "Batches" => &["Batches"],
        "Batch" => &["Batch"],
        "TrainResult" => &["TrainResult"],
        "Run" => &["Run"],
        "Watcher" => &["Watcher"],
        "MaskingReport" => &["MaskingReport"],
        "Robust" => &["Robust"],
        "bool" => &["bool"],
        other => panic!("no fixture for parameter type '{other}': add it to accepted() and valid_value()"),
    }
}

/// A valid value of a documented type (the fixtures), with overrides where a function needs a particular string.
fn valid_value(func: &str, pname: &str, ty: &str) -> String {
    if let Some(v) = override_for(func, pname, ty) {
        return v;
    }
    match ty {
        "Tensor" => "t",
        "Model" | "Model | Array" => "m",
        "Dataset" => "d",
        "Map" => "#{}",
        "int" => "1",
        "float" | "f64" => "0.5",
        "&str" => "\"x\"",
        "Array" => "[]",
        "Table" => "tb",
        "History" => "h",
        "Batches" => "bs",
        "Batch" => "b",
        "TrainResult" => "r",
        "Run" => "run",
        "Watcher" => "w",
        "MaskingReport" => "mr",
        "Robust" => "rb",
        "bool" => "true",
        "?" => "0.5",
        other => panic!("no fixture for parameter type '{other}'"),
    }
    .into()
}

/// The valid value of a parameter that needs a particular one (an attack's name, a model's architecture, a path).
fn override_for(func: &str, pname: &str, ty: &str) -> Option<String> {
    Some(match (func, pname) {
        ("attack" | "describe_attack", "name") => "\"fgsm\"".into(),
        ("model", "arch") => "\"vgg_s\"".into(),
        ("device" | "to", _) if ty == "&str" || ty == "string" => "\"cpu\"".into(),
        ("precision", "p") => "\"fp32\"".into(),
        ("table_eps", "models") => "[m]".into(),
        (_, "path") => format!("tmp + \"/{func}_out.png\""),
        _ => return None,
    })
}

/// Wrong values to try: (expression, Rhai type name).
const WRONG: &[(&str, &str)] = &[
    ("\"oops\"", "string"),
    ("#{zz: 1}", "map"),
    ("42", "int"),
    ("4.5", "float"),
    ("[7]", "array"),
    ("true", "bool"),
    ("t", "Tensor"),
    ("d", "Dataset"),
    ("m", "Model"),
    ("tb", "Table"),
    ("run", "Run"),
];

/// (name, arity) of Rhai's own functions: a wrong-typed call may legitimately reach one of them (`len("x")`).
fn builtins() -> BTreeSet<(String, usize)> {
    Engine::new()
        .gen_fn_signatures(true)
        .iter()
        .filter_map(|s| {
            let open = s.find('(')?;
            let close = s.rfind(')')?;
            let inner = s[open + 1..close].trim();
            let arity = if inner.is_empty() { 0 } else { inner.split(", ").count() };
            Some((s[..open].to_string(), arity))
        })
        .collect()
}

fn call(name: &str, args: &[String]) -> String {
    format!("{name}({})", args.join(", "))
}

/// Default valid option maps for functions whose options need some keys to get past their first checks (and a
/// fast failure rather than a full run if an option were wrongly accepted).
fn base_opts(func: &str) -> &'static str {
    match func {
        "satm" => "#{nets: [mt], frozen: [m2], data: d, steps: 1, batch: 4, progress: false}",
        "train" => "#{steps: 1, batch: 4, progress: false}",
        "transfer_matrix" => "#{sources: [m], targets: [m2], data: d, limit: 2}",
        "image_folder" => "#{root: \"/nonexistent/satm\"}",
        "csv_manifest" => "#{path: \"/nonexistent/satm.csv\"}",
        "adience" | "utkface" => "#{root: \"/nonexistent/satm\"}",
        "model" => "#{classes: 4, width: 0.125}",
        "evaluate" | "eps_sweep" | "table_eps" => "#{limit: 2}",
        "robust_eval" | "masking_report" => "#{limit: 2, steps: 1, queries: 1}",
        _ => "#{}",
    }
}

/// `base` with `key: value` added (or replaced).
fn with_key(base: &str, key: &str, value: &str) -> String {
    let inner = base.trim_start_matches("#{").trim_end_matches('}').trim();
    let kept: Vec<&str> = if inner.is_empty() {
        vec![]
    } else {
        inner.split(", ").filter(|kv| kv.split(':').next().map(str::trim) != Some(key)).collect()
    };
    let mut parts: Vec<String> = kept.iter().map(|s| s.to_string()).collect();
    parts.push(format!("{key}: {value}"));
    format!("#{{{}}}", parts.join(", "))
}

/// The valid option names listed in an unknown-option error ("valid options: a, b, c").
fn valid_keys_in(msg: &str) -> Vec<String> {
    let low = msg.to_lowercase();
    let Some(i) = low.find("valid options: ") else { return vec![] };
    let rest = &msg[i + "valid options: ".len()..];
    let end = rest.find(['\n', ';']).unwrap_or(rest.len());
    rest[..end].split(',').map(|k| k.trim().trim_end_matches('.').to_string()).filter(|k| !k.is_empty()).collect()
}

#[test]
fn every_function_rejects_wrong_argument_types_and_counts() {
    let fx = setup();
    let sigs = documented();
    let builtin = builtins();
    let mut rep = Report::default();
    let mut arities: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for s in &sigs {
        arities.entry(s.name.clone()).or_default().insert(s.params.len());
    }
    for s in &sigs {
        let same: Vec<&Sig> = sigs.iter().filter(|o| o.name == s.name && o.params.len() == s.params.len()).collect();
        for (i, (_, ty)) in s.params.iter().enumerate() {
            if same.iter().any(|o| o.params[i].1 == "?") {
                continue;
            }
            let ok: BTreeSet<&str> = same.iter().flat_map(|o| accepted(&o.params[i].1).iter().copied()).collect();
            let _ = ty;
            for (wrong, wty) in WRONG {
                if ok.contains(wty) {
                    continue;
                }
                let args: Vec<String> = s
                    .params
                    .iter()
                    .enumerate()
                    .map(|(j, (n, t))| if j == i { wrong.to_string() } else { valid_value(&s.name, n, t) })
                    .collect();
                let code = call(&s.name, &args);
                if builtin.contains(&(s.name.clone(), s.params.len())) {
                    rep.expect_no_panic(&fx, &s.name, &code);
                } else {
                    rep.expect_err(&fx, &s.name, &code, &[]);
                }
            }
        }
    }
    // One argument too many, where no overload takes that many.
    for (name, ar) in &arities {
        let n = ar.iter().max().unwrap() + 1;
        let s = sigs.iter().find(|s| &s.name == name && s.params.len() == n - 1).unwrap();
        let mut args: Vec<String> = s.params.iter().map(|(p, t)| valid_value(name, p, t)).collect();
        args.push("42".into());
        let code = call(name, &args);
        if builtin.contains(&(name.clone(), n)) {
            rep.expect_no_panic(&fx, name, &code);
        } else {
            rep.expect_err(&fx, name, &code, &[]);
        }
    }
    rep.finish("wrong types and counts");
}

/// Calls of each overload with an option map: the overload's arguments, with `opts` replaced.
fn opts_calls(sigs: &[Sig], opts: &dyn Fn(&str) -> String) -> Vec<(String, String)> {
    let mut out = vec![];
    for s in sigs {
        let Some(pos) = s.params.iter().position(|(n, t)| n == "opts" && t == "Map") else { continue };
        let names: Vec<String> = if s.name == "attack" || s.name == "describe_attack" {
            satm::core::attacks::AttackKind::ALL.iter().map(|k| format!("\"{}\"", k.name())).collect()
        } else {
            vec![String::new()]
        };
        for an in names {
            let args: Vec<String> = s
                .params
                .iter()
                .enumerate()
                .map(|(j, (n, t))| {
                    if j == pos {
                        opts(&s.name)
                    } else if n == "name" && !an.is_empty() {
                        an.clone()
                    } else {
                        valid_value(&s.name, n, t)
                    }
                })
                .collect();
            out.push((s.name.clone(), call(&s.name, &args)));
        }
    }
    out
}

#[test]
fn every_option_map_rejects_unknown_keys_and_wrongly_typed_values() {
    let fx = setup();
    let sigs = documented();
    let mut rep = Report::default();
    let mut seen = BTreeSet::new();
    for (func, code) in opts_calls(&sigs, &|f| with_key(base_opts(f), "zz_bogus", "1")) {
        if !seen.insert(code.clone()) {
            continue;
        }
        // Learn the valid keys from the error, then give each a value of the wrong type (a Tensor is valid for no
        // option key).
        let keys = match fx.eval(&code) {
            Outcome::Err(msg) => valid_keys_in(&msg),
            _ => vec![],
        };
        rep.expect_err(&fx, &func, &code, &["zz_bogus", "valid options"]);
        let base = base_opts(&func);
        for k in keys {
            let bad_code = code.replacen(&with_key(base, "zz_bogus", "1"), &with_key(base, &k, "t"), 1);
            rep.expect_err(&fx, &func, &bad_code, &[&k]);
        }
    }
    rep.finish("option keys");
}

#[test]
fn empty_datasets_are_errors_where_there_is_nothing_to_work_on() {
    let fx = setup();
    let sigs = documented();
    let mut rep = Report::default();
    // Data bookkeeping on an empty dataset is fine; evaluating or training on one is an error saying so.
    let fine = ["len", "take", "subset", "class_counts", "batches", "load_summary"];
    for s in &sigs {
        let Some(pos) = s.params.iter().position(|(_, t)| t == "Dataset") else { continue };
        let args: Vec<String> = s
            .params
            .iter()
            .enumerate()
            .map(|(j, (n, t))| {
                if j == pos {
                    "e".into()
                } else if t == "Map" && n == "opts" {
                    base_opts(&s.name).into()
                } else {
                    valid_value(&s.name, n, t)
                }
            })
            .collect();
        let code = call(&s.name, &args);
        if fine.contains(&s.name.as_str()) {
            rep.expect_no_panic(&fx, &s.name, &code);
        } else if s.name == "fold" || s.name == "split" {
            rep.expect_err(&fx, &s.name, &code, &[]);
        } else {
            rep.expect_err(&fx, &s.name, &code, &["empty"]);
        }
    }
    for (func, code) in [
        ("satm", "satm(#{nets: [mt], frozen: [m2], data: e, steps: 1, batch: 4, progress: false})"),
        ("satm", "satm(#{nets: [mt], frozen: [m2], data: d, val: e, steps: 1, batch: 4, progress: false})"),
        ("train", "train(mt, d, #{val: e, steps: 1, batch: 4, progress: false})"),
        ("transfer_matrix", "transfer_matrix(#{sources: [m], targets: [m2], data: e})"),
        ("evaluate", "evaluate(m, d, #{limit: 0})"),
        ("evaluate", "evaluate(m, d, #{limit: -1})"),
    ] {
        rep.expect_err(&fx, func, code, &[]);
    }
    for code in
        ["let n = 0; for x in e.batches(4) { n += 1 } if n != 0 { throw \"batches of nothing\" }", "e.to_string()"]
    {
        rep.expect_no_panic(&fx, "batches", code);
    }
    rep.finish("empty datasets");
}

#[test]
fn out_of_range_numbers_are_errors() {
    let fx = setup();
    let sigs = documented();
    let mut rep = Report::default();
    // Negative dimensions index from the end, like PyTorch; fmt_eps formats whatever it is given.
    let negative_ok = [("argmax", "dim"), ("sum", "dim"), ("mean", "dim")];
    let nan_ok = ["fmt_eps"];
    for s in &sigs {
        for (i, (pname, ty)) in s.params.iter().enumerate() {
            let bad: &[&str] = match ty.as_str() {
                "int" if !negative_ok.contains(&(s.name.as_str(), pname.as_str())) => &["-1"],
                // clamp takes ±inf as "no bound"; NaN is still an error.
                "float" | "f64" if s.name == "clamp" => &["nan"],
                "float" | "f64" if !nan_ok.contains(&s.name.as_str()) => &["nan", "inf", "-inf"],
                _ => continue,
            };
            for v in bad {
                let args: Vec<String> = s
                    .params
                    .iter()
                    .enumerate()
                    .map(|(j, (n, t))| {
                        if j == i {
                            v.to_string()
                        } else if t == "Map" && n == "opts" {
                            base_opts(&s.name).into()
                        } else {
                            valid_value(&s.name, n, t)
                        }
                    })
                    .collect();
                rep.expect_err(&fx, &s.name, &call(&s.name, &args), &[]);
            }
            // Huge values: an error or a result, never a crash.
            if ty == "int" {
                let args: Vec<String> = s
                    .params
                    .iter()
                    .enumerate()
                    .map(|(j, (n, t))| if j == i { "1099511627776".into() } else { valid_value(&s.name, n, t) })
                    .collect();
                rep.expect_no_panic(&fx, &s.name, &call(&s.name, &args));
            }
        }
    }
    rep.finish("out-of-range numbers");
}

/// (function, code, words the error must contain besides the function name).
type Case = (&'static str, &'static str, &'static [&'static str]);

const TARGETED: &[Case] = &[
    // --- tensors ---
    ("zeros", "zeros([2, -1])", &["non-negative"]),
    ("zeros", "zeros([1099511627776, 1099511627776, 1099511627776])", &[]),
    ("ones", "ones([4096, 4096, 4096, 4096])", &[]),
    ("tensor", "tensor([[1, 2], [3]])", &["ragged"]),
    ("tensor", "tensor([\"a\"])", &["numbers"]),
    ("reshape", "t.reshape([5, 7])", &["shape"]),
    ("reshape", "t.reshape([\"a\"])", &["integers"]),
    ("+", "t + rand([5])", &["size"]),
    ("*", "t * tensor([1, 2, 3])", &["size"]),
    ("slice", "t.slice(3, 1)", &["range"]),
    ("index", "t[99]", &["out of range"]),
    ("index", "tensor([1]).sum()[0]", &["scalar"]),
    ("argmax", "t.argmax(9)", &["dim"]),
    ("sum", "t.sum(-9)", &["dim"]),
    ("cat", "cat([t, 1], 0)", &["element 1"]),
    ("cat", "cat([], 0)", &["at least one"]),
    ("cat", "cat([t, rand([1, 2])], 0)", &[]),
    ("to", "t.to(\"tpu\")", &["tpu"]),
    ("to", "t.to(\"cuda:7\")", &["cuda"]),
    ("clamp", "t.clamp(1.0, 0.0)", &["lo"]),
    ("clamp", "t.clamp(0, 1)", &["clamp (Tensor, i64, i64)", "clamp takes: clamp(x: Tensor, lo: float, hi: float)"]),
    ("item", "t.item()", &["exactly one"]),
    ("randint", "randint(0, [2])", &["high"]),
    ("randint", "randint(5, [-1])", &["non-negative"]),
    ("max", "zeros([0]).max()", &[]),
    ("to_array", "zeros([2000, 1000]).to_array()", &["limit"]),
    ("max_abs_diff", "max_abs_diff(t, rand([5]))", &[]),
    ("len", "tensor([3]).sum().len()", &["scalar"]),
    // --- session ---
    ("seed", "seed(-1)", &[">= 0"]),
    ("threads", "threads(0)", &["at least 1"]),
    ("threads", "threads(-3)", &["at least 1"]),
    ("threads", "threads(1000000)", &["1000000"]),
    ("device", "device(\"gpu\")", &["gpu"]),
    ("device", "device(\"cuda:99\")", &["cuda"]),
    ("precision", "precision(\"fp64\")", &["fp64"]),
    // --- data ---
    ("synthetic", "synthetic(#{n: 0})", &["n"]),
    ("synthetic", "synthetic(#{classes: 0})", &["classes"]),
    ("synthetic", "synthetic(#{classes: 1})", &["classes"]),
    ("synthetic", "synthetic(#{size: 1})", &["size"]),
    ("synthetic", "synthetic(#{size: -1})", &["size"]),
    ("synthetic", "synthetic(#{noise: -0.5})", &["noise"]),
    ("synthetic", "synthetic(#{noise: nan})", &["noise"]),
    ("synthetic", "synthetic(#{n: \"many\"})", &["'n'"]),
    ("synthetic", "synthetic(#{n: 8, folds: 4, fold: 7})", &["fold 7"]),
    ("synthetic", "synthetic(#{n: 8, folds: -1})", &["folds"]),
    ("synthetic", "synthetic(#{n: 8, groups: -2})", &["groups"]),
    ("fold", "d.fold(7)", &["fold 7"]),
    ("fold", "d.fold(-1)", &["fold -1"]),
    ("fold", "synthetic(#{n: 8}).fold(0)", &["no folds"]),
    ("take", "d.take(-1)", &[">= 0"]),
    ("subset", "d.subset([99])", &["99"]),
    ("subset", "d.subset([\"a\"])", &["integers"]),
    ("subset", "d.subset(0)", &[">= 1"]),
    ("split", "d.split(1.5)", &["fraction"]),
    ("split", "d.split(-0.1)", &["fraction"]),
    ("split", "d.split(nan)", &["fraction"]),
    ("split", "d.split(0.5, -1)", &["seed"]),
    ("split", "d.take(1).split(0.5)", &["1 item"]),
    ("batches", "d.batches(0)", &["at least 1"]),
    ("batches", "d.batches(-4)", &["at least 1"]),
    ("batches", "d.batches(4, #{device: \"cuda:5\"})", &["cuda"]),
    ("batches", "d.batches(4, #{shuffle: 1})", &["shuffle"]),
    ("epoch", "bs.epoch(-1)", &[">= 0"]),
    ("utkface", "utkface(#{root: \"/nonexistent/satm\"})", &["/nonexistent/satm"]),
    ("utkface", "utkface(#{root: \"/nonexistent/satm\", size: 0})", &["size"]),
    ("utkface", "utkface(#{root: \"/nonexistent/satm\", size: -1})", &["size"]),
    ("utkface", "utkface(#{root: \"/nonexistent/satm\", size: 100000})", &["size"]),
    ("utkface", "utkface(#{limit: 0})", &["limit"]),
    ("utkface", "utkface(#{mapping: \"x\"})", &["mapping"]),
    ("utkface", "utkface(#{resize: \"y\"})", &["resize"]),
    ("utkface", "utkface(#{task: \"race\"})", &["task"]),
    ("adience", "adience(#{root: \"/nonexistent/satm\"})", &["/nonexistent/satm"]),
    ("adience", "adience(#{faces: \"all\"})", &["faces"]),
    ("image_folder", "image_folder(#{})", &["root", "required"]),
    ("image_folder", "image_folder(#{root: \"/nonexistent/satm\"})", &["/nonexistent/satm"]),
    ("image_folder", "image_folder(#{root: tmp + \"/imgs\", classes: [1, 2]})", &["classes"]),
    ("image_folder", "image_folder(#{root: tmp + \"/imgs\", size: 100000})", &["size"]),
    ("image_folder", "image_folder(#{root: tmp + \"/badimgs\"})", &["bad.png"]),
    ("image_folder", "image_folder(#{root: tmp + \"/emptydir\"})", &[]),
    ("csv_manifest", "csv_manifest(#{})", &["path", "required"]),
    ("csv_manifest", "csv_manifest(#{path: \"/nonexistent/satm.csv\"})", &["/nonexistent/satm.csv"]),
    ("csv_manifest", "csv_manifest(#{path: tmp + \"/bad.csv\"})", &["bad.csv"]),
    ("csv_manifest", "csv_manifest(#{path: tmp + \"/missing_img.csv\"})", &["nothere.png"]),
    // --- models ---
    ("model", "model(\"nope\")", &["nope", "vgg_s"]),
    ("model", "model(\"vgg_s\", #{classes: 0})", &["classes"]),
    ("model", "model(\"vgg_s\", #{classes: -3})", &["classes"]),
    ("model", "model(\"vgg_s\", #{width: -1.0})", &["width"]),
    ("model", "model(\"vgg_s\", #{width: 0.0})", &["width"]),
    ("model", "model(\"vgg_s\", #{width: nan})", &["width"]),
    ("model", "model(\"resnet_s\", #{width: inf})", &["width"]),
    ("model", "model(\"vgg_s\", #{size: -5})", &["size"]),
    ("model", "model(\"vgg_s\", #{size: 1})", &["size"]),
    ("model", "model(\"vgg_s\", #{mean: [1, 2]})", &["3 numbers"]),
    ("model", "model(\"vgg_s\", #{std: [0, 0, 0]})", &["std"]),
    ("model", "model(\"vgg_s\", #{std: [nan, 1, 1]})", &["std"]),
    ("model", "model(\"vgg_s\", #{device: \"cuda:3\"})", &["cuda"]),
    ("model", "model(\"vgg_s\", #{norm: \"x\"})", &["norm"]),
    ("model", "model(\"vgg_s\", #{strict: false})", &["strict"]),
    ("model", "model(\"vgg_s\", #{pretrained: \"/nonexistent/w.safetensors\"})", &["/nonexistent/w.safetensors"]),
    ("model", "model(\"vgg_s\", #{classes: 4, pretrained: tmp + \"/corrupt.safetensors\"})", &["corrupt.safetensors"]),
    ("logits", "m.logits(rand([2, 3]))", &["[2, 3]"]),
    ("logits", "m.logits(rand([2, 1, 16, 16]))", &["[B, 3, H, W]", "[2, 1, 16, 16]"]),
    ("logits", "m.logits(rand([2, 3, 1, 1]))", &[]),
    ("predict", "m.predict(tensor([1, 2]))", &[]),
    ("features", "m.features(zeros([0]))", &[]),
    ("freeze", "m.clone().freeze(\"nope\")", &["nope"]),
    ("unfreeze", "m.clone().unfreeze(\"nope\")", &["nope"]),
    ("load", "m.clone().load(\"/nonexistent/w.safetensors\")", &["/nonexistent/w.safetensors"]),
    ("load", "m.clone().load(tmp + \"/corrupt.safetensors\")", &["corrupt.safetensors"]),
    ("load", "m.clone().load(tmp + \"/other.safetensors\")", &["other.safetensors"]),
    ("load", "m.clone().load(tmp + \"/other.safetensors\", #{strict: 1})", &["strict"]),
    ("save", "m.save(tmp + \"/corrupt.json/w.safetensors\")", &["corrupt.json"]),
    ("save", "m.save(tmp + \"/w.zip\")", &["zip"]),
    ("to", "m.clone().to(\"cuda:9\")", &["cuda"]),
    // --- attacks ---
    ("attack", "attack(\"nope\", m, t, y)", &["nope"]),
    ("attack", "attack(\"fgsm\", [], t, y)", &["empty"]),
    ("attack", "attack(\"fgsm\", [m, 1], t, y)", &["models[1]"]),
    ("attack", "attack(\"fgsm\", \"m\", t, y)", &["model"]),
    ("attack", "attack(\"fgsm\", m, t, y, #{steps: 3})", &["steps"]),
    ("fgsm", "fgsm(m, t, y, #{eps: -0.1})", &["eps"]),
    ("fgsm", "fgsm(m, t, y, #{eps: t})", &["eps", "a number", "Tensor"]),
    ("fgsm", "fgsm(m, t, y, #{eps: 1.5})", &["eps"]),
    ("fgsm", "fgsm(m, t, y, #{eps: nan})", &["eps"]),
    ("fgsm", "fgsm(m, t, y, #{eps: inf})", &["eps"]),
    ("fgsm", "fgsm(m, t, y, #{seed: -1})", &["seed"]),
    ("pgd", "pgd(m, t, y, #{steps: 0})", &["steps"]),
    ("pgd", "pgd(m, t, y, #{step: -0.1})", &["step"]),
    ("pgd", "pgd(m, t, y, #{restarts: 0})", &["restarts"]),
    ("r_step_ll", "r_step_ll(m, t, y, #{alpha: 0.5, eps: 0.1})", &["alpha"]),
    ("r_step_ll", "r_step_ll(m, t, y, #{alpha: -0.1})", &["alpha"]),
    ("r_step_ll", "r_step_ll(m, t, y, #{target: \"x\"})", &["target"]),
    ("attack", "attack(\"mi_fgsm\", m, t, y, #{momentum: nan})", &["momentum"]),
    ("square", "square(m, t, y, #{queries: 0})", &["queries"]),
    ("square", "square(m, t, y, #{p_init: 2.0})", &["p_init"]),
    ("apgd", "apgd(m, t, y, #{loss: \"zz\"})", &["loss"]),
    ("apgd", "apgd(m, t, y, #{loss: 3})", &["loss"]),
    ("apgd", "apgd(model(\"vgg_s\", #{classes: 2, width: 0.125}), t, y, #{loss: \"dlr\", steps: 1})", &["classes"]),
    ("apgd", "apgd(m, t, y, #{targets: 0, loss: \"dlr\"})", &["targets"]),
    ("fgsm", "fgsm(m, rand([2, 3]), y)", &["[2, 3]"]),
    ("fgsm", "fgsm(m, t, tensor([0, 1, 2]))", &["y has shape [3]"]),
    ("fgsm", "fgsm(m, t, tensor([0, 9]))", &["9"]),
    ("fgsm", "fgsm(m, t, tensor([0, -1]))", &["-1"]),
    ("fgsm", "fgsm(m, t, rand([2]))", &["integer"]),
    ("fgsm", "fgsm(m, t, tensor([[0, 1]]))", &["y has shape [1, 2]"]),
    ("fgsm", "fgsm(m, t * 3.0, y)", &["[0, 1]"]),
    ("fgsm", "fgsm(m, t - 1.0, y)", &["[0, 1]"]),
    ("square", "square(m, t, y, #{queries: 1, eps: nan})", &["eps"]),
    ("describe_attack", "describe_attack(\"fgsm\", #{eps: -1})", &["eps"]),
    ("describe_attack", "describe_attack(\"zz\", #{})", &["zz"]),
    ("save_adversarial_grid", "save_adversarial_grid(\"\", t, t, y, y)", &["path"]),
    ("save_adversarial_grid", "save_adversarial_grid(tmp + \"/g.png\", t, rand([3, 3, 16, 16]), y, y)", &[]),
    ("save_adversarial_grid", "save_adversarial_grid(tmp + \"/g.png\", t, t, tensor([0]), y)", &[]),
    ("save_adversarial_grid", "save_adversarial_grid(tmp + \"/g.png\", t, t, y, y, [1, 2])", &["class_names[0]"]),
    ("save_adversarial_grid", "save_adversarial_grid(tmp + \"/corrupt.json/g.png\", t, t, y, y)", &["corrupt.json"]),
    ("save_adversarial_grid", "save_adversarial_grid(tmp + \"/g.png\", rand([2, 3]), rand([2, 3]), y, y)", &[]),
    // --- training ---
    ("train", "train(mt, d, #{steps: 0, epochs: 0, batch: 4, progress: false})", &["steps"]),
    ("train", "train(mt, d, #{steps: 1, batch: 0, progress: false})", &["batch"]),
    ("train", "train(mt, d, #{steps: 1, batch: 4, lr: -1.0, progress: false})", &["lr"]),
    ("train", "train(mt, d, #{steps: 1, batch: 4, lr: nan, progress: false})", &["lr"]),
    ("train", "train(mt, d, #{steps: 1, batch: 4, lr: inf, progress: false})", &["lr"]),
    ("train", "train(mt, d, #{steps: 1, optimizer: \"x\", progress: false})", &["optimizer"]),
    ("train", "train(mt, d, #{steps: 1, lr_schedule: t, progress: false})", &["lr_schedule", "Tensor"]),
    ("satm", "satm(#{nets: [mt], frozen: [m2], data: d, steps: 1, lambda: t})", &["lambda", "Tensor"]),
    ("satm", "satm(#{nets: [mt, m], data: d, steps: 1, sources: t})", &["sources", "Tensor"]),
    ("train", "train(mt, d, #{steps: 1, lr_schedule: \"x\", progress: false})", &["lr_schedule"]),
    ("train", "train(mt, d, #{steps: 1, lr_schedule: #{every: 0}, progress: false})", &["every"]),
    ("train", "train(mt, d, #{steps: 1, lr_schedule: #{evry: 2}, progress: false})", &["evry"]),
    ("train", "train(mt, d, #{steps: 1, momentum: -0.5, progress: false})", &["momentum"]),
    ("train", "train(mt, d, #{steps: 1, weight_decay: -1.0, progress: false})", &["weight_decay"]),
    ("train", "train(mt, d, #{steps: 1, val: 3, progress: false})", &["val"]),
    ("train", "train(mt, d, #{steps: 1, name: \"../x\", progress: false})", &["name"]),
    ("train", "train(mt, d, #{steps: 1, resume: \"/nonexistent/run\", progress: false})", &["/nonexistent/run"]),
    ("train", "train(mt, d, #{steps: 1, config: \"nope\", progress: false})", &["nope"]),
    ("train", "train(mt, d, #{steps: 1, config: tmp + \"/bad.ron\", progress: false})", &["bad.ron", "steps"]),
    ("train", "train(mt, d, #{steps: 1, guard: 3, progress: false})", &["guard"]),
    ("train", "train(mt, d, #{steps: 1, guard: #{pgd_steps: 0}, progress: false})", &["pgd_steps"]),
    ("train", "train(mt, d, #{steps: 1, guard: #{drop: nan}, progress: false})", &["drop"]),
    ("train", "train(mt, d, #{steps: 1, precision: \"x\", progress: false})", &["precision"]),
    ("train", "train(mt, d, #{steps: 1, seed: -1, progress: false})", &["seed"]),
    (
        "train",
        "train(model(\"vgg_s\", #{classes: 2, width: 0.125}), d, #{steps: 1, batch: 4, progress: false})",
        &["classes"],
    ),
    ("train", "train(\"mt\", d)", &[]),
    ("satm", "satm(#{})", &["data"]),
    ("satm", "satm(#{data: d})", &["nets"]),
    ("satm", "satm(#{nets: [mt], data: d, steps: 1, batch: 4, progress: false})", &["source"]),
    ("satm", "satm(#{nets: [mt, mt], data: d, steps: 1, batch: 4, progress: false})", &["same model"]),
    ("satm", "satm(#{nets: [1], data: d})", &["nets[0]"]),
    ("satm", "satm(#{nets: [mt], frozen: [mt], data: d, steps: 1})", &["both"]),
    ("satm", "satm(#{nets: [mt], frozen: [m2], data: 3})", &["data"]),
    ("satm", "satm(#{nets: [mt], frozen: [m2], data: d, steps: 1, r_adv: -1.0})", &["r_adv"]),
    ("satm", "satm(#{nets: [mt], frozen: [m2], data: d, steps: 1, r_da: nan})", &["r_da"]),
    ("satm", "satm(#{nets: [mt], frozen: [m2], data: d, steps: 1, eps: 2.0})", &["eps"]),
    ("satm", "satm(#{nets: [mt], frozen: [m2], data: d, steps: 1, eps: 0.1, alpha: 0.5})", &["alpha"]),
    ("satm", "satm(#{nets: [mt], frozen: [m2], data: d, steps: 1, attack: \"nope\"})", &["nope"]),
    ("satm", "satm(#{nets: [mt, m], data: d, steps: 1, sources: [[5], [0]]})", &["sources"]),
    ("satm", "satm(#{nets: [mt, m], data: d, steps: 1, sources: \"x\"})", &["sources"]),
    ("satm", "satm(#{nets: [mt, m], data: d, steps: 1, sources: [[0], [1]]})", &["sources"]),
    ("satm", "satm(#{nets: [mt], frozen: [m2], data: d, steps: 1, lambda: \"x\"})", &["lambda"]),
    ("satm", "satm(#{nets: [mt], frozen: [m2], data: d, steps: 1, da_hidden: -1})", &["da_hidden"]),
    (
        "satm",
        "satm(#{nets: [mt], frozen: [model(\"vgg_s\", #{classes: 3, width: 0.125})], data: d, steps: 1})",
        &["classes"],
    ),
    // --- evaluation ---
    ("evaluate", "evaluate(m, d, #{batch: 0})", &["batch"]),
    ("evaluate", "evaluate(m, d, #{seed: -1})", &["seed"]),
    ("evaluate", "evaluate(m, d, #{sources: m2})", &["attack"]),
    ("evaluate", "evaluate(m, d, #{attack: \"fgsm\", sources: 3})", &["sources"]),
    ("evaluate", "evaluate(m, d, #{attack: \"fgsm\", eps: -1.0})", &["eps"]),
    ("evaluate", "evaluate(m, d, #{eps: 0.1})", &["attack"]),
    ("evaluate", "evaluate(model(\"vgg_s\", #{classes: 2, width: 0.125}), d)", &["classes"]),
    (
        "evaluate",
        "evaluate(m, d, #{attack: \"fgsm\", sources: model(\"vgg_s\", #{classes: 2, width: 0.125})})",
        &["classes"],
    ),
    ("transfer_matrix", "transfer_matrix(#{})", &["sources"]),
    ("transfer_matrix", "transfer_matrix(#{sources: [m]})", &["targets"]),
    ("transfer_matrix", "transfer_matrix(#{sources: [m], targets: [m]})", &["data"]),
    ("transfer_matrix", "transfer_matrix(#{sources: [], targets: [m], data: d})", &["sources"]),
    ("transfer_matrix", "transfer_matrix(#{sources: [m], targets: [], data: d})", &["targets"]),
    ("transfer_matrix", "transfer_matrix(#{sources: [m], targets: [m], data: d, metric: \"x\"})", &["metric"]),
    ("eps_sweep", "eps_sweep(m, d, #{eps: [-1.0]})", &["eps"]),
    ("eps_sweep", "eps_sweep(m, d, #{eps: [nan]})", &["eps"]),
    ("eps_sweep", "eps_sweep(m, d, #{eps: \"x\"})", &["eps"]),
    ("eps_sweep", "eps_sweep(m, d, #{eps: []})", &["eps"]),
    ("table_eps", "table_eps([], d, #{})", &["models"]),
    ("table_eps", "table_eps([1], d, #{})", &["models[0]"]),
    ("table_eps", "table_eps([m], d, #{eps: [2.0]})", &["eps"]),
    ("table_eps", "table_eps([m], d, #{eps: []})", &["eps"]),
    ("table_white_box", "table_white_box([1], [2])", &["before[0]"]),
    ("table_white_box", "table_white_box([ev], [])", &["before", "after"]),
    ("table_white_box", "table_white_box([#{}], [#{}])", &["accuracy"]),
    ("table_white_box", "table_white_box([[]], [[]])", &["empty"]),
    ("table_black_box", "table_black_box(3, [ev])", &["before"]),
    ("table_transfer", "table_transfer([ev], [#{accuracy: \"x\", one_off: 0.5}])", &["accuracy"]),
    ("table_holdout", "table_holdout(#{A: 3})", &["A"]),
    ("table_holdout", "table_holdout(#{A: [ev], B: []})", &["rows"]),
    ("table_holdout", "table_holdout(#{A: [ev]}, #{order: [\"Z\"]})", &["Z"]),
    ("robust_eval", "robust_eval(m, d, #{eps: -1.0, limit: 2})", &["eps"]),
    ("robust_eval", "robust_eval(m, d, #{steps: 0, limit: 2})", &["steps"]),
    ("robust_eval", "robust_eval(m, d, #{batch: 0, limit: 2})", &["batch"]),
    ("robust_eval", "robust_eval(m, d, #{limit: -1})", &["limit"]),
    ("robust_eval", "robust_eval(m, d, #{seed: -1, limit: 2})", &["seed"]),
    ("masking_report", "masking_report(m, d, #{eps_factors: [], limit: 2})", &["eps_factors"]),
    ("masking_report", "masking_report(m, d, #{eps_factors: [-1.0], limit: 2})", &["eps_factors"]),
    ("masking_report", "masking_report(m, d, #{tolerance: -1.0, limit: 2})", &["tolerance"]),
    ("masking_report", "masking_report(m, d, #{source: 3, limit: 2})", &["source"]),
    ("masking_report", "masking_report(m, d, #{batch: 0, limit: 2})", &["batch"]),
    ("masking_report", "masking_report(m, d, #{limit: -2})", &["limit"]),
    // --- tables and plots ---
    ("add_row", "tb.add_row([1, 2, 3])", &["3"]),
    ("add_row", "tb.add_row([t, 1])", &["cell 0"]),
    ("add_row", "tb.add_row([#{x: 1}, 1])", &["cell 0"]),
    ("add_row", "tb.add_row([#{type: \"zzz\"}, 1])", &["cell 0"]),
    ("add_row", "tb.add_row([#{rate: \"x\"}, 1])", &["rate"]),
    ("cell", "tb.cell(99, 0)", &["99"]),
    ("cell", "tb.cell(0, \"nope\")", &["nope"]),
    ("cell", "tb.cell(-1, 0)", &["-1"]),
    ("cell", "tb.cell(0, -1)", &["-1"]),
    ("rate", "rate(nan)", &["rate"]),
    ("rate", "rate(1.5)", &["[0, 1]"]),
    ("change", "change(\"a\", 0.5)", &[]),
    ("change", "change(0.5, #{})", &[]),
    ("change", "change(0.5, nan)", &[]),
    ("load_table", "load_table(\"/nonexistent/t.json\")", &["/nonexistent/t.json"]),
    ("load_table", "load_table(tmp + \"/corrupt.json\")", &["corrupt.json"]),
    ("merge_folds", "merge_folds([])", &[]),
    ("merge_folds", "merge_folds([1])", &["tables[0]"]),
    ("merge_folds", "merge_folds([tb, table(\"u\", [\"z\"])])", &[]),
    ("mean_std", "mean_std([])", &[]),
    ("mean_std", "mean_std([\"a\"])", &["numbers"]),
    ("mean_std", "mean_std([1.0, nan])", &["nan"]),
    ("save", "tb.save(tmp + \"/corrupt.json/t.md\")", &["corrupt.json"]),
    ("save", "tb.save(\"\")", &[]),
    ("record", "record(\"x\", tb); record(\"\", 1)", &["name"]),
    ("plot_curves", "plot_curves(3, tmp + \"/c.png\")", &["History"]),
    ("plot_curves", "plot_curves(h, tmp + \"/c.png\", #{width: 0})", &["32"]),
    ("plot_curves", "plot_curves(h, tmp + \"/c.png\", #{width: 4294967396})", &["width"]),
    ("plot_curves", "plot_curves(h, tmp + \"/c.png\", #{nets: [\"zz\"]})", &["zz"]),
    ("plot_curves", "plot_curves(h, tmp + \"/corrupt.json/c.png\")", &["corrupt.json"]),
    ("plot_eps", "plot_eps(#{}, tmp + \"/e.png\")", &[]),
    ("plot_eps", "plot_eps([[1]], tmp + \"/e.png\")", &["series 0"]),
    ("plot_eps", "plot_eps(#{a: [[nan, 0.5]]}, tmp + \"/e.png\")", &[]),
    ("plot_eps", "plot_eps(#{eps: [0.1], accuracy: []}, tmp + \"/e.png\")", &["1 eps"]),
    ("plot_confusion", "plot_confusion([[1, 2]], tmp + \"/k.png\")", &[]),
    ("plot_confusion", "plot_confusion([], tmp + \"/k.png\")", &[]),
    ("plot_confusion", "plot_confusion([[-1]], tmp + \"/k.png\")", &["non-negative"]),
    ("plot_confusion", "plot_confusion(#{}, tmp + \"/k.png\")", &["confusion"]),
    ("plot_confusion", "plot_confusion(ev, tmp + \"/k.png\", #{labels: [\"a\"]})", &["labels"]),
    ("plot_confusion", "plot_confusion(ev, tmp + \"/corrupt.json/k.png\")", &["corrupt.json"]),
];

/// Bad files the targeted cases read.
fn write_bad_files(fx: &Fx) {
    let p = |n: &str| PathBuf::from(fx.path(n));
    std::fs::write(p("corrupt.safetensors"), b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage").unwrap();
    std::fs::write(p("corrupt.ot"), b"PK\x03\x04 this is not a torch archive").unwrap();
    std::fs::write(p("corrupt.json"), b"{\"title\": 3").unwrap();
    std::fs::write(p("bad.ron"), b"(\n    steps: \"many\",\n)\n").unwrap();
    std::fs::write(p("bad.csv"), b"path,label\na.png\n").unwrap();
    std::fs::write(p("missing_img.csv"), b"path,label\nnothere.png,0\n").unwrap();
    for (dir, ok) in [("imgs", true), ("badimgs", false)] {
        for class in ["a", "b"] {
            let d = p(dir).join(class);
            std::fs::create_dir_all(&d).unwrap();
            if ok {
                image::RgbImage::from_pixel(8, 8, image::Rgb([class.len() as u8 * 50, 0, 0]))
                    .save(d.join("x.png"))
                    .unwrap();
            } else {
                std::fs::write(d.join("bad.png"), b"not a png").unwrap();
            }
        }
    }
    std::fs::create_dir_all(p("emptydir")).unwrap();
    // Weights of another architecture: a strict load must name what does not fit.
    let code = format!("model(\"resnet_s\", #{{classes: 4, width: 0.125}}).save(\"{}\")", fx.path("other.safetensors"));
    if let Outcome::Err(e) | Outcome::Panic(e) = fx.eval(&code) {
        panic!("writing other.safetensors: {e}");
    }
}

#[test]
fn targeted_bad_inputs_are_clear_errors() {
    let fx = setup();
    write_bad_files(&fx);
    let mut rep = Report::default();
    for (func, code, want) in TARGETED {
        rep.expect_err(&fx, func, code, want);
    }
    rep.finish("targeted cases");
}

#[test]
fn getters_and_printing_never_panic() {
    let fx = setup();
    let mut rep = Report::default();
    let getters: &[(&str, &[&str])] = &[
        ("t", &["shape", "dtype", "device", "numel", "dim"]),
        ("d", &["name", "classes", "num_classes", "size", "labels", "folds", "groups", "paths", "images", "report"]),
        ("e", &["name", "classes", "num_classes", "size", "labels", "folds", "groups", "paths", "images", "report"]),
        ("b", &["x", "y", "idx"]),
        ("m", &["params", "trainable_params", "arch", "classes", "device", "feature_dim", "size", "frozen"]),
        ("r", &["history", "steps", "stopped", "wall_s", "best_step", "dir", "checkpoint", "trainees"]),
        ("tb", &["title", "columns", "notes"]),
        ("h", &["nets", "metrics"]),
    ];
    let all: BTreeSet<&str> = getters.iter().flat_map(|(_, g)| g.iter().copied()).collect();
    for (v, gs) in getters {
        for g in *gs {
            rep.expect_no_panic(&fx, g, &format!("{v}.{g}"));
            if let Outcome::Err(e) = fx.eval(&format!("{v}.{g}")) {
                rep.failures.push(format!("{v}.{g}: {e}"));
            }
        }
        // Every getter name on a value of another type: an error naming the property, or another type's getter.
        for g in &all {
            if !gs.contains(g) {
                rep.expect_no_panic(&fx, g, &format!("{v}.{g}"));
            }
        }
        rep.expect_no_panic(&fx, "to_string", &format!("{v}.to_string() + `${{{v}}}`"));
        rep.expect_no_panic(&fx, "to_debug", &format!("{v}.to_debug()"));
    }
    for (func, code) in [
        ("shape", "\"x\".shape"),
        ("classes", "42.classes"),
        ("to_string", "e.batches(3).to_string()"),
        ("len", "e.batches(3).len()"),
        ("to_string", "zeros([0, 3]).to_string()"),
        ("to_string", "tensor(1.5).to_string()"),
        ("to_array", "zeros([0]).to_array()"),
        ("to_array", "zeros([2, 0]).to_array()"),
        ("to_string", "e.class_counts().to_string()"),
        ("load_summary", "e.load_summary()"),
        ("series", "h.series(\"zz\", \"zz\", \"zz\")"),
        ("last", "h.last(\"zz\", \"zz\", \"zz\")"),
        ("to_string", "h.to_table().to_string()"),
        ("to_string", "r.table().to_string()"),
        ("pgd", "pgd(m, zeros([0, 3, 16, 16]), tensor([]).long(), #{steps: 1})"),
        ("logits", "m.logits(zeros([0, 3, 16, 16]))"),
    ] {
        rep.expect_no_panic(&fx, func, code);
    }
    rep.finish("getters and printing");
}

/// An attack on a model whose logits do not depend on its input (the input is detached, the weights still require
/// grad) says so instead of libtorch's "Expected a proper Tensor but got None".
#[test]
fn attack_on_input_independent_logits_says_so() {
    use satm::core::attacks::{AttackKind, AttackSpec, craft};
    use satm::core::models::Classifier;
    use tch::{Device, Kind, Tensor, nn, nn::Module};
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    struct Detached(#[allow(dead_code)] nn::VarStore, nn::Linear);
    impl Classifier for Detached {
        fn logits_t(&self, x: &Tensor, _train: bool) -> anyhow::Result<Tensor> {
            Ok(self.1.forward(&x.detach().flatten(1, -1)))
        }
        fn num_classes(&self) -> i64 {
            3
        }
        fn device(&self) -> Device {
            Device::Cpu
        }
        fn label(&self) -> String {
            "detached".into()
        }
    }
    let vs = nn::VarStore::new(Device::Cpu);
    let lin = nn::linear(vs.root() / "fc", 3 * 4 * 4, 3, Default::default());
    let net = Detached(vs, lin);
    let x = Tensor::rand([2, 3, 4, 4], (Kind::Float, Device::Cpu));
    // The model's own predictions as labels: every example starts correctly classified, so no attack can finish
    // without a gradient (APGD returns early on examples that are already misclassified).
    let y = net.logits_t(&x, false).unwrap().argmax(-1, false);
    for kind in [AttackKind::Fgsm, AttackKind::Pgd, AttackKind::RStepLl, AttackKind::ApgdCe] {
        let spec = AttackSpec::new(kind).with_budget(8.0 / 256.0, 2);
        let err = craft(&spec, &[&net as &dyn Classifier], &x, &y).err().map(|e| format!("{e:#}"));
        let err = err.unwrap_or_else(|| panic!("{kind:?} succeeded on a model without input gradients"));
        assert!(err.contains("do not depend on the input"), "{kind:?}: {err}");
        assert!(!err.contains("proper Tensor"), "{kind:?}: {err}");
    }
}

/// Inputs that could abort the process rather than unwind (a huge Rust allocation, a corrupt libtorch archive, a
/// huge thread pool) run in a `satm -e` subprocess: it must exit with an error naming the function, not a signal,
/// and not through a panic that guard() caught (SATM_PANIC_BACKTRACE makes the subprocess print caught panics).
#[test]
fn inputs_that_could_abort_run_in_a_subprocess() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.ot");
    std::fs::write(&corrupt, b"PK\x03\x04 this is not a torch archive").unwrap();
    let corrupt = corrupt.display().to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("synthetic", "synthetic(#{n: 100000000000, size: 1024})".into(), "synthetic"),
        ("synthetic", "synthetic(#{n: 4000000, size: 1024})".into(), "synthetic"),
        ("load", format!("model(\"vgg_s\", #{{classes: 4}}).load(\"{corrupt}\")"), "corrupt.ot"),
        ("model", format!("model(\"vgg_s\", #{{pretrained: \"{corrupt}\"}})"), "corrupt.ot"),
        ("model", "model(\"vgg_s\", #{width: 100000.0})".into(), "width"),
        ("model", "model(\"vgg_s\", #{classes: 1000000000000})".into(), "classes"),
        ("threads", "threads(100000000)".into(), "threads"),
        ("arange", "arange(1099511627776)".into(), "arange"),
        ("plot_eps", "plot_eps(#{a: [[0.1, 0.5]]}, \"x.png\", #{width: 1000000, height: 1000000})".into(), "plot_eps"),
    ];
    let mut failures = vec![];
    for (func, code, want) in &cases {
        let out = Command::new(env!("CARGO_BIN_EXE_satm"))
            .args(["--quiet", "--out"])
            .arg(dir.path().join("run"))
            .args(["-e", code])
            .current_dir(dir.path())
            .env("SATM_QUIET", "1")
            .env("SATM_PANIC_BACKTRACE", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if std::env::var_os("SATM_SHOW").is_some() {
            eprintln!("{code}\n    -> {:?} {}", out.status.code(), short(&stderr));
        }
        match out.status.code() {
            None => failures.push(format!("{code}: killed by a signal ({:?}); stderr: {}", out.status, short(&stderr))),
            Some(0) => failures.push(format!("{code}: succeeded; expected an error")),
            Some(_) if stderr.contains("panicked at") => {
                failures.push(format!("{code}: a caught panic (still a bug): {}", short(&stderr)))
            }
            Some(_) if !stderr.contains(func) || !stderr.contains(want) => {
                failures.push(format!("{code}: error lacks '{func}' / '{want}': {}", short(&stderr)))
            }
            Some(_) if unclear(&stderr, func).is_some() => {
                failures.push(format!("{code}: unclear: {}", short(&stderr)))
            }
            Some(_) => {}
        }
    }
    for f in &failures {
        eprintln!("  {f}");
    }
    assert!(failures.is_empty(), "{} of {} subprocess cases failed:\n{}", failures.len(), cases.len(), {
        failures.join("\n")
    });
}

#[test]
fn helpers_parse_signatures_and_option_lists() {
    let s = parse_sig("attack(name: &str, model: Model | Array, x: Tensor) -> Tensor");
    assert_eq!(s.name, "attack");
    assert_eq!(s.params[1], ("model".to_string(), "Model | Array".to_string()));
    assert!(parse_sig("seed() -> int").params.is_empty());
    assert_eq!(with_key("#{a: 1, b: 2}", "a", "t"), "#{b: 2, a: t}");
    assert_eq!(with_key("#{}", "zz", "1"), "#{zz: 1}");
    assert_eq!(valid_keys_in("f: unknown option(s) q; valid options: a, b_c"), vec!["a", "b_c"]);
    assert!(Path::new(env!("CARGO_BIN_EXE_satm")).exists());
}

/// Background runs: a failed run's error comes back from wait() and status(); locked networks, steering that cannot
/// apply and misplaced options are clear errors; the networks are free again once a run ends.
#[test]
fn background_runs_report_failures_locks_and_bad_steering() {
    let fx = setup();
    // Each case returns an array; every element comes back as text.
    let out = |code: &str| -> Vec<String> {
        // `err(f)`: the message of the error `f` raises ("" when none; then f's value).
        let code = format!("fn err(f) {{ let m = \"\"; try {{ m = f.call(); }} catch (e) {{ m = e; }} m }}\n{code}");
        let code = code.as_str();
        let mut scope = fx.scope.clone();
        match fx.engine.eval_with_scope::<rhai::Array>(&mut scope, code) {
            Ok(a) => a.iter().map(|x| x.to_string()).collect(),
            Err(e) => {
                let msg = satm::script::format_error(&e, code, "<case>");
                eprintln!("{msg}");
                panic!("{code}\nfailed: {msg}")
            }
        }
    };
    let v = out(r#"
        let f = train(m2, d, #{steps: 1, batch: 4, resume: "/nonexistent/run", background: true, name: "bad"});
        let msg = err(|| { f.wait(); "no error" });
        [msg, f.status().state, predict(m2, t).shape[0]]"#);
    assert!(v[0].contains("background run bad failed") && v[0].contains("/nonexistent/run"), "{v:?}");
    assert_eq!(&v[1..], ["failed", "2"], "{v:?}");

    let v = out(r#"
        let g = train(m2, d, #{steps: 1000000, batch: 4, background: true, threads: 1, name: "g"});
        let e1 = err(|| { g.set(#{r_adv: 1.0}); "" });
        let e2 = err(|| { g.set(#{lr: -1.0}); "" });
        let e3 = err(|| { g.set(#{lr: 0.01}); "queued" });
        let e4 = err(|| { train(m2, d, #{steps: 1}); "" });
        let e5 = err(|| { save(m2, tmp + "/x.safetensors"); "" });
        let e6 = err(|| { train(m, d, #{steps: 1, threads: 2}); "" });
        let e7 = err(|| { train(m, d, #{steps: 1, batch: 4, background: true, name: "g"}); "" });
        g.pause();
        let e8 = err(|| { g.wait(); "" });
        let r2 = g.stop();
        [e1, e2, e3, e4, e5, e6, e7, r2.stopped, g.status().state, predict(m2, t).shape[0], e8]"#);
    let parts = &v;
    assert_eq!(parts.len(), 11, "{v:?}");
    assert!(parts[10].contains("is paused and would never end"), "{v:?}");
    assert!(parts[0].contains("only lr can be set"), "{v:?}");
    assert!(parts[1].contains("lr must be > 0, got -1"), "{v:?}");
    assert_eq!(parts[2], "queued");
    assert!(parts[3].contains("is being trained by background run g; use run.snapshot()"), "{v:?}");
    assert!(parts[4].contains("save") && parts[4].contains("background run g"), "{v:?}");
    assert!(parts[5].contains("'threads' is for background runs"), "{v:?}");
    assert!(parts[6].contains("background run named g is still going"), "{v:?}");
    assert_eq!(&parts[7..10], ["stopped", "stopped", "2"], "{v:?}");

    let v = out(r#"
        let h = satm(#{nets: [m2], frozen: [m], data: d, steps: 1000000, batch: 4, r_da: 0.0, background: true,
                       threads: 1, name: "h"});
        let e1 = err(|| { h.set(#{r_da: 0.5}); "" });
        let e2 = err(|| { predict(m, t); "" });
        let e3 = err(|| { h.set(#{alpha: 1.0}); "" });
        let e4 = err(|| { h.set(#{eps: 2.0}); "" });
        h.stop();
        [e1, e2, e3, e4, predict(m, t).shape[0]]"#);
    let parts = &v;
    assert_eq!(parts.len(), 5, "{v:?}");
    assert!(parts[0].contains("started with r_da = 0"), "{v:?}");
    assert!(parts[1].contains("is a frozen source of background run h"), "{v:?}");
    assert!(parts[2].contains("alpha must be in [0, eps], got 1"), "{v:?}");
    assert!(parts[3].contains("eps is in [0,1] pixel units"), "{v:?}");
    assert_eq!(parts[4], "2", "{v:?}");
}

// ---------------------------------------------------------------- the metadata sweep

/// One registered function as rhai's metadata describes it: name and parameter types.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Registered {
    name: String,
    types: Vec<String>,
    params: Vec<String>,
}

/// Every function the engine has registered beyond Rhai's standard packages (satm's functions, methods, property
/// getters and setters, indexers and operators), from `Engine::gen_fn_metadata_to_json`.
fn registered(engine: &Engine) -> Vec<Registered> {
    let json: serde_json::Value = serde_json::from_str(&engine.gen_fn_metadata_to_json(false).unwrap()).unwrap();
    let mut out: Vec<Registered> = json["functions"]
        .as_array()
        .expect("metadata lists functions")
        .iter()
        .map(|f| Registered {
            name: f["name"].as_str().unwrap().to_string(),
            types: f["params"]
                .as_array()
                .map(|ps| ps.iter().map(|p| plain_type(p["type"].as_str().unwrap_or("?"))).collect())
                .unwrap_or_default(),
            params: f["params"]
                .as_array()
                .map(|ps| ps.iter().map(|p| p["name"].as_str().unwrap_or("").to_string()).collect())
                .unwrap_or_default(),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `&mut Tensor` / `&str` / `ImmutableString` / `i64` → the type's sample key.
fn plain_type(t: &str) -> String {
    let t = t.trim().trim_start_matches("&mut ").trim_start_matches('&').trim();
    match t {
        "str" | "String" | "ImmutableString" | "string" => "string".into(),
        "i64" | "INT" => "int".into(),
        "f64" | "FLOAT" => "float".into(),
        "rhai::Map" | "Map" | "map" => "Map".into(),
        "rhai::Array" | "Array" | "Vec<Dynamic>" | "array" => "Array".into(),
        "rhai::Dynamic" | "Dynamic" | "?" | "" => "Dynamic".into(),
        other => other.rsplit("::").next().unwrap_or(other).to_string(),
    }
}

/// Sample arguments per parameter type, the first a valid value: fixtures of the scope and literals. Types this
/// table does not know get samples from the values the sweep's own calls return (a new type of another domain is
/// swept once some function returns one).
fn samples(func: &str, ty: &str) -> Option<Vec<String>> {
    let v: Vec<&str> = match ty {
        "Tensor" => vec!["t", "y", "zeros([0])", "rand([3])", "t.max()"],
        "int" => vec!["1", "0", "-1", "1099511627776"],
        "float" => vec!["0.5", "0.0", "nan", "-inf"],
        // A string may be a path that a function writes to: under the test's temporary directory.
        "string" => vec!["tmp + \"/x\"", "\"\""],
        "Map" => vec![base_opts(func), "#{zz_bogus: 1}"],
        "Array" => vec!["[]", "[1, 2]", "[t, t]", "[m, m2]", "[\"x\"]"],
        "bool" => vec!["true", "false"],
        "Model" => vec!["m"],
        "Model|Array" | "Model | Array" => vec!["m", "[m, m2]", "[]", "[1]"],
        "Dataset" => vec!["d", "e"],
        "Table" => vec!["tb"],
        "History" => vec!["h"],
        "Batches" => vec!["bs"],
        "Batch" => vec!["b"],
        "TrainResult" => vec!["r"],
        "Run" => vec!["run"],
        "Watcher" => vec!["w"],
        "Confusion" => vec!["confusion([0, 1, 2, 2], [0, 2, 2, 1], #{classes: 3})"],
        "char" => vec!["'x'"],
        "()" => vec!["()"],
        "Dynamic" => vec!["0.5", "tmp + \"/y\"", "t", "#{}", "()"],
        _ => return None,
    };
    Some(v.into_iter().map(String::from).collect())
}

const BINARY_OPS: &[&str] = &["+", "-", "*", "/", "%", "**", "==", "!=", "<", ">", "<=", ">=", "&", "|", "^"];

/// The script text that reaches registered function `name` with `args`: operators as operators, `get$p`/`set$p`
/// as properties, `index$get$`/`index$set$` as `[]`, everything else as a call.
fn reach(name: &str, args: &[String]) -> String {
    let paren = |a: &String| format!("({a})");
    if let Some(p) = name.strip_prefix("get$") {
        return format!("{}.{p}", paren(&args[0]));
    }
    if let Some(p) = name.strip_prefix("set$") {
        return format!("let __a = {}; __a.{p} = {}; __a", args[0], args[1]);
    }
    match (name, args.len()) {
        ("index$get$", 2) => format!("{}[{}]", paren(&args[0]), args[1]),
        ("index$set$", 3) => format!("let __a = {}; __a[{}] = {}; __a", args[0], args[1], args[2]),
        ("-" | "!" | "+", 1) => format!("{name}{}", paren(&args[0])),
        (op, 2) if BINARY_OPS.contains(&op) => format!("{} {op} {}", paren(&args[0]), paren(&args[1])),
        _ => call(name, args),
    }
}

/// What an error of `name` must mention so the user sees which function failed.
fn shown_name(name: &str) -> String {
    name.strip_prefix("get$")
        .or_else(|| name.strip_prefix("set$"))
        .map(String::from)
        .unwrap_or_else(|| if name.starts_with("index$") { "index".into() } else { name.to_string() })
}

/// A case that runs longer than this is stopped through satm's Ctrl-C flag (and reported).
const CASE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs one case with a watchdog that requests cancellation after CASE_LIMIT.
fn timed(fx: &Fx, code: &str) -> (Outcome, Option<Dynamic>, bool) {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (d, f) = (done.clone(), fired.clone());
    let dog = std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        while !d.load(std::sync::atomic::Ordering::SeqCst) {
            if t0.elapsed() > CASE_LIMIT {
                f.store(true, std::sync::atomic::Ordering::SeqCst);
                satm::core::cancel::request();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let (o, v) = fx.eval_value(code);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    dog.join().unwrap();
    satm::core::cancel::reset();
    (o, v, fired.load(std::sync::atomic::Ordering::SeqCst))
}

/// Every function rhai's metadata lists (satm's, and whatever other domains register later) is called with sample
/// arguments of its declared types — first all valid, then each argument in turn replaced by the other samples of
/// its type — plus every operator and `[]` on every pair of satm values. No case may panic, not even one that
/// `guard` catches; an error must name the function. Asserts that every registered function was swept and how
/// many cases ran.
#[test]
fn metadata_sweep_calls_every_registered_function_operator_and_indexer() {
    let mut fx = setup();
    write_bad_files(&fx);
    let all = registered(&fx.engine);
    let mut rep = Report::default();
    let mut learned: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut swept: BTreeSet<Registered> = BTreeSet::new();
    let mut seen_codes: BTreeSet<String> = BTreeSet::new();
    let mut stopped: Vec<String> = vec![];
    // Passes: a function whose parameter type has no sample yet waits until some call has returned one.
    for _pass in 0..3 {
        let mut new_values: Vec<(String, Dynamic)> = vec![];
        for f in &all {
            if swept.contains(f) {
                continue;
            }
            let options: Option<Vec<Vec<String>>> = f
                .types
                .iter()
                .zip(&f.params)
                .map(|(t, p)| {
                    let mut o = samples(&f.name, t).or_else(|| learned.get(t).cloned())?;
                    if let Some(v) = override_for(&f.name, p, t) {
                        o.insert(0, v);
                    }
                    Some(o)
                })
                .collect();
            let Some(options) = options else { continue };
            swept.insert(f.clone());
            let base: Vec<String> = options.iter().map(|o| o[0].clone()).collect();
            let mut variants = vec![base.clone()];
            for (i, o) in options.iter().enumerate() {
                for alt in &o[1..] {
                    let mut v = base.clone();
                    v[i] = alt.clone();
                    variants.push(v);
                }
            }
            for args in variants {
                let code = reach(&f.name, &args);
                if !seen_codes.insert(code.clone()) {
                    continue;
                }
                rep.cases += 1;
                let (outcome, value, fired) = timed(&fx, &code);
                if fired {
                    stopped.push(code.clone());
                }
                match outcome {
                    Outcome::Ok(_) => {
                        if let Some(v) = value {
                            let ty = plain_type(fx.engine.map_type_name(v.type_name()));
                            if samples(&f.name, &ty).is_none() && !learned.contains_key(&ty) {
                                new_values.push((ty, v));
                            }
                        }
                    }
                    Outcome::Err(msg) => {
                        let want = shown_name(&f.name);
                        let first = msg.lines().next().unwrap_or("");
                        // Rhai's own dispatch errors for sample types the function does not take name it as well.
                        if !first.to_lowercase().contains(&want.to_lowercase()) && !fired {
                            rep.failures.push(format!("{code}\n    error does not name {want}: {}", short(&msg)));
                        }
                    }
                    Outcome::Panic(p) => rep.failures.push(format!("{code}\n    PANIC: {}", short(&p))),
                }
            }
        }
        if new_values.is_empty() {
            break;
        }
        for (ty, v) in new_values {
            if learned.contains_key(&ty) {
                continue;
            }
            let var = format!("__sample_{}", learned.len());
            fx.scope.push_dynamic(var.clone(), v);
            learned.insert(ty, vec![var]);
        }
    }
    // Operators and indexing on every pair of satm values (registered or not: an unregistered pair is Rhai's
    // "function not found", which must not be a panic either).
    let values = ["t", "y", "m", "d", "e", "tb", "h", "bs", "b", "r", "ev", "1", "0.5", "\"x\"", "[1]", "#{a: 1}"];
    let mut op_cases = 0;
    for a in values {
        for b in values {
            for op in ["+", "-", "*", "/", "==", "!=", "<", ">", "<=", ">="] {
                rep.expect_no_panic(&fx, op, &format!("({a}) {op} ({b})"));
                op_cases += 1;
            }
            for f in ["maximum", "minimum", "max", "min"] {
                rep.expect_no_panic(&fx, f, &format!("{f}({a}, {b})"));
                op_cases += 1;
            }
        }
        for code in [format!("-({a})"), format!("!({a})")] {
            rep.expect_no_panic(&fx, "", &code);
            op_cases += 1;
        }
        for i in ["0", "-1", "99", "1099511627776", "\"x\"", "0.5"] {
            rep.expect_no_panic(&fx, "", &format!("({a})[{i}]"));
            op_cases += 1;
        }
    }
    let missing: Vec<String> = all.iter().filter(|f| !swept.contains(f)).map(|f| format!("{f:?}")).collect();
    eprintln!(
        "metadata sweep: {} registered functions (distinct name and parameter types), {} swept, {} cases \
         ({} operator/indexing), {} types learned from return values, {} cases stopped after {:?}",
        all.len(),
        swept.len(),
        rep.cases,
        op_cases,
        learned.len(),
        stopped.len(),
        CASE_LIMIT
    );
    for s in &stopped {
        eprintln!("  stopped: {s}");
    }
    // The quiet panic hook hides assertion messages: print what is missing first.
    for m in &missing {
        eprintln!("  not swept: {m}");
    }
    for (ty, var) in &learned {
        eprintln!("  type {ty} swept with a value a call returned ({})", var.join(", "));
    }
    assert!(
        missing.is_empty(),
        "{} registered functions were not swept (no sample of a parameter type: add one to samples()):\n{}",
        missing.len(),
        missing.join("\n")
    );
    assert_eq!(swept.len(), all.len());
    // A metadata reader that found next to nothing would sweep nothing: satm registers hundreds of functions.
    assert!(all.len() >= 200, "only {} registered functions in the metadata", all.len());
    assert_eq!(op_cases, values.len() * values.len() * 14 + values.len() * 8);
    rep.finish("metadata sweep");
}
