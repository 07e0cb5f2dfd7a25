//! Experiment tracking: mirror a sweep into an MLflow tracking server.
//!
//! With a `[tracking]` table in the spec, the sweep becomes an MLflow *parent run* and each trial
//! a *child run* of it (tag `mlflow.parentRunId`, run name `t7`): the trial's config as params,
//! every reported metric at its step, its status and stop reason as tags (`rung.status`,
//! `rung.stop_reason`), and once the sweep is over the best trial tagged (`rung.best = true` on
//! its run, `rung.best_trial` and the metric `best_<metric>` on the parent). Everything goes
//! through MLflow's REST API, metrics, params and tags batched with `runs/log-batch`.
//!
//! ## Out of the sweep's way
//!
//! [`Tracker::hook`] is the driver's `on_commit`: after each group commit it turns the records
//! into small owned [`Update`]s and appends them to a bounded queue. It does no I/O and never
//! waits. A dedicated thread (`rung-mlflow`) drains the queue into a [`Plan`](plan::Plan) (what still has to
//! reach MLflow, free of I/O) and sends it. When MLflow is unreachable or answers 5xx, nothing is
//! lost: the plan keeps what it holds and retries with backoff (0.5 s doubling to 30 s), and one
//! warning names the server.
//!
//! ## The bound, and why nothing is dropped
//!
//! The queue holds at most [`DEFAULT_CAPACITY`] updates and the worker's plan about
//! [`WORKING_SET`] items, so an MLflow outage costs bounded memory. When the queue is full, the
//! trials whose updates no longer fit are *diverted*: their updates are not queued, and once
//! MLflow has caught up the worker reads those trials back from rung's store, which has every
//! report, and sends what MLflow has not seen. One warning says the backlog is full. A diverted
//! report reaches MLflow with the time it was read back as its timestamp.
//!
//! ## The end of a sweep, and resume
//!
//! [`Tracker::finish`] waits (up to `flush_timeout_s`, 30 s by default) until everything has
//! been sent, tags the best trial, ends the runs (`FINISHED`, `FAILED` or `KILLED`, see
//! [`run_status`]) and says how much was left unsent if the time ran out. A resumed sweep finds
//! its parent run by the tag `rung.sweep_id` and its children by `rung.trial` instead of
//! creating new ones; a trial whose run is behind the store (what a crash or a deadline left
//! unsent) is read back from the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tune_core::controller::Record;
use tune_core::duration::{Lower, seconds};
use tune_core::trial::Mode;
use tune_runtime::driver::CommitHook;
use tune_runtime::store::ExperimentInfo;

mod convert;
mod error;
mod http;
mod plan;
mod queue;
mod settings;
#[cfg(test)]
mod test_support;
mod worker;

pub use convert::{Converter, RunStatus, Update, mlflow_key, run_status, stop_reason, sweep_status, wall_ms};
pub use error::{Error, Result, UriError};
pub use http::{Api, CallError, Method};
pub use settings::{MLFLOW_TRACKING_URI, SweepFacts, Tracking, check_mlflow_uri};
pub use worker::backoff;

use http::Http;
use queue::Shared;
use worker::Worker;

/// How many updates the queue between the driver and the tracking thread holds before trials are
/// diverted (read back from the store later).
pub const DEFAULT_CAPACITY: usize = 100_000;
/// How long [`Tracker::finish`] waits for the backlog by default.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// About how many metric points, params and tags the tracking thread holds while it sends.
pub const WORKING_SET: usize = 20_000;

/// A 64-bit FNV-1a hash: stable across builds, unlike the standard library's hasher.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Says `message` once: through `tracing` where a subscriber shows warnings (the CLI, a server),
/// else on stderr (a library or the Python bindings without one).
pub(crate) fn warn(message: &str) {
    if tracing::enabled!(tracing::Level::WARN) {
        tracing::warn!("{message}");
    } else {
        eprintln!("warning: {message}");
    }
}

/// Everything a [`Tracker`] needs to know about the sweep it mirrors.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerSettings {
    /// The MLflow server, checked (see [`check_mlflow_uri`]).
    pub uri: String,
    /// The MLflow experiment to log into (created when missing).
    pub mlflow_experiment: String,
    /// The rung experiment's name.
    pub rung_experiment: String,
    /// What tells this sweep's parent run apart from every other (tag `rung.sweep_id`).
    pub sweep_id: String,
    /// The metric the sweep optimises.
    pub metric: String,
    /// Its mode.
    pub mode: Mode,
    /// The rung store: where diverted trials are read back from, and the best trial.
    pub store: PathBuf,
    /// The experiment's id in the store.
    pub experiment_id: i64,
    /// When the sweep was created (ms since the Unix epoch): the parent run's start time.
    pub created_ms: i64,
    /// Params of the parent run (the sweep's settings).
    pub parent_params: Vec<(String, String)>,
    /// How many updates the queue holds before trials are diverted.
    pub capacity: usize,
    /// How long [`Tracker::finish`] waits for the backlog.
    pub flush_timeout: Duration,
}

