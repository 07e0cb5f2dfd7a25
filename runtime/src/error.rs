//! The error type of tune-runtime: the store, the file system, and the core's own errors.

use std::path::PathBuf;

/// Everything that can go wrong while running or storing a sweep.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A space or a setting is invalid (see [`tune_core::Error`]).
    #[error(transparent)]
    Core(#[from] tune_core::Error),
    /// The file is not a rung store.
    #[error("{path}: not a rung store ({reason})")]
    NotAStore {
        /// Path of the file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// The store was written by a newer rung.
    #[error("{path}: written by a newer rung (store schema {found}, this build knows up to {known}); upgrade rung")]
    NewerSchema {
        /// Path of the store.
        path: PathBuf,
        /// Schema version found in the file.
        found: i64,
        /// Newest schema version this build knows.
        known: i64,
    },
    /// No store exists at the path.
    #[error("{0}: no rung store there")]
    NoStore(PathBuf),
    /// A named experiment does not exist.
    #[error("no experiment named \"{0}\" in the store")]
    UnknownExperiment(String),
    /// Replaying the event log did not reproduce the stored state: a bug, or a store edited by hand.
    #[error("replay diverged from the stored log: {0}")]
    ReplayDiverged(String),
    /// A bug: handling the sweep's events panicked.
    #[error("internal error: {0}")]
    Internal(String),
    /// SQLite failed.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A stored JSON payload could not be decoded.
    #[error("stored data: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// Whether the error is the user's input being wrong (CLI exit code 2) rather than a failure.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Core(error) => error.is_bad_input(),
            Error::NotAStore { .. } | Error::NewerSchema { .. } | Error::NoStore(_) | Error::UnknownExperiment(_) => {
                true
            }
            Error::ReplayDiverged(_) | Error::Internal(_) | Error::Sqlite(_) | Error::Io { .. } | Error::Json(_) => {
                false
            }
        }
    }

    /// Shorthand for a core [`tune_core::Error::InvalidParameter`].
    pub fn param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Core(tune_core::Error::param(param, message))
    }

    /// Shorthand for a core [`tune_core::Error::InvalidSetting`].
    pub fn setting(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Core(tune_core::Error::setting(setting, message))
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result with tune-runtime's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
