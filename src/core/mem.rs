//! Allocation sizes checked before libtorch sees them. A shape typed at the prompt can ask for terabytes; libtorch
//! then either refuses (when the kernel does) or gets the memory on paper and the process is killed when it is
//! touched. Every constructor a script reaches asks [`check`] first and gets a clear error instead.
//!
//! The ceiling is the memory available now (`MemAvailable`, and a cgroup's remaining limit when there is one) on the
//! CPU, and the device's total memory on CUDA; `SATM_MAX_ALLOC` (bytes, or with a K/M/G/T suffix) lowers or raises it.
use anyhow::{Result, bail};
use tch::{Device, Kind};

/// Bytes per element of `kind`.
pub fn elem_bytes(kind: Kind) -> u64 {
    match kind {
        Kind::Uint8 | Kind::Int8 | Kind::Bool | Kind::QInt8 | Kind::QUInt8 => 1,
        Kind::Float8e5m2 | Kind::Float8e4m3fn | Kind::Float8e5m2fnuz | Kind::Float8e4m3fnuz => 1,
        Kind::Int16 | Kind::Half | Kind::BFloat16 => 2,
        Kind::Int | Kind::Float | Kind::QInt32 | Kind::ComplexHalf => 4,
        Kind::Int64 | Kind::Double | Kind::ComplexFloat => 8,
        Kind::ComplexDouble => 16,
    }
}

/// `1.5 GiB`-style text.
pub fn human(bytes: u128) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} bytes") } else { format!("{v:.1} {}", units[u]) }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).map(|v| (v * mul as f64) as u64)
}

fn meminfo_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What a cgroup (v2) limit leaves this process, if it has one.
fn cgroup_available() -> Option<u64> {
    let rel = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = rel.lines().find_map(|l| l.strip_prefix("0::"))?.trim().to_string();
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let max: u64 = std::fs::read_to_string(dir.join("memory.max")).ok()?.trim().parse().ok()?;
    let cur: u64 = std::fs::read_to_string(dir.join("memory.current")).ok()?.trim().parse().ok()?;
    Some(max.saturating_sub(cur))
}

/// The most one allocation on `device` may take, and where that figure comes from.
pub fn ceiling(device: Device) -> Option<(u64, String)> {
    if let Some(v) = std::env::var("SATM_MAX_ALLOC").ok().as_deref().and_then(parse_size) {
        return Some((v, "SATM_MAX_ALLOC".into()));
    }
    match device {
        Device::Cuda(i) => {
            let d = crate::core::device::cuda_devices().into_iter().find(|d| d.index == i)?;
            (d.memory_bytes > 0).then(|| (d.memory_bytes, format!("the memory of cuda:{i}")))
        }
        _ => {
            let avail = match (meminfo_available(), cgroup_available()) {
                (Some(a), Some(c)) => a.min(c),
                (a, c) => a.or(c)?,
            };
            Some((avail, "the memory available now".into()))
        }
    }
}

/// Errors when a tensor of `shape` and `kind` on `device` cannot fit: a negative or overflowing shape, or more bytes
/// than [`ceiling`]. `what` names the function.
pub fn check(what: &str, shape: &[i64], kind: Kind, device: Device) -> Result<()> {
    if let Some(d) = shape.iter().find(|d| **d < 0) {
        bail!("{what}: shape {shape:?} has a negative size {d}");
    }
    let numel = shape.iter().try_fold(1u128, |acc, d| acc.checked_mul(*d as u128));
    let bytes = numel.and_then(|n| n.checked_mul(elem_bytes(kind) as u128));
    check_bytes(what, &format!("a {shape:?} {kind:?} tensor"), bytes, device)
}

/// [`check`] for a byte count computed elsewhere (`None` = it overflowed). `thing` says what would be allocated.
pub fn check_bytes(what: &str, thing: &str, bytes: Option<u128>, device: Device) -> Result<()> {
    let Some(bytes) = bytes.filter(|b| *b <= i64::MAX as u128) else {
        bail!("{what}: {thing} would need more bytes than can be counted; use a smaller size");
    };
    if let Some((max, from)) = ceiling(device)
        && bytes > max as u128
    {
        bail!("{what}: {thing} needs {}, more than {from} ({}); use a smaller size", human(bytes), human(max as u128));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("x"), None);
        assert_eq!(human(4_000_000_000_000), "3.6 TiB");
        assert_eq!(human(10), "10 bytes");
    }
}
