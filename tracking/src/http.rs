//! MLflow's REST API as the tracking thread sees it: the [`Api`] trait (one blocking call at a
//! time, so that tests can put an in-memory MLflow in its place), how a call fails
//! ([`CallError`]), and the reqwest client that makes the calls over HTTP.

use std::time::Duration;

use serde_json::Value;

use crate::convert::truncate;
use crate::error::{Error, Result};

/// How an MLflow call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// No answer, or a 5xx / 429 one: try again later.
    Unreachable(String),
    /// A 4xx answer: MLflow refuses the request; sending it again would not help.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// MLflow's `error_code` (`RESOURCE_DOES_NOT_EXIST`, ...), or empty.
        code: String,
        /// What MLflow said.
        message: String,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) => f.write_str(why),
            CallError::Rejected { status, code, message } => write!(f, "HTTP {status} {code}: {message}"),
        }
    }
}

/// The HTTP method of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET, with the body's fields as the query.
    Get,
    /// POST, with the body as JSON.
    Post,
}

/// MLflow's REST API: one call at a time, blocking. `endpoint` is the part after
/// `/api/2.0/mlflow/`, e.g. `runs/log-batch`.
pub trait Api: Send + 'static {
    /// Makes the call and returns the answer's JSON (`null` when it has none).
    fn call(&mut self, method: Method, endpoint: &str, body: &Value) -> std::result::Result<Value, CallError>;
}

/// [`Api`] over HTTP with reqwest, on a small runtime of the tracking thread's own.
pub(crate) struct Http {
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    token: Option<String>,
    basic: Option<(String, String)>,
}

impl Http {
    /// A client of the MLflow server at `uri`, with the credentials of `MLFLOW_TRACKING_TOKEN`,
    /// or else `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`.
    pub(crate) fn new(uri: &str) -> Result<Http> {
        // reqwest is built without a default TLS provider; this one serves https:// servers.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("rung/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| Error::Client(error.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        Ok(Http {
            base: uri.trim().trim_end_matches('/').to_owned(),
            client,
            runtime,
            token: env("MLFLOW_TRACKING_TOKEN"),
            basic: env("MLFLOW_TRACKING_USERNAME")
                .map(|user| (user, env("MLFLOW_TRACKING_PASSWORD").unwrap_or_default())),
        })
    }
}

/// What went wrong with a request, causes included but without reqwest's outer "error sending
/// request for url (...)" (the URL is named elsewhere), e.g. `client error (Connect): tcp connect
/// error: Connection refused (os error 111)`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut source = error.source();
    let mut text = match source {
        Some(first) => {
            source = first.source();
            first.to_string()
        }
        None => error.to_string(),
    };
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl Api for Http {
    fn call(&mut self, method: Method, endpoint: &str, body: &Value) -> std::result::Result<Value, CallError> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let mut request = match method {
            Method::Get => {
                let query: Vec<(String, String)> = body
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(key, value)| {
                        (
                            key.clone(),
                            value.as_str().map_or_else(|| value.to_string(), str::to_owned),
                        )
                    })
                    .collect();
                let url = reqwest::Url::parse_with_params(&url, &query)
                    .map_err(|error| CallError::Unreachable(format!("bad URL {url}: {error}")))?;
                self.client.get(url)
            }
            Method::Post => self.client.post(&url).json(body),
        };
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        } else if let Some((user, password)) = &self.basic {
            request = request.basic_auth(user, Some(password));
        }
        let unreachable = |error: reqwest::Error| CallError::Unreachable(error_chain(&error));
        self.runtime.block_on(async move {
            let response = request.send().await.map_err(unreachable)?;
            let status = response.status();
            let bytes = response.bytes().await.map_err(unreachable)?;
            let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(parsed);
            }
            let snippet = || truncate(String::from_utf8_lossy(&bytes).trim(), 300);
            if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
                return Err(CallError::Unreachable(format!("HTTP {status}: {}", snippet())));
            }
            Err(CallError::Rejected {
                status: status.as_u16(),
                code: parsed["error_code"].as_str().unwrap_or_default().to_owned(),
                message: parsed["message"].as_str().map_or_else(snippet, str::to_owned),
            })
        })
    }
}
