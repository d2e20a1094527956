//! Documentation of every registered function: the REPL's `:help name`, `:functions`, completion and hints read it.
use rhai::FuncRegistration;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Clone)]
pub struct FnDoc {
    pub name: String,
    /// e.g. `attack(name: &str, model: Model, x: Tensor, y: Tensor, opts: Map) -> Tensor`
    pub signature: String,
    pub doc: String,
}

static DOCS: Mutex<BTreeMap<String, Vec<FnDoc>>> = Mutex::new(BTreeMap::new());

/// Starts a documented registration: `doc("seed", &["seed: int"], "()", "Seeds every RNG.").register_into_engine(e, f)`.
/// Methods are registered the same way with the receiver as the first parameter (`x: Tensor`).
pub fn doc(name: &str, params: &[&str], ret: &str, text: &str) -> FuncRegistration {
    let signature = if ret.is_empty() || ret == "()" {
        format!("{name}({})", params.join(", "))
    } else {
        format!("{name}({}) -> {ret}", params.join(", "))
    };
    let mut docs = DOCS.lock().unwrap_or_else(|e| e.into_inner());
    let list = docs.entry(name.to_string()).or_default();
    if !list.iter().any(|d| d.signature == signature) {
        list.push(FnDoc { name: name.to_string(), signature, doc: text.trim().to_string() });
    }
    drop(docs);
    let comments: Vec<String> = text.trim().lines().map(|l| format!("/// {l}")).collect();
    let mut info: Vec<String> = params.iter().map(|s| s.to_string()).collect();
    if !ret.is_empty() {
        info.push(ret.to_string());
    }
    FuncRegistration::new(name).with_params_info(info).with_comments([comments.join("\n")])
}

/// All overloads documented under `name`.
pub fn lookup(name: &str) -> Vec<FnDoc> {
    DOCS.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned().unwrap_or_default()
}

/// Every documented function, sorted by name.
pub fn all() -> Vec<FnDoc> {
    DOCS.lock().unwrap_or_else(|e| e.into_inner()).values().flatten().cloned().collect()
}

pub fn names() -> Vec<String> {
    DOCS.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
}
