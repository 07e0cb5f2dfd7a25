//! Server mode: `rung serve`.
//!
//! The controller of each experiment runs exactly as in a local sweep — one driver thread
//! owning the sans-IO controller and the store, group commits, replay on resume — and this
//! module is one more adapter around it: a [`Runner`] whose trials are placed on worker agents
//! (bin packing their resource bundles) or handed to workers that `Ask`, and a gRPC server
//! (package `rung.v1`) through which agents, trial processes and the CLI reach it.
//!
//! ```text
//! agent ──Session──▶ service ──TrialLink──▶ driver (controller + store) ──Launch──▶ ServerRunner
//!   ▲                                                                                  │
//!   └──────────────────────────── Launch / Stop / Ack ◀── hub (placement, leases) ◀────┘
//! ```

pub mod error;
pub mod hub;
pub mod packing;
mod service;

pub use error::{Error, Result};

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot, watch};
use tune_core::controller::{Launch, Outcome, Progress};
use tune_runtime::driver::{Runner, TrialLink};
use tune_runtime::store::Store;

use hub::{Experiment, Hub, RunState};
use tune_sweep::spec::Spec;
use tune_sweep::tuner::{SweepResult, SweepStatus, Tuner};

/// How `rung serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The store.
    pub db: PathBuf,
    /// Every call must carry `authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// PEM certificate chain and key: serve TLS (rustls).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How often agents send a heartbeat.
    pub heartbeat: Duration,
    /// An agent whose last message is older than this is lost.
    pub lease: Duration,
    /// A worker that took a trial with `Trials.Ask` and reports nothing for this long is gone:
    /// the trial is handed out again.
    pub worker_lease: Duration,
    /// After a restart that resumed experiments, placement waits this long for agents to
    /// reconnect (so what they still run is settled before anything is relaunched).
    pub reconnect_grace: Duration,
    /// The largest message accepted.
    pub max_message_bytes: usize,
}

impl ServeConfig {
    /// Defaults: heartbeat 2 s, agent lease 10 s, worker lease 10 min, no token, no TLS, 4 MiB
    /// messages.
    pub fn new(db: PathBuf) -> Self {
        ServeConfig {
            db,
            token: None,
            tls: None,
            heartbeat: Duration::from_secs(2),
            lease: Duration::from_secs(10),
            worker_lease: Duration::from_secs(600),
            reconnect_grace: Duration::from_secs(10),
            max_message_bytes: 4 << 20,
        }
    }
}

