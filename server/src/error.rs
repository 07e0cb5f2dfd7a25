//! The error type of tune-server, and its one mapping onto gRPC statuses.

use tonic::Status;

/// Everything that can go wrong while serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec, a setting, the store, or a sweep failed (see [`tune_sweep::Error`]).
    #[error(transparent)]
    Sweep(#[from] tune_sweep::Error),
    /// The server cannot run as asked: an address it cannot listen on, a TLS file it cannot read.
    #[error("{0}")]
    Usage(String),
    /// Something of the server's own failed: the gRPC server, a task, a thread.
    #[error("the server failed: {0}")]
    Internal(String),
}

impl From<tune_runtime::Error> for Error {
    fn from(error: tune_runtime::Error) -> Self {
        Error::Sweep(error.into())
    }
}

impl From<tune_core::Error> for Error {
    fn from(error: tune_core::Error) -> Self {
        Error::Sweep(error.into())
    }
}

impl Error {
    /// Whether the caller's input is at fault (an invalid argument, CLI exit code 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Sweep(error) => error.is_bad_input(),
            Error::Usage(_) => true,
            Error::Internal(_) => false,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        if error.is_bad_input() {
            Status::invalid_argument(error.to_string())
        } else {
            Status::internal(error.to_string())
        }
    }
}

/// Result with tune-server's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
