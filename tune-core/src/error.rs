//! The error type of tune-core: what is wrong with a space or a setting. Everything that
//! touches a disk or a database fails with `tune_runtime::Error` instead.

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
}

impl Error {
    /// Whether the error is the user's input being wrong (CLI exit code 2) rather than a failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::InvalidParameter { .. } | Error::InvalidSetting { .. })
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
}

/// Result with tune-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
