//! Every script in scripts/ runs end to end at `--set scale=test` (tiny data, a few steps) and writes its tables,
//! plots and results.json.
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(script: &str, out: &Path) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(env!("CARGO_BIN_EXE_satm"))
        .current_dir(&root)
        .args(["run", &format!("scripts/{script}.rhai"), "--set", "scale=test", "-q", "--out"])
        .arg(out)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{script} failed:\n{text}");
    text
}

fn check(out: &Path, tables: &[&str], plots: &[&str]) {
    for t in tables {
        for ext in ["md", "csv", "json"] {
            let p = out.join(format!("tables/{t}.{ext}"));
            assert!(p.is_file(), "missing {}", p.display());
        }
    }
    for p in plots {
        let img = image::open(out.join(format!("plots/{p}.png"))).unwrap_or_else(|e| panic!("{p}.png: {e}"));
        assert!(img.width() >= 100 && img.height() >= 100);
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    for t in tables {
        assert!(results[t]["rows"].as_array().is_some_and(|r| !r.is_empty()), "results.json lacks table {t}");
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("satm-smoke-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn quickstart_runs_and_says_where_outputs_went() {
    let out = tmp("quickstart");
    let text = run("quickstart", &out);
    assert!(text.contains("Table 4 analog") && text.contains(&format!("outputs: {}", out.display())), "{text}");
    check(&out, &["table4", "clean"], &["satm_curves"]);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn paper_tables_runs_every_table_over_folds() {
    let out = tmp("paper");
    let text = run("paper_tables", &out);
    assert!(text.contains("over 2 folds"), "{text}");
    check(
        &out,
        &["table1", "table2", "table3", "table4", "table5", "clean", "masking_satm_A", "masking_satm_B"],
        &["fig3_4_satm_curves", "fig1_adversarial_pairs"],
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn ablation_frozen_and_sweep_scripts_run() {
    for (script, table) in [("ablation_k3", "ablation_k3"), ("frozen_b", "frozen_b"), ("sweep_r", "sweep_r")] {
        let out = tmp(script);
        run(script, &out);
        check(&out, &[table], &[]);
        let _ = std::fs::remove_dir_all(&out);
    }
}
