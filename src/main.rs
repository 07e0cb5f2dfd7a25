//! The `rung` command line: run, resume and inspect sweeps.
//!
//! This file only parses the arguments and calls one function per subcommand; each lives in a
//! module of [`cli`] with the arguments it takes.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Run(cli::sweep::RunArgs),
    /// Run a sweep in virtual time against a built-in workload (`[trial] simulate`).
    ///
    /// The real controller, searcher, scheduler and store run; only the trials are simulated,
    /// so nothing sleeps and no process starts. The same spec and seed give byte-identical
    /// `rung export` output. Prints the virtual time the sweep would have taken and the best
    /// result.
    Simulate(cli::sweep::SimulateArgs),
    /// Resume an unfinished sweep (killed, crashed or interrupted) exactly where it stopped.
    ///
    /// The event log is replayed through fresh searcher and scheduler objects; completed trials
    /// are never rerun, and trials that were running restart from their last checkpoint.
    Resume(cli::sweep::ResumeArgs),
    /// Show a sweep's state: trial counts by status, elapsed time, best so far.
    Status(cli::inspect::ReadArgs),
    /// Show the best trial: its config and its metrics at its best step.
    Best(cli::inspect::ReadArgs),
    /// Run the controller as a gRPC server (package rung.v1) that worker agents and trial
    /// processes connect to.
    ///
    /// Experiments come from the SPEC arguments or from `rung submit SPEC --server URL`. At start
    /// the server resumes every unfinished experiment of its store. Trials with a `[trial]
    /// command` are placed on agents (`rung agent`) by bin packing their `resources`; trials of
    /// a spec without a command are handed to workers that call `Trials.Ask`. Ctrl-C or SIGTERM
    /// stops running trials (they resume from their checkpoints when the server starts again).
    Serve(cli::serve::ServeArgs),
    /// Send a spec to a running server (`rung serve`); prints the experiment's name.
    Submit(cli::remote::SubmitArgs),
    /// End an experiment running on a server: its running trials end as sweep_ended.
    Stop(cli::remote::StopArgs),
    /// Run a worker agent: register this machine with a controller and run the trials it
    /// places here, pinned to their GPUs through CUDA_VISIBLE_DEVICES.
    ///
    /// GPUs are found through NVML (the NVIDIA driver's libnvidia-ml.so.1); a machine without
    /// a driver offers no GPUs. If the controller goes away, trials keep running, their reports
    /// are buffered, and the agent reconnects with backoff.
    Agent(cli::agent::AgentArgs),
    /// Export one row per trial: id, status, config, last and best metric, steps.
    Export(cli::inspect::ExportArgs),
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
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Runs one subcommand.
fn dispatch(command: Command) -> Result<ExitCode, cli::Failure> {
    Ok(match command {
        Command::Run(args) => cli::sweep::run(args)?,
        Command::Simulate(args) => cli::sweep::simulate(args)?,
        Command::Resume(args) => cli::sweep::resume(args)?,
        Command::Status(args) => cli::inspect::status(args)?,
        Command::Best(args) => cli::inspect::best(args)?,
        Command::Export(args) => cli::inspect::export(args)?,
        Command::Serve(args) => cli::serve::serve(args)?,
        Command::Submit(args) => cli::remote::submit(args)?,
        Command::Stop(args) => cli::remote::stop(args)?,
        Command::Agent(args) => cli::agent::agent(args)?,
    })
}