/// What the services share.
pub struct Shared {
    config: ServeConfig,
    hub: Mutex<Hub>,
    /// Woken when something may now be placed.
    placement: Notify,
    /// Experiment run tasks, awaited at shutdown.
    runs: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Shared {
    /// The hub, locked; a panic elsewhere never makes the server unusable.
    pub fn hub(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn place_now(&self) {
        self.placement.notify_one();
    }
}

/// Runs the server on `listener` until `shutdown` resolves: resumes the store's unfinished
/// experiments, starts `specs` (unless the store already has an experiment of that name), and
/// serves `rung.v1`. At shutdown running trials are stopped (resumable), their reports
/// committed, and the agents' sessions closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: ServeConfig,
    specs: Vec<Spec>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let db = config.db.clone();
    let existing = tokio::task::spawn_blocking(move || -> Result<_> {
        let store = Store::open_or_create(&db)?;
        Ok(store.experiments()?)
    })
    .await
    .map_err(|e| Error::Internal(format!("opening the store: {e}")))??;
    let resuming: Vec<String> = existing
        .iter()
        .filter(|e| !e.is_finished())
        .map(|e| e.name.clone())
        .collect();
    let hold_until = if resuming.is_empty() {
        Instant::now()
    } else {
        Instant::now() + config.reconnect_grace
    };
    let shared = Arc::new(Shared {
        hub: Mutex::new(Hub::new(config.lease, config.worker_lease, hold_until)),
        config,
        placement: Notify::new(),
        runs: Mutex::new(Vec::new()),
    });

    // Finished experiments are listed (read-only); unfinished ones resume.
    for info in existing.iter().filter(|e| e.is_finished()) {
        let spec: Spec = serde_json::from_str(&info.spec).map_err(tune_runtime::Error::from)?;
        let progress = stored_progress(&shared.config.db, info.id, &spec).await?;
        let entry = experiment_entry(&shared.config.db, info, Arc::new(spec), progress);
        let mut hub = shared.hub();
        let mut entry = entry;
        entry.state = RunState::Finished(info.end_cause.clone().unwrap_or_default());
        hub.experiments.insert(info.name.clone(), entry);
    }
    for name in &resuming {
        if let Err(error) = start_experiment(&shared, Start::Resume(name.clone())).await {
            // One experiment that cannot go on (a stored setting refused, its object storage
            // down, its lock held elsewhere) must not keep the server and the others from running.
            eprintln!(
                "[rung] experiment \"{name}\" could not be resumed: {error}; the server runs without it (it stays \
                 unfinished in the store: fix the cause and restart the server to resume it)"
            );
            let Some(info) = existing.iter().find(|e| &e.name == name) else {
                continue;
            };
            let Ok(spec) = serde_json::from_str::<Spec>(&info.spec) else {
                continue;
            };
            let progress = stored_progress(&shared.config.db, info.id, &spec)
                .await
                .unwrap_or_default();
            let mut entry = experiment_entry(&shared.config.db, info, Arc::new(spec), progress);
            entry.state = RunState::Failed(format!("could not be resumed: {error}"));
            shared.hub().experiments.insert(info.name.clone(), entry);
            continue;
        }
        eprintln!("[rung] experiment \"{name}\" resumed");
    }
    for spec in specs {
        if existing.iter().any(|e| e.name == spec.name) {
            tracing::info!(experiment = %spec.name, "already in the store; not started again");
            continue;
        }
        let name = start_experiment(&shared, Start::New(Box::new(spec))).await?;
        eprintln!("[rung] experiment \"{name}\" started");
    }

    // Placement: whenever something changed, and every heartbeat (leases, the restart hold).
    let placer = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let tick = shared.config.heartbeat.min(Duration::from_millis(500));
            loop {
                let _ = tokio::time::timeout(tick, shared.placement.notified()).await;
                let now = Instant::now();
                let mut hub = shared.hub();
                let lost = hub.expire_leases(now);
                let gone = hub.expire_workers(now);
                hub.place(now);
                drop(hub);
                if !lost.is_empty() || gone > 0 {
                    shared.placement.notify_one();
                }
            }
        })
    };

    let (stop_serving, serving_stopped) = oneshot::channel::<()>();
    let server = service::router(Arc::clone(&shared))?;
    // Small messages (acknowledgements, launches) go out at once, not after a delayed ACK.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut serving = tokio::spawn(server.serve_with_incoming_shutdown(incoming, async {
        let _ = serving_stopped.await;
    }));

    tokio::select! {
        () = shutdown => {}
        result = &mut serving => {
            placer.abort();
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(Error::Internal(format!("the gRPC server failed: {error}"))),
                Err(join) => Err(Error::Internal(format!("the gRPC server panicked: {join}"))),
            };
        }
    }

    // Shutdown: stop every experiment for now (trials stop, their reports are committed), wait
    // for the drivers, then close the agents' sessions and the listener.
    tracing::info!("shutting down: stopping running trials (they resume when the server starts again)");
    let handles: Vec<_> = {
        let mut hub = shared.hub();
        hub.closing = true;
        hub.experiments.values().filter_map(|e| e.handle.clone()).collect()
    };
    for handle in handles {
        handle.interrupt();
    }
    let runs = std::mem::take(&mut *shared.runs.lock().unwrap_or_else(|p| p.into_inner()));
    for run in runs {
        let _ = run.await;
    }
    placer.abort();
    {
        let mut hub = shared.hub();
        for agent in hub.agents.values_mut() {
            agent.session = None;
        }
        for experiment in hub.experiments.values() {
            experiment.touch();
        }
    }
    let _ = stop_serving.send(());
    match tokio::time::timeout(Duration::from_secs(5), serving).await {
        Ok(Ok(Ok(()))) | Err(_) => Ok(()),
        Ok(Ok(Err(error))) => Err(Error::Internal(format!("the gRPC server failed: {error}"))),
        Ok(Err(join)) => Err(Error::Internal(format!("the gRPC server panicked: {join}"))),
    }
}

/// Binds `listen` and serves until Ctrl-C or SIGTERM.
pub async fn serve_until_signalled(listen: SocketAddr, config: ServeConfig, specs: Vec<Spec>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Usage(format!("cannot listen on {listen}: {e}")))?;
    let address = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    eprintln!(
        "[rung] serving {} on {scheme}://{address}{}",
        config.db.display(),
        if config.token.is_some() {
            " (token required)"
        } else {
            ""
        }
    );
    serve(listener, config, specs, async {
        shutdown_signal().await;
        eprintln!("[rung] shutting down: stopping trials, committing their reports");
    })
    .await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

