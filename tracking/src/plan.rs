//! The plan: what still has to reach MLflow, run by run, and the next REST call that sends some
//! of it. Free of I/O: the worker asks it for a [`Request`], makes the call, and tells it how
//! that went.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{Value, json};
use tune_core::trial::{TrialId, TrialStatus};
use tune_core::value::value_to_arg;

use crate::convert::{
    MAX_PARAM_VALUE_CHARS, MAX_TAG_VALUE_CHARS, RunStatus, Update, metric_value, mlflow_key, run_status, stop_reason,
    truncate, wall_ms,
};
use crate::error::MissingRunId;

// MLflow's limits on one `runs/log-batch` call.
const MAX_METRICS_PER_BATCH: usize = 1000;
const MAX_PARAMS_PER_BATCH: usize = 100;
const MAX_TAGS_PER_BATCH: usize = 100;
const MAX_ENTITIES_PER_BATCH: usize = 1000;
/// MLflow refuses a `log-batch` body over 1,000,000 bytes; stay well below.
const MAX_BATCH_BYTES: usize = 900_000;

/// One metric point waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Point {
    pub(crate) key: String,
    pub(crate) value: f64,
    pub(crate) timestamp: i64,
    pub(crate) step: i64,
}

/// What is known about one MLflow run and what it still has to receive.
#[derive(Debug, Default)]
pub(crate) struct RunState {
    /// MLflow's id of the run, once created (or found).
    pub(crate) run_id: Option<String>,
    /// When the trial started (wall clock, ms; 0 until known): the run's start time.
    start_ms: i64,
    /// Params to log, in order.
    pub(crate) params: VecDeque<(String, String)>,
    /// The config's params were queued (or the run already had them).
    pub(crate) params_done: bool,
    /// Tags to set: only the latest value of each counts.
    pub(crate) tags: BTreeMap<String, String>,
    /// Metric points to log, in the order they came.
    pub(crate) metrics: VecDeque<Point>,
    /// The status to set, and when it changed.
    pub(crate) status: Option<(RunStatus, i64)>,
    /// The status MLflow has, as far as rung knows.
    pub(crate) status_sent: Option<RunStatus>,
    /// The trial's rung status, as last seen.
    pub(crate) rung_status: Option<TrialStatus>,
    /// MLflow refused to create the run: what comes for it is discarded (and counted).
    abandoned: bool,
}

impl RunState {
    /// Whether it has metric points, params or tags for a `log-batch` call.
    fn has_log_items(&self) -> bool {
        !(self.params.is_empty() && self.tags.is_empty() && self.metrics.is_empty())
    }

    /// Metric points, params, tags and status changes waiting.
    pub(crate) fn pending(&self) -> usize {
        self.params.len() + self.tags.len() + self.metrics.len() + usize::from(self.status.is_some())
    }

    /// Drops everything waiting; returns how many items that was.
    pub(crate) fn discard(&mut self) -> usize {
        let count = self.pending();
        self.params.clear();
        self.tags.clear();
        self.metrics.clear();
        self.status = None;
        count
    }

    /// Drops the first `metrics` metric points and `params` params: a `log-batch` call carried
    /// them.
    fn drop_logged(&mut self, metrics: usize, params: usize) {
        self.metrics.drain(..metrics);
        self.params.drain(..params);
    }

    /// Sets the status to send, unless MLflow has it already.
    pub(crate) fn want_status(&mut self, status: RunStatus, at_ms: i64) {
        self.status = (self.status_sent != Some(status)).then_some((status, at_ms));
    }
}

/// A run of the plan: the sweep's parent run or a trial's child run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Target {
    /// The sweep's run.
    Parent,
    /// The run of this trial.
    Trial(TrialId),
}

/// One REST call the plan wants made.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
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
    /// The run the call is for.
    fn target(&self) -> Target {
        match self {
            Request::CreateRun { trial, .. } => Target::Trial(*trial),
            Request::LogBatch { target, .. } | Request::UpdateRun { target, .. } => *target,
        }
    }

    /// The endpoint to call, after `/api/2.0/mlflow/`.
    pub(crate) fn endpoint(&self) -> &'static str {
        match self {
            Request::CreateRun { .. } => "runs/create",
            Request::LogBatch { .. } => "runs/log-batch",
            Request::UpdateRun { .. } => "runs/update",
        }
    }

    /// The JSON body of the call.
    pub(crate) fn body(&self) -> &Value {
        match self {
            Request::CreateRun { body, .. } | Request::LogBatch { body, .. } | Request::UpdateRun { body, .. } => body,
        }
    }
}

