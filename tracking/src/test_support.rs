//! What the tests share: a fake MLflow, a store to commit a sweep to, and trial records.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tune_core::controller::{EndCause, Record, TrialRow};
use tune_core::trial::{EndReason, Metrics, Mode, Report, TrialId, TrialStatus};
use tune_core::value::{Config, value_to_arg};
use tune_runtime::store::{Batch, ExperimentInfo, Flush, LoggedEvent, Store};

use crate::http::{Api, CallError, Method};
use crate::{SweepFacts, TrackerSettings, Tracking};

/// A trial's configuration: `lr` and a nested table, flattened into three params.
pub(crate) fn config(lr: f64) -> Config {
    serde_json::from_value(json!({"lr": lr, "model": {"act": "relu", "width": 4}})).unwrap()
}

/// A trial's row, its config made from its id.
pub(crate) fn row(id: u64, status: TrialStatus) -> TrialRow {
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

/// A report of `loss` and `acc/top 1` at `step`.
pub(crate) fn report(id: u64, step: u64, loss: f64) -> Record {
    Record::Report {
        trial: TrialId(id),
        report: Report {
            step,
            metrics: Metrics::from([("loss".to_owned(), loss), ("acc/top 1".to_owned(), 1.0 - loss)]),
        },
    }
}

/// An in-memory MLflow with the calls the tracker makes, that can be taken down.
#[derive(Clone, Default)]
pub(crate) struct FakeMlflow {
    pub(crate) state: Arc<Mutex<FakeState>>,
    pub(crate) down: Arc<AtomicBool>,
}

/// What the fake MLflow holds, and the endpoints called, in order.
#[derive(Default)]
pub(crate) struct FakeState {
    experiments: Vec<String>,
    pub(crate) runs: Vec<FakeRun>,
    pub(crate) calls: Vec<String>,
}

/// A run of the fake MLflow.
#[derive(Default, Clone)]
pub(crate) struct FakeRun {
    id: String,
    experiment_id: String,
    pub(crate) status: String,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) params: BTreeMap<String, String>,
    pub(crate) metrics: Vec<(String, f64, i64)>,
}

impl FakeMlflow {
    /// The run named `name` (`sweep` for the parent, `t3` for a trial); panics when there is none.
    pub(crate) fn run(&self, name: &str) -> FakeRun {
        let state = self.state.lock().unwrap();
        state
            .runs
            .iter()
            .find(|run| run.tags.get("mlflow.runName").map(String::as_str) == Some(name))
            .cloned()
            .unwrap_or_else(|| panic!("no run {name}"))
    }
}

impl FakeState {
    /// The run that a call's `run_id` names.
    fn run_named_by(&mut self, body: &Value) -> Result<&mut FakeRun, CallError> {
        let run_id = body["run_id"].as_str().unwrap();
        self.runs.iter_mut().find(|run| run.id == run_id).ok_or_else(not_found)
    }
}

/// MLflow's answer about something it does not have.
fn not_found() -> CallError {
    CallError::Rejected {
        status: 404,
        code: "RESOURCE_DOES_NOT_EXIST".into(),
        message: "no such thing".into(),
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
                let run = state.run_named_by(body)?;
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
                let run = state.run_named_by(body)?;
                run.status = body["status"].as_str().unwrap().to_owned();
                json!({})
            }
            other => panic!("unexpected call {other}"),
        })
    }
}

/// A store with one experiment, and a way to commit records to it as the driver does.
pub(crate) struct Sweep {
    _dir: tempfile::TempDir,
    pub(crate) store: Store,
    pub(crate) info: ExperimentInfo,
    seq: u64,
}

impl Sweep {
    pub(crate) fn new() -> Sweep {
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

    pub(crate) fn settings(&self, capacity: usize) -> TrackerSettings {
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
    pub(crate) fn commit(&mut self, hook: &mut dyn FnMut(&[Record]), records: Vec<Record>) {
        self.seq += 1;
        let batch = Batch {
            events: vec![LoggedEvent {
                seq: self.seq,
                at_ms: self.seq,
                event: tune_core::controller::Event::Tick,
            }],
            records,
        };
        self.store.commit(self.info.id, &batch, Flush::Os).unwrap();
        hook(&batch.records);
    }
}

/// Runs a sweep of `trials` trials with `steps` reports each through a tracker.
pub(crate) fn run_trials(
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

/// Checks that MLflow has each of `trials` whole: every loss at its step, its params, status and tags.
pub(crate) fn assert_mirrored(mlflow: &FakeMlflow, trials: std::ops::Range<u64>, steps: u64) {
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
