//! `satm bench`: the SATM step of satm against the plain-PyTorch reference (shared/bench/ref_satm.py), side by side in
//! one command, alternating runs, each in its own process (so peak RSS is each one's own).
use crate::core::data::Dataset;
use crate::core::device::{self, Precision};
use crate::core::models::{ModelSpec, Net};
use crate::core::random;
use crate::core::report::{Cell, Table};
use crate::core::stats::{self, RatioCi};
use crate::core::train::{self, TrainConfig};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use std::process::Command;
use tch::{Device, Kind};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// vgg_s, vggbn_s or resnet_s (the CPU-scale networks of ref_satm.py), a comma-separated list of them, or `all`.
    #[arg(long, default_value = "vgg_s")]
    pub arch: String,
    #[arg(long, default_value_t = 32)]
    pub size: i64,
    #[arg(long, default_value_t = 64)]
    pub batch: i64,
    /// Number of networks trained simultaneously.
    #[arg(long, default_value_t = 2)]
    pub k: usize,
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Timed SATM steps per run (after 2 warm-up steps).
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    /// Alternating rounds (satm, PyTorch, satm, PyTorch, ...): the best of each side, and the ratio per round (the
    /// geometric mean of each round's satm/PyTorch, with its 95% t interval from 2 rounds on).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// satm's precision for the "satm default" row: fp32, bf16 or auto.
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// channels_last for satm's default row (on by default for conv nets).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub channels_last: bool,
    /// Width multiplier of the network.
    #[arg(long, default_value_t = 1.0)]
    pub width: f64,
    /// Skip the PyTorch reference (satm only).
    #[arg(long)]
    pub no_ref: bool,
    /// Rows to run, comma separated: fp32 (both sides fp32), fp32_cl (fp32 with channels_last), bf16_cl (bf16
    /// autocast with channels_last); `auto` = the modes this CPU runs natively (bf16_cl only with AVX-512 BF16 or
    /// AMX; elsewhere bf16 is emulated and very slow): fp32,bf16_cl or fp32,fp32_cl.
    #[arg(long, default_value = "auto")]
    pub modes: String,
    /// Seconds one run (satm or PyTorch) may take; a run over it is stopped and its cell reads "timed out".
    #[arg(long, default_value_t = 240)]
    pub run_timeout: u64,
    /// Seconds per architecture after which no further round starts (every mode always gets its first round).
    #[arg(long, default_value_t = 150)]
    pub budget: u64,
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Internal: run one satm measurement in this process and print its JSON.
    #[arg(long, hide = true)]
    pub worker: bool,
    /// The device both sides run on: the session's `--device` (cpu, cuda, cuda:N or auto; default cpu), filled in
    /// by the command line.
    #[arg(skip)]
    pub device: Option<String>,
}

/// Multiply-accumulates of one forward pass of one image (convolutions and linear layers), from the architectures of
/// ref_satm.py. Used for achieved GFLOP/s.
pub fn forward_macs(arch: &str, size: i64, width: f64, classes: i64) -> Result<f64> {
    let w = |c: i64| ((c as f64 * width).round() as i64).max(1);
    let conv = |hw: i64, cin: i64, cout: i64, k: i64| (hw * hw * cin * cout * k * k) as f64;
    let mut macs = 0.0;
    match arch {
        "vgg_s" | "vggbn_s" => {
            let (mut c, mut s) = (3, size);
            for v in [64, 64, 0, 128, 128, 0, 256, 256, 0] {
                if v == 0 {
                    s /= 2;
                } else {
                    macs += conv(s, c, w(v), 3);
                    c = w(v);
                }
            }
            macs += (c * w(512) + w(512) * classes) as f64;
        }
        "resnet_s" => {
            let mut s = size;
            macs += conv(s, 3, w(64), 3);
            let mut c = w(64);
            for (i, width_) in [64, 128, 256, 512].iter().enumerate() {
                let out = w(*width_);
                let stride = if i == 0 { 1 } else { 2 };
                s /= stride;
                macs += conv(s, c, out, 3) + conv(s, out, out, 3);
                if stride != 1 || c != out {
                    macs += conv(s, c, out, 1);
                }
                macs += 2.0 * conv(s, out, out, 3);
                c = out;
            }
            macs += (c * classes) as f64;
        }
        o => bail!("bench: arch '{o}' is not one of vgg_s, vggbn_s, resnet_s"),
    }
    Ok(macs)
}

/// FLOPs of one SATM step over the batch: per network, crafting costs a forward and an input-gradient backward (≈ 2F),
/// training a forward over clean + adversarial and a full backward (≈ 3F over 2B images).
pub fn step_flops(arch: &str, size: i64, width: f64, classes: i64, batch: i64, k: usize) -> Result<f64> {
    let f = 2.0 * forward_macs(arch, size, width, classes)?;
    Ok(k as f64 * batch as f64 * (2.0 * f + 6.0 * f))
}

