//! Random numbers of concurrent work are independent: a background run draws from its own generator (seeded from its
//! seed and step), the prompt from its own (`seed()`), so
//! - a run trained while the prompt draws random numbers and crafts random-start attacks ends with exactly the
//!   weights and losses of the same run trained alone, and
//! - the prompt's draws after `seed(n)` are the same whether or not a run trains beside it.
//!
//! The reference is the same script without the concurrent work, so the test fails whenever one thread's draws leak
//! into the other's (as they did while every draw came from libtorch's one process-wide generator: 22 of 46 prompt
//! rounds differed, and the run's losses from step 1 on).
//!
//! Both sides run at the session's default precision (bf16 autocast where the CPU has native bf16, fp32 elsewhere).
//! In bf16 this also checks that autocast runs without libtorch's process-wide weight-cast cache: with it, the prompt
//! leaving autocast emptied the run's cache mid-forward, and the run's losses differed from the run alone in the 5th
//! digit even with no random draw at the prompt.
use rhai::Dynamic;
use satm::core::random;
use tch::{Kind, Tensor};

mod common;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Two networks with the same initial weights as two others (same seed), a dataset, a test batch.
const SETUP: &str = r#"
    threads(1);
    let d = synthetic(#{n: 64, classes: 4, size: 16, seed: 3});
    seed(5);
    let a1 = model("vgg_s", #{classes: 4, width: 0.125});
    let b1 = model("vggbn_s", #{classes: 4, width: 0.125});
    seed(5);
    let a2 = model("vgg_s", #{classes: 4, width: 0.125});
    let b2 = model("vggbn_s", #{classes: 4, width: 0.125});
    let probe = model("vgg_s", #{classes: 4, width: 0.125});
    seed(11);
    let x = rand([8, 3, 16, 16]);
    let y = randint(4, [8]);
    // PGD with a random start from two sources: the second source's start is drawn after the first source's
    // iterations, well after the step reseeded, so a draw at the prompt in between would change it.
    fn run_opts(nets, d, name) {
        #{nets: nets, data: d, steps: 12, batch: 8, attack: "pgd", r_adv: 0.5, r_da: 0.1, log_every: 1,
          background: true, threads: 1, name: name, progress: false}
    }
    fn fingerprint(r, nets, x) {
        let h = r.history;
        let out = [];
        for n in h.nets { out += [h.series("train", n, "adv_loss").to_string(), h.series("train", n, "da_loss").to_string()]; }
        for m in nets { out += predict(m, x).to_array().to_string(); }
        out
    }
    // What the prompt draws after seed(9): two tensors with a random-start attack between them.
    fn prompt_draws(probe, x, y) {
        seed(9);
        let z1 = randn([512]);
        let adv = attack("pgd", probe, x, y, #{eps: 0.05, steps: 4, random_start: true});
        let z2 = randn([512]);
        [z1.to_array().to_string(), adv.to_array().to_string(), z2.to_array().to_string()]
    }
"#;

fn eval(code: &str) -> rhai::Array {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (engine, mut scope) = common::script_session(dir.path());
    let code = format!("{SETUP}\n{code}");
    engine
        .eval_with_scope::<rhai::Array>(&mut scope, &code)
        .unwrap_or_else(|e| panic!("{}", satm::script::format_error(&e, &code, "<test>")))
}

fn strings(v: &Dynamic) -> Vec<String> {
    v.clone().into_array().unwrap().iter().map(|x| x.to_string()).collect()
}

#[test]
fn a_background_run_and_the_prompt_draw_from_their_own_generators() {
    let v = eval(
        r#"
        let quiet = prompt_draws(probe, x, y);
        let r1 = satm(run_opts([a1, b1], d, "alone"));
        let res1 = r1.wait();
        let r2 = satm(run_opts([a2, b2], d, "beside"));
        let rounds = 0;
        let differ = 0;
        while r2.status().state == "starting" || r2.status().state == "running" {
            let busy = prompt_draws(probe, x, y);
            rounds += 1;
            if busy != quiet { differ += 1; }
        }
        let res2 = r2.wait();
        [fingerprint(res1, [a1, b1], x), fingerprint(res2, [a2, b2], x), rounds, differ, res1.steps, res2.steps]
    "#,
    );
    let (alone, beside) = (strings(&v[0]), strings(&v[1]));
    let (rounds, differ) = (v[2].as_int().unwrap(), v[3].as_int().unwrap());
    assert_eq!((v[4].as_int().unwrap(), v[5].as_int().unwrap()), (12, 12), "both runs train their 12 steps");
    // 2 networks x (adv_loss, da_loss) series, then 2 networks' logits.
    assert_eq!(alone.len(), 6, "{alone:?}");
    assert!(alone.iter().all(|s| s.len() > 20), "every series and logit table is filled: {alone:?}");
    assert!(rounds >= 3, "the prompt drew beside the run only {rounds} times; the check needs it to overlap the run");
    assert_eq!(
        differ, 0,
        "{differ} of {rounds} rounds of seed(9) + draws at the prompt differed while the run trained"
    );
    for (i, (a, b)) in alone.iter().zip(&beside).enumerate() {
        assert_eq!(a, b, "item {i} of the run trained beside the prompt's draws differs from the run trained alone");
    }
    eprintln!("prompt drew {rounds} rounds beside the run; run identical to the run alone");
}

/// Every random draw in satm goes through `core::random` (a draw from libtorch's process-wide generator would be
/// shared by the prompt and every run again): no other source file calls a drawing libtorch function.
#[test]
fn no_source_file_draws_from_the_process_wide_generator() {
    const DRAWS: &[&str] = &[
        "randn(",
        "randn_like(",
        "rand(",
        "rand_like(",
        "randint(",
        "randint_like(",
        "randperm(",
        "bernoulli",
        "multinomial(",
        "dropout(",
        "uniform_(",
        "normal_(",
        "random_(",
        "manual_seed(",
        "nn::Init::Uniform",
        "nn::Init::Randn",
        "nn::Init::Kaiming",
        "nn::Init::Orthogonal",
        "DEFAULT_KAIMING",
        "nn::linear(",
        "nn::conv",
        "nn::embedding(",
    ];
    // Names in satm that draw through core::random (or are not draws at all) and contain one of the above.
    const OURS: &[&str] = &["random::randn(", "random::rand(", "random::randint(", "random::dropout(", "fn randn("];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    assert!(files.len() > 50, "found only {} source files under {}", files.len(), root.display());
    // core/random.rs draws; core/device.rs's seed_everything also seeds libtorch's own generators.
    let allowed = |p: &std::path::Path| p.ends_with("core/random.rs") || p.ends_with("core/device.rs");
    let mut found = vec![];
    for f in &files {
        if allowed(f) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code.to_string();
            for o in OURS {
                rest = rest.replace(o, "");
            }
            // Calls of ours (`random::randint(`) were removed above; libtorch's draws are methods or associated
            // functions (`Tensor::randint(`, `.f_randint(`, `x.f_dropout(`), tch's initialisers are paths.
            for d in DRAWS {
                let hit = rest.match_indices(d).any(|(at, _)| {
                    let before = &rest[..at];
                    let method = before.ends_with("::") || before.ends_with('.') || before.ends_with("f_");
                    !before.ends_with("fn ")
                        && (method || d.contains("::") || d.contains("KAIMING") || *d == "bernoulli")
                });
                if hit {
                    found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "draws outside core::random:\n{}", found.join("\n"));
    // The check can see a draw: core/random.rs itself has them.
    let own = std::fs::read_to_string(root.join("core/random.rs")).unwrap();
    assert!(own.contains("satm_gen_normal_") && own.contains("Tensor::f_empty"));
}

const PY_DRAWS: &str = r#"
import sys, torch
from safetensors.torch import load_file
ours = load_file(sys.argv[1])
torch.manual_seed(123); randn = torch.randn(1000)
torch.manual_seed(124); rand = torch.rand(1000)
torch.manual_seed(125); randint = torch.randint(7, (50,))
torch.manual_seed(126); dropout = torch.nn.functional.dropout(torch.full((1000,), 3.0), 0.3, True)
torch.manual_seed(127); uniform = torch.empty(300).uniform_(-0.2, 0.2)
g = torch.Generator().manual_seed(128)
two = torch.cat([torch.randn(10, generator=g), torch.rand(10, generator=g)])
theirs = dict(randn=randn, rand=rand, randint=randint, dropout=dropout, uniform=uniform, two=two)
assert sorted(ours) == sorted(theirs), (sorted(ours), sorted(theirs))
for k, v in theirs.items():
    assert ours[k].dtype == v.dtype and torch.equal(ours[k], v), f"{k}: satm {ours[k][:5]} vs PyTorch {v[:5]}"
print(f"pytorch checked {len(theirs)}")
"#;

/// A stream seeded with n draws exactly what PyTorch draws after `torch.manual_seed(n)`, and dropout is PyTorch's
/// CPU dropout: checked against the venv's PyTorch, bit for bit.
#[test]
fn streams_draw_what_pytorch_draws_after_the_same_seed() {
    let Some(py) = common::venv_python_or_skip("the project venv's python (draws against PyTorch)") else { return };
    let draws = std::thread::spawn(|| -> Vec<(String, Tensor)> {
        let mut out = vec![];
        let mut put = |name: &str, seed: u64, f: &dyn Fn() -> Tensor| {
            random::seed(seed).unwrap();
            out.push((name.to_string(), f()));
        };
        put("randn", 123, &|| random::randn(&[1000]).unwrap());
        put("rand", 124, &|| random::rand(&[1000]).unwrap());
        put("randint", 125, &|| random::randint(7, &[50], Kind::Int64).unwrap());
        put("dropout", 126, &|| {
            random::dropout(&Tensor::full([1000], 3.0, (Kind::Float, tch::Device::Cpu)), 0.3, true).unwrap()
        });
        put("uniform", 127, &|| random::uniform(&[300], -0.2, 0.2).unwrap());
        let _s = random::scope(128).unwrap();
        put("two", 128, &|| Tensor::cat(&[random::randn(&[10]).unwrap(), random::rand(&[10]).unwrap()], 0));
        out
    })
    .join()
    .unwrap();
    let out = common::python_on_tensors(&py, PY_DRAWS, &draws);
    assert!(out.contains("pytorch checked 6"), "{out}");
}

/// `run.snapshot()` copies the BN counters (`num_batches_tracked`) with the weights, and builds the copies without
/// drawing initial weights: the prompt's stream is where it was.
#[test]
fn a_snapshot_copies_bn_counters_and_draws_nothing() {
    let v = eval(
        r#"
        let m = model("vggbn_s", #{classes: 4, width: 0.125});
        let run = train(m, d, #{steps: 3, batch: 8, background: true, threads: 1, name: "snap", progress: false});
        run.wait();
        seed(9);
        let first = randn([6]).to_array().to_string();
        seed(9);
        let copies = run.snapshot();
        let after = randn([6]).to_array().to_string();
        save(m, `${tmp}/trained.safetensors`);
        save(copies[0], `${tmp}/copy.safetensors`);
        let a = load_tensors(`${tmp}/trained.safetensors`);
        let b = load_tensors(`${tmp}/copy.safetensors`);
        let differ = [];
        for k in a.keys() { if a[k].to_array().to_string() != b[k].to_array().to_string() { differ += k; } }
        let counters = [];
        for k in a.keys() { if k.ends_with("num_batches_tracked") { counters += a[k].item().to_int(); } }
        [first, after, differ, counters, a.len(), b.len()]
    "#,
    );
    assert_eq!(v[0].to_string(), v[1].to_string(), "run.snapshot() moved the prompt's random stream");
    assert!(strings(&v[2]).is_empty(), "the snapshot differs from the trained network in {:?}", v[2]);
    let counters: Vec<i64> = v[3].clone().into_array().unwrap().iter().map(|c| c.as_int().unwrap()).collect();
    assert!(!counters.is_empty() && counters.iter().all(|&c| c >= 3), "BN counters after 3 steps: {counters:?}");
    assert_eq!(v[4].as_int().unwrap(), v[5].as_int().unwrap());
}
