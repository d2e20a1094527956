//! Script-visible value types owned by the script layer itself. Domain types (Model, Dataset, Table, ...) live beside
//! their registration in `api/<domain>.rs`.
use std::fmt;
use tch::{Kind, Tensor};

/// A tensor as scripts see it. Cloning is shallow (shares storage), like Python references.
pub struct TensorV(pub Tensor);

impl Clone for TensorV {
    fn clone(&self) -> Self {
        TensorV(self.0.shallow_clone())
    }
}

pub fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Uint8 => "u8",
        Kind::Int8 => "i8",
        Kind::Int16 => "i16",
        Kind::Int => "i32",
        Kind::Int64 => "i64",
        Kind::Half => "f16",
        Kind::Float => "f32",
        Kind::Double => "f64",
        Kind::Bool => "bool",
        Kind::BFloat16 => "bf16",
        _ => "other",
    }
}

impl fmt::Display for TensorV {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.0;
        if !t.defined() {
            return write!(f, "Tensor[undefined]");
        }
        let shape: Vec<String> = t.size().iter().map(|d| d.to_string()).collect();
        let shape = if shape.is_empty() { "scalar".to_string() } else { shape.join("x") };
        let dev = crate::core::device::device_name(t.device());
        write!(f, "Tensor[{}; {}; {}]", kind_name(t.kind()), shape, dev)?;
        let n = t.numel();
        if n > 0 && n <= 16 {
            let flat = t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Double).flatten(0, -1);
            if let Ok(v) = Vec::<f64>::try_from(&flat) {
                let vals: Vec<String> = v
                    .iter()
                    .map(|x| if x.fract() == 0.0 && x.abs() < 1e15 { format!("{x:.0}") } else { format!("{x:.4}") })
                    .collect();
                write!(f, " [{}]", vals.join(", "))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for TensorV {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
