//! The error types of tune-tracking.

use serde_json::Value;

/// Everything that can stop tracking from starting. Once it runs, MLflow's failures are retried
/// and reported as warnings, never as errors of the sweep.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `[tracking]` table or `MLFLOW_TRACKING_URI` is wrong.
    #[error(transparent)]
    Setting(#[from] tune_core::Error),
    /// The HTTP client could not be made.
    #[error("cannot make the MLflow client: {0}")]
    Client(String),
    /// The client's async runtime could not be started.
    #[error("cannot start the MLflow client's runtime: {0}")]
    Runtime(std::io::Error),
    /// The tracking thread could not be started.
    #[error("cannot start the MLflow tracking thread: {0}")]
    Thread(std::io::Error),
}

impl Error {
    /// Whether the user's settings are at fault (CLI exit code 2).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::Setting(error) if error.is_bad_input())
    }
}

/// Result with tune-tracking's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What an address given for the MLflow server gets wrong (see [`crate::check_mlflow_uri`]).
/// Each message names the address and says what to give instead; [`Tracking::resolve_uri`]
/// turns it into an [`Error::Setting`] that names where the address came from.
///
/// [`Tracking::resolve_uri`]: crate::Tracking::resolve_uri
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UriError {
    /// It does not parse as a URL.
    #[error("{uri:?} is not a URL ({reason}): give the MLflow tracking server's address, {EXAMPLE_URI}")]
    NotAUrl {
        /// The address.
        uri: String,
        /// Why it does not parse, as the URL parser says.
        reason: String,
    },
    /// Its scheme is not `http` or `https`.
    #[error(
        "{uri:?} is not an http:// or https:// URL: rung logs to an MLflow tracking server through its REST API, {EXAMPLE_URI}"
    )]
    NotHttp {
        /// The address.
        uri: String,
    },
    /// It has no host.
    #[error("{uri:?} has no host, {EXAMPLE_URI}")]
    NoHost {
        /// The address.
        uri: String,
    },
    /// It has a query or a fragment.
    #[error("{uri:?} must not have a query or a fragment, {EXAMPLE_URI}")]
    QueryOrFragment {
        /// The address.
        uri: String,
    },
    /// It carries a user name or a password.
    #[error(
        "{uri:?} carries credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead"
    )]
    Credentials {
        /// The address.
        uri: String,
    },
}

/// The example every [`UriError`] ends with.
const EXAMPLE_URI: &str = "e.g. \"http://127.0.0.1:5000\"";

/// MLflow answered `runs/create` without the id of the run it created: the run cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("runs/create answered without a run id: {answer}")]
pub(crate) struct MissingRunId {
    /// The whole answer.
    pub(crate) answer: Value,
}
