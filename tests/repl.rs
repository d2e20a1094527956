//! The `satm>` REPL driven through a pseudo-terminal, as a person would use it: rustyline runs in raw mode with
//! hints and completion, Ctrl-C arrives as a key at the prompt and as SIGINT while a command runs. Every read has a
//! deadline, so a REPL that stops answering fails the test instead of hanging the suite.
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

struct Repl {
    master: std::fs::File,
    child: Child,
    /// Everything read so far, escape sequences and carriage returns removed.
    text: String,
    /// How far `expect` has consumed `text`.
    seen: usize,
    /// Line-editor sessions started so far (rustyline turns bracketed paste on as each `readline` begins) and how
    /// many of them were used: input typed before the editor reads it could be lost with the previous editor's buffer.
    editors: usize,
    editors_used: usize,
    _dir: tempfile::TempDir,
}

/// Removes terminal escape sequences (CSI, OSC, two-byte ESC x) and carriage returns.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\x1b' => match it.next() {
                Some('[') => {
                    for d in it.by_ref() {
                        if ('\x40'..='\x7e').contains(&d) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(d) = it.next() {
                        if d == '\x07' || (d == '\x1b' && it.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            _ => out.push(c),
        }
    }
    out
}

impl Repl {
    /// Starts `satm` on a new pseudo-terminal (200 columns), with history in a temporary file unless `history` is given.
    fn start(history: Option<&str>) -> Repl {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut master, mut slave) = (0, 0);
        let ws = libc::winsize { ws_row: 50, ws_col: 200, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty writes two fds into the given ints; null name and termios are allowed.
        let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(rc, 0, "openpty failed: {}", std::io::Error::last_os_error());
        // SAFETY: both fds were just opened by openpty and are owned by nobody else.
        let (master, slave) = unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let hist = history.map(str::to_string).unwrap_or_else(|| dir.path().join("history.txt").display().to_string());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_satm"));
        cmd.current_dir(dir.path())
            .env("TERM", "xterm")
            .env("SATM_HISTORY", &hist)
            .env_remove("NO_COLOR")
            .stdin(Stdio::from(slave.try_clone().expect("dup slave")))
            .stdout(Stdio::from(slave.try_clone().expect("dup slave")))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe; the child becomes a session leader whose controlling
        // terminal is the pty, so Ctrl-C typed there reaches it as SIGINT like in a real terminal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn satm");
        drop(cmd); // closes our copies of the slave side, so reads see EOF once the child exits
        // SAFETY: plain fcntl on an fd we own.
        unsafe {
            let fl = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(master.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Repl { master, child, text: String::new(), seen: 0, editors: 0, editors_used: 0, _dir: dir }
    }

    /// Reads what is available within `wait`; false once the terminal is closed.
    fn pump(&mut self, wait: Duration) -> bool {
        let mut pfd = libc::pollfd { fd: self.master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) };
        if n <= 0 {
            return true;
        }
        let mut buf = [0u8; 8192];
        match self.master.read(&mut buf) {
            Ok(0) => false,
            Ok(k) => {
                let raw = String::from_utf8_lossy(&buf[..k]);
                self.editors += raw.matches("\x1b[?2004h").count();
                self.text.push_str(&strip_ansi(&raw));
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(_) => false, // EIO: the child closed the terminal
        }
    }

    /// Waits until `needle` appears after what earlier calls consumed; returns the text up to and including it.
    fn expect(&mut self, needle: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(i) = self.text[self.seen..].find(needle) {
                let got = self.text[self.seen..self.seen + i + needle.len()].to_string();
                self.seen += i + needle.len();
                return got;
            }
            if Instant::now() > end || !self.pump(Duration::from_millis(100)) {
                // One last read for output that raced with the exit.
                while self.pump(Duration::from_millis(50)) && Instant::now() < end + Duration::from_millis(500) {}
                if self.text[self.seen..].contains(needle) {
                    continue;
                }
                panic!(
                    "REPL output never showed {needle:?}; after the last match it printed:\n{}",
                    &self.text[self.seen..]
                );
            }
        }
    }

    /// Waits until a new prompt's line editor is reading (the REPL is idle and raw mode is on).
    fn ready(&mut self) {
        let end = Instant::now() + DEADLINE;
        while self.editors <= self.editors_used {
            assert!(Instant::now() < end, "no new prompt; output:\n{}", &self.text[self.seen..]);
            assert!(self.pump(Duration::from_millis(100)), "satm exited; output:\n{}", &self.text[self.seen..]);
        }
        self.editors_used = self.editors;
    }

    fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("write to pty");
        self.master.flush().expect("flush pty");
    }

    /// Types a line at the next prompt and waits for `output`.
    fn line(&mut self, input: &str, output: &str) -> String {
        self.ready();
        self.send(&format!("{input}\r"));
        self.expect(output)
    }

    /// Types keys at the next prompt.
    fn keys(&mut self, keys: &str) {
        self.ready();
        self.send(keys);
    }

    /// Waits for the process to end (reading its output meanwhile, so it never blocks on a full terminal).
    fn exit_code(&mut self) -> i32 {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                while self.pump(Duration::from_millis(20)) && Instant::now() < end {}
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < end, "satm did not exit; output:\n{}", &self.text[self.seen..]);
            self.pump(Duration::from_millis(50));
        }
    }
}

impl Drop for Repl {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

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
