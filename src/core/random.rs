//! Random streams: every thread draws its random numbers (initial weights, random starts and restarts of attacks,
//! the R+Step-LL step, Square's patches, dropout masks, `rand`/`randn`/`randint` in scripts) from a libtorch CPU
//! generator of its own, never from libtorch's one process-wide generator. So a background run's draws do not
//! depend on what the prompt draws meanwhile, and the prompt's draws after `seed(n)` do not depend on a run.
//!
//! - A training run draws from a stream of its own ([`scope`]), seeded from its seed and reseeded at every step and
//!   validation batch; the caller's stream is as it was when the run returns.
//! - An evaluation with a seed draws from a stream of its own too; the session's stream is untouched by it.
//! - `seed(n)` at the prompt (and `--seed`) reseed the calling thread's stream ([`seed`]).
//! - A thread that was never seeded starts from libtorch's default seed, as a fresh PyTorch process does.
//!
//! Draws are made on the CPU and then moved, so a seed gives the same numbers on every device. A stream seeded with
//! n draws what PyTorch draws after `torch.manual_seed(n)` (the same generator, the same kernels): `randn` is
//! `torch.randn`, `dropout` is `torch.nn.functional.dropout` on the CPU.
use anyhow::{Context, Result, bail};
use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_void};
use std::marker::PhantomData;
use tch::{Device, Kind, Tensor};

unsafe extern "C" {
    fn satm_gen_new(seed: u64) -> *mut c_void;
    fn satm_gen_free(g: *mut c_void);
    fn satm_gen_seed(g: *mut c_void, seed: u64) -> i32;
    fn satm_gen_normal_(g: *mut c_void, t: *mut c_void, mean: f64, std: f64) -> i32;
    fn satm_gen_uniform_(g: *mut c_void, t: *mut c_void, from: f64, to: f64) -> i32;
    fn satm_gen_random_(g: *mut c_void, t: *mut c_void, from: i64, to: i64) -> i32;
    fn satm_gen_bernoulli_(g: *mut c_void, t: *mut c_void, p: f64) -> i32;
    fn satm_gen_error() -> *const c_char;
}

/// libtorch's default seed (`default_rng_seed_val`): where a never-seeded thread starts.
pub const DEFAULT_SEED: u64 = 67280421310721;

/// An owned `at::Generator` (CPU). Raw pointer: neither Send nor Sync, so it stays on its thread.
struct Generator(*mut c_void);

impl Generator {
    fn new(seed: u64) -> Result<Generator> {
        let p = unsafe { satm_gen_new(seed) };
        if p.is_null() {
            bail!("libtorch could not create a random generator");
        }
        Ok(Generator(p))
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        unsafe { satm_gen_free(self.0) }
    }
}

thread_local! {
    /// This thread's current stream; created on the first draw.
    static STREAM: RefCell<Option<Generator>> = const { RefCell::new(None) };
}

fn check(rc: i32, what: &str) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    let msg = unsafe { CStr::from_ptr(satm_gen_error()) }.to_string_lossy().into_owned();
    bail!("{what}: {}", msg.lines().next().unwrap_or("libtorch failed"))
}

/// Runs `f` with this thread's current generator (created with [`DEFAULT_SEED`] if there is none yet).
fn with_stream<T>(f: impl FnOnce(*mut c_void) -> Result<T>) -> Result<T> {
    STREAM.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_none() {
            *s = Some(Generator::new(DEFAULT_SEED)?);
        }
        let g = s.as_ref().map(|g| g.0).context("this thread has no random stream")?;
        f(g)
    })
}

/// Reseeds this thread's current stream.
pub fn seed(seed: u64) -> Result<()> {
    STREAM.with(|s| {
        let mut s = s.borrow_mut();
        match s.as_ref() {
            Some(g) => check(unsafe { satm_gen_seed(g.0, seed) }, "seeding the random stream"),
            None => {
                *s = Some(Generator::new(seed)?);
                Ok(())
            }
        }
    })
}

/// While it lives, this thread draws from a new stream seeded with the given seed; dropping it brings back the
/// thread's previous stream in the state it was left in. Made by [`scope`].
#[must_use = "the stream is left as soon as the scope is dropped"]
pub struct Scope {
    previous: Option<Option<Generator>>,
    _on_this_thread: PhantomData<*const ()>,
}

/// A stream of its own for the current thread until the returned [`Scope`] drops.
pub fn scope(seed: u64) -> Result<Scope> {
    let g = Generator::new(seed)?;
    let previous = STREAM.with(|s| s.replace(Some(g)));
    Ok(Scope { previous: Some(previous), _on_this_thread: PhantomData })
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(prev) = self.previous.take() {
            // At thread exit the slot may already be gone; then there is nothing to restore.
            let _ = STREAM.try_with(|s| *s.borrow_mut() = prev);
        }
    }
}

