//! Grid expansion: `--over key=spec` axes into the cartesian product of points.
//!
//! A spec is an inclusive integer range `a..b` (`0..4` is 0, 1, 2, 3, 4 — five folds, like the paper), optionally with
//! a step `a..b:s`, or a comma-separated list `undefended,ensemble,satm`. Each value is typed like `--set`: int, then
//! float, then bool, else string; its text is passed to `satm run --set` unchanged, so `1.0` stays a float.
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// One grid value: the text given on the command line and its typed JSON form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    pub key: String,
    /// Exactly as typed; what `--set key=raw` receives.
    pub raw: String,
    /// Typed like `--set`: int, float, bool or string.
    pub value: serde_json::Value,
}

impl Param {
    /// `key=raw`, the form `--set` takes.
    pub fn set_arg(&self) -> String {
        format!("{}={}", self.key, self.raw)
    }
}

/// One axis of the grid: a key and its values in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub key: String,
    pub values: Vec<String>,
}

/// Types a value the way `satm run --set` does (int, then float, then bool, else string).
pub fn typed(raw: &str) -> serde_json::Value {
    if let Ok(i) = raw.parse::<i64>() {
        serde_json::Value::from(i)
    } else if let Ok(f) = raw.parse::<f64>() {
        serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| serde_json::Value::String(raw.to_string()))
    } else if raw == "true" || raw == "false" {
        serde_json::Value::Bool(raw == "true")
    } else {
        serde_json::Value::String(raw.trim_matches('"').to_string())
    }
}

/// Checks a parameter name the way `--set` does: letters, digits, `_`, not starting with a digit.
pub fn check_key(k: &str, flag: &str, whole: &str) -> Result<()> {
    let ok = !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        bail!("{flag} '{whole}': '{k}' is not a valid name (letters, digits, _; not starting with a digit)");
    }
    Ok(())
}

fn parse_int(s: &str, what: &str, whole: &str) -> Result<i64> {
    s.trim().parse::<i64>().with_context(|| format!("--over '{whole}': {what} '{s}' is not an integer"))
}

/// Parses `key=spec` from `--over`.
pub fn parse_axis(s: &str) -> Result<Axis> {
    let (k, spec) =
        s.split_once('=').with_context(|| format!("--over '{s}': expected key=values (fold=0..4 or arm=a,b,c)"))?;
    let key = k.trim().to_string();
    check_key(&key, "--over", s)?;
    let spec = spec.trim();
    let values: Vec<String> = if let Some((a, rest)) = spec.split_once("..") {
        let rest = rest.strip_prefix('=').unwrap_or(rest);
        let (b, step) = match rest.split_once(':') {
            Some((b, st)) => (b, parse_int(st, "step", s)?),
            None => (rest, 1),
        };
        let (a, b) = (parse_int(a, "start", s)?, parse_int(b, "end", s)?);
        if step <= 0 {
            bail!("--over '{s}': the step must be positive, got {step}");
        }
        if b < a {
            bail!("--over '{s}': the range {a}..{b} is empty (ranges are inclusive and count up: 0..4 is 0,1,2,3,4)");
        }
        let n = (b - a) / step + 1;
        if n > 100_000 {
            bail!("--over '{s}': {n} values is more than a grid should hold");
        }
        (0..n).map(|i| (a + i * step).to_string()).collect()
    } else {
        spec.split(',').map(|v| v.trim().to_string()).collect()
    };
    if values.iter().any(|v| v.is_empty()) {
        bail!("--over '{s}': empty value in the list");
    }
    for (i, v) in values.iter().enumerate() {
        if values[..i].contains(v) {
            bail!("--over '{s}': value '{v}' is given twice");
        }
    }
    Ok(Axis { key, values })
}

