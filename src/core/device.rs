//! Devices, threads, seeds and precision: what `satm info` reports and what every other module asks.
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tch::Device;

/// Parses `cpu`, `cuda`, `cuda:N` or `auto` (CUDA 0 when present, else CPU). An unavailable CUDA device is an error.
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim().to_ascii_lowercase();
    let dev = match s.as_str() {
        "cpu" => Device::Cpu,
        "auto" => Device::cuda_if_available(),
        "cuda" | "gpu" => Device::Cuda(0),
        _ => match s.strip_prefix("cuda:") {
            Some(n) => match n.parse::<usize>() {
                Ok(i) => Device::Cuda(i),
                Err(_) => bail!("device '{s}': expected cpu, cuda, cuda:N or auto"),
            },
            None => bail!("device '{s}': expected cpu, cuda, cuda:N or auto"),
        },
    };
    if let Device::Cuda(i) = dev {
        let n = tch::Cuda::device_count() as usize;
        if i >= n {
            bail!("device '{s}': this machine has {n} CUDA device(s); use 'cpu' or 'auto'");
        }
    }
    Ok(dev)
}

/// The name scripts and logs use for a device: `cpu`, `cuda:0`.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
    }
}

/// Seeds this thread's random stream (`core::random`: every draw satm makes) and, for anything else in the process
/// that draws from them, libtorch's process-wide CPU and CUDA generators; data shuffling and fold assignment take the
/// same seed explicitly.
pub fn seed_everything(seed: u64) -> Result<()> {
    crate::core::random::seed(seed)?;
    tch::manual_seed(seed as i64);
    if tch::Cuda::is_available() {
        tch::Cuda::manual_seed_all(seed);
    }
    Ok(())
}

/// More intra-op threads than this is a typo, not a machine: libtorch would try to start them all.
pub const MAX_THREADS: usize = 1024;

pub fn set_threads(n: usize) -> Result<()> {
    if !(1..=MAX_THREADS).contains(&n) {
        bail!("threads must be between 1 and {MAX_THREADS}, got {n}");
    }
    tch::set_num_threads(n as i32);
    Ok(())
}

pub fn threads() -> usize {
    tch::get_num_threads() as usize
}

/// What the CPU offers for deep learning, read from /proc/cpuinfo (Linux).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CpuInfo {
    pub model: String,
    pub cores: usize,
    pub avx2: bool,
    pub avx512f: bool,
    pub avx512_bf16: bool,
    pub amx_bf16: bool,
}

pub fn cpu_info() -> CpuInfo {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let flags = field("flags");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    CpuInfo {
        model: field("model name"),
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        avx2: has("avx2"),
        avx512f: has("avx512f"),
        avx512_bf16: has("avx512_bf16"),
        amx_bf16: has("amx_bf16"),
    }
}

/// The numeric precision of network forward/backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Bf16,
    /// bf16 where the hardware runs it fast (CUDA, CPUs with AMX or AVX-512 BF16), else fp32.
    #[default]
    Auto,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" => Ok(Precision::Fp32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "auto" => Ok(Precision::Auto),
            other => bail!("precision '{other}': expected fp32, bf16 or auto"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Auto => "auto",
        }
    }

    /// Whether bf16 autocast is used on `device`, and why.
    pub fn resolve(self, device: Device) -> (bool, String) {
        match self {
            Precision::Fp32 => (false, "fp32 requested".into()),
            Precision::Bf16 => (true, "bf16 requested".into()),
            Precision::Auto => match device {
                Device::Cuda(_) => (true, "CUDA device: bf16 autocast".into()),
                _ => {
                    let c = cpu_info();
                    if c.amx_bf16 {
                        (true, "CPU has AMX-BF16: bf16 autocast".into())
                    } else if c.avx512_bf16 {
                        (true, "CPU has AVX-512 BF16: bf16 autocast".into())
                    } else {
                        (false, "CPU lacks AMX and AVX-512 BF16: bf16 would be slower, using fp32".into())
                    }
                }
            },
        }
    }
}

/// One CUDA device as the driver describes it.
#[derive(Debug, Clone, Serialize)]
pub struct CudaDevice {
    pub index: usize,
    pub name: String,
    pub memory_bytes: u64,
}

/// Names and memory of CUDA devices through the driver API (libcuda), loaded only if present.
pub fn cuda_devices() -> Vec<CudaDevice> {
    let n = tch::Cuda::device_count();
    if n <= 0 {
        return Vec::new();
    }
    let mut out: Vec<CudaDevice> = (0..n as usize)
        .map(|i| CudaDevice { index: i, name: String::from("(name unavailable)"), memory_bytes: 0 })
        .collect();
    unsafe {
        let lib = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if lib.is_null() {
            return out;
        }
        let sym = |name: &std::ffi::CStr| libc::dlsym(lib, name.as_ptr());
        let (init, get, get_name, total) =
            (sym(c"cuInit"), sym(c"cuDeviceGet"), sym(c"cuDeviceGetName"), sym(c"cuDeviceTotalMem_v2"));
        if init.is_null() || get.is_null() || get_name.is_null() || total.is_null() {
            return out;
        }
        let init: extern "C" fn(u32) -> i32 = std::mem::transmute(init);
        let get: extern "C" fn(*mut i32, i32) -> i32 = std::mem::transmute(get);
        let get_name: extern "C" fn(*mut libc::c_char, i32, i32) -> i32 = std::mem::transmute(get_name);
        let total: extern "C" fn(*mut usize, i32) -> i32 = std::mem::transmute(total);
        if init(0) != 0 {
            return out;
        }
        for d in out.iter_mut() {
            let mut handle = 0i32;
            if get(&mut handle, d.index as i32) != 0 {
                continue;
            }
            let mut buf = [0 as libc::c_char; 256];
            if get_name(buf.as_mut_ptr(), buf.len() as i32, handle) == 0 {
                d.name = std::ffi::CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned();
            }
            let mut bytes = 0usize;
            if total(&mut bytes, handle) == 0 {
                d.memory_bytes = bytes as u64;
            }
        }
    }
    out
}

/// Peak resident set size of this process in MiB (Linux getrusage).
pub fn peak_rss_mb() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss as f64 / 1024.0
}