enum Start {
    New(Box<Spec>),
    Resume(String),
}

fn experiment_entry(
    db: &std::path::Path,
    info: &tune_runtime::store::ExperimentInfo,
    spec: Arc<Spec>,
    progress: Progress,
) -> Experiment {
    Experiment {
        trials_root: tune_sweep::tuner::trials_root(db, &info.name),
        name: info.name.clone(),
        external: spec.trial.command.is_empty(),
        request: spec.trial.resource_request(),
        spec,
        spec_json: info.spec.clone(),
        id: info.id,
        seed: info.seed,
        handle: None,
        progress,
        state: RunState::Running,
        trials: Default::default(),
        ask_queue: Default::default(),
        asked: Arc::new(Notify::new()),
        changed: watch::channel(0).0,
        elapsed_ms: info.elapsed_ms,
        running_since: None,
    }
}

async fn stored_progress(db: &std::path::Path, experiment: i64, spec: &Spec) -> Result<Progress> {
    let db = db.to_owned();
    let mode = spec.mode;
    tokio::task::spawn_blocking(move || -> Result<Progress> {
        let store = Store::open(&db)?;
        let trials = store.trials(experiment)?;
        let mut progress = Progress {
            created: trials.len() as u64,
            ..Progress::default()
        };
        for trial in &trials {
            use tune_core::trial::{EndReason, TrialStatus};
            match trial.status {
                TrialStatus::Pending => progress.pending += 1,
                TrialStatus::Running => progress.running += 1,
                TrialStatus::Paused => progress.paused += 1,
                TrialStatus::Terminated(EndReason::Completed) => progress.completed += 1,
                TrialStatus::Terminated(EndReason::StoppedEarly) => progress.stopped += 1,
                TrialStatus::Terminated(EndReason::SweepEnded) => progress.sweep_ended += 1,
                TrialStatus::Errored => progress.errored += 1,
            }
        }
        progress.best = tune_sweep::tuner::best_trial(&trials, mode).and_then(|t| t.best.map(|(v, s)| (t.id, v, s)));
        Ok(progress)
    })
    .await
    .map_err(|e| Error::Internal(format!("reading the store: {e}")))?
}

