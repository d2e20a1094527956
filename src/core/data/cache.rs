//! The decoded-tensor cache: one file per (file list, sizes, mtimes, decode options), so a second load of the same
//! data at the same size skips decoding. Files are written atomically; a damaged or mismatched file is ignored (and
//! rewritten), never trusted.
//!
//! File layout (little endian): magic `SATMDC02`, u64 n, u64 size, u64 failures, then per failure u64 index,
//! u64 length, UTF-8 message; then n*3*size*size pixel bytes; then the sha256 of everything before it (32 bytes),
//! so a truncated or bit-flipped file is detected (and rebuilt) instead of feeding wrong pixels to training.
use super::decode::{DecodeOpts, Decoded};
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

const MAGIC: &[u8; 8] = b"SATMDC02";
const SUM: usize = 32;

/// `$SATM_CACHE` when set, else `~/.cache/satm/data` (the platform cache dir), else `./.satm-cache/data`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SATM_CACHE") {
        return PathBuf::from(d);
    }
    dirs::cache_dir().map(|d| d.join("satm").join("data")).unwrap_or_else(|| PathBuf::from(".satm-cache/data"))
}

/// The hex sha256 of the inputs that decide the decoded pixels: every path with its byte size and mtime, and the
/// decode options. Labels are not part of it (they are re-read on every load, which is cheap).
pub fn key(paths: &[PathBuf], opts: &DecodeOpts) -> Result<String> {
    let mut h = Sha256::new();
    h.update(format!("satm-decode v1 size={} resize={}\n", opts.size, opts.resize.name()).as_bytes());
    for p in paths {
        let m = std::fs::metadata(p).with_context(|| format!("reading metadata of {}", p.display()))?;
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| (d.as_secs(), d.subsec_nanos()))
            .unwrap_or((0, 0));
        h.update(format!("{}\t{}\t{}.{}\n", p.display(), m.len(), mtime.0, mtime.1).as_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn file_name(tag: &str, key: &str, n: usize, size: i64) -> String {
    let tag: String =
        tag.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("{tag}-{n}x{size}-{}.bin", &key[..16])
}

/// The path of the cache file for these inputs (for tests and `satm info`).
pub fn path_for(dir: &Path, tag: &str, key: &str, n: usize, size: i64) -> PathBuf {
    dir.join(file_name(tag, key, n, size))
}

/// Loads a cached decode; `None` when absent or unusable (a warning is printed for a damaged file).
pub fn load(dir: &Path, tag: &str, key: &str, n: usize, size: i64) -> Option<Decoded> {
    let path = path_for(dir, tag, key, n, size);
    let bytes = std::fs::read(&path).ok()?;
    match parse(&bytes, n, size) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!(
                "satm: warning: ignoring damaged data cache {}: {e:#}; decoding the images again",
                path.display()
            );
            None
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        if self.b.len() - self.pos < len {
            bail!("truncated");
        }
        let s = &self.b[self.pos..self.pos + len];
        self.pos += len;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
}

fn parse(b: &[u8], n: usize, size: i64) -> Result<Decoded> {
    if b.len() < MAGIC.len() || &b[..MAGIC.len()] != MAGIC {
        bail!("bad magic (not a satm data cache, or one from an older satm)");
    }
    if b.len() < MAGIC.len() + SUM {
        bail!("truncated");
    }
    let (b, sum) = b.split_at(b.len() - SUM);
    if Sha256::digest(b).as_slice() != sum {
        bail!("checksum mismatch (truncated or damaged)");
    }
    let mut r = Reader { b, pos: 0 };
    r.take(MAGIC.len())?;
    let (fn_, fsize, nfail) = (r.u64()?, r.u64()?, r.u64()?);
    if fn_ as usize != n || fsize as i64 != size {
        bail!("holds {fn_} images of {fsize}px, expected {n} of {size}px");
    }
    let mut failed = Vec::new();
    for _ in 0..nfail {
        let idx = r.u64()? as usize;
        let len = r.u64()? as usize;
        let msg = String::from_utf8(r.take(len)?.to_vec())?;
        if idx >= n {
            bail!("failure index {idx} out of range");
        }
        failed.push((idx, msg));
    }
    let px = r.take(n * 3 * (size * size) as usize)?;
    if r.pos != b.len() {
        bail!("{} trailing bytes", b.len() - r.pos);
    }
    let images = Tensor::f_from_data_size(px, &[n as i64, 3, size, size], Kind::Uint8)?;
    Ok(Decoded { images, failed })
}

/// Writes the cache file atomically.
pub fn store(dir: &Path, tag: &str, key: &str, d: &Decoded) -> Result<()> {
    let sz = d.images.size();
    if sz.len() != 4 || sz[1] != 3 || sz[2] != sz[3] {
        bail!("cache store: expected [N, 3, S, S] images, got {sz:?}");
    }
    let (n, size) = (sz[0] as usize, sz[2]);
    let numel = n * 3 * (size * size) as usize;
    let mut px = vec![0u8; numel];
    d.images.f_contiguous()?.f_copy_data_u8(&mut px, numel)?;
    let path = path_for(dir, tag, key, n, size);
    let mut head = Vec::new();
    head.extend_from_slice(MAGIC);
    for v in [n as u64, size as u64, d.failed.len() as u64] {
        head.extend_from_slice(&v.to_le_bytes());
    }
    for (i, m) in &d.failed {
        head.extend_from_slice(&(*i as u64).to_le_bytes());
        head.extend_from_slice(&(m.len() as u64).to_le_bytes());
        head.extend_from_slice(m.as_bytes());
    }
    let sum = Sha256::new().chain_update(&head).chain_update(&px).finalize();
    crate::core::fsutil::atomic_write_with(&path, |f| {
        let mut w = std::io::BufWriter::new(f);
        w.write_all(&head)?;
        w.write_all(&px)?;
        w.write_all(&sum)?;
        w.flush()?;
        Ok(())
    })
}
