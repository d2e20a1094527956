//! The pseudo-terminal harness of the REPL tests (tests/repl.rs, tests/abuse.rs): satm's REPL in raw mode under a
//! real pty, every read with a deadline, so a REPL that stops answering fails the test instead of hanging the suite.
#![allow(dead_code)] // each test binary uses a part of it
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Repl {
    pub master: std::fs::File,
    pub child: Child,
    /// Everything read so far, escape sequences and carriage returns removed.
    pub text: String,
    /// How far `expect` has consumed `text`.
    pub seen: usize,
    /// Line-editor sessions started so far (rustyline turns bracketed paste on as each `readline` begins) and how
    /// many of them were used: input typed before the editor reads it could be lost with the previous editor's buffer.
    pub editors: usize,
    pub editors_used: usize,
    pub _dir: tempfile::TempDir,
}

/// Removes terminal escape sequences (CSI, OSC, two-byte ESC x) and carriage returns.
pub fn strip_ansi(s: &str) -> String {
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
    pub fn start(history: Option<&str>) -> Repl {
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
    pub fn pump(&mut self, wait: Duration) -> bool {
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
    pub fn expect(&mut self, needle: &str) -> String {
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
    pub fn ready(&mut self) {
        let end = Instant::now() + DEADLINE;
        while self.editors <= self.editors_used {
            assert!(Instant::now() < end, "no new prompt; output:\n{}", &self.text[self.seen..]);
            assert!(self.pump(Duration::from_millis(100)), "satm exited; output:\n{}", &self.text[self.seen..]);
        }
        self.editors_used = self.editors;
    }

    pub fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("write to pty");
        self.master.flush().expect("flush pty");
    }

    /// Types a line at the next prompt and waits for `output`.
    pub fn line(&mut self, input: &str, output: &str) -> String {
        self.ready();
        self.send(&format!("{input}\r"));
        self.expect(output)
    }

    /// Types keys at the next prompt.
    pub fn keys(&mut self, keys: &str) {
        self.ready();
        self.send(keys);
    }

    /// Waits for the process to end (reading its output meanwhile, so it never blocks on a full terminal).
    pub fn exit_code(&mut self) -> i32 {
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