impl TrackerSettings {
    /// The settings for `experiment` of the store at `store`, a sweep described by `sweep`: the
    /// URI from `[tracking]` (or `MLFLOW_TRACKING_URI`), checked.
    pub fn new(tracking: &Tracking, sweep: &SweepFacts, experiment: &ExperimentInfo, store: &Path) -> Result<Self> {
        let uri = tracking.resolve_uri()?;
        let store_path = store.canonicalize().unwrap_or_else(|_| store.to_owned());
        let sweep_id = format!(
            "{:016x}",
            fnv1a(&[
                &store_path.to_string_lossy(),
                &experiment.name,
                &experiment.created_at.to_string(),
                &experiment.seed.to_string(),
            ])
        );
        let parent_params = vec![
            ("metric".to_owned(), sweep.metric.clone()),
            ("mode".to_owned(), sweep.mode.to_string()),
            ("num_samples".to_owned(), sweep.num_samples.to_string()),
            ("seed".to_owned(), experiment.seed.to_string()),
            ("searcher".to_owned(), sweep.searcher.clone()),
            ("scheduler".to_owned(), sweep.scheduler.clone()),
        ];
        let flush_timeout = match tracking.flush_timeout_s {
            Some(timeout) => seconds("tracking.flush_timeout_s", timeout, Lower::Zero)?,
            None => DEFAULT_FLUSH_TIMEOUT,
        };
        Ok(TrackerSettings {
            uri,
            mlflow_experiment: tracking.experiment.clone().unwrap_or_else(|| experiment.name.clone()),
            rung_experiment: experiment.name.clone(),
            sweep_id,
            metric: sweep.metric.clone(),
            mode: sweep.mode,
            store: store_path,
            experiment_id: experiment.id,
            created_ms: experiment.created_at.saturating_mul(1000),
            parent_params,
            capacity: DEFAULT_CAPACITY,
            flush_timeout,
        })
    }
}

/// How tracking went, from [`Tracker::finish`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackingOutcome {
    /// The MLflow experiment's id, once known.
    pub experiment_id: Option<String>,
    /// The sweep's parent run, once created or found.
    pub parent_run_id: Option<String>,
    /// Requests MLflow accepted.
    pub requests_sent: u64,
    /// Updates, metric points, params and tags not sent when the deadline passed (rung's store
    /// has them all).
    pub unsent: u64,
    /// Metric points, params and tags MLflow refused (each refusal was warned about).
    pub rejected: u64,
    /// Why tracking stopped early or left something unsent, if it did.
    pub problem: Option<String>,
    /// Whether the sweep had ended (rather than being interrupted).
    pub sweep_finished: bool,
}

/// Mirrors one sweep into MLflow. See the module documentation.
pub struct Tracker {
    shared: Arc<Shared>,
    outcome: Option<mpsc::Receiver<TrackingOutcome>>,
    uri: String,
    flush_timeout: Duration,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// Starts the tracking thread for a sweep. It connects to MLflow in the background: an
    /// unreachable server does not stop anything here.
    pub fn start(settings: TrackerSettings) -> Result<Tracker> {
        let api = Http::new(&settings.uri)?;
        Tracker::start_with(api, settings)
    }

    /// [`Tracker::start`] with another [`Api`] (tests use an in-memory MLflow).
    pub fn start_with<A: Api>(api: A, settings: TrackerSettings) -> Result<Tracker> {
        let shared = Arc::new(Shared::new(settings.capacity));
        let (sender, outcome) = mpsc::channel();
        let uri = settings.uri.clone();
        let flush_timeout = settings.flush_timeout;
        let worker = Worker::new(api, Arc::clone(&shared), settings);
        std::thread::Builder::new()
            .name("rung-mlflow".into())
            .spawn(move || {
                let _ = sender.send(worker.run());
            })
            .map_err(Error::Thread)?;
        Ok(Tracker {
            shared,
            outcome: Some(outcome),
            uri,
            flush_timeout,
        })
    }

    /// The driver's `on_commit` hook: converts the committed records and queues them. Never
    /// waits for MLflow and does no I/O.
    pub fn hook(&self) -> CommitHook {
        let shared = Arc::clone(&self.shared);
        let mut converter = Converter::default();
        let mut updates = Vec::new();
        Box::new(move |records: &[Record]| {
            converter.convert(records, wall_ms(), &mut updates);
            if updates.is_empty() {
                return;
            }
            let mut queue = shared.lock();
            if queue.disabled {
                updates.clear();
                return;
            }
            for update in updates.drain(..) {
                queue.push(update);
            }
            drop(queue);
            shared.wake.notify_one();
        })
    }

