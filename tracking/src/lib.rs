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
//! waits. A dedicated thread (`rung-mlflow`) drains the queue into a [`Plan`] (what still has to
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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tune_core::controller::{EndCause, Record};
use tune_core::trial::{EndReason, Metrics, Mode, TrialId, TrialStatus};
use tune_core::value::{Config, value_to_arg};
use tune_runtime::driver::CommitHook;
use tune_runtime::store::{ExperimentInfo, Store, StoredTrial};

mod error;
mod settings;

pub use error::{Error, Result};
pub use settings::{MLFLOW_TRACKING_URI, SweepFacts, Tracking};

/// How many updates the queue between the driver and the tracking thread holds before trials are
/// diverted (read back from the store later).
pub const DEFAULT_CAPACITY: usize = 100_000;
/// How long [`Tracker::finish`] waits for the backlog by default.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// About how many metric points, params and tags the tracking thread holds while it sends.
pub const WORKING_SET: usize = 20_000;

const MAX_METRICS_PER_BATCH: usize = 1000;
const MAX_PARAMS_PER_BATCH: usize = 100;
const MAX_TAGS_PER_BATCH: usize = 100;
const MAX_ENTITIES_PER_BATCH: usize = 1000;
/// MLflow refuses a `log-batch` body over 1,000,000 bytes; stay well below.
const MAX_BATCH_BYTES: usize = 900_000;
const MAX_PARAM_VALUE_CHARS: usize = 6000;
const MAX_TAG_VALUE_CHARS: usize = 8000;
const MAX_KEY_CHARS: usize = 250;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The least time between two sending rounds, so that reports coalesce into batches.
const ROUND_INTERVAL: Duration = Duration::from_millis(200);
/// How many requests one round sends before it looks at the queue and the deadline again.
const REQUESTS_PER_ROUND: usize = 64;
/// How many diverted trials one read-back takes from the store.
const RESYNC_CHUNK: usize = 256;

/// Checks that `uri` can name an MLflow tracking server: an `http://` or `https://` URL with a
/// host and no query, fragment or credentials. The message says what is wrong.
pub fn check_mlflow_uri(uri: &str) -> std::result::Result<(), String> {
    let example = "e.g. \"http://127.0.0.1:5000\"";
    let url = reqwest::Url::parse(uri.trim()).map_err(|error| {
        format!("{uri:?} is not a URL ({error}): give the MLflow tracking server's address, {example}")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{uri:?} is not an http:// or https:// URL: rung logs to an MLflow tracking server through its REST API, {example}"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{uri:?} has no host, {example}"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{uri:?} must not have a query or a fragment, {example}"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{uri:?} carries credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead"
        ));
    }
    Ok(())
}

/// An MLflow run status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// The run is going on (or paused, or waiting to be relaunched).
    Running,
    /// The run ended normally.
    Finished,
    /// The run failed.
    Failed,
    /// The run was cut off.
    Killed,
}

impl RunStatus {
    /// MLflow's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }

    fn parse(text: &str) -> Option<RunStatus> {
        Some(match text {
            "RUNNING" | "SCHEDULED" => RunStatus::Running,
            "FINISHED" => RunStatus::Finished,
            "FAILED" => RunStatus::Failed,
            "KILLED" => RunStatus::Killed,
            _ => return None,
        })
    }
}

/// The MLflow status of a trial's run: pending, running and paused trials are `RUNNING`; a trial
/// that completed or that the scheduler stopped early did its job and is `FINISHED` (the tag
/// `rung.stop_reason` tells the two apart); one cut off by the end of the sweep is `KILLED`;
/// an errored one is `FAILED`.
pub fn run_status(status: TrialStatus) -> RunStatus {
    match status {
        TrialStatus::Pending | TrialStatus::Running | TrialStatus::Paused => RunStatus::Running,
        TrialStatus::Terminated(EndReason::Completed | EndReason::StoppedEarly) => RunStatus::Finished,
        TrialStatus::Terminated(EndReason::SweepEnded) => RunStatus::Killed,
        TrialStatus::Errored => RunStatus::Failed,
    }
}

/// The MLflow status of the sweep's parent run: `FINISHED` when it ended, `FAILED` when it ended
/// with too many failures or a failed searcher, `KILLED` when it was interrupted (`None`).
pub fn sweep_status(cause: Option<EndCause>) -> RunStatus {
    match cause {
        None => RunStatus::Killed,
        Some(EndCause::TooManyFailures | EndCause::SearcherFailed) => RunStatus::Failed,
        Some(_) => RunStatus::Finished,
    }
}

/// Why a trial ended, for the tag `rung.stop_reason`: `completed`, `stopped_early` (by the
/// scheduler), `sweep_ended`, or the error of an errored trial. `None` while it runs.
pub fn stop_reason(status: TrialStatus, error: Option<&str>) -> Option<String> {
    Some(match status {
        TrialStatus::Terminated(EndReason::Completed) => "completed".into(),
        TrialStatus::Terminated(EndReason::StoppedEarly) => "stopped_early".into(),
        TrialStatus::Terminated(EndReason::SweepEnded) => "sweep_ended".into(),
        TrialStatus::Errored => error.unwrap_or("errored").into(),
        TrialStatus::Pending | TrialStatus::Running | TrialStatus::Paused => return None,
    })
}

/// A metric, param or tag name as MLflow accepts it: letters, digits, `_ - . : /` and spaces;
/// anything else becomes `_`, and a name MLflow would read as a path (`/x`, `a//b`, `..`) has its
/// slashes replaced too. At most 250 characters.
pub fn mlflow_key(name: &str) -> String {
    let mut key: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | ':' | '/') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_KEY_CHARS)
        .collect();
    let path_like = key.starts_with('/')
        || key.ends_with('/')
        || key.contains("//")
        || key.split('/').any(|part| part == "." || part == "..");
    if path_like {
        key = key.replace('/', "_");
    }
    if key.is_empty() || key == "." || key.starts_with("..") {
        key.insert(0, '_');
    }
    key
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

/// A float as MLflow's JSON reads it: non-finite values as `"NaN"`, `"Infinity"`, `"-Infinity"`.
fn metric_value(value: f64) -> Value {
    match serde_json::Number::from_f64(value) {
        Some(number) => Value::Number(number),
        None if value.is_nan() => Value::from("NaN"),
        None if value > 0.0 => Value::from("Infinity"),
        None => Value::from("-Infinity"),
    }
}

/// Milliseconds since the Unix epoch (MLflow's timestamps).
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

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

/// One change to mirror: what the driver's hook queues. Owned and small.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A trial was created or changed status (or errored). `config` comes with its first update.
    Trial {
        /// The trial.
        trial: TrialId,
        /// Its status now.
        status: TrialStatus,
        /// Why it errored.
        error: Option<String>,
        /// Its configuration, on the first update of the trial.
        config: Option<Config>,
        /// When (wall clock, ms).
        at_ms: i64,
    },
    /// A report.
    Report {
        /// The trial.
        trial: TrialId,
        /// Its step.
        step: u64,
        /// Its metrics.
        metrics: Metrics,
        /// When it was committed (wall clock, ms).
        at_ms: i64,
    },
    /// A trial continues with a new configuration (PBT).
    Config {
        /// The trial.
        trial: TrialId,
        /// Its new configuration.
        config: Config,
    },
    /// The sweep ended.
    Finished {
        /// Why.
        cause: EndCause,
        /// When (wall clock, ms).
        at_ms: i64,
    },
}

impl Update {
    /// The trial the update is about (`None` for the end of the sweep).
    pub fn trial(&self) -> Option<TrialId> {
        match self {
            Update::Trial { trial, .. } | Update::Report { trial, .. } | Update::Config { trial, .. } => Some(*trial),
            Update::Finished { .. } => None,
        }
    }

    /// How many metric points, params and tags it turns into, about: what it weighs in the
    /// backlog.
    fn weight(&self) -> usize {
        match self {
            Update::Report { metrics, .. } => metrics.len().max(1),
            _ => 1,
        }
    }
}

/// Turns committed records into [`Update`]s, skipping what MLflow does not need: checkpoints,
/// and trial rows whose status and error did not change (a trial's row changes with every
/// report; its last report and best value reach MLflow as metrics).
#[derive(Debug, Default)]
pub struct Converter {
    seen: HashMap<TrialId, (TrialStatus, bool)>,
}

impl Converter {
    /// Appends the updates of `records`, committed at `at_ms`, to `out`.
    pub fn convert(&mut self, records: &[Record], at_ms: i64, out: &mut Vec<Update>) {
        for record in records {
            match record {
                Record::Trial(row) => {
                    let state = (row.status, row.error.is_some());
                    let first = match self.seen.insert(row.id, state) {
                        Some(previous) if previous == state => continue,
                        Some(_) => false,
                        None => true,
                    };
                    out.push(Update::Trial {
                        trial: row.id,
                        status: row.status,
                        error: row.error.clone(),
                        config: first.then(|| row.config.clone()),
                        at_ms,
                    });
                }
                Record::Report { trial, report } => out.push(Update::Report {
                    trial: *trial,
                    step: report.step,
                    metrics: report.metrics.clone(),
                    at_ms,
                }),
                Record::TrialConfig { trial, config } => out.push(Update::Config {
                    trial: *trial,
                    config: config.clone(),
                }),
                Record::ExperimentFinished { cause } => out.push(Update::Finished { cause: *cause, at_ms }),
                Record::Checkpoint { .. } | Record::CheckpointDeleted { .. } => {}
            }
        }
    }
}