/// Measured matmul peak (GFLOP/s) for `kind` on `dev` (on the CPU with the current thread count).
pub fn matmul_peak(kind: Kind, dev: Device) -> Result<f64> {
    let n = if dev.is_cuda() { 8192 } else { 2048 };
    let a = random::rand(&[n, n])?.f_to_kind(kind)?.f_to_device(dev)?;
    let b = random::rand(&[n, n])?.f_to_kind(kind)?.f_to_device(dev)?;
    let _ = a.f_matmul(&b)?;
    sync(dev);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let _ = a.f_matmul(&b)?;
        sync(dev);
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

/// Waits for the work queued on a CUDA device (a timer read before that would time the launches only).
fn sync(dev: Device) {
    if let Device::Cuda(i) = dev {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The device `--device` names (default: the CPU).
fn bench_device(a: &BenchArgs) -> Result<Device> {
    match &a.device {
        Some(d) => device::parse_device(d).map_err(|e| anyhow::anyhow!("--device: {e}")),
        None => Ok(Device::Cpu),
    }
}

/// `CUDA_VISIBLE_DEVICES` for the PyTorch reference, which runs on "cuda" whenever PyTorch sees a GPU: none for a
/// CPU bench, and only satm's GPU for a CUDA one. satm's `cuda:N` counts among the GPUs this process sees, so it is
/// the N-th entry of this process's own `CUDA_VISIBLE_DEVICES` (`parent`) when that is set.
fn visible_devices_for_reference(dev: Device, parent: Option<&str>) -> String {
    match (dev, parent.map(str::trim)) {
        (Device::Cuda(i), Some(list)) if !list.is_empty() => {
            list.split(',').map(str::trim).nth(i).map(str::to_string).unwrap_or_else(|| i.to_string())
        }
        (Device::Cuda(i), _) => i.to_string(),
        _ => String::new(),
    }
}

/// One satm measurement in this process: warm-up, then `steps` timed SATM steps on a fixed random batch.
fn worker(a: &BenchArgs) -> Result<serde_json::Value> {
    device::set_threads(a.threads)?;
    device::seed_everything(0)?;
    let precision = Precision::parse(&a.precision)?;
    let classes = 8;
    let dev = bench_device(a)?;
    let spec = ModelSpec { arch: a.arch.clone(), classes, width: a.width, size: a.size, ..ModelSpec::default() };
    let mut nets: Vec<Net> = (0..a.k).map(|_| Net::new(&spec, dev)).collect::<Result<_>>()?;
    let images = random::randint(256, &[a.batch, 3, a.size, a.size], Kind::Uint8)?;
    let labels: Vec<i64> = Vec::<i64>::try_from(&random::randint(classes, &[a.batch], Kind::Int64)?)?;
    let data =
        Dataset::new("bench", images, labels, (0..classes).map(|c| c.to_string()).collect(), vec![], vec![], vec![])?;
    let cfg = |steps: usize| TrainConfig {
        steps,
        batch_size: a.batch as usize,
        lr: 1e-3,
        momentum: 0.9,
        weight_decay: 0.0,
        r_adv: 1.0,
        r_da: 0.1,
        log_every: steps.max(1),
        keep_best: false,
        precision,
        channels_last: a.channels_last,
        ..TrainConfig::default()
    };
    let mut go = |steps: usize| -> Result<f64> {
        let t = std::time::Instant::now();
        train::run(train::Run {
            trainees: nets.iter_mut().collect(),
            frozen: vec![],
            train: &data,
            val: None,
            cfg: cfg(steps),
            dir: None,
            resume: None,
            progress: false,
            control: None,
        })?;
        sync(dev);
        Ok(t.elapsed().as_secs_f64())
    };
    go(2)?;
    let cpu0 = cpu_seconds();
    let dt = go(a.steps)?;
    let cpu = cpu_seconds() - cpu0;
    let data_s = data_seconds_per_batch(a, classes)?;
    let (bf16, why) = precision.resolve(dev);
    let flops = step_flops(&a.arch, a.size, a.width, classes, a.batch, a.k)? * a.steps as f64;
    Ok(serde_json::json!({
        "impl": "satm", "device": device::device_name(dev), "arch": a.arch, "size": a.size, "batch": a.batch,
        "k": a.k, "threads": device::threads(),
        "precision": if bf16 { "bf16" } else { "fp32" }, "precision_reason": why, "channels_last": a.channels_last,
        "steps": a.steps, "s_per_step": dt / a.steps as f64, "img_per_s": (a.batch as usize * a.steps) as f64 / dt,
        "gflop_per_s": flops / dt / 1e9, "cpu_s_per_step": cpu / a.steps as f64,
        "data_s_per_batch": data_s, "max_rss_mb": device::peak_rss_mb(),
    }))
}

/// Seconds the data pipeline takes per training batch: one shuffled epoch of a cached u8 dataset of 16 batches
/// (index, convert to f32 in [0, 1]), as the trainer draws them.
fn data_seconds_per_batch(a: &BenchArgs, classes: i64) -> Result<f64> {
    let n = 16 * a.batch;
    let images = random::randint(256, &[n, 3, a.size, a.size], Kind::Uint8)?;
    let labels: Vec<i64> = (0..n).map(|i| i % classes).collect();
    let data =
        Dataset::new("bench", images, labels, (0..classes).map(|c| c.to_string()).collect(), vec![], vec![], vec![])?;
    let opts = crate::core::data::BatchOpts { batch_size: a.batch as usize, ..Default::default() };
    let t = std::time::Instant::now();
    let mut count = 0;
    for b in data.batches(&opts)? {
        let _ = b?;
        count += 1;
    }
    Ok(t.elapsed().as_secs_f64() / count.max(1) as f64)
}

/// CPU seconds (user + system, all threads) this process has used.
fn cpu_seconds() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// ref_satm.py: `$SATM_REF_BENCH`, else `bench/ref_satm.py` beside the shared data directory.
pub fn ref_script() -> PathBuf {
    if let Some(p) = std::env::var_os("SATM_REF_BENCH") {
        return PathBuf::from(p);
    }
    crate::core::paths::data_root_with_source().0.join("../bench/ref_satm.py")
}

/// The project venv's python: `$SATM_VENV/bin/python`, else `~/.cache/satm/venv/bin/python`.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("SATM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs::home_dir().unwrap_or_default().join(".cache/satm/venv"));
    venv.join("bin/python")
}

/// Runs `cmd` for at most `timeout` seconds and parses the last JSON line it prints; `Ok(None)` when it ran over
/// (it is killed) — a mode the CPU only emulates must not hold the bench for 20 minutes.
fn run_json(cmd: &mut Command, what: &str, timeout: u64) -> Result<Option<serde_json::Value>> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    // Its own process group, so a timeout stops whatever it started too (and nothing keeps the pipes open).
    let mut child = cmd
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out_t = pipe(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err_t = pipe(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let start = std::time::Instant::now();
    let stop = |child: &mut std::process::Child| {
        // SAFETY: kill(2) on the child's process group (its pid, made a group leader above); no memory is touched.
        unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = child.kill();
        let _ = child.wait();
    };
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if crate::core::cancel::is_cancelled() {
            stop(&mut child);
            bail!("cancelled by Ctrl-C");
        }
        if start.elapsed().as_secs() >= timeout {
            stop(&mut child);
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let (stdout, stderr) = (out_t.join().unwrap_or_default(), err_t.join().unwrap_or_default());
    let Some(status) = status else { return Ok(None) };
    if !status.success() {
        bail!("{what} failed ({status}): {}", stderr.lines().last().unwrap_or(""));
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow::anyhow!("{what} printed no JSON"))?;
    Ok(Some(serde_json::from_str(line).with_context(|| format!("{what} printed bad JSON"))?))
}

fn satm_run(a: &BenchArgs, dev: Device, precision: &str, channels_last: bool) -> Result<Option<serde_json::Value>> {
    let exe = std::env::current_exe()?;
    let mut c = Command::new(exe);
    c.args(["bench", "--worker", "--arch", &a.arch, "--size", &a.size.to_string(), "--batch", &a.batch.to_string()])
        .args(["--k", &a.k.to_string(), "--threads", &a.threads.to_string(), "--steps", &a.steps.to_string()])
        .args([
            "--precision",
            precision,
            "--channels-last",
            &channels_last.to_string(),
            "--width",
            &a.width.to_string(),
            "--device",
            &device::device_name(dev),
        ]);
    run_json(&mut c, "satm bench worker", a.run_timeout)
}

fn ref_run(a: &BenchArgs, dev: Device, bf16: bool, channels_last: bool) -> Result<Option<serde_json::Value>> {
    let script = ref_script();
    if !script.is_file() {
        bail!("PyTorch reference {} not found (set SATM_REF_BENCH, or pass --no-ref)", script.display());
    }
    let mut c = Command::new(venv_python());
    c.arg(&script)
        .args([
            "--arch",
            &a.arch,
            "--size",
            &a.size.to_string(),
            "--batch",
            &a.batch.to_string(),
            "--k",
            &a.k.to_string(),
        ])
        .args(["--threads", &a.threads.to_string(), "--steps", &a.steps.to_string(), "--json"]);
    if bf16 {
        c.arg("--bf16");
    }
    if channels_last {
        c.arg("--channels_last");
    }
    // ref_satm.py has no device option: it takes "cuda" whenever PyTorch sees a GPU. Show it satm's device only,
    // then check where it ran.
    let parent = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    c.env("CUDA_VISIBLE_DEVICES", visible_devices_for_reference(dev, parent.as_deref()));
    let res = run_json(&mut c, "ref_satm.py", a.run_timeout)?;
    if let Some(v) = &res {
        let ran = v["device"].as_str().unwrap_or("?");
        let want = if dev.is_cuda() { "cuda" } else { "cpu" };
        if ran != want {
            bail!("ref_satm.py ran on {ran}, satm on {}: the two sides must share a device", device::device_name(dev));
        }
    }
    Ok(res)
}

/// One row of the bench: the same precision and memory format on both sides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mode {
    pub name: &'static str,
    pub bf16: bool,
    pub channels_last: bool,
}

/// Every mode `--modes` can name.
pub const MODES: [Mode; 3] = [
    Mode { name: "fp32", bf16: false, channels_last: false },
    Mode { name: "fp32_cl", bf16: false, channels_last: true },
    Mode { name: "bf16_cl", bf16: true, channels_last: true },
];

/// Whether this CPU runs bf16 natively (AVX-512 BF16 or AMX); elsewhere libtorch emulates it, far slower than fp32.
pub fn native_bf16() -> bool {
    let c = device::cpu_info();
    c.avx512_bf16 || c.amx_bf16
}

/// The modes to run and a note per mode left out: `auto` picks the modes this CPU runs natively.
pub fn pick_modes(spec: &str, native_bf16: bool) -> Result<(Vec<Mode>, Vec<String>)> {
    if spec.trim() == "auto" {
        return Ok(if native_bf16 {
            (vec![MODES[0], MODES[2]], vec![])
        } else {
            (
                vec![MODES[0], MODES[1]],
                vec![
                    "bf16_cl skipped: this CPU has neither AVX-512 BF16 nor AMX, so bf16 would be emulated (far \
                     slower than fp32; PyTorch's took over 20 minutes for vgg_s on an AVX2-only EPYC). \
                     --modes fp32,bf16_cl runs it anyway, each run stopped after --run-timeout seconds."
                        .into(),
                ],
            )
        });
    }
    let mut out: Vec<Mode> = vec![];
    for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(m) = MODES.iter().find(|m| m.name == name) else {
            bail!("--modes: unknown mode '{name}'; use fp32, fp32_cl, bf16_cl (comma separated) or auto");
        };
        if !out.contains(m) {
            out.push(*m);
        }
    }
    if out.is_empty() {
        bail!("--modes names no mode; use fp32, fp32_cl, bf16_cl (comma separated) or auto");
    }
    let mut notes = vec![];
    if !native_bf16 && out.iter().any(|m| m.bf16) {
        notes.push("bf16 on this CPU is emulated (no AVX-512 BF16 or AMX): expect it far slower than fp32".into());
    }
    Ok((out, notes))
}

fn best(runs: &[serde_json::Value]) -> Option<&serde_json::Value> {
    runs.iter().max_by(|x, y| x["img_per_s"].as_f64().unwrap_or(0.0).total_cmp(&y["img_per_s"].as_f64().unwrap_or(0.0)))
}

pub fn main(a: &BenchArgs) -> i32 {
    match run(a) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("satm bench: {e:#}");
            1
        }
    }
}

