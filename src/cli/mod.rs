//! The command line: `satm run FILE`, `satm -e CODE`, `satm repl` (the default), `satm info`, `satm bench`, `satm grid`,
//! `satm data`.
pub mod bench;
pub mod grid;

use crate::core::{amp, cancel, device};
use crate::script;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "satm", version, about = "Simultaneous Adversarial Training of Multiple networks, scripted in Rhai")]
pub struct Cli {
    /// Evaluate CODE (a Rhai snippet) and exit.
    #[arg(short = 'e', long = "eval", value_name = "CODE")]
    pub eval: Option<String>,
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

/// Options every script-running command takes.
#[derive(Args, Debug, Clone, Default)]
pub struct SessionArgs {
    /// key=value visible to the script as a constant and through param("key", default); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    pub set: Vec<String>,
    /// Output directory for this run (default: runs/<script>/<time>).
    #[arg(long, value_name = "DIR", global = true)]
    pub out: Option<PathBuf>,
    /// Default device: cpu, cuda, cuda:N or auto.
    #[arg(long, value_name = "DEVICE", global = true)]
    pub device: Option<String>,
    /// Intra-op CPU threads (default: libtorch's choice).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Seed for every RNG.
    #[arg(long, global = true)]
    pub seed: Option<u64>,
    /// fp32, bf16 or auto.
    #[arg(long, global = true)]
    pub precision: Option<String>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run a Rhai script.
    Run {
        /// The script (.rhai).
        file: PathBuf,
    },
    /// Open the interactive `satm>` prompt (also what `satm` alone does).
    Repl,
    /// Versions, CPU features, CUDA devices, threads, default device and precision.
    Info {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The SATM step against the plain-PyTorch reference, side by side (img/s, ratio, peak RSS, GFLOP/s).
    Bench(bench::BenchArgs),
    /// Run a script over a grid of parameters (locally or as a Slurm job array); status; collect into tables.
    Grid(Box<grid::GridArgs>),
    /// Follow a run directory another process writes: a status line as it advances, until it ends or Ctrl-C.
    Watch {
        /// The run directory (runs/<script>/<time>/<name>, holding run.json and metrics.jsonl).
        dir: PathBuf,
        /// Print the status once and exit.
        #[arg(long)]
        once: bool,
        /// Seconds between looks.
        #[arg(long, default_value_t = 2.0)]
        every: f64,
    },
    /// The data sets: list what satm finds; import UTKFace or Adience from their official downloads.
    #[command(subcommand)]
    Data(DataCmd),
}

#[derive(Subcommand, Debug)]
pub enum DataCmd {
    /// Each data set under $SATM_DATA (or the other data roots) and the bundled sample: counts per class, image
    /// size, cache state.
    List,
    /// Unpack (or link) an official download into $SATM_DATA (default ~/.local/share/satm/data), verified.
    Import {
        #[command(subcommand)]
        what: ImportCmd,
    },
}

/// Options of both imports.
#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    /// The data root to import into (default: $SATM_DATA, else ~/.local/share/satm/data).
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// Replace a data set of the same name that is already there.
    #[arg(long)]
    pub force: bool,
    /// Leave out (and count) images that do not decode instead of failing.
    #[arg(long)]
    pub skip_bad: bool,
}

#[derive(Subcommand, Debug)]
pub enum ImportCmd {
    /// UTKFace: UTKFace.tar.gz, crop_part1.tar.gz (or the crop_part1 folder), or a folder of age_gender_race_date*.jpg.
    Utkface {
        /// The archive or folder.
        path: PathBuf,
        #[command(flatten)]
        args: ImportArgs,
    },
    /// Adience: the face crops (faces.tar.gz / aligned.tar.gz, or the folder) and the five fold files.
    Adience {
        /// The face-crop archive or folder.
        #[arg(long, value_name = "PATH")]
        faces: PathBuf,
        /// The folder holding fold_0_data.txt .. fold_4_data.txt.
        #[arg(long, value_name = "DIR")]
        folds: PathBuf,
        #[command(flatten)]
        args: ImportArgs,
    },
}

fn data_main(cmd: &DataCmd, quiet: bool) -> i32 {
    use crate::core::data::{import, list};
    cancel::install_handler(true);
    let res = match cmd {
        DataCmd::List => list::render().map(|s| print!("{s}")),
        DataCmd::Import { what } => {
            let a = match what {
                ImportCmd::Utkface { args, .. } | ImportCmd::Adience { args, .. } => args,
            };
            let dest =
                a.to.clone()
                    .or_else(|| std::env::var_os("SATM_DATA").map(PathBuf::from))
                    .or_else(crate::core::paths::user_data_dir);
            match dest {
                None => Err(anyhow::anyhow!("no place to import into: set SATM_DATA or pass --to DIR")),
                Some(dest) => {
                    let o = import::ImportOpts { dest, force: a.force, skip_bad: a.skip_bad, progress: !quiet };
                    let r = match what {
                        ImportCmd::Utkface { path, .. } => import::import_utkface(path, &o),
                        ImportCmd::Adience { faces, folds, .. } => import::import_adience(faces, folds, &o),
                    };
                    r.map(|r| print!("{r}"))
                }
            }
        }
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("satm data: {e:#}");
            1
        }
    }
}

