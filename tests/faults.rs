//! Faults injected on purpose, through the real binary: SIGKILL at random (seeded) moments of a run that checkpoints
//! every step, some of them while a checkpoint is being written; truncated, bit-flipped and deleted checkpoint files;
//! a damaged data cache; a full disk (RLIMIT_FSIZE on the child) during checkpoint, table, plot and results.json
//! writes; a grid point killed mid-run; two `satm grid` processes on one grid directory.
//!
//! Every test prints a `faults:` line with what it injected and what it checked; files lost must be 0. The README's
//! Reliability section quotes them (`tools/cargo.sh test --release --test faults -- --nocapture | grep '^faults:'`).
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A small deterministic generator (splitmix64): the kill moments, offsets and lengths come from fixed seeds.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64: the trainer's own mix of the state, then the state moves on by the golden-ratio step.
        let z = satm::core::train::step::mix(self.0);
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z
    }
    /// Uniform in lo..hi (hi exclusive).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn satm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_satm"));
    c.env_remove("SATM_CACHE").env_remove("SATM_HOME");
    c
}

/// `satm run SCRIPT --out OUT -q --threads 1 --set k=v ...`.
fn run_cmd(script: &Path, out: &Path, sets: &[(&str, String)]) -> Command {
    let mut c = satm();
    c.arg("run").arg(script).arg("--out").arg(out).arg("-q").arg("--threads").arg("1");
    for (k, v) in sets {
        c.arg("--set").arg(format!("{k}={v}"));
    }
    c
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn scratch(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("satm-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    fn walk(d: &Path, m: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, m);
            } else if let Ok(b) = std::fs::read(&p) {
                m.insert(p, b);
            }
        }
    }
    walk(dir, &mut m);
    m
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir).into_keys().filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".satm-tmp")).collect()
}

