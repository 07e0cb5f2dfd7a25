//! The error type of tune-sweep, and so of the CLI, the server and the Python extension.

use std::path::PathBuf;

/// Everything that can go wrong while reading a spec or running a sweep.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec file could not be read or parsed.
    #[error("{}: {message}", path.display())]
    Spec {
        /// The spec file.
        path: PathBuf,
        /// What is wrong, with line and column where known.
        message: String,
    },
    /// An error of the engine: a bad space or setting, the store, the file system.
    #[error(transparent)]
    Engine(#[from] tune_runtime::Error),
    /// MLflow tracking could not start.
    #[error(transparent)]
    Tracking(#[from] tune_tracking::Error),
    /// The experiment cannot run this way (e.g. resuming in-process trials from the CLI).
    #[error("{0}")]
    Usage(String),
    /// The sweep's thread ended without an answer.
    #[error("the sweep stopped unexpectedly: {0}")]
    Internal(String),
}

impl From<tune_core::Error> for Error {
    fn from(error: tune_core::Error) -> Self {
        Error::Engine(error.into())
    }
}

impl Error {
    /// Shorthand for an invalid setting of the sweep.
    pub fn setting(setting: impl Into<String>, message: impl Into<String>) -> Self {
        tune_core::Error::setting(setting, message).into()
    }

    /// The core error (a bad space or setting) inside, if that is what this is.
    pub fn as_core(&self) -> Option<&tune_core::Error> {
        match self {
            Error::Engine(tune_runtime::Error::Core(error)) | Error::Tracking(tune_tracking::Error::Setting(error)) => {
                Some(error)
            }
            _ => None,
        }
    }

    /// Whether the user's input is at fault (CLI exit code 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Spec { .. } | Error::Usage(_) => true,
            Error::Engine(error) => error.is_bad_input(),
            Error::Tracking(error) => error.is_bad_input(),
            Error::Internal(_) => false,
        }
    }
}

/// Result with tune-sweep's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
