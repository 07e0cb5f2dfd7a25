//! The error type of tune-tracking.

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
