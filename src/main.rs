//! The `rung` command line: run, resume and inspect sweeps.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rung::remote::{Remote, read_token};
use rung::tune_core::trial::metrics_serde;
use rung::tune_runtime::store::{ExperimentInfo, Store, StoredTrial};
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
    /// Run the controller as a gRPC server (package rung.v1) that worker agents and trial
    /// processes connect to.
    ///
    /// Experiments come from the SPEC arguments or from `rung submit SPEC --server URL`. At start
    /// the server resumes every unfinished experiment of its store. Trials with a `[trial]
    /// command` are placed on agents (`rung agent`) by bin packing their `resources`; trials of
    /// a spec without a command are handed to workers that call `Trials.Ask`. Ctrl-C or SIGTERM
    /// stops running trials (they resume from their checkpoints when the server starts again).
    Serve {
        /// Specs to run (an experiment already in the store under the same name is resumed,
        /// not started again).
        specs: Vec<PathBuf>,
        /// The store.
        #[arg(long, default_value = "rung.db")]
        db: PathBuf,
        /// Where to listen (port 0: any free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:7470")]
        listen: std::net::SocketAddr,
        /// A file whose first line is the token every rung call must carry (`authorization:
        /// Bearer`); the gRPC health service (for probes) needs none.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// PEM certificate chain: serve TLS (needs --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Seconds without a message after which an agent is lost and its trials move elsewhere.
        #[arg(long, default_value_t = 10.0)]
        lease_s: f64,
        /// Seconds between an agent's heartbeats.
        #[arg(long, default_value_t = 2.0)]
        heartbeat_s: f64,
        /// Seconds a worker that took a trial with Trials.Ask may go without a report before
        /// the trial is handed out again.
        #[arg(long, default_value_t = 600.0)]
        worker_lease_s: f64,
    },
    /// Send a spec to a running server (`rung serve`); prints the experiment's name.
    Submit {
        /// The spec file.
        spec: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
        /// Follow the experiment's progress until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// End an experiment running on a server: its running trials end as sweep_ended.
    Stop {
        /// The experiment [default: the newest].
        #[arg(long)]
        experiment: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run a worker agent: register this machine with a controller and run the trials it
    /// places here, pinned to their GPUs through CUDA_VISIBLE_DEVICES.
    ///
    /// GPUs are found through NVML (the NVIDIA driver's libnvidia-ml.so.1); a machine without
    /// a driver offers no GPUs. If the controller goes away, trials keep running, their reports
    /// are buffered, and the agent reconnects with backoff.
    Agent {
        /// The controller (`http://host:7470`, `https://...` with TLS).
        #[arg(long)]
        controller: String,
        /// A file whose first line is the controller's token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// A PEM CA certificate to trust for an https controller.
        #[arg(long)]
        ca_cert: Option<PathBuf>,
        /// GPUs to offer: auto (all NVML finds), none, a list of indices (0,2), or fake:N
        /// (N GPUs that do not exist, for testing placement without hardware).
        #[arg(long, default_value = "auto")]
        gpus: String,
        /// CPUs to offer [default: this machine's].
        #[arg(long)]
        cpus: Option<f64>,
        /// Memory to offer, e.g. 64GiB [default: this machine's].
        #[arg(long)]
        memory: Option<String>,
        /// A custom resource, name=amount (repeatable), e.g. --resource nvme=1.
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// The name shown in `rung status` [default: the host name].
        #[arg(long)]
        name: Option<String>,
        /// Where trial folders (logs, checkpoints) go: <work-dir>/<experiment>/<trial>/.
        /// Trials resumed on another agent read checkpoints from here, so agents that share
        /// trials share this folder (NFS, a volume).
        #[arg(long, default_value = "rung-agent")]
        work_dir: PathBuf,
        /// Answer health checks over HTTP on ADDR (e.g. 0.0.0.0:7471): `GET /ready` is 200 while
        /// the agent has a session with the controller and 503 otherwise, `GET /live` is 200.
        #[arg(long, value_name = "ADDR")]
        health_listen: Option<std::net::SocketAddr>,
        /// Print what the machine offers and exit.
        #[arg(long)]
        dry_run: bool,
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

/// Which experiment of which store (or server) a read command looks at.
#[derive(Args)]
struct Target {
    /// The store.
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    db: Option<PathBuf>,
    /// The experiment [default: the newest].
    #[arg(long)]
    experiment: Option<String>,
    /// Read from a running server instead of a store.
    #[arg(long)]
    server: Option<String>,
    /// With --server: a file whose first line is the server's token.
    #[arg(long, requires = "server")]
    token_file: Option<PathBuf>,
    /// With an https --server: a PEM CA certificate to trust.
    #[arg(long, requires = "server")]
    ca_cert: Option<PathBuf>,
}

/// How to reach a server.
#[derive(Args)]
struct ServerArgs {
    /// The server (`http://host:7470`, `https://...` with TLS).
    #[arg(long)]
    server: String,
    /// A file whose first line is the server's token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// A PEM CA certificate to trust for an https server.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}

impl ServerArgs {
    fn remote(&self) -> Result<Remote, Error> {
        Ok(Remote {
            url: self.server.clone(),
            token: self.token_file.as_deref().map(read_token).transpose()?,
            ca_cert: self.ca_cert.clone(),
        })
    }
}

impl Target {
    fn remote(&self) -> Result<Option<Remote>, Error> {
        let Some(url) = &self.server else { return Ok(None) };
        Ok(Some(Remote {
            url: url.clone(),
            token: self.token_file.as_deref().map(read_token).transpose()?,
            ca_cert: self.ca_cert.clone(),
        }))
    }
}

/// A read command's view of an experiment, from a store or a server.
struct View {
    /// Where it was read from, for the resume hint.
    source: String,
    info: ExperimentInfo,
    spec: Spec,
    trials: Vec<StoredTrial>,
    /// Metrics at each trial's best step (servers send them; stores are asked when needed).
    best_metrics: Option<Vec<(rung::TrialId, rung::tune_core::trial::Metrics)>>,
    store: Option<Store>,
    /// A server's status (waiting trials, agents).
    remote: Option<rung::tune_proto::v1::ExperimentStatus>,
}

fn view(target: &Target) -> Result<View, Error> {
    if let Some(remote) = target.remote()? {
        let fetched = block_on(rung::remote::fetch(&remote, target.experiment.as_deref()))?;
        return Ok(View {
            source: remote.url,
            info: fetched.info,
            spec: fetched.spec,
            trials: fetched.trials,
            best_metrics: Some(fetched.best_metrics),
            store: None,
            remote: Some(fetched.status),
        });
    }
    let db = target.db.clone().expect("clap requires --db without --server");
    let (store, info, spec) = open(&db, target.experiment.as_deref())?;
    let trials = store.trials(info.id)?;
    Ok(View {
        source: db.display().to_string(),
        info,
        spec,
        trials,
        best_metrics: None,
        store: Some(store),
        remote: None,
    })
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
        Command::Serve {
            specs,
            db,
            listen,
            token_file,
            tls_cert,
            tls_key,
            lease_s,
            heartbeat_s,
            worker_lease_s,
        } => {
            let positive = |flag: &str, value: f64| {
                if value.is_finite() && value > 0.0 {
                    Ok(std::time::Duration::from_secs_f64(value))
                } else {
                    Err(Error::Usage(format!(
                        "{flag} {value}: must be a number of seconds above 0"
                    )))
                }
            };
            let lease = positive("--lease-s", lease_s)?;
            let heartbeat = positive("--heartbeat-s", heartbeat_s)?;
            let worker_lease = positive("--worker-lease-s", worker_lease_s)?;
            if heartbeat * 2 > lease {
                return Err(Error::Usage(format!(
                    "--heartbeat-s {heartbeat_s} must be at most half of --lease-s {lease_s}, or one late heartbeat loses an agent"
                )));
            }
            let specs = specs
                .iter()
                .map(|path| {
                    let text = std::fs::read_to_string(path).map_err(|e| Error::Spec {
                        path: path.clone(),
                        message: format!("cannot read: {e}"),
                    })?;
                    let folder = spec_folder(path)?;
                    Spec::from_submitted(&text, is_json(path), &folder).map_err(|e| match e {
                        Error::Spec { message, .. } => Error::Spec {
                            path: path.clone(),
                            message,
                        },
                        other => other,
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let mut config = rung::server::ServeConfig::new(db);
            config.token = token_file.as_deref().map(read_token).transpose()?;
            config.tls = tls_cert.zip(tls_key);
            config.lease = lease;
            config.heartbeat = heartbeat;
            config.worker_lease = worker_lease;
            config.reconnect_grace = lease;
            block_on(rung::server::serve_until_signalled(listen, config, specs)).map_err(|e| match e {
                rung::server::Error::Sweep(e) => e,
                other => Error::Usage(other.to_string()),
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit { spec, server, watch } => {
            let text = std::fs::read_to_string(&spec).map_err(|e| Error::Spec {
                path: spec.clone(),
                message: format!("cannot read: {e}"),
            })?;
            let folder = spec_folder(&spec)?;
            // Checked here first, so a mistake is shown with the file's name.
            Spec::from_submitted(&text, is_json(&spec), &folder).map_err(|e| match e {
                Error::Spec { message, .. } => Error::Spec {
                    path: spec.clone(),
                    message,
                },
                other => other,
            })?;
            let remote = server.remote()?;
            block_on(async {
                let mut client = remote.experiments().await?;
                let status = client
                    .create(remote.request(rung::tune_proto::v1::CreateRequest {
                        spec: text,
                        json: is_json(&spec),
                        spec_dir: folder.display().to_string(),
                    }))
                    .await
                    .map_err(rung::remote::status_error)?
                    .into_inner();
                println!("{}", status.name);
                if watch {
                    watch_experiment(&remote, &status.name).await?;
                }
                Ok::<_, Error>(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Stop { experiment, server } => {
            let remote = server.remote()?;
            let status = block_on(async {
                let mut client = remote.experiments().await?;
                client
                    .stop(remote.request(rung::tune_proto::v1::GetRequest {
                        name: experiment.unwrap_or_default(),
                    }))
                    .await
                    .map_err(rung::remote::status_error)
            })?
            .into_inner();
            println!("stopping \"{}\": its running trials end as sweep_ended", status.name);
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent {
            controller,
            token_file,
            ca_cert,
            gpus,
            cpus,
            memory,
            resources,
            name,
            work_dir,
            health_listen,
            dry_run,
        } => {
            use rung::tune_worker_agent::{agent, gpu, inventory};
            let selection: gpu::GpuSelection = gpus.parse().map_err(|e: gpu::GpuError| Error::Usage(e.to_string()))?;
            let discovery = gpu::discover(&selection).map_err(|e| Error::Usage(e.to_string()))?;
            let memory = memory
                .map(|m| {
                    rung::tune_core::resources::parse_size(&m).map_err(|e| Error::Usage(format!("--memory {m}: {e}")))
                })
                .transpose()?;
            let mut custom = std::collections::BTreeMap::new();
            for text in &resources {
                let (name, amount) = inventory::parse_custom(text).map_err(Error::Usage)?;
                if custom.insert(name.clone(), amount).is_some() {
                    return Err(Error::Usage(format!("--resource {name} is given twice")));
                }
            }
            let offered = inventory::detect(cpus, memory, discovery.gpus, custom).map_err(Error::Usage)?;
            if let Some(note) = &discovery.note {
                eprintln!("[rung] {note}");
            }
            let name = name.unwrap_or_else(host_name);
            eprintln!(
                "[rung] agent {name} offers:\n{}",
                inventory::describe(&offered, discovery.driver.as_deref())
            );
            if dry_run {
                return Ok(ExitCode::SUCCESS);
            }
            let work_dir = std::path::absolute(&work_dir)
                .map_err(|e| Error::Usage(format!("--work-dir {}: {e}", work_dir.display())))?;
            let config = agent::AgentConfig {
                controller,
                token: token_file.as_deref().map(read_token).transpose()?,
                ca_cert,
                name,
                work_dir,
                inventory: offered,
            };
            block_on(async {
                let health = match health_listen {
                    Some(address) => {
                        let listener = tokio::net::TcpListener::bind(address)
                            .await
                            .map_err(|e| Error::Usage(format!("--health-listen {address}: {e}")))?;
                        let bound = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
                        eprintln!("[rung] agent health on http://{bound}/ready");
                        Some(listener)
                    }
                    None => None,
                };
                agent::run_with_health(config, health, async {
                    rung::server::shutdown_signal().await;
                    eprintln!("[rung] agent stopping: stopping its trials");
                })
                .await
                .map_err(|e| Error::Usage(e.to_string()))
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { target, json } => {
            let view = view(&target)?;
            print_status(&view, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Best { target, json } => {
            let view = view(&target)?;
            let (info, spec, trials) = (&view.info, &view.spec, &view.trials);
            let Some(best) = best_trial(trials, spec.mode) else {
                eprintln!("experiment \"{}\" has no result for \"{}\" yet", info.name, spec.metric);
                return Ok(ExitCode::FAILURE);
            };
            let (value, step) = best.best.expect("the best trial has a value");
            let metrics = match (&view.best_metrics, &view.store) {
                (Some(all), _) => all
                    .iter()
                    .find(|(id, _)| *id == best.id)
                    .map(|(_, m)| m.clone())
                    .unwrap_or_default(),
                (None, Some(store)) => store
                    .reports(info.id, Some(best.id))?
                    .into_iter()
                    .find(|(_, r)| r.step == step)
                    .map(|(_, r)| r.metrics)
                    .unwrap_or_default(),
                (None, None) => Default::default(),
            };
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
            let view = view(&target)?;
            let text = match format {
                Format::Csv => export_csv(&view.spec, &view.trials),
                Format::Json => export_json(&view.spec, &view.trials),
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

fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
}

/// The folder of a spec file, absolute.
fn spec_folder(path: &Path) -> Result<PathBuf, Error> {
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    folder.canonicalize().map_err(|e| Error::Spec {
        path: path.to_owned(),
        message: format!("cannot resolve its folder: {e}"),
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "agent".into())
}

/// Prints an experiment's progress as the server reports it, until it ends.
async fn watch_experiment(remote: &Remote, name: &str) -> Result<(), Error> {
    let mut client = remote.experiments().await?;
    let mut stream = client
        .watch(remote.request(rung::tune_proto::v1::GetRequest { name: name.to_owned() }))
        .await
        .map_err(rung::remote::status_error)?
        .into_inner();
    let mut last_print: Option<std::time::Instant> = None;
    while let Some(status) = stream.message().await.map_err(rung::remote::status_error)? {
        // A line every two seconds at most, and the last one.
        let running = status.state == "running";
        if running && last_print.is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(2)) {
            continue;
        }
        last_print = Some(std::time::Instant::now());
        let best = status.best.as_ref().map_or_else(
            || "none yet".to_owned(),
            |b| format!("t{} {}={}", b.trial, status.metric, b.value),
        );
        let done = status.completed + status.stopped + status.sweep_ended + status.errored;
        let waiting = status.waiting.len() as u64;
        eprintln!(
            "[rung] {}: {} · {done} done ({} completed, {} stopped, {} errored), {} running, {waiting} waiting for a place · best {best}",
            status.name,
            status.state,
            status.completed,
            status.stopped,
            status.errored,
            status.running.saturating_sub(waiting),
        );
        if status.state != "running" {
            break;
        }
    }
    Ok(())
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

fn open(db: &Path, experiment: Option<&str>) -> Result<(Store, ExperimentInfo, Spec), Error> {
    let store = Store::open(db)?;
    let info = store.experiment(experiment)?;
    let spec: Spec = serde_json::from_str(&info.spec).map_err(rung::tune_runtime::Error::from)?;
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

fn print_status(view: &View, json: bool) {
    let (info, spec, trials) = (&view.info, &view.spec, view.trials.as_slice());
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
    let state = match &view.remote {
        Some(status) => status.state.clone(),
        None if info.is_finished() => "finished".into(),
        None => "unfinished".into(),
    };
    let waiting: Vec<(String, String)> = view
        .remote
        .iter()
        .flat_map(|s| &s.waiting)
        .map(|w| (rung::TrialId(w.trial).to_string(), w.reason.clone()))
        .collect();
    if json {
        let mut out = json!({
            "experiment": info.name, "state": state, "end_cause": info.end_cause, "seed": info.seed,
            "elapsed_s": info.elapsed_ms as f64 / 1000.0, "metric": spec.metric, "mode": spec.mode,
            "trials": trials.len(), "counts": counts,
            "best": best.map(|(trial, (value, step))| json!({"trial": trial.to_string(), "value": metrics_serde::encode(value), "step": step})),
        });
        if let Some(status) = &view.remote {
            out["waiting"] = waiting.iter().map(|(t, r)| json!({"trial": t, "reason": r})).collect();
            out["agents"] = status
                .agents
                .iter()
                .map(|a| json!({"id": a.id, "name": a.name, "inventory": a.inventory, "trials": a.trials, "connected": a.connected}))
                .collect();
        }
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return;
    }
    println!("experiment  {} (seed {})", info.name, info.seed);
    match (&info.end_cause, &view.remote) {
        (Some(cause), _) if info.is_finished() => println!("state       finished: {cause}"),
        (_, Some(_)) => println!("state       {state} on {}", view.source),
        _ => println!("state       unfinished — resume with: rung resume --db {}", view.source),
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
    if let Some(status) = &view.remote {
        for agent in &status.agents {
            println!(
                "agent       {} ({}): {} trial(s); {}{}",
                agent.name,
                agent.id,
                agent.trials,
                agent.inventory,
                if agent.connected { "" } else { " — disconnected" }
            );
        }
        if status.agents.is_empty() && status.state == "running" {
            println!(
                "agents      none registered (start one with: rung agent --controller {})",
                view.source
            );
        }
    }
    for (trial, reason) in &waiting {
        println!("waiting     {trial}: {reason}");
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
