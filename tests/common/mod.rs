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

/// The venv's python (`satm::cli::bench::venv_python`, the one `satm bench` runs) for a check against PyTorch (`needed` says which); when it is missing, `skip_unless_ci`.
#[allow(dead_code)]
pub fn venv_python_or_skip(needed: &str) -> Option<std::path::PathBuf> {
    let p = satm::cli::bench::venv_python();
    if p.is_file() {
        return Some(p);
    }
    skip_unless_ci(needed, &format!("the project venv's python ({}) is missing", p.display()));
    None
}

/// A fresh in-process script session: session state reset, outputs under `dir/run`, no progress bars, a new engine,
/// and a scope holding the constant `tmp` (= `dir`).
#[allow(dead_code)]
pub fn script_session(dir: &std::path::Path) -> (rhai::Engine, rhai::Scope<'static>) {
    satm::script::state::reset();
    satm::script::state::update(|s| {
        s.out_dir = Some(dir.join("run"));
        s.quiet = true;
    });
    let engine = satm::script::new_engine();
    let mut scope = rhai::Scope::new();
    scope.push_constant("tmp", dir.display().to_string());
    (engine, scope)
}

/// Saves `tensors` to a safetensors file, runs the Python source `script` on it with `py` (the venv's python) and
/// returns what it printed; a script that fails fails the test, with its output.
#[allow(dead_code)]
pub fn python_on_tensors(py: &std::path::Path, script: &str, tensors: &[(String, tch::Tensor)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tensors.safetensors");
    satm::core::tensorio::save_tensors(&file, tensors).unwrap();
    let source = dir.path().join("check.py");
    std::fs::write(&source, script).unwrap();
    let o = std::process::Command::new(py).arg(&source).arg(&file).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    out
}