/// One metric point waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    key: String,
    value: f64,
    timestamp: i64,
    step: i64,
}

/// What is known about one MLflow run and what it still has to receive.
#[derive(Debug, Default)]
struct RunState {
    run_id: Option<String>,
    start_ms: i64,
    params: VecDeque<(String, String)>,
    /// The config's params were queued (or the run already had them).
    params_done: bool,
    tags: BTreeMap<String, String>,
    metrics: VecDeque<Point>,
    /// The status to set, and when it changed.
    status: Option<(RunStatus, i64)>,
    status_sent: Option<RunStatus>,
    /// The trial's rung status, as last seen.
    rung_status: Option<TrialStatus>,
    /// MLflow refused to create the run: what comes for it is discarded (and counted).
    abandoned: bool,
}

impl RunState {
    fn has_log_items(&self) -> bool {
        !(self.params.is_empty() && self.tags.is_empty() && self.metrics.is_empty())
    }

    fn pending(&self) -> usize {
        self.params.len() + self.tags.len() + self.metrics.len() + usize::from(self.status.is_some())
    }

    fn discard(&mut self) -> usize {
        let count = self.pending();
        self.params.clear();
        self.tags.clear();
        self.metrics.clear();
        self.status = None;
        count
    }

    fn want_status(&mut self, status: RunStatus, at_ms: i64) {
        self.status = (self.status_sent != Some(status)).then_some((status, at_ms));
    }
}

/// A run of the plan: the sweep's parent run or a trial's child run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Parent,
    Trial(TrialId),
}

/// One REST call the plan wants made.
#[derive(Debug, Clone, PartialEq)]
enum Request {
    /// `runs/create` for a trial's child run.
    CreateRun { trial: TrialId, body: Value },
    /// `runs/log-batch` with the first `metrics` points and `params` params of the run and the
    /// tags listed.
    LogBatch {
        target: Target,
        metrics: usize,
        params: usize,
        tags: Vec<(String, String)>,
        body: Value,
    },
    /// `runs/update`.
    UpdateRun {
        target: Target,
        status: RunStatus,
        body: Value,
    },
}

impl Request {
    fn endpoint(&self) -> &'static str {
        match self {
            Request::CreateRun { .. } => "runs/create",
            Request::LogBatch { .. } => "runs/log-batch",
            Request::UpdateRun { .. } => "runs/update",
        }
    }

    fn body(&self) -> &Value {
        match self {
            Request::CreateRun { body, .. } | Request::LogBatch { body, .. } | Request::UpdateRun { body, .. } => body,
        }
    }
}

/// What still has to reach MLflow, and the runs it goes to. Free of I/O: the worker asks it for
/// the next request ([`Plan::next_request`]), makes it, and tells it how that went
/// ([`Plan::complete`] or [`Plan::reject`]).
#[derive(Debug)]
struct Plan {
    parent: RunState,
    children: BTreeMap<TrialId, RunState>,
    /// Runs with something to send (or to create).
    dirty: BTreeSet<Target>,
    rung_experiment: String,
    sweep_id: String,
}

impl Plan {
    fn new(rung_experiment: &str, sweep_id: &str) -> Self {
        Plan {
            parent: RunState::default(),
            children: BTreeMap::new(),
            dirty: BTreeSet::new(),
            rung_experiment: rung_experiment.to_owned(),
            sweep_id: sweep_id.to_owned(),
        }
    }

    fn run(&self, target: Target) -> Option<&RunState> {
        match target {
            Target::Parent => Some(&self.parent),
            Target::Trial(trial) => self.children.get(&trial),
        }
    }

    fn run_mut(&mut self, target: Target) -> &mut RunState {
        match target {
            Target::Parent => &mut self.parent,
            Target::Trial(trial) => self.children.entry(trial).or_default(),
        }
    }

    /// Metric points, params, tags and status changes waiting.
    fn pending(&self) -> usize {
        self.dirty
            .iter()
            .filter_map(|target| self.run(*target))
            .map(RunState::pending)
            .sum()
    }

    fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// Takes in one update; returns how many items were discarded because MLflow refused the
    /// trial's run.
    fn apply(&mut self, update: Update) -> usize {
        let Some(trial) = update.trial() else {
            return 0;
        };
        let run = self.children.entry(trial).or_default();
        if run.abandoned {
            return update.weight();
        }
        match update {
            Update::Trial {
                status,
                error,
                config,
                at_ms,
                ..
            } => {
                if run.start_ms == 0 {
                    run.start_ms = at_ms;
                }
                if let Some(config) = config
                    && !run.params_done
                {
                    run.params_done = true;
                    run.params.extend(config.flatten().into_iter().map(|(name, value)| {
                        (mlflow_key(&name), truncate(&value_to_arg(value), MAX_PARAM_VALUE_CHARS))
                    }));
                }
                run.tags.insert("rung.status".into(), status.label().into());
                if let Some(reason) = stop_reason(status, error.as_deref()) {
                    run.tags
                        .insert("rung.stop_reason".into(), truncate(&reason, MAX_TAG_VALUE_CHARS));
                }
                if let Some(error) = &error {
                    run.tags
                        .insert("rung.error".into(), truncate(error, MAX_TAG_VALUE_CHARS));
                }
                run.rung_status = Some(status);
                run.want_status(run_status(status), at_ms);
            }
            Update::Report {
                step, metrics, at_ms, ..
            } => {
                if run.start_ms == 0 {
                    run.start_ms = at_ms;
                }
                let step = i64::try_from(step).unwrap_or(i64::MAX);
                run.metrics.extend(metrics.iter().map(|(name, value)| Point {
                    key: mlflow_key(name),
                    value: *value,
                    timestamp: at_ms,
                    step,
                }));
            }
            Update::Config { config, .. } => {
                run.tags
                    .insert("rung.config".into(), truncate(&config.to_json(), MAX_TAG_VALUE_CHARS));
            }
            Update::Finished { .. } => unreachable!("has no trial"),
        }
        self.dirty.insert(Target::Trial(trial));
        0
    }

    /// The next call to make, if any: a child run to create, then batches of metrics, params and
    /// tags, then status changes (after the run's last metrics).
    fn next_request(&self) -> Option<Request> {
        let parent_id = self.parent.run_id.as_deref()?;
        for &target in &self.dirty {
            let Some(run) = self.run(target) else { continue };
            if run.abandoned || run.pending() == 0 {
                continue;
            }
            let Some(run_id) = run.run_id.as_deref() else {
                let Target::Trial(trial) = target else { continue };
                return Some(self.create_run(trial, run, parent_id));
            };
            if run.has_log_items() {
                return Some(log_batch(target, run_id, run));
            }
            if let Some((status, at_ms)) = run.status {
                let mut body = json!({"run_id": run_id, "status": status.as_str()});
                if status != RunStatus::Running {
                    body["end_time"] = json!(at_ms);
                }
                return Some(Request::UpdateRun { target, status, body });
            }
        }
        None
    }

    fn create_run(&self, trial: TrialId, run: &RunState, parent_id: &str) -> Request {
        let name = trial.to_string();
        let tags = [
            ("mlflow.parentRunId", parent_id),
            ("mlflow.runName", name.as_str()),
            ("rung.experiment", self.rung_experiment.as_str()),
            ("rung.sweep_id", self.sweep_id.as_str()),
            ("rung.role", "trial"),
            ("rung.trial", name.as_str()),
        ];
        Request::CreateRun {
            trial,
            body: json!({
                "experiment_id": Value::Null,
                "run_name": name,
                "start_time": if run.start_ms > 0 { run.start_ms } else { wall_ms() },
                "tags": tags.iter().map(|(key, value)| json!({"key": key, "value": value})).collect::<Vec<_>>(),
            }),
        }
    }

