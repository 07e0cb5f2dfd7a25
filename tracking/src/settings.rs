//! The `[tracking]` table of a spec, and what the tracker needs to know of the sweep.

use serde::{Deserialize, Serialize};
use tune_core::trial::Mode;
use tune_core::{Error, Result};

use crate::error::UriError;

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
        check_mlflow_uri(&uri).map_err(|error| Error::setting(setting, error.to_string()))?;
        Ok(uri.trim_end_matches('/').to_owned())
    }
}

/// Checks that `uri` can name an MLflow tracking server: an `http://` or `https://` URL with a
/// host and no query, fragment or credentials. The error says what is wrong.
pub fn check_mlflow_uri(uri: &str) -> std::result::Result<(), UriError> {
    let url = reqwest::Url::parse(uri.trim()).map_err(|error| UriError::NotAUrl {
        uri: uri.to_owned(),
        reason: error.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UriError::NotHttp { uri: uri.to_owned() });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UriError::NoHost { uri: uri.to_owned() });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(UriError::QueryOrFragment { uri: uri.to_owned() });
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UriError::Credentials { uri: uri.to_owned() });
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
            let error = check_mlflow_uri(uri).unwrap_err().to_string();
            assert!(error.contains(expected), "{uri}: {error}");
        }
    }

    #[test]
    fn each_uri_error_names_the_uri_and_says_what_to_give_instead() {
        let example = r#"e.g. "http://127.0.0.1:5000""#;
        for (uri, expected) in [
            (
                "databricks",
                format!(
                    r#""databricks" is not a URL (relative URL without a base): give the MLflow tracking server's address, {example}"#
                ),
            ),
            (
                "file:///tmp/mlruns",
                format!(
                    r#""file:///tmp/mlruns" is not an http:// or https:// URL: rung logs to an MLflow tracking server through its REST API, {example}"#
                ),
            ),
            (
                "http://host:5000/#top",
                format!(r#""http://host:5000/#top" must not have a query or a fragment, {example}"#),
            ),
            (
                "http://me@host:5000",
                r#""http://me@host:5000" carries credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead"#.to_owned(),
            ),
        ] {
            assert_eq!(check_mlflow_uri(uri).unwrap_err().to_string(), expected);
        }
        let error = Tracking {
            mlflow_uri: Some("databricks".into()),
            ..Tracking::default()
        }
        .resolve_uri_with(None)
        .unwrap_err();
        assert!(error.to_string().contains(r#"tracking.mlflow_uri"#), "{error}");
        assert!(error.is_bad_input(), "{error}");
    }
}
