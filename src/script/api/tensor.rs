//! A minimal Tensor for scripts: create, inspect, arithmetic, reductions, small conversions.
use crate::core::{device, mem};
use crate::script::convert::{RResult, friendly_type, guard, script_err, to_f64};
use crate::script::docs::doc;
use crate::script::state;
use crate::script::types::{TensorV, kind_name};
use anyhow::{Result, bail};
use rhai::{Array, Dynamic, Engine};
use tch::{Kind, Tensor};

/// Largest tensor `to_array` converts (bigger ones would flood the REPL).
const MAX_TO_ARRAY: i64 = 1_000_000;

fn shape_of(a: &Array, func: &str) -> Result<Vec<i64>> {
    a.iter()
        .map(|d| match d.as_int() {
            Ok(v) if v >= 0 => Ok(v),
            _ => bail!("{func}: shape must be an array of non-negative integers, got {d}"),
        })
        .collect()
}

/// Flattens a nested array of numbers, checking that it is rectangular.
fn flatten(v: &Dynamic, depth: usize, shape: &mut Vec<i64>, out: &mut Vec<f64>, all_int: &mut bool) -> Result<()> {
    if v.is_array() {
        let a = v.clone().into_array().unwrap_or_default();
        if shape.len() == depth {
            shape.push(a.len() as i64);
        } else if shape[depth] != a.len() as i64 {
            bail!("tensor: ragged array (rows of length {} and {})", shape[depth], a.len());
        }
        for x in &a {
            flatten(x, depth + 1, shape, out, all_int)?;
        }
        Ok(())
    } else if let Some(x) = to_f64(v) {
        if shape.len() != depth {
            bail!("tensor: ragged array (a number where an array was expected)");
        }
        if v.is_float() {
            *all_int = false;
        }
        out.push(x);
        Ok(())
    } else {
        bail!("tensor: expected numbers or arrays, got {}", friendly_type(v.type_name()))
    }
}

pub fn from_array(v: &Dynamic) -> Result<Tensor> {
    let (mut shape, mut vals, mut all_int) = (Vec::new(), Vec::new(), true);
    flatten(v, 0, &mut shape, &mut vals, &mut all_int)?;
    let t = Tensor::from_slice(&vals).f_reshape(&shape)?;
    let t = if all_int { t.f_to_kind(Kind::Int64)? } else { t.f_to_kind(Kind::Float)? };
    Ok(t.f_to_device(state::device())?)
}

fn to_nested(t: &Tensor) -> Result<Dynamic> {
    if t.numel() as i64 > MAX_TO_ARRAY {
        bail!("to_array: tensor has {} elements; the limit is {MAX_TO_ARRAY} (slice it first)", t.numel());
    }
    let cpu = t.detach().to_device(tch::Device::Cpu).to_kind(Kind::Double).contiguous();
    let is_int = matches!(t.kind(), Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8 | Kind::Bool);
    let flat: Vec<f64> = Vec::<f64>::try_from(&cpu.flatten(0, -1))?;
    let shape = t.size();
    fn build(flat: &[f64], shape: &[i64], is_int: bool) -> Dynamic {
        if shape.is_empty() {
            let x = flat[0];
            return if is_int { Dynamic::from_int(x as i64) } else { Dynamic::from_float(x) };
        }
        let step: usize = shape[1..].iter().product::<i64>() as usize;
        let arr: Array =
            (0..shape[0] as usize).map(|i| build(&flat[i * step..(i + 1) * step], &shape[1..], is_int)).collect();
        Dynamic::from_array(arr)
    }
    Ok(build(&flat, &shape, is_int))
}

/// A number as a 0-dim tensor that promotes like PyTorch's wrapped scalars: the tensor's float kind, else f32.
fn scalar_like(v: f64, t: &Tensor) -> Tensor {
    let kind = if t.is_floating_point() { t.kind() } else { Kind::Float };
    Tensor::from(v).to_kind(kind).to_device(t.device())
}

