//! The `[tracking]` table of a spec, and what the tracker needs to know of the sweep.

use serde::{Deserialize, Serialize};
use tune_core::trial::Mode;
use tune_core::{Error, Result};

/// The `[tracking]` table: mirror the sweep into an MLflow tracking server.
///
/// The sweep becomes a parent run and each trial a child run (see [`crate`]). The
/// table turns tracking on; `MLFLOW_TRACKING_URI` is only read when it has no `mlflow_uri`, so a
/// machine-wide MLflow setting does not change sweeps that do not ask for tracking.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tracking {
    /// The MLflow server, `http://host:port` or `https://...`; `MLFLOW_TRACKING_URI` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_uri: Option<String>,
    /// The MLflow experiment to log into; the rung experiment's name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// How long, once the sweep has ended, rung waits for the backlog to reach MLflow before it
    /// gives up and says what was left unsent (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_timeout_s: Option<f64>,
}

/// The environment variable that names the MLflow server when `[tracking]` has no `mlflow_uri`.
pub const MLFLOW_TRACKING_URI: &str = "MLFLOW_TRACKING_URI";

impl Tracking {
    /// The MLflow server to use, checked: `mlflow_uri`, else `$MLFLOW_TRACKING_URI`. The error
    /// names the setting (or the variable) the bad value came from.
    pub fn resolve_uri(&self) -> Result<String> {
        self.resolve_uri_with(std::env::var(MLFLOW_TRACKING_URI).ok())
    }

    /// [`Tracking::resolve_uri`] with the environment variable's value given.
    pub fn resolve_uri_with(&self, from_env: Option<String>) -> Result<String> {
        let (setting, uri) = match (&self.mlflow_uri, from_env) {
            (Some(uri), _) => ("tracking.mlflow_uri", uri.clone()),
            (None, Some(uri)) => (MLFLOW_TRACKING_URI, uri),
            (None, None) => {
                return Err(Error::setting(
                    "tracking.mlflow_uri",
                    format!(
                        "is missing: [tracking] needs the MLflow server's URL (e.g. \"http://127.0.0.1:5000\"), here or in {MLFLOW_TRACKING_URI}"
                    ),
                ));
            }
        };
        crate::check_mlflow_uri(&uri).map_err(|message| Error::setting(setting, message))?;
        Ok(uri.trim_end_matches('/').to_owned())
    }
}

/// What a [`crate::Tracker`] records of the sweep's own settings: its objective, and the params
/// of the parent run.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepFacts {
    /// The metric the sweep optimises.
    pub metric: String,
    /// Whether it is minimised or maximised.
    pub mode: Mode,
    /// How many trials the sweep samples.
    pub num_samples: i64,
    /// The searcher's name (`tpe`, `random`, ...).
    pub searcher: String,
    /// The scheduler's name (`asha`, `fifo`, ...).
    pub scheduler: String,
}

impl SweepFacts {
    /// A sweep of `metric` in `mode` with the defaults of a spec: 10 samples, random search, FIFO.
    pub fn new(metric: &str, mode: Mode) -> Self {
        SweepFacts {
            metric: metric.to_owned(),
            mode,
            num_samples: 10,
            searcher: "random".to_owned(),
            scheduler: "fifo".to_owned(),
        }
    }
}
