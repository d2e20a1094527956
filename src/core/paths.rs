//! Where satm's own files and the data sets are: `$SATM_HOME`, `$SATM_DATA`, the bundled sample. Pure paths and
//! environment, shared by the script layer, the command line and `satm data`.
use std::path::PathBuf;
use std::sync::Once;

/// Where satm's own files (stdlib/, configs/, scripts/, assets/) are: $SATM_HOME, else the first ancestor of the
/// executable holding stdlib/ (a cargo build in the checkout), else the checkout this binary was built from.
pub fn satm_home() -> PathBuf {
    if let Some(h) = std::env::var_os("SATM_HOME") {
        return PathBuf::from(h);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            if dir.join("stdlib").is_dir() && dir.join("Cargo.toml").is_file() {
                return dir.to_path_buf();
            }
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The sample of UTKFace faces that ships in the repository: `<home>/assets/sample` (holds `utkface/`).
pub fn sample_root() -> PathBuf {
    satm_home().join("assets").join("sample")
}

/// The file of the bundled sample.
pub fn sample_file() -> PathBuf {
    sample_root().join("utkface").join(SAMPLE_FILE)
}

/// The name of the bundled sample's file inside its `utkface/` folder.
pub const SAMPLE_FILE: &str = "utkface_sample.safetensors";

/// Where `satm data import` puts data sets when $SATM_DATA is not set: `~/.local/share/satm/data` (the platform's
/// data dir), or `None` when the platform has none.
pub fn user_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("satm").join("data"))
}

/// Which of the candidates [`data_root`] picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSource {
    /// `$SATM_DATA`.
    Env,
    /// `../shared/data` beside the checkout.
    Shared,
    /// [`user_data_dir`], where `satm data import` writes without $SATM_DATA.
    User,
    /// The bundled sample ([`sample_root`]).
    Sample,
}

/// The data root and where it came from: $SATM_DATA when set (even if it does not exist: the loader then names it),
/// else `../shared/data` beside the checkout, else the user data dir when `satm data import` filled it, else the
/// bundled sample.
pub fn data_root_with_source() -> (PathBuf, DataSource) {
    if let Some(d) = std::env::var_os("SATM_DATA") {
        return (PathBuf::from(d), DataSource::Env);
    }
    let shared = satm_home().join("../shared/data");
    if shared.is_dir() {
        return (shared.canonicalize().unwrap_or(shared), DataSource::Shared);
    }
    if let Some(u) = user_data_dir()
        && u.is_dir()
    {
        return (u, DataSource::User);
    }
    (sample_root(), DataSource::Sample)
}

/// The folder holding the data sets (`utkface/`, `adience/`, ...); see [`data_root_with_source`]. When it falls back
/// to the bundled sample it says so once, on stderr, with how to use the full data.
pub fn data_root() -> PathBuf {
    let (root, src) = data_root_with_source();
    if src == DataSource::Sample {
        static NOTE: Once = Once::new();
        NOTE.call_once(|| {
            eprintln!(
                "satm: no data set found; using the bundled sample (1,500 UTKFace faces at 32x32, {}). For the full \
                 data: `satm data import utkface UTKFace.tar.gz` (or set SATM_DATA to a folder holding utkface/).",
                root.display()
            )
        });
    }
    root
}