/// The cartesian product of the axes, the first axis varying slowest (`--over fold=0..1 --over arm=a,b` gives
/// fold=0,arm=a; fold=0,arm=b; fold=1,arm=a; fold=1,arm=b).
pub fn cartesian(axes: &[Axis]) -> Result<Vec<Vec<Param>>> {
    for (i, a) in axes.iter().enumerate() {
        if axes[..i].iter().any(|b| b.key == a.key) {
            bail!("--over: key '{}' is given twice", a.key);
        }
    }
    let total: usize = axes.iter().try_fold(1usize, |acc, a| acc.checked_mul(a.values.len())).unwrap_or(usize::MAX);
    if total > 100_000 {
        bail!("--over: the grid has {total} points, more than 100000");
    }
    let mut points: Vec<Vec<Param>> = vec![vec![]];
    for axis in axes {
        let mut next = Vec::with_capacity(points.len() * axis.values.len());
        for p in &points {
            for v in &axis.values {
                let mut q = p.clone();
                q.push(Param { key: axis.key.clone(), raw: v.clone(), value: typed(v) });
                next.push(q);
            }
        }
        points = next;
    }
    Ok(points)
}

/// The point's name, `k=v,k=v` in axis order (what status and collect print).
pub fn point_name(params: &[Param]) -> String {
    params.iter().map(|p| p.set_arg()).collect::<Vec<_>>().join(",")
}

/// The point's directory name: its name with every byte outside `[A-Za-z0-9._=,+-]` written `%XX`, so a value with a
/// `/` or a space cannot escape or break the path.
pub fn dir_name(params: &[Param]) -> String {
    let name = point_name(params);
    if name.is_empty() {
        return "single".into();
    }
    // Names start with a key (an identifier), so the result never starts with '.' and is never "." or "..".
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"._=,+-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // File names are limited to 255 bytes: long names keep a readable prefix and a hash of the whole name.
    if out.len() > 200 {
        use sha2::Digest;
        let h = sha2::Sha256::digest(name.as_bytes());
        let hex: String = h.iter().take(8).map(|b| format!("{b:02x}")).collect();
        out.truncate(180);
        out.push('~');
        out.push_str(&hex);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive_and_stepped() {
        assert_eq!(parse_axis("fold=0..4").unwrap().values, vec!["0", "1", "2", "3", "4"]);
        assert_eq!(parse_axis("e=4..32:4").unwrap().values.len(), 8);
        assert_eq!(parse_axis("e=-2..=0").unwrap().values, vec!["-2", "-1", "0"]);
        assert!(parse_axis("fold=4..0").is_err());
        assert!(parse_axis("fold=0..x").is_err());
        assert!(parse_axis("1x=0..2").is_err());
        assert!(parse_axis("arm=a,,b").is_err());
        assert!(parse_axis("arm=a,a").is_err());
    }

    #[test]
    fn values_are_typed_like_set() {
        assert_eq!(typed("3"), serde_json::json!(3));
        assert_eq!(typed("1.0"), serde_json::json!(1.0));
        assert!(typed("1.0").is_f64());
        assert_eq!(typed("true"), serde_json::json!(true));
        assert_eq!(typed("satm"), serde_json::json!("satm"));
    }

    #[test]
    fn cartesian_order_and_names() {
        let axes = vec![parse_axis("fold=0..1").unwrap(), parse_axis("arm=a,b,c").unwrap()];
        let pts = cartesian(&axes).unwrap();
        assert_eq!(pts.len(), 6);
        let names: Vec<String> = pts.iter().map(|p| point_name(p)).collect();
        assert_eq!(names[0], "fold=0,arm=a");
        assert_eq!(names[1], "fold=0,arm=b");
        assert_eq!(names[5], "fold=1,arm=c");
        assert!(cartesian(&[axes[0].clone(), axes[0].clone()]).is_err());
    }

    #[test]
    fn dir_names_escape_path_characters() {
        let p = vec![Param { key: "data".into(), raw: "a/b c".into(), value: typed("a/b c") }];
        assert_eq!(dir_name(&p), "data=a%2Fb%20c");
        assert_eq!(dir_name(&[]), "single");
    }
}
