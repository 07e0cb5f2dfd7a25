//! The error type of the `rung` facade and CLI.

use std::path::PathBuf;

/// Everything that can go wrong above tune-core.
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
    /// An error of the engine.
    #[error(transparent)]
    Core(#[from] tune_core::Error),
    /// The experiment cannot run this way (e.g. resuming in-process trials from the CLI).
    #[error("{0}")]
    Usage(String),
    /// The sweep's thread ended without an answer.
    #[error("the sweep stopped unexpectedly: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the user's input is at fault (CLI exit code 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Spec { .. } | Error::Usage(_) => true,
            Error::Core(error) => error.is_bad_input(),
            Error::Internal(_) => false,
        }
    }
}

/// Result with the facade's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