fn fill(mut t: Tensor, what: &str, f: impl FnOnce(*mut c_void, *mut c_void) -> i32) -> Result<Tensor> {
    let tp = t.as_mut_ptr() as *mut c_void;
    with_stream(|g| check(f(g, tp), what))?;
    Ok(t)
}

/// Standard normal floats of `shape` on the CPU (`torch.randn`).
pub fn randn(shape: &[i64]) -> Result<Tensor> {
    let t = Tensor::f_empty(shape, (Kind::Float, Device::Cpu))?;
    fill(t, "randn", |g, t| unsafe { satm_gen_normal_(g, t, 0.0, 1.0) })
}

/// Uniform floats in [lo, hi) of `shape` on the CPU (`torch.empty(shape).uniform_(lo, hi)`).
pub fn uniform(shape: &[i64], lo: f64, hi: f64) -> Result<Tensor> {
    let t = Tensor::f_empty(shape, (Kind::Float, Device::Cpu))?;
    fill(t, "uniform", |g, t| unsafe { satm_gen_uniform_(g, t, lo, hi) })
}

/// Uniform floats in [0, 1) of `shape` on the CPU (`torch.rand`).
pub fn rand(shape: &[i64]) -> Result<Tensor> {
    uniform(shape, 0.0, 1.0)
}

/// Integers in [0, high) of `shape` and `kind` on the CPU (`torch.randint(high, shape, dtype=kind)`).
pub fn randint(high: i64, shape: &[i64], kind: Kind) -> Result<Tensor> {
    if high <= 0 {
        bail!("randint: the upper bound must be at least 1, got {high}");
    }
    let t = Tensor::f_empty(shape, (kind, Device::Cpu))?;
    fill(t, "randint", |g, t| unsafe { satm_gen_random_(g, t, 0, high) })
}

/// `torch.nn.functional.dropout(x, p, train)` with the mask drawn from this thread's stream (on the CPU, then moved
/// to `x`'s device): the same numbers as PyTorch's CPU dropout after the same seed.
pub fn dropout(x: &Tensor, p: f64, train: bool) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&p) {
        bail!("dropout probability has to be between 0 and 1, got {p}");
    }
    if !train || p == 0.0 || x.numel() == 0 {
        return Ok(x.shallow_clone());
    }
    if p == 1.0 {
        return Ok(x.f_mul_scalar(0.0)?);
    }
    let noise = Tensor::f_empty(x.size(), (x.kind(), Device::Cpu))?;
    let noise = fill(noise, "dropout", |g, t| unsafe { satm_gen_bernoulli_(g, t, 1.0 - p) })?;
    let noise = noise.f_div_scalar(1.0 - p)?.f_to_device(x.device())?;
    Ok(x.f_mul(&noise)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &Tensor, b: &Tensor) -> bool {
        a.size() == b.size() && a.equal(b)
    }

    #[test]
    fn a_scope_has_its_own_stream_and_gives_the_previous_one_back() {
        seed(3).unwrap();
        let first = randn(&[5]).unwrap();
        let second = randn(&[5]).unwrap();
        seed(3).unwrap();
        assert!(same(&randn(&[5]).unwrap(), &first));
        {
            let _s = scope(3).unwrap();
            assert!(same(&randn(&[5]).unwrap(), &first), "a scope seeded with 3 starts where seed(3) does");
            let _ = randn(&[100]).unwrap();
        }
        assert!(same(&randn(&[5]).unwrap(), &second), "the outer stream goes on where it was left");
    }

    #[test]
    fn threads_do_not_share_a_stream() {
        seed(8).unwrap();
        let here = randn(&[4]).unwrap();
        let there = std::thread::spawn(|| {
            seed(8).unwrap();
            let _ = randn(&[1000]).unwrap();
            Vec::<f32>::try_from(randn(&[4]).unwrap()).unwrap()
        })
        .join()
        .unwrap();
        seed(8).unwrap();
        assert!(same(&randn(&[4]).unwrap(), &here), "another thread's draws did not move this thread's stream");
        assert_ne!(Vec::<f32>::try_from(here).unwrap(), there);
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(randint(0, &[2], Kind::Int64).unwrap_err().to_string().contains("at least 1"));
        assert!(dropout(&Tensor::ones([2], (Kind::Float, Device::Cpu)), 1.5, true).is_err());
        assert!(randn(&[-1]).is_err());
    }
}
