//! How the per-network work of a step is spread over CPU threads: one worker per trainee, side by side.
use crate::core::attacks::{AttackKind, AttackSpec};
use crate::core::models::Net;
use anyhow::Result;
use tch::Device;

/// Whether the attack draws its random step from N(0, I) (then the trainer draws it, see `step::craft_sources`).
pub fn attack_uses_noise(spec: &AttackSpec) -> bool {
    matches!(spec.kind, AttackKind::RFgsm | AttackKind::RStepLl) && spec.restarts == 1
}

/// Whether crafting with `spec` draws no random numbers beyond the noise the trainer passes in, so that sources can
/// be crafted side by side without changing any result.
pub fn attack_is_deterministic(spec: &AttackSpec) -> bool {
    attack_uses_noise(spec) || matches!(spec.kind, AttackKind::Fgsm | AttackKind::StepLl | AttackKind::Fgv)
}

/// How the per-network work of a step is spread over CPU threads.
pub struct SideBySide {
    /// Craft the trainees' adversarial examples side by side.
    pub craft: bool,
    /// Update the trainees side by side.
    pub train: bool,
    /// Intra-op threads of each worker (one worker per trainee).
    pub threads: Vec<usize>,
}

impl SideBySide {
    /// K trainees on the CPU with at least K intra-op threads (and oneDNN kernels that run concurrently with exact
    /// results: `concurrent_kernels_exact`) run one worker per network, each with its share of the
    /// threads, instead of one network after another on all threads: the networks of a step are independent
    /// (crafting reads only its source, each update touches only its trainee), small convolutions scale poorly
    /// across threads, and the workers never wait on each other inside an op. Results are those of the sequential
    /// loop (up to the rounding of a different thread count per op): random draws stay on the main thread, so
    /// networks that draw random numbers in their forward pass (dropout) and attacks with their own random starts
    /// keep the sequential loop.
    pub fn plan<'n>(trainees: impl Iterator<Item = &'n Net>, frozen: &[&Net], spec: &AttackSpec) -> SideBySide {
        let trainees: Vec<&Net> = trainees.collect();
        let k = trainees.len();
        let threads = crate::core::device::threads();
        let on_cpu = trainees.iter().all(|n| n.device() == Device::Cpu);
        let random_forward = trainees.iter().any(|n| n.has_dropout()) || frozen.iter().any(|n| n.has_dropout());
        let ok = k >= 2 && threads >= k && on_cpu && !random_forward && concurrent_kernels_exact();
        SideBySide {
            craft: ok && attack_is_deterministic(spec),
            train: ok,
            threads: (0..k).map(|i| threads / k + usize::from(i < threads % k)).collect(),
        }
    }
}

/// Whether two networks' CPU kernels may run at the same time with the results of running them one after another.
/// Checked by tests/bench.rs (against PyTorch at 1e-4, both step paths) with oneDNN's AVX-512 and AMX kernels. With
/// oneDNN limited to AVX2 (AVX2-only CPUs such as AMD EPYC, emulated here with ONEDNN_MAX_CPU_ISA=AVX2), two workers
/// side by side gave weights that varied from run to run by up to 6e-4 relative after 2 steps (resnet_s), while ATen's
/// own AVX2 kernels (ATEN_CPU_CAPABILITY=avx2) did not: there the networks run one after another.
pub fn concurrent_kernels_exact() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        let isa =
            std::env::var("ONEDNN_MAX_CPU_ISA").or_else(|_| std::env::var("DNNL_MAX_CPU_ISA")).unwrap_or_default();
        let isa = isa.trim().to_ascii_uppercase();
        let limited = !(isa.is_empty() || isa == "ALL" || isa.starts_with("AVX512") || isa.starts_with("AVX10"));
        crate::core::device::cpu_info().avx512f && !limited
    })
}

/// One worker's job: borrows one network (and its optimizer), returns its result.
pub type Job<'a, T> = Box<dyn FnOnce() -> Result<T> + Send + 'a>;

/// Runs each job on its own scoped thread with `threads[i]` intra-op threads; the results come back in job order.
/// The caller's thread count is restored afterwards.
pub fn run_side_by_side<T: Send>(jobs: Vec<Job<'_, T>>, threads: &[usize]) -> Vec<Result<T>> {
    let caller = crate::core::device::threads();
    let out = std::thread::scope(|sc| {
        let handles: Vec<_> = jobs
            .into_iter()
            .enumerate()
            .map(|(i, job)| {
                let n = threads.get(i).copied().unwrap_or(1).max(1);
                sc.spawn(move || {
                    tch::set_num_threads(n as i32);
                    job()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a training worker thread panicked"))))
            .collect()
    });
    tch::set_num_threads(caller as i32);
    out
}
