//! The client side of server mode: connecting to `rung serve` (token, TLS) and reading an
//! experiment back in the shapes the local commands print.

use std::path::{Path, PathBuf};

use tonic::transport::Channel;
use tune_core::controller::TrialRow;
use tune_core::trial::{Metrics, Report, TrialId, TrialStatus};
use tune_core::value::Config;
use tune_proto::v1;
use tune_proto::v1::experiments_client::ExperimentsClient;
use tune_runtime::store::ExperimentInfo;

use tune_sweep::error::{Error, Result};
use tune_sweep::spec::Spec;

/// How to reach a server.
#[derive(Debug, Clone)]
pub struct Remote {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// The bearer token.
    pub token: Option<String>,
    /// A PEM CA certificate to trust for `https://`.
    pub ca_cert: Option<PathBuf>,
}

/// Reads a token file: its first line, trimmed; an empty token is an error.
pub fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read --token-file {}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(Error::Usage(format!("--token-file {} is empty", path.display())));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Error::Usage(format!(
            "--token-file {}: a token is printable ASCII without spaces",
            path.display()
        )));
    }
    Ok(token)
}

impl Remote {
    /// Connects (within 5 s).
    pub async fn channel(&self) -> Result<Channel> {
        tune_proto::endpoint(&self.url, self.ca_cert.as_deref())
            .map_err(Error::Usage)?
            .connect()
            .await
            .map_err(|e| Error::Usage(format!("cannot reach the server at {}: {e}", self.url)))
    }

    /// A request carrying the token.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert(tune_proto::AUTHORIZATION, value);
        }
        request
    }

    /// The experiments client.
    pub async fn experiments(&self) -> Result<ExperimentsClient<Channel>> {
        Ok(ExperimentsClient::new(self.channel().await?))
    }
}

/// A gRPC status as an error of this crate.
pub fn status_error(status: tonic::Status) -> Error {
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::FailedPrecondition => {
            Error::Usage(format!("the server says: {}", status.message()))
        }
        tonic::Code::Unauthenticated => Error::Usage(format!(
            "the server refused the call: {} (pass --token-file)",
            status.message()
        )),
        _ => Error::Internal(format!("the server answered {:?}: {}", status.code(), status.message())),
    }
}

/// An experiment read from a server, in the shapes the local commands use.
pub struct RemoteExperiment {
    /// Its status.
    pub status: v1::ExperimentStatus,
    /// Name, seed, elapsed time, state.
    pub info: ExperimentInfo,
    /// Its spec.
    pub spec: Spec,
    /// Its trials.
    pub trials: Vec<TrialRow>,
    /// Metrics at each trial's best step.
    pub best_metrics: Vec<(TrialId, Metrics)>,
}

/// Reads an experiment (the newest when `name` is `None`) and its trials from a server.
pub async fn fetch(remote: &Remote, name: Option<&str>) -> Result<RemoteExperiment> {
    let mut client = remote.experiments().await?;
    let request = v1::GetRequest {
        name: name.unwrap_or_default().to_owned(),
    };
    let status = client
        .get(remote.request(request.clone()))
        .await
        .map_err(status_error)?
        .into_inner();
    let trials = client
        .list_trials(remote.request(v1::GetRequest {
            name: status.name.clone(),
        }))
        .await
        .map_err(status_error)?
        .into_inner()
        .trials;
    let spec: Spec = serde_json::from_str(&status.spec_json).map_err(tune_runtime::Error::from)?;
    let info = ExperimentInfo {
        id: 0,
        name: status.name.clone(),
        spec: status.spec_json.clone(),
        seed: status.seed,
        created_at: 0,
        status: if status.state == "finished" {
            "finished"
        } else {
            "running"
        }
        .into(),
        end_cause: (!status.end_cause.is_empty()).then(|| status.end_cause.clone()),
        elapsed_ms: status.elapsed_ms,
    };
    let mut best_metrics = Vec::new();
    let mut rows = Vec::with_capacity(trials.len());
    for trial in trials {
        let id = TrialId(trial.trial);
        let config: Config = serde_json::from_str(&trial.config_json).map_err(tune_runtime::Error::from)?;
        best_metrics.push((id, trial.best_metrics.into_iter().collect()));
        rows.push(TrialRow {
            id,
            status: TrialStatus::from_label(&trial.status).unwrap_or(TrialStatus::Pending),
            config,
            failures: trial.failures,
            launches: trial.launches,
            last: (!trial.last_metrics.is_empty() || trial.last_step > 0).then(|| Report {
                step: trial.last_step,
                metrics: trial.last_metrics.into_iter().collect(),
            }),
            best: trial.has_best.then_some((trial.best_value, trial.best_step)),
            error: (!trial.error.is_empty()).then_some(trial.error),
        });
    }
    Ok(RemoteExperiment {
        status,
        info,
        spec,
        trials: rows,
        best_metrics,
    })
}
