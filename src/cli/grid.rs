//! `satm grid`'s command line: the clap types, turned into `grid`'s plain options.
use super::SessionArgs;
use crate::grid::{self, Action, Launch, Session, SlurmFlags};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `satm grid ...`: run a script over a grid of parameters, or manage an existing grid.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct GridArgs {
    #[command(subcommand)]
    pub action: Option<GridCmd>,
    #[command(flatten)]
    pub launch: LaunchArgs,
}

/// Options of `satm grid SCRIPT ...` and `satm grid submit GRIDDIR ...`.
#[derive(Args, Debug, Clone, Default)]
pub struct LaunchArgs {
    /// The script (.rhai) to run at every point, or an existing grid directory to resume.
    #[arg(value_name = "SCRIPT|GRIDDIR")]
    pub target: Option<PathBuf>,
    /// An axis: KEY=A..B (inclusive integer range: fold=0..4 is 0,1,2,3,4; A..B:STEP for a step) or KEY=V1,V2,...
    /// Values are typed like --set. Repeat for more axes; the grid is their cartesian product.
    #[arg(long = "over", value_name = "KEY=VALUES")]
    pub over: Vec<String>,
    /// local (child processes here) or slurm (one job-array task per point). Default: local, or what the grid used.
    #[arg(long, value_name = "local|slurm")]
    pub executor: Option<String>,
    /// The grid directory (default: runs/<script>/grid-<hash of the grid>, so the same command resumes the same grid).
    #[arg(long, value_name = "GRIDDIR")]
    pub dir: Option<PathBuf>,
    /// Points at once: local processes, or the Slurm array's %N limit (default: 1 locally, no limit on Slurm).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Print the points (local) or the sbatch script (slurm) and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run failed points again too (by default only missing points run; done points never do).
    #[arg(long)]
    pub retry_failed: bool,
    /// slurm: wait until the submitted tasks have left the queue, then print the status.
    #[arg(long)]
    pub wait: bool,
    /// Seconds a stopped point gets after SIGINT before SIGTERM (and again before SIGKILL).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub grace: u64,
    #[command(flatten)]
    pub slurm: SlurmArgs,
}

/// Slurm resources: a RON profile and flags that override it.
#[derive(Args, Debug, Clone, Default)]
pub struct SlurmArgs {
    /// A Slurm profile: a RON file, or a name under configs/ (slurm_NAME.ron or NAME.ron).
    #[arg(long, value_name = "NAME|PATH")]
    pub profile: Option<String>,
    /// CPUs per point (also sets OMP_NUM_THREADS in the task, so libtorch uses its share).
    #[arg(long, value_name = "N")]
    pub cpus_per_task: Option<u32>,
    /// Generic resources, e.g. gpu:1.
    #[arg(long, value_name = "gpu:N")]
    pub gres: Option<String>,
    /// Time limit per point (HH:MM:SS).
    #[arg(long, value_name = "HH:MM:SS")]
    pub time: Option<String>,
    /// Slurm partition (queue) to submit to.
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm account to charge.
    #[arg(long)]
    pub account: Option<String>,
}

/// The grid subcommands.
#[derive(Subcommand, Debug)]
pub enum GridCmd {
    /// done / running / queued / failed / missing per point (markers, and squeue when a Slurm job is recorded).
    Status {
        #[arg(value_name = "GRIDDIR")]
        dir: PathBuf,
    },
    /// Merge every point's results.json into tables with mean ± std over folds (saved to GRIDDIR/collected/ or --out).
    Collect {
        #[arg(value_name = "GRIDDIR")]
        dir: PathBuf,
        /// The key averaged over (every other key makes its own rows).
        #[arg(long, default_value = "fold", value_name = "KEY")]
        fold_key: String,
        /// Exit with 3 when a point is not done or a table could not be merged over all its folds.
        #[arg(long)]
        strict: bool,
    },
    /// Run (or submit) the missing points of an existing grid again; with --retry-failed also the failed ones.
    Submit(Box<LaunchArgs>),
    /// Run point INDEX of the grid (what each Slurm array task does); skips it when it is done.
    RunPoint {
        #[arg(value_name = "GRIDDIR")]
        dir: PathBuf,
        #[arg(value_name = "INDEX")]
        index: usize,
    },
}

impl From<&SlurmArgs> for SlurmFlags {
    fn from(a: &SlurmArgs) -> SlurmFlags {
        SlurmFlags {
            profile: a.profile.clone(),
            cpus_per_task: a.cpus_per_task,
            gres: a.gres.clone(),
            time: a.time.clone(),
            partition: a.partition.clone(),
            account: a.account.clone(),
        }
    }
}

impl From<&LaunchArgs> for Launch {
    fn from(a: &LaunchArgs) -> Launch {
        Launch {
            target: a.target.clone(),
            over: a.over.clone(),
            executor: a.executor.clone(),
            dir: a.dir.clone(),
            jobs: a.jobs,
            dry_run: a.dry_run,
            retry_failed: a.retry_failed,
            wait: a.wait,
            grace: a.grace,
            slurm: (&a.slurm).into(),
        }
    }
}

impl From<&SessionArgs> for Session {
    fn from(a: &SessionArgs) -> Session {
        Session {
            set: a.set.clone(),
            out: a.out.clone(),
            device: a.device.clone(),
            threads: a.threads,
            seed: a.seed,
            precision: a.precision.clone(),
            quiet: a.quiet,
        }
    }
}

/// `satm grid ...`: the exit status.
pub fn main(args: &GridArgs, session: &SessionArgs) -> i32 {
    let action = match &args.action {
        Some(GridCmd::Status { dir }) => Action::Status(dir.clone()),
        Some(GridCmd::Collect { dir, fold_key, strict }) => {
            Action::Collect { dir: dir.clone(), fold_key: fold_key.clone(), strict: *strict }
        }
        Some(GridCmd::Submit(l)) => Action::Submit(l.as_ref().into()),
        Some(GridCmd::RunPoint { dir, index }) => Action::RunPoint { dir: dir.clone(), index: *index },
        None => Action::Launch((&args.launch).into()),
    };
    grid::main(&action, &session.into())
}
