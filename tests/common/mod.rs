//! Helpers shared by integration tests.
pub mod cli;
pub mod device;
pub mod pty;

/// Whether the tests run under CI (CI=true or CI=1, as tools/test.sh reads it).
#[allow(dead_code)] // each test binary uses a part of it
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A test whose dependency (`needed`) is missing: under CI that fails it; elsewhere it says on stderr that it skipped
/// and why (straight to the handle: a passing test's eprintln! output is captured and never shown).
#[allow(dead_code)]
pub fn skip_unless_ci(needed: &str, why: &str) {
    assert!(!under_ci(), "{needed} is needed under CI: {why}");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("\n*** skipped: {why} ***\n").as_bytes());
}
