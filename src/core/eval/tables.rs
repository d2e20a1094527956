//! The paper's tables (1–5) as functions: builders that fill a [`Table`] from rates (one entry per fold; several
//! folds give mean ± sample std), and runners that evaluate models on one fold and call the builders.
//! Several folds: run a runner per fold and merge with [`Table::merge_folds`], or collect rates and call a builder.
use super::{EvalOpts, EvalResult, Rates, Sources, eval_subset, evaluate, evaluate_many, fmt_eps, with_eps};
use crate::core::attacks::AttackSpec;
use crate::core::data::Dataset;
use crate::core::eval::mean_std;
use crate::core::models::Classifier;
use crate::core::report::{Cell, Table};
use anyhow::{Result, bail};

/// One row of a "before → after" table: its label cells and the rates before and after (one per fold).
#[derive(Debug, Clone)]
pub struct ChangeRow {
    pub labels: Vec<String>,
    pub before: Vec<Rates>,
    pub after: Vec<Rates>,
}

/// One row of a table comparing variants (Undefended / Ensemble / SATM): label cells, then per variant the rates
/// (one per fold).
#[derive(Debug, Clone)]
pub struct VariantsRow {
    pub labels: Vec<String>,
    pub variants: Vec<Vec<Rates>>,
}

/// A network before and after a defence, under one name.
#[derive(Clone, Copy)]
pub struct Pair<'a> {
    pub name: &'a str,
    pub before: &'a dyn Classifier,
    pub after: &'a dyn Classifier,
}

/// A rate cell over folds: a plain rate for one fold, mean ± std for several.
fn fold_cell(v: &[f64]) -> Result<Cell> {
    match v {
        [] => bail!("no folds"),
        [x] => Ok(Cell::rate(*x)),
        _ => Cell::mean_std(v),
    }
}

/// A "before → after" cell over folds (stds on both sides for several folds).
fn change_cell(b: &[f64], a: &[f64]) -> Result<Cell> {
    if b.is_empty() || b.len() != a.len() {
        bail!("{} folds before but {} after", b.len(), a.len());
    }
    if b.len() == 1 {
        return Ok(Cell::change(b[0], a[0]));
    }
    let ((bm, bs), (am, as_)) = (mean_std(b)?, mean_std(a)?);
    Ok(Cell::RateChange { before: bm, after: am, before_std: Some(bs), after_std: Some(as_) })
}

fn fold_note(t: &mut Table, folds: usize) {
    if folds > 1 {
        t.note(format!("mean ± sample std (n − 1) over {folds} folds"));
    }
}

/// Columns `label_cols` + "Cr" + "One-off", each rate cell "before → after" like the paper's Tables 2–4.
pub fn change_table(title: &str, label_cols: &[&str], rows: &[ChangeRow]) -> Result<Table> {
    let mut cols: Vec<&str> = label_cols.to_vec();
    cols.extend(["Cr", "One-off"]);
    let mut t = Table::new(title, &cols);
    let mut folds = 0;
    for (i, r) in rows.iter().enumerate() {
        if r.labels.len() != label_cols.len() {
            bail!("row {i}: {} labels for {} label columns", r.labels.len(), label_cols.len());
        }
        folds = folds.max(r.before.len());
        let acc = |v: &[Rates]| v.iter().map(|r| r.accuracy).collect::<Vec<_>>();
        let one = |v: &[Rates]| v.iter().map(|r| r.one_off).collect::<Vec<_>>();
        let mut cells: Vec<Cell> = r.labels.iter().map(Cell::text).collect();
        cells.push(change_cell(&acc(&r.before), &acc(&r.after))?);
        cells.push(change_cell(&one(&r.before), &one(&r.after))?);
        t.push(cells)?;
    }
    fold_note(&mut t, folds);
    Ok(t)
}