/// The architectures `--arch` names.
fn archs(a: &BenchArgs) -> Result<Vec<String>> {
    let list: Vec<String> = if a.arch == "all" {
        ["vgg_s", "vggbn_s", "resnet_s"].iter().map(|s| s.to_string()).collect()
    } else {
        a.arch.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    };
    if list.is_empty() {
        bail!("--arch names no architecture");
    }
    for arch in &list {
        forward_macs(arch, a.size, a.width, 8)?;
    }
    Ok(list)
}

/// The 1-, 5- and 15-minute load averages (Linux), to read timings on a shared machine.
fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let v: Vec<f64> = text.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect();
    (v.len() == 3).then(|| [v[0], v[1], v[2]])
}

/// One mode of one architecture: the best run of each side (a side that ran over --run-timeout gives
/// `{"timed_out": true}` and is not run again for that mode), and each round's img/s of each side (`None`: that side
/// gave nothing in that round).
struct ModeResult {
    mode: Mode,
    satm: Option<serde_json::Value>,
    pytorch: Option<serde_json::Value>,
    satm_rounds: Vec<Option<f64>>,
    pytorch_rounds: Vec<Option<f64>>,
}

/// The rounds in which both sides ran (satm's and PyTorch's img/s, measured one after the other): their ratio per
/// round, with its interval from 2 rounds on. A slow drift of the machine's speed (another tenant, a clock change)
/// moves both runs of a round alike, while the two "best of" figures may come from different minutes.
fn paired(satm: &[Option<f64>], pytorch: &[Option<f64>]) -> (Vec<f64>, Vec<f64>) {
    satm.iter().zip(pytorch).filter_map(|(s, r)| Some((((*s)?), (*r)?))).unzip()
}

