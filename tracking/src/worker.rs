//! The tracking thread (`rung-mlflow`): it takes updates from the queue into its [`Plan`] in
//! rounds, sends what the plan holds, backs off while MLflow is unreachable, reads diverted
//! trials back from rung's store, and at the end tags the best trial and ends the runs.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tune_core::controller::EndCause;
use tune_core::trial::{Metrics, TrialId};
use tune_runtime::store::{Store, StoredTrial};

use crate::convert::{
    MAX_PARAM_VALUE_CHARS, MAX_TAG_VALUE_CHARS, RunStatus, Update, mlflow_key, sweep_status, truncate, wall_ms,
};
use crate::error::MissingRunId;
use crate::http::{Api, CallError, Method};
use crate::plan::{Plan, Point, Request, Target, created_run_id};
use crate::queue::Shared;
use crate::{TrackerSettings, TrackingOutcome, WORKING_SET, warn};

/// The first wait after a failed call.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The least time between two sending rounds, so that reports coalesce into batches.
const ROUND_INTERVAL: Duration = Duration::from_millis(200);
/// How many requests one round sends before it looks at the queue and the deadline again.
const REQUESTS_PER_ROUND: usize = 64;
/// How many diverted trials one read-back takes from the store.
const RESYNC_CHUNK: usize = 256;

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

/// Why a round stopped. Either way the message says why, for a warning and for
/// [`TrackingOutcome::problem`].
#[derive(Debug, thiserror::Error)]
enum Stop {
    /// MLflow is unreachable: back off and try again.
    #[error("{0}")]
    Retry(String),
    /// Tracking cannot go on (MLflow refused the sweep's experiment or run).
    #[error("{0}")]
    Fatal(String),
}

impl From<MissingRunId> for Stop {
    /// Without its run id, the sweep's parent run cannot be used: tracking cannot go on.
    fn from(error: MissingRunId) -> Self {
        Stop::Fatal(error.to_string())
    }
}

/// The tracking thread.
pub(crate) struct Worker<A: Api> {
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
    /// A worker that sends to `api` what comes through `shared`.
    pub(crate) fn new(api: A, shared: Arc<Shared>, settings: TrackerSettings) -> Self {
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

    /// Sends until the tracker is finished (or tracking cannot go on), then says how it went.
    pub(crate) fn run(mut self) -> TrackingOutcome {
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
                    Err(stop) => break Some(stop.to_string()),
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
    fn round(&mut self) -> Result<bool, Stop> {
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
                    if let Err(error) = self.plan.complete(&request, &answer) {
                        let dropped = self.plan.reject(&request);
                        self.note_rejection(&error.to_string(), dropped);
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

    /// Makes a call of the set-up: MLflow refusing it stops tracking.
    fn call(&mut self, method: Method, endpoint: &str, body: &Value) -> Result<Value, Stop> {
        let answer = self.api.call(method, endpoint, body);
        self.take_answer(endpoint, answer)
    }

    /// [`Worker::call`], except that MLflow refusing it with the error `code` is an answer too:
    /// `Ok(None)`.
    fn call_unless(&mut self, method: Method, endpoint: &str, body: &Value, code: &str) -> Result<Option<Value>, Stop> {
        match self.api.call(method, endpoint, body) {
            Err(CallError::Rejected { code: refused, .. }) if refused == code => Ok(None),
            answer => self.take_answer(endpoint, answer).map(Some),
        }
    }

    /// The answer of a set-up call to `endpoint`, or why the round stops.
    fn take_answer(&mut self, endpoint: &str, answer: Result<Value, CallError>) -> Result<Value, Stop> {
        match answer {
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
    fn set_up(&mut self) -> Result<(), Stop> {
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
        let run_id = created_run_id(&answer)?.to_owned();
        // Whatever the store had before the parent run existed (all of a resumed sweep's first
        // sessions, when MLflow was unreachable then) is read back from it.
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

    /// The id of the MLflow experiment to log into, which is created when missing.
    fn experiment(&mut self) -> Result<String, Stop> {
        let name = self.settings.mlflow_experiment.clone();
        for _ in 0..2 {
            if let Some(id) = self.find_experiment(&name)? {
                return Ok(id);
            }
            if let Some(id) = self.create_experiment(&name)? {
                return Ok(id);
            }
            // Someone else created it meanwhile: look it up again.
        }
        Err(Stop::Fatal(format!(
            "cannot find or create the MLflow experiment \"{name}\""
        )))
    }

    /// The id of the MLflow experiment `name`; `None` when there is none.
    fn find_experiment(&mut self, name: &str) -> Result<Option<String>, Stop> {
        let query = json!({"experiment_name": name});
        let Some(answer) = self.call_unless(
            Method::Get,
            "experiments/get-by-name",
            &query,
            "RESOURCE_DOES_NOT_EXIST",
        )?
        else {
            return Ok(None);
        };
        if answer.pointer("/experiment/lifecycle_stage").and_then(Value::as_str) == Some("deleted") {
            return Err(Stop::Fatal(format!(
                "the MLflow experiment \"{name}\" is deleted: restore it, or name another with [tracking] experiment"
            )));
        }
        answer
            .pointer("/experiment/experiment_id")
            .and_then(Value::as_str)
            .map(|id| Some(id.to_owned()))
            .ok_or_else(|| Stop::Fatal(format!("experiments/get-by-name answered {answer}")))
    }

    /// Creates the MLflow experiment `name` and returns its id; `None` when it already exists.
    fn create_experiment(&mut self, name: &str) -> Result<Option<String>, Stop> {
        let body = json!({"name": name});
        let Some(answer) = self.call_unless(Method::Post, "experiments/create", &body, "RESOURCE_ALREADY_EXISTS")?
        else {
            return Ok(None);
        };
        answer["experiment_id"]
            .as_str()
            .map(|id| Some(id.to_owned()))
            .ok_or_else(|| Stop::Fatal(format!("experiments/create answered {answer}")))
    }

    /// Every active run of the experiment that matches `filter`, following the pages.
    fn search(&mut self, experiment_id: &str, filter: &str) -> Result<Vec<Value>, Stop> {
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
    fn find_children(&mut self, experiment_id: &str, parent_id: &str) -> Result<(), Stop> {
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
    fn divert_behind(&mut self, mirrored: &HashMap<TrialId, (Option<String>, Option<u64>)>) -> Result<(), Stop> {
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

    fn read_store<T>(&mut self, read: impl FnOnce(&Store, i64) -> tune_runtime::Result<T>) -> Result<T, Stop> {
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
    fn read_back(&mut self) -> Result<bool, Stop> {
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
    fn finalize(&mut self) -> Result<(), Stop> {
        let now = wall_ms();
        let cause = self.finished.map(|(cause, _)| cause);
        let end_ms = self.finished.map_or(now, |(_, at_ms)| at_ms);
        if cause.is_some() {
            let trials = self.read_store(|store, experiment| store.trials(experiment))?;
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

    #[test]
    fn backoff_doubles_from_half_a_second_to_thirty() {
        let waits: Vec<f64> = (1..=9).map(|n| backoff(n).as_secs_f64()).collect();
        assert_eq!(waits, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
