//! The subcommands of `rung`, one module per command or group: [`sweep`] (run, simulate,
//! resume), [`inspect`] (status, best, export), [`serve`], [`remote`] (submit, stop) and
//! [`agent`]. Each takes its clap arguments and returns the exit code; what they share is here.

pub mod agent;
pub mod inspect;
pub mod remote;
pub mod serve;
pub mod sweep;

use std::path::{Path, PathBuf};

use rung::{Error, Spec};

/// Why a command failed: the message printed after `error:`, and whether the user's input was at
/// fault (exit code 2) or something else failed (1).
#[derive(Debug)]
pub struct Failure {
    message: String,
    bad_input: bool,
}

impl Failure {
    /// The process's exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        if self.bad_input { 2 } else { 1 }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            bad_input: error.is_bad_input(),
            message: error.to_string(),
        }
    }
}

impl From<rung::server::Error> for Failure {
    fn from(error: rung::server::Error) -> Self {
        Failure {
            bad_input: error.is_bad_input(),
            message: error.to_string(),
        }
    }
}

/// Runs `future` to completion on a fresh multi-threaded runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// Whether a spec file is JSON (by its extension) rather than TOML.
pub fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("json"))
}

/// The folder of a spec file, absolute.
pub fn spec_folder(path: &Path) -> Result<PathBuf, Error> {
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    folder.canonicalize().map_err(|e| Error::Spec {
        path: path.to_owned(),
        message: format!("cannot resolve its folder: {e}"),
    })
}

/// A spec file as a server receives it: its text, read and checked here first so that a mistake
/// is shown with the file's name, and the folder its relative paths are resolved against.
pub struct SubmittedSpec {
    /// The file's text, sent as it is.
    pub text: String,
    /// Whether it is JSON.
    pub json: bool,
    /// Its folder, absolute.
    pub folder: PathBuf,
    /// The spec it parses to.
    pub spec: Spec,
}

/// Reads and checks the spec file at `path` the way a server will read the text.
pub fn read_submitted(path: &Path) -> Result<SubmittedSpec, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Spec {
        path: path.to_owned(),
        message: format!("cannot read: {e}"),
    })?;
    let folder = spec_folder(path)?;
    let json = is_json(path);
    let spec = Spec::from_submitted(&text, json, &folder).map_err(|e| match e {
        Error::Spec { message, .. } => Error::Spec {
            path: path.to_owned(),
            message,
        },
        other => other,
    })?;
    Ok(SubmittedSpec {
        text,
        json,
        folder,
        spec,
    })
}