/// Columns `label_cols`, then "<variant> Cr" and "<variant> one-off" per variant (the paper's Table 5 writes them
/// as "Cr/one-off" in one cell).
pub fn variants_table(title: &str, label_cols: &[&str], variants: &[String], rows: &[VariantsRow]) -> Result<Table> {
    let mut cols: Vec<String> = label_cols.iter().map(|s| s.to_string()).collect();
    for v in variants {
        cols.push(format!("{v} Cr"));
        cols.push(format!("{v} one-off"));
    }
    let mut t = Table { title: title.to_string(), columns: cols, rows: vec![], notes: vec![] };
    let mut folds = 0;
    for (i, r) in rows.iter().enumerate() {
        if r.labels.len() != label_cols.len() || r.variants.len() != variants.len() {
            bail!(
                "row {i}: {} labels and {} variants, expected {} and {}",
                r.labels.len(),
                r.variants.len(),
                label_cols.len(),
                variants.len()
            );
        }
        let mut cells: Vec<Cell> = r.labels.iter().map(Cell::text).collect();
        for v in &r.variants {
            folds = folds.max(v.len());
            cells.push(fold_cell(&v.iter().map(|r| r.accuracy).collect::<Vec<_>>())?);
            cells.push(fold_cell(&v.iter().map(|r| r.one_off).collect::<Vec<_>>())?);
        }
        t.push(cells)?;
    }
    fold_note(&mut t, folds);
    Ok(t)
}

/// The attack of `opts`, or the paper's R+Step-LL (ε = 16/256, α = ε/2).
fn attack_of(opts: &EvalOpts) -> AttackSpec {
    opts.attack.clone().unwrap_or_else(AttackSpec::paper_r_step_ll)
}

fn setting_notes(t: &mut Table, attack: &AttackSpec, data: &Dataset, n: u64, opts: &EvalOpts) {
    t.note(format!("attack: {}", attack.describe()));
    let subset = match opts.limit {
        Some(l) if l < data.len() => format!(" (seeded subset of {l})"),
        _ => String::new(),
    };
    t.note(format!("data: '{}', n = {n}{subset}, seed {}", data.name, opts.seed));
}

fn white_box(model: &dyn Classifier, data: &Dataset, attack: &AttackSpec, opts: &EvalOpts) -> Result<EvalResult> {
    evaluate(model, data, &EvalOpts { attack: Some(attack.clone()), sources: Sources::WhiteBox, ..opts.clone() })
}

fn from(
    target: &dyn Classifier,
    source: &dyn Classifier,
    data: &Dataset,
    attack: &AttackSpec,
    opts: &EvalOpts,
) -> Result<EvalResult> {
    evaluate(
        target,
        data,
        &EvalOpts { attack: Some(attack.clone()), sources: Sources::From(vec![source]), ..opts.clone() },
    )
}

/// Table 1: white-box classification rate of each model for each ε (the attack's α and step scale with ε), plus
/// clean data.
pub fn table1(models: &[&dyn Classifier], data: &Dataset, eps: &[f64], opts: &EvalOpts) -> Result<Table> {
    let attack = attack_of(opts);
    let mut cols = vec!["ε".to_string()];
    cols.extend(eps.iter().map(|e| fmt_eps(*e)));
    cols.push("Clean data".into());
    let mut t = Table {
        title: format!("Table 1. Classification rates of white-box attacks ({})", attack.kind.title()),
        columns: cols,
        rows: vec![],
        notes: vec![],
    };
    let mut n = 0;
    for m in models {
        let mut cells = vec![Cell::text(m.label())];
        for &e in eps {
            cells.push(Cell::rate(white_box(*m, data, &with_eps(&attack, e), opts)?.accuracy));
        }
        let clean = evaluate(*m, data, &EvalOpts { attack: None, ..opts.clone() })?;
        n = clean.n;
        cells.push(Cell::rate(clean.accuracy));
        t.push(cells)?;
    }
    setting_notes(&mut t, &attack, data, n, opts);
    Ok(t)
}

/// Table 2: white-box Cr and one-off of each network before → after the defence.
pub fn table2(pairs: &[Pair], data: &Dataset, opts: &EvalOpts) -> Result<Table> {
    let attack = attack_of(opts);
    let mut rows = vec![];
    let mut n = 0;
    for p in pairs {
        let b = white_box(p.before, data, &attack, opts)?;
        let a = white_box(p.after, data, &attack, opts)?;
        n = a.n;
        rows.push(ChangeRow { labels: vec![p.name.to_string()], before: vec![b.rates()], after: vec![a.rates()] });
    }
    let mut t = change_table("Table 2. White-box attacks, before → after", &["Model"], &rows)?;
    setting_notes(&mut t, &attack, data, n, opts);
    Ok(t)
}

