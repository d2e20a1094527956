//! Models against PyTorch: same weights (exported by tools/export_pytorch_ref.py), same input, same output.
//! Plus weights in/out, strict-loading errors, freezing, cloning, channels_last and summaries.
use satm::core::models::{DaHead, ModelSpec, Net, load_named};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor, nn};

fn python() -> PathBuf {
    let py = satm::cli::bench::venv_python();
    assert!(
        py.is_file(),
        "the project venv's python is missing at {} (run tests through tools/cargo.sh)",
        py.display()
    );
    py
}

/// ../shared/bench (where ref_satm.py lives): next to the data root, or above the checkout.
fn bench_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut cands = vec![satm::script::data_root().join("../bench")];
    cands.extend(root.ancestors().map(|a| a.join("shared/bench")));
    cands
        .into_iter()
        .find(|d| d.join("ref_satm.py").is_file())
        .expect("ref_satm.py not found in ../shared/bench (set SATM_DATA to the shared data directory)")
}

/// What the PyTorch cross-checks compare: arch, classes, input side, batch, AuxLogits. Small inputs keep it quick;
/// inception_v3 runs at 299×299 because AuxLogits needs it.
const REFERENCES: [(&str, i64, i64, i64, bool); 8] = [
    ("vgg_s", 8, 32, 2, false),
    ("vggbn_s", 8, 32, 2, false),
    ("resnet_s", 8, 32, 2, false),
    ("resnet18", 5, 64, 2, false),
    ("resnet50", 3, 64, 2, false),
    ("resnet101", 2, 32, 1, false),
    ("vgg16_bn", 4, 64, 2, false),
    ("inception_v3", 6, 299, 1, true),
];

/// The directory with `arch`'s PyTorch reference (weights/io/meta). All references are exported once per test run
/// by one python process (importing torch costs more than most exports), into Cargo's per-target temp directory
/// (replaced on every run; ~700 MB, mostly vgg16_bn).
fn reference(arch: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("models-pytorch-ref");
        let _ = std::fs::remove_dir_all(&dir);
        let many: Vec<String> = REFERENCES
            .iter()
            .map(|(a, c, s, b, aux)| format!("{a}:{c}:{s}:{b}{}", if *aux { ":aux" } else { "" }))
            .collect();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/export_pytorch_ref.py");
        let out = Command::new(python())
            .arg(&script)
            .args(["--many", &many.join(",")])
            .arg("--out")
            .arg(&dir)
            .arg("--bench")
            .arg(bench_dir())
            .output()
            .expect("running python");
        assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
        dir
    });
    dir.join(arch)
}

/// The exporter runs PyTorch on one thread; so does libtorch here, so that both sum in the same order. (With more
/// threads, oneDNN's 1×1 convolutions block differently and ResNet-101's features drift by ~4e-5 relative.)
fn single_thread() {
    tch::set_num_threads(1);
}

fn io(dir: &Path) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("io.safetensors")).unwrap().into_iter().collect()
}