    /// Takes in a successful answer to `request`.
    fn complete(&mut self, request: &Request, answer: &Value) -> std::result::Result<(), String> {
        let target = match request {
            Request::CreateRun { trial, .. } => {
                let run_id = answer
                    .pointer("/run/info/run_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("runs/create answered without a run id: {answer}"))?;
                let run = self.run_mut(Target::Trial(*trial));
                run.run_id = Some(run_id.to_owned());
                run.status_sent = Some(RunStatus::Running);
                if let Some((status, at_ms)) = run.status {
                    run.want_status(status, at_ms);
                }
                Target::Trial(*trial)
            }
            Request::LogBatch {
                target,
                metrics,
                params,
                tags,
                ..
            } => {
                let run = self.run_mut(*target);
                run.metrics.drain(..*metrics);
                run.params.drain(..*params);
                for (key, value) in tags {
                    if run.tags.get(key) == Some(value) {
                        run.tags.remove(key);
                    }
                }
                *target
            }
            Request::UpdateRun { target, status, .. } => {
                let run = self.run_mut(*target);
                run.status_sent = Some(*status);
                if run.status.is_some_and(|(wanted, _)| wanted == *status) {
                    run.status = None;
                }
                *target
            }
        };
        self.tidy(target);
        Ok(())
    }

    /// MLflow refused `request` for good: drops what it carried. Returns how many items that was.
    fn reject(&mut self, request: &Request) -> usize {
        let (target, dropped) = match request {
            Request::CreateRun { trial, .. } => {
                let run = self.run_mut(Target::Trial(*trial));
                run.abandoned = true;
                (Target::Trial(*trial), run.discard())
            }
            Request::LogBatch {
                target,
                metrics,
                params,
                tags,
                ..
            } => {
                let run = self.run_mut(*target);
                run.metrics.drain(..*metrics);
                run.params.drain(..*params);
                for (key, _) in tags {
                    run.tags.remove(key);
                }
                (*target, metrics + params + tags.len())
            }
            Request::UpdateRun { target, .. } => {
                self.run_mut(*target).status = None;
                (*target, 1)
            }
        };
        self.tidy(target);
        dropped
    }

    fn tidy(&mut self, target: Target) {
        if self.run(target).is_none_or(|run| run.pending() == 0) {
            self.dirty.remove(&target);
        }
    }
}

/// The first metrics, params and tags of `run` that fit in one `log-batch` call.
fn log_batch(target: Target, run_id: &str, run: &RunState) -> Request {
    let mut bytes = 64 + run_id.len();
    let mut total = 0;
    let mut fits = |size: usize, total: &mut usize| {
        if *total >= MAX_ENTITIES_PER_BATCH || (*total > 0 && bytes + size > MAX_BATCH_BYTES) {
            return false;
        }
        bytes += size;
        *total += 1;
        true
    };
    let mut metrics = Vec::new();
    for point in run.metrics.iter().take(MAX_METRICS_PER_BATCH) {
        if !fits(point.key.len() + 96, &mut total) {
            break;
        }
        metrics.push(json!({
            "key": point.key,
            "value": metric_value(point.value),
            "timestamp": point.timestamp,
            "step": point.step,
        }));
    }
    let mut params = Vec::new();
    for (key, value) in run.params.iter().take(MAX_PARAMS_PER_BATCH) {
        if !fits(key.len() + value.len() * 2 + 32, &mut total) {
            break;
        }
        params.push(json!({"key": key, "value": value}));
    }
    let mut tags = Vec::new();
    for (key, value) in run.tags.iter().take(MAX_TAGS_PER_BATCH) {
        if !fits(key.len() + value.len() * 2 + 32, &mut total) {
            break;
        }
        tags.push((key.clone(), value.clone()));
    }
    let body = json!({
        "run_id": run_id,
        "metrics": metrics,
        "params": params,
        "tags": tags.iter().map(|(key, value)| json!({"key": key, "value": value})).collect::<Vec<_>>(),
    });
    Request::LogBatch {
        target,
        metrics: metrics.len(),
        params: params.len(),
        tags,
        body,
    }
}

/// The queue between the driver's hook and the tracking thread.
#[derive(Debug)]
struct Queue {
    items: VecDeque<(u64, Update)>,
    /// Sum of the items' weights.
    weight: usize,
    capacity: usize,
    next_seq: u64,
    /// Trials whose updates are not queued but read back from the store later, with the
    /// sequence number from which on they were diverted.
    diverted: BTreeMap<TrialId, u64>,
    /// Updates diverted so far.
    diverted_updates: u64,
    /// `finish()` was called: send everything, then end, by this deadline.
    closing: Option<Instant>,
    /// Tracking gave up (MLflow refused the sweep's run): updates are not kept.
    disabled: bool,
    /// What the worker still held, as it last said.
    worker_pending: usize,
}

impl Queue {
    fn new(capacity: usize) -> Self {
        Queue {
            items: VecDeque::new(),
            weight: 0,
            capacity,
            next_seq: 0,
            diverted: BTreeMap::new(),
            diverted_updates: 0,
            closing: None,
            disabled: false,
            worker_pending: 0,
        }
    }

    /// Queues an update, or diverts its trial when the queue is full. The end of the sweep is
    /// always queued.
    fn push(&mut self, update: Update) {
        if let Some(trial) = update.trial() {
            if self.diverted.contains_key(&trial) {
                self.diverted_updates += 1;
                return;
            }
            if self.weight + update.weight() > self.capacity {
                self.diverted.insert(trial, self.next_seq);
                self.diverted_updates += 1;
                return;
            }
        }
        self.weight += update.weight();
        self.items.push_back((self.next_seq, update));
        self.next_seq += 1;
    }

    fn take(&mut self, most: usize) -> Vec<(u64, Update)> {
        let count = most.min(self.items.len());
        let taken: Vec<_> = self.items.drain(..count).collect();
        self.weight -= taken.iter().map(|(_, update)| update.weight()).sum::<usize>();
        taken
    }
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How an MLflow call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// No answer, or a 5xx / 429 one: try again later.
    Unreachable(String),
    /// A 4xx answer: MLflow refuses the request; sending it again would not help.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// MLflow's `error_code` (`RESOURCE_DOES_NOT_EXIST`, ...), or empty.
        code: String,
        /// What MLflow said.
        message: String,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) => f.write_str(why),
            CallError::Rejected { status, code, message } => write!(f, "HTTP {status} {code}: {message}"),
        }
    }
}

/// The HTTP method of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET, with the body's fields as the query.
    Get,
    /// POST, with the body as JSON.
    Post,
}

/// MLflow's REST API: one call at a time, blocking. `endpoint` is the part after
/// `/api/2.0/mlflow/`, e.g. `runs/log-batch`.
pub trait Api: Send + 'static {
    /// Makes the call and returns the answer's JSON (`null` when it has none).
    fn call(&mut self, method: Method, endpoint: &str, body: &Value) -> std::result::Result<Value, CallError>;
}

/// [`Api`] over HTTP with reqwest, on a small runtime of the tracking thread's own.
struct Http {
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    token: Option<String>,
    basic: Option<(String, String)>,
}

impl Http {
    fn new(uri: &str) -> Result<Http> {
        // reqwest is built without a default TLS provider; this one serves https:// servers.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("rung/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| Error::Client(error.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        Ok(Http {
            base: uri.trim().trim_end_matches('/').to_owned(),
            client,
            runtime,
            token: env("MLFLOW_TRACKING_TOKEN"),
            basic: env("MLFLOW_TRACKING_USERNAME")
                .map(|user| (user, env("MLFLOW_TRACKING_PASSWORD").unwrap_or_default())),
        })
    }
}

/// Says `message` once: through `tracing` where a subscriber shows warnings (the CLI, a server),
/// else on stderr (a library or the Python bindings without one).
fn warn(message: &str) {
    if tracing::enabled!(tracing::Level::WARN) {
        tracing::warn!("{message}");
    } else {
        eprintln!("warning: {message}");
    }
}

/// What went wrong with a request, causes included but without reqwest's outer "error sending
/// request for url (...)" (the URL is named elsewhere), e.g. `client error (Connect): tcp connect
/// error: Connection refused (os error 111)`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut source = error.source();
    let mut text = match source {
        Some(first) => {
            source = first.source();
            first.to_string()
        }
        None => error.to_string(),
    };
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl Api for Http {
    fn call(&mut self, method: Method, endpoint: &str, body: &Value) -> std::result::Result<Value, CallError> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let mut request = match method {
            Method::Get => {
                let query: Vec<(String, String)> = body
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(key, value)| {
                        (
                            key.clone(),
                            value.as_str().map_or_else(|| value.to_string(), str::to_owned),
                        )
                    })
                    .collect();
                let url = reqwest::Url::parse_with_params(&url, &query)
                    .map_err(|error| CallError::Unreachable(format!("bad URL {url}: {error}")))?;
                self.client.get(url)
            }
            Method::Post => self.client.post(&url).json(body),
        };
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        } else if let Some((user, password)) = &self.basic {
            request = request.basic_auth(user, Some(password));
        }
        self.runtime.block_on(async move {
            let response = request
                .send()
                .await
                .map_err(|error| CallError::Unreachable(error_chain(&error)))?;
            let status = response.status();
            let bytes = response
                .bytes()
                .await
                .map_err(|error| CallError::Unreachable(error_chain(&error)))?;
            let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(parsed);
            }
            let snippet = || truncate(String::from_utf8_lossy(&bytes).trim(), 300);
            if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
                return Err(CallError::Unreachable(format!("HTTP {status}: {}", snippet())));
            }
            Err(CallError::Rejected {
                status: status.as_u16(),
                code: parsed["error_code"].as_str().unwrap_or_default().to_owned(),
                message: parsed["message"].as_str().map_or_else(snippet, str::to_owned),
            })
        })
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
            flush_timeout: tracking
                .flush_timeout_s
                .map_or(DEFAULT_FLUSH_TIMEOUT, Duration::from_secs_f64),
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
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::new(settings.capacity.max(1))),
            wake: Condvar::new(),
        });
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

/// A trial read back from the store: reports of these steps may also come through the queue
/// until `end_seq`, and are sent once.
#[derive(Debug)]
struct Window {
    trial: TrialId,
    end_seq: u64,
    steps: HashMap<u64, Metrics>,
}

fn same_metrics(a: &Metrics, b: &Metrics) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && va.to_bits() == vb.to_bits())
}

/// Why a round stopped.
enum Stop {
    /// MLflow is unreachable: back off and try again.
    Retry(String),
    /// Tracking cannot go on (MLflow refused the sweep's experiment or run).
    Fatal(String),
}

