//! Tables (Markdown/CSV snapshots, JSON round trip, saving, merging folds) and PNG plots.
use satm::core::eval::Confusion;
use satm::core::report::{Cell, CurveOpts, PlotOpts, Table, plot, plot_confusion, plot_curves, plot_eps};
use satm::core::train::History;

fn paper_table4() -> Table {
    let mut t = Table::new("Table 4. Black-box attacks", &["Target", "Adv model", "Cr", "One-off", "n"]);
    t.push(vec![
        Cell::text("VGG16-Face"),
        Cell::text("ResNet50-Face"),
        Cell::change(0.3539, 0.524),
        Cell::change(0.6699, 0.8855),
        Cell::int(120),
    ])
    .unwrap();
    t.push(vec![
        Cell::text("ResNet50-Face"),
        Cell::text("VGG|16"),
        Cell::change(0.1625, 0.4325),
        Cell::Empty,
        Cell::int(120),
    ])
    .unwrap();
    t.note("attack: R+Step-LL, eps = 16/256");
    t
}

#[test]
fn markdown_snapshot() {
    let md = paper_table4().to_markdown();
    let want = "**Table 4. Black-box attacks**\n\n\
| Target | Adv model | Cr | One-off | n |\n\
| --- | --- | --- | --- | --- |\n\
| VGG16-Face | ResNet50-Face | 35.39% → 52.40% | 66.99% → 88.55% | 120 |\n\
| ResNet50-Face | VGG\\|16 | 16.25% → 43.25% |  | 120 |\n\
\n\
- attack: R+Step-LL, eps = 16/256\n";
    assert_eq!(md, want);
}

#[test]
fn csv_snapshot_numbers_stay_numbers() {
    let csv = paper_table4().to_csv().unwrap();
    let want = "Target,Adv model,Cr before,Cr after,One-off before,One-off after,n\n\
VGG16-Face,ResNet50-Face,0.3539,0.524,0.6699,0.8855,120\n\
ResNet50-Face,VGG|16,0.1625,0.4325,,,120\n";
    assert_eq!(csv, want);
}

