//! The device the PyTorch cross-checks (tests/bench.rs, tests/train.rs) run on, and where their helper files are:
#![allow(dead_code)] // each test binary uses a part of it
//! `SATM_TEST_DEVICE` = cpu (default), cuda or cuda:N (tools/gpu_check.sh sets it; a CUDA device that is not there
//! fails the test rather than skipping it), and `SATM_REPO` = the repository root when the test binary runs away
//! from the tree it was built in (the device machine gets a copy at another path).
use std::path::PathBuf;
use tch::Device;

/// The device named by SATM_TEST_DEVICE (cpu by default). On CUDA, TF32 is turned off for this process (PyTorch's
/// side turns it off too), so both sides compare fp32 math.
pub fn test_device() -> Device {
    let d = match std::env::var("SATM_TEST_DEVICE").unwrap_or_default().as_str() {
        "" | "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        s => match s.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(i) => Device::Cuda(i),
            None => panic!("SATM_TEST_DEVICE='{s}': use cpu, cuda or cuda:N"),
        },
    };
    if let Device::Cuda(i) = d {
        let n = tch::Cuda::device_count();
        assert!((i as i64) < n, "SATM_TEST_DEVICE asks for cuda:{i} but libtorch sees {n} CUDA device(s)");
        satm::core::amp::set_allow_tf32(false).expect("turning TF32 off");
    }
    d
}

/// A file of the repository: under SATM_REPO when set, else under the tree the test was built from.
pub fn repo_file(rel: &str) -> PathBuf {
    let root = std::env::var_os("SATM_REPO").map(PathBuf::from);
    root.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR"))).join(rel)
}