/// The ratio per round of one comparison: a single paired round gives the bare ratio, two or more its interval too.
#[derive(Debug, PartialEq)]
enum PerRound {
    One(f64),
    Many(RatioCi),
}

fn ratio_per_round(satm: &[Option<f64>], pytorch: &[Option<f64>]) -> Option<PerRound> {
    let (s, r) = paired(satm, pytorch);
    match s.len() {
        0 => None,
        1 => Some(PerRound::One(s[0] / r[0])),
        _ => stats::ratio_ci(&s, &r, 0.95).ok().map(PerRound::Many),
    }
}

fn ratio_cell(v: &Option<PerRound>) -> Cell {
    match v {
        None => Cell::Empty,
        Some(PerRound::One(x)) => Cell::text(format!("{x:.2} (1 round)")),
        Some(PerRound::Many(c)) => Cell::text(format!("{:.2} [{:.2}, {:.2}]", c.ratio, c.ci_low, c.ci_high)),
    }
}

fn ratio_json(v: &Option<PerRound>) -> serde_json::Value {
    match v {
        None => serde_json::Value::Null,
        Some(PerRound::One(x)) => serde_json::json!({"ratio": x, "n": 1}),
        Some(PerRound::Many(c)) => serde_json::to_value(c).unwrap_or(serde_json::Value::Null),
    }
}