#[test]
fn json_values_are_numbers_and_round_trip() {
    let t = paper_table4();
    let json = t.to_json();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cr = &v["rows"][0][2];
    assert_eq!(cr["type"], "rate_change");
    assert_eq!(cr["before"].as_f64(), Some(0.3539));
    assert_eq!(cr["after"].as_f64(), Some(0.524));
    assert_eq!(v["rows"][0][4]["value"].as_i64(), Some(120));
    assert_eq!(Table::from_json(&json).unwrap(), t);
    // NaN (an empty evaluation) is written as null and read back as NaN, not an error.
    let mut n = Table::new("nan", &["x"]);
    n.push(vec![Cell::rate(f64::NAN)]).unwrap();
    let back = Table::from_json(&n.to_json()).unwrap();
    assert!(matches!(back.rows[0][0], Cell::Rate { value } if value.is_nan()));
    // A row of the wrong width is rejected.
    assert!(Table::from_json(r#"{"title":"x","columns":["a","b"],"rows":[[{"type":"empty"}]],"notes":[]}"#).is_err());
}

#[test]
fn save_by_extension_or_stem() {
    let dir = tempfile::tempdir().unwrap();
    let t = paper_table4();
    let one = t.save(dir.path().join("t.md")).unwrap();
    assert_eq!(one, vec![dir.path().join("t.md")]);
    assert_eq!(std::fs::read_to_string(&one[0]).unwrap(), t.to_markdown());
    assert!(!dir.path().join("t.csv").exists());
    let all = t.save(dir.path().join("sub/table4")).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(std::fs::read_to_string(dir.path().join("sub/table4.csv")).unwrap(), t.to_csv().unwrap());
    let back = Table::from_json(&std::fs::read_to_string(dir.path().join("sub/table4.json")).unwrap()).unwrap();
    assert_eq!(back, t);
    // No temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with(".satm-tmp")), "{names:?}");
}

#[test]
fn merge_folds_mean_and_sample_std() {
    let fold = |cr: f64, before: f64, after: f64, n: i64| {
        let mut t = Table::new("T", &["Model", "Cr", "Change", "n"]);
        t.push(vec![Cell::text("A"), Cell::rate(cr), Cell::change(before, after), Cell::int(n)]).unwrap();
        t.note("eps 16/256");
        t
    };
    let m = Table::merge_folds(&[fold(0.2, 0.1, 0.5, 10), fold(0.4, 0.3, 0.5, 10), fold(0.6, 0.2, 0.8, 13)]).unwrap();
    match &m.rows[0][1] {
        Cell::RateMeanStd { mean, std, n } => {
            assert!((mean - 0.4).abs() < 1e-12);
            assert!((std - 0.2).abs() < 1e-12, "sample std expected, got {std}");
            assert_eq!(*n, 3);
        }
        c => panic!("expected mean ± std, got {c:?}"),
    }
    match &m.rows[0][2] {
        Cell::RateChange { before, after, before_std: Some(bs), after_std: Some(as_) } => {
            assert!((before - 0.2).abs() < 1e-12 && (after - 0.6).abs() < 1e-12);
            assert!((bs - 0.1).abs() < 1e-12);
            assert!((as_ - 0.1732050807568877).abs() < 1e-12);
        }
        c => panic!("expected a change with stds, got {c:?}"),
    }
    assert_eq!(m.rows[0][3], Cell::num(11.0, 1));
    assert_eq!(m.rows[0][0], Cell::text("A"));
    assert_eq!(m.rows[0][1].to_string(), "40.00% ± 20.00");
    assert_eq!(m.rows[0][2].to_string(), "20.00% ± 10.00 → 60.00% ± 17.32");
    assert_eq!(m.notes.len(), 2);
    let csv = m.to_csv().unwrap();
    assert!(
        csv.starts_with("Model,Cr,Cr std,Change before,Change after,Change before std,Change after std,n\n"),
        "{csv}"
    );
    // Shapes and labels must agree.
    let mut other = fold(0.1, 0.1, 0.1, 1);
    other.rows[0][0] = Cell::text("B");
    assert!(Table::merge_folds(&[fold(0.2, 0.1, 0.5, 10), other]).is_err());
    assert!(Table::merge_folds(&[]).is_err());
}

fn decode(path: &std::path::Path) -> image::RgbImage {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap().to_rgb8()
}

fn ink(img: &image::RgbImage) -> usize {
    img.pixels().filter(|p| p.0 != [255, 255, 255]).count()
}

#[test]
fn curves_png_has_expected_size_and_content() {
    let mut h = History::default();
    for step in 0..20 {
        let s = step as f64 / 20.0;
        for net in ["A", "B"] {
            h.push(step * 10, 0, "train", net, "clean_acc", if net == "A" { 0.3 + 0.6 * s } else { 0.2 + 0.5 * s });
            h.push(step * 10, 0, "train", net, "adv_acc", 0.1 + 0.7 * s);
            if step % 5 == 0 {
                h.push(step * 10, 0, "val", net, "clean_acc", 0.3 + 0.4 * s);
                h.push(step * 10, 0, "val", net, "adv_acc", 0.2 + 0.4 * s);
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("curves.png");
    let mut o = CurveOpts::default();
    o.plot.width = 900;
    o.plot.height = 400;
    o.plot.title = "SATM".into();
    plot_curves(&h, &p, &o).unwrap();
    let img = decode(&p);
    assert_eq!(img.dimensions(), (900, 400));
    assert!(ink(&img) > 5000, "the plot looks empty");
    // Metrics that are not in the history are an error, not an empty picture.
    o.metrics = vec!["nope".into()];
    assert!(plot_curves(&h, &dir.path().join("bad.png"), &o).is_err());
    assert!(!dir.path().join("bad.png").exists());
}

#[test]
fn eps_png_has_expected_size() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("eps.png");
    let s = vec![
        (
            "VGG".to_string(),
            vec![(4.0 / 256.0, 0.12), (8.0 / 256.0, 0.07), (16.0 / 256.0, 0.043), (32.0 / 256.0, 0.0395)],
        ),
        ("ResNet".to_string(), vec![(4.0 / 256.0, 0.218), (32.0 / 256.0, 0.043)]),
    ];
    plot_eps(&s, &p, &PlotOpts { width: 640, height: 480, title: String::new() }).unwrap();
    let img = decode(&p);
    assert_eq!(img.dimensions(), (640, 480));
    assert!(ink(&img) > 2000);
    assert!(plot_eps(&[], &p, &PlotOpts::default()).is_err());
}

#[test]
fn confusion_heat_map_colours_follow_the_matrix() {
    let conf = Confusion::from_counts(vec![vec![9, 1, 0], vec![0, 2, 8], vec![5, 0, 5]]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("conf.png");
    let labels: Vec<String> = ["0-2", "4-6", "8-13"].iter().map(|s| s.to_string()).collect();
    let o = PlotOpts { width: 500, height: 520, title: String::new() };
    plot_confusion(&conf, &labels, &p, &o).unwrap();
    let img = decode(&p);
    assert_eq!(img.dimensions(), (500, 520));
    let (left, top, cell) = plot::confusion_grid(500, 520, 3);
    // Sample each cell near its corner (away from the count text and the border).
    let px = |i: i32, j: i32| img.get_pixel((left + j * cell + 4) as u32, (top + i * cell + 4) as u32).0;
    let darkness = |p: [u8; 3]| 765 - (p[0] as i32 + p[1] as i32 + p[2] as i32);
    assert!(darkness(px(0, 0)) > darkness(px(1, 2)) && darkness(px(1, 2)) > darkness(px(2, 0)));
    assert!(darkness(px(2, 0)) > darkness(px(1, 1)));
    assert_eq!(px(0, 2), [255, 255, 255], "a zero cell stays white");
    assert!(plot_confusion(&conf, &labels[..2], &p, &o).is_err());
}

fn run(src: &str) -> Result<rhai::Dynamic, String> {
    let engine = satm::script::new_engine();
    let mut scope = rhai::Scope::new();
    satm::script::run_source(&engine, src, "<test>", &mut scope)
}

#[test]
fn script_tables_plots_and_record() {
    let dir = tempfile::tempdir().unwrap();
    satm::script::state::update(|s| s.out_dir = Some(dir.path().join("run")));
    let d = dir.path().display().to_string();
    let src = format!(
        r#"
        let t = table("Table 2. White-box", ["Model", "Cr", "One-off", "n"]);
        t.add_row(["VGG", change(0.043, 0.0722), change(#{{accuracy: 0.139}}, 0.2143), 120]);
        t.add_row(["ResNet", rate(0.0879), #{{mean: 0.263, std: 0.01, n: 5}}, ()]);
        t.note("eps 16/256");
        let files = t.save("{d}/t2");
        record("t2", t);
        let ms = mean_std([0.2, 0.4, 0.6]);
        plot_confusion([[3, 1], [0, 4]], "{d}/c.png", #{{width: 300, height: 320, labels: ["young", "old"]}});
        plot_eps(#{{A: [[0.0, 0.9], [0.03125, 0.2]]}}, "{d}/e.png");
        [files.len(), t.rows(), t.cell(0, "Cr").after, ms.std, t.to_markdown()]
    "#
    );
    let out = run(&src).unwrap().into_array().unwrap();
    assert_eq!(out[0].as_int().unwrap(), 3);
    assert_eq!(out[1].as_int().unwrap(), 2);
    assert!((out[2].as_float().unwrap() - 0.0722).abs() < 1e-12);
    assert!((out[3].as_float().unwrap() - 0.2).abs() < 1e-12);
    let md = out[4].clone().into_string().unwrap();
    assert!(md.contains("| VGG | 4.30% → 7.22% | 13.90% → 21.43% | 120 |"), "{md}");
    assert!(md.contains("| ResNet | 8.79% | 26.30% ± 1.00 |  |"), "{md}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/results.json")).unwrap()).unwrap();
    assert_eq!(results["t2"]["rows"][0][1]["before"].as_f64(), Some(0.043));
    assert_eq!(decode(&dir.path().join("c.png")).dimensions(), (300, 320));
    assert_eq!(decode(&dir.path().join("e.png")).dimensions(), (900, 600));
    // Bad input is a script error naming the function, not a crash.
    let e = run("let t = table(\"x\", [\"a\"]); t.add_row([1, 2]);").unwrap_err();
    assert!(e.contains("add_row") && e.contains("2 cells"), "{e}");
    let e = run("plot_eps(#{a: [[1]]}, \"/tmp/never.png\", #{colour: 1})").unwrap_err();
    assert!(e.contains("unknown option") && e.contains("width"), "{e}");
}