/// The tracking thread.
struct Worker<A: Api> {
    api: A,
    shared: Arc<Shared>,
    settings: TrackerSettings,
    plan: Plan,
    store: Option<Store>,
    experiment_id: Option<String>,
    /// The highest step of each trial that the plan took in (or that MLflow had on resume).
    received_step: HashMap<TrialId, u64>,
    windows: Vec<Window>,
    /// One past the sequence number of the last update taken in.
    processed_seq: u64,
    /// Trials read back whole on resume: their updates queued before this sequence number are
    /// in the store, and are dropped.
    cutoffs: HashMap<TrialId, u64>,
    finished: Option<(EndCause, i64)>,
    /// Children that carry `rung.best = true` (from a resumed sweep).
    tagged_best: BTreeSet<TrialId>,
    finalized: bool,
    failures: u32,
    outage: Option<String>,
    warned_full: bool,
    rejected: u64,
    rejections_shown: u32,
    requests_sent: u64,
}

impl<A: Api> Worker<A> {
    fn new(api: A, shared: Arc<Shared>, settings: TrackerSettings) -> Self {
        Worker {
            api,
            shared,
            plan: Plan::new(&settings.rung_experiment, &settings.sweep_id),
            settings,
            store: None,
            experiment_id: None,
            received_step: HashMap::new(),
            windows: Vec::new(),
            processed_seq: 0,
            cutoffs: HashMap::new(),
            finished: None,
            tagged_best: BTreeSet::new(),
            finalized: false,
            failures: 0,
            outage: None,
            warned_full: false,
            rejected: 0,
            rejections_shown: 0,
            requests_sent: 0,
        }
    }

    fn run(mut self) -> TrackingOutcome {
        let mut last_round = Instant::now();
        let mut eager = true;
        let problem = loop {
            let (closing, queue_empty, diverted) = self.intake();
            if closing.is_some_and(|deadline| Instant::now() >= deadline) {
                break Some(self.outage.clone().unwrap_or_else(|| "the flush timeout passed".into()));
            }
            let since = last_round.elapsed();
            if !eager && closing.is_none() && since < ROUND_INTERVAL {
                // Let reports gather into fuller batches.
                std::thread::sleep(ROUND_INTERVAL - since);
                continue;
            }
            last_round = Instant::now();
            eager = false;
            match self.round() {
                Ok(true) => {
                    eager = true;
                    continue;
                }
                Ok(false) => {}
                Err(Stop::Retry(why)) => {
                    self.note_outage(why);
                    self.back_off();
                    continue;
                }
                Err(Stop::Fatal(why)) => {
                    let message = format!("MLflow at {}: tracking stopped: {why}", self.settings.uri);
                    warn(&message);
                    self.shared.lock().disabled = true;
                    break Some(why);
                }
            }
            if closing.is_some() && queue_empty && diverted == 0 && self.plan.is_empty() {
                if self.finalized {
                    break None;
                }
                match self.finalize() {
                    Ok(()) => self.finalized = true,
                    Err(why) => break Some(why),
                }
                continue;
            }
            if queue_empty && self.plan.is_empty() {
                let queue = self.shared.lock();
                if queue.items.is_empty() && queue.closing.is_none() {
                    let _ = self.shared.wake.wait_timeout(queue, Duration::from_secs(1));
                }
            }
        };
        let mut queue = self.shared.lock();
        let unsent = (queue.weight + self.plan.pending()) as u64
            + if queue.diverted.is_empty() {
                0
            } else {
                queue.diverted_updates
            };
        if queue.disabled {
            queue.items.clear();
            queue.weight = 0;
        }
        drop(queue);
        TrackingOutcome {
            experiment_id: self.experiment_id.clone(),
            parent_run_id: self.plan.parent.run_id.clone(),
            requests_sent: self.requests_sent,
            unsent,
            rejected: self.rejected,
            problem: problem.filter(|_| unsent > 0 || self.plan.parent.run_id.is_none()),
            sweep_finished: self.finished.is_some(),
        }
    }

    /// Takes updates from the queue while the plan has room. Returns the closing deadline, whether
    /// the queue is empty, and how many trials are diverted.
    fn intake(&mut self) -> (Option<Instant>, bool, usize) {
        let room = WORKING_SET.saturating_sub(self.plan.pending());
        let (taken, closing, empty, diverted, full) = {
            let mut queue = self.shared.lock();
            let taken = if room > 0 {
                queue.take(room.min(4096))
            } else {
                Vec::new()
            };
            queue.worker_pending = self.plan.pending() + taken.len();
            let full = !queue.diverted.is_empty();
            (taken, queue.closing, queue.items.is_empty(), queue.diverted.len(), full)
        };
        if full && !self.warned_full {
            self.warned_full = true;
            let message = format!(
                "MLflow at {}: the tracking backlog is full ({} metric points and updates waiting); the trials whose updates do not fit are read back from rung's store once MLflow has caught up (nothing is lost, the sweep goes on)",
                self.settings.uri, self.settings.capacity
            );
            warn(&message);
        }
        for (seq, update) in taken {
            self.take_in(seq, update);
        }
        (closing, empty, diverted)
    }

    fn take_in(&mut self, seq: u64, update: Update) {
        self.processed_seq = seq + 1;
        self.windows.retain(|window| window.end_seq > seq);
        if let Some(trial) = update.trial()
            && self.cutoffs.get(&trial).is_some_and(|cutoff| seq < *cutoff)
        {
            return;
        }
        match update {
            Update::Finished { cause, at_ms } => self.finished = Some((cause, at_ms)),
            Update::Report {
                trial,
                step,
                ref metrics,
                ..
            } => {
                let duplicate = self.windows.iter().any(|window| {
                    window.trial == trial && window.steps.get(&step).is_some_and(|sent| same_metrics(sent, metrics))
                });
                if duplicate {
                    return;
                }
                let seen = self.received_step.entry(trial).or_insert(step);
                *seen = (*seen).max(step);
                self.rejected += self.plan.apply(update) as u64;
            }
            update => self.rejected += self.plan.apply(update) as u64,
        }
    }

    /// One round: set up the runs if needed, send what the plan holds, read diverted trials back.
    /// `Ok(true)` when there is more to do at once.
    fn round(&mut self) -> std::result::Result<bool, Stop> {
        if self.plan.parent.run_id.is_none() {
            self.set_up()?;
        }
        for _ in 0..REQUESTS_PER_ROUND {
            let Some(request) = self.plan.next_request() else {
                return self.read_back();
            };
            let mut body = request.body().clone();
            if let Request::CreateRun { .. } = request {
                body["experiment_id"] = json!(self.experiment_id);
            }
            match self.api.call(Method::Post, request.endpoint(), &body) {
                Ok(answer) => {
                    self.recovered();
                    if let Err(why) = self.plan.complete(&request, &answer) {
                        let dropped = self.plan.reject(&request);
                        self.note_rejection(&why, dropped);
                    }
                }
                Err(CallError::Unreachable(why)) => return Err(Stop::Retry(why)),
                Err(rejected) => {
                    self.recovered();
                    let dropped = self.plan.reject(&request);
                    self.note_rejection(&format!("{} refused: {rejected}", request.endpoint()), dropped);
                }
            }
        }
        Ok(true)
    }

    fn call(&mut self, method: Method, endpoint: &str, body: &Value) -> std::result::Result<Value, Stop> {
        match self.api.call(method, endpoint, body) {
            Ok(answer) => {
                self.recovered();
                Ok(answer)
            }
            Err(CallError::Unreachable(why)) => Err(Stop::Retry(why)),
            Err(rejected) => Err(Stop::Fatal(format!("{endpoint}: {rejected}"))),
        }
    }

