//! Abuse from the prompt, through a real pseudo-terminal as in tests/repl.rs: an endless `loop {}` stopped by
//! Ctrl-C, allocations of terabytes (`zeros([100000, 100000, 100])`, a broadcast that explodes, a dataset too big to
//! hold), runaway recursion, strings and arrays, each an error or a Ctrl-C stop, never an abort; the session keeps its
//! variables throughout. The harness is tests/repl.rs's.
mod common;
use common::pty::*;
use std::time::Duration;

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
    assert_eq!(faults, 12);
    println!(
        "faults: REPL: {faults} endless loops and oversized allocations ended in errors or Ctrl-C; variables kept; 0 aborts"
    );
}
