//! The Rust API: build a sweep, run it with a closure or a command, get its results.
//!
//! ```no_run
//! use tune_core::space::{Domain, Space};
//! use tune_core::trial::{Decision, Mode};
//! use tune_sweep::Tuner;
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let space = Space::new()
//!     .with("lr", Domain::loguniform(1e-5, 1e-1)?)?
//!     .with("layers", Domain::randint(1, 8)?)?;
//! let result = Tuner::builder()
//!     .space(space)
//!     .metric("loss", Mode::Min)
//!     .num_samples(20)
//!     .max_concurrent(4)
//!     .store("sweep.db")
//!     .build()?
//!     .run(|mut trial| async move {
//!         let lr: f64 = trial.get("lr")?;
//!         for step in 1..=10 {
//!             let loss = lr * 100.0 / step as f64;
//!             if trial.report(step, [("loss", loss)]).await != Decision::Continue {
//!                 break;
//!             }
//!         }
//!         Ok::<(), tune_runtime::Error>(())
//!     })
//!     .await?;
//! println!("best: {:?}", result.best().map(|t| &t.config));
//! # Ok(()) }
//! ```

use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tune_core::controller::{Controller, Progress};
use tune_core::space::Space;
use tune_core::trial::{Mode, TrialStatus};
use tune_core::value::Config;
use tune_runtime::driver::{Driver, DriverHandle, DriverSetup, ExperimentLock, Runner, SweepEnd};
use tune_runtime::runner::{InProcessRunner, ProcessConfig, ProcessRunner, TrialContext};
use tune_runtime::storage::{self, CheckpointStorage, StorageError};
use tune_runtime::store::{ExperimentInfo, Store, StoredTrial};
use tune_schedulers::SchedulerConfig;
use tune_search::{SearcherConfig, WarmTrial};

use crate::error::{Error, Result};
use crate::progress;
use crate::spec::{Durability, Spec};
use tune_tracking::{Tracker, TrackerSettings};

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SweepStatus {
    /// The sweep is over; the cause is one of [`EndCause::label`](tune_core::controller::EndCause::label).
    Finished {
        /// Why it ended.
        cause: String,
    },
    /// It was interrupted (Ctrl-C or SIGTERM); `rung resume` (or `.resume(true)`) carries on.
    Interrupted,
}

/// The outcome of a run: every trial as the store holds it.
#[derive(Debug, Clone)]
pub struct SweepResult {
    /// The experiment's name in the store.
    pub experiment: String,
    /// The store.
    pub store: PathBuf,
    /// How the run ended.
    pub status: SweepStatus,
    /// The metric optimised.
    pub metric: String,
    /// Its mode.
    pub mode: Mode,
    /// The seed.
    pub seed: u64,
    /// The sweep's elapsed time over all its sessions.
    pub elapsed: Duration,
    /// Every trial.
    pub trials: Vec<StoredTrial>,
}

impl SweepResult {
    /// The trial with the best value of the metric (NaN ranks worst; ties go to the older trial).
    pub fn best(&self) -> Option<&StoredTrial> {
        best_trial(&self.trials, self.mode)
    }

    /// Trials by status label (`completed`, `stopped`, `errored`, ...).
    pub fn count(&self, label: &str) -> usize {
        self.trials.iter().filter(|t| t.status.label() == label).count()
    }
}

pub use tune_core::controller::best_trial;

/// Builds a [`Tuner`]; every setting is checked in [`TunerBuilder::build`].
#[derive(Debug, Clone)]
pub struct TunerBuilder {
    spec: Spec,
    store: PathBuf,
    resume: bool,
    progress: bool,
    interrupt_on_ctrl_c: bool,
}

