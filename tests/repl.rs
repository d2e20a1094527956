//! The `satm>` REPL driven through a pseudo-terminal, as a person would use it: rustyline runs in raw mode with
//! hints and completion, Ctrl-C arrives as a key at the prompt and as SIGINT while a command runs. Every read has a
//! deadline, so a REPL that stops answering fails the test instead of hanging the suite.
mod common;
use common::pty::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn multiline_function_then_errors_keep_the_scope() {
    let mut r = Repl::start(None);
    // A function over three lines: Enter on an unfinished statement continues it.
    r.keys("fn triple(x) {\r");
    r.send("    x * 3\r");
    r.send("}\r");
    r.line("triple(14)", "42");
    r.line("let a = 40; a * 10", "400");
    // An error prints the position, the line and a caret, and the session goes on.
    let err = r.line("let b = a + missing_name;", "^");
    assert!(err.contains("<repl:4>:1:13: error: Variable not found: missing_name"), "{err}");
    assert!(err.contains("1 | let b = a + missing_name;"), "{err}");
    assert!(err.contains(&format!("  | {}^", " ".repeat(12))), "{err}");
    r.line("a + 1", "41");
    // A function defined earlier that fails points at the call and at its own line.
    r.keys("fn shaky(t) {\r  t + zeros([3])\r}\r");
    r.keys("shaky(ones([2]))\r");
    r.expect("<repl:7>:1:1: error: +: The size of tensor a (2) must match the size of tensor b (3)");
    r.expect("^ in call to `shaky`");
    r.expect("--> <repl:6>:2:5");
    r.expect("2 |   t + zeros([3])");
    r.line("triple(a)", "120");
    r.keys("\x04");
    assert_eq!(r.exit_code(), 0);
}

#[test]
fn help_scope_commands_and_completion() {
    let mut r = Repl::start(None);
    r.line(":help zeros", "A float tensor of zeros with the given shape.");
    r.line(":help zerso", "did you mean: zeros");
    r.line(":help", "Functions (:help NAME for one):");
    r.line(":functions max_abs", "1 function(s)");
    r.line(":nonsense", "commands: :help :functions :scope :load :reset :quit");
    r.line("let t = ones([2, 3]); let n = 7; n * 6", "42");
    r.keys(":scope\r");
    r.expect("t  Tensor  Tensor[f32; 2x3; cpu] [1, 1, 1, 1, 1, 1]");
    r.expect("n  i64     7");
    // While a name is typed the hint offers the rest of it with the parameters; inside the call, the signature.
    r.keys("max_abs_d");
    r.expect("max_abs_diff(a: Tensor, b: Tensor) -> float");
    // Tab completes the unique name: without it the call below would be to an unknown `max_abs_d`.
    r.send("\t(");
    r.expect("(   max_abs_diff(a: Tensor, b: Tensor) -> float");
    r.send("tensor([1.0]), tensor([3.5]))\r");
    r.expect("2.5");
    // :load runs a file into the session: its functions and variables stay.
    std::fs::write(r._dir.path().join("lib.rhai"), "fn add_n(x) { x + 35 }\nlet loaded = 7;\n").unwrap();
    r.line(":load lib.rhai", "loaded lib.rhai");
    r.line("add_n(loaded)", "42");
    // Tab completes stdlib module paths; the module imported on one line is still there on the next.
    std::fs::create_dir(r._dir.path().join("stdlib")).unwrap();
    std::fs::write(r._dir.path().join("stdlib/zz_demo.rhai"), "/// Doubles.\nfn twice(x) { 2 * x }\n").unwrap();
    r.keys("import \"stdlib/zz_d\t");
    r.expect("import \"stdlib/zz_demo");
    r.send("\" as demo;\r");
    r.line("demo::twice(21)", "42");
    r.line(":scope", "modules: demo = \"stdlib/zz_demo\"");
    r.line(":reset", "session reset");
    r.line("demo::twice(1)", "error");
    r.line("loaded", "Variable not found: loaded");
    r.keys(":quit\r");
    assert_eq!(r.exit_code(), 0);
}

