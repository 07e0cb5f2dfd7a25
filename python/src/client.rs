//! `rung.Client`'s native half: the `Trials` service of a `rung serve` controller.
//!
//! Every call blocks on a runtime of its own with the GIL released.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::{PyConnectionError, PyPermissionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use tonic::transport::Channel;
use tune_client::Remote;
use tune_proto::v1;
use tune_proto::v1::trials_client::TrialsClient;

use crate::to_py_err;

/// A gRPC status as the Python exception a caller expects.
fn status_to_py(status: tonic::Status) -> PyErr {
    let message = status.message().to_owned();
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::FailedPrecondition => {
            PyValueError::new_err(message)
        }
        tonic::Code::Unauthenticated => PyPermissionError::new_err(message),
        tonic::Code::Unavailable => PyConnectionError::new_err(message),
        code => PyRuntimeError::new_err(format!("{code:?}: {message}")),
    }
}

/// A trial handed out by `Ask`: (trial number, launch number, config JSON, restore step and path,
/// checkpoint root).
type Assignment = (u64, u32, String, Option<(u64, String)>, Option<String>);

/// A connection to a controller's `Trials` service.
#[pyclass(frozen, module = "rung._rung")]
pub struct NativeClient {
    remote: Remote,
    runtime: tokio::runtime::Runtime,
    channel: Channel,
}

impl NativeClient {
    fn trials(&self) -> TrialsClient<Channel> {
        TrialsClient::new(self.channel.clone())
    }

    fn reference(experiment: String, trial: u64, attempt: u32) -> Option<v1::TrialRef> {
        Some(v1::TrialRef {
            experiment,
            trial,
            attempt,
        })
    }
}

#[pymethods]
impl NativeClient {
    #[new]
    #[pyo3(signature = (url, token=None, ca_cert=None))]
    fn new(py: Python<'_>, url: String, token: Option<String>, ca_cert: Option<PathBuf>) -> PyResult<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start a runtime: {e}")))?;
        let remote = Remote { url, token, ca_cert };
        let channel = py
            .detach(|| runtime.block_on(remote.channel()))
            .map_err(|e| PyConnectionError::new_err(to_py_err(e).to_string()))?;
        Ok(NativeClient {
            remote,
            runtime,
            channel,
        })
    }

    /// Asks for a trial of `experiment`, waiting up to `wait_s`. Returns (finished, assignment).
    fn ask(
        &self,
        py: Python<'_>,
        experiment: String,
        worker: String,
        wait_s: f64,
    ) -> PyResult<(bool, Option<Assignment>)> {
        if !wait_s.is_finite() || wait_s < 0.0 {
            return Err(PyValueError::new_err(format!(
                "wait = {wait_s}: must be a number of seconds >= 0"
            )));
        }
        let request = self.remote.request(v1::AskRequest {
            experiment,
            worker,
            wait_ms: Duration::from_secs_f64(wait_s.min(60.0)).as_millis() as u32,
        });
        let answer = py
            .detach(|| self.runtime.block_on(self.trials().ask(request)))
            .map_err(status_to_py)?
            .into_inner();
        let assignment = answer.assignment.and_then(|a| {
            let trial = a.trial?;
            Some((
                trial.trial,
                trial.attempt,
                a.config_json,
                a.restore.map(|r| (r.step, r.path)),
                Some(a.checkpoint_root).filter(|root| !root.is_empty()),
            ))
        });
        Ok((answer.finished, assignment))
    }

    /// Reports metrics at a step; returns (decision, duplicate).
    #[pyo3(signature = (experiment, trial, attempt, step, metrics, checkpoint=None))]
    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        py: Python<'_>,
        experiment: String,
        trial: u64,
        attempt: u32,
        step: u64,
        metrics: HashMap<String, f64>,
        checkpoint: Option<String>,
    ) -> PyResult<(String, bool)> {
        let request = self.remote.request(v1::ReportRequest {
            trial: Self::reference(experiment, trial, attempt),
            step,
            metrics,
            checkpoint: checkpoint.unwrap_or_default(),
        });
        let answer = py
            .detach(|| self.runtime.block_on(self.trials().report(request)))
            .map_err(status_to_py)?
            .into_inner();
        let decision = match answer.decision() {
            v1::Decision::Stop => "stop",
            v1::Decision::Pause => "pause",
            _ => "continue",
        };
        Ok((decision.to_owned(), answer.duplicate))
    }

    /// Declares a checkpoint of an already reported step.
    fn checkpoint(
        &self,
        py: Python<'_>,
        experiment: String,
        trial: u64,
        attempt: u32,
        step: u64,
        path: String,
    ) -> PyResult<()> {
        let request = self.remote.request(v1::CheckpointRequest {
            trial: Self::reference(experiment, trial, attempt),
            checkpoint: Some(v1::CheckpointLocation { step, path }),
        });
        py.detach(|| self.runtime.block_on(self.trials().checkpoint(request)))
            .map_err(status_to_py)?;
        Ok(())
    }

    /// Ends the trial's run.
    fn finish(
        &self,
        py: Python<'_>,
        experiment: String,
        trial: u64,
        attempt: u32,
        success: bool,
        reason: String,
    ) -> PyResult<()> {
        let request = self.remote.request(v1::FinishRequest {
            trial: Self::reference(experiment, trial, attempt),
            success,
            reason,
        });
        py.detach(|| self.runtime.block_on(self.trials().finish(request)))
            .map_err(status_to_py)?;
        Ok(())
    }
}
