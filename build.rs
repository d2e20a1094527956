//! Links satm against the libtorch that torch-sys found (the project venv's torch), so that:
//! - the binary runs without LD_LIBRARY_PATH (rpath to libtorch's lib dir);
//! - libtorch_cuda.so stays linked on GPU builds (`--as-needed` would drop it and CUDA would silently vanish);
//! - the small C++ shim (CPU/CUDA autocast, which tch does not expose) is compiled against the same headers.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    println!("cargo:rerun-if-changed=Cargo.lock");
    // `satm info` reports rhai's version: read it from Cargo.lock.
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let rhai = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"rhai\"\n"))
        .and_then(|p| p.lines().find(|l| l.starts_with("version = ")))
        .map(|l| l.trim_start_matches("version = ").trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SATM_RHAI_VERSION={rhai}");
    // torch-sys declares `links = "tch"` and exports its lib dir as DEP_TCH_LIBTORCH_LIB.
    let lib = match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(v) => PathBuf::from(v),
        Err(_) => panic!(
            "torch-sys did not report libtorch's lib dir (DEP_TCH_LIBTORCH_LIB); build through tools/cargo.sh, \
             which sets LIBTORCH_USE_PYTORCH=1 with the project venv first on PATH"
        ),
    };
    // A build for another machine (tools/build_for_device.sh) also searches that machine's libtorch, first.
    println!("cargo:rerun-if-env-changed=SATM_EXTRA_RPATH");
    if let Ok(extra) = std::env::var("SATM_EXTRA_RPATH") {
        for dir in extra.split(':').filter(|d| !d.is_empty()) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    let root = lib.parent().expect("libtorch lib dir has a parent").to_path_buf();
    cc::Build::new()
        .cpp(true)
        .file("csrc/shim.cpp")
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .flag_if_supported("-Wno-c++20-extensions")
        .compile("satm_shim");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