fn meta(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

/// Loads PyTorch's weights strictly and compares logits, features and the parameter count.
fn check_against_pytorch(arch: &str) -> (Net, PathBuf) {
    // inception_v3 runs at 299×299 (AuxLogits needs it): one image keeps it quick.
    let (_, classes, size, _, aux) = *REFERENCES.iter().find(|r| r.0 == arch).expect("arch in REFERENCES");
    single_thread();
    let dir = reference(arch);
    let mut spec = ModelSpec::new(arch, classes);
    spec.aux_logits = aux;
    spec.size = size;
    // The exporter feeds raw pixels to PyTorch, so compare without normalization.
    spec.mean = [0.0; 3];
    spec.std = [1.0; 3];
    let t0 = std::time::Instant::now();
    let (net, report) = Net::with_weights(&spec, Device::Cpu, &dir.join("weights.safetensors"), true).unwrap();
    assert!(report.is_complete(), "{}", report.problems());
    eprintln!("{arch}: built and loaded in {:.2}s", t0.elapsed().as_secs_f64());
    let io = io(&dir);
    let x = &io["x"];
    let _g = tch::no_grad_guard();
    let f = net.features_t(x, false).unwrap();
    let y = if aux {
        // AuxLogits on Mixed_6e's output, in eval mode (PyTorch's reference is computed the same way).
        let (y, a) = net.forward_with_aux(x, false).unwrap();
        let da = max_diff(&a.unwrap(), &io["aux"]);
        assert!(da <= 1e-4, "{arch}: aux logits diff {da:e}");
        y
    } else {
        net.forward_t(x, false).unwrap()
    };
    let (df, dy) = (max_diff(&f, &io["features"]), max_diff(&y, &io["logits"]));
    let scale = io["logits"].abs().max().double_value(&[]);
    eprintln!("{arch}: features diff {df:e}, logits diff {dy:e} (logit scale {scale:.2})");
    assert!(df <= 1e-4 && dy <= 1e-4, "{arch}: features diff {df:e}, logits diff {dy:e}");
    // A wrong network gives logits far from PyTorch's, so the comparison above means something.
    assert!(scale > 1e-2, "{arch}: degenerate logits");
    let m = meta(&dir);
    assert_eq!(net.param_count(), m["param_count"].as_i64().unwrap(), "{arch}: parameter count");
    assert_eq!(net.feature_dim(), m["feature_dim"].as_i64().unwrap());
    // PyTorch's num_batches_tracked (the exporter sets 7) is carried over and written back on save.
    for (n, v) in net.state_dict().iter().filter(|(n, _)| n.ends_with("num_batches_tracked")) {
        assert_eq!(i64::try_from(v).unwrap(), 7, "{n}");
    }
    // Every key of PyTorch's state_dict (num_batches_tracked included) is what satm saves, with the same shapes.
    let ours: Vec<(String, Vec<i64>)> = net.state_dict().into_iter().map(|(n, t)| (n, t.size())).collect();
    let theirs: Vec<(String, Vec<i64>)> = Tensor::read_safetensors(dir.join("weights.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.size()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(ours, theirs);
    let t = net.summary().unwrap();
    let last = t.rows.last().unwrap();
    assert_eq!(last[3], satm::core::report::Cell::Int { value: net.param_count() });
    (net, dir)
}

/// The DA head of ref_satm.py (`da.0`, `da.2`) loaded into a separate VarStore gives PyTorch's output.
fn check_da(net: &Net, dir: &Path) {
    let vs = nn::VarStore::new(Device::Cpu);
    let da = DaHead::new(vs.root() / "da", net.feature_dim(), 256);
    let w = Tensor::read_safetensors(dir.join("da.safetensors")).unwrap();
    let r = load_named(&vs, &w, true).unwrap();
    assert_eq!(r.loaded, vec!["da.0.bias", "da.0.weight", "da.2.bias", "da.2.weight"]);
    let io = io(dir);
    let out = tch::no_grad(|| da.forward(&io["features"]));
    assert_eq!(out.size(), vec![2, 1]);
    assert!(max_diff(&out, &io["da"]) <= 1e-5);
}

#[test]
fn vgg_s_matches_pytorch() {
    let (net, dir) = check_against_pytorch("vgg_s");
    check_da(&net, &dir);
}

#[test]
fn vggbn_s_matches_pytorch() {
    let (net, dir) = check_against_pytorch("vggbn_s");
    check_da(&net, &dir);
}

#[test]
fn resnet_s_matches_pytorch() {
    let (net, dir) = check_against_pytorch("resnet_s");
    check_da(&net, &dir);
}

#[test]
fn resnet18_matches_pytorch() {
    check_against_pytorch("resnet18");
}

#[test]
fn resnet50_matches_pytorch() {
    check_against_pytorch("resnet50");
}

#[test]
fn resnet101_matches_pytorch() {
    check_against_pytorch("resnet101");
}

/// A training-mode forward gives PyTorch's batch-statistics output and updates running statistics (momentum 0.1,
/// unbiased variance) and num_batches_tracked exactly as PyTorch does.
fn check_train_mode(arch: &str) {
    single_thread();
    let dir = reference(arch);
    let mut spec = ModelSpec::new(arch, 8);
    spec.mean = [0.0; 3];
    spec.std = [1.0; 3];
    let (net, _) = Net::with_weights(&spec, Device::Cpu, &dir.join("weights.safetensors"), true).unwrap();
    let io = io(&dir);
    let y = tch::no_grad(|| net.forward_t(&io["x"], true).unwrap());
    let d = max_diff(&y, &io["train_logits"]);
    assert!(d <= 1e-4, "{arch}: train-mode logits diff {d:e}");
    assert!(max_diff(&y, &io["logits"]) > 1e-3, "{arch}: batch statistics must change the output");
    let ours: std::collections::HashMap<String, Tensor> = net.state_dict().into_iter().collect();
    let after = Tensor::read_safetensors(dir.join("train_state.safetensors")).unwrap();
    assert!(after.len() > 10);
    for (n, t) in after {
        if n.ends_with("num_batches_tracked") {
            assert_eq!(i64::try_from(&ours[&n]).unwrap(), 8, "{n}");
        } else {
            let d = max_diff(&ours[&n], &t);
            assert!(d <= 1e-5, "{arch}: {n} differs by {d:e} after a training-mode forward");
        }
    }
}

#[test]
fn vggbn_s_train_mode_batch_norm_matches_pytorch() {
    check_train_mode("vggbn_s");
}

#[test]
fn resnet_s_train_mode_batch_norm_matches_pytorch() {
    check_train_mode("resnet_s");
}

#[test]
fn vgg16_bn_matches_pytorch() {
    let (net, _dir) = check_against_pytorch("vgg16_bn");
    assert_eq!(net.feature_dim(), 4096);
    assert_eq!(net.head_name(), "classifier.6");
}

#[test]
fn inception_v3_with_aux_logits_matches_pytorch() {
    let (_net, dir) = check_against_pytorch("inception_v3");
    // Without aux_logits the checkpoint's AuxLogits tensors are unexpected in a strict load and skipped otherwise.
    let mut plain = Net::new(&ModelSpec::new("inception_v3", 6), Device::Cpu).unwrap();
    let path = dir.join("weights.safetensors");
    let err = format!("{:#}", plain.load(&path, true).unwrap_err());
    assert!(err.contains("AuxLogits.fc.weight"), "{err}");
    let r = plain.load(&path, false).unwrap();
    assert!(r.unexpected.iter().all(|n| n.starts_with("AuxLogits.")) && !r.unexpected.is_empty());
    assert!(r.missing.is_empty() && r.mismatched.is_empty());
    let small = Tensor::rand([1, 3, 96, 96], (Kind::Float, Device::Cpu));
    assert_eq!(tch::no_grad(|| plain.forward_t(&small, false)).unwrap().size(), vec![1, 6]);
}

fn rand_input(size: i64) -> Tensor {
    Tensor::rand([2, 3, size, size], (Kind::Float, Device::Cpu))
}

#[test]
fn strict_load_names_offending_keys_and_loose_load_keeps_the_body() {
    satm::core::device::seed_everything(1).unwrap();
    let src = Net::new(&ModelSpec::new("vggbn_s", 8), Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.safetensors");
    src.save(&path).unwrap();

    // Another class count: the head's shapes differ.
    let mut dst = Net::new(&ModelSpec::new("vggbn_s", 3), Device::Cpu).unwrap();
    let err = format!("{:#}", dst.load(&path, true).unwrap_err());
    assert!(err.contains("head.weight") && err.contains("head.bias"), "{err}");
    assert!(err.contains("[3, 512]") && err.contains("[8, 512]"), "{err}");
    let report = dst.load(&path, false).unwrap();
    let names: Vec<&str> = report.mismatched.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, vec!["head.bias", "head.weight"]);
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    let x = rand_input(32);
    let (fa, fb) = tch::no_grad(|| (src.features_t(&x, false).unwrap(), dst.features_t(&x, false).unwrap()));
    assert_eq!(max_diff(&fa, &fb), 0.0);

    // Another architecture: missing and unexpected keys are listed.
    let mut other = Net::new(&ModelSpec::new("vgg_s", 8), Device::Cpu).unwrap();
    let err = format!("{:#}", other.load(&path, true).unwrap_err());
    assert!(err.contains("unexpected") && err.contains("features.1.running_mean"), "{err}");
    assert!(err.contains("missing") && err.contains("features.2.weight"), "{err}");
    // A failed strict load changes nothing.
    let before = other.named_variables()[0].1.copy();
    let _ = other.load(&path, true);
    assert_eq!(max_diff(&before, &other.named_variables()[0].1), 0.0);

    let err = format!("{:#}", other.load(&dir.path().join("nope.pt"), true).unwrap_err());
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn save_load_round_trip_safetensors_and_ot() {
    satm::core::device::seed_everything(2).unwrap();
    let mut a = Net::new(&ModelSpec::new("resnet_s", 4), Device::Cpu).unwrap();
    // One training-mode forward moves the running statistics and the BN counters away from their initial values.
    let x = rand_input(16);
    let _ = a.forward_t(&x, true).unwrap();
    a.freeze(Some("features.0"));
    let dir = tempfile::tempdir().unwrap();
    for ext in ["safetensors", "ot"] {
        let path = dir.path().join(format!("m.{ext}"));
        a.save(&path).unwrap();
        let mut b = Net::new(&ModelSpec::new("resnet_s", 4), Device::Cpu).unwrap();
        let r = b.load(&path, true).unwrap();
        assert_eq!(r.loaded.len(), a.named_variables().len());
        let (ya, yb) = tch::no_grad(|| (a.forward_t(&x, false).unwrap(), b.forward_t(&x, false).unwrap()));
        assert_eq!(max_diff(&ya, &yb), 0.0, "{ext}");
        let sd: std::collections::HashMap<String, Tensor> = b.state_dict().into_iter().collect();
        assert_eq!(i64::try_from(&sd["features.1.num_batches_tracked"]).unwrap(), 1);
    }
    let err = format!("{:#}", a.save(&dir.path().join("m.pt")).unwrap_err());
    assert!(err.contains(".safetensors"), "{err}");
    a.unfreeze(None);
    assert_eq!(a.trainable_param_count(), a.param_count());
}

#[test]
fn freeze_by_prefix_and_clone_independence() {
    satm::core::device::seed_everything(3).unwrap();
    let mut net = Net::new(&ModelSpec::new("vgg_s", 8), Device::Cpu).unwrap();
    let all = net.trainable_variables().len();
    assert_eq!(all, 16); // 6 convs + 1 hidden linear + head, weight and bias each
    net.freeze(Some("features.1")); // no parameters: features.1 is a ReLU, features.10 must not match
    assert_eq!(net.trainable_variables().len(), all);
    net.freeze(Some("features"));
    assert_eq!(net.trainable_variables().len(), 2);
    assert_eq!(net.trainable_param_count(), 512 * 8 + 8);
    assert_eq!(net.param_count(), 1_281_096); // PyTorch's sum(p.numel()) for ref_satm's vgg_s, 8 classes, without `da`
    net.unfreeze(Some("features.17"));
    assert_eq!(net.trainable_variables().len(), 4);

    let c = net.try_clone().unwrap();
    assert_eq!(c.trainable_variables().len(), 4);
    let x = rand_input(32);
    let y0 = tch::no_grad(|| c.forward_t(&x, false).unwrap());
    tch::no_grad(|| {
        for (_, mut t) in net.named_variables() {
            let _ = t.fill_(0.5);
        }
    });
    let y1 = tch::no_grad(|| c.forward_t(&x, false).unwrap());
    assert_eq!(max_diff(&y0, &y1), 0.0, "the clone shares storage with its source");
    let mut d = Net::new(&ModelSpec::new("vgg_s", 8), Device::Cpu).unwrap();
    d.copy_from(&c).unwrap();
    let y2 = tch::no_grad(|| d.forward_t(&x, false).unwrap());
    assert_eq!(max_diff(&y0, &y2), 0.0);
    assert!(d.copy_from(&Net::new(&ModelSpec::new("resnet_s", 8), Device::Cpu).unwrap()).is_err());
}

#[test]
fn channels_last_and_normalization_and_width() {
    satm::core::device::seed_everything(4).unwrap();
    let mut spec = ModelSpec::new("vggbn_s", 5);
    spec.width = 0.25;
    let mut net = Net::new(&spec, Device::Cpu).unwrap();
    assert_eq!(net.feature_dim(), 128);
    assert_eq!(net.label(), "vggbn_s@w0.25");
    let x = rand_input(32);
    let y = tch::no_grad(|| net.forward_t(&x, false).unwrap());
    net.set_channels_last(true);
    let y_cl = tch::no_grad(|| net.forward_t(&x, false).unwrap());
    assert!(max_diff(&y, &y_cl) < 1e-5);
    net.set_channels_last(false);

    // Normalization inside the model: mean/std on pixels equals feeding pre-normalized pixels to an identity-norm copy.
    let mut ns = spec.clone();
    ns.mean = [0.5, 0.4, 0.3];
    ns.std = [0.2, 0.25, 0.5];
    let mut normed = Net::new(&ns, Device::Cpu).unwrap();
    normed.copy_from(&net).unwrap();
    let m = Tensor::from_slice(&[0.5f32, 0.4, 0.3]).view([1, 3, 1, 1]);
    let s = Tensor::from_slice(&[0.2f32, 0.25, 0.5]).view([1, 3, 1, 1]);
    let (a, b) =
        tch::no_grad(|| (normed.forward_t(&x, false).unwrap(), net.forward_t(&((&x - &m) / &s), false).unwrap()));
    assert!(max_diff(&a, &b) < 1e-5);

    // Bad inputs are errors, not panics.
    assert!(net.forward_t(&Tensor::rand([2, 1, 32, 32], (Kind::Float, Device::Cpu)), false).is_err());
    assert!(net.forward_t(&Tensor::rand([2, 3, 4, 4], (Kind::Float, Device::Cpu)), false).is_err());
    let mut bad = ModelSpec::new("vgg17", 5);
    assert!(Net::new(&bad, Device::Cpu).is_err());
    bad = ModelSpec::new("resnet18", 5);
    bad.width = 0.5;
    assert!(Net::new(&bad, Device::Cpu).is_err());
}

fn eval<T: Clone + 'static>(src: &str) -> Result<T, String> {
    let engine = satm::script::new_engine();
    engine.eval::<T>(src).map_err(|e| e.to_string())
}

#[test]
fn script_model_api() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let p = p.to_str().unwrap();
    let src = format!(
        r#"
        seed(5);
        let m = model("resnet_s", #{{classes: 3, width: 0.25}});
        let x = rand([2, 3, 32, 32]);
        let y = m.predict(x);
        let l = m.logits(x);
        let f = m.features(x);
        m.save("{p}");
        let c = m.clone();
        let n = model("resnet_s", #{{classes: 3, width: 0.25, pretrained: "{p}"}});
        let same = (n.logits(x) - l).abs().max().item();
        m.freeze("features");
        let t = m.summary();
        let w = model("resnet_s", #{{classes: 5, width: 0.25}});
        let r = w.load("{p}", #{{strict: false}});
        [y.shape, l.shape, f.shape, m.params, m.trainable_params, same, r.mismatched.len(), r.loaded, m.arch, m.classes,
         m.device, c.trainable_params, m.to_string(), m.to("cpu").device, t.to_string()]
    "#
    );
    let out: rhai::Array = eval(&src).unwrap();
    let s: Vec<String> = out.iter().map(|v| v.to_string()).collect();
    assert_eq!(s[0], "[2]");
    assert_eq!(s[1], "[2, 3]");
    assert_eq!(s[2], "[2, 128]");
    let params = out[3].as_int().unwrap();
    let net = Net::new(
        &{
            let mut s = ModelSpec::new("resnet_s", 3);
            s.width = 0.25;
            s
        },
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(params, net.param_count());
    assert_eq!(out[4].as_int().unwrap(), 128 * 3 + 3, "only the head stays trainable");
    assert_eq!(out[5].as_float().unwrap(), 0.0, "pretrained weights reproduce the saved model");
    assert_eq!(out[6].as_int().unwrap(), 2, "head.weight and head.bias mismatch");
    assert_eq!(out[7].as_int().unwrap() as usize, net.named_variables().len() - 2);
    assert_eq!(s[8], "resnet_s");
    assert_eq!(out[9].as_int().unwrap(), 3);
    assert_eq!(s[10], "cpu");
    assert_eq!(out[11].as_int().unwrap(), params, "the clone was made before freezing");
    assert!(s[12].starts_with("Model[resnet_s@w0.25; 3 classes;"), "{}", s[12]);
    assert!(s[14].contains("features.3") && s[14].contains("total"), "{}", s[14]);
}

#[test]
fn script_model_errors_name_the_problem() {
    let cases = [
        (r#"model("vgg17")"#, "unknown architecture 'vgg17'"),
        (r#"model("vgg_s", #{clases: 3})"#, "valid options"),
        (r#"model("vgg_s", #{classes: 0})"#, "classes must be at least 1"),
        (r#"model("vgg_s", #{mean: [0.5, 0.5]})"#, "needs 3 numbers"),
        (r#"model("vgg_s", #{norm: "imagenett"})"#, "imagenet"),
        (r#"model("vgg_s", #{device: "tpu"})"#, "expected cpu, cuda"),
        (r#"model("vgg_s", #{strict: false})"#, "'strict' applies to 'pretrained'"),
        (r#"model("vgg_s", #{pretrained: "/nonexistent/w.safetensors"})"#, "does not exist"),
        (r#"model("resnet18", #{width: 0.5})"#, "width applies to the CPU-scale nets"),
        (r#"model("vgg_s").freeze("layer4")"#, "no parameter of vgg_s lies under 'layer4'"),
        (r#"model("vgg_s").logits(rand([2, 1, 32, 32]))"#, "expected images [B, 3, H, W]"),
        (r#"model("vgg_s").load("w.pth")"#, "does not exist"),
    ];
    for (src, want) in cases {
        let err = eval::<rhai::Dynamic>(src).err().unwrap_or_else(|| panic!("{src} succeeded"));
        assert!(err.contains(want), "{src}: {err}");
    }
}

#[test]
fn convert_weights_turns_a_pth_checkpoint_into_loadable_safetensors_matching_pytorch() {
    let src = reference("vgg_s");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // A training checkpoint as people save them: DataParallel names inside {"state_dict": ...}.
    let make = "import sys, torch; from safetensors.torch import load_file; \
                sd = load_file(sys.argv[1]); torch.save({'epoch': 3, 'state_dict': {'module.' + k: v for k, v in sd.items()}}, sys.argv[2])";
    let st = Command::new(python())
        .args(["-c", make])
        .arg(src.join("weights.safetensors"))
        .arg(d.join("ckpt.pth"))
        .status()
        .unwrap();
    assert!(st.success());
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/convert_weights.py");
    let run = |arch: &str, out: &str| {
        Command::new(python())
            .arg(&tool)
            .arg(d.join("ckpt.pth"))
            .arg(d.join(out))
            .args(["--arch", arch, "--bench"])
            .arg(bench_dir())
            .output()
            .unwrap()
    };
    let ok = run("vgg_s", "conv.safetensors");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let (net, r) =
        Net::with_weights(&ModelSpec::new("vgg_s", 8), Device::Cpu, &d.join("conv.safetensors"), true).unwrap();
    assert_eq!(r.loaded.len(), 16);
    let io = io(&src);
    let y = tch::no_grad(|| net.forward_t(&io["x"], false).unwrap());
    assert!(max_diff(&y, &io["logits"]) <= 1e-5);

    // Validation against another architecture fails, names keys, and writes nothing.
    let bad = run("resnet_s", "bad.safetensors");
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("missing") && err.contains("features.10.c1.weight"), "{err}");
    assert!(!d.join("bad.safetensors").exists());
}
