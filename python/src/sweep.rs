//! A sweep whose trials run in Python: [`Sweep`] drives the Rust engine on its own threads and
//! hands each launch to Python as a [`Trial`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tune_core::controller::{Launch, Outcome, Progress};
use tune_core::trial::{Decision, Report, TrialId};
use tune_core::value::Config;
use tune_runtime::driver::{DriverHandle, Runner, TrialLink};
use tune_runtime::files::TrialFiles;
use tune_runtime::runner::{LaunchError, prepare_in_process};
use tune_runtime::storage::CheckpointStorage;
use tune_sweep::{Spec, SweepResult, Tuner};

use crate::convert::map_to_py;
use crate::results::results_dict;
use crate::{is_value_error, lock, to_py_err};

/// Parses, completes and validates a spec given as JSON; the error names the setting or
/// parameter at fault.
fn load_spec(spec_json: &str) -> PyResult<Spec> {
    let mut spec = Spec::from_json_str(spec_json).map_err(PyValueError::new_err)?;
    spec.resolve_defaults();
    spec.validate().map_err(to_py_err)?;
    Ok(spec)
}

/// Checks a spec without running it (so that `rung.Tuner(...)` fails at construction, not at
/// `fit()`). Returns the spec with its defaults filled in, as JSON.
#[pyfunction]
pub fn check_spec(spec_json: &str) -> PyResult<String> {
    let spec = load_spec(spec_json)?;
    serde_json::to_string(&spec).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// One launch of a trial, shared by the Python object and the task that waits for its end.
struct TrialShared {
    id: TrialId,
    config: Config,
    restore: Option<(u64, PathBuf)>,
    attempt: u32,
    files: TrialFiles,
    link: TrialLink,
    /// Set when the trial must end: a decision other than CONTINUE, or a stop from the sweep.
    stop: AtomicBool,
    /// Set by whoever tells the driver the launch ended: `finish`, or the task that waits for
    /// it when Python overruns its stop grace or drops the trial. Exactly one of them does.
    exited: AtomicBool,
    /// Wakes the task that waits for the end (`finish` was called).
    done: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    runtime: tokio::runtime::Handle,
    storage: CheckpointStorage,
    experiment: String,
}

/// Hands launches to Python through a queue and waits, on the runtime, for each to finish.
struct PythonRunner {
    queue: Mutex<Sender<Trial>>,
    trials_root: PathBuf,
    stop_grace: Duration,
    storage: CheckpointStorage,
    experiment: String,
}

impl Runner for PythonRunner {
    fn launch(&self, launch: Launch, link: TrialLink) {
        let files = TrialFiles::new(&self.trials_root, launch.trial);
        let trial = Pending {
            queue: lock(&self.queue).clone(),
            grace: self.stop_grace,
            runtime: tokio::runtime::Handle::current(),
            storage: self.storage.clone(),
            experiment: self.experiment.clone(),
        };
        if launch.restore.is_none() {
            // Nothing to fetch: the trial goes to Python now, from this thread, rather than
            // after a hop through the runtime (on a sweep of short trials, each hop is a
            // context switch on the path from one trial to the next).
            match files.clear_staging() {
                Ok(()) => trial.start(launch, files, None, link),
                Err(source) => link.fail(LaunchError::Prepare {
                    dir: files.dir.clone(),
                    source,
                }),
            }
            return;
        }
        tokio::spawn(async move {
            let id = launch.trial;
            let note = move |line: String| eprintln!("rung: trial {id}: {line}");
            match prepare_in_process(&launch, &files, &note).await {
                Ok(restore) => trial.start(launch, files, restore, link),
                Err(error) => link.fail(error),
            }
        });
    }
}

/// A launch on its way to Python.
struct Pending {
    queue: Sender<Trial>,
    grace: Duration,
    runtime: tokio::runtime::Handle,
    storage: CheckpointStorage,
    experiment: String,
}

impl Pending {
    /// Hands the trial to Python and waits, on the runtime, for its end or its stop.
    fn start(self, launch: Launch, files: TrialFiles, restore: Option<(u64, PathBuf)>, mut link: TrialLink) {
        let (done, mut finished) = tokio::sync::oneshot::channel();
        let shared = Arc::new(TrialShared {
            id: launch.trial,
            config: launch.config,
            restore,
            attempt: launch.attempt,
            files,
            link: link.reporter(),
            stop: AtomicBool::new(false),
            exited: AtomicBool::new(false),
            done: Mutex::new(Some(done)),
            runtime: self.runtime,
            storage: self.storage,
            experiment: self.experiment,
        });
        if self
            .queue
            .send(Trial {
                shared: Arc::clone(&shared),
            })
            .is_err()
        {
            link.exited(Outcome::Failed {
                reason: "the Python side of the sweep is gone".into(),
            });
            return;
        }
        let grace = self.grace;
        tokio::spawn(async move {
            // `finish` tells the driver itself; this task speaks only when Python does not.
            let unfinished = tokio::select! {
                ended = &mut finished => ended.is_err().then(|| Outcome::Failed {
                    reason: "the trial was dropped by Python without an outcome".into(),
                }),
                () = link.stop_requested() => {
                    // A Python thread cannot be killed: its next report raises, and after the
                    // grace period the trial counts as ended whatever the thread still does.
                    shared.stop.store(true, Ordering::SeqCst);
                    match tokio::time::timeout(grace, &mut finished).await {
                        Ok(Ok(())) => None,
                        Ok(Err(_)) => Some(Outcome::Failed {
                            reason: "the trial was dropped by Python without an outcome".into(),
                        }),
                        Err(_) => Some(Outcome::Success),
                    }
                }
            };
            if let Some(outcome) = unfinished
                && !shared.exited.swap(true, Ordering::SeqCst)
            {
                link.exited(outcome);
            }
        });
    }
}

/// A wait of `timeout` seconds from Python: negative or NaN is no wait, and anything a
/// `Duration` cannot hold (`float("inf")`) waits for good instead of panicking.
fn wait_time(timeout: f64) -> Duration {
    Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::MAX)
}

