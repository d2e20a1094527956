//! Evaluation on real libtorch with tiny MLPs trained on synthetic data: clean / white-box / black-box evaluation,
//! the transfer matrix's diagonal, ε sweeps, the paper's tables, the robustness preset and the masking report.
use anyhow::Result;
use satm::core::attacks::{AttackKind, AttackSpec};
use satm::core::data::{BatchOpts, Dataset, SyntheticOpts, synthetic};
use satm::core::eval::tables::{self, Holdout, Pair};
use satm::core::eval::{
    EvalOpts, MaskingOpts, Metric, RobustOpts, Sources, eps_sweep, evaluate, masking_report, predict, robust_eval,
    transfer_matrix, transfer_results,
};
use satm::core::models::Classifier;
use satm::core::report::Cell;
use std::sync::{Mutex, MutexGuard};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// A two-layer perceptron on flattened 8×8 images (tanh: no dead-ReLU regions where the input gradient is truly
/// zero, which the masking report would rightly flag).
struct Mlp {
    _vs: nn::VarStore,
    l1: nn::Linear,
    l2: nn::Linear,
    name: String,
}

impl Classifier for Mlp {
    fn logits_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(self.l2.forward(&self.l1.forward(&x.f_flatten(1, -1)?).f_tanh()?))
    }
    fn num_classes(&self) -> i64 {
        4
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn label(&self) -> String {
        self.name.clone()
    }
}

/// Cuts the input out of the graph: its logits carry no input gradient (the textbook masked model).
struct Detached<'a>(&'a Mlp);

impl Classifier for Detached<'_> {
    fn logits_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.0.logits_t(&x.detach(), train)
    }
    fn num_classes(&self) -> i64 {
        4
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn label(&self) -> String {
        format!("detached({})", self.0.name)
    }
}

fn data() -> Dataset {
    synthetic(&SyntheticOpts { n: 256, classes: 4, size: 8, seed: 3, noise: 0.08, folds: 0, groups: 0 }).unwrap()
}

fn train(name: &str, seed: i64, hidden: i64) -> Mlp {
    satm::core::device::seed_everything(seed as u64).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let p = vs.root();
    let l1 = nn::linear(&p / "l1", 192, hidden, Default::default());
    let l2 = nn::linear(&p / "l2", hidden, 4, Default::default());
    let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
    let ds = data();
    for epoch in 0..25 {
        let o = BatchOpts { batch_size: 32, shuffle: true, seed: epoch, ..Default::default() };
        for b in ds.batches(&o).unwrap() {
            let b = b.unwrap();
            let loss = l2.forward(&l1.forward(&b.x.flatten(1, -1)).tanh()).cross_entropy_for_logits(&b.y);
            opt.backward_step(&loss);
        }
    }
    Mlp { _vs: vs, l1, l2, name: name.to_string() }
}

/// libtorch's random generator is process-wide and evaluations reseed it, so the tests run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // Tiny tensors: one thread avoids oversubscribing a shared machine.
    tch::set_num_threads(1);
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    // Tensors are not `Sync`: each test thread trains its own pair (a second or so; same seeds, same weights).
    static MODELS: &'static (Mlp, Mlp) = Box::leak(Box::new((train("A", 1, 32), train("B", 2, 48))));
}

/// Two trained models and the test lock.
fn models() -> (MutexGuard<'static, ()>, &'static (Mlp, Mlp)) {
    let g = serial();
    (g, MODELS.with(|m| *m))
}

fn spec(kind: AttackKind, eps: f64) -> AttackSpec {
    let mut s = AttackSpec::new(kind);
    s.eps = eps;
    s.alpha = eps / 2.0;
    s
}

#[test]
fn clean_evaluation_matches_a_direct_count() {
    let (_g, (a, _)) = models();
    let ds = data();
    let r = evaluate(a, &ds, &EvalOpts { batch_size: 50, ..Default::default() }).unwrap();
    let x = ds.images.to_kind(Kind::Float) / 255.0;
    let pred = predict(a, &x).unwrap().argmax(-1, false);
    let y = Tensor::from_slice(&ds.labels);
    let hits = pred.eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(r.n, 256);
    assert!((r.accuracy - hits as f64 / 256.0).abs() < 1e-12);
    assert!(r.accuracy > 0.7, "the test model did not train: {}", r.accuracy);
    assert!(r.one_off >= r.accuracy);
    assert_eq!(r.confusion.total(), 256);
    assert_eq!(r.setting(), "clean");
    // A limit evaluates a seeded subset of that size.
    let l = evaluate(a, &ds, &EvalOpts { limit: Some(40), ..Default::default() }).unwrap();
    assert_eq!(l.n, 40);
}