/// What still has to reach MLflow, and the runs it goes to. Free of I/O: the worker asks it for
/// the next request ([`Plan::next_request`]), makes it, and tells it how that went
/// ([`Plan::complete`] or [`Plan::reject`]).
#[derive(Debug)]
pub(crate) struct Plan {
    /// The sweep's run.
    pub(crate) parent: RunState,
    /// The trials' runs.
    pub(crate) children: BTreeMap<TrialId, RunState>,
    /// Runs with something to send (or to create).
    pub(crate) dirty: BTreeSet<Target>,
    /// The rung experiment's name, for the tags of the trials' runs.
    rung_experiment: String,
    /// The sweep's id, for the tags of the trials' runs.
    sweep_id: String,
}

impl Plan {
    /// An empty plan for the sweep `sweep_id` of the rung experiment `rung_experiment`.
    pub(crate) fn new(rung_experiment: &str, sweep_id: &str) -> Self {
        Plan {
            parent: RunState::default(),
            children: BTreeMap::new(),
            dirty: BTreeSet::new(),
            rung_experiment: rung_experiment.to_owned(),
            sweep_id: sweep_id.to_owned(),
        }
    }

    /// The run `target`, if the plan knows it.
    fn run(&self, target: Target) -> Option<&RunState> {
        match target {
            Target::Parent => Some(&self.parent),
            Target::Trial(trial) => self.children.get(&trial),
        }
    }

    /// The run `target`, made when the plan did not know it.
    pub(crate) fn run_mut(&mut self, target: Target) -> &mut RunState {
        match target {
            Target::Parent => &mut self.parent,
            Target::Trial(trial) => self.children.entry(trial).or_default(),
        }
    }

    /// Metric points, params, tags and status changes waiting.
    pub(crate) fn pending(&self) -> usize {
        self.dirty
            .iter()
            .filter_map(|target| self.run(*target))
            .map(RunState::pending)
            .sum()
    }

    /// Whether nothing is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// Takes in one update; returns how many items were discarded because MLflow refused the
    /// trial's run.
    pub(crate) fn apply(&mut self, update: Update) -> usize {
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
    pub(crate) fn next_request(&self) -> Option<Request> {
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

    /// The `runs/create` call for `trial`'s child run of `parent_id`.
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

    /// Takes in a successful answer to `request`. An answer to `runs/create` without a run id
    /// is an error, and the request is then to be rejected.
    pub(crate) fn complete(&mut self, request: &Request, answer: &Value) -> Result<(), MissingRunId> {
        let target = request.target();
        let run = self.run_mut(target);
        match request {
            Request::CreateRun { .. } => {
                run.run_id = Some(created_run_id(answer)?.to_owned());
                run.status_sent = Some(RunStatus::Running);
                if let Some((status, at_ms)) = run.status {
                    run.want_status(status, at_ms);
                }
            }
            Request::LogBatch {
                metrics, params, tags, ..
            } => {
                run.drop_logged(*metrics, *params);
                // A tag that changed while the batch was on its way still has to be sent.
                for (key, value) in tags {
                    if run.tags.get(key) == Some(value) {
                        run.tags.remove(key);
                    }
                }
            }
            Request::UpdateRun { status, .. } => {
                run.status_sent = Some(*status);
                if run.status.is_some_and(|(wanted, _)| wanted == *status) {
                    run.status = None;
                }
            }
        }
        self.tidy(target);
        Ok(())
    }

    /// MLflow refused `request` for good: drops what it carried. Returns how many items that was.
    pub(crate) fn reject(&mut self, request: &Request) -> usize {
        let target = request.target();
        let run = self.run_mut(target);
        let dropped = match request {
            Request::CreateRun { .. } => {
                run.abandoned = true;
                run.discard()
            }
            Request::LogBatch {
                metrics, params, tags, ..
            } => {
                run.drop_logged(*metrics, *params);
                for (key, _) in tags {
                    run.tags.remove(key);
                }
                metrics + params + tags.len()
            }
            Request::UpdateRun { .. } => {
                run.status = None;
                1
            }
        };
        self.tidy(target);
        dropped
    }

    /// Forgets that `target` has something to send once it has nothing left.
    fn tidy(&mut self, target: Target) {
        if self.run(target).is_none_or(|run| run.pending() == 0) {
            self.dirty.remove(&target);
        }
    }
}

/// The id of the run that `runs/create` answered with.
pub(crate) fn created_run_id(answer: &Value) -> Result<&str, MissingRunId> {
    answer
        .pointer("/run/info/run_id")
        .and_then(Value::as_str)
        .ok_or_else(|| MissingRunId { answer: answer.clone() })
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

#[cfg(test)]
mod tests {
    use tune_core::controller::Record;
    use tune_core::trial::Metrics;
    use tune_core::value::Config;

    use super::*;
    use crate::convert::Converter;
    use crate::test_support::{report, row};

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
}
