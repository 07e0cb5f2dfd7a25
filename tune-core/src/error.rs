//! The error type of tune-core.

use std::path::PathBuf;

/// Everything that can go wrong in tune-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A search-space parameter is invalid.
    #[error("parameter \"{param}\": {message}")]
    InvalidParameter {
        /// Dotted name of the parameter.
        param: String,
        /// What is wrong with it.
        message: String,
    },
    /// A setting (of the sweep, a searcher or a scheduler) is invalid.
    #[error("setting \"{setting}\": {message}")]
    InvalidSetting {
        /// Name of the setting.
        setting: String,
        /// What is wrong with it.
        message: String,
    },
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
        matches!(
            self,
            Error::InvalidParameter { .. }
                | Error::InvalidSetting { .. }
                | Error::NotAStore { .. }
                | Error::NewerSchema { .. }
                | Error::NoStore(_)
                | Error::UnknownExperiment(_)
        )
    }

    /// Shorthand for [`Error::InvalidParameter`].
    pub fn param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidParameter {
            param: param.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::InvalidSetting`].
    pub fn setting(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidSetting {
            setting: setting.into(),
            message: message.into(),
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result with tune-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