#[test]
fn ctrl_c_cancels_a_running_command_and_clears_the_prompt() {
    let mut r = Repl::start(None);
    r.line("let before = 5; before * 100", "500");
    r.keys("let i = 0; print(\"looping\"); loop { i += 1; }\r");
    r.expect("looping");
    std::thread::sleep(Duration::from_millis(200));
    r.send("\x03");
    r.expect("cancelled");
    r.line("before * 2", "10");
    // Ctrl-C at the prompt drops the typed line.
    r.keys("let dropped = 1");
    r.expect("dropped = 1");
    r.send("\x03");
    r.line("dropped", "Variable not found: dropped");
    r.keys("\x04");
    assert_eq!(r.exit_code(), 0);
}

#[test]
fn history_is_saved_and_an_unwritable_history_is_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("history.txt");
    let mut r = Repl::start(Some(path.to_str().unwrap()));
    r.line("let remembered = 123; remembered + 1", "124");
    r.keys("fn two_lines() {\r  1\r}\r");
    r.line("two_lines() + 41", "42");
    r.keys("\x04");
    assert_eq!(r.exit_code(), 0);
    let saved = std::fs::read_to_string(&path).expect("history file");
    assert!(saved.contains("let remembered = 123; remembered + 1"), "{saved}");
    assert!(saved.contains("fn two_lines() {"), "{saved}");

    // A history path under a regular file cannot be created: a warning, then a working REPL.
    let blocker = dir.path().join("a_file");
    std::fs::write(&blocker, "x").unwrap();
    let bad = blocker.join("history.txt");
    let mut r = Repl::start(Some(bad.to_str().unwrap()));
    r.expect("history will not be saved");
    r.line("6 * 7", "42");
    r.keys("\x04");
    assert_eq!(r.exit_code(), 0);
}

/// How long the prompt may take to answer a short command while a background run trains (the blocking call would
/// hold it for the whole run: minutes here).
const ANSWER: Duration = Duration::from_secs(1);

/// Tiny synthetic data and two 4-class networks; one thread for the session.
const LIVE_SETUP: &str = "threads(1); seed(1); let d = synthetic(#{n: 64, classes: 4, size: 16, seed: 1}); \
     let a = model(\"vgg_s\", #{classes: 4, width: 0.125}); let b = model(\"vgg_s\", #{classes: 4, width: 0.125}); 7 * 6";

impl Repl {
    /// Evaluates `expr` at the prompt and returns its printed value (typed input is echoed, so the markers are
    /// built by concatenation and never appear in the echo).
    fn value(&mut self, expr: &str) -> String {
        self.ready();
        self.send(&format!("print(\"V\" + \"=\" + ({expr}) + \"|\" + \"E\")\r"));
        self.expect("V=");
        let v = self.expect("|E");
        v.trim_end_matches("|E").to_string()
    }

    /// `value`, asserting that the answer came within `ANSWER`.
    fn quick(&mut self, expr: &str) -> String {
        let t = Instant::now();
        let v = self.value(expr);
        let took = t.elapsed();
        assert!(took < ANSWER, "`{expr}` took {took:?} to answer while a run trains in the background");
        v
    }

    fn step(&mut self, run: &str) -> u64 {
        let v = self.quick(&format!("{run}.status().step"));
        v.trim().parse().unwrap_or_else(|_| panic!("status().step printed {v:?}"))
    }

