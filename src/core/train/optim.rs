//! SGD (momentum, weight decay, Nesterov) and Adam with PyTorch's exact update rules, written over plain tensors so
//! that their state (momentum buffers, moments) goes into checkpoints and a resumed run continues bit for bit.
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    #[default]
    Sgd,
    Adam,
}

impl OptimizerKind {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "sgd" => Ok(OptimizerKind::Sgd),
            "adam" => Ok(OptimizerKind::Adam),
            o => bail!("optimizer '{o}': expected sgd or adam"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OptimSettings {
    pub kind: OptimizerKind,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
}

impl Default for OptimSettings {
    fn default() -> Self {
        OptimSettings {
            kind: OptimizerKind::Sgd,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
        }
    }
}

/// One optimizer over a fixed list of parameters (a network's trainable variables plus its DA head's).
pub struct Optimizer {
    pub settings: OptimSettings,
    params: Vec<Tensor>,
    /// SGD: momentum buffers; Adam: first moments. Undefined until the first step.
    buf1: Vec<Tensor>,
    /// Adam: second moments.
    buf2: Vec<Tensor>,
    pub steps: i64,
}

impl Optimizer {
    pub fn new(params: Vec<Tensor>, settings: OptimSettings) -> Self {
        let n = params.len();
        Optimizer {
            settings,
            params,
            buf1: (0..n).map(|_| Tensor::new()).collect(),
            buf2: (0..n).map(|_| Tensor::new()).collect(),
            steps: 0,
        }
    }

    pub fn zero_grad(&mut self) {
        for p in self.params.iter_mut() {
            p.zero_grad();
        }
    }

    /// One update with learning rate `lr` (PyTorch's torch.optim.SGD / Adam semantics, dampening 0).
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let s = self.settings;
        self.steps += 1;
        let t = self.steps as f64;
        tch::no_grad(|| -> Result<()> {
            for i in 0..self.params.len() {
                let p = &mut self.params[i];
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut d = if s.weight_decay != 0.0 { g.f_add(&(&*p * s.weight_decay))? } else { g };
                match s.kind {
                    OptimizerKind::Sgd => {
                        if s.momentum != 0.0 {
                            if !self.buf1[i].defined() {
                                self.buf1[i] = d.f_detach_copy()?;
                            } else {
                                let _ = self.buf1[i].f_mul_scalar_(s.momentum)?.f_add_(&d)?;
                            }
                            d = if s.nesterov {
                                d.f_add(&(&self.buf1[i] * s.momentum))?
                            } else {
                                self.buf1[i].shallow_clone()
                            };
                        }
                        let _ = p.f_sub_(&(d * lr))?;
                    }
                    OptimizerKind::Adam => {
                        if !self.buf1[i].defined() {
                            self.buf1[i] = d.f_zeros_like()?;
                            self.buf2[i] = d.f_zeros_like()?;
                        }
                        let _ = self.buf1[i].f_mul_scalar_(s.beta1)?.f_add_(&(&d * (1.0 - s.beta1)))?;
                        let _ = self.buf2[i].f_mul_scalar_(s.beta2)?.f_add_(&(&d * &d * (1.0 - s.beta2)))?;
                        let bc1 = 1.0 - s.beta1.powf(t);
                        let bc2 = 1.0 - s.beta2.powf(t);
                        let denom = (self.buf2[i].f_sqrt()? / bc2.sqrt()).f_add_scalar(s.adam_eps)?;
                        let _ = p.f_sub_(&(self.buf1[i].f_div(&denom)? * (lr / bc1)))?;
                    }
                }
            }
            Ok(())
        })
    }

    /// The optimizer state as named tensors (for checkpoints).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("steps".to_string(), Tensor::from(self.steps))];
        for (i, b) in self.buf1.iter().enumerate() {
            if b.defined() {
                out.push((format!("buf1.{i}"), b.shallow_clone()));
            }
        }
        for (i, b) in self.buf2.iter().enumerate() {
            if b.defined() {
                out.push((format!("buf2.{i}"), b.shallow_clone()));
            }
        }
        out
    }

    /// Restores state written by `state` (same parameter list).
    pub fn load_state(&mut self, named: &[(String, Tensor)]) -> Result<()> {
        for (name, t) in named {
            if name == "steps" {
                self.steps = t.int64_value(&[]);
                continue;
            }
            let (which, idx) =
                name.split_once('.').ok_or_else(|| anyhow::anyhow!("optimizer state: bad key {name}"))?;
            let i: usize = idx.parse().map_err(|_| anyhow::anyhow!("optimizer state: bad key {name}"))?;
            if i >= self.params.len() {
                bail!("optimizer state has a buffer for parameter {i}, but there are {} parameters", self.params.len());
            }
            let dev = self.params[i].device();
            let v = t.to_device(dev);
            match which {
                "buf1" => self.buf1[i] = v,
                "buf2" => self.buf2[i] = v,
                _ => bail!("optimizer state: bad key {name}"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// PyTorch's SGD with momentum: buf = g on the first step, then buf = m*buf + g; p -= lr*buf.
    #[test]
    fn sgd_momentum_follows_pytorch_rule() {
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt =
            Optimizer::new(vec![p.shallow_clone()], OptimSettings { weight_decay: 0.1, ..Default::default() });
        for _ in 0..2 {
            opt.zero_grad();
            (&p * &p).sum(Kind::Float).backward();
            opt.step(0.1).unwrap();
        }
        // step 1: g = 2p + 0.1p = 2.1p -> p1 = p - 0.21p = 0.79p; buf = 2.1p
        // step 2: g = 2.1*p1 = 1.659p; buf = 0.9*2.1p + 1.659p = 3.549p; p2 = 0.79p - 0.3549p = 0.4351p
        let v = Vec::<f32>::try_from(&p.detach()).unwrap();
        assert!((v[0] - 0.4351).abs() < 1e-6, "{v:?}");
        assert!((v[1] + 0.8702).abs() < 1e-6, "{v:?}");
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        let p = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
        let mut opt =
            Optimizer::new(vec![p.shallow_clone()], OptimSettings { kind: OptimizerKind::Adam, ..Default::default() });
        opt.zero_grad();
        (&p * 5.0).sum(Kind::Float).backward();
        opt.step(0.01).unwrap();
        // Adam's first step is lr * sign(g) (up to eps).
        assert!((p.double_value(&[0]) - 2.99).abs() < 1e-6);
    }
}
