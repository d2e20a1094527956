//! One SATM step (Algorithm 1, Sections 4.1–4.3):
//!   1. one clean batch;
//!   2. `craft_sources`: adversarial examples of every source needed this step, crafted on that source from the same
//!      clean batch before any weight update (Algorithm 1 lines 5–6);
//!   3. `update_trainee` for each trainee: CE(clean) + r_adv·CE(adv from its sources) + r_da·DA(clean vs adv
//!      features through a GRL) [+ white_box·CE(own adv)], one optimizer step on the trainee and its DA head.
//!
//! The loss is written once (`part_losses`); a `Pass` decides only how it is evaluated and differentiated.
use super::config::{SourcePolicy, TrainConfig};
use super::grl::grl;
use super::parallel::{Job, SideBySide, attack_uses_noise, run_side_by_side};
use super::trainees::Trainee;
use crate::core::amp::Autocast;
use crate::core::attacks::{self, AttackSpec};
use crate::core::data::Batch;
use crate::core::models::{Classifier, DaHead, Net};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use tch::{Device, Kind, Reduction, Tensor};

/// A deterministic 64-bit mix (splitmix64), so per-step randomness depends only on (seed, step).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Which networks (indices: trainees 0..K, then frozen K..K+F) trainee `k` learns from at `step`.
pub fn sources_for(
    policy: &SourcePolicy,
    k: usize,
    n_trainees: usize,
    n_total: usize,
    step: usize,
    seed: u64,
) -> Vec<usize> {
    let others: Vec<usize> = match policy {
        SourcePolicy::Graph(g) => g.get(k).cloned().unwrap_or_default(),
        // The order (k+1, k+2, ... mod K, then frozen) makes round-robin match ref_satm.py's (k + 1 + it % (K−1)) % K.
        _ => (1..n_trainees).map(|d| (k + d) % n_trainees).chain(n_trainees..n_total).collect(),
    };
    if others.is_empty() {
        return others;
    }
    match policy {
        SourcePolicy::All => others,
        SourcePolicy::Random => {
            let r = mix(seed ^ mix(step as u64) ^ mix(0xA11CE + k as u64));
            vec![others[(r % others.len() as u64) as usize]]
        }
        SourcePolicy::RoundRobin | SourcePolicy::Graph(_) => vec![others[step % others.len()]],
    }
}

pub(crate) fn ce(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(logits.f_to_kind(Kind::Float)?.f_cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0)?)
}

pub(crate) fn accuracy(logits: &Tensor, y: &Tensor) -> Result<f64> {
    Ok(logits.f_argmax(-1, false)?.f_eq_tensor(y)?.f_to_kind(Kind::Float)?.f_mean(Kind::Float)?.f_double_value(&[])?)
}

/// The clean batch, moved to each device in use once.
pub struct OnDevices {
    batch: Batch,
    cache: BTreeMap<String, (Tensor, Tensor)>,
}

impl OnDevices {
    pub fn new(batch: Batch) -> OnDevices {
        OnDevices { batch, cache: BTreeMap::new() }
    }

    /// (images, labels) on `d`.
    pub fn get(&mut self, d: Device) -> (Tensor, Tensor) {
        let b = &self.batch;
        let (x, y) = self.cache.entry(format!("{d:?}")).or_insert_with(|| (b.x.to_device(d), b.y.to_device(d)));
        (x.shallow_clone(), y.shallow_clone())
    }

    pub fn size(&self) -> i64 {
        self.batch.y.size()[0]
    }
}

/// The adversarial examples of one step.
pub struct StepSources {
    /// The sources of each trainee (indices: trainees, then frozen networks).
    pub chosen: Vec<Vec<usize>>,
    /// Adversarial examples of the clean batch crafted on each source needed (and on each trainee itself when the
    /// white-box term is on).
    pub adv: BTreeMap<usize, Tensor>,
}

/// Adversarial examples of `x` on one source, with bf16 autocast when `bf16`; `noise` is the attack's random draw.
fn craft_on(
    spec: &AttackSpec,
    net: &Net,
    x: &Tensor,
    y: &Tensor,
    noise: Option<&Tensor>,
    bf16: bool,
) -> Result<Tensor> {
    let _ac = Autocast::new(net.device(), bf16)?;
    match noise {
        Some(n) => attacks::craft_with_noise(spec, &[net as &dyn Classifier], x, y, n),
        None => attacks::craft(spec, &[net as &dyn Classifier], x, y),
    }
}