/// Starts (or resumes) an experiment's driver with a [`ServerRunner`]; returns its name once
/// the store has it.
async fn start_experiment(shared: &Arc<Shared>, start: Start) -> Result<String> {
    let db = shared.config.db.clone();
    let tuner = match start {
        Start::New(spec) => Tuner::from_spec(*spec, db),
        Start::Resume(name) => Tuner::resume_from(db, Some(name)),
    };
    let name_cell: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let observer = {
        let shared = Arc::clone(shared);
        let name_cell = Arc::clone(&name_cell);
        Box::new(move |progress: &Progress| {
            let Some(name) = name_cell.lock().ok().and_then(|n| n.clone()) else {
                return;
            };
            let mut hub = shared.hub();
            if let Some(entry) = hub.experiments.get_mut(&name)
                && entry.progress != *progress
            {
                entry.progress = progress.clone();
                entry.touch();
            }
        })
    };
    let handle = {
        let tuner = tuner.with_progress(false).with_ctrl_c(false).with_observer(observer);
        let handle = tuner.handle();
        (tuner, handle)
    };
    let (tuner, handle) = handle;
    let (named, name) = oneshot::channel::<String>();
    let runner_shared = Arc::clone(shared);
    let run = tokio::spawn(tuner.run_with_runner(move |spec, info, trials_root| {
        let mut entry = experiment_entry(
            &runner_shared.config.db,
            info,
            Arc::new(spec.clone()),
            Progress::default(),
        );
        entry.trials_root = trials_root;
        entry.handle = Some(handle);
        entry.running_since = Some(Instant::now());
        *name_cell.lock().unwrap_or_else(|p| p.into_inner()) = Some(info.name.clone());
        runner_shared.hub().experiments.insert(info.name.clone(), entry);
        let _ = named.send(info.name.clone());
        Ok(Arc::new(ServerRunner {
            shared: runner_shared,
            experiment: info.name.clone(),
        }) as Arc<dyn Runner>)
    }));
    let (result_sender, result) = oneshot::channel::<Result<String>>();
    let watcher_shared = Arc::clone(shared);
    let watcher = tokio::spawn(async move {
        let mut result_sender = Some(result_sender);
        let mut run = run;
        let refused =
            |outcome: std::result::Result<tune_sweep::Result<SweepResult>, tokio::task::JoinError>| match outcome {
                Ok(Ok(_)) => Error::Internal("the experiment ended before it started".into()),
                Ok(Err(error)) => error.into(),
                Err(join) => Error::Internal(format!("the experiment's task failed: {join}")),
            };
        let name = tokio::select! {
            name = name => name.ok(),
            outcome = &mut run => {
                if let Some(sender) = result_sender.take() {
                    let _ = sender.send(Err(refused(outcome)));
                }
                return;
            }
        };
        let Some(name) = name else {
            // The runner was never made (e.g. the checkpoint storage is unreachable): the run
            // ends with the reason.
            let outcome = run.await;
            if let Some(sender) = result_sender.take() {
                let _ = sender.send(Err(refused(outcome)));
            }
            return;
        };
        if let Some(sender) = result_sender.take() {
            let _ = sender.send(Ok(name.clone()));
        }
        let outcome = run.await;
        let mut elapsed = None;
        let state = match outcome {
            Ok(Ok(result)) => {
                elapsed = Some(result.elapsed);
                match result.status {
                    SweepStatus::Finished { cause } => RunState::Finished(cause),
                    SweepStatus::Interrupted => RunState::Interrupted,
                }
            }
            Ok(Err(error)) => RunState::Failed(error.to_string()),
            Err(join) => RunState::Failed(format!("the experiment's task failed: {join}")),
        };
        if let RunState::Failed(why) = &state {
            tracing::error!(experiment = %name, %why, "experiment failed");
        }
        let mut hub = watcher_shared.hub();
        if let Some(entry) = hub.experiments.get_mut(&name) {
            let progress = &entry.progress;
            let best = progress.best.map_or_else(
                || "none".to_owned(),
                |(trial, value, step)| format!("{trial} {}={value} at step {step}", entry.spec.metric),
            );
            match &state {
                RunState::Finished(cause) => eprintln!(
                    "[rung] experiment \"{name}\" finished ({cause}): {} completed, {} stopped, {} errored; best {best}",
                    progress.completed, progress.stopped, progress.errored
                ),
                RunState::Failed(why) => eprintln!("[rung] experiment \"{name}\" failed: {why}"),
                RunState::Interrupted => {
                    eprintln!("[rung] experiment \"{name}\" stopped for now; it resumes when the server starts again")
                }
                RunState::Running => {}
            }
            if let Some(elapsed) = elapsed {
                entry.elapsed_ms = elapsed.as_millis() as u64;
            }
            entry.running_since = None;
            entry.state = state;
            entry.handle = None;
            entry.asked.notify_waiters();
            entry.touch();
        }
    });
    shared.runs.lock().unwrap_or_else(|p| p.into_inner()).push(watcher);
    result
        .await
        .map_err(|_| Error::Internal("the experiment's task ended without a word".into()))?
}

/// The runner of a served experiment: launches wait in the hub until an agent (or a worker's
/// `Ask`) takes them; the driver's stop requests become `Stop` messages.
struct ServerRunner {
    shared: Arc<Shared>,
    experiment: String,
}

impl Runner for ServerRunner {
    fn launch(&self, launch: Launch, link: TrialLink) {
        let (exit, mut exited) = oneshot::channel::<(Outcome, oneshot::Sender<()>)>();
        let trial = launch.trial;
        self.shared
            .hub()
            .add_launch(&self.experiment, launch, link.reporter(), exit);
        self.shared.place_now();
        let shared = Arc::clone(&self.shared);
        let experiment = self.experiment.clone();
        tokio::spawn(async move {
            let mut link = link;
            let ended = tokio::select! {
                ended = &mut exited => ended.ok(),
                () = link.stop_requested() => {
                    let now = shared.hub().stop_launch(&experiment, trial);
                    match now {
                        Some(outcome) => Some((outcome, oneshot::channel().0)),
                        None => exited.await.ok(),
                    }
                }
            };
            shared.place_now();
            let (outcome, committed) = ended.unwrap_or_else(|| {
                let reason = "the server dropped the trial".into();
                (Outcome::Failed { reason }, oneshot::channel().0)
            });
            // Whoever reported the exit (a worker's Finish, an agent) is answered once it is
            // committed: `committed` is dropped then.
            link.exited_committed(outcome).await;
            drop(committed);
        });
    }
}