fn bench_arch(a: &BenchArgs, dev: Device, modes: &[Mode], rounds_run: &mut usize) -> Result<Vec<ModeResult>> {
    let timed_out = || Some(serde_json::json!({"timed_out": true}));
    let start = std::time::Instant::now();
    let n = modes.len();
    let (mut s, mut r) = (vec![vec![]; n], vec![vec![]; n]);
    let (mut s_over, mut r_over) = (vec![false; n], vec![false; n]);
    let img = |v: &serde_json::Value| v["img_per_s"].as_f64();
    let (mut s_rounds, mut r_rounds) = (vec![vec![]; n], vec![vec![]; n]);
    // Round by round over every mode, so a spent --budget still leaves one measurement of each.
    for round in 0..a.rounds {
        if round > 0 && start.elapsed().as_secs() >= a.budget {
            break;
        }
        *rounds_run = round + 1;
        for (i, m) in modes.iter().enumerate() {
            let (mut s_now, mut r_now) = (None, None);
            if !s_over[i] {
                match satm_run(a, dev, if m.bf16 { "bf16" } else { "fp32" }, m.channels_last)? {
                    Some(v) => {
                        s_now = img(&v);
                        s[i].push(v)
                    }
                    None => s_over[i] = true,
                }
            }
            if !a.no_ref && !r_over[i] {
                match ref_run(a, dev, m.bf16, m.channels_last)? {
                    Some(v) => {
                        r_now = img(&v);
                        r[i].push(v)
                    }
                    None => r_over[i] = true,
                }
            }
            s_rounds[i].push(s_now);
            r_rounds[i].push(r_now);
        }
    }
    let pick =
        |runs: &[serde_json::Value], over: bool| best(runs).cloned().or_else(|| if over { timed_out() } else { None });
    Ok((0..n)
        .map(|i| ModeResult {
            mode: modes[i],
            satm: pick(&s[i], s_over[i]),
            pytorch: pick(&r[i], r_over[i]),
            satm_rounds: std::mem::take(&mut s_rounds[i]),
            pytorch_rounds: std::mem::take(&mut r_rounds[i]),
        })
        .collect())
}

