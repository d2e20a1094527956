//! A bare clone works: `git clone` of this checkout into an empty temporary folder (so no ../shared/data beside it,
//! no $SATM_DATA, no imported data in the home folder) runs the quickstart on the bundled sample. The clone is not
//! built (6+ minutes); the already-built binary runs with SATM_HOME pointing at the clone, as the clone's own
//! build would find itself. Only committed files are in a clone, so this checks what a user would get.
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn git(args: &[&str], dir: &Path) -> Option<std::process::Output> {
    Command::new("git").args(args).current_dir(dir).output().ok()
}

#[test]
fn quickstart_runs_on_a_bare_clone_with_the_bundled_sample() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if git(&["--version"], &src).is_none() || !src.join(".git").exists() {
        common::skip_unless_ci("git and a git checkout", "git or the checkout's .git is not available");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("satm");
    let o = Command::new("git").arg("clone").arg("--quiet").arg(&src).arg(&clone).output().unwrap();
    assert!(o.status.success(), "git clone failed: {}", String::from_utf8_lossy(&o.stderr));
    assert!(!tmp.path().join("shared").exists());
    assert!(clone.join("assets/sample/utkface/utkface_sample.safetensors").is_file(), "the sample is not committed");
    assert!(clone.join("assets/sample/README.md").is_file());

    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let out = tmp.path().join("out");
    let run = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_satm"));
        c.current_dir(&clone)
            .args(args)
            .env_remove("SATM_DATA")
            .env_remove("XDG_DATA_HOME")
            .env("HOME", &home)
            .env("SATM_HOME", &clone)
            .env("SATM_CACHE", tmp.path().join("cache"));
        c.output().unwrap()
    };
    let o = run(&[
        "run",
        "scripts/quickstart.rhai",
        "--set",
        "scale=test",
        "-q",
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "quickstart failed on a bare clone:\n{stdout}\n{stderr}");
    // The one-line note, once, with how to get the full data.
    assert_eq!(stderr.matches("using the bundled sample").count(), 1, "{stderr}");
    assert!(stderr.contains("satm data import utkface"), "{stderr}");
    // The test scale's limit of 160 faces, 5 folds of the sample, 32x32, 8 age groups.
    assert!(stdout.contains("Dataset[utkface; 160 items; 8 classes; 32x32]"), "{stdout}");
    assert!(stdout.contains("Table 4 analog"), "{stdout}");
    for t in ["table4", "clean"] {
        for ext in ["md", "csv", "json"] {
            assert!(out.join(format!("tables/{t}.{ext}")).is_file(), "missing tables/{t}.{ext}");
        }
    }
    let img = image::open(out.join("plots/satm_curves.png")).unwrap();
    assert!(img.width() >= 100 && img.height() >= 100);
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["table4"]["rows"].as_array().map(|r| r.len()), Some(2), "{results}");

    // `satm data list` there shows the sample alone, and `satm info` names it as the data root.
    let o = run(&["data", "list"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(text.starts_with("bundled sample: "), "{text}");
    assert!(text.contains("1500 items (default options)"), "{text}");
    let o = run(&["info", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["data_root"].as_str().map(PathBuf::from), Some(clone.join("assets/sample")));
    // tools/quickstart.sh's last step is this same command; its build step needs nothing beside the clone either.
    let qs = std::fs::read_to_string(clone.join("tools/quickstart.sh")).unwrap();
    assert!(qs.contains("exec target/release/satm run scripts/quickstart.rhai"), "{qs}");
    let code: Vec<&str> = qs.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    assert!(!code.iter().any(|l| l.contains("shared/")), "tools/quickstart.sh must not need ../shared: {qs}");
}