/// One launch of a trial, as Python sees it: its config and folders, `report` and `finish`.
#[pyclass(frozen, module = "rung._rung")]
pub struct Trial {
    shared: Arc<TrialShared>,
}

#[pymethods]
impl Trial {
    /// The trial's id (`t1`, `t2`, ...).
    #[getter]
    fn id(&self) -> String {
        self.shared.id.to_string()
    }

    /// Its configuration, as a fresh dict.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        map_to_py(py, &self.shared.config.0)
    }

    /// How many times it was launched before (0 the first time).
    #[getter]
    fn attempt(&self) -> u32 {
        self.shared.attempt
    }

    /// The trial's folder.
    #[getter]
    fn trial_dir(&self) -> String {
        self.shared.files.dir.display().to_string()
    }

    /// The folder a checkpoint is written into before `report(..., checkpoint=True)`; it is
    /// not created until the trial writes a checkpoint (`rung.checkpoint_dir()` creates it).
    #[getter]
    fn checkpoint_dir(&self) -> String {
        self.shared.files.staging().display().to_string()
    }

    /// The checkpoint to restore from as `(step, folder)`, or None.
    #[getter]
    fn restore(&self) -> Option<(u64, String)> {
        self.shared
            .restore
            .as_ref()
            .map(|(step, path)| (*step, path.display().to_string()))
    }

    /// Whether the trial has been told to end (a decision other than CONTINUE, or the sweep
    /// stopping it).
    fn should_stop(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    /// Reports metrics at `step` and returns the decision (`CONTINUE`, `STOP` or `PAUSE`) once
    /// the report is committed. With `checkpoint`, the files in `checkpoint_dir` become the
    /// checkpoint of this step. After a decision other than CONTINUE every report answers STOP
    /// at once. Releases the GIL while it waits.
    #[pyo3(signature = (step, metrics, checkpoint = false))]
    fn report(&self, py: Python<'_>, step: u64, metrics: BTreeMap<String, f64>, checkpoint: bool) -> &'static str {
        let shared = Arc::clone(&self.shared);
        let decision = py.detach(move || {
            if shared.stop.load(Ordering::SeqCst) {
                return Decision::Stop;
            }
            let checkpoint = if checkpoint {
                let id = shared.id;
                let note = move |line: String| eprintln!("rung: trial {id}: {line}");
                let commit = shared
                    .storage
                    .commit(&shared.files, &shared.experiment, shared.id, step, &note);
                match shared.runtime.block_on(commit) {
                    Ok(location) => location,
                    Err(error) => {
                        eprintln!("rung: trial {}: step {step}: {error}", shared.id);
                        None
                    }
                }
            } else {
                None
            };
            // This thread drives the controller itself when no other thread does: no hand-off.
            let decision = shared.link.report_blocking(Report { step, metrics }, checkpoint);
            if decision != Decision::Continue {
                shared.stop.store(true, Ordering::SeqCst);
            }
            decision
        });
        match decision {
            Decision::Continue => "CONTINUE",
            Decision::Stop => "STOP",
            Decision::Pause => "PAUSE",
        }
    }

    /// Ends this launch: `error` (a message, e.g. a traceback) when it failed, None when it
    /// returned. A second call does nothing.
    #[pyo3(signature = (error = None))]
    fn finish(&self, py: Python<'_>, error: Option<String>) {
        if let Some(done) = lock(&self.shared.done).take() {
            let _ = done.send(());
        }
        if self.shared.exited.swap(true, Ordering::SeqCst) {
            return; // a second call, or the trial already counted as ended after its stop grace
        }
        let outcome = match error {
            None => Outcome::Success,
            Some(reason) => Outcome::Failed { reason },
        };
        // On this thread, like a report: the next trial is launched before this returns.
        let shared = Arc::clone(&self.shared);
        py.detach(move || shared.link.exited_blocking(outcome));
    }

    fn __repr__(&self) -> String {
        format!("Trial({}, attempt={})", self.shared.id, self.shared.attempt)
    }
}

/// Where a sweep's outcome is, once its thread has ended.
enum Ending {
    Running(Receiver<tune_sweep::Result<SweepResult>>),
    Ended(Result<SweepResult, (bool, String)>),
}

/// A sweep running on the engine's threads; Python takes its trials with `next_trial` and runs
/// them. Built with a spec (a new experiment) or without one (carry on an experiment of the
/// store).
#[pyclass(frozen, module = "rung._rung")]
pub struct Sweep {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    trials: Mutex<Receiver<Trial>>,
    driver: DriverHandle,
    progress: Arc<Mutex<Option<Progress>>>,
    experiment: Arc<Mutex<Option<String>>>,
    ending: Mutex<Ending>,
    store: PathBuf,
}

#[pymethods]
impl Sweep {
    /// Starts the sweep of `spec_json` in the store at `store`, or, without a spec, carries on
    /// `experiment` (the newest when None) of that store.
    #[new]
    #[pyo3(signature = (store, spec_json = None, experiment = None, max_concurrent = None))]
    fn new(
        store: PathBuf,
        spec_json: Option<&str>,
        experiment: Option<String>,
        max_concurrent: Option<usize>,
    ) -> PyResult<Self> {
        let tuner = match spec_json {
            Some(json) => Tuner::from_spec(load_spec(json)?, store.clone()),
            None => {
                if !store.exists() {
                    return Err(PyRuntimeError::new_err(format!("no rung store at {}", store.display())));
                }
                Tuner::resume_from(store.clone(), experiment)
            }
        };
        let progress = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&progress);
        let tuner = tuner
            .with_progress(false)
            .with_ctrl_c(false)
            .with_max_concurrent(max_concurrent)
            .with_observer(Box::new(move |now: &Progress| *lock(&seen) = Some(now.clone())));
        let driver = tuner.handle();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rung-runtime")
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the runtime: {e}")))?;
        let (queue, trials) = channel();
        let (answer, ending) = channel();
        let experiment = Arc::new(Mutex::new(None));
        let named = Arc::clone(&experiment);
        runtime.spawn(async move {
            let result = tuner
                .run_with_runner(move |spec, info, trials_root| {
                    *lock(&named) = Some(info.name.clone());
                    Ok(Arc::new(PythonRunner {
                        queue: Mutex::new(queue),
                        trials_root,
                        stop_grace: spec.stop_grace()?,
                        storage: tune_sweep::tuner::checkpoint_storage(spec)?,
                        experiment: info.name.clone(),
                    }) as Arc<dyn Runner>)
                })
                .await;
            let _ = answer.send(result);
        });
        Ok(Sweep {
            runtime: Mutex::new(Some(runtime)),
            trials: Mutex::new(trials),
            driver,
            progress,
            experiment,
            ending: Mutex::new(Ending::Running(ending)),
            store,
        })
    }

    /// The next launch to run, waiting up to `timeout` seconds (GIL released); None when there
    /// is none yet or the sweep has ended.
    fn next_trial(&self, py: Python<'_>, timeout: f64) -> Option<Trial> {
        let timeout = wait_time(timeout);
        py.detach(|| match lock(&self.trials).recv_timeout(timeout) {
            Ok(trial) => Some(trial),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // The runner is gone: the sweep is ending; don't spin.
                std::thread::sleep(timeout.min(Duration::from_millis(20)));
                None
            }
        })
    }

    /// Whether the sweep has ended (its result is ready), waiting up to `timeout` seconds.
    #[pyo3(signature = (timeout = 0.0))]
    fn wait(&self, py: Python<'_>, timeout: f64) -> bool {
        let timeout = wait_time(timeout);
        py.detach(|| {
            let mut ending = lock(&self.ending);
            if let Ending::Running(receiver) = &*ending {
                let outcome = match receiver.recv_timeout(timeout) {
                    Ok(result) => result.map_err(|e| (is_value_error(&e), e.to_string())),
                    Err(RecvTimeoutError::Timeout) => return false,
                    Err(RecvTimeoutError::Disconnected) => {
                        Err((false, "the sweep's thread ended without a result".into()))
                    }
                };
                *ending = Ending::Ended(outcome);
            }
            true
        })
    }

    /// The experiment's name, once the store has been opened.
    #[getter]
    fn experiment(&self) -> Option<String> {
        lock(&self.experiment).clone()
    }

    /// The store's path.
    #[getter]
    fn store(&self) -> String {
        self.store.display().to_string()
    }

    /// Trial counts and the best value so far, or None before the first commit.
    fn progress<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(now) = lock(&self.progress).clone() else {
            return Ok(None);
        };
        let dict = PyDict::new(py);
        for (key, value) in [
            ("created", now.created),
            ("pending", now.pending),
            ("running", now.running),
            ("paused", now.paused),
            ("completed", now.completed),
            ("stopped", now.stopped),
            ("sweep_ended", now.sweep_ended),
            ("errored", now.errored),
        ] {
            dict.set_item(key, value)?;
        }
        dict.set_item("max_trials", now.max_trials)?;
        dict.set_item(
            "best",
            now.best.map(|(trial, value, step)| (trial.to_string(), value, step)),
        )?;
        Ok(Some(dict))
    }

    /// Stop for now (Ctrl-C): running trials are told to stop and stay resumable.
    fn interrupt(&self) {
        self.driver.interrupt();
    }

    /// End the sweep for good: running trials end as `sweep_ended`.
    fn stop(&self) {
        self.driver.stop_sweep();
    }

    /// The outcome once the sweep has ended (see `wait`): a dict of the experiment and every
    /// trial, as `load_results` gives. Raises the sweep's error if it failed.
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let ending = lock(&self.ending);
        match &*ending {
            Ending::Running(_) => Err(PyRuntimeError::new_err("the sweep has not ended yet")),
            Ending::Ended(Err((true, message))) => Err(PyValueError::new_err(message.clone())),
            Ending::Ended(Err((false, message))) => Err(PyRuntimeError::new_err(message.clone())),
            Ending::Ended(Ok(result)) => results_dict(py, Path::new(&result.store), Some(&result.experiment)),
        }
    }

    /// Shuts the runtime down (after the sweep has ended); called by the Python side when done.
    fn close(&self, py: Python<'_>) {
        let runtime = lock(&self.runtime).take();
        if let Some(runtime) = runtime {
            py.detach(|| runtime.shutdown_timeout(Duration::from_secs(1)));
        }
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        // A sweep dropped while running (the Python process is exiting): stop it for now so the
        // store stays resumable.
        if matches!(&*lock(&self.ending), Ending::Running(_)) {
            self.driver.interrupt();
        }
    }
}