fn run(a: &BenchArgs) -> Result<()> {
    if a.worker {
        out(&worker(a)?.to_string());
        return Ok(());
    }
    if a.steps == 0 || a.rounds == 0 || a.batch <= 0 || a.k == 0 || a.size <= 0 || a.threads == 0 {
        bail!("--steps, --rounds, --batch, --k, --size and --threads must be at least 1");
    }
    if a.k < 2 {
        bail!("--k must be at least 2: the SATM step trains each network on another one's adversarial examples");
    }
    Precision::parse(&a.precision)?;
    let archs = archs(a)?;
    if !a.no_ref {
        let py = venv_python();
        if !py.is_file() {
            bail!(
                "the project venv's python {} is missing (run tools/bootstrap.sh, set SATM_VENV, or pass --no-ref)",
                py.display()
            );
        }
        let script = ref_script();
        if !script.is_file() {
            bail!(
                "PyTorch reference {} not found (set SATM_REF_BENCH or SATM_DATA, or pass --no-ref)",
                script.display()
            );
        }
    }
    let dev = bench_device(a)?;
    // CUDA GPUs run bf16 natively (libtorch's autocast on CUDA; satm's `auto` picks it there too).
    let native = dev.is_cuda() || native_bf16();
    let (modes, mode_notes) = pick_modes(&a.modes, native)?;
    // satm's default configuration (--precision, --channels-last) is the mode with the same precision and format.
    let (default_bf16, default_why) = Precision::parse(&a.precision)?.resolve(dev);
    let default_mode = modes.iter().find(|m| m.bf16 == default_bf16 && m.channels_last == a.channels_last).copied();
    let load_before = load_average();
    let mut per_arch = vec![];
    for arch in &archs {
        let aa = BenchArgs { arch: arch.clone(), ..a.clone() };
        let mut rounds_run = 0;
        let res = bench_arch(&aa, dev, &modes, &mut rounds_run)?;
        per_arch.push((arch.clone(), res, rounds_run));
    }
    let load_after = load_average();
    device::set_threads(a.threads)?;
    let peak32 = matmul_peak(Kind::Float, dev)?;
    // An emulated bf16 matmul is slow and says nothing; measure it only where bf16 rows ran.
    let peak16 = if modes.iter().any(|m| m.bf16) && native { matmul_peak(Kind::BFloat16, dev)? } else { f64::NAN };
    let f = |v: &Option<serde_json::Value>, k: &str| v.as_ref().and_then(|v| v[k].as_f64());
    let mut tables = vec![];
    let mut json_archs = vec![];
    for (arch, results, rounds_run) in &per_arch {
        // PyTorch's best mode here: the fastest of its rows that finished.
        let ref_best_row = results
            .iter()
            .filter_map(|m| f(&m.pytorch, "img_per_s").map(|v| (m.mode.name, v)))
            .max_by(|x, y| x.1.total_cmp(&y.1));
        let ref_best = ref_best_row.map(|r| r.1).unwrap_or(f64::NAN);
        let mut t = Table::new(
            format!(
                "SATM step on {}, {arch} {}x{}, batch {}, K={}, {} threads, {} steps, {} alternating rounds",
                device::device_name(dev),
                a.size,
                a.size,
                a.batch,
                a.k,
                a.threads,
                a.steps,
                rounds_run
            ),
            &[
                "mode",
                "satm img/s",
                "PyTorch img/s",
                "ratio (bests)",
                "ratio per round [95% CI]",
                "satm RSS MB",
                "PyTorch RSS MB",
                "satm GFLOP/s",
                "matmul peak GFLOP/s",
            ],
        );
        let num = |v: Option<f64>, d: usize| v.map(|x| Cell::num(x, d)).unwrap_or(Cell::Empty);
        let speed = |v: &Option<serde_json::Value>| match v {
            Some(j) if j["timed_out"].as_bool() == Some(true) => {
                Cell::text(format!("timed out (>{} s)", a.run_timeout))
            }
            _ => num(f(v, "img_per_s"), 1),
        };
        let mut rss_over: Vec<&str> = vec![];
        for m in results {
            let (mode, s, r) = (&m.mode, &m.satm, &m.pytorch);
            let name = mode.name;
            let peak = if mode.bf16 { peak16 } else { peak32 };
            let ratio = match (f(s, "img_per_s"), f(r, "img_per_s")) {
                (Some(x), Some(y)) => Some(x / y),
                _ => None,
            };
            if let (Some(x), Some(y)) = (f(s, "max_rss_mb"), f(r, "max_rss_mb"))
                && x > y
            {
                rss_over.push(name);
            }
            let is_default = default_mode == Some(*mode);
            t.push(vec![
                Cell::text(if is_default { format!("{name} (satm default)") } else { name.to_string() }),
                speed(s),
                speed(r),
                num(ratio, 2),
                ratio_cell(&ratio_per_round(&m.satm_rounds, &m.pytorch_rounds)),
                num(f(s, "max_rss_mb"), 0),
                num(f(r, "max_rss_mb"), 0),
                num(f(s, "gflop_per_s"), 1),
                if peak.is_finite() { Cell::num(peak, 1) } else { Cell::Empty },
            ])?;
        }
        let default_row = results.iter().find(|m| Some(m.mode) == default_mode);
        let satm_default = default_row.and_then(|m| f(&m.satm, "img_per_s"));
        let vs_best = satm_default.map(|s| s / ref_best).filter(|x| x.is_finite());
        // The same comparison round by round: satm's default row against PyTorch's best row in each round.
        let best_row = ref_best_row.and_then(|(name, _)| results.iter().find(|m| m.mode.name == name));
        let vs_best_rounds = match (default_row, best_row) {
            (Some(d), Some(b)) => ratio_per_round(&d.satm_rounds, &b.pytorch_rounds),
            _ => None,
        };
        match (default_mode, vs_best, ref_best_row) {
            (Some(dm), Some(v), Some((best_name, _))) => t.note(format!(
                "satm default ({}: {default_why}) vs PyTorch's best mode here ({best_name}): {v:.2}x best against \
                 best; {}",
                dm.name,
                match &vs_best_rounds {
                    Some(PerRound::Many(c)) => format!(
                        "per round {:.2}x, 95% CI [{:.2}, {:.2}], paired t on log img/s p = {:.2} ({} rounds)",
                        c.ratio, c.ci_low, c.ci_high, c.p, c.n
                    ),
                    _ => "one round, so no interval (--rounds 3 or more gives one)".to_string(),
                }
            )),
            (None, _, _) => t.note(format!(
                "satm's default ({}{}) is not among the modes run, so there is no default-vs-best ratio",
                if default_bf16 { "bf16" } else { "fp32" },
                if a.channels_last { ", channels_last" } else { "" }
            )),
            _ if !a.no_ref => t.note("no default-vs-best ratio: a run timed out or PyTorch gave no result"),
            _ => {}
        }
        for n in &mode_notes {
            t.note(n.clone());
        }
        if *rounds_run < a.rounds {
            t.note(format!(
                "{rounds_run} of {} rounds: the --budget of {} s was spent after round {rounds_run}",
                a.rounds, a.budget
            ));
        }
        if !a.no_ref {
            t.note(if rss_over.is_empty() {
                "peak RSS: satm <= PyTorch in every mode".to_string()
            } else {
                format!("peak RSS: satm above PyTorch in: {}", rss_over.join(", "))
            });
        }
        let first = results.iter().find(|m| f(&m.satm, "s_per_step").is_some()).map(|m| &m.satm);
        if let Some(first) = first
            && let (Some(d), Some(st)) = (f(first, "data_s_per_batch"), f(first, "s_per_step"))
        {
            t.note(format!(
                "data pipeline (cached u8 epoch, index + convert): {:.2} ms per batch = {:.2}% of a step",
                d * 1e3,
                100.0 * d / st
            ));
        }
        t.note(
            "ratio per round: the geometric mean over the rounds of satm's img/s over PyTorch's in the same round, with \
             its t interval on the log scale; on a machine whose speed drifts, quote it rather than the ratio of bests",
        );
        t.note("GFLOP/s counts conv/linear FLOPs of crafting (forward + input gradient) and training (forward + backward over clean and adversarial).");
        if let (Some(b), Some(e)) = (load_before, load_after) {
            t.note(format!(
                "load average {:.1} before, {:.1} after on {} CPUs: other work on the machine slows both sides (compare ratios only)",
                b[0],
                e[0],
                device::cpu_info().cores
            ));
        }
        json_archs.push(serde_json::json!({
            "arch": arch,
            "rows": results.iter().map(|m| serde_json::json!({
                "mode": m.mode.name,
                "satm": m.satm,
                "pytorch": m.pytorch,
                "rounds_img_per_s": {"satm": m.satm_rounds, "pytorch": m.pytorch_rounds},
                "ratio_per_round": ratio_json(&ratio_per_round(&m.satm_rounds, &m.pytorch_rounds)),
            })).collect::<Vec<_>>(),
            "default_mode": default_mode.map(|m| m.name),
            "rounds": rounds_run,
            "pytorch_best_mode": ref_best_row.map(|r| r.0),
            "skipped_modes": mode_notes,
            "pytorch_best_img_per_s": if ref_best.is_nan() { serde_json::Value::Null } else { ref_best.into() },
            "satm_default_vs_pytorch_best": vs_best,
            "satm_default_vs_pytorch_best_per_round": ratio_json(&vs_best_rounds),
            "rss_satm_le_pytorch": if a.no_ref { serde_json::Value::Null } else { rss_over.is_empty().into() },
        }));
        tables.push(t);
    }
    if a.json {
        let j = serde_json::json!({
            "archs": json_archs,
            "matmul_peak_gflops": {"fp32": peak32, "bf16": if peak16.is_finite() { peak16.into() } else { serde_json::Value::Null }},
            "load_average": {"before": load_before, "after": load_after},
            "device": device::device_name(dev),
            "cpu": device::cpu_info(),
        });
        out(&serde_json::to_string_pretty(&j)?);
    } else {
        for t in &tables {
            out(&t.render());
        }
    }
    Ok(())
}

