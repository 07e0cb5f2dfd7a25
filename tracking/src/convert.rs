//! From rung's records to MLflow's vocabulary: the [`Update`]s the driver's hook queues (made by
//! the [`Converter`]), MLflow's run statuses, and keys and values as MLflow accepts them.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tune_core::controller::{EndCause, Record};
use tune_core::trial::{EndReason, Metrics, TrialId, TrialStatus};
use tune_core::value::Config;

/// How long a param value may be; MLflow refuses longer ones.
pub(crate) const MAX_PARAM_VALUE_CHARS: usize = 6000;
/// How long a tag value may be; MLflow refuses longer ones.
pub(crate) const MAX_TAG_VALUE_CHARS: usize = 8000;
/// How long a metric, param or tag name may be.
const MAX_KEY_CHARS: usize = 250;

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

    /// Reads MLflow's name for a status (`SCHEDULED` counts as running).
    pub(crate) fn parse(text: &str) -> Option<RunStatus> {
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

/// The first `max_chars` characters of `text` (not bytes: a value never ends mid-character).
pub(crate) fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

/// A float as MLflow's JSON reads it: non-finite values as `"NaN"`, `"Infinity"`, `"-Infinity"`.
pub(crate) fn metric_value(value: f64) -> Value {
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
    pub(crate) fn weight(&self) -> usize {
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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tune_core::trial::Report;

    use super::*;
    use crate::test_support::{report, row};

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
}
