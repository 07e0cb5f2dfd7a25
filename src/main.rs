//! The `rung` command line: run, resume and inspect sweeps.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rung::tune_core::store::{ExperimentInfo, Store, StoredTrial};
use rung::tune_core::trial::metrics_serde;
use rung::tuner::{best_trial, trials_root};
use rung::{Error, Spec, SweepResult, SweepStatus, Tuner};
use serde_json::{Value, json};

/// rung — hyperparameter tuning: sample configurations from a search space, run trials, stop
/// the weak ones early, and
/// keep every trial, report and checkpoint in a SQLite store so a killed sweep resumes exactly.
///
/// Searchers: random, grid, sobol, tpe, gp, bohb. Schedulers: fifo, asha (stop or promote), hyperband,
/// median, pbt.
///
/// Exit codes: 0 success, 1 failure (including a sweep whose trials all errored), 2 bad input,
/// 130 interrupted (resume with `rung resume`).
#[derive(Parser)]
#[command(name = "rung", version, about, long_about)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sweep a spec file describes (TOML, or JSON with a .json extension).
    ///
    /// Trials run as processes of `[trial] command`; each reports by printing
    /// `rung:report {"step": 3, "loss": 0.41}` lines. Every report, trial and checkpoint is
    /// stored in the SQLite store (--db); if rung is killed, `rung resume` carries on exactly.
    Run {
        /// The spec file.
        spec: PathBuf,
        /// The store [default: rung.db beside the spec].
        #[arg(long)]
        db: Option<PathBuf>,
        /// Override the spec's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Override the spec's max_concurrent.
        #[arg(long)]
        max_concurrent: Option<usize>,
        /// Override the spec's experiment name.
        #[arg(long)]
        name: Option<String>,
        /// No progress display.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run a sweep in virtual time against a built-in workload (`[trial] simulate`).
    ///
    /// The real controller, searcher, scheduler and store run; only the trials are simulated,
    /// so nothing sleeps and no process starts. The same spec and seed give byte-identical
    /// `rung export` output. Prints the virtual time the sweep would have taken and the best
    /// result.
    Simulate {
        /// The spec file (its `[trial] simulate` names the workload, e.g. "learning-curve").
        spec: PathBuf,
        /// Simulated workers: trials running at once.
        #[arg(long, default_value_t = 16)]
        workers: usize,
        /// The store [default: rung-sim.db beside the spec].
        #[arg(long)]
        db: Option<PathBuf>,
        /// Override the spec's seed.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Resume an unfinished sweep (killed, crashed or interrupted) exactly where it stopped.
    ///
    /// The event log is replayed through fresh searcher and scheduler objects; completed trials
    /// are never rerun, and trials that were running restart from their last checkpoint.
    Resume {
        /// The store.
        #[arg(long)]
        db: PathBuf,
        /// The experiment [default: the newest in the store].
        #[arg(long)]
        experiment: Option<String>,
        /// Run this many trials at once from now on.
        #[arg(long)]
        max_concurrent: Option<usize>,
        /// No progress display.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show a sweep's state: trial counts by status, elapsed time, best so far.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the best trial: its config and its metrics at its best step.
    Best {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export one row per trial: id, status, config, last and best metric, steps.
    Export {
        #[command(flatten)]
        target: Target,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Which experiment of which store a read command looks at.
#[derive(Args)]
struct Target {
    /// The store.
    #[arg(long)]
    db: PathBuf,
    /// The experiment [default: the newest in the store].
    #[arg(long)]
    experiment: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(if error.is_bad_input() { 2 } else { 1 })
        }
    }
}

fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Run {
            spec: spec_path,
            db,
            seed,
            max_concurrent,
            name,
            quiet,
        } => {
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
        Command::Simulate {
            spec: spec_path,
            workers,
            db,
            seed,
        } => {
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
        Command::Resume {
            db,
            experiment,
            max_concurrent,
            quiet,
        } => {
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
        Command::Status { target, json } => {
            let (store, info, spec) = open(&target)?;
            let trials = store.trials(info.id)?;
            print_status(&target.db, &info, &spec, &trials, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Best { target, json } => {
            let (store, info, spec) = open(&target)?;
            let trials = store.trials(info.id)?;
            let Some(best) = best_trial(&trials, spec.mode) else {
                eprintln!("experiment \"{}\" has no result for \"{}\" yet", info.name, spec.metric);
                return Ok(ExitCode::FAILURE);
            };
            let (value, step) = best.best.expect("the best trial has a value");
            let reports = store.reports(info.id, Some(best.id))?;
            let metrics = reports
                .into_iter()
                .find(|(_, r)| r.step == step)
                .map(|(_, r)| r.metrics)
                .unwrap_or_default();
            if json {
                let metrics: serde_json::Map<String, Value> = metrics
                    .iter()
                    .map(|(k, v)| (k.clone(), metrics_serde::encode(*v)))
                    .collect();
                let out = json!({
                    "experiment": info.name, "trial": best.id.to_string(), "metric": spec.metric, "value": metrics_serde::encode(value),
                    "step": step, "status": best.status.label(), "config": best.config.0, "metrics": metrics,
                });
                println!("{}", serde_json::to_string_pretty(&out).expect("json"));
            } else {
                println!(
                    "best trial of \"{}\": {} with {}={value} at step {step} ({})",
                    info.name,
                    best.id,
                    spec.metric,
                    best.status.label()
                );
                println!("config:");
                for (name, value) in best.config.flatten() {
                    println!("  {name} = {value}");
                }
                println!("metrics at step {step}:");
                for (name, value) in &metrics {
                    println!("  {name} = {value}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { target, format, output } => {
            let (store, info, spec) = open(&target)?;
            let trials = store.trials(info.id)?;
            let text = match format {
                Format::Csv => export_csv(&spec, &trials),
                Format::Json => export_json(&spec, &trials),
            };
            match output {
                Some(path) => std::fs::write(&path, text)
                    .map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))?,
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

fn open(target: &Target) -> Result<(Store, ExperimentInfo, Spec), Error> {
    let store = Store::open(&target.db)?;
    let info = store.experiment(target.experiment.as_deref())?;
    let spec: Spec = serde_json::from_str(&info.spec).map_err(rung::CoreError::from)?;
    Ok((store, info, spec))
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
        SweepStatus::Finished { .. } if !errored.is_empty() && errored.len() == result.trials.len() => {
            eprintln!("error: every trial errored");
            ExitCode::FAILURE
        }
        SweepStatus::Finished { .. } => ExitCode::SUCCESS,
    }
}

fn print_status(db: &Path, info: &ExperimentInfo, spec: &Spec, trials: &[StoredTrial], json: bool) {
    let mut counts = std::collections::BTreeMap::<&str, u64>::new();
    for label in [
        "pending",
        "running",
        "paused",
        "completed",
        "stopped",
        "sweep_ended",
        "errored",
    ] {
        counts.insert(label, 0);
    }
    for trial in trials {
        *counts.entry(trial.status.label()).or_default() += 1;
    }
    let best = best_trial(trials, spec.mode).map(|t| (t.id, t.best.expect("has a value")));
    let state = if info.is_finished() { "finished" } else { "unfinished" };
    if json {
        let out = json!({
            "experiment": info.name, "state": state, "end_cause": info.end_cause, "seed": info.seed,
            "elapsed_s": info.elapsed_ms as f64 / 1000.0, "metric": spec.metric, "mode": spec.mode,
            "trials": trials.len(), "counts": counts,
            "best": best.map(|(trial, (value, step))| json!({"trial": trial.to_string(), "value": metrics_serde::encode(value), "step": step})),
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return;
    }
    println!("experiment  {} (seed {})", info.name, info.seed);
    match &info.end_cause {
        Some(cause) if info.is_finished() => println!("state       finished: {cause}"),
        _ => println!(
            "state       unfinished — resume with: rung resume --db {}",
            db.display()
        ),
    }
    println!("elapsed     {:.1}s", info.elapsed_ms as f64 / 1000.0);
    let counts: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(label, n)| format!("{n} {label}"))
        .collect();
    println!(
        "trials      {}{}{}",
        trials.len(),
        if counts.is_empty() { "" } else { ": " },
        counts.join(", ")
    );
    match best {
        Some((trial, (value, step))) => println!(
            "best        {trial} {}={value} at step {step} ({})",
            spec.metric, spec.mode
        ),
        None => println!("best        none yet"),
    }
}

fn metric_cell(value: Option<f64>) -> String {
    value.map_or_else(String::new, |v| {
        metrics_serde::encode(v).to_string().trim_matches('"').to_owned()
    })
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn export_csv(spec: &Spec, trials: &[StoredTrial]) -> String {
    let mut columns: Vec<String> = trials
        .iter()
        .flat_map(|t| t.config.flatten().into_iter().map(|(name, _)| name))
        .collect();
    columns.sort();
    columns.dedup();
    let metric = &spec.metric;
    let mut header = vec!["trial_id".to_owned(), "status".to_owned()];
    header.extend(columns.iter().map(|c| format!("config.{c}")));
    header.extend([
        format!("last_{metric}"),
        format!("best_{metric}"),
        "best_step".into(),
        "steps".into(),
        "failures".into(),
        "error".into(),
    ]);
    let mut out = header.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(",") + "\n";
    for trial in trials {
        let mut row = vec![trial.id.to_string(), trial.status.label().to_owned()];
        for column in &columns {
            row.push(
                trial
                    .config
                    .get(column)
                    .map_or_else(String::new, rung::tune_core::value::value_to_arg),
            );
        }
        let last = trial.last.as_ref().and_then(|r| r.metrics.get(metric).copied());
        row.push(metric_cell(last));
        row.push(metric_cell(trial.best.map(|(v, _)| v)));
        row.push(trial.best.map_or_else(String::new, |(_, s)| s.to_string()));
        row.push(trial.last.as_ref().map_or_else(|| "0".into(), |r| r.step.to_string()));
        row.push(trial.failures.to_string());
        row.push(trial.error.clone().unwrap_or_default());
        out += &(row.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",") + "\n");
    }
    out
}

fn export_json(spec: &Spec, trials: &[StoredTrial]) -> String {
    let metric = &spec.metric;
    let rows: Vec<Value> = trials
        .iter()
        .map(|trial| {
            let last = trial.last.as_ref().and_then(|r| r.metrics.get(metric).copied());
            json!({
                "trial_id": trial.id.to_string(),
                "status": trial.status.label(),
                "config": trial.config.0,
                "metric": metric,
                "last": last.map(metrics_serde::encode),
                "best": trial.best.map(|(v, _)| metrics_serde::encode(v)),
                "best_step": trial.best.map(|(_, s)| s),
                "steps": trial.last.as_ref().map_or(0, |r| r.step),
                "failures": trial.failures,
                "error": trial.error,
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).expect("json") + "\n"
}
