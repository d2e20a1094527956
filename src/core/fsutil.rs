//! Files are never left half-written: every checkpoint, log snapshot, table and plot goes to a temporary file in the
//! same directory and is renamed into place.
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(path, |f| f.write_all(bytes).map_err(Into::into))
}

/// Calls `fill` on a temporary file beside `path`, then renames it to `path`. On error nothing appears at `path`.
pub fn atomic_write_with(path: &Path, fill: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".satm-tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    fill(tmp.as_file_mut()).map_err(|e| write_error(e, path))?;
    tmp.as_file_mut().sync_all().ok();
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// Atomic write for files that a library writes by path (safetensors, PNG encoders): `fill` gets a temporary path
/// in the same directory with the same extension, and the result is renamed to `path`.
pub fn atomic_write_path(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(".satm-tmp-")
        .suffix(&ext)
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?
        .into_temp_path();
    fill(&tmp).map_err(|e| write_error(e, path))?;
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// "writing PATH: cause", and when the cause is a full disk, a quota or the file size limit, what happened to PATH.
fn write_error(e: anyhow::Error, path: &Path) -> anyhow::Error {
    const FULL: [i32; 3] = [libc::ENOSPC, libc::EFBIG, libc::EDQUOT];
    let full = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().and_then(|io| io.raw_os_error()).is_some_and(|n| FULL.contains(&n))
    }) || {
        let text = format!("{e:#}");
        // Libraries that write by path (safetensors) report the io::Error as text, displayed or debug-printed.
        FULL.iter().any(|n| text.contains(&format!("(os error {n})")) || text.contains(&format!("code: {n}, ")))
    };
    if full {
        e.context(format!(
            "writing {}: the disk is full (or a quota or file size limit was reached); nothing was written there \
             and the previous file, if any, is unchanged; free some space and run again",
            path.display()
        ))
    } else {
        e.context(format!("writing {}", path.display()))
    }
}
