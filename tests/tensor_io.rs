//! save_tensors / load_tensors against PyTorch: tensors made in satm are read by `safetensors.torch.load_file` and
//! checked there (dtype, shape, values from a formula both sides compute on their own), and tensors saved by
//! `safetensors.torch.save_file` are read by satm and checked here the same way. Plus the errors.
use satm::core::tensorio::{load_tensors, save_tensors};
use std::path::PathBuf;
use std::process::Command;
use tch::{Kind, Tensor};

mod common;

fn python() -> Option<PathBuf> {
    common::venv_python_or_skip("the project venv's python (PyTorch round trip)")
}

/// (name, kind, torch dtype name, shape). Values of element i (row-major): (i * 7 % 23) - 5, cast to the kind
/// (bool: nonzero), so they are exact in every dtype listed.
const CASES: [(&str, Kind, &str, &[i64]); 9] = [
    ("f32", Kind::Float, "float32", &[2, 3, 4]),
    ("bf16", Kind::BFloat16, "bfloat16", &[5, 2]),
    ("f16", Kind::Half, "float16", &[7]),
    ("f64", Kind::Double, "float64", &[3, 1]),
    ("i64", Kind::Int64, "int64", &[4, 4]),
    ("i32", Kind::Int, "int32", &[6]),
    ("u8", Kind::Uint8, "uint8", &[2, 3, 2, 2]),
    ("bool", Kind::Bool, "bool", &[9]),
    ("scalar", Kind::Float, "float32", &[]),
];

fn values(kind: Kind, shape: &[i64]) -> Tensor {
    let n: i64 = shape.iter().product();
    let v = (Tensor::arange(n, (Kind::Int64, tch::Device::Cpu)) * 7).remainder(23) - 5;
    let v = if kind == Kind::Uint8 { v + 5 } else { v };
    let v = if kind == Kind::Bool { v.ne(0) } else { v.to_kind(kind) };
    v.reshape(shape)
}

const PY_CHECK: &str = r#"
import sys, torch
from safetensors.torch import load_file, save_file
cases = [("f32", "float32", [2, 3, 4]), ("bf16", "bfloat16", [5, 2]), ("f16", "float16", [7]), ("f64", "float64", [3, 1]),
         ("i64", "int64", [4, 4]), ("i32", "int32", [6]), ("u8", "uint8", [2, 3, 2, 2]), ("bool", "bool", [9]),
         ("scalar", "float32", [])]
def values(dtype, shape):
    n = 1
    for s in shape: n *= s
    v = torch.arange(n) * 7 % 23 - 5
    if dtype == torch.uint8: v = v + 5
    v = (v != 0) if dtype == torch.bool else v.to(dtype)
    return v.reshape(shape)
if sys.argv[1] == "check":
    d = load_file(sys.argv[2])
    assert sorted(d) == sorted(c[0] for c in cases), sorted(d)
    for name, dt, shape in cases:
        t, dtype = d[name], getattr(torch, dt)
        assert t.dtype == dtype, (name, t.dtype)
        assert list(t.shape) == shape, (name, t.shape)
        assert torch.equal(t, values(dtype, shape)), (name, t)
    print("pytorch checked", len(cases))
else:
    save_file({name: values(getattr(torch, dt), shape).contiguous() for name, dt, shape in cases}, sys.argv[2])
"#;

#[test]
fn round_trips_through_pytorch() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("check.py");
    std::fs::write(&script, PY_CHECK).unwrap();

    // satm -> PyTorch.
    let ours = dir.path().join("from_satm.safetensors");
    let named: Vec<(String, Tensor)> = CASES.iter().map(|c| (c.0.to_string(), values(c.1, c.3))).collect();
    save_tensors(&ours, &named).unwrap();
    let o = Command::new(&py).arg(&script).arg("check").arg(&ours).output().unwrap();
    assert!(o.status.success(), "PyTorch rejected satm's file: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("pytorch checked 9"));

    // PyTorch -> satm.
    let theirs = dir.path().join("from_torch.safetensors");
    let o = Command::new(&py).arg(&script).arg("save").arg(&theirs).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let back = load_tensors(&theirs).unwrap();
    assert_eq!(back.len(), CASES.len());
    for (name, kind, _, shape) in CASES {
        let t = &back.iter().find(|b| b.0 == name).unwrap_or_else(|| panic!("{name} missing")).1;
        assert_eq!(t.kind(), kind, "{name}");
        assert_eq!(t.size(), shape, "{name}");
        assert!(t.equal(&values(kind, shape)), "{name}: {t}");
    }

    // The script functions: a batch made in PyTorch attacked... here, read and written back unchanged.
    let again = dir.path().join("again.safetensors");
    let code = format!(
        "let m = load_tensors({theirs:?}); save_tensors({again:?}, m); let x = m.u8; print(`${{x.dtype}} ${{x.shape}}`);"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_satm")).args(["-e", &code]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("u8 [2, 3, 2, 2]"), "{out}");
    let o = Command::new(&py).arg(&script).arg("check").arg(&again).output().unwrap();
    assert!(o.status.success(), "PyTorch rejected the script's file: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.safetensors");
    let x = vec![("x".to_string(), Tensor::ones([2], (Kind::Float, tch::Device::Cpu)))];
    let err = |r: anyhow::Result<()>| format!("{:#}", r.unwrap_err());
    assert!(err(save_tensors(dir.path(), &x)).contains("is a directory"));
    assert!(err(save_tensors(&p, &[])).contains("no tensors"));
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, b"x").unwrap();
    assert!(err(save_tensors(&blocked.join("sub/t.safetensors"), &x)).contains("t.safetensors"));
    assert!(!p.exists());
    let le = |path: &std::path::Path| format!("{:#}", load_tensors(path).unwrap_err());
    assert!(le(&dir.path().join("none.safetensors")).contains("no such file"));
    std::fs::write(&p, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ").unwrap();
    assert!(le(&p).contains("not a valid safetensors file"), "{}", le(&p));
    // A valid file cut short.
    save_tensors(&p, &x).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
    assert!(le(&p).contains("not a valid safetensors file"), "{}", le(&p));

    // From a script: a value that is not a tensor, and a missing file; the session carries on.
    let o = Command::new(env!("CARGO_BIN_EXE_satm"))
        .args(["-e", &format!("save_tensors({:?}, #{{x: 3}})", p.display().to_string())])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("save_tensors") && e.contains("'x' is not a Tensor"), "{e}");
    let o = Command::new(env!("CARGO_BIN_EXE_satm"))
        .args(["-e", "load_tensors(\"/nonexistent/a.safetensors\")"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("load_tensors") && e.contains("no such file"), "{e}");
}