    /// Finds or creates the MLflow experiment and the sweep's parent run; on resume, finds the
    /// trials' runs and diverts those that are behind the store.
    fn set_up(&mut self) -> std::result::Result<(), Stop> {
        if self.experiment_id.is_none() {
            self.experiment_id = Some(self.experiment()?);
        }
        let experiment_id = self.experiment_id.clone().unwrap_or_default();
        let filter = format!(
            "tags.`rung.sweep_id` = '{}' AND tags.`rung.role` = 'sweep'",
            self.settings.sweep_id
        );
        let found = self.search(&experiment_id, &filter)?;
        if let Some(parent) = found.first() {
            let run_id = parent
                .pointer("/info/run_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            // The parent is adopted only once its children are known, so that a failed search is
            // tried again rather than leading to duplicate children.
            self.find_children(&experiment_id, &run_id)?;
            self.plan.parent.run_id = Some(run_id);
            self.plan.parent.status_sent = parent
                .pointer("/info/status")
                .and_then(Value::as_str)
                .and_then(RunStatus::parse);
            self.plan.parent.want_status(RunStatus::Running, wall_ms());
            self.plan.parent.tags.insert("rung.status".into(), "running".into());
            self.plan.dirty.insert(Target::Parent);
            return Ok(());
        }
        let tags = [
            ("mlflow.runName", self.settings.rung_experiment.as_str()),
            ("rung.experiment", self.settings.rung_experiment.as_str()),
            ("rung.sweep_id", self.settings.sweep_id.as_str()),
            ("rung.role", "sweep"),
            ("rung.store", &self.settings.store.to_string_lossy()),
            ("rung.status", "running"),
        ]
        .map(|(key, value)| json!({"key": key, "value": truncate(value, MAX_TAG_VALUE_CHARS)}));
        let answer = self.call(
            Method::Post,
            "runs/create",
            &json!({
                "experiment_id": experiment_id,
                "run_name": self.settings.rung_experiment,
                "start_time": self.settings.created_ms,
                "tags": tags,
            }),
        )?;
        let run_id = answer
            .pointer("/run/info/run_id")
            .and_then(Value::as_str)
            .ok_or_else(|| Stop::Fatal(format!("runs/create answered without a run id: {answer}")))?;
        // Whatever the store had before the parent run existed (all of a resumed sweep's first
        // sessions, when MLflow was unreachable then) is read back from it.
        let run_id = run_id.to_owned();
        self.divert_behind(&HashMap::new())?;
        self.plan.parent.run_id = Some(run_id);
        self.plan.parent.status_sent = Some(RunStatus::Running);
        self.plan.parent.params.extend(
            self.settings
                .parent_params
                .iter()
                .map(|(key, value)| (mlflow_key(key), truncate(value, MAX_PARAM_VALUE_CHARS))),
        );
        self.plan.dirty.insert(Target::Parent);
        Ok(())
    }

    fn experiment(&mut self) -> std::result::Result<String, Stop> {
        let name = self.settings.mlflow_experiment.clone();
        for _ in 0..2 {
            match self.api.call(
                Method::Get,
                "experiments/get-by-name",
                &json!({"experiment_name": name}),
            ) {
                Ok(answer) => {
                    self.recovered();
                    if answer.pointer("/experiment/lifecycle_stage").and_then(Value::as_str) == Some("deleted") {
                        return Err(Stop::Fatal(format!(
                            "the MLflow experiment \"{name}\" is deleted: restore it, or name another with [tracking] experiment"
                        )));
                    }
                    return answer
                        .pointer("/experiment/experiment_id")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| Stop::Fatal(format!("experiments/get-by-name answered {answer}")));
                }
                Err(CallError::Rejected { code, .. }) if code == "RESOURCE_DOES_NOT_EXIST" => {}
                Err(CallError::Unreachable(why)) => return Err(Stop::Retry(why)),
                Err(rejected) => return Err(Stop::Fatal(format!("experiments/get-by-name: {rejected}"))),
            }
            match self
                .api
                .call(Method::Post, "experiments/create", &json!({"name": name}))
            {
                Ok(answer) => {
                    self.recovered();
                    if let Some(id) = answer["experiment_id"].as_str() {
                        return Ok(id.to_owned());
                    }
                    return Err(Stop::Fatal(format!("experiments/create answered {answer}")));
                }
                // Someone else created it meanwhile: look it up again.
                Err(CallError::Rejected { code, .. }) if code == "RESOURCE_ALREADY_EXISTS" => {}
                Err(CallError::Unreachable(why)) => return Err(Stop::Retry(why)),
                Err(rejected) => return Err(Stop::Fatal(format!("experiments/create: {rejected}"))),
            }
        }
        Err(Stop::Fatal(format!(
            "cannot find or create the MLflow experiment \"{name}\""
        )))
    }

    /// Every active run of the experiment that matches `filter`, following the pages.
    fn search(&mut self, experiment_id: &str, filter: &str) -> std::result::Result<Vec<Value>, Stop> {
        let mut runs = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut body = json!({
                "experiment_ids": [experiment_id],
                "filter": filter,
                "run_view_type": "ACTIVE_ONLY",
                "max_results": 1000,
            });
            if let Some(token) = &page_token {
                body["page_token"] = json!(token);
            }
            let answer = self.call(Method::Post, "runs/search", &body)?;
            runs.extend(answer["runs"].as_array().cloned().unwrap_or_default());
            match answer["next_page_token"].as_str().filter(|token| !token.is_empty()) {
                Some(token) => page_token = Some(token.to_owned()),
                None => return Ok(runs),
            }
        }
    }

    /// On resume: takes in the trials' existing runs, and diverts every trial whose run is behind
    /// the store (its status, or its last step) so that it is read back.
    fn find_children(&mut self, experiment_id: &str, parent_id: &str) -> std::result::Result<(), Stop> {
        let filter = format!("tags.`mlflow.parentRunId` = '{parent_id}'");
        let runs = self.search(experiment_id, &filter)?;
        let metric_key = mlflow_key(&self.settings.metric);
        let mut mirrored: HashMap<TrialId, (Option<String>, Option<u64>)> = HashMap::new();
        for run in &runs {
            let tag = |key: &str| {
                run.pointer("/data/tags")
                    .and_then(Value::as_array)
                    .and_then(|tags| tags.iter().find(|tag| tag["key"] == key))
                    .and_then(|tag| tag["value"].as_str())
                    .map(str::to_owned)
            };
            let Some(trial) = tag("rung.trial").and_then(|name| name.strip_prefix('t')?.parse().ok()) else {
                continue;
            };
            let trial = TrialId(trial);
            let last_step = run
                .pointer("/data/metrics")
                .and_then(Value::as_array)
                .and_then(|metrics| metrics.iter().find(|metric| metric["key"] == metric_key.as_str()))
                .and_then(|metric| {
                    metric["step"]
                        .as_u64()
                        .or_else(|| metric["step"].as_str()?.parse().ok())
                });
            if tag("rung.best").as_deref() == Some("true") {
                self.tagged_best.insert(trial);
            }
            let state = self.plan.children.entry(trial).or_default();
            state.run_id = run.pointer("/info/run_id").and_then(Value::as_str).map(str::to_owned);
            state.status_sent = run
                .pointer("/info/status")
                .and_then(Value::as_str)
                .and_then(RunStatus::parse);
            // The run has its params: sending them again could only clash (PBT changes configs).
            state.params_done = true;
            state.params.clear();
            if let Some((status, at_ms)) = state.status {
                state.want_status(status, at_ms);
            }
            mirrored.insert(trial, (tag("rung.status"), last_step));
        }
        self.divert_behind(&mirrored)
    }

    /// Diverts every trial of the store whose run is behind it (its status, or its last step of
    /// the metric, by `mirrored`; a trial without a run is behind), so that it is read back.
    fn divert_behind(
        &mut self,
        mirrored: &HashMap<TrialId, (Option<String>, Option<u64>)>,
    ) -> std::result::Result<(), Stop> {
        let trials = self.read_store(|store, experiment| store.trials(experiment))?;
        let behind: Vec<TrialId> = trials
            .iter()
            .filter(|trial| match mirrored.get(&trial.id) {
                Some((status, last_step)) => {
                    status.as_deref() != Some(trial.status.label())
                        || trial.last.as_ref().map(|report| report.step) > *last_step
                }
                None => true,
            })
            .map(|trial| trial.id)
            .collect();
        // A trial behind the store is read back whole: from MLflow's last step on, with its
        // current row. What this session took in of it so far (nothing of it was sent: there
        // was no parent run) is in the store too, so it is dropped here, and so are its updates
        // still queued.
        let mut queue = self.shared.lock();
        for trial in behind {
            queue.diverted.insert(trial, 0);
            self.cutoffs.insert(trial, queue.next_seq);
            match mirrored.get(&trial).and_then(|(_, step)| *step) {
                Some(step) => self.received_step.insert(trial, step),
                None => self.received_step.remove(&trial),
            };
            if let Some(state) = self.plan.children.get_mut(&trial) {
                state.discard();
                if state.run_id.is_none() {
                    state.params_done = false;
                }
            }
        }
        Ok(())
    }

    fn read_store<T>(
        &mut self,
        read: impl FnOnce(&Store, i64) -> tune_runtime::Result<T>,
    ) -> std::result::Result<T, Stop> {
        if self.store.is_none() {
            let store = Store::open(&self.settings.store)
                .map_err(|error| Stop::Fatal(format!("cannot read rung's store: {error}")))?;
            self.store = Some(store);
        }
        let store = self.store.as_ref().expect("opened above");
        read(store, self.settings.experiment_id).map_err(|error| Stop::Fatal(format!("reading rung's store: {error}")))
    }

    /// Reads diverted trials back from the store, once everything before their diversion has
    /// been taken in and the plan has room. `Ok(true)` when it read some.
    fn read_back(&mut self) -> std::result::Result<bool, Stop> {
        if self.plan.pending() >= WORKING_SET / 2 {
            return Ok(false);
        }
        let chunk: Vec<TrialId> = {
            let mut queue = self.shared.lock();
            let ready: Vec<TrialId> = queue
                .diverted
                .iter()
                .filter(|(_, since)| **since <= self.processed_seq)
                .map(|(trial, _)| *trial)
                .take(RESYNC_CHUNK)
                .collect();
            for trial in &ready {
                queue.diverted.remove(trial);
            }
            if queue.diverted.is_empty() {
                queue.diverted_updates = 0;
            }
            ready
        };
        if chunk.is_empty() {
            return Ok(false);
        }
        let trials = self.read_store(|store, experiment| store.trials(experiment))?;
        let by_id: HashMap<TrialId, &StoredTrial> = trials.iter().map(|trial| (trial.id, trial)).collect();
        let now = wall_ms();
        for trial in chunk {
            let reports = self.read_store(|store, experiment| store.reports(experiment, Some(trial)))?;
            let Some(row) = by_id.get(&trial) else { continue };
            self.plan.apply(Update::Trial {
                trial,
                status: row.status,
                error: row.error.clone(),
                config: Some(row.config.clone()),
                at_ms: now,
            });
            let already = self.received_step.get(&trial).copied();
            let mut steps = HashMap::new();
            for (_, report) in reports {
                if already.is_some_and(|step| report.step <= step) {
                    continue;
                }
                steps.insert(report.step, report.metrics.clone());
                self.plan.apply(Update::Report {
                    trial,
                    step: report.step,
                    metrics: report.metrics,
                    at_ms: now,
                });
            }
            if let Some(last) = steps.keys().max() {
                self.received_step
                    .insert(trial, already.map_or(*last, |step| step.max(*last)));
            }
            let end_seq = self.shared.lock().next_seq;
            self.windows.push(Window { trial, end_seq, steps });
        }
        Ok(true)
    }

    /// At the end: tags the best trial, ends the parent run and the runs of trials that did not
    /// end (an interrupted sweep).
    fn finalize(&mut self) -> std::result::Result<(), String> {
        let now = wall_ms();
        let cause = self.finished.map(|(cause, _)| cause);
        let end_ms = self.finished.map_or(now, |(_, at_ms)| at_ms);
        if cause.is_some() {
            let trials = self
                .read_store(|store, experiment| store.trials(experiment))
                .map_err(|stop| match stop {
                    Stop::Retry(why) | Stop::Fatal(why) => why,
                })?;
            if let Some(best) = tune_core::controller::best_trial(&trials, self.settings.mode)
                && let Some((value, step)) = best.best
            {
                let parent = &mut self.plan.parent;
                parent.tags.insert("rung.best_trial".into(), best.id.to_string());
                parent.tags.insert("rung.best_step".into(), step.to_string());
                parent.tags.insert(
                    format!("rung.best_{}", mlflow_key(&self.settings.metric)),
                    value.to_string(),
                );
                parent.metrics.push_back(Point {
                    key: mlflow_key(&format!("best_{}", self.settings.metric)),
                    value,
                    timestamp: end_ms,
                    step: i64::try_from(step).unwrap_or(i64::MAX),
                });
                for trial in std::mem::take(&mut self.tagged_best) {
                    if trial != best.id {
                        self.plan
                            .run_mut(Target::Trial(trial))
                            .tags
                            .insert("rung.best".into(), "false".into());
                        self.plan.dirty.insert(Target::Trial(trial));
                    }
                }
                self.plan
                    .run_mut(Target::Trial(best.id))
                    .tags
                    .insert("rung.best".into(), "true".into());
                self.plan.dirty.insert(Target::Trial(best.id));
            }
        } else {
            for (trial, run) in &mut self.plan.children {
                if run.rung_status.is_some_and(|status| !status.is_final()) && run.run_id.is_some() {
                    run.want_status(RunStatus::Killed, now);
                    if run.status.is_some() {
                        self.plan.dirty.insert(Target::Trial(*trial));
                    }
                }
            }
        }
        let parent = &mut self.plan.parent;
        parent.tags.insert(
            "rung.status".into(),
            cause.map_or("interrupted", |_| "finished").to_owned(),
        );
        if let Some(cause) = cause {
            parent.tags.insert("rung.end_cause".into(), cause.label().into());
        }
        parent.want_status(sweep_status(cause), end_ms);
        self.plan.dirty.insert(Target::Parent);
        Ok(())
    }

    fn note_outage(&mut self, why: String) {
        self.failures = self.failures.saturating_add(1);
        if self.outage.is_none() {
            let message = format!(
                "MLflow at {} is unreachable ({why}); rung keeps the updates and retries (the sweep goes on)",
                self.settings.uri
            );
            warn(&message);
        }
        self.outage = Some(why);
    }

    fn recovered(&mut self) {
        self.requests_sent += 1;
        self.failures = 0;
        if self.outage.take().is_some() {
            eprintln!(
                "[rung] MLflow at {} is reachable again; sending the backlog",
                self.settings.uri
            );
        }
    }

    fn note_rejection(&mut self, why: &str, dropped: usize) {
        self.rejected += dropped as u64;
        self.rejections_shown += 1;
        if self.rejections_shown <= 5 {
            let message = format!(
                "MLflow at {}: {why} ({dropped} metric points, params or tags not logged; rung's store has them)",
                self.settings.uri
            );
            warn(&message);
        }
    }

    /// Waits before the next try, or until `finish()` is called.
    fn back_off(&self) {
        let mut wait = backoff(self.failures);
        let queue = self.shared.lock();
        if let Some(deadline) = queue.closing {
            wait = wait.min(deadline.saturating_duration_since(Instant::now()));
            drop(queue);
            std::thread::sleep(wait);
            return;
        }
        let _ = self
            .shared
            .wake
            .wait_timeout_while(queue, wait, |queue| queue.closing.is_none());
    }
}

