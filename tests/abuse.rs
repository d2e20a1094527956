//! Abuse from the prompt, through a real pseudo-terminal as in tests/repl.rs: an endless `loop {}` stopped by
//! Ctrl-C, allocations of terabytes (`zeros([100000, 100000, 100])`, a broadcast that explodes, a dataset too big to
//! hold), runaway recursion, strings and arrays, each an error or a Ctrl-C stop, never an abort; the session keeps its
//! variables throughout. The harness is tests/repl.rs's.
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
fn endless_loops_and_huge_allocations_end_in_errors_and_the_session_keeps_its_variables() {
    let mut r = Repl::start(None);
    r.line("let keep = 41; let t = ones([2]); keep + 1", "42");
    let mut faults = 0;
    // An endless loop with an empty body: Ctrl-C stops it.
    r.keys("loop {}\r");
    std::thread::sleep(Duration::from_millis(500));
    r.send("\x03");
    r.expect("cancelled");
    faults += 1;
    r.line("keep + 1", "42");
    // So does an endless loop inside a function.
    r.keys("fn spin() { let i = 0; while true { i += 1; } }\r");
    r.keys("spin()\r");
    std::thread::sleep(Duration::from_millis(500));
    r.send("\x03");
    r.expect("cancelled");
    faults += 1;
    // Terabytes: refused before libtorch sees them, naming the size and what is available.
    for (input, needle) in [
        ("zeros([100000, 100000, 100])", "zeros: a [100000, 100000, 100] Float tensor needs 3.6 TiB, more than"),
        ("randn([100000, 100000, 100])", "randn: a [100000, 100000, 100] Float tensor needs 3.6 TiB, more than"),
        ("randint(10, [100000, 100000, 100])", "randint: a [100000, 100000, 100] Int64 tensor needs 7.3 TiB"),
        ("ones([1000000, 1]) + ones([1, 1000000])", "+: a [1000000, 1000000] Float tensor needs 3.6 TiB"),
        ("arange(1000000000000)", "arange: a [1000000000000] Int64 tensor needs 7.3 TiB"),
        ("zeros([9223372036854775807, 9223372036854775807])", "would need more bytes than can be counted"),
        ("synthetic(#{n: 100000000, size: 1024})", "synthetic: n = 100000000 images of 1024×1024"),
    ] {
        let out = r.line(input, "^");
        assert!(out.contains(needle), "{input}: {out}");
        assert!(!out.contains("panicked"), "{input}: {out}");
        faults += 1;
    }
    // Runaway recursion, strings and arrays hit the engine's limits.
    for (input, needle) in [
        ("fn down(x) { down(x + 1) } down(0)", "error"),
        ("let s = \"x\"; loop { s += s; }", "Length of string"),
        ("let a = [1]; loop { a += a; }", "Size of array"),
    ] {
        let out = r.line(input, "^");
        assert!(out.contains(needle) && !out.contains("panicked"), "{input}: {out}");
        faults += 1;
    }
    // Everything defined before is still there.
    r.line("keep + 1", "42");
    r.line("t.sum().item()", "2");
    r.keys("\x04");
    assert_eq!(r.exit_code(), 0);
    println!(
        "faults: REPL: {faults} endless loops and oversized allocations ended in errors or Ctrl-C; variables kept; 0 aborts"
    );
}