/// Every tensor of a safetensors file (integer buffers included), as name → (dtype, shape, raw values as f64 bits).
fn tensors(p: &Path) -> BTreeMap<String, (String, Vec<i64>, Vec<u64>)> {
    tch::Tensor::read_safetensors(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .into_iter()
        .map(|(n, t)| {
            let kind = format!("{:?}", t.kind());
            let v = Vec::<f64>::try_from(&t.to_kind(tch::Kind::Double).flatten(0, -1)).unwrap();
            (n, (kind, t.size(), v.into_iter().map(f64::to_bits).collect()))
        })
        .collect()
}

/// Panics unless both files hold the same tensors with bit-identical values; returns how many were compared.
fn assert_same_weights(a: &Path, b: &Path, what: &str) -> usize {
    let (x, y) = (tensors(a), tensors(b));
    assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{what}: different tensor names");
    for (name, (kx, sx, vx)) in &x {
        let (ky, sy, vy) = &y[name];
        assert_eq!((kx, sx), (ky, sy), "{what}: {name} has another dtype or shape");
        if vx != vy {
            let d =
                vx.iter().zip(vy).map(|(p, q)| (f64::from_bits(*p) - f64::from_bits(*q)).abs()).fold(0f64, f64::max);
            panic!("{what}: {name} ({kx}) differs from the uninterrupted run by up to {d}");
        }
    }
    x.len()
}

fn hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Independently of satm's loader: whether a checkpoint directory is complete (state.json's own checksum and every
/// file it lists match).
fn checkpoint_complete(dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(dir.join("state.json")).map_err(|e| format!("state.json: {e}"))?;
    let rest = text.strip_prefix("{\"sha256\":\"").ok_or("state.json: no checksum")?;
    let (want, rest) = rest.split_at(64);
    let body = rest.strip_prefix("\",\"checkpoint\":").and_then(|b| b.trim_end().strip_suffix('}')).ok_or("layout")?;
    if hex(body.as_bytes()) != want {
        return Err("state.json: checksum mismatch".into());
    }
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let files = v["files"].as_object().ok_or("no files")?;
    if files.is_empty() {
        return Err("lists no files".into());
    }
    for (name, sum) in files {
        let b = std::fs::read(dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
        if b.len() as u64 != sum["bytes"].as_u64().unwrap_or(0) || hex(&b) != sum["sha256"].as_str().unwrap_or("") {
            return Err(format!("{name} does not match state.json"));
        }
    }
    Ok(())
}

fn latest_step(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run.join("checkpoints/latest.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["step"].as_u64()
}

/// The highest step-NNNNNNN directory under run/checkpoints.
fn newest_dir_step(run: &Path) -> Option<u64> {
    std::fs::read_dir(run.join("checkpoints"))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("step-")?.parse::<u64>().ok())
        .max()
}

fn step_dir(run: &Path, step: u64) -> PathBuf {
    run.join("checkpoints").join(format!("step-{step:07}"))
}

/// Two small networks (one with BatchNorm), DA heads, Adam, augmentation: every kind of state a checkpoint holds.
const TRAIN: &str = r#"
seed(3);
let ds = synthetic(#{n: 64, classes: 4, size: 16, seed: 1});
let a = model("vgg_s", #{classes: 4, width: 0.25, size: 16});
let b = model("vggbn_s", #{classes: 4, width: 0.25, size: 16});
let r = satm(#{nets: [a, b], data: ds, steps: param("steps", 30), batch: 16, lr: 0.002, optimizer: "adam",
               augment: true, r_da: 0.1, checkpoint_every: 1, name: "k", resume: param("resume", ""),
               progress: false, precision: "fp32"});
a.save(out_path("a.safetensors"));
b.save(out_path("b.safetensors"));
print(`steps ${r.steps}`);
"#;

fn write_script(root: &Path, name: &str, body: &str) -> PathBuf {
    let p = root.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn reference_run(script: &Path, out: &Path, steps: u64) {
    let o = run_cmd(script, out, &[("steps", steps.to_string())]).output().unwrap();
    assert!(o.status.success(), "uninterrupted run failed: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("steps {steps}")), "{}", text(&o));
}

fn compare_final(full: &Path, part: &Path, what: &str) -> usize {
    ["a", "b"]
        .iter()
        .map(|n| {
            assert_same_weights(
                &full.join(format!("{n}.safetensors")),
                &part.join(format!("{n}.safetensors")),
                &format!("{what}, network {n}"),
            )
        })
        .sum()
}

/// How a kill is timed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Moment {
    /// A random delay after the start (often before the first checkpoint of this process).
    Startup,
    /// A random few steps on, then a random few milliseconds.
    Training,
    /// As soon as a new checkpoint directory appears, before latest.json names it.
    DuringWrite,
}

#[test]
fn sigkill_at_random_moments_resumes_onto_the_uninterrupted_trajectory() {
    const STEPS: u64 = 30;
    const KILLS: usize = 24;
    const DURING_WRITE: usize = 6;
    let root = scratch("kill");
    let script = write_script(&root, "k.rhai", TRAIN);
    let full = root.join("full");
    reference_run(&script, &full, STEPS);

    let mut rng = Rng(16);
    let (mut kills, mut during_write, mut resumed, mut lost, mut chains, mut compared) = (0, 0, 0, 0, 0, 0);
    let mut attempts = 0;
    while kills < KILLS || during_write < DURING_WRITE {
        chains += 1;
        let part = root.join(format!("part{chains}"));
        let run = part.join("k");
        loop {
            attempts += 1;
            assert!(attempts < 200, "too many attempts: {kills} kills, {during_write} during a checkpoint write");
            let resume = run.join("checkpoints/latest.json").is_file();
            let mut sets = vec![("steps", STEPS.to_string())];
            if resume {
                sets.push(("resume", run.display().to_string()));
                resumed += 1;
            }
            let mut child =
                run_cmd(&script, &part, &sets).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
            let moment = if kills >= KILLS || (during_write < DURING_WRITE && rng.range(0, 3) == 0) {
                Moment::DuringWrite
            } else if rng.range(0, 4) == 0 {
                Moment::Startup
            } else {
                Moment::Training
            };
            let killed = wait_and_kill(&mut child, &run, moment, &mut rng);
            let out = child.wait_with_output().unwrap();
            if !killed {
                // It finished first: it must have finished well, and on the uninterrupted run's weights.
                assert!(out.status.success(), "run failed after {kills} kills: {}", text(&out));
                let t = text(&out);
                assert!(!t.contains("previous complete checkpoint"), "a SIGKILL damaged a checkpoint: {t}");
                compared += compare_final(&full, &part, &format!("chain {chains} after {kills} kills"));
                break;
            }
            kills += 1;
            if let (Some(dir), Some(ptr)) = (newest_dir_step(&run), latest_step(&run))
                && dir > ptr
            {
                during_write += 1;
            } else if latest_step(&run).is_none() && newest_dir_step(&run).is_some() {
                during_write += 1;
            }
            // What latest.json names must be complete, whenever the process died.
            if let Some(s) = latest_step(&run)
                && let Err(e) = checkpoint_complete(&step_dir(&run, s))
            {
                eprintln!("latest.json names an incomplete checkpoint (step {s}) after a {moment:?} kill: {e}");
                lost += 1;
            }
            let t = text(&out);
            assert!(!t.contains("previous complete checkpoint"), "a SIGKILL damaged a checkpoint: {t}");
            if kills >= KILLS && during_write >= DURING_WRITE {
                // Finish this chain without further kills.
                let mut sets = vec![("steps", STEPS.to_string())];
                if run.join("checkpoints/latest.json").is_file() {
                    sets.push(("resume", run.display().to_string()));
                    resumed += 1;
                }
                let o = run_cmd(&script, &part, &sets).output().unwrap();
                assert!(o.status.success(), "final resume failed: {}", text(&o));
                assert!(!text(&o).contains("previous complete checkpoint"), "{}", text(&o));
                compared += compare_final(&full, &part, &format!("chain {chains} after {kills} kills"));
                break;
            }
        }
    }
    assert_eq!(lost, 0, "checkpoints lost to a SIGKILL");
    assert!(kills >= KILLS && during_write >= DURING_WRITE);
    println!(
        "faults: SIGKILL: {kills} kills injected ({during_write} during a checkpoint write) over {chains} runs of \
         {STEPS} steps; {resumed} resumes; every run ended bit-identical to the uninterrupted one ({compared} tensors \
         compared); files lost: {lost}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Kills `child` at the chosen moment; false when it exited on its own first.
fn wait_and_kill(child: &mut Child, run: &Path, moment: Moment, rng: &mut Rng) -> bool {
    let t0 = Instant::now();
    let start_step = latest_step(run).unwrap_or(0);
    let delay = Duration::from_millis(rng.range(50, 1500));
    let extra_steps = rng.range(1, 5);
    let jitter = Duration::from_micros(rng.range(0, 20_000));
    let mut reached: Option<Instant> = None;
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "the run made no progress in 300 s");
        let fire = match moment {
            Moment::Startup => t0.elapsed() >= delay,
            Moment::Training => {
                if reached.is_none() && latest_step(run).is_some_and(|s| s >= start_step + extra_steps) {
                    reached = Some(Instant::now());
                }
                reached.is_some_and(|r| r.elapsed() >= jitter)
            }
            Moment::DuringWrite => match (newest_dir_step(run), latest_step(run)) {
                (Some(d), Some(p)) => d > p,
                (Some(_), None) => true,
                _ => false,
            },
        };
        if fire {
            // SIGKILL: no chance to finish anything.
            return child.kill().is_ok() && child.wait().map(|s| !s.success()).unwrap_or(false);
        }
        if moment == Moment::DuringWrite {
            std::thread::sleep(Duration::from_micros(100));
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Truncate,
    FlipBit,
    Delete,
}

fn damage(path: &Path, how: Damage, rng: &mut Rng) -> String {
    let mut b = std::fs::read(path).unwrap();
    match how {
        Damage::Truncate => {
            let n = rng.range(0, b.len() as u64) as usize;
            b.truncate(n);
            std::fs::write(path, &b).unwrap();
            format!("truncated to {n} of its bytes")
        }
        Damage::FlipBit => {
            let i = rng.range(0, b.len() as u64) as usize;
            let bit = rng.range(0, 8);
            b[i] ^= 1 << bit;
            std::fs::write(path, &b).unwrap();
            format!("bit {bit} of byte {i} flipped")
        }
        Damage::Delete => {
            std::fs::remove_file(path).unwrap();
            "deleted".into()
        }
    }
}

#[test]
fn damaged_checkpoint_files_are_detected_and_resume_falls_back_to_the_previous_checkpoint() {
    const STEPS: u64 = 4;
    let root = scratch("damage");
    let script = write_script(&root, "k.rhai", TRAIN);
    let full = root.join("full");
    reference_run(&script, &full, STEPS);
    let run = full.join("k");
    assert_eq!(latest_step(&run), Some(STEPS));
    let last = step_dir(&run, STEPS);
    let prev = step_dir(&run, STEPS - 1);
    assert!(checkpoint_complete(&last).is_ok() && checkpoint_complete(&prev).is_ok());
    let mut names: Vec<String> =
        std::fs::read_dir(&last).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    // Both networks, both DA heads, both optimizers, and the state.
    assert_eq!(names.len(), 7, "{names:?}");

    let mut rng = Rng(1616);
    let (mut injected, mut detected, mut fell_back, mut compared) = (0, 0, 0, 0);
    for name in &names {
        for how in [Damage::Truncate, Damage::FlipBit, Damage::Delete] {
            let case = root.join(format!("case{injected}"));
            copy_dir(&full, &case);
            let crun = case.join("k");
            let what = damage(&step_dir(&crun, STEPS).join(name), how, &mut rng);
            injected += 1;
            // Named directly, the damaged checkpoint is refused with an error naming the file.
            let o = run_cmd(
                &script,
                &case,
                &[("steps", STEPS.to_string()), ("resume", step_dir(&crun, STEPS).display().to_string())],
            )
            .output()
            .unwrap();
            let t = text(&o);
            assert!(!o.status.success(), "{name} {what}: resuming from the damaged checkpoint succeeded: {t}");
            assert!(
                t.contains(name.as_str()) && !t.contains("panicked"),
                "{name} {what}: the error does not name the file: {t}"
            );
            detected += 1;
            // From the run directory, resume falls back to the previous checkpoint, says so, and ends on the
            // uninterrupted run's weights.
            let o = run_cmd(&script, &case, &[("steps", STEPS.to_string()), ("resume", crun.display().to_string())])
                .output()
                .unwrap();
            let t = text(&o);
            assert!(o.status.success(), "{name} {what}: resume did not fall back: {t}");
            assert!(t.contains(name.as_str()), "{name} {what}: the warning does not name the file: {t}");
            assert!(
                t.contains(&format!(
                    "resuming from the previous complete checkpoint {}",
                    step_dir(&crun, STEPS - 1).display()
                )),
                "{name} {what}: {t}"
            );
            fell_back += 1;
            compared += compare_final(&full, &case, &format!("{name} {what}"));
            let _ = std::fs::remove_dir_all(&case);
        }
    }
    // latest.json itself damaged: the newest complete checkpoint is found without it.
    let case = root.join("case-latest");
    copy_dir(&full, &case);
    let crun = case.join("k");
    std::fs::write(crun.join("checkpoints/latest.json"), b"{\"dir\": \"step-00").unwrap();
    injected += 1;
    let o = run_cmd(&script, &case, &[("steps", STEPS.to_string()), ("resume", crun.display().to_string())])
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success() && t.contains("latest.json"), "damaged latest.json: {t}");
    let newest = format!("resuming from the newest complete checkpoint {}", step_dir(&crun, STEPS).display());
    assert!(t.contains(&newest), "{t}");
    fell_back += 1;
    detected += 1;
    compared += compare_final(&full, &case, "damaged latest.json");
    println!(
        "faults: damaged checkpoints: {injected} files damaged ({} files × truncated/bit-flipped/deleted, and \
         latest.json); {detected} detected with an error naming the file; {fell_back} resumes fell back to the previous \
         checkpoint and ended bit-identical to the uninterrupted run ({compared} tensors compared); files lost: 0",
        names.len()
    );
    assert_eq!((detected, fell_back), (injected, injected));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_damaged_data_cache_is_detected_and_rebuilt() {
    let root = scratch("cache");
    let mut rng = Rng(7);
    for class in ["a", "b"] {
        std::fs::create_dir_all(root.join("imgs").join(class)).unwrap();
        for i in 0..3 {
            let img = image::RgbImage::from_fn(12, 12, |_, _| {
                image::Rgb([rng.range(0, 256) as u8, rng.range(0, 256) as u8, rng.range(0, 256) as u8])
            });
            img.save(root.join("imgs").join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let cache = root.join("cache");
    let script = write_script(
        &root,
        "c.rhai",
        r#"let d = image_folder(#{root: param("root", ""), size: 8, cache_dir: param("cache", "")});
print(`labels ${d.labels}`);
print(`pixels ${d.images.to_array()}`);"#,
    );
    let sets = [("root", root.join("imgs").display().to_string()), ("cache", cache.display().to_string())];
    let first = run_cmd(&script, &root.join("out"), &sets).output().unwrap();
    assert!(first.status.success(), "{}", text(&first));
    let files: Vec<PathBuf> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let (file, good) = (files[0].clone(), std::fs::read(&files[0]).unwrap());
    let mut injected = 0;
    for how in [Damage::FlipBit, Damage::FlipBit, Damage::FlipBit, Damage::Truncate, Damage::Delete] {
        let what = damage(&file, how, &mut rng);
        injected += 1;
        let o = run_cmd(&script, &root.join("out"), &sets).output().unwrap();
        assert!(o.status.success(), "cache {what}: {}", text(&o));
        assert_eq!(o.stdout, first.stdout, "cache {what}: the damaged cache changed the pixels");
        if !matches!(how, Damage::Delete) {
            let t = String::from_utf8_lossy(&o.stderr);
            let name = file.file_name().unwrap().to_string_lossy();
            assert!(t.contains("ignoring damaged data cache") && t.contains(name.as_ref()), "cache {what}: {t}");
        }
        assert_eq!(std::fs::read(&file).unwrap(), good, "cache {what}: not rebuilt");
    }
    assert_eq!(injected, 5);
    println!(
        "faults: data cache: {injected} damaged cache files (3 bit flips, 1 truncation, 1 deletion) detected and \
         rebuilt with the same pixels; files lost: 0"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Runs `cmd` with RLIMIT_FSIZE = `bytes` (a file can grow no larger: writes fail with EFBIG, as on a full disk) and
/// SIGXFSZ ignored (so the write fails instead of the signal killing the process).
fn with_file_limit(cmd: &mut Command, bytes: u64) -> &mut Command {
    // SAFETY: signal and setrlimit are async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

const WRITERS: &str = r#"
let stage = param("stage", "all");
seed(1);
if stage == "all" || stage == "checkpoint" {
    let ds = synthetic(#{n: 32, classes: 2, size: 16, seed: 1});
    let a = model("vgg_s", #{classes: 2, width: 0.25, size: 16});
    let b = model("vgg_s", #{classes: 2, width: 0.25, size: 16});
    satm(#{nets: [a, b], data: ds, steps: 3, batch: 16, checkpoint_every: 1, name: "k", progress: false,
           precision: "fp32"});
}
if stage == "all" || stage == "table" {
    let t = table("big", ["i", "x"]);
    for i in 0..2000 { t.add_row([i, i * 0.5]); }
    t.save(out_path("tables/big"));
}
if stage == "all" || stage == "plot" {
    let rows = [];
    for i in 0..12 { let r = []; for j in 0..12 { r.push((i * 7 + j * 3) % 11); } rows.push(r); }
    plot_confusion(rows, out_path("plots/confusion.png"), #{width: 900, height: 900});
}
if stage == "all" || stage == "results" {
    let v = [];
    for i in 0..3000 { v.push(i * 1.5); }
    record("big", v);
}
print("wrote everything");
"#;

#[test]
fn a_full_disk_fails_the_write_clearly_and_keeps_the_previous_files() {
    let root = scratch("full");
    let script = write_script(&root, "w.rhai", WRITERS);
    let out = root.join("out");
    let o = run_cmd(&script, &out, &[]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let run = out.join("k");
    assert_eq!(latest_step(&run), Some(3));
    let mut cases = 0;
    for (stage, target) in [
        ("checkpoint", "k/checkpoints"),
        ("table", "tables/big"),
        ("plot", "plots/confusion.png"),
        ("results", "results.json"),
    ] {
        let before = snapshot(&out);
        // The limit: half the smallest file this stage writes, so the stage's first write of it fails; everything
        // the stage writes before it (config.ron, run.json) is smaller.
        let under = |p: &Path| p.to_string_lossy().starts_with(&*out.join(target).to_string_lossy());
        let sizes: Vec<u64> = before
            .iter()
            .filter(|(p, _)| under(p) && !p.ends_with("latest.json"))
            .map(|(_, b)| b.len() as u64)
            .collect();
        let limit = if stage == "checkpoint" {
            // The networks' files: the DA heads are small.
            before
                .iter()
                .filter(|(p, _)| under(p) && p.file_name().unwrap().to_string_lossy().starts_with("net"))
                .map(|(_, b)| b.len() as u64)
                .min()
                .unwrap()
                / 2
        } else {
            sizes.iter().copied().min().unwrap() / 2
        };
        assert!(limit > 4096, "{stage}: the files are too small for the test ({limit})");
        let mut cmd = run_cmd(&script, &out, &[("stage", stage.to_string())]);
        let o = with_file_limit(&mut cmd, limit).output().unwrap();
        let t = text(&o);
        cases += 1;
        assert!(!o.status.success(), "{stage}: a write over the limit succeeded: {t}");
        assert!(o.status.code().is_some(), "{stage}: killed by a signal instead of an error: {t}");
        assert!(t.contains("the disk is full") && !t.contains("panicked"), "{stage}: unclear error: {t}");
        let after = snapshot(&out);
        for (p, b) in &before {
            if p.ends_with("metrics.jsonl") {
                // Appended to by the new run; what was there stays.
                assert!(after[p].starts_with(b), "{}: earlier lines lost", p.display());
                continue;
            }
            assert_eq!(after.get(p), Some(b), "{stage}: {} changed or disappeared", p.display());
        }
        let extra: Vec<&PathBuf> = after.keys().filter(|p| !before.contains_key(*p)).collect();
        assert!(extra.is_empty(), "{stage}: left behind {extra:?}");
        assert!(temp_files(&out).is_empty());
        if stage == "checkpoint" {
            assert!(t.contains("checkpoint of step 1 not written"), "{t}");
            assert!(
                t.contains(&format!("the previous checkpoint {} is unchanged", step_dir(&run, 3).display())),
                "{t}"
            );
        } else {
            assert!(t.contains(target), "{stage}: the error does not name {target}: {t}");
        }
    }
    // The kept checkpoint is still complete.
    assert!(checkpoint_complete(&step_dir(&run, 3)).is_ok());
    assert_eq!(cases, 4);
    println!(
        "faults: disk full (RLIMIT_FSIZE): {cases} writes failed (checkpoint, table, plot, results.json) with a clear \
         error; previous files intact, no temporary files left; files lost: 0"
    );
    let _ = std::fs::remove_dir_all(&root);
}

const POINT: &str = r#"
let v = param("v", 0);
seed(v);
let ds = synthetic(#{n: 64, classes: 2, size: 16, seed: 1});
let a = model("vgg_s", #{classes: 2, width: 0.25, size: 16});
let r = train(a, ds, #{steps: param("steps", 40), batch: 16, checkpoint_every: 5, name: "t", progress: false,
                      precision: "fp32"});
record("v", v);
record("steps", r.steps);
"#;

fn grid(args: &[&str]) -> Command {
    let mut c = satm();
    c.arg("grid").args(args).arg("--threads").arg("1").arg("-q");
    c
}

fn point_dirs(g: &Path) -> Vec<PathBuf> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(g.join("grid.json")).unwrap()).unwrap();
    v["points"].as_array().unwrap().iter().map(|p| g.join(p["dir"].as_str().unwrap())).collect()
}

fn running_pid(point: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(point.join("running")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["pid"].as_i64().map(|p| p as i32)
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()), Some("Z") | Some("X")),
        Err(_) => false,
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(300), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn assert_all_done(g: &Path, steps: i64) -> usize {
    let dirs = point_dirs(g);
    for d in &dirs {
        assert!(d.join("done").is_file(), "{} is not done", d.display());
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("results.json")).unwrap()).unwrap();
        assert_eq!(r["steps"].as_i64(), Some(steps), "{}: {r}", d.display());
    }
    dirs.len()
}

#[test]
fn a_killed_grid_point_is_completed_by_retry_failed() {
    let root = scratch("grid-retry");
    let script = write_script(&root, "p.rhai", POINT);
    let g = root.join("g");
    let s = script.display().to_string();
    let gs = g.display().to_string();
    let first = grid(&[&s, "--over", "v=1,2,3", "--dir", &gs, "--set", "steps=40"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("grid.json", || g.join("grid.json").is_file());
    let victim = point_dirs(&g)[1].clone();
    // Mid-run: once the point has written a checkpoint, SIGKILL its `satm run`.
    wait_until("point v=2 to train", || latest_step(&victim.join("t")).is_some());
    let pid = running_pid(&victim).expect("running marker");
    // SAFETY: kill(2) on the pid the running marker names (a child of the grid process, alive: it just checkpointed).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let o = first.wait_with_output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("FAILED v=2") || t.contains("1 failed"), "{t}");
    assert!(victim.join("failed").is_file() && !victim.join("done").exists());

    let o = grid(&["status", &gs]).output().unwrap();
    assert!(text(&o).contains("killed by signal 9"), "{}", text(&o));
    let o = grid(&["submit", &gs]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("add --retry-failed"), "{}", text(&o));
    let o = grid(&["submit", &gs, "--retry-failed"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 to run"), "{}", text(&o));
    let n = assert_all_done(&g, 40);
    println!("faults: grid: 1 of {n} points SIGKILLed mid-run; `satm grid submit --retry-failed` completed the grid");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn two_grid_processes_on_one_directory_are_refused_and_a_killed_one_releases_it() {
    let root = scratch("grid-lock");
    let script = write_script(&root, "p.rhai", POINT);
    let s = script.display().to_string();
    let g = root.join("g");
    let gs = g.display().to_string();
    let first = grid(&[&s, "--over", "v=1,2", "--dir", &gs, "--set", "steps=40"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("a running point", || g.join("grid.json").is_file() && running_pid(&point_dirs(&g)[0]).is_some());
    // Hold the point still (SIGSTOP) so the first `satm grid` is surely busy while the others try.
    let point = running_pid(&point_dirs(&g)[0]).unwrap();
    // SAFETY: kill(2) on the point process the running marker names (a live child of the first grid).
    assert_eq!(unsafe { libc::kill(point, libc::SIGSTOP) }, 0);
    let grid_json = std::fs::read(g.join("grid.json")).unwrap();
    let holder = format!("is in use by another satm grid (pid {} on", first.id());
    let mut refused = 0;
    for args in [
        vec!["submit", gs.as_str()],
        vec!["submit", gs.as_str(), "--retry-failed"],
        vec![s.as_str(), "--over", "v=1,2", "--dir", gs.as_str(), "--set", "steps=40"],
    ] {
        let o = grid(&args).output().unwrap();
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {t}");
        assert!(t.contains(&holder), "{args:?}: {t}");
        refused += 1;
    }
    assert_eq!(refused, 3);
    assert_eq!(std::fs::read(g.join("grid.json")).unwrap(), grid_json, "grid.json changed under its holder");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(point, libc::SIGCONT) }, 0);
    let o = first.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let n = assert_all_done(&g, 40);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(g.join("grid.json")).unwrap()).unwrap();
    assert_eq!(v["points"].as_array().unwrap().len(), n);

    // A grid process SIGKILLed mid-run: the kernel drops its lock, and the next one completes the grid.
    let k = root.join("k");
    let ks = k.display().to_string();
    let mut doomed = grid(&[&s, "--over", "v=1,2", "--dir", &ks, "--set", "steps=40"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("a running point", || k.join("grid.json").is_file() && running_pid(&point_dirs(&k)[0]).is_some());
    let orphan = running_pid(&point_dirs(&k)[0]).unwrap();
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    // Its point runs on without it (its own process group); once it is gone, the grid can be resumed.
    wait_until("the orphaned point to end", || !alive(orphan));
    let o = grid(&["submit", &ks]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let m = assert_all_done(&k, 40);
    println!(
        "faults: grid lock: {refused} concurrent `satm grid` runs refused naming the holder's pid, grid.json \
         untouched ({n} points done); a SIGKILLed `satm grid` released its lock and the next one completed its {m} points"
    );
    let _ = std::fs::remove_dir_all(&root);
}