impl TunerBuilder {
    /// The search space.
    pub fn space(mut self, space: Space) -> Self {
        self.spec.space = space;
        self
    }
    /// The metric to optimise and whether to minimise or maximise it.
    pub fn metric(mut self, metric: &str, mode: Mode) -> Self {
        self.spec.metric = metric.into();
        self.spec.mode = mode;
        self
    }
    /// How many trials (-1: until the time budget or target ends the sweep). Default 1.
    pub fn num_samples(mut self, num_samples: i64) -> Self {
        self.spec.num_samples = num_samples;
        self
    }
    /// How many trials run at once. Default: the number of CPUs.
    pub fn max_concurrent(mut self, max_concurrent: usize) -> Self {
        self.spec.max_concurrent = Some(max_concurrent);
        self
    }
    /// The seed all randomness flows from. Default: drawn at random and stored.
    pub fn seed(mut self, seed: u64) -> Self {
        self.spec.seed = Some(seed);
        self
    }
    /// The experiment's name in the store. Default `experiment`.
    pub fn name(mut self, name: &str) -> Self {
        self.spec.name = name.into();
        self
    }
    /// The searcher. Default random search.
    pub fn searcher(mut self, searcher: SearcherConfig) -> Self {
        self.spec.searcher.config = searcher;
        self
    }
    /// Configurations to run first, in order (as `[searcher] points_to_evaluate`): Ray Tune's
    /// `points_to_evaluate`, Optuna's `enqueue_trial`. Parameters a point leaves out are drawn.
    pub fn points_to_evaluate(mut self, points: Vec<Config>) -> Self {
        self.spec.searcher.points_to_evaluate = points;
        self
    }
    /// Learn from the finished trials of the experiment `name` in the same store before the
    /// first suggestion (as `[searcher] warm_start`).
    pub fn warm_start(mut self, name: &str) -> Self {
        self.spec.searcher.warm_start = Some(name.to_owned());
        self
    }
    /// The scheduler. Default FIFO (no early stopping).
    pub fn scheduler(mut self, scheduler: SchedulerConfig) -> Self {
        self.spec.scheduler = scheduler;
        self
    }
    /// End the sweep after this long.
    pub fn time_budget(mut self, budget: Duration) -> Self {
        self.spec.time_budget_s = Some(budget.as_secs_f64());
        self
    }
    /// End the sweep once a trial reaches this value of the metric.
    pub fn target(mut self, target: f64) -> Self {
        self.spec.target = Some(target);
        self
    }
    /// Retries per trial after a failure. Default 0.
    pub fn max_failures(mut self, retries: u32) -> Self {
        self.spec.trial.max_failures = retries;
        self
    }
    /// End the sweep once this many trials errored.
    pub fn max_failed_trials(mut self, limit: u64) -> Self {
        self.spec.max_failed_trials = Some(limit);
        self
    }
    /// What the store survives before a report is answered. Default
    /// [`Durability::Process`]: a `kill -9` of rung at any instant loses no answered report;
    /// [`Durability::Power`] also survives a power loss, at the cost of an fsync per commit.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.spec.durability = durability;
        self
    }
    /// Keep the N best checkpoints per trial (plus the most recent).
    pub fn checkpoint_keep(mut self, keep: usize) -> Self {
        self.spec.trial.checkpoint_keep = Some(keep);
        self
    }
    /// Where checkpoints go: `s3://bucket/prefix` (endpoint and credentials from the `AWS_*`
    /// variables) or `file:///path`. Default: each trial's folder next to the store.
    pub fn checkpoint_storage(mut self, uri: impl Into<String>) -> Self {
        self.spec.trial.checkpoint_storage = Some(uri.into());
        self
    }
    /// How long a stopped trial gets before it is cancelled. Default 10 s.
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.spec.trial.stop_grace_s = grace.as_secs_f64();
        self
    }
    /// The SQLite store. Default `rung.db` in the working directory.
    pub fn store(mut self, path: impl AsRef<Path>) -> Self {
        self.store = path.as_ref().to_owned();
        self
    }
    /// Carry on the experiment of this name in the store, if there is one, instead of starting
    /// a new one (`name-2`, ...). It runs with the spec it was started with — a different space
    /// or setting given here is ignored, with a warning — and one that has already finished is
    /// returned as it is, without running anything. Default false.
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }
    /// Show a progress bar on the terminal. Default true (it hides itself when stderr is not a
    /// terminal).
    pub fn progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }
    /// Treat Ctrl-C (SIGINT) and SIGTERM as "stop for now": running trials are terminated but
    /// stay resumable; a second signal ends the process at once. Default true.
    pub fn interrupt_on_ctrl_c(mut self, enabled: bool) -> Self {
        self.interrupt_on_ctrl_c = enabled;
        self
    }

    /// Checks every setting and returns the tuner.
    pub fn build(mut self) -> Result<Tuner> {
        self.spec.resolve_defaults();
        self.spec.validate()?;
        Ok(Tuner {
            start: Start::New(Box::new(self.spec)),
            store: self.store,
            resume: self.resume,
            progress: self.progress,
            interrupt_on_ctrl_c: self.interrupt_on_ctrl_c,
            max_concurrent: None,
            driver: Driver::new(),
            observer: None,
        })
    }
}