    /// Waits (up to the flush timeout) until everything has reached MLflow and the runs are
    /// ended, then says how it went, on stderr too when something was left unsent.
    pub fn finish(mut self) -> TrackingOutcome {
        self.close()
    }

    fn close(&mut self) -> TrackingOutcome {
        let Some(receiver) = self.outcome.take() else {
            return TrackingOutcome::default();
        };
        let deadline = Instant::now() + self.flush_timeout;
        self.shared.lock().closing = Some(deadline);
        self.shared.wake.notify_all();
        // The worker checks the deadline between calls; one call may take up to its timeout.
        let outcome = match receiver.recv_timeout(self.flush_timeout + Duration::from_secs(12)) {
            Ok(outcome) => outcome,
            Err(_) => {
                let queue = self.shared.lock();
                TrackingOutcome {
                    unsent: (queue.items.len() + queue.worker_pending) as u64 + queue.diverted_updates,
                    problem: Some("the tracking thread did not finish in time".into()),
                    ..TrackingOutcome::default()
                }
            }
        };
        if outcome.unsent > 0 || outcome.problem.is_some() {
            let why = outcome.problem.as_deref().unwrap_or("the flush timeout passed");
            let message = format!(
                "MLflow at {}: {} updates (metric points, params, tags, statuses) were not sent ({why}); rung's store has them all{}",
                self.uri,
                outcome.unsent,
                if outcome.sweep_finished {
                    ""
                } else {
                    ", and `rung resume` sends what the runs miss"
                }
            );
            warn(&message);
        } else if let (Some(experiment), Some(run)) = (&outcome.experiment_id, &outcome.parent_run_id) {
            eprintln!("[rung] MLflow: {}/#/experiments/{experiment}/runs/{run}", self.uri);
        }
        outcome
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tune_core::controller::{EndCause, Record};
    use tune_core::trial::{EndReason, TrialStatus};
    use tune_runtime::store::{Batch, Flush};

    use super::*;
    use crate::test_support::{FakeMlflow, Sweep, assert_mirrored, report, row, run_trials};

    /// A tracker that sends to `mlflow`, and its hook.
    fn start(mlflow: &FakeMlflow, settings: TrackerSettings) -> (Tracker, CommitHook) {
        let tracker = Tracker::start_with(mlflow.clone(), settings).unwrap();
        let hook = tracker.hook();
        (tracker, hook)
    }

    /// Finishes `tracker`, and checks that nothing was left unsent or refused, that MLflow has
    /// each of `trials` whole, and that `best` is tagged as the best trial.
    fn finish_mirrored(tracker: Tracker, mlflow: &FakeMlflow, trials: std::ops::Range<u64>, steps: u64, best: &str) {
        let outcome = tracker.finish();
        assert_eq!((outcome.unsent, outcome.rejected), (0, 0), "{outcome:?}");
        assert_mirrored(mlflow, trials, steps);
        assert_eq!(mlflow.run("sweep").tags["rung.best_trial"], best);
    }

    #[test]
    fn a_sweep_is_mirrored_and_the_best_trial_tagged() {
        let mut sweep = Sweep::new();
        let mlflow = FakeMlflow::default();
        let (tracker, mut hook) = start(&mlflow, sweep.settings(DEFAULT_CAPACITY));
        run_trials(&mut sweep, &mut hook, 1..4, 5, true);
        let outcome = tracker.finish();
        assert_eq!(
            (outcome.unsent, outcome.rejected, outcome.problem.clone()),
            (0, 0, None),
            "{outcome:?}"
        );
        assert_mirrored(&mlflow, 1..4, 5);
        let parent = mlflow.run("sweep");
        assert_eq!(parent.status, "FINISHED");
        assert_eq!(parent.tags["rung.best_trial"], "t3");
        assert_eq!(parent.tags["rung.end_cause"], "all_trials_done");
        assert_eq!(parent.params["metric"], "loss");
        assert_eq!(mlflow.run("t3").tags["rung.best"], "true");
        assert!(!mlflow.run("t2").tags.contains_key("rung.best"));
        let calls = mlflow.state.lock().unwrap().calls.clone();
        let batches = calls.iter().filter(|call| *call == "runs/log-batch").count();
        assert!(batches < 3 * 5 * 2, "reports are batched: {calls:?}");
    }

    #[test]
    fn an_outage_delays_tracking_and_a_full_backlog_is_read_back_from_the_store() {
        let mut sweep = Sweep::new();
        let mlflow = FakeMlflow::default();
        mlflow.down.store(true, Ordering::SeqCst);
        // Room for 8 metric points: most trials end up diverted.
        let (tracker, mut hook) = start(&mlflow, sweep.settings(8));
        run_trials(&mut sweep, &mut hook, 1..6, 10, true);
        {
            let queue = tracker.shared.lock();
            assert!(
                queue.weight <= 8 + 1,
                "the queue stays bounded (the end of the sweep is always queued)"
            );
            assert!(!queue.diverted.is_empty() && queue.diverted_updates > 0);
        }
        mlflow.down.store(false, Ordering::SeqCst);
        finish_mirrored(tracker, &mlflow, 1..6, 10, "t5");
    }

    #[test]
    fn a_resumed_sweep_finds_its_runs_and_sends_what_they_miss() {
        let mut sweep = Sweep::new();
        let mlflow = FakeMlflow::default();
        let (tracker, mut hook) = start(&mlflow, sweep.settings(DEFAULT_CAPACITY));
        run_trials(&mut sweep, &mut hook, 1..3, 4, false);
        let outcome = tracker.finish();
        assert_eq!(outcome.unsent, 0, "{outcome:?}");
        assert_eq!(mlflow.run("sweep").status, "KILLED", "an interrupted sweep");
        // What a crash leaves: the store has reports MLflow never got.
        sweep
            .store
            .commit(
                sweep.info.id,
                &Batch {
                    events: Vec::new(),
                    records: vec![Record::Trial(row(3, TrialStatus::Running)), report(3, 1, 0.1)],
                },
                Flush::Os,
            )
            .unwrap();

        let (tracker, mut hook) = start(&mlflow, sweep.settings(DEFAULT_CAPACITY));
        let mut trial = row(3, TrialStatus::Terminated(EndReason::Completed));
        trial.best = Some((0.1, 1));
        sweep.commit(
            &mut hook,
            vec![
                Record::Trial(trial),
                Record::ExperimentFinished {
                    cause: EndCause::AllTrialsDone,
                },
            ],
        );
        let outcome = tracker.finish();
        assert_eq!(outcome.unsent, 0, "{outcome:?}");
        let state = mlflow.state.lock().unwrap();
        let names: Vec<&str> = state
            .runs
            .iter()
            .map(|run| run.tags["mlflow.runName"].as_str())
            .collect();
        assert_eq!(names, ["sweep", "t1", "t2", "t3"], "no duplicates");
        drop(state);
        assert_eq!(
            mlflow.run("t3").metrics,
            [("acc/top 1".to_owned(), 1.0 - 0.1, 1), ("loss".to_owned(), 0.1, 1)]
        );
        assert_eq!(mlflow.run("t1").metrics.len(), 8, "nothing sent twice");
        assert_eq!(mlflow.run("sweep").status, "FINISHED");
        assert_eq!(mlflow.run("sweep").tags["rung.best_trial"], "t3");
    }

    #[test]
    fn a_session_mlflow_never_saw_is_sent_when_the_sweep_resumes() {
        let mut sweep = Sweep::new();
        let mlflow = FakeMlflow::default();
        mlflow.down.store(true, Ordering::SeqCst);
        let mut settings = sweep.settings(DEFAULT_CAPACITY);
        settings.flush_timeout = Duration::from_millis(100);
        let (tracker, mut hook) = start(&mlflow, settings);
        run_trials(&mut sweep, &mut hook, 1..3, 4, false);
        let outcome = tracker.finish();
        assert!(outcome.unsent > 0 && !outcome.sweep_finished, "{outcome:?}");
        assert!(mlflow.state.lock().unwrap().runs.is_empty());

        mlflow.down.store(false, Ordering::SeqCst);
        let (tracker, mut hook) = start(&mlflow, sweep.settings(DEFAULT_CAPACITY));
        run_trials(&mut sweep, &mut hook, 3..4, 4, true);
        finish_mirrored(tracker, &mlflow, 1..4, 4, "t3");
    }

    #[test]
    fn an_unreachable_server_keeps_every_update_and_never_holds_up_the_hook() {
        // A port nobody listens on: bind one, then let it go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sweep = Sweep::new();
        let mut settings = sweep.settings(DEFAULT_CAPACITY);
        settings.uri = format!("http://127.0.0.1:{port}");
        settings.flush_timeout = Duration::from_secs(2);
        let tracker = Tracker::start(settings).unwrap();
        let mut hook = tracker.hook();
        let records: Vec<Record> = (1..=2000).map(|step| report(1, step, 0.5)).collect();
        for chunk in records.chunks(100) {
            hook(chunk);
        }
        let outcome = tracker.finish();
        assert_eq!(outcome.parent_run_id, None);
        assert_eq!(outcome.unsent, 4000, "every metric point is still held: {outcome:?}");
        assert!(outcome.problem.unwrap().contains("Connection refused"));
    }
}