/// How long to wait after `failures` failed calls in a row: 0.5 s, doubling, at most 30 s.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tune_core::controller::TrialRow;
    use tune_core::trial::Report;
    use tune_runtime::store::{Batch, LoggedEvent};

    fn config(lr: f64) -> Config {
        serde_json::from_value(json!({"lr": lr, "model": {"act": "relu", "width": 4}})).unwrap()
    }

    fn row(id: u64, status: TrialStatus) -> TrialRow {
        TrialRow {
            id: TrialId(id),
            status,
            config: config(0.01 * id as f64),
            failures: 0,
            launches: 1,
            last: None,
            best: None,
            error: None,
        }
    }

    fn report(id: u64, step: u64, loss: f64) -> Record {
        Record::Report {
            trial: TrialId(id),
            report: Report {
                step,
                metrics: Metrics::from([("loss".to_owned(), loss), ("acc/top 1".to_owned(), 1.0 - loss)]),
            },
        }
    }

    #[test]
    fn uris_that_are_not_http_urls_are_refused_with_a_reason() {
        check_mlflow_uri("http://127.0.0.1:5000").unwrap();
        check_mlflow_uri("https://mlflow.example.com/prefix/").unwrap();
        for (uri, expected) in [
            ("localhost:5000", "not an http:// or https:// URL"),
            ("127.0.0.1:5000", "is not a URL"),
            ("databricks", "is not a URL"),
            ("file:///tmp/mlruns", "not an http:// or https:// URL"),
            ("http://", "is not a URL"),
            ("http://host:5000/?x=1", "query"),
            ("http://me:secret@host:5000", "MLFLOW_TRACKING_USERNAME"),
        ] {
            let error = check_mlflow_uri(uri).unwrap_err();
            assert!(error.contains(expected), "{uri}: {error}");
        }
    }

    #[test]
    fn statuses_map_to_mlflow() {
        use EndReason::*;
        assert_eq!(run_status(TrialStatus::Pending), RunStatus::Running);
        assert_eq!(run_status(TrialStatus::Paused), RunStatus::Running);
        assert_eq!(run_status(TrialStatus::Terminated(Completed)), RunStatus::Finished);
        assert_eq!(run_status(TrialStatus::Terminated(StoppedEarly)), RunStatus::Finished);
        assert_eq!(run_status(TrialStatus::Terminated(SweepEnded)), RunStatus::Killed);
        assert_eq!(run_status(TrialStatus::Errored), RunStatus::Failed);
        assert_eq!(sweep_status(None), RunStatus::Killed);
        assert_eq!(sweep_status(Some(EndCause::AllTrialsDone)), RunStatus::Finished);
        assert_eq!(sweep_status(Some(EndCause::TargetReached)), RunStatus::Finished);
        assert_eq!(sweep_status(Some(EndCause::TooManyFailures)), RunStatus::Failed);
        assert_eq!(
            stop_reason(TrialStatus::Terminated(StoppedEarly), None).as_deref(),
            Some("stopped_early")
        );
        assert_eq!(
            stop_reason(TrialStatus::Errored, Some("exit code 3")).as_deref(),
            Some("exit code 3")
        );
        assert_eq!(stop_reason(TrialStatus::Running, None), None);
    }

    #[test]
    fn keys_are_made_acceptable_to_mlflow() {
        assert_eq!(mlflow_key("val/loss"), "val/loss");
        assert_eq!(mlflow_key("model.width"), "model.width");
        assert_eq!(mlflow_key("acc@1 (%)"), "acc_1 ___");
        assert_eq!(mlflow_key("/abs"), "_abs");
        assert_eq!(mlflow_key("a//b"), "a__b");
        assert_eq!(mlflow_key(".."), "_..");
        assert_eq!(mlflow_key(""), "_");
        assert_eq!(mlflow_key(&"k".repeat(300)).len(), 250);
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(metric_value(f64::NAN), json!("NaN"));
        assert_eq!(metric_value(f64::NEG_INFINITY), json!("-Infinity"));
        assert_eq!(metric_value(0.5), json!(0.5));
    }

    #[test]
    fn backoff_doubles_from_half_a_second_to_thirty() {
        let waits: Vec<f64> = (1..=9).map(|n| backoff(n).as_secs_f64()).collect();
        assert_eq!(waits, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn records_become_updates_once_per_change() {
        let mut converter = Converter::default();
        let mut out = Vec::new();
        let mut running = row(1, TrialStatus::Running);
        converter.convert(&[Record::Trial(running.clone()), report(1, 1, 0.5)], 7, &mut out);
        running.last = Some(Report {
            step: 1,
            metrics: Metrics::new(),
        });
        converter.convert(
            &[
                Record::Trial(running.clone()),
                Record::CheckpointDeleted {
                    trial: TrialId(1),
                    path: "x".into(),
                },
            ],
            8,
            &mut out,
        );
        let mut stopped = running;
        stopped.status = TrialStatus::Terminated(EndReason::StoppedEarly);
        converter.convert(
            &[
                Record::Trial(stopped),
                Record::ExperimentFinished {
                    cause: EndCause::AllTrialsDone,
                },
            ],
            9,
            &mut out,
        );
        assert_eq!(out.len(), 4, "{out:#?}");
        assert!(matches!(
            &out[0],
            Update::Trial {
                config: Some(_),
                at_ms: 7,
                ..
            }
        ));
        assert!(matches!(&out[1], Update::Report { step: 1, .. }));
        assert!(matches!(
            &out[2],
            Update::Trial {
                config: None,
                status: TrialStatus::Terminated(EndReason::StoppedEarly),
                ..
            }
        ));
        assert!(matches!(
            &out[3],
            Update::Finished {
                cause: EndCause::AllTrialsDone,
                at_ms: 9
            }
        ));
    }

    fn plan_with_parent() -> Plan {
        let mut plan = Plan::new("sweep", "abc");
        plan.parent.run_id = Some("parent".into());
        plan
    }

    fn send_all(plan: &mut Plan) -> Vec<Request> {
        let mut sent = Vec::new();
        while let Some(request) = plan.next_request() {
            let answer = match &request {
                Request::CreateRun { trial, .. } => json!({"run": {"info": {"run_id": format!("run-{trial}")}}}),
                _ => Value::Null,
            };
            plan.complete(&request, &answer).unwrap();
            sent.push(request);
            assert!(sent.len() < 10_000, "the plan never empties");
        }
        sent
    }

    #[test]
    fn a_trial_becomes_a_child_run_with_params_metrics_tags_and_status() {
        let mut plan = plan_with_parent();
        let mut converter = Converter::default();
        let mut updates = Vec::new();
        let mut trial = row(3, TrialStatus::Running);
        converter.convert(
            &[Record::Trial(trial.clone()), report(3, 1, 0.5), report(3, 2, 0.25)],
            100,
            &mut updates,
        );
        trial.status = TrialStatus::Errored;
        trial.error = Some("trial exited with code 3".into());
        converter.convert(&[Record::Trial(trial)], 200, &mut updates);
        for update in updates {
            plan.apply(update);
        }
        let sent = send_all(&mut plan);
        assert_eq!(sent.len(), 3, "{sent:#?}");
        let Request::CreateRun { body, .. } = &sent[0] else {
            panic!("{sent:#?}")
        };
        assert_eq!(body["run_name"], "t3");
        assert_eq!(body["start_time"], 100);
        let tags = body["tags"].as_array().unwrap();
        assert!(tags.contains(&json!({"key": "mlflow.parentRunId", "value": "parent"})));
        assert!(tags.contains(&json!({"key": "rung.trial", "value": "t3"})));
        let Request::LogBatch { body, .. } = &sent[1] else {
            panic!("{sent:#?}")
        };
        assert_eq!(body["run_id"], "run-t3");
        assert_eq!(
            body["params"],
            json!([
                {"key": "lr", "value": "0.03"},
                {"key": "model.act", "value": "relu"},
                {"key": "model.width", "value": "4"},
            ])
        );
        assert_eq!(body["metrics"].as_array().unwrap().len(), 4);
        assert!(body["metrics"].as_array().unwrap().contains(&json!(
            {"key": "acc/top 1", "value": 0.75, "timestamp": 100, "step": 2}
        )));
        assert!(body["tags"].as_array().unwrap().contains(&json!(
            {"key": "rung.stop_reason", "value": "trial exited with code 3"}
        )));
        assert!(
            body["tags"]
                .as_array()
                .unwrap()
                .contains(&json!({"key": "rung.status", "value": "errored"}))
        );
        let Request::UpdateRun { body, status, .. } = &sent[2] else {
            panic!("{sent:#?}")
        };
        assert_eq!(*status, RunStatus::Failed);
        assert_eq!(body, &json!({"run_id": "run-t3", "status": "FAILED", "end_time": 200}));
        assert!(plan.is_empty());
    }

    #[test]
    fn batches_keep_within_mlflow_limits() {
        let mut plan = plan_with_parent();
        let wide: Config = serde_json::from_value(Value::Object(
            (0..250)
                .map(|i| (format!("p{i:03}"), json!("v".repeat(7000))))
                .collect(),
        ))
        .unwrap();
        plan.apply(Update::Trial {
            trial: TrialId(1),
            status: TrialStatus::Running,
            error: None,
            config: Some(wide),
            at_ms: 1,
        });
        for step in 0..2500 {
            plan.apply(Update::Report {
                trial: TrialId(1),
                step,
                metrics: Metrics::from([("loss".to_owned(), step as f64)]),
                at_ms: 1,
            });
        }
        let sent = send_all(&mut plan);
        let (mut metrics, mut params) = (0, 0);
        for request in &sent {
            let Request::LogBatch { body, .. } = request else {
                continue;
            };
            let counts = ["metrics", "params", "tags"].map(|key| body[key].as_array().unwrap().len());
            assert!(counts[0] <= 1000 && counts[1] <= 100 && counts[2] <= 100, "{counts:?}");
            assert!(counts.iter().sum::<usize>() <= 1000, "{counts:?}");
            assert!(serde_json::to_vec(body).unwrap().len() < 1_000_000);
            for param in body["params"].as_array().unwrap() {
                assert_eq!(param["value"].as_str().unwrap().len(), 6000);
            }
            metrics += counts[0];
            params += counts[1];
        }
        assert_eq!((metrics, params), (2500, 250));
        // Metric points stay in step order.
        let steps: Vec<i64> = sent
            .iter()
            .filter_map(|request| match request {
                Request::LogBatch { body, .. } => Some(body["metrics"].as_array().unwrap().clone()),
                _ => None,
            })
            .flatten()
            .map(|metric| metric["step"].as_i64().unwrap())
            .collect();
        assert_eq!(steps, (0..2500).collect::<Vec<_>>());
    }

    #[test]
    fn a_failed_call_keeps_everything_and_a_refused_one_drops_only_its_items() {
        let mut plan = plan_with_parent();
        plan.children.insert(
            TrialId(1),
            RunState {
                run_id: Some("r1".into()),
                ..RunState::default()
            },
        );
        for step in 1..=3 {
            plan.apply(Update::Report {
                trial: TrialId(1),
                step,
                metrics: Metrics::from([("loss".to_owned(), 1.0)]),
                at_ms: 1,
            });
        }
        let first = plan.next_request().unwrap();
        // Unreachable: nothing completes, and the same request comes again.
        assert_eq!(plan.next_request().unwrap(), first);
        assert_eq!(plan.pending(), 3);
        assert_eq!(plan.reject(&first), 3);
        assert!(plan.is_empty());
        assert_eq!(plan.next_request(), None);
    }

    #[test]
    fn the_queue_is_bounded_and_diverts_whole_trials() {
        let mut queue = Queue::new(10);
        let report = |trial: u64, step: u64| Update::Report {
            trial: TrialId(trial),
            step,
            metrics: Metrics::from([("loss".to_owned(), 0.0), ("acc".to_owned(), 1.0)]),
            at_ms: 0,
        };
        for step in 0..5 {
            queue.push(report(1, step));
        }
        assert_eq!((queue.items.len(), queue.weight), (5, 10));
        queue.push(report(2, 0));
        queue.push(Update::Finished {
            cause: EndCause::AllTrialsDone,
            at_ms: 0,
        });
        assert_eq!(queue.items.len(), 6, "the end of the sweep is always queued");
        assert_eq!(queue.diverted.get(&TrialId(2)), Some(&5));
        let taken = queue.take(3);
        assert_eq!(taken.len(), 3);
        queue.push(report(2, 1));
        assert_eq!(
            queue.items.len(),
            3,
            "a diverted trial stays diverted until it is read back"
        );
        queue.push(report(1, 5));
        assert_eq!(queue.items.len(), 4);
        assert_eq!(queue.diverted_updates, 2);
    }

    /// An in-memory MLflow with the calls the tracker makes, that can be taken down.
    #[derive(Clone, Default)]
    struct FakeMlflow {
        state: Arc<Mutex<FakeState>>,
        down: Arc<AtomicBool>,
    }

    #[derive(Default)]
    struct FakeState {
        experiments: Vec<String>,
        runs: Vec<FakeRun>,
        calls: Vec<String>,
    }

    #[derive(Default, Clone)]
    struct FakeRun {
        id: String,
        experiment_id: String,
        status: String,
        tags: BTreeMap<String, String>,
        params: BTreeMap<String, String>,
        metrics: Vec<(String, f64, i64)>,
    }

    impl FakeMlflow {
        fn run(&self, name: &str) -> FakeRun {
            let state = self.state.lock().unwrap();
            state
                .runs
                .iter()
                .find(|run| run.tags.get("mlflow.runName").map(String::as_str) == Some(name))
                .cloned()
                .unwrap_or_else(|| panic!("no run {name}"))
        }
    }

    impl Api for FakeMlflow {
        fn call(&mut self, _: Method, endpoint: &str, body: &Value) -> std::result::Result<Value, CallError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(CallError::Unreachable("connection refused".into()));
            }
            let mut state = self.state.lock().unwrap();
            state.calls.push(endpoint.to_owned());
            let pairs = |value: &Value| -> Vec<(String, String)> {
                value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|tag| {
                        (
                            tag["key"].as_str().unwrap().to_owned(),
                            tag["value"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            };
            let not_found = || CallError::Rejected {
                status: 404,
                code: "RESOURCE_DOES_NOT_EXIST".into(),
                message: "no such thing".into(),
            };
            Ok(match endpoint {
                "experiments/get-by-name" => {
                    let name = body["experiment_name"].as_str().unwrap();
                    let id = state.experiments.iter().position(|e| e == name).ok_or_else(not_found)?;
                    json!({"experiment": {"experiment_id": id.to_string(), "lifecycle_stage": "active"}})
                }
                "experiments/create" => {
                    state.experiments.push(body["name"].as_str().unwrap().to_owned());
                    json!({"experiment_id": (state.experiments.len() - 1).to_string()})
                }
                "runs/create" => {
                    let id = format!("run{}", state.runs.len());
                    state.runs.push(FakeRun {
                        id: id.clone(),
                        experiment_id: body["experiment_id"].as_str().unwrap().to_owned(),
                        status: "RUNNING".into(),
                        tags: pairs(&body["tags"]).into_iter().collect(),
                        ..FakeRun::default()
                    });
                    json!({"run": {"info": {"run_id": id}}})
                }
                "runs/search" => {
                    // The tracker's filters: tags.`k` = 'v' [and tags.`k` = 'v'].
                    let wanted: Vec<(String, String)> = body["filter"]
                        .as_str()
                        .unwrap()
                        .split(" AND ")
                        .map(|clause| {
                            let (key, value) = clause.split_once(" = ").unwrap();
                            (
                                key.trim_start_matches("tags.").trim_matches('`').to_owned(),
                                value.trim_matches('\'').to_owned(),
                            )
                        })
                        .collect();
                    let experiment = body["experiment_ids"][0].as_str().unwrap();
                    let runs: Vec<Value> = state
                        .runs
                        .iter()
                        .filter(|run| run.experiment_id == experiment)
                        .filter(|run| wanted.iter().all(|(key, value)| run.tags.get(key) == Some(value)))
                        .map(|run| {
                            let mut latest: BTreeMap<&str, (i64, f64)> = BTreeMap::new();
                            for (key, value, step) in &run.metrics {
                                let entry = latest.entry(key).or_insert((*step, *value));
                                if *step >= entry.0 {
                                    *entry = (*step, *value);
                                }
                            }
                            json!({
                                "info": {"run_id": run.id, "status": run.status},
                                "data": {
                                    "tags": run.tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
                                    "metrics": latest.iter().map(|(k, (step, value))| json!({"key": k, "value": value, "step": step})).collect::<Vec<_>>(),
                                },
                            })
                        })
                        .collect();
                    json!({"runs": runs})
                }
                "runs/log-batch" => {
                    let run_id = body["run_id"].as_str().unwrap();
                    let run = state
                        .runs
                        .iter_mut()
                        .find(|run| run.id == run_id)
                        .ok_or_else(not_found)?;
                    run.tags.extend(pairs(&body["tags"]));
                    run.params.extend(pairs(&body["params"]));
                    for metric in body["metrics"].as_array().unwrap() {
                        run.metrics.push((
                            metric["key"].as_str().unwrap().to_owned(),
                            metric["value"].as_f64().unwrap_or(f64::NAN),
                            metric["step"].as_i64().unwrap(),
                        ));
                    }
                    json!({})
                }
                "runs/update" => {
                    let run_id = body["run_id"].as_str().unwrap();
                    let run = state
                        .runs
                        .iter_mut()
                        .find(|run| run.id == run_id)
                        .ok_or_else(not_found)?;
                    run.status = body["status"].as_str().unwrap().to_owned();
                    json!({})
                }
                other => panic!("unexpected call {other}"),
            })
        }
    }

    /// A store with one experiment, and a way to commit records to it as the driver does.
    struct Sweep {
        _dir: tempfile::TempDir,
        store: Store,
        info: ExperimentInfo,
        seq: u64,
    }

    impl Sweep {
        fn new() -> Sweep {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open_or_create(&dir.path().join("rung.db")).unwrap();
            let info = store
                .create_experiment("sweep", r#"{"metric":"loss","mode":"min"}"#, 7)
                .unwrap();
            Sweep {
                _dir: dir,
                store,
                info,
                seq: 0,
            }
        }

        fn settings(&self, capacity: usize) -> TrackerSettings {
            let tracking = Tracking {
                mlflow_uri: Some("http://127.0.0.1:9".into()),
                experiment: None,
                flush_timeout_s: Some(10.0),
            };
            let mut settings = TrackerSettings::new(
                &tracking,
                &SweepFacts::new("loss", Mode::Min),
                &self.info,
                self.store.path(),
            )
            .unwrap();
            settings.capacity = capacity;
            settings
        }

        /// Commits `records` and hands them to `hook`, like the driver.
        fn commit(&mut self, hook: &mut dyn FnMut(&[Record]), records: Vec<Record>) {
            self.seq += 1;
            let batch = Batch {
                events: vec![LoggedEvent {
                    seq: self.seq,
                    at_ms: self.seq,
                    event: tune_core::controller::Event::Tick,
                }],
                records,
            };
            self.store.commit(self.info.id, &batch).unwrap();
            hook(&batch.records);
        }
    }

    /// Runs a sweep of `trials` trials with `steps` reports each through a tracker.
    fn run_trials(
        sweep: &mut Sweep,
        hook: &mut dyn FnMut(&[Record]),
        trials: std::ops::Range<u64>,
        steps: u64,
        finish: bool,
    ) {
        for id in trials.clone() {
            sweep.commit(hook, vec![Record::Trial(row(id, TrialStatus::Running))]);
        }
        for step in 1..=steps {
            for id in trials.clone() {
                let mut trial = row(id, TrialStatus::Running);
                trial.last = Some(Report {
                    step,
                    metrics: Metrics::new(),
                });
                trial.best = Some((1.0 / (id * step) as f64, step));
                sweep.commit(
                    hook,
                    vec![report(id, step, 1.0 / (id * step) as f64), Record::Trial(trial)],
                );
            }
        }
        for id in trials {
            let mut trial = row(id, TrialStatus::Terminated(EndReason::Completed));
            trial.last = Some(Report {
                step: steps,
                metrics: Metrics::new(),
            });
            trial.best = Some((1.0 / (id * steps) as f64, steps));
            sweep.commit(hook, vec![Record::Trial(trial)]);
        }
        if finish {
            sweep.commit(
                hook,
                vec![Record::ExperimentFinished {
                    cause: EndCause::AllTrialsDone,
                }],
            );
        }
    }

    fn assert_mirrored(mlflow: &FakeMlflow, trials: std::ops::Range<u64>, steps: u64) {
        for id in trials {
            let run = mlflow.run(&format!("t{id}"));
            let loss: Vec<(f64, i64)> = run
                .metrics
                .iter()
                .filter(|(key, ..)| key == "loss")
                .map(|(_, value, step)| (*value, *step))
                .collect();
            let expected: Vec<(f64, i64)> = (1..=steps)
                .map(|step| (1.0 / (id * step) as f64, step as i64))
                .collect();
            assert_eq!(loss, expected, "t{id}");
            assert_eq!(run.params["lr"], value_to_arg(&json!(0.01 * id as f64)));
            assert_eq!(run.tags["rung.status"], "completed");
            assert_eq!(run.status, "FINISHED");
        }
    }

    #[test]
    fn a_sweep_is_mirrored_and_the_best_trial_tagged() {
        let mut sweep = Sweep::new();
        let mlflow = FakeMlflow::default();
        let tracker = Tracker::start_with(mlflow.clone(), sweep.settings(DEFAULT_CAPACITY)).unwrap();
        let mut hook = tracker.hook();
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
        let tracker = Tracker::start_with(mlflow.clone(), sweep.settings(8)).unwrap();
        let mut hook = tracker.hook();
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
        let outcome = tracker.finish();
        assert_eq!((outcome.unsent, outcome.rejected), (0, 0), "{outcome:?}");
        assert_mirrored(&mlflow, 1..6, 10);
        assert_eq!(mlflow.run("sweep").tags["rung.best_trial"], "t5");
    }

    #[test]
    fn a_resumed_sweep_finds_its_runs_and_sends_what_they_miss() {
        let mut sweep = Sweep::new();
        let mlflow = FakeMlflow::default();
        let tracker = Tracker::start_with(mlflow.clone(), sweep.settings(DEFAULT_CAPACITY)).unwrap();
        let mut hook = tracker.hook();
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
            )
            .unwrap();

        let tracker = Tracker::start_with(mlflow.clone(), sweep.settings(DEFAULT_CAPACITY)).unwrap();
        let mut hook = tracker.hook();
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
        let tracker = Tracker::start_with(mlflow.clone(), settings).unwrap();
        let mut hook = tracker.hook();
        run_trials(&mut sweep, &mut hook, 1..3, 4, false);
        let outcome = tracker.finish();
        assert!(outcome.unsent > 0 && !outcome.sweep_finished, "{outcome:?}");
        assert!(mlflow.state.lock().unwrap().runs.is_empty());

        mlflow.down.store(false, Ordering::SeqCst);
        let tracker = Tracker::start_with(mlflow.clone(), sweep.settings(DEFAULT_CAPACITY)).unwrap();
        let mut hook = tracker.hook();
        run_trials(&mut sweep, &mut hook, 3..4, 4, true);
        let outcome = tracker.finish();
        assert_eq!((outcome.unsent, outcome.rejected), (0, 0), "{outcome:?}");
        assert_mirrored(&mlflow, 1..4, 4);
        assert_eq!(mlflow.run("sweep").tags["rung.best_trial"], "t3");
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