/// The signals that interrupt a sweep: SIGINT (Ctrl-C) and SIGTERM (systemd, Kubernetes,
/// `timeout`), which ask the same thing — stop for now, resumably.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Starts catching both signals (from now on they no longer end the process at once).
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next of either signal and names it.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "Ctrl-C",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

#[derive(Debug, Clone)]
enum Start {
    New(Box<Spec>),
    Existing(Option<String>),
}

/// A sweep ready to run. See the module documentation.
pub struct Tuner {
    start: Start,
    store: PathBuf,
    resume: bool,
    progress: bool,
    interrupt_on_ctrl_c: bool,
    max_concurrent: Option<usize>,
    driver: Driver,
    observer: Option<Observer>,
}

/// Called after every group commit with the sweep's progress (see [`Tuner::with_observer`]).
pub type Observer = Box<dyn FnMut(&Progress) + Send>;

impl Tuner {
    /// A builder with the defaults.
    pub fn builder() -> TunerBuilder {
        TunerBuilder {
            spec: Spec::new("", Mode::Min),
            store: PathBuf::from("rung.db"),
            resume: false,
            progress: true,
            interrupt_on_ctrl_c: true,
        }
    }

    /// A tuner for a spec already loaded and validated (the CLI's `rung run`).
    pub fn from_spec(spec: Spec, store: PathBuf) -> Self {
        Tuner {
            start: Start::New(Box::new(spec)),
            store,
            resume: false,
            progress: true,
            interrupt_on_ctrl_c: true,
            max_concurrent: None,
            driver: Driver::new(),
            observer: None,
        }
    }

    /// A tuner that carries on an experiment of `store` (the newest when `experiment` is
    /// `None`) with the spec it was started with (the CLI's `rung resume`).
    pub fn resume_from(store: PathBuf, experiment: Option<String>) -> Self {
        Tuner {
            start: Start::Existing(experiment),
            store,
            resume: true,
            progress: true,
            interrupt_on_ctrl_c: true,
            max_concurrent: None,
            driver: Driver::new(),
            observer: None,
        }
    }

    /// Change how many trials run at once (the change is logged, so resume stays exact).
    pub fn with_max_concurrent(mut self, max_concurrent: Option<usize>) -> Self {
        self.max_concurrent = max_concurrent;
        self
    }

    /// A handle to interrupt the run from elsewhere (another task, a signal handler): its
    /// `interrupt()` stops running trials but leaves them resumable, like Ctrl-C; its
    /// `stop_sweep()` ends the sweep for good.
    pub fn handle(&self) -> DriverHandle {
        self.driver.handle()
    }

    /// Show or hide the progress bar.
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// Treat Ctrl-C (SIGINT) and SIGTERM as "stop for now" (true, the default) or leave both
    /// signals alone, for a host that handles them itself (the Python bindings turn SIGINT into
    /// `KeyboardInterrupt`).
    pub fn with_ctrl_c(mut self, enabled: bool) -> Self {
        self.interrupt_on_ctrl_c = enabled;
        self
    }

    /// Call `observer` with the progress after every group commit, instead of drawing the
    /// progress bar.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Runs the sweep with each trial as a call of `trainable`, at most `max_concurrent` at once.
    pub async fn run<F, Fut, E>(self, trainable: F) -> Result<SweepResult>
    where
        F: Fn(TrialContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        self.execute(move |spec, experiment, trials_root| {
            let runner = InProcessRunner::new(trainable, trials_root, spec.stop_grace()?)
                .with_storage(checkpoint_storage(spec)?, &experiment.name);
            Ok(Arc::new(runner) as Arc<dyn Runner>)
        })
        .await
    }

