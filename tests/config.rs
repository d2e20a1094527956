//! RON configs: an unknown field, a mistyped value, a missing field or a syntax error is an error that names the
//! file and the position; an unknown field also lists the valid ones.
use serde::Deserialize;

/// A config shaped like the project's presets.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct TrainConfig {
    lr: f64,
    epochs: u32,
    nets: Vec<String>,
    #[serde(default)]
    r_adv: f64,
    attack: AttackConfig,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct AttackConfig {
    eps: f64,
    steps: u32,
}

const GOOD: &str = r#"(
    lr: 0.00001,
    epochs: 3,
    nets: ["vgg16", "resnet50"],
    attack: (eps: 0.0625, steps: 1),
)"#;

#[test]
fn a_valid_config_parses_with_defaults() {
    let c: TrainConfig = satm::config::parse(GOOD, "configs/good.ron").unwrap();
    assert_eq!(
        c,
        TrainConfig {
            lr: 1e-5,
            epochs: 3,
            nets: vec!["vgg16".into(), "resnet50".into()],
            r_adv: 0.0,
            attack: AttackConfig { eps: 0.0625, steps: 1 }
        }
    );
}

#[test]
fn unknown_field_names_file_position_field_and_valid_fields() {
    let text = GOOD.replace("    epochs: 3,\n", "    epochs: 3,\n    r_dav: 1.0,\n");
    let err = satm::config::parse::<TrainConfig>(&text, "configs/typo.ron").unwrap_err().to_string();
    assert!(err.starts_with("config configs/typo.ron:4:"), "{err}");
    assert!(err.contains("r_dav"), "{err}");
    for valid in ["lr", "epochs", "nets", "r_adv", "attack"] {
        assert!(err.contains(&format!("`{valid}`")), "valid field {valid} missing from: {err}");
    }

    // In a nested struct the valid fields are the nested struct's.
    let text = GOOD.replace("steps: 1", "stepz: 1");
    let err = satm::config::parse::<TrainConfig>(&text, "configs/nested.ron").unwrap_err().to_string();
    assert!(err.starts_with("config configs/nested.ron:5:"), "{err}");
    assert!(
        err.contains("stepz") && err.contains("`eps`") && err.contains("`steps`") && !err.contains("`lr`"),
        "{err}"
    );
}

#[test]
fn wrong_type_missing_field_and_syntax_errors() {
    let text = GOOD.replace("epochs: 3", "epochs: \"three\"");
    let err = satm::config::parse::<TrainConfig>(&text, "configs/types.ron").unwrap_err().to_string();
    // Line 3 holds `    epochs: "three",`.
    assert!(err.starts_with("config configs/types.ron:3:"), "{err}");
    assert!(err.contains("Expected integer"), "{err}");

    let text = GOOD.replace("    lr: 0.00001,\n", "");
    let err = satm::config::parse::<TrainConfig>(&text, "configs/missing.ron").unwrap_err().to_string();
    assert!(err.starts_with("config configs/missing.ron:") && err.contains("`lr`"), "{err}");

    let text = GOOD.replace("epochs: 3,", "epochs 3,");
    let err = satm::config::parse::<TrainConfig>(&text, "configs/syntax.ron").unwrap_err().to_string();
    assert!(err.starts_with("config configs/syntax.ron:3:"), "{err}");
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("preset.ron");
    std::fs::write(&path, GOOD.replace("lr:", "learning_rate:")).unwrap();
    let err = satm::config::load::<TrainConfig>(&path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("config {}:2:", path.display())), "{err}");
    assert!(err.contains("learning_rate") && err.contains("`lr`"), "{err}");

    let missing = dir.path().join("absent.ron");
    let err = format!("{:#}", satm::config::load::<TrainConfig>(&missing).unwrap_err());
    assert!(err.starts_with(&format!("config {}: cannot read", missing.display())), "{err}");

    std::fs::write(&path, GOOD).unwrap();
    assert_eq!(satm::config::load::<TrainConfig>(&path).unwrap().epochs, 3);
}