    /// Polls `expr` until it prints `want` (the run acts at its next step boundary).
    fn until(&mut self, expr: &str, want: &str) {
        let end = Instant::now() + DEADLINE;
        loop {
            let v = self.quick(expr);
            if v == want {
                return;
            }
            assert!(Instant::now() < end, "`{expr}` kept printing {v:?}, never {want:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn background_run_is_steered_from_the_prompt() {
    let mut r = Repl::start(None);
    r.line(LIVE_SETUP, "42");
    // 100000 steps: the run never ends by itself here; it is stopped below.
    r.line(
        "let run = satm(#{nets: [a, b], data: d, steps: 100000, batch: 8, log_every: 2, r_da: 0.1, \
         background: true, threads: 1, name: \"live\"}); run",
        "Run[live:",
    );
    // The prompt answers at once while it trains.
    assert_eq!(r.quick("6 * 7"), "42");
    let s1 = r.step("run");
    std::thread::sleep(Duration::from_millis(1500));
    let s2 = r.step("run");
    assert!(s2 > s1, "the step did not advance: {s1} then {s2}");
    assert_eq!(r.quick("run.status().state"), "running");
    assert_eq!(r.quick("run.status().trainees.len()"), "2");
    // A live history: the curves plot mid-run.
    r.until("run.history.to_string().contains(\"clean_acc\")", "true");
    assert_eq!(r.value("{ plot_curves(run.history, \"mid.png\"); \"plotted\" }"), "plotted");
    assert!(std::fs::metadata(r._dir.path().join("mid.png")).unwrap().len() > 0);

    // The network it trains is locked, with an error naming the run; a snapshot can be used instead.
    let err = r.line("predict(a, rand([1, 3, 16, 16]))", "run.wait()");
    assert!(err.contains("is being trained by background run live; use run.snapshot() for a copy"), "{err}");
    let err = r.line("train(b, d, #{steps: 1})", "run.wait()");
    assert!(err.contains("background run live"), "{err}");
    r.keys("let snaps = run.snapshot();\r");
    assert_eq!(r.quick("snaps.len()"), "2");
    assert_eq!(r.value("predict(snaps[0], rand([3, 3, 16, 16])).shape[0]"), "3");
    assert_eq!(r.quick("run.status().state"), "running");

    // set: applied at the next step boundary, recorded as an event (step, key, old, new).
    assert_eq!(r.quick("{ run.set(#{r_da: 0.3}); \"queued\" }"), "queued");
    r.until("run.events.len()", "1");
    assert_eq!(r.quick("run.events[0].key"), "r_da");
    assert_eq!(r.quick("run.events[0].old"), "0.1");
    assert_eq!(r.quick("run.events[0].value"), "0.3");
    assert_eq!(r.quick("run.status().settings.r_da"), "0.3");
    let err = r.line("run.set(#{r_dx: 1.0})", "r_adv");
    assert!(err.contains("r_dx"), "{err}");

    // pause: the step stays put; resume: it advances again.
    assert_eq!(r.quick("{ run.pause(); \"ok\" }"), "ok");
    r.until("run.status().state", "paused");
    let p1 = r.step("run");
    std::thread::sleep(Duration::from_millis(2000));
    let p2 = r.step("run");
    assert_eq!(p1, p2, "a paused run went on");
    assert_eq!(r.quick("{ run.resume(); \"ok\" }"), "ok");
    r.until(&format!("run.status().step > {p2}"), "true");

    // Ctrl-C stops the foreground command only.
    r.keys("let i = 0; print(\"looping\"); loop { i += 1; }\r");
    r.expect("looping");
    std::thread::sleep(Duration::from_millis(300));
    r.send("\x03");
    r.expect("cancelled");
    let c1 = r.step("run");
    assert_eq!(r.quick("run.status().state"), "running");
    r.until(&format!("run.status().step > {c1}"), "true");

    // A second run at the same time, on its own thread; both advance; :runs lists both.
    r.line(
        "let c = model(\"vgg_s\", #{classes: 4, width: 0.125}); \
         let run2 = train(c, d, #{steps: 100000, batch: 8, background: true, threads: 1, name: \"second\"}); run2",
        "Run[second:",
    );
    r.until("run2.status().step > 2", "true");
    let b1 = r.step("run");
    r.until(&format!("run.status().step > {b1}"), "true");
    r.until("run.status().img_per_s > 0.0", "true");
    r.keys(":runs\r");
    r.expect("live");
    r.expect("running");
    r.expect("second");
    r.expect("running");
    assert_eq!(r.value("run2.stop().stopped"), "stopped");

    // stop: a checkpoint, then the end; the networks are free again.
    r.line("let res = run.stop(); res.stopped", "\"stopped\"");
    assert_eq!(r.quick("run.status().state"), "stopped");
    let rel = r.value("run.dir");
    let dir = r._dir.path().join(rel);
    let latest = dir.join("checkpoints/latest.json");
    assert!(latest.is_file(), "no checkpoint at {}", latest.display());
    let stopped_at: u64 = r.value("res.steps").trim().parse().unwrap();
    let ck: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&latest).unwrap()).unwrap();
    assert_eq!(ck["step"].as_u64(), Some(stopped_at));
    // The event is in metrics.jsonl too.
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let ev: Vec<serde_json::Value> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "set")
        .collect();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        (ev[0]["key"].as_str(), ev[0]["old"].as_f64(), ev[0]["new"].as_f64()),
        (Some("r_da"), Some(0.1), Some(0.3))
    );
    assert_eq!(r.value("predict(a, rand([2, 3, 16, 16])).shape[0]"), "2");
    r.line("run.set(#{lr: 0.1})", "has ended");
    // Quitting stops a run still going, with a checkpoint.
    r.line(
        "let run3 = train(c, d, #{steps: 100000, batch: 8, background: true, threads: 1, name: \"third\"}); run3",
        "Run[third:",
    );
    r.until("run3.status().step > 2", "true");
    let rel3 = r.value("run3.dir");
    let third = r._dir.path().join(rel3);
    r.keys("\x04");
    r.expect("stopping background run third");
    assert_eq!(r.exit_code(), 0);
    assert!(third.join("checkpoints/latest.json").is_file(), "quitting left no checkpoint in {}", third.display());
}

