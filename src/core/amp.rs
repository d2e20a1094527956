//! bf16 autocast on CPU and CUDA through csrc/shim.cpp (tch exposes neither CPU autocast nor the dtype).
//! Only the forward/backward of networks runs under it: attack perturbations, losses' reductions done by us,
//! and optimizer state stay fp32 (the trainer casts logits to fp32 before the loss).
//! Autocast runs without its weight-cast cache (`torch.autocast(..., cache_enabled=False)`): libtorch's cache is one
//! for the whole process and every thread's exit from autocast empties it, so with it a run's last bits depended on
//! what other threads did (see csrc/shim.cpp); without it they do not, and the step is faster here.
use anyhow::{Result, bail};
use tch::Device;

unsafe extern "C" {
    fn satm_set_autocast(cuda: i32, on: i32) -> i32;
    fn satm_autocast_enabled(cuda: i32) -> i32;
    fn satm_autocast_cache_enabled() -> i32;
}

fn cuda_flag(device: Device) -> i32 {
    matches!(device, Device::Cuda(_)) as i32
}

/// bf16 autocast for `device` while the guard lives; a guard with `on == false` does nothing.
pub struct Autocast {
    device: Device,
    on: bool,
}

impl Autocast {
    pub fn new(device: Device, on: bool) -> Result<Self> {
        if on && unsafe { satm_set_autocast(cuda_flag(device), 1) } != 0 {
            bail!("libtorch refused to enable bf16 autocast on {device:?}");
        }
        Ok(Autocast { device, on })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        if self.on {
            unsafe { satm_set_autocast(cuda_flag(self.device), 0) };
        }
    }
}

/// Runs `f` with bf16 autocast on `device` when `on`.
pub fn with_autocast<T>(device: Device, on: bool, f: impl FnOnce() -> T) -> Result<T> {
    let _g = Autocast::new(device, on)?;
    Ok(f())
}

pub fn is_enabled(device: Device) -> bool {
    unsafe { satm_autocast_enabled(cuda_flag(device)) == 1 }
}

/// Whether libtorch's autocast weight-cast cache is on for this thread (satm turns it off when it enters autocast).
pub fn cast_cache_enabled() -> bool {
    unsafe { satm_autocast_cache_enabled() == 1 }
}

/// channels_last for a 4-D tensor (NHWC strides, NCHW shape), as tch has no memory_format call.
pub fn channels_last(t: &tch::Tensor) -> tch::Tensor {
    if t.dim() == 4 { t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]) } else { t.shallow_clone() }
}

unsafe extern "C" {
    fn satm_set_allow_tf32(on: i32) -> i32;
    fn satm_torch_version() -> *const std::os::raw::c_char;
    fn satm_cudnn_version() -> std::os::raw::c_long;
}

/// TF32 in cuDNN convolutions and CUDA matrix products on or off (process-wide, like PyTorch's
/// `torch.backends.cudnn.allow_tf32` / `torch.backends.cuda.matmul.allow_tf32`; libtorch's defaults are on for cuDNN
/// and off for matrix products). The cross-checks against PyTorch turn it off on both sides to compare fp32 math.
/// Returns the previous cuDNN setting.
pub fn set_allow_tf32(on: bool) -> anyhow::Result<bool> {
    match unsafe { satm_set_allow_tf32(on as i32) } {
        -1 => anyhow::bail!("libtorch refused to change the TF32 setting"),
        v => Ok(v == 1),
    }
}

/// The libtorch version satm was built against.
pub fn torch_version() -> String {
    unsafe { std::ffi::CStr::from_ptr(satm_torch_version()).to_string_lossy().into_owned() }
}

/// cuDNN's version (e.g. 91000), if libtorch has CUDA and cuDNN.
pub fn cudnn_version() -> Option<i64> {
    let v = unsafe { satm_cudnn_version() };
    (v >= 0).then_some(v as i64)
}

/// Keeps freed tensor memory in the process heap instead of handing it back to the OS after every step.
///
/// glibc serves blocks above its mmap threshold (at most 32 MB) with fresh `mmap`s and returns them on `free`, and
/// trims the heap's top; a training step frees and re-allocates the same activation sizes every step, so each step
/// page-faults its activations in again (measured: 10–15 % of a CPU step of vgg_s in the kernel). With mmap off for
/// malloc and trimming off, freed blocks are reused; peak RSS is unchanged (the same blocks are live at the peak),
/// but the memory is not given back until the process ends. All threads allocate from one arena (small blocks still
/// come from per-thread caches). Process-wide and idempotent; a no-op off glibc.
pub fn retain_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            // One arena: threads' own arenas unmap a heap as soon as it is entirely free, whatever the trim threshold.
            libc::mallopt(libc::M_ARENA_MAX, 1);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    });
}
