//! The `satm` binary as a user calls it: `info`, `run FILE --set k=v`, `-e CODE`, and the error messages and exit
//! codes of scripts that fail (position, source line, caret; inside functions and imported modules too).
use std::path::Path;
use std::process::{Command, Output};

/// Runs satm in `dir` with `args`; no progress bars, no user history.
fn satm(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_satm"))
        .args(args)
        .current_dir(dir)
        .env("SATM_QUIET", "1")
        .env("SATM_HISTORY", "")
        .output()
        .expect("run satm")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn info_reports_versions_devices_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let o = satm(dir.path(), &["info"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.starts_with(&format!("satm      {}\n", env!("CARGO_PKG_VERSION"))), "{text}");
    for key in [
        "libtorch  2.",
        "rhai      1.",
        "cpu       ",
        "features  ",
        "cuda      ",
        "threads   ",
        "device    cpu (default)",
        "precision auto",
    ] {
        assert!(text.contains(key), "missing {key:?} in:\n{text}");
    }

    let o = satm(dir.path(), &["info", "--json", "--precision", "fp32", "--threads", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("info --json is JSON");
    assert_eq!(v["satm"], env!("CARGO_PKG_VERSION"));
    assert!(v["libtorch"].as_str().unwrap().starts_with("2."), "{v}");
    assert!(v["rhai"].as_str().unwrap().starts_with("1."), "{v}");
    assert_eq!(v["threads"], 1, "--threads 1 is what info reports");
    assert_eq!(v["precision"], "fp32");
    assert_eq!(v["default_device"], "cpu");
    let cuda = v["cuda_devices"].as_array().expect("cuda_devices is an array");
    assert_eq!(v["cuda_available"].as_bool().unwrap(), !cuda.is_empty(), "{v}");
    assert!(v["cpu"]["cores"].as_u64().unwrap() >= 1);
    for flag in ["avx2", "avx512f", "avx512_bf16", "amx_bf16"] {
        assert!(v["cpu"][flag].is_boolean(), "cpu.{flag} in {v}");
    }
    assert!(matches!(v["auto_precision"].as_str(), Some("bf16" | "fp32")), "{v}");
}

#[test]
fn run_with_set_of_each_type() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("params.rhai"),
        r#"print(`fold ${fold + 1} ${type_of(fold)}`);
print(`scale ${scale * 2.0} ${type_of(scale)}`);
print(`flag ${!flag} ${type_of(flag)}`);
print(`net ${net + "!"} ${type_of(net)}`);
print(`param ${param("fold", 0)} ${param("fold", 0.5)} ${param("absent", 7)} ${param("net", "x")}`);
"#,
    )
    .unwrap();
    let o = satm(
        dir.path(),
        &["run", "params.rhai", "--set", "fold=3", "--set", "scale=2.5", "--set", "flag=true", "--set", "net=vgg16"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "fold 4 i64\nscale 5.0 f64\nflag false bool\nnet vgg16! string\nparam 3 3.0 7 vgg16\n");

    // --set values are constants.
    let o = satm(dir.path(), &["-e", "fold = 2", "--set", "fold=1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Cannot modify constant fold"), "{}", stderr(&o));

    // A key that is not a name is refused before anything runs.
    let o = satm(dir.path(), &["-e", "1", "--set", "2x=1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("'2x' is not a valid name"), "{}", stderr(&o));
}

#[test]
fn eval_prints_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let o = satm(dir.path(), &["-e", "let x = 20; x * 2 + 2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "42\n");
    let o = satm(dir.path(), &["-e", "zeros([2, 3]) + 1"]);
    assert_eq!(stdout(&o), "Tensor[f32; 2x3; cpu] [1, 1, 1, 1, 1, 1]\n");
    let o = satm(dir.path(), &["-e", "[ones([1]), #{k: \"v\"}]"]);
    assert_eq!(stdout(&o), "[Tensor[f32; 1; cpu] [1], #{k: \"v\"}]\n");
    let o = satm(dir.path(), &["-e", "seed(3); seed()", "--set", "unused=1"]);
    assert_eq!(stdout(&o), "3\n");
}

#[test]
fn script_error_shows_position_line_caret_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.rhai"),
        "let a = 1;\nlet b = 2;\nlet c = a + b + nope;\nprint(\"unreachable\");\n",
    )
    .unwrap();
    let o = satm(dir.path(), &["run", "bad.rhai"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "", "nothing after the error runs");
    assert_eq!(
        stderr(&o),
        "bad.rhai:3:17: error: Variable not found: nope\n  |\n3 | let c = a + b + nope;\n  |                 ^\n"
    );

    // A syntax error too.
    std::fs::write(dir.path().join("syntax.rhai"), "let x = (1 + ;\n").unwrap();
    let o = satm(dir.path(), &["run", "syntax.rhai"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("syntax.rhai:1:") && err.contains("error: Syntax error") && err.contains("1 | let x = (1 + ;"),
        "{err}"
    );

    // -e errors follow the same rules.
    let o = satm(dir.path(), &["-e", "let t = ones([2]);\nt.reshape([3])"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("<-e>:2:3: error: reshape: shape '[3]' is invalid for input of size 2"), "{err}");
    assert!(err.contains("2 | t.reshape([3])\n  |   ^"), "{err}");
}

#[test]
fn errors_from_registered_functions_name_the_function() {
    let dir = tempfile::tempdir().unwrap();
    let o = satm(dir.path(), &["-e", "threads(-1)"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "<-e>:1:1: error: threads: threads must be at least 1\n  |\n1 | threads(-1)\n  | ^\n");

    let o = satm(dir.path(), &["-e", "let a = zeros([2]);\nlet b = a + zeros([3]);"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("<-e>:2:11: error: +: The size of tensor a (2) must match the size of tensor b (3)"),
        "{err}"
    );
    assert!(!err.contains("Internal torch error") && !err.contains("frame #"), "{err}");

    let o = satm(dir.path(), &["-e", "device(\"tpu\")"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("<-e>:1:1: error: device: "), "{}", stderr(&o));
}

#[test]
fn errors_inside_functions_and_modules_point_at_the_call_and_inside() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("stdlib")).unwrap();
    std::fs::write(dir.path().join("stdlib/shapes.rhai"), "fn flat(t) {\n    t.reshape([7])\n}\n").unwrap();
    std::fs::write(
        dir.path().join("main.rhai"),
        "import \"stdlib/shapes\" as shapes;\nfn prep(t) {\n  shapes::flat(t)\n}\nlet x = ones([2]);\nprep(x);\n",
    )
    .unwrap();
    let o = satm(dir.path(), &["run", "main.rhai"]);
    assert_eq!(o.status.code(), Some(1));
    let expected = "main.rhai:6:1: error: reshape: shape '[7]' is invalid for input of size 2
  |
6 | prep(x);
  | ^ in call to `prep`
 --> main.rhai:3:11
  |
3 |   shapes::flat(t)
  |           ^ in call to `flat`
 --> stdlib/shapes.rhai:2:7
  |
2 |     t.reshape([7])
  |       ^
";
    assert_eq!(stderr(&o), expected);
}

#[test]
fn missing_script_and_bad_options_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let o = satm(dir.path(), &["run", "no_such_script.rhai"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("no_such_script.rhai: error: cannot read script:"), "{err}");

    let o = satm(dir.path(), &["run", "x.rhai", "--device", "warp9"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("satm: --device: "), "{}", stderr(&o));

    let o = satm(dir.path(), &["-e", "1", "run", "x.rhai"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("-e CODE cannot be combined with a subcommand"), "{}", stderr(&o));

    let o = satm(dir.path(), &["--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--no-such-flag"), "{}", stderr(&o));
}