    /// Runs the sweep with each trial as a process of the spec's `[trial] command`.
    pub async fn run_command(self) -> Result<SweepResult> {
        self.execute(|spec, experiment, trials_root| {
            if spec.trial.command.is_empty() {
                return Err(Error::Usage(format!(
                    "experiment \"{}\" runs in-process trials (a Rust closure); resume it from its program with .resume(true)",
                    experiment.name
                )));
            }
            Ok(Arc::new(ProcessRunner::new(ProcessConfig {
                command: spec.trial.command.clone(),
                workdir: spec.trial.workdir.clone().unwrap_or_else(|| PathBuf::from(".")),
                trials_root,
                stop_grace: spec.stop_grace()?,
                env: spec.trial.env.clone(),
                experiment: experiment.name.clone(),
                checkpoint_storage: checkpoint_storage(spec)?,
            })) as Arc<dyn Runner>)
        })
        .await
    }

    /// Runs the sweep with the runner `make_runner` returns for the experiment (called once the
    /// store is open and the experiment chosen, with its spec and its trials' folder): how the
    /// Python bindings, and anything else that runs trials its own way, plug in.
    pub async fn run_with_runner<M>(self, make_runner: M) -> Result<SweepResult>
    where
        M: FnOnce(&Spec, &ExperimentInfo, PathBuf) -> Result<Arc<dyn Runner>> + Send + 'static,
    {
        self.execute(make_runner).await
    }

    async fn execute<M>(mut self, make_runner: M) -> Result<SweepResult>
    where
        M: FnOnce(&Spec, &ExperimentInfo, PathBuf) -> Result<Arc<dyn Runner>> + Send + 'static,
    {
        let driver = std::mem::take(&mut self.driver);
        // Caught from before the sweep starts, so a signal never finds rung unprepared.
        let signals = if self.interrupt_on_ctrl_c {
            StopSignals::install()
                .inspect_err(|error| {
                    tracing::warn!(%error, "cannot watch for Ctrl-C and SIGTERM; they end rung at once");
                })
                .ok()
        } else {
            None
        };
        let handle = driver.handle();
        let runtime = tokio::runtime::Handle::current();
        let (answer, result) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("rung-controller".into())
            .spawn(move || {
                let _ = answer.send(self.drive(driver, runtime, make_runner));
            })
            .map_err(|e| Error::Internal(format!("cannot start the controller thread: {e}")))?;
        let interrupt = tokio::spawn(async move {
            let Some(mut signals) = signals else {
                return;
            };
            let first = signals.next().await;
            eprintln!(
                "\ninterrupted ({first}): stopping running trials (they resume from their checkpoints); Ctrl-C or SIGTERM again to quit at once"
            );
            handle.interrupt();
            signals.next().await;
            // Everything answered so far is committed; trial processes die with us.
            std::process::exit(130);
        });
        let result = result
            .await
            .map_err(|_| Error::Internal("the controller thread panicked".into()));
        interrupt.abort();
        result?
    }