/// A clamp bound in the tensor's own type (libtorch refuses one that overflows it): beyond a float type's range it is
/// ±inf (no bound on that side), beyond an integer type's range it saturates.
fn clamp_bound(x: &Tensor, v: f64) -> f64 {
    let (lo, hi, float) = match x.kind() {
        Kind::Double => return v,
        Kind::Float | Kind::BFloat16 => (f32::MIN as f64, f32::MAX as f64, true),
        Kind::Half => (-65504.0, 65504.0, true),
        Kind::Int64 => (-9.2e18, 9.2e18, false),
        Kind::Int => (i32::MIN as f64, i32::MAX as f64, false),
        Kind::Int16 => (i16::MIN as f64, i16::MAX as f64, false),
        Kind::Int8 => (i8::MIN as f64, i8::MAX as f64, false),
        Kind::Uint8 => (0.0, 255.0, false),
        Kind::Bool => (0.0, 1.0, false),
        _ => return v,
    };
    match (v < lo, v > hi, float) {
        (true, _, true) => f64::NEG_INFINITY,
        (_, true, true) => f64::INFINITY,
        _ => v.clamp(lo, hi),
    }
}

/// The shape two tensors broadcast to (None when they do not: libtorch then says why).
fn broadcast_shape(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let x = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
            let y = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
            match (x, y) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// An elementwise op's result can be far larger than either input (`[n, 1] + [1, n]`): check it first.
fn check_broadcast(name: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if let Some(shape) = broadcast_shape(&a.size(), &b.size()) {
        mem::check(name, &shape, a.kind(), a.device())?;
    }
    Ok(())
}

fn binop(engine: &mut Engine, name: &'static str, tt: fn(&Tensor, &Tensor) -> Result<Tensor, tch::TchError>) {
    engine.register_fn(name, move |a: &mut TensorV, b: TensorV| -> RResult<TensorV> {
        guard(name, || {
            check_broadcast(name, &a.0, &b.0)?;
            Ok(TensorV(tt(&a.0, &b.0)?))
        })
    });
    engine.register_fn(name, move |a: &mut TensorV, b: f64| -> RResult<TensorV> {
        guard(name, || Ok(TensorV(tt(&a.0, &scalar_like(b, &a.0))?)))
    });
    engine.register_fn(name, move |a: &mut TensorV, b: i64| -> RResult<TensorV> {
        guard(name, || Ok(TensorV(tt(&a.0, &scalar_like(b as f64, &a.0))?)))
    });
    engine.register_fn(name, move |a: f64, b: TensorV| -> RResult<TensorV> {
        guard(name, || Ok(TensorV(tt(&scalar_like(a, &b.0), &b.0)?)))
    });
    engine.register_fn(name, move |a: i64, b: TensorV| -> RResult<TensorV> {
        guard(name, || Ok(TensorV(tt(&scalar_like(a as f64, &b.0), &b.0)?)))
    });
}

fn unary(engine: &mut Engine, name: &'static str, text: &str, f: fn(&Tensor) -> Result<Tensor, tch::TchError>) {
    doc(name, &["x: Tensor"], "Tensor", text)
        .register_into_engine(engine, move |x: &mut TensorV| -> RResult<TensorV> {
            guard(name, || Ok(TensorV(f(&x.0)?)))
        });
}

/// A tensor factory (zeros, ones, ...): fallible, so an impossible shape (too large to allocate, or overflowing) is
/// libtorch's message rather than a panic text.
type Factory = fn(&[i64]) -> anyhow::Result<Tensor>;

fn make(engine: &mut Engine, name: &'static str, text: &str, f: Factory) {
    doc(name, &["shape: Array"], "Tensor", text).register_into_engine(
        engine,
        move |shape: Array| -> RResult<TensorV> {
            guard(name, || {
                let s = shape_of(&shape, name)?;
                mem::check(name, &s, Kind::Float, tch::Device::Cpu)?;
                mem::check(name, &s, Kind::Float, state::device())?;
                Ok(TensorV(f(&s)?.f_to_device(state::device())?))
            })
        },
    );
}

pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<TensorV>("Tensor");
    engine.register_fn("to_string", |x: &mut TensorV| x.to_string());
    engine.register_fn("to_debug", |x: &mut TensorV| x.to_string());

    doc(
        "tensor",
        &["values: Array"],
        "Tensor",
        "A tensor from a (nested) array of numbers: all ints give i64, any float gives f32. On the session device.",
    )
    .register_into_engine(engine, |v: Array| -> RResult<TensorV> {
        guard("tensor", || Ok(TensorV(from_array(&Dynamic::from_array(v))?)))
    });
    make(engine, "zeros", "A float tensor of zeros with the given shape.", |s| {
        Ok(Tensor::f_zeros(s, (Kind::Float, tch::Device::Cpu))?)
    });
    make(engine, "ones", "A float tensor of ones with the given shape.", |s| {
        Ok(Tensor::f_ones(s, (Kind::Float, tch::Device::Cpu))?)
    });
    make(engine, "rand", "Uniform [0,1) floats with the given shape (torch.rand; seeded by seed()).", |s| {
        crate::core::random::rand(s)
    });
    make(engine, "randn", "Standard normal floats with the given shape (torch.randn; seeded by seed()).", |s| {
        crate::core::random::randn(s)
    });
    doc(
        "randint",
        &["high: int", "shape: Array"],
        "Tensor",
        "Integers uniform in [0, high) with the given shape (i64; torch.randint; seeded by seed()).",
    )
    .register_into_engine(engine, |high: i64, shape: Array| -> RResult<TensorV> {
        guard("randint", || {
            if high <= 0 {
                bail!("high must be > 0, got {high}");
            }
            let s = shape_of(&shape, "randint")?;
            mem::check("randint", &s, Kind::Int64, state::device())?;
            mem::check("randint", &s, Kind::Int64, tch::Device::Cpu)?;
            Ok(TensorV(crate::core::random::randint(high, &s, Kind::Int64)?.f_to_device(state::device())?))
        })
    });
    doc("arange", &["n: int"], "Tensor", "0, 1, ..., n-1 as i64.").register_into_engine(
        engine,
        |n: i64| -> RResult<TensorV> {
            guard("arange", || {
                if n < 0 {
                    bail!("n must be >= 0, got {n}");
                }
                mem::check("arange", &[n], Kind::Int64, state::device())?;
                // Not f_arange: when its allocation fails, dropping its temporary Scalar panics (libtorch's error
                // is still pending); ones and cumsum take no Scalar and fail cleanly, the in-place -1 allocates nothing.
                let ones = Tensor::f_ones([n], (Kind::Int64, state::device()))?;
                let mut r = ones.f_cumsum(0, Kind::Int64)?;
                drop(ones);
                let _ = r.f_sub_scalar_(1)?;
                Ok(TensorV(r))
            })
        },
    );

    engine
        .register_get("shape", |x: &mut TensorV| -> Array { x.0.size().into_iter().map(Dynamic::from_int).collect() });
    engine.register_get("dtype", |x: &mut TensorV| kind_name(x.0.kind()).to_string());
    engine.register_get("device", |x: &mut TensorV| device::device_name(x.0.device()));
    engine.register_get("numel", |x: &mut TensorV| x.0.numel() as i64);
    engine.register_get("dim", |x: &mut TensorV| x.0.dim() as i64);
    doc("len", &["x: Tensor"], "int", "Size of the first dimension.").register_into_engine(
        engine,
        |x: &mut TensorV| -> RResult<i64> {
            x.0.size().first().copied().ok_or_else(|| script_err("len: a scalar tensor has no length"))
        },
    );

    binop(engine, "+", |a, b| a.f_add(b));
    binop(engine, "-", |a, b| a.f_sub(b));
    binop(engine, "*", |a, b| a.f_mul(b));
    binop(engine, "/", |a, b| a.f_div(b));
    engine.register_fn("-", |a: &mut TensorV| -> RResult<TensorV> { guard("-", || Ok(TensorV(a.0.f_neg()?))) });
    binop(engine, "eq", |a, b| a.f_eq_tensor(b)?.f_to_kind(Kind::Float));
    binop(engine, "maximum", |a, b| a.f_maximum(b));
    binop(engine, "minimum", |a, b| a.f_minimum(b));

    unary(engine, "abs", "Elementwise |x|.", |x| x.f_abs());
    unary(engine, "sign", "Elementwise sign (-1, 0, 1).", |x| x.f_sign());
    unary(engine, "sqrt", "Elementwise square root.", |x| x.f_sqrt());
    unary(engine, "exp", "Elementwise exp.", |x| x.f_exp());
    unary(engine, "log", "Elementwise natural log.", |x| x.f_log());
    unary(engine, "float", "Converts to f32.", |x| x.f_to_kind(Kind::Float));
    unary(engine, "long", "Converts to i64.", |x| x.f_to_kind(Kind::Int64));
    unary(engine, "flatten", "Flattens to one dimension.", |x| x.f_flatten(0, -1));
    unary(engine, "sum", "Sum of all elements (a scalar tensor).", |x| x.f_sum(None::<Kind>));
    unary(engine, "mean", "Mean of all elements (a scalar tensor, floats).", |x| {
        x.f_to_kind(Kind::Float)?.f_mean(None::<Kind>)
    });
    unary(engine, "max", "Largest element (a scalar tensor).", |x| x.f_max());
    unary(engine, "min", "Smallest element (a scalar tensor).", |x| x.f_min());
    unary(engine, "softmax", "Softmax over the last dimension.", |x| x.f_softmax(-1, Kind::Float));

    doc("argmax", &["x: Tensor", "dim: int"], "Tensor", "Index of the largest value along `dim` (i64).")
        .register_into_engine(engine, |x: &mut TensorV, dim: i64| -> RResult<TensorV> {
            guard("argmax", || Ok(TensorV(x.0.f_argmax(dim, false)?)))
        });
    doc("sum", &["x: Tensor", "dim: int"], "Tensor", "Sum along `dim`.").register_into_engine(
        engine,
        |x: &mut TensorV, dim: i64| -> RResult<TensorV> {
            guard("sum", || Ok(TensorV(x.0.f_sum_dim_intlist(Some([dim].as_slice()), false, None::<Kind>)?)))
        },
    );
    doc("mean", &["x: Tensor", "dim: int"], "Tensor", "Mean along `dim` (floats).").register_into_engine(
        engine,
        |x: &mut TensorV, dim: i64| -> RResult<TensorV> {
            guard("mean", || {
                Ok(TensorV(x.0.f_to_kind(Kind::Float)?.f_mean_dim(Some([dim].as_slice()), false, None::<Kind>)?))
            })
        },
    );
    doc("clamp", &["x: Tensor", "lo: float", "hi: float"], "Tensor", "Clips every element to [lo, hi].")
        .register_into_engine(engine, |x: &mut TensorV, lo: f64, hi: f64| -> RResult<TensorV> {
            guard("clamp", || {
                if lo.is_nan() || hi.is_nan() {
                    bail!("lo and hi must be numbers (±inf for no bound), got {lo} and {hi}");
                }
                if lo > hi {
                    bail!("lo ({lo}) > hi ({hi})");
                }
                Ok(TensorV(x.0.f_clamp(clamp_bound(&x.0, lo), clamp_bound(&x.0, hi))?))
            })
        });
    doc(
        "reshape",
        &["x: Tensor", "shape: Array"],
        "Tensor",
        "The same elements with a new shape (-1 infers one dimension).",
    )
    .register_into_engine(engine, |x: &mut TensorV, shape: Array| -> RResult<TensorV> {
        guard("reshape", || {
            let s: Vec<i64> = shape
                .iter()
                .map(|d| d.as_int().map_err(|_| anyhow::anyhow!("shape must hold integers, got {d}")))
                .collect::<Result<_>>()?;
            Ok(TensorV(x.0.f_reshape(s.as_slice())?))
        })
    });
    doc("slice", &["x: Tensor", "start: int", "end: int"], "Tensor", "Rows start..end of the first dimension.")
        .register_into_engine(engine, |x: &mut TensorV, start: i64, end: i64| -> RResult<TensorV> {
            guard("slice", || {
                let n = *x.0.size().first().ok_or_else(|| anyhow::anyhow!("cannot slice a scalar"))?;
                if start < 0 || end > n || start > end {
                    bail!("range {start}..{end} is outside 0..{n}");
                }
                Ok(TensorV(x.0.f_narrow(0, start, end - start)?))
            })
        });
    engine.register_indexer_get(|x: &mut TensorV, i: i64| -> RResult<TensorV> {
        guard("index", || {
            let n = *x.0.size().first().ok_or_else(|| anyhow::anyhow!("cannot index a scalar tensor"))?;
            let j = if i < 0 { i + n } else { i };
            if j < 0 || j >= n {
                bail!("index {i} out of range for a first dimension of {n}");
            }
            Ok(TensorV(x.0.f_get(j)?))
        })
    });
    doc("item", &["x: Tensor"], "float", "The value of a one-element tensor as a number.").register_into_engine(
        engine,
        |x: &mut TensorV| -> RResult<f64> {
            guard("item", || {
                if x.0.numel() != 1 {
                    bail!("tensor has {} elements; item() needs exactly one", x.0.numel());
                }
                Ok(x.0.f_double_value(&[])?)
            })
        },
    );
    doc("to_array", &["x: Tensor"], "Array", "The values as nested arrays (ints for integer tensors).")
        .register_into_engine(engine, |x: &mut TensorV| -> RResult<Dynamic> { guard("to_array", || to_nested(&x.0)) });
    doc("to", &["x: Tensor", "device: &str"], "Tensor", "A copy on another device (\"cpu\", \"cuda:0\", ...).")
        .register_into_engine(engine, |x: &mut TensorV, dev: &str| -> RResult<TensorV> {
            guard("to", || {
                let d = device::parse_device(dev)?;
                mem::check("to", &x.0.size(), x.0.kind(), d)?;
                Ok(TensorV(x.0.f_to_device(d)?))
            })
        });
    doc("cat", &["xs: Array", "dim: int"], "Tensor", "Concatenates tensors along `dim`.").register_into_engine(
        engine,
        |xs: Array, dim: i64| -> RResult<TensorV> {
            guard("cat", || {
                let ts: Vec<Tensor> = xs
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.try_cast::<TensorV>()
                            .map(|t| t.0)
                            .ok_or_else(|| anyhow::anyhow!("element {i} is not a Tensor"))
                    })
                    .collect::<Result<_>>()?;
                if ts.is_empty() {
                    bail!("needs at least one tensor");
                }
                Ok(TensorV(Tensor::f_cat(&ts, dim)?))
            })
        },
    );
    doc(
        "save_tensors",
        &["path: &str", "tensors: Map"],
        "()",
        "Saves a map of named tensors as a safetensors file (read it in PyTorch with safetensors.torch.load_file), \
         dtype and shape kept (u8, i64, bf16, f32, ...), written atomically. E.g. save_tensors(\"adv.safetensors\", \
         #{x: adv, y: labels}).",
    )
    .register_into_engine(engine, |path: &str, tensors: rhai::Map| -> RResult<()> {
        guard("save_tensors", || {
            let mut named = Vec::new();
            for (k, v) in tensors {
                match v.try_cast::<TensorV>() {
                    Some(t) => named.push((k.to_string(), t.0)),
                    None => bail!("'{k}' is not a Tensor (save_tensors takes a map of name: Tensor)"),
                }
            }
            crate::core::tensorio::save_tensors(std::path::Path::new(path), &named)
        })
    });
    doc(
        "load_tensors",
        &["path: &str"],
        "Map",
        "Reads every tensor of a safetensors file (e.g. one written by safetensors.torch.save_file) into a map of \
         name: Tensor, dtype and shape kept, on the session device.",
    )
    .register_into_engine(engine, |path: &str| -> RResult<rhai::Map> {
        guard("load_tensors", || {
            let dev = state::device();
            let mut m = rhai::Map::new();
            for (k, t) in crate::core::tensorio::load_tensors(std::path::Path::new(path))? {
                m.insert(k.into(), Dynamic::from(TensorV(t.f_to_device(dev)?)));
            }
            Ok(m)
        })
    });
    doc("max_abs_diff", &["a: Tensor", "b: Tensor"], "float", "max |a - b| over all elements (shapes must broadcast).")
        .register_into_engine(engine, |a: TensorV, b: TensorV| -> RResult<f64> {
            guard("max_abs_diff", || {
                Ok(a.0
                    .f_to_kind(Kind::Double)?
                    .f_sub(&b.0.f_to_kind(Kind::Double)?)?
                    .f_abs()?
                    .f_max()?
                    .f_double_value(&[])?)
            })
        });
}