/// Steps 1–2: the sources of each trainee at `step` (none when r_adv = r_da = 0) and their adversarial examples,
/// crafted before any update. `frozen_bf16[i]`: frozen network i runs under bf16 autocast; `labels` name every
/// network (trainees, then frozen) in errors.
#[allow(clippy::too_many_arguments)]
pub fn craft_sources(
    trainees: &mut [Trainee],
    frozen: &[&Net],
    frozen_bf16: &[bool],
    batch: &mut OnDevices,
    spec: &AttackSpec,
    cfg: &TrainConfig,
    w: &LossWeights,
    step: usize,
    par: &SideBySide,
    labels: &[String],
) -> Result<StepSources> {
    let k_tr = trainees.len();
    let n_total = k_tr + frozen.len();
    let chosen: Vec<Vec<usize>> = (0..k_tr)
        .map(|k| {
            if w.r_adv != 0.0 || w.r_da != 0.0 {
                sources_for(&cfg.sources, k, k_tr, n_total, step, cfg.seed)
            } else {
                vec![]
            }
        })
        .collect();
    let mut needed: Vec<usize> = chosen.iter().flatten().copied().collect();
    if w.white_box != 0.0 {
        needed.extend(0..k_tr);
    }
    needed.sort_unstable();
    needed.dedup();
    // R+Step-LL / R+FGSM draw their random step here, in source order, on the main thread: the draws do not depend
    // on whether the sources are then crafted one after another or side by side.
    let noise: BTreeMap<usize, Tensor> = if attack_uses_noise(spec) {
        let shape = batch.get(Device::Cpu).0.size();
        needed.iter().map(|&s| Ok((s, crate::core::random::randn(&shape)?))).collect::<Result<_>>()?
    } else {
        BTreeMap::new()
    };
    let mut adv: BTreeMap<usize, Tensor> = BTreeMap::new();
    let craft_err = |s: usize| format!("crafting adversarial examples on {} at step {step}", labels[s]);
    // Trainee sources side by side (one worker per network), frozen ones on this thread.
    let side_by_side: Vec<usize> =
        if par.craft { needed.iter().copied().filter(|&s| s < k_tr).collect() } else { vec![] };
    if !side_by_side.is_empty() {
        let (x, y) = batch.get(Device::Cpu);
        let mut jobs: Vec<Job<Tensor>> = vec![];
        for (s, t) in trainees.iter_mut().enumerate() {
            if !side_by_side.contains(&s) {
                continue;
            }
            // `&mut` although crafting only reads the network: a Net may move between threads, not be shared.
            let net: &mut Net = &mut *t.net;
            let (x, y, n) = (x.shallow_clone(), y.shallow_clone(), noise.get(&s).map(|t| t.shallow_clone()));
            let bf16 = t.bf16;
            jobs.push(Box::new(move || craft_on(spec, net, &x, &y, n.as_ref(), bf16)));
        }
        for (s, r) in side_by_side.iter().zip(run_side_by_side(jobs, &par.threads)) {
            adv.insert(*s, r.with_context(|| craft_err(*s))?);
        }
    }
    for &s in needed.iter().filter(|s| !side_by_side.contains(s)) {
        let (net, bf16): (&Net, bool) =
            if s < k_tr { (&*trainees[s].net, trainees[s].bf16) } else { (frozen[s - k_tr], frozen_bf16[s - k_tr]) };
        let (x, y) = batch.get(net.device());
        let xa = craft_on(spec, net, &x, &y, noise.get(&s), bf16).with_context(|| craft_err(s))?;
        adv.insert(s, xa);
    }
    Ok(StepSources { chosen, adv })
}

/// The weights of the loss terms at one step (the steerable ones as they stand then).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossWeights {
    pub r_adv: f64,
    pub r_da: f64,
    pub white_box: f64,
    /// The gradient reversal layer's λ.
    pub lambda: f64,
}

/// How a trainee's loss is evaluated and differentiated. Both give the same gradient: the loss is a sum of terms
/// that each depend on one part of the batch only (the DA loss is a mean over clean and adversarial examples, i.e.
/// (Σ_clean + Σ_adv) / n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The whole loss in one graph and one backward pass; without batch statistics the clean and adversarial
    /// examples go through one forward pass over [clean; adv] (the same math, and faster).
    Joint,
    /// One forward and one backward pass per part (clean, adversarial, white-box), gradients accumulating, so that
    /// only one part's activations are alive at a time. Used when the trainees are updated side by side, so that
    /// their activations together take no more memory than one trainee's joint pass.
    Split,
}

/// What one trainee's update logged, and its total loss (not finite: no update was made).
pub struct StepOut {
    pub metrics: Vec<(&'static str, f64)>,
    pub total: f64,
}

/// The parts of a trainee's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Clean,
    /// Examples crafted on the trainee's sources.
    Adv,
    /// Examples crafted on the trainee itself (the white-box term).
    Own,
}

impl Part {
    /// The weight of this part's cross-entropy.
    fn weight(self, w: &LossWeights) -> f64 {
        match self {
            Part::Clean => 1.0,
            Part::Adv => w.r_adv,
            Part::Own => w.white_box,
        }
    }