    /// Opens the store, picks the experiment, replays and runs it. Runs on its own thread.
    fn drive<M>(mut self, driver: Driver, runtime: tokio::runtime::Handle, make_runner: M) -> Result<SweepResult>
    where
        M: FnOnce(&Spec, &ExperimentInfo, PathBuf) -> Result<Arc<dyn Runner>>,
    {
        if let Start::New(spec) = &self.start {
            check_storage(spec, &runtime)?; // before the experiment is created
        }
        let mut store = Store::open_or_create(&self.store)?;
        let experiment = match &self.start {
            Start::New(spec) => {
                let existing = if self.resume {
                    store.experiments()?.into_iter().find(|e| e.name == spec.name)
                } else {
                    None
                };
                match existing {
                    Some(experiment) => {
                        warn_if_settings_differ(&experiment, spec);
                        experiment
                    }
                    None => {
                        let mut spec = spec.as_ref().clone();
                        if let Some(name) = &spec.searcher.warm_start {
                            spec.searcher.warm_trials = warm_trials(&store, name, &spec)?;
                        }
                        let json = serde_json::to_string(&spec).expect("a spec always serializes");
                        store.create_experiment(&spec.name, &json, spec.seed.expect("seed resolved when built"))?
                    }
                }
            }
            Start::Existing(name) => store.experiment(name.as_deref())?,
        };
        let spec: Spec = serde_json::from_str(&experiment.spec).map_err(tune_runtime::Error::from)?;
        if experiment.is_finished() {
            return load_result(
                &store,
                &experiment,
                &spec,
                SweepStatus::Finished {
                    cause: experiment.end_cause.clone().unwrap_or_default(),
                },
            );
        }
        let trials_root = trials_root(&self.store, &experiment.name);
        let _lock = ExperimentLock::acquire(&trials_root, &experiment.name)?;
        if matches!(self.start, Start::Existing(_)) {
            check_storage(&spec, &runtime)?;
        }
        let runner = make_runner(&spec, &experiment, trials_root)?;
        let seed = experiment.seed;
        let controller = controller_for(&spec, seed)?;
        let observer: Observer = match self.observer.take() {
            Some(observer) => observer,
            None if self.progress => {
                Box::new(progress::Display::new(&spec.metric, controller.config().max_trials).into_observer())
            }
            None => Box::new(|_: &Progress| {}),
        };
        let tracker = match &spec.tracking {
            Some(tracking) => Some(Tracker::start(TrackerSettings::new(
                tracking,
                &spec.sweep_facts(),
                &experiment,
                &self.store,
            )?)?),
            None => None,
        };
        let setup = DriverSetup {
            store,
            durability: spec.durability,
            experiment: experiment.clone(),
            controller,
            runner,
            runtime,
            observer,
            max_concurrent: self.max_concurrent,
            interrupt_grace: spec.stop_grace()? + Duration::from_secs(2),
            on_commit: tracker.as_ref().map(Tracker::hook),
        };
        let end = driver.run(setup);
        // The sweep is over (or stopped): send what MLflow still misses before returning.
        if let Some(tracker) = tracker {
            tracker.finish();
        }
        let end = end?;
        let store = Store::open(&self.store)?;
        let experiment = store.experiment(Some(&experiment.name))?;
        let status = match end {
            SweepEnd::Finished(summary) => SweepStatus::Finished {
                cause: summary.cause.label().to_owned(),
            },
            SweepEnd::Interrupted(_) => SweepStatus::Interrupted,
        };
        load_result(&store, &experiment, &spec, status)
    }
}

/// A controller with a fresh searcher and scheduler for `spec`, seeded with `seed`: what a new
/// sweep starts with and what a resumed one replays its log through.
pub fn controller_for(spec: &Spec, seed: u64) -> Result<Controller> {
    Ok(Controller::new(
        spec.controller_config()?,
        spec.searcher.build(&spec.space, &spec.metric, spec.mode, seed)?,
        spec.scheduler.build(spec.mode, seed, &spec.space)?,
    ))
}

/// The finished trials of the experiment `name` in `store`, for `[searcher] warm_start`: each
/// with its last value of the metric (`None` when it errored or never reported it). The
/// earlier experiment must optimise the same metric in the same mode.
pub(crate) fn warm_trials(store: &Store, name: &str, spec: &Spec) -> Result<Vec<WarmTrial>> {
    let setting = |message: String| Error::setting("searcher.warm_start", message);
    let Some(earlier) = store.experiments()?.into_iter().find(|e| e.name == name) else {
        return Err(setting(format!(
            "no experiment \"{name}\" in {}",
            store.path().display()
        )));
    };
    let stored: Spec = serde_json::from_str(&earlier.spec).map_err(tune_runtime::Error::from)?;
    if (stored.metric.as_str(), stored.mode) != (spec.metric.as_str(), spec.mode) {
        return Err(setting(format!(
            "experiment \"{name}\" optimises \"{}\" ({}), this sweep \"{}\" ({})",
            stored.metric, stored.mode, spec.metric, spec.mode
        )));
    }
    Ok(store
        .trials(earlier.id)?
        .into_iter()
        .filter(|trial| trial.status.is_final())
        .map(|trial| WarmTrial {
            value: match trial.status {
                TrialStatus::Errored => None,
                _ => trial
                    .last
                    .as_ref()
                    .and_then(|report| report.metrics.get(&spec.metric).copied()),
            },
            config: trial.config,
        })
        .collect())
}

