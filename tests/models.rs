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
fn export(arch: &str, classes: i64, size: i64, extra: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/export_pytorch_ref.py");
    let out = Command::new(python())
        .arg(&script)
        .args(["--arch", arch, "--classes", &classes.to_string(), "--size", &size.to_string(), "--batch", "2"])
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
    let dir = export(arch, classes, size, &[]);
    let mut spec = ModelSpec::new(arch, classes);
    spec.size = size;
    // The exporter feeds raw pixels to PyTorch, so compare without normalization.
    spec.mean = [0.0; 3];
    spec.std = [1.0; 3];
    let mut net = Net::new(&spec, Device::Cpu).unwrap();
    let report = net.load(&dir.path().join("weights.safetensors"), true).unwrap();
    assert!(report.is_complete(), "{}", report.problems());
    let io = io(dir.path());
    let x = &io["x"];
    let _g = tch::no_grad_guard();
    let f = net.features_t(x, false).unwrap();
    let y = net.forward_t(x, false).unwrap();
    let (df, dy) = (max_diff(&f, &io["features"]), max_diff(&y, &io["logits"]));
    let scale = io["logits"].abs().max().double_value(&[]);
    assert!(df <= 1e-4 && dy <= 1e-4, "{arch}: features diff {df:e}, logits diff {dy:e} (logit scale {scale})");
    // A wrong network gives logits far from PyTorch's, so the comparison above means something.
    assert!(scale > 1e-2, "{arch}: degenerate logits");
    let m = meta(dir.path());
    assert_eq!(net.param_count(), m["param_count"].as_i64().unwrap(), "{arch}: parameter count");
    assert_eq!(net.feature_dim(), m["feature_dim"].as_i64().unwrap());
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
fn resnet_s_state_dict_keys_match_pytorch() {
    // Every key PyTorch's state_dict has (num_batches_tracked included) is what satm saves, with the same shapes.
    let dir = export("resnet_s", 8, 32, &[]);
    let net = Net::new(&ModelSpec::new("resnet_s", 8), Device::Cpu).unwrap();
    let ours: Vec<(String, Vec<i64>)> = net.state_dict().into_iter().map(|(n, t)| (n, t.size())).collect();
    let theirs: Vec<(String, Vec<i64>)> = Tensor::read_safetensors(dir.path().join("weights.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.size()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(ours, theirs);
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