#[test]
fn per_example_outcomes_sum_to_the_confusion_matrix() {
    let (_g, (a, b)) = models();
    let ds = data();
    let o = EvalOpts {
        attack: Some(spec(AttackKind::Fgsm, 8.0 / 256.0)),
        sources: Sources::From(vec![b]),
        limit: Some(70),
        seed: 5,
        batch_size: 16,
        ..Default::default()
    };
    let r = evaluate(a, &ds, &o).unwrap();
    assert_eq!((r.index.len(), r.labels.len(), r.predictions.len()), (70, 70, 70));
    // Indices are into the full dataset: distinct, in range, and the labels are the dataset's own labels there.
    let mut seen = std::collections::HashSet::new();
    for (&i, &y) in r.index.iter().zip(&r.labels) {
        assert!((0..256).contains(&i) && seen.insert(i), "index {i}");
        assert_eq!(ds.labels[i as usize], y, "label of example {i}");
    }
    // Counting (label, prediction) pairs by hand gives the confusion matrix; correct sums to its trace.
    let mut counts = vec![vec![0u64; 4]; 4];
    for (&y, &p) in r.labels.iter().zip(&r.predictions) {
        counts[y as usize][p as usize] += 1;
    }
    assert_eq!(counts, r.confusion.counts);
    let hits = r.correct().iter().filter(|&&c| c).count() as u64;
    assert_eq!(hits, (0..4).map(|c| counts[c][c]).sum::<u64>());
    assert!((r.accuracy - hits as f64 / 70.0).abs() < 1e-12);
    assert_eq!(r.attack_name.as_deref(), Some("fgsm"));
    // Clean predictions are the model's own argmax on those images.
    let c = evaluate(a, &ds, &EvalOpts { limit: Some(70), seed: 5, ..Default::default() }).unwrap();
    assert_eq!(c.index, r.index, "the same seed picks the same subset");
    let idx = Tensor::from_slice(&c.index);
    let x = ds.images.index_select(0, &idx).to_kind(Kind::Float) / 255.0;
    let pred = Vec::<i64>::try_from(&predict(a, &x).unwrap().argmax(-1, false)).unwrap();
    assert_eq!(pred, c.predictions);
    // The robustness preset keeps per-example outcomes too: its worst-case predictions sum to its matrix.
    let rb = robust_eval(
        a,
        &ds,
        &RobustOpts {
            eps: 4.0 / 256.0,
            limit: Some(24),
            seed: 2,
            apgd_steps: 2,
            square_queries: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let mut counts = vec![vec![0u64; 4]; 4];
    for (&y, &p) in rb.worst.labels.iter().zip(&rb.worst.predictions) {
        counts[y as usize][p as usize] += 1;
    }
    assert_eq!(counts, rb.worst.confusion.counts);
    assert_eq!(rb.worst.index, rb.clean.index);
    assert_eq!(rb.worst.index.len(), 24);
}

#[test]
fn white_box_and_black_box_lower_accuracy() {
    let (_g, (a, b)) = models();
    let ds = data();
    let eps = 12.0 / 256.0;
    let clean = evaluate(a, &ds, &EvalOpts::default()).unwrap();
    let wb = evaluate(a, &ds, &EvalOpts { attack: Some(spec(AttackKind::Fgsm, eps)), ..Default::default() }).unwrap();
    let bb = evaluate(
        a,
        &ds,
        &EvalOpts { attack: Some(spec(AttackKind::Fgsm, eps)), sources: Sources::From(vec![b]), ..Default::default() },
    )
    .unwrap();
    assert!(wb.accuracy < clean.accuracy - 0.1, "white-box {} vs clean {}", wb.accuracy, clean.accuracy);
    assert!(bb.accuracy < clean.accuracy, "black-box {} vs clean {}", bb.accuracy, clean.accuracy);
    assert_eq!(wb.setting(), "white-box");
    assert_eq!(bb.setting(), "black-box from B");
}

#[test]
fn transfer_matrix_diagonal_equals_white_box_on_the_same_seed() {
    let (_g, (a, b)) = models();
    let ds = data();
    // R+FGSM draws random noise, so the diagonal only matches if each cell is reseeded like `evaluate`.
    let atk = spec(AttackKind::RFgsm, 16.0 / 256.0);
    let opts = EvalOpts { batch_size: 64, seed: 11, limit: Some(160), ..Default::default() };
    let srcs: Vec<&dyn Classifier> = vec![a, b];
    let res = transfer_results(&srcs, &srcs, &ds, &atk, &opts).unwrap();
    for (i, m) in srcs.iter().enumerate() {
        let wb = evaluate(*m, &ds, &EvalOpts { attack: Some(atk.clone()), ..opts.clone() }).unwrap();
        assert_eq!(res[i][i].confusion, wb.confusion, "diagonal {i}");
    }
    // Off-diagonal = black-box evaluate with that source.
    let ab = evaluate(a, &ds, &EvalOpts { attack: Some(atk.clone()), sources: Sources::From(vec![b]), ..opts.clone() })
        .unwrap();
    assert_eq!(res[1][0].confusion, ab.confusion);
    // Another seed gives other noise (the seed reaches the attack).
    let other = evaluate(a, &ds, &EvalOpts { attack: Some(atk.clone()), seed: 12, ..opts.clone() }).unwrap();
    assert_ne!(other.confusion, res[0][0].confusion);
    let t = transfer_matrix(&srcs, &srcs, &ds, &atk, &opts, Metric::Accuracy).unwrap();
    assert_eq!(t.columns, vec!["source \\ target", "A", "B"]);
    assert_eq!(t.rows.len(), 3);
    assert_eq!(t.rows[1][2], Cell::rate(res[1][1].accuracy));
    assert_eq!(t.rows[0][2], Cell::rate(res[0][1].accuracy));
}

#[test]
fn eps_sweep_starts_at_clean_and_decreases() {
    let (_g, (a, _)) = models();
    let ds = data();
    let clean = evaluate(a, &ds, &EvalOpts::default()).unwrap();
    let o = EvalOpts { attack: Some(spec(AttackKind::Fgsm, 16.0 / 256.0)), ..Default::default() };
    let s = eps_sweep(a, &ds, &[0.0, 4.0 / 256.0, 16.0 / 256.0], &o).unwrap();
    assert_eq!(s[0].1.confusion, clean.confusion, "ε = 0 must leave the inputs unchanged");
    assert!(s[1].1.accuracy <= s[0].1.accuracy && s[2].1.accuracy < s[1].1.accuracy);
    assert!(s[2].1.attack.as_deref().unwrap().contains("16/256"));
}

#[test]
fn paper_tables_hold_the_evaluated_rates() {
    let (_g, (a, b)) = models();
    let ds = data();
    let atk = spec(AttackKind::RStepLl, 16.0 / 256.0);
    let opts = EvalOpts { attack: Some(atk.clone()), seed: 5, limit: Some(128), ..Default::default() };
    let t1 = tables::table1(&[a, b], &ds, &[16.0 / 256.0, 4.0 / 256.0], &opts).unwrap();
    assert_eq!(t1.columns, vec!["ε", "16/256", "4/256", "Clean data"]);
    let clean_b = evaluate(b, &ds, &EvalOpts { attack: None, ..opts.clone() }).unwrap();
    assert_eq!(t1.rows[1][3], Cell::rate(clean_b.accuracy));

    // "before" = A, "after" = B for the two names: each cell must be the matching evaluation.
    let pairs = [Pair { name: "net1", before: a, after: b }, Pair { name: "net2", before: b, after: a }];
    let t2 = tables::table2(&pairs, &ds, &opts).unwrap();
    let wa = evaluate(a, &ds, &opts).unwrap();
    let wb = evaluate(b, &ds, &opts).unwrap();
    assert_eq!(t2.rows[0][1], Cell::change(wa.accuracy, wb.accuracy));
    assert_eq!(t2.rows[1][2], Cell::change(wb.one_off, wa.one_off));
    assert!(t2.to_string().contains(" → "));

    let t4 = tables::table4(&pairs, &ds, &opts).unwrap();
    let a_from_b = evaluate(a, &ds, &EvalOpts { sources: Sources::From(vec![b]), ..opts.clone() }).unwrap();
    assert_eq!(t4.rows.len(), 2);
    assert_eq!(t4.rows[0][..2], [Cell::text("net1"), Cell::text("net2")]);
    assert!(matches!(t4.rows[0][2], Cell::RateChange { before, .. } if before == a_from_b.accuracy));

    let t3 = tables::table3(&pairs[..1], b, &ds, &opts).unwrap();
    assert!(
        matches!(t3.rows[0][2], Cell::RateChange { after, .. } if after == wb.accuracy),
        "after = B attacked from B"
    );

    let targets = [Holdout { name: "T", variants: vec![("Undefended", a), ("SATM", b)] }];
    let t5 = tables::table5(&targets, &[b], &ds, &opts).unwrap();
    assert_eq!(
        t5.columns,
        vec!["Target", "Adv model", "Undefended Cr", "Undefended one-off", "SATM Cr", "SATM one-off"]
    );
    assert_eq!(t5.rows[0][2], Cell::rate(a_from_b.accuracy));
    assert_eq!(t5.rows[0][4], Cell::rate(wb.accuracy));

    // Several folds: per-fold tables merge into mean ± std.
    let t2b = tables::table2(&pairs, &ds, &EvalOpts { seed: 6, ..opts.clone() }).unwrap();
    let m = satm::core::report::Table::merge_folds(&[t2, t2b]).unwrap();
    assert!(matches!(m.rows[0][1], Cell::RateChange { before_std: Some(_), after_std: Some(_), .. }));
}

#[test]
fn robust_eval_is_worst_case_and_records_settings() {
    let (_g, (a, _)) = models();
    let ds = data();
    let o = RobustOpts {
        eps: 8.0 / 256.0,
        limit: Some(96),
        seed: 4,
        apgd_steps: 20,
        square_queries: 200,
        ..Default::default()
    };
    let r = robust_eval(a, &ds, &o).unwrap();
    let clean = evaluate(a, &ds, &EvalOpts { limit: Some(96), seed: 4, ..Default::default() }).unwrap();
    assert_eq!(r.clean.confusion, clean.confusion);
    let table = r.table();
    let rates: Vec<f64> = table.rows.iter().map(|row| row[2].value().unwrap()).collect();
    assert_eq!(rates.len(), 4, "clean + APGD-CE + APGD-DLR-T + Square");
    assert!(rates.windows(2).all(|w| w[1] <= w[0]), "cumulative robust accuracy must not grow: {rates:?}");
    assert!(r.worst.accuracy < clean.accuracy);
    assert_eq!(r.worst.accuracy, rates[3]);
    // The worst case is at least as strong as APGD-CE alone.
    let mut ce = AttackSpec::new(AttackKind::ApgdCe);
    ce.eps = o.eps;
    ce.steps = 20;
    let alone =
        evaluate(a, &ds, &EvalOpts { attack: Some(ce), limit: Some(96), seed: 4, ..Default::default() }).unwrap();
    assert!(r.worst.accuracy <= alone.accuracy + 1e-12);
    let notes = table.notes.join("\n");
    assert!(notes.contains("ε = 8/256") && notes.contains("seed 4") && notes.contains("queries=200"), "{notes}");
}

#[test]
fn masking_report_flags_detached_gradients_and_passes_a_normal_model() {
    let (_g, (a, b)) = models();
    let ds = data();
    let o = MaskingOpts {
        eps: 6.0 / 256.0,
        limit: Some(128),
        seed: 1,
        pgd_steps: 10,
        square_queries: 300,
        source: Some(b),
        ..Default::default()
    };
    let ok = masking_report(a, &ds, &o).unwrap();
    assert!(!ok.flagged, "a normal model was flagged:\n{ok}");
    if std::env::var_os("SATM_SHOW").is_some() {
        println!("{ok}");
    }
    let masked = Detached(a);
    let bad = masking_report(&masked, &ds, &o).unwrap();
    assert!(bad.flagged, "a model without input gradients passed:\n{bad}");
    if std::env::var_os("SATM_SHOW").is_some() {
        println!("{bad}");
    }
    let bad_grad = bad.check("bad_gradients").unwrap();
    assert!(bad_grad.flagged && bad_grad.value == Some(1.0), "{bad_grad:?}");
    let bad_table = bad.table();
    let grad_row = &bad_table.rows[1];
    assert_eq!(grad_row[1], Cell::rate(1.0), "every input gradient is missing");
    assert_eq!(grad_row[4], Cell::text("FLAG"));
}

fn run_script(src: &str) -> Result<rhai::Dynamic, String> {
    let engine = satm::script::new_engine();
    let mut scope = rhai::Scope::new();
    satm::script::run_source(&engine, src, "<test>", &mut scope)
}

#[test]
fn script_api_evaluates_and_fills_tables() {
    let _g = serial();
    let src = r#"
        threads(1);
        let d = synthetic(#{n: 40, classes: 4, size: 32, seed: 2});
        let a = model("vgg_s", #{classes: 4, width: 0.25});
        let b = model("vgg_s", #{classes: 4, width: 0.25});
        let clean = evaluate(a, d, #{batch: 16});
        let wb = evaluate(a, d, #{attack: "r_fgsm", eps: 8.0/256, seed: 3});
        let bb = evaluate(a, d, #{attack: "fgsm", eps: 8.0/256, sources: b});
        let tm = transfer_matrix(#{sources: [a, b], targets: [a, b], data: d, attack: "r_fgsm", eps: 8.0/256, seed: 3});
        let sw = eps_sweep(a, d, #{attack: "fgsm", eps: [0.0, 16.0/256], limit: 24});
        let t2 = table_white_box([wb, [wb, wb]], [bb, [bb, clean]], #{names: ["A", "B"]});
        let t5 = table_holdout(#{SATM: [bb], Undefended: [wb]});
        let t1 = table_eps([a], d, #{attack: "fgsm", eps: [4.0/256], limit: 16});
        let rb = robust_eval(a, d, #{eps: 4.0/256, steps: 2, queries: 4, limit: 16});
        let mr = masking_report(a, d, #{eps: 4.0/256, steps: 2, queries: 4, limit: 16, eps_factors: [1.0]});
        #{clean: clean, wb: wb, bb: bb, tm: tm.cell(0, 1), sw: sw, t2: t2.to_markdown(), t5: t5.columns,
          t1: t1.columns, rb: rb.table().rows(), mr: mr.table().cell(mr.table().rows() - 1, "Check").value}
    "#;
    let out = run_script(src).unwrap().cast::<rhai::Map>();
    let get = |k: &str| out.get(k).unwrap().clone();
    let clean = get("clean").cast::<rhai::Map>();
    assert_eq!(clean["n"].as_int().unwrap(), 40);
    assert_eq!(clean["setting"].to_string(), "clean");
    assert_eq!(clean["confusion"].clone().into_array().unwrap().len(), 4);
    let wb = get("wb").cast::<rhai::Map>();
    assert_eq!(wb["setting"].to_string(), "white-box");
    assert!(wb["attack"].to_string().contains("R+FGSM"));
    // The matrix diagonal equals evaluate()'s white-box result with the same seed.
    let tm = get("tm").cast::<rhai::Map>();
    assert_eq!(tm["value"].as_float().unwrap(), wb["accuracy"].as_float().unwrap());
    assert_eq!(get("bb").cast::<rhai::Map>()["setting"].to_string(), "black-box from vgg_s@w0.25");
    let sw = get("sw").cast::<rhai::Map>();
    assert_eq!(sw["accuracy"].clone().into_array().unwrap().len(), 2);
    let md = get("t2").into_string().unwrap();
    assert!(md.contains("| A | ") && md.contains(" → ") && md.contains(" ± "), "{md}");
    let t5: Vec<String> = get("t5").into_array().unwrap().iter().map(|c| c.to_string()).collect();
    assert_eq!(t5, ["Target", "Adv model", "Undefended Cr", "Undefended one-off", "SATM Cr", "SATM one-off"]);
    assert_eq!(get("t1").into_array().unwrap().len(), 3);
    assert_eq!(get("rb").as_int().unwrap(), 4);
    assert_eq!(get("mr").to_string(), "overall");

    // Options are checked: unknown keys, options for an attack without one, sources without an attack.
    let pre = "let d = synthetic(#{n: 8, classes: 4, size: 32}); let a = model(\"vgg_s\", #{classes: 4, width: 0.25});";
    let e = run_script(&format!("{pre} evaluate(a, d, #{{attack: \"fgsm\", steps: 3}})")).unwrap_err();
    assert!(e.contains("evaluate") && e.contains("steps"), "{e}");
    let e = run_script(&format!("{pre} evaluate(a, d, #{{eps: 0.1}})")).unwrap_err();
    assert!(e.contains("need an attack"), "{e}");
    let e = run_script(&format!("{pre} evaluate(a, d, #{{sources: a}})")).unwrap_err();
    assert!(e.contains("no attack"), "{e}");
    let e = run_script(&format!("{pre} evaluate(a, d, #{{attack: \"nope\"}})")).unwrap_err();
    assert!(e.contains("unknown attack"), "{e}");
}