/// Prints a line to stdout; a closed pipe (`satm bench | head`) is not an error.
fn out(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vgg_s at 32×32: the conv layers' H·W·Cin·Cout·9 plus the two linear layers, written out layer by layer.
    #[test]
    fn vgg_s_macs_match_the_layer_list() {
        let convs: [(i64, i64, i64); 6] =
            [(32, 3, 64), (32, 64, 64), (16, 64, 128), (16, 128, 128), (8, 128, 256), (8, 256, 256)];
        let want: f64 =
            convs.iter().map(|&(s, i, o)| (s * s * i * o * 9) as f64).sum::<f64>() + (256 * 512 + 512 * 8) as f64;
        assert_eq!(forward_macs("vgg_s", 32, 1.0, 8).unwrap(), want);
        // BatchNorm adds no multiply-accumulates counted here; width 0.5 halves every channel count.
        assert_eq!(forward_macs("vggbn_s", 32, 1.0, 8).unwrap(), want);
        assert!(forward_macs("vgg_s", 32, 0.5, 8).unwrap() < want / 3.0);
        // resnet_s: stem + 8 blocks (three 1×1 shortcuts) + head; ResNet-18 at 32×32 is about 0.56 GMACs.
        let r = forward_macs("resnet_s", 32, 1.0, 8).unwrap();
        assert!((r / 1e9 - 0.556).abs() < 0.01, "{r}");
        assert!(forward_macs("alexnet", 32, 1.0, 8).is_err());
        // A step: per network 2F crafting + 6F training per image, F = 2·MACs.
        assert_eq!(step_flops("vgg_s", 32, 1.0, 8, 64, 2).unwrap(), 2.0 * 64.0 * 8.0 * 2.0 * want);
    }

    #[test]
    fn modes_fit_the_cpu() {
        let names = |v: &[Mode]| v.iter().map(|m| m.name).collect::<Vec<_>>();
        let (m, n) = pick_modes("auto", true).unwrap();
        assert_eq!(names(&m), ["fp32", "bf16_cl"]);
        assert!(n.is_empty());
        let (m, n) = pick_modes("auto", false).unwrap();
        assert_eq!(names(&m), ["fp32", "fp32_cl"]);
        assert!(n.len() == 1 && n[0].contains("bf16_cl skipped"), "{n:?}");
        let (m, n) = pick_modes("bf16_cl, fp32,bf16_cl", false).unwrap();
        assert_eq!(names(&m), ["bf16_cl", "fp32"]);
        assert!(n[0].contains("emulated"));
        assert!(pick_modes("fp32_cl", true).unwrap().1.is_empty());
        assert!(pick_modes("fp16", true).unwrap_err().to_string().contains("'fp16'"));
        assert!(pick_modes(" , ", true).is_err());
    }

    #[test]
    fn runs_over_the_time_limit_are_stopped() {
        let mut slow = Command::new("sh");
        slow.args(["-c", "sleep 30; echo '{\"img_per_s\": 1}'"]);
        let t = std::time::Instant::now();
        assert!(run_json(&mut slow, "slow", 1).unwrap().is_none());
        assert!(t.elapsed().as_secs() < 20, "the child was not stopped");
        let mut quick = Command::new("sh");
        quick.args(["-c", "echo noise; echo '{\"img_per_s\": 2.5}'"]);
        assert_eq!(run_json(&mut quick, "quick", 30).unwrap().unwrap()["img_per_s"].as_f64(), Some(2.5));
        let mut failing = Command::new("sh");
        failing.args(["-c", "echo broken >&2; exit 3"]);
        assert!(run_json(&mut failing, "failing", 30).unwrap_err().to_string().contains("broken"));
    }

    /// The ratio per round pairs only rounds in which both sides ran, in the order they ran.
    #[test]
    fn ratio_per_round_pairs_rounds_where_both_sides_ran() {
        let (s, r) = paired(&[Some(2.0), None, Some(3.0), Some(8.0)], &[Some(1.0), Some(5.0), None, Some(2.0)]);
        assert_eq!((s, r), (vec![2.0, 8.0], vec![1.0, 2.0]));
        assert!(ratio_per_round(&[None], &[Some(1.0)]).is_none());
        assert_eq!(ratio_per_round(&[Some(3.0), None], &[Some(2.0), Some(1.0)]), Some(PerRound::One(1.5)));
        // Ratios 2 and 4 per round: geometric mean √8, whatever the best of each side (8 against 2) says.
        let Some(PerRound::Many(c)) = ratio_per_round(&[Some(2.0), Some(8.0)], &[Some(1.0), Some(2.0)]) else {
            panic!()
        };
        assert!((c.ratio - 8f64.sqrt()).abs() < 1e-12 && c.n == 2);
        assert!(c.ci_low < c.ratio && c.ratio < c.ci_high);
        assert_eq!(
            ratio_cell(&Some(PerRound::Many(c))).to_string(),
            format!("2.83 [{:.2}, {:.2}]", c.ci_low, c.ci_high)
        );
    }

    /// The reference sees no GPU for a CPU bench, and exactly satm's GPU for a CUDA one.
    #[test]
    fn the_reference_sees_only_satms_device() {
        assert_eq!(visible_devices_for_reference(Device::Cpu, None), "");
        assert_eq!(visible_devices_for_reference(Device::Cpu, Some("0,1")), "");
        assert_eq!(visible_devices_for_reference(Device::Cuda(0), None), "0");
        assert_eq!(visible_devices_for_reference(Device::Cuda(1), Some("")), "1");
        // Under Slurm (CUDA_VISIBLE_DEVICES=2,3) satm's cuda:1 is physical GPU 3.
        assert_eq!(visible_devices_for_reference(Device::Cuda(1), Some("2, 3")), "3");
        assert_eq!(visible_devices_for_reference(Device::Cuda(0), Some("GPU-8f2c")), "GPU-8f2c");
    }

    #[test]
    fn arch_lists_parse() {
        let a = |s: &str| BenchArgs::parse_from_arch(s);
        assert_eq!(archs(&a("all")).unwrap(), ["vgg_s", "vggbn_s", "resnet_s"]);
        assert_eq!(archs(&a("vgg_s, resnet_s")).unwrap(), ["vgg_s", "resnet_s"]);
        assert!(archs(&a("vgg_s,nope")).unwrap_err().to_string().contains("nope"));
        assert!(archs(&a(",")).is_err());
    }

    impl BenchArgs {
        fn parse_from_arch(arch: &str) -> BenchArgs {
            use clap::Parser;
            #[derive(Parser)]
            struct Cli {
                #[command(flatten)]
                b: BenchArgs,
            }
            Cli::parse_from(["bench", "--arch", arch]).b
        }
    }
}
