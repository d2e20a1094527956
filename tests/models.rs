//! Models against PyTorch: same weights (exported by tools/export_pytorch_ref.py), same input, same output.
//! Plus weights in/out, strict-loading errors, freezing, cloning, channels_last and summaries.
use satm::core::models::{DaHead, ModelSpec, Net, load_named};
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Kind, Tensor, nn};

fn python() -> PathBuf {
    let venv = std::env::var_os("SATM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs::home_dir().expect("home directory").join(".cache/satm/venv"));
    let py = venv.join("bin/python");
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

/// Runs the exporter; returns the temp dir holding weights/io/meta.
fn export(arch: &str, classes: i64, size: i64, batch: i64, extra: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/export_pytorch_ref.py");
    let out = Command::new(python())
        .arg(&script)
        .args([
            "--arch",
            arch,
            "--classes",
            &classes.to_string(),
            "--size",
            &size.to_string(),
            "--batch",
            &batch.to_string(),
        ])
        .arg("--out")
        .arg(dir.path())
        .arg("--bench")
        .arg(bench_dir())
        .args(extra)
        .output()
        .expect("running python");
    assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
    dir
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
fn check_against_pytorch(arch: &str, classes: i64, size: i64) -> (Net, tempfile::TempDir) {
    check_against_pytorch_with(arch, classes, size, false)
}

fn check_against_pytorch_with(arch: &str, classes: i64, size: i64, aux: bool) -> (Net, tempfile::TempDir) {
    // inception_v3 runs at 299×299 (AuxLogits needs it): one image keeps it quick.
    let dir = export(arch, classes, size, if aux { 1 } else { 2 }, if aux { &["--aux"] } else { &[] });
    let mut spec = ModelSpec::new(arch, classes);
    spec.aux_logits = aux;
    spec.size = size;
    // The exporter feeds raw pixels to PyTorch, so compare without normalization.
    spec.mean = [0.0; 3];
    spec.std = [1.0; 3];
    let t0 = std::time::Instant::now();
    let (net, report) = Net::with_weights(&spec, Device::Cpu, &dir.path().join("weights.safetensors"), true).unwrap();
    assert!(report.is_complete(), "{}", report.problems());
    eprintln!("{arch}: built and loaded in {:.2}s", t0.elapsed().as_secs_f64());
    let io = io(dir.path());
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
    // Features are post-ReLU sums of up to 2048 channels with magnitudes of several units: their tolerance is
    // 1e-4 relative to the largest feature (fp32 summation order differs with the thread count), logits' is absolute.
    let fscale = io["features"].abs().max().double_value(&[]).max(1.0);
    eprintln!("{arch}: features diff {df:e} (scale {fscale:.2}), logits diff {dy:e} (scale {scale:.2})");
    assert!(df <= 1e-4 * fscale && dy <= 1e-4, "{arch}: features diff {df:e}, logits diff {dy:e}");
    // A wrong network gives logits far from PyTorch's, so the comparison above means something.
    assert!(scale > 1e-2, "{arch}: degenerate logits");
    let m = meta(dir.path());
    assert_eq!(net.param_count(), m["param_count"].as_i64().unwrap(), "{arch}: parameter count");
    assert_eq!(net.feature_dim(), m["feature_dim"].as_i64().unwrap());
    // PyTorch's num_batches_tracked (the exporter sets 7) is carried over and written back on save.
    for (n, v) in net.state_dict().iter().filter(|(n, _)| n.ends_with("num_batches_tracked")) {
        assert_eq!(i64::try_from(v).unwrap(), 7, "{n}");
    }
    // Every key of PyTorch's state_dict (num_batches_tracked included) is what satm saves, with the same shapes.
    let ours: Vec<(String, Vec<i64>)> = net.state_dict().into_iter().map(|(n, t)| (n, t.size())).collect();
    let theirs: Vec<(String, Vec<i64>)> = Tensor::read_safetensors(dir.path().join("weights.safetensors"))
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
    let (net, dir) = check_against_pytorch("vgg_s", 8, 32);
    check_da(&net, dir.path());
}

#[test]
fn vggbn_s_matches_pytorch() {
    let (net, dir) = check_against_pytorch("vggbn_s", 8, 32);
    check_da(&net, dir.path());
}

#[test]
fn resnet_s_matches_pytorch() {
    let (net, dir) = check_against_pytorch("resnet_s", 8, 32);
    check_da(&net, dir.path());
}

#[test]
fn resnet18_matches_pytorch() {
    check_against_pytorch("resnet18", 5, 64);
}

#[test]
fn resnet50_matches_pytorch() {
    check_against_pytorch("resnet50", 3, 64);
}

#[test]
fn vgg16_bn_matches_pytorch() {
    let (net, _dir) = check_against_pytorch("vgg16_bn", 4, 64);
    assert_eq!(net.feature_dim(), 4096);
    assert_eq!(net.head_name(), "classifier.6");
}

#[test]
fn inception_v3_with_aux_logits_matches_pytorch() {
    let (_net, dir) = check_against_pytorch_with("inception_v3", 6, 299, true);
    // Without aux_logits the checkpoint's AuxLogits tensors are unexpected in a strict load and skipped otherwise.
    let mut plain = Net::new(&ModelSpec::new("inception_v3", 6), Device::Cpu).unwrap();
    let path = dir.path().join("weights.safetensors");
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
    tch::manual_seed(1);
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
    tch::manual_seed(2);
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
    tch::manual_seed(3);
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
    tch::manual_seed(4);
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