    /// The part's domain in the DA loss (0 clean, 1 adversarial); the white-box part is not in it.
    fn domain(self) -> Option<f64> {
        match self {
            Part::Clean => Some(0.0),
            Part::Adv => Some(1.0),
            Part::Own => None,
        }
    }

    fn metrics(self) -> (&'static str, Option<&'static str>) {
        match self {
            Part::Clean => ("clean_loss", Some("clean_acc")),
            Part::Adv => ("adv_loss", Some("adv_acc")),
            Part::Own => ("white_box_loss", None),
        }
    }
}

/// Sums of the DA loss and domain hits over the parts of one update, and its metrics.
#[derive(Default)]
struct Tally {
    metrics: Vec<(&'static str, f64)>,
    da_sum: f64,
    dom_hits: f64,
}

/// THE loss, over some parts of the batch with their features `[n_p, F]`: Σ weight_p·CE(head(f_p), y_p) +
/// r_da · Σ_{p with a domain} BCE_sum(DA(GRL_λ(f_p)), domain_p) / n_dom. `n_dom` counts the clean and adversarial
/// examples of the whole update, so that the DA term of all passes together is r_da × the mean BCE. The DA term is
/// there when the trainee has a DA head and `has_adv` (the update has adversarial examples from a source).
/// Returns None when nothing in these parts carries a gradient.
fn part_losses(
    net: &Net,
    da: Option<&DaHead>,
    parts: &[(Part, Tensor, Tensor)],
    w: &LossWeights,
    has_adv: bool,
    n_dom: f64,
    tally: &mut Tally,
) -> Result<Option<Tensor>> {
    let mut terms: Vec<Tensor> = vec![];
    for (part, f, y) in parts {
        let logits = net.head(f)?;
        let l = ce(&logits, y)?;
        let (lname, aname) = part.metrics();
        tally.metrics.push((lname, l.f_double_value(&[])?));
        if let Some(a) = aname {
            tally.metrics.push((a, accuracy(&logits, y)?));
        }
        let wt = part.weight(w);
        if *part == Part::Clean {
            terms.push(l);
        } else if wt != 0.0 {
            terms.push(l * wt);
        }
    }
    if let (Some(da), true) = (da, has_adv) {
        let dom_parts: Vec<(&Tensor, f64)> = parts.iter().filter_map(|(p, f, _)| p.domain().map(|d| (f, d))).collect();
        if !dom_parts.is_empty() {
            let feats: Vec<&Tensor> = dom_parts.iter().map(|(f, _)| *f).collect();
            let f = if feats.len() == 1 { feats[0].shallow_clone() } else { Tensor::f_cat(&feats, 0)? };
            // [n, F] -> [n] domain logits; the GRL reverses (and scales by λ) the gradient reaching the features.
            let d = da.f_forward(&grl(&f, w.lambda))?.f_to_kind(Kind::Float)?.f_squeeze_dim(1)?;
            let dom = Tensor::f_cat(
                &dom_parts
                    .iter()
                    .map(|(f, v)| Tensor::f_full([f.size()[0]], *v, (Kind::Float, d.device())))
                    .collect::<Result<Vec<_>, _>>()?,
                0,
            )?;
            let s = d.f_binary_cross_entropy_with_logits::<Tensor>(&dom, None, None, Reduction::Sum)?;
            tally.da_sum += s.f_double_value(&[])?;
            tally.dom_hits +=
                d.f_gt(0.0)?.f_to_kind(Kind::Float)?.f_eq_tensor(&dom)?.f_sum(Kind::Float)?.f_double_value(&[])?;
            terms.push(s * (w.r_da / n_dom));
        }
    }
    let mut it = terms.into_iter();
    let Some(mut loss) = it.next() else { return Ok(None) };
    for t in it {
        loss = loss.f_add(&t)?;
    }
    Ok(Some(loss))
}

/// Step 3 for one trainee: the loss of `part_losses` over the clean batch `x, y`, the adversarial examples of its
/// sources (`adv_parts`, each labelled `y`) and, with the white-box term, its own (`own_adv`); then one optimizer
/// step with learning rate `lr` (skipped when the loss is not finite).
#[allow(clippy::too_many_arguments)]
pub fn update_trainee(
    t: &mut Trainee,
    x: &Tensor,
    y: &Tensor,
    adv_parts: &[Tensor],
    own_adv: Option<&Tensor>,
    w: &LossWeights,
    lr: f64,
    pass: Pass,
) -> Result<StepOut> {
    let dev = t.net.device();
    let b = x.size()[0];
    let xa: Option<Tensor> = if adv_parts.is_empty() { None } else { Some(Tensor::f_cat(adv_parts, 0)?) };
    let n_adv = xa.as_ref().map_or(0, |t| t.size()[0]);
    let n_dom = (b + n_adv) as f64;
    let mut inputs: Vec<(Part, Tensor, Tensor)> = vec![(Part::Clean, x.shallow_clone(), y.shallow_clone())];
    if let Some(xa) = xa {
        inputs.push((Part::Adv, xa, y.f_repeat([n_adv / b])?));
    }
    if let Some(own) = own_adv {
        inputs.push((Part::Own, own.shallow_clone(), y.shallow_clone()));
    }
    // The forward passes of each group share one graph: Joint puts clean and adversarial examples together.
    let groups: Vec<Vec<(Part, Tensor, Tensor)>> = match pass {
        Pass::Joint => {
            let (main, own): (Vec<_>, Vec<_>) = inputs.into_iter().partition(|(p, _, _)| *p != Part::Own);
            [main, own].into_iter().filter(|g| !g.is_empty()).collect()
        }
        Pass::Split => inputs.into_iter().map(|p| vec![p]).collect(),
    };
    let mut tally = Tally::default();
    let mut total = 0.0;
    let mut joint: Vec<Tensor> = vec![];
    t.opt.zero_grad();
    for group in groups {
        let loss = {
            let _ac = Autocast::new(dev, t.bf16)?;
            let feats: Vec<(Part, Tensor, Tensor)> = if group.len() > 1 && !t.batch_stats {
                // [n_1 + n_2, C, H, W] -> [n_1 + n_2, F], split back into the parts.
                let xs: Vec<&Tensor> = group.iter().map(|(_, x, _)| x).collect();
                let f = t.net.features_t(&Tensor::f_cat(&xs, 0)?, true)?;
                let mut at = 0;
                group
                    .into_iter()
                    .map(|(p, x, y)| {
                        let n = x.size()[0];
                        at += n;
                        (p, f.narrow(0, at - n, n), y)
                    })
                    .collect()
            } else {
                group.into_iter().map(|(p, x, y)| Ok((p, t.net.features_t(&x, true)?, y))).collect::<Result<_>>()?
            };
            part_losses(t.net, t.da.as_ref(), &feats, w, n_adv > 0, n_dom, &mut tally)?
        };
        let Some(loss) = loss else { continue };
        match pass {
            Pass::Split => {
                total += loss.f_double_value(&[])?;
                loss.f_backward()?;
            }
            Pass::Joint => joint.push(loss),
        }
    }
    if pass == Pass::Joint {
        let mut it = joint.into_iter();
        if let Some(mut loss) = it.next() {
            for l in it {
                loss = loss.f_add(&l)?;
            }
            total = loss.f_double_value(&[])?;
            if total.is_finite() {
                loss.f_backward()?;
            }
        }
    }
    if n_adv > 0 && t.da.is_some() {
        tally.metrics.push(("da_loss", tally.da_sum / n_dom));
        tally.metrics.push(("domain_acc", tally.dom_hits / n_dom));
    }
    if total.is_finite() {
        t.opt.step(lr)?;
    }
    Ok(StepOut { metrics: tally.metrics, total })
}

/// Step 3 for every trainee, side by side (split passes) when `par.train`, else one after another (joint passes;
/// a failed or non-finite trainee stops the step before the next one is updated).
pub fn update_all(
    trainees: &mut [Trainee],
    batch: &mut OnDevices,
    src: &StepSources,
    w: &LossWeights,
    lr: f64,
    par: &SideBySide,
) -> Vec<Result<StepOut>> {
    let inputs = |k: usize, dev: Device| -> (Vec<Tensor>, Option<Tensor>) {
        let parts = src.chosen[k].iter().map(|s| src.adv[s].to_device(dev)).collect();
        let own = (w.white_box != 0.0).then(|| src.adv[&k].to_device(dev));
        (parts, own)
    };
    if par.train {
        let (x, y) = batch.get(Device::Cpu);
        let mut jobs: Vec<Job<StepOut>> = vec![];
        for (k, t) in trainees.iter_mut().enumerate() {
            let (parts, own) = inputs(k, Device::Cpu);
            let (x, y) = (x.shallow_clone(), y.shallow_clone());
            jobs.push(Box::new(move || update_trainee(t, &x, &y, &parts, own.as_ref(), w, lr, Pass::Split)));
        }
        run_side_by_side(jobs, &par.threads)
    } else {
        let mut outs = vec![];
        for (k, t) in trainees.iter_mut().enumerate() {
            let dev = t.net.device();
            let (x, y) = batch.get(dev);
            let (parts, own) = inputs(k, dev);
            let out = update_trainee(t, &x, &y, &parts, own.as_ref(), w, lr, Pass::Joint);
            let stop = out.as_ref().map_or(true, |o| !o.total.is_finite());
            outs.push(out);
            if stop {
                break;
            }
        }
        outs
    }
}