/// Applies `--set`, `--out`, `--device`, ... to the script session. Errors name the offending option.
pub fn apply_session(args: &SessionArgs, run_name: &str) -> Result<(), String> {
    script::state::update(|s| {
        s.run_name = run_name.to_string();
        s.quiet |= args.quiet;
        s.out_dir = args.out.clone();
    });
    for kv in &args.set {
        let (k, v) = script::parse_set(kv)?;
        script::state::update(|s| {
            s.params.insert(k.as_str().into(), v);
        });
    }
    if let Some(d) = &args.device {
        let dev = device::parse_device(d).map_err(|e| format!("--device: {e}"))?;
        script::state::update(|s| s.device = dev);
    }
    if let Some(t) = args.threads {
        device::set_threads(t).map_err(|e| format!("--threads: {e}"))?;
    }
    let seed = args.seed.unwrap_or(0);
    device::seed_everything(seed).map_err(|e| format!("--seed: {e:#}"))?;
    script::state::update(|s| s.seed = seed);
    if let Some(p) = &args.precision {
        let p = device::Precision::parse(p).map_err(|e| format!("--precision: {e}"))?;
        script::state::update(|s| s.precision = p);
    }
    Ok(())
}

fn print_info() {
    let v = script::info_json();
    let cpu = device::cpu_info();
    println!("satm      {}", crate::VERSION);
    println!("libtorch  {}", v["libtorch"].as_str().unwrap_or("?"));
    println!("rhai      {}", v["rhai"].as_str().unwrap_or("?"));
    println!("cpu       {} ({} cores)", cpu.model, cpu.cores);
    let feats: Vec<&str> =
        [("avx2", cpu.avx2), ("avx512f", cpu.avx512f), ("avx512_bf16", cpu.avx512_bf16), ("amx_bf16", cpu.amx_bf16)]
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect();
    println!(
        "features  {}",
        if feats.is_empty() { "(none of avx2/avx512f/avx512_bf16/amx_bf16)".into() } else { feats.join(" ") }
    );
    let cuda = device::cuda_devices();
    if cuda.is_empty() {
        println!("cuda      not available");
    } else {
        println!("cuda      {} device(s)", cuda.len());
        for d in &cuda {
            println!("  cuda:{}  {}  {:.1} GiB", d.index, d.name, d.memory_bytes as f64 / (1u64 << 30) as f64);
        }
        match amp::cudnn_version() {
            Some(c) => println!("cudnn     {c}"),
            None => println!("cudnn     not available"),
        }
    }
    println!("threads   {}", device::threads());
    println!("device    {} (default)", v["default_device"].as_str().unwrap_or("?"));
    println!(
        "precision {} (auto -> {}: {})",
        v["precision"].as_str().unwrap_or("?"),
        v["auto_precision"].as_str().unwrap_or("?"),
        v["auto_precision_reason"].as_str().unwrap_or("?")
    );
    println!("home      {}", v["satm_home"].as_str().unwrap_or("?"));
    println!("data      {} ({})", v["data_root"].as_str().unwrap_or("?"), v["data_source"].as_str().unwrap_or("?"));
}

fn run_script(file: Option<&PathBuf>, code: Option<&str>, args: &SessionArgs) -> i32 {
    let name =
        file.and_then(|f| f.file_stem()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "eval".into());
    if let Err(e) = apply_session(args, &name) {
        eprintln!("satm: {e}");
        return 2;
    }
    cancel::install_handler(true);
    let engine = script::new_engine();
    let mut scope = script::scope_with_params();
    let res = match (file, code) {
        (Some(f), _) => script::run_file(&engine, f, &mut scope),
        (None, Some(c)) => script::run_source(&engine, c, "<-e>", &mut scope).inspect(|v| {
            if !v.is_unit() {
                println!("{}", crate::repl::display_value(&engine, v));
            }
        }),
        (None, None) => unreachable!("run_script needs a file or code"),
    };
    // Background runs the script started finish before the process ends (Ctrl-C stops them with a checkpoint).
    script::api::live::finish_all(false);
    match res {
        Ok(_) => 0,
        Err(msg) => {
            eprintln!("{msg}");
            if cancel::is_cancelled() { 130 } else { 1 }
        }
    }
}

/// Parses the command line and runs; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match (&cli.eval, &cli.cmd) {
        (Some(code), None) => run_script(None, Some(code), &cli.session),
        (Some(_), Some(_)) => {
            eprintln!("satm: -e CODE cannot be combined with a subcommand");
            2
        }
        (None, Some(Cmd::Run { file })) => run_script(Some(file), None, &cli.session),
        (None, Some(Cmd::Info { json })) => {
            if let Err(e) = apply_session(&cli.session, "info") {
                eprintln!("satm: {e}");
                return 2;
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&script::info_json()).unwrap_or_default());
            } else {
                print_info();
            }
            0
        }
        (None, Some(Cmd::Bench(a))) => {
            bench::main(&bench::BenchArgs { device: cli.session.device.clone(), ..a.clone() })
        }
        (None, Some(Cmd::Grid(args))) => grid::main(args, &cli.session),
        (None, Some(Cmd::Watch { dir, once, every })) => crate::core::train::watch::main(dir, *once, *every),
        (None, Some(Cmd::Data(cmd))) => data_main(cmd, cli.session.quiet),
        (None, Some(Cmd::Repl)) | (None, None) => {
            if let Err(e) = apply_session(&cli.session, "repl") {
                eprintln!("satm: {e}");
                return 2;
            }
            crate::repl::run()
        }
    }
}