/// A child process killed when the test ends, whatever happens.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn watch_follows_a_run_of_another_process() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("far.rhai");
    std::fs::write(
        &script,
        format!(
            "{}\nsatm(#{{nets: [a, b], data: d, steps: 100000, batch: 8, log_every: 2, r_da: 0.1, name: \"far\", \
             progress: false}});\n",
            LIVE_SETUP.trim_end_matches("7 * 6")
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let dir = out.join("far");
    let mut runner = Proc(
        Command::new(env!("CARGO_BIN_EXE_satm"))
            .args(["run", script.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn satm run"),
    );
    let end = Instant::now() + DEADLINE;
    while std::fs::metadata(dir.join("metrics.jsonl")).map_or(true, |m| m.len() == 0) {
        assert!(runner.0.try_wait().unwrap().is_none(), "satm run ended early");
        assert!(Instant::now() < end, "satm run wrote no metrics within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // In the REPL: a read-only watcher whose status and history follow the other process.
    let mut r = Repl::start(None);
    r.line(&format!("let w = watch(\"{}\"); w", dir.display()), "Watcher[");
    let s1: u64 = r.value("w.status().step").parse().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let s2: u64 = r.value("w.status().step").parse().unwrap();
    assert!(s2 > s1, "the watched step did not advance: {s1} then {s2}");
    assert_eq!(r.value("w.status().state"), "running");
    assert_eq!(r.value("w.status().total"), "100000");
    assert_eq!(r.value("w.status().networks.len()"), "2");
    assert_eq!(r.value("w.status().settings.r_da"), "0.1");
    assert_eq!(r.value("w.history.to_string().contains(\"clean_acc\")"), "true");
    assert_eq!(r.value("{ plot_curves(w.history, \"watched.png\"); \"plotted\" }"), "plotted");
    assert!(std::fs::metadata(r._dir.path().join("watched.png")).unwrap().len() > 0);
    r.line("watch(\"no/such/run\")", "not a directory");

    // satm watch DIR --once: one status and exit.
    let once =
        Command::new(env!("CARGO_BIN_EXE_satm")).args(["watch", dir.to_str().unwrap(), "--once"]).output().unwrap();
    let text = String::from_utf8_lossy(&once.stdout);
    assert!(once.status.success(), "{text}{}", String::from_utf8_lossy(&once.stderr));
    assert!(text.contains("running") && text.contains("/100000 ("), "{text}");

    // satm watch DIR follows until the run ends: Ctrl-C (SIGINT) makes the runner checkpoint and exit.
    let mut follower = Proc(
        Command::new(env!("CARGO_BIN_EXE_satm"))
            .args(["watch", dir.to_str().unwrap(), "--every", "0.2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = follower.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut lines: Vec<String> = vec![];
    while lines.iter().filter(|l| l.starts_with("running")).count() < 2 {
        lines.push(rx.recv_timeout(DEADLINE).unwrap_or_else(|_| panic!("satm watch printed only {lines:?}")));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(runner.0.id() as i32, libc::SIGINT) };
    let code = loop {
        if let Some(s) = runner.0.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < end + DEADLINE, "satm run did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(130));
    while let Ok(l) = rx.recv_timeout(DEADLINE) {
        lines.push(l);
    }
    let status = follower.0.wait().unwrap();
    let all = lines.join("\n");
    assert!(status.success(), "{all}");
    assert!(all.contains("\nended") && all.contains("checkpoint step"), "{all}");
    assert_eq!(r.value("w.status().state"), "ended");
    r.keys("\x04");
    assert_eq!(r.exit_code(), 0);
}
