//! `rung run`, `rung simulate` and `rung resume`: sweeps on this machine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use rung::tune_runtime::store::{Store, StoredTrial};
use rung::tuner::trials_root;
use rung::{Error, Spec, SweepResult, SweepStatus, Tuner};

use super::block_on;

#[derive(Args)]
pub struct RunArgs {
    /// The spec file.
    pub spec: PathBuf,
    /// The store [default: rung.db beside the spec].
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Override the spec's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the spec's max_concurrent.
    #[arg(long)]
    pub max_concurrent: Option<usize>,
    /// Override the spec's experiment name.
    #[arg(long)]
    pub name: Option<String>,
    /// No progress display.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Run the sweep a spec file describes (TOML, or JSON with a .json extension).
pub fn run(args: RunArgs) -> Result<ExitCode, Error> {
    let RunArgs {
        spec: spec_path,
        db,
        seed,
        max_concurrent,
        name,
        quiet,
    } = args;
    let mut spec = Spec::load(&spec_path)?;
    if let Some(seed) = seed {
        spec.seed = Some(seed);
    }
    if let Some(limit) = max_concurrent {
        spec.max_concurrent = Some(limit);
    }
    if let Some(name) = name {
        spec.name = name;
    }
    spec.validate()?;
    if spec.trial.command.is_empty() {
        return Err(Error::Usage(format!(
            "{}: its trials are simulated ([trial] simulate); run it with `rung simulate`",
            spec_path.display()
        )));
    }
    let db = db.unwrap_or_else(|| spec_path.parent().unwrap_or(Path::new(".")).join("rung.db"));
    eprintln!(
        "[rung] sweep \"{}\": {} · store {}",
        spec.name,
        describe(&spec),
        db.display()
    );
    let result = block_on(Tuner::from_spec(spec, db).with_progress(!quiet).run_command())?;
    Ok(finish(&result))
}

#[derive(Args)]
pub struct SimulateArgs {
    /// The spec file (its `[trial] simulate` names the workload, e.g. "learning-curve").
    pub spec: PathBuf,
    /// Simulated workers: trials running at once.
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// The store [default: rung-sim.db beside the spec].
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Override the spec's seed.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Run a sweep in virtual time against a built-in workload (`[trial] simulate`).
pub fn simulate(args: SimulateArgs) -> Result<ExitCode, Error> {
    let SimulateArgs {
        spec: spec_path,
        workers,
        db,
        seed,
    } = args;
    let mut spec = Spec::load(&spec_path)?;
    if let Some(seed) = seed {
        spec.seed = Some(seed);
    }
    let db = db.unwrap_or_else(|| spec_path.parent().unwrap_or(Path::new(".")).join("rung-sim.db"));
    let started = std::time::Instant::now();
    let simulation = rung::simulate::simulate(&spec, &db, workers, |_, _| std::ops::ControlFlow::Continue(()))?;
    let wall = started.elapsed().as_secs_f64();
    let progress = &simulation.summary.progress;
    println!(
        "simulated \"{}\" on {workers} workers: {} ({})",
        simulation.experiment,
        rung::simulate::describe(progress),
        simulation.summary.cause.label()
    );
    println!(
        "virtual time {:.1}s ({:.2}h); {} reports in {wall:.2}s of real time ({:.0} reports/s, store on)",
        simulation.virtual_time.as_secs_f64(),
        simulation.virtual_time.as_secs_f64() / 3600.0,
        simulation.reports,
        simulation.reports as f64 / wall.max(1e-9)
    );
    match (progress.best, &simulation.best_config) {
        (Some((trial, value, step)), Some(config)) => {
            println!(
                "best: {trial} {}={value} at step {step}  config {}",
                spec.metric,
                config.to_json()
            )
        }
        _ => println!("best: none"),
    }
    println!(
        "store: {}  (rung status|best|export --db {})",
        db.display(),
        db.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct ResumeArgs {
    /// The store.
    #[arg(long)]
    pub db: PathBuf,
    /// The experiment [default: the newest in the store].
    #[arg(long)]
    pub experiment: Option<String>,
    /// Run this many trials at once from now on.
    #[arg(long)]
    pub max_concurrent: Option<usize>,
    /// No progress display.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Resume an unfinished sweep (killed, crashed or interrupted) exactly where it stopped.
pub fn resume(args: ResumeArgs) -> Result<ExitCode, Error> {
    let ResumeArgs {
        db,
        experiment,
        max_concurrent,
        quiet,
    } = args;
    let store = Store::open(&db)?;
    let info = store.experiment(experiment.as_deref())?;
    drop(store);
    if info.is_finished() {
        println!(
            "experiment \"{}\" has already finished ({}); nothing to resume",
            info.name,
            info.end_cause.as_deref().unwrap_or("done")
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("[rung] resuming \"{}\" from {}", info.name, db.display());
    let tuner = Tuner::resume_from(db, Some(info.name))
        .with_max_concurrent(max_concurrent)
        .with_progress(!quiet);
    let result = block_on(tuner.run_command())?;
    Ok(finish(&result))
}

fn describe(spec: &Spec) -> String {
    let samples = if spec.num_samples < 0 {
        "unbounded".to_owned()
    } else {
        format!("{} samples", spec.num_samples)
    };
    let searcher = serde_json::to_value(&spec.searcher)
        .ok()
        .and_then(|v| v["kind"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let scheduler = serde_json::to_value(&spec.scheduler)
        .ok()
        .and_then(|v| v["kind"].as_str().map(str::to_owned))
        .unwrap_or_default();
    format!(
        "{} {} · {samples} · {} at once · {searcher} search · {scheduler} scheduler · seed {}",
        spec.mode,
        spec.metric,
        spec.max_concurrent.unwrap_or(1),
        spec.seed.unwrap_or_default()
    )
}
/// Prints the end-of-run summary and picks the exit code.
fn finish(result: &SweepResult) -> ExitCode {
    let counts = format!(
        "{} trials: {} completed, {} stopped early, {} ended with the sweep, {} errored",
        result.trials.len(),
        result.count("completed"),
        result.count("stopped"),
        result.count("sweep_ended"),
        result.count("errored")
    );
    let elapsed = result.elapsed.as_secs_f64();
    match &result.status {
        SweepStatus::Finished { cause } => println!(
            "sweep \"{}\" finished ({cause}) after {elapsed:.1}s — {counts}",
            result.experiment
        ),
        SweepStatus::Interrupted => {
            println!(
                "sweep \"{}\" interrupted after {elapsed:.1}s — {counts}",
                result.experiment
            );
            println!("resume with: rung resume --db {}", result.store.display());
        }
    }
    match result.best() {
        Some(best) => {
            let (value, step) = best.best.expect("best has a value");
            println!(
                "best: {} {}={value} at step {step}  config {}",
                best.id,
                result.metric,
                best.config.to_json()
            );
        }
        None => println!("best: none (no trial reported \"{}\")", result.metric),
    }
    let errored = print_errored(result);
    println!(
        "store: {}  (rung status|best|export --db {})",
        result.store.display(),
        result.store.display()
    );
    match &result.status {
        SweepStatus::Interrupted => ExitCode::from(130),
        SweepStatus::Finished { cause } if cause == "too_many_failures" || cause == "searcher_failed" => {
            ExitCode::FAILURE
        }
        SweepStatus::Finished { .. } if errored > 0 && errored == result.trials.len() => {
            eprintln!("error: every trial errored");
            ExitCode::FAILURE
        }
        SweepStatus::Finished { .. } => ExitCode::SUCCESS,
    }
}

/// Prints the first few errored trials with their logs; returns how many errored.
fn print_errored(result: &SweepResult) -> usize {
    let errored: Vec<&StoredTrial> = result.trials.iter().filter(|t| t.status.label() == "errored").collect();
    for trial in errored.iter().take(5) {
        let log = trials_root(&result.store, &result.experiment)
            .join(trial.id.to_string())
            .join("trial.log");
        println!(
            "errored: {} — {} (log: {})",
            trial.id,
            trial.error.as_deref().unwrap_or("unknown error"),
            log.display()
        );
    }
    if errored.len() > 5 {
        println!(
            "... and {} more errored trials (rung export --db {})",
            errored.len() - 5,
            result.store.display()
        );
    }
    errored.len()
}