/// Warns when a resumed experiment's stored spec differs from the settings given now.
fn warn_if_settings_differ(experiment: &ExperimentInfo, given: &Spec) {
    let Ok(mut stored) = serde_json::from_str::<Spec>(&experiment.spec) else {
        return;
    };
    // The seed and concurrency of a builder without explicit ones are filled in per run.
    stored.seed = given.seed;
    stored.max_concurrent = given.max_concurrent;
    // The warm start's trials are filled in when the experiment is created.
    stored.searcher.warm_trials.clone_from(&given.searcher.warm_trials);
    if stored != *given {
        tracing::warn!(experiment = %experiment.name, "resuming with the stored spec; the settings given now differ from it and are ignored");
        eprintln!(
            "warning: experiment \"{}\" resumes with the spec it was started with; the settings given now differ and are ignored",
            experiment.name
        );
    }
}

/// Where the trials of `experiment` keep their folders: `<store stem>_trials/<experiment>/`
/// beside the store.
pub fn trials_root(store: &Path, experiment: &str) -> PathBuf {
    let stem = store
        .file_stem()
        .map_or_else(|| "rung".into(), |s| s.to_string_lossy().into_owned());
    let parent = store
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let parent = parent.canonicalize().unwrap_or_else(|_| parent.to_owned());
    parent.join(format!("{stem}_trials")).join(experiment)
}

fn load_result(store: &Store, experiment: &ExperimentInfo, spec: &Spec, status: SweepStatus) -> Result<SweepResult> {
    Ok(SweepResult {
        experiment: experiment.name.clone(),
        store: store.path().to_owned(),
        status,
        metric: spec.metric.clone(),
        mode: spec.mode,
        seed: experiment.seed,
        elapsed: Duration::from_millis(experiment.elapsed_ms),
        trials: store.trials(experiment.id)?,
    })
}

/// The checkpoint storage of a spec's `[trial] checkpoint_storage` (trial folders when absent).
pub fn checkpoint_storage(spec: &Spec) -> Result<CheckpointStorage> {
    match &spec.trial.checkpoint_storage {
        None => Ok(CheckpointStorage::Local),
        Some(uri) => CheckpointStorage::parse(uri).map_err(storage_error),
    }
}

/// Reaches the spec's checkpoint storage once, so that a wrong endpoint, bucket or credential is
/// reported before the sweep starts rather than at its first checkpoint.
fn check_storage(spec: &Spec, runtime: &tokio::runtime::Handle) -> Result<()> {
    let storage = checkpoint_storage(spec)?;
    runtime.block_on(storage.check()).map_err(storage_error)
}

fn storage_error(error: StorageError) -> Error {
    Error::setting(storage::SETTING, format!("\"{}\": {}", error.uri, error.reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_refuses_durations_that_would_panic_the_controller() {
        let builder = || Tuner::builder().metric("loss", Mode::Min).max_concurrent(1);
        let error = builder()
            .time_budget(Duration::from_secs(u64::MAX))
            .build()
            .err()
            .expect("a budget of 584 billion years is refused");
        assert!(error.is_bad_input());
        assert_eq!(
            error.to_string(),
            "setting \"time_budget_s\": must be a number of seconds above 0 and at most 315576000 (10 years), got 1.8446744073709552e19"
        );
        let error = builder()
            .stop_grace(Duration::from_secs(400_000_000))
            .build()
            .err()
            .expect("a grace of 12 years is refused");
        assert_eq!(
            error.to_string(),
            "setting \"trial.stop_grace_s\": must be a number of seconds at least 0 and at most 315576000 (10 years), got 400000000"
        );
        assert!(
            builder()
                .time_budget(Duration::from_secs(3600))
                .stop_grace(Duration::ZERO)
                .build()
                .is_ok()
        );
    }
}