/// Table 3: adversarial examples crafted on each network before → after the defence, evaluated on an undefended
/// third network `target` (they should stay about as strong).
pub fn table3(pairs: &[Pair], target: &dyn Classifier, data: &Dataset, opts: &EvalOpts) -> Result<Table> {
    let attack = attack_of(opts);
    let mut rows = vec![];
    let mut n = 0;
    for p in pairs {
        let b = from(target, p.before, data, &attack, opts)?;
        let a = from(target, p.after, data, &attack, opts)?;
        n = a.n;
        rows.push(ChangeRow {
            labels: vec![target.label(), p.name.to_string()],
            before: vec![b.rates()],
            after: vec![a.rates()],
        });
    }
    let mut t =
        change_table("Table 3. Transfer to an undefended network, before → after", &["Target", "Adv model"], &rows)?;
    setting_notes(&mut t, &attack, data, n, opts);
    Ok(t)
}

/// Table 4: black-box attacks between the defended networks (every ordered pair A ← B), before → after: network A
/// before is attacked from B before, A after from B after. Clean rates before → after go in the notes.
pub fn table4(pairs: &[Pair], data: &Dataset, opts: &EvalOpts) -> Result<Table> {
    if pairs.len() < 2 {
        bail!("table 4 needs at least two networks");
    }
    let attack = attack_of(opts);
    let mut rows = vec![];
    let mut n = 0;
    for (i, a) in pairs.iter().enumerate() {
        for (j, b) in pairs.iter().enumerate() {
            if i == j {
                continue;
            }
            let before = from(a.before, b.before, data, &attack, opts)?;
            let after = from(a.after, b.after, data, &attack, opts)?;
            n = after.n;
            rows.push(ChangeRow {
                labels: vec![a.name.to_string(), b.name.to_string()],
                before: vec![before.rates()],
                after: vec![after.rates()],
            });
        }
    }
    let mut t = change_table("Table 4. Black-box attacks, before → after", &["Target", "Adv model"], &rows)?;
    for p in pairs {
        let clean = |m: &dyn Classifier| evaluate(m, data, &EvalOpts { attack: None, ..opts.clone() });
        t.note(format!(
            "clean Cr of {}: {}",
            p.name,
            Cell::change(clean(p.before)?.accuracy, clean(p.after)?.accuracy)
        ));
    }
    setting_notes(&mut t, &attack, data, n, opts);
    Ok(t)
}

/// A target network in several variants (e.g. Undefended, Ensemble, SATM) for Table 5; every target lists the same
/// variant names in the same order.
pub struct Holdout<'a> {
    pub name: &'a str,
    pub variants: Vec<(&'a str, &'a dyn Classifier)>,
}

/// Table 5: black-box attacks from hold-out attackers on each target in each variant. The examples are crafted once
/// per attacker and batch and evaluated on every variant, so variants are compared on identical inputs.
pub fn table5(targets: &[Holdout], attackers: &[&dyn Classifier], data: &Dataset, opts: &EvalOpts) -> Result<Table> {
    let Some(first) = targets.first() else { bail!("table 5 needs at least one target") };
    let names: Vec<String> = first.variants.iter().map(|v| v.0.to_string()).collect();
    for t in targets {
        let tn: Vec<String> = t.variants.iter().map(|v| v.0.to_string()).collect();
        if tn != names {
            bail!("target {} has variants {tn:?}, target {} has {names:?}", t.name, first.name);
        }
    }
    let attack = attack_of(opts);
    let sub = eval_subset(data, opts.limit, opts.seed)?;
    let d = sub.as_ref().unwrap_or(data);
    let models: Vec<&dyn Classifier> = targets.iter().flat_map(|t| t.variants.iter().map(|v| v.1)).collect();
    let mut rows = vec![];
    let mut n = 0;
    for atk in attackers {
        let res = evaluate_many(&models, d, Some(&attack), &Sources::From(vec![*atk]), opts)?;
        let mut it = res.into_iter();
        for t in targets {
            let variants: Vec<Vec<Rates>> =
                t.variants.iter().filter_map(|_| it.next()).map(|r| vec![r.rates()]).collect();
            n = variants.first().and_then(|v| v.first()).map(|r| r.n).unwrap_or(n);
            rows.push(VariantsRow { labels: vec![t.name.to_string(), atk.label()], variants });
        }
    }
    let mut t =
        variants_table("Table 5. Black-box attacks from hold-out networks", &["Target", "Adv model"], &names, &rows)?;
    setting_notes(&mut t, &attack, data, n, opts);
    Ok(t)
}
