//! The gRPC services of `rung.v1`, the token check, and the conversion of errors to statuses.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::service::Interceptor;
use tonic::transport::server::Router;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};
use tune_core::controller::Outcome;
use tune_core::trial::{Decision, TrialId};
use tune_proto::v1;
use tune_proto::v1::agents_server::{Agents, AgentsServer};
use tune_proto::v1::experiments_server::{Experiments, ExperimentsServer};
use tune_proto::v1::trials_server::{Trials, TrialsServer};
use tune_runtime::store::Store;

use super::Shared;
use super::hub::{Followup, Refusal, RunState, decision_to_proto};
use crate::error::{Error, Result};
use tune_sweep::spec::Spec;

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Status {
        match refusal {
            Refusal::NotFound(message) => Status::not_found(message),
            Refusal::Precondition(message) => Status::failed_precondition(message),
            Refusal::Invalid(message) => Status::invalid_argument(message),
        }
    }
}

/// Checks `authorization: Bearer <token>` on every call when the server has a token.
#[derive(Clone)]
struct Auth {
    expected: Option<Arc<str>>,
}

impl Interceptor for Auth {
    fn call(&mut self, request: Request<()>) -> std::result::Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get(tune_proto::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(request),
            other => {
                let peer = request
                    .remote_addr()
                    .map_or_else(|| "unknown peer".to_owned(), |a| a.to_string());
                let why = if other.is_some() { "a wrong token" } else { "no token" };
                tracing::warn!(%peer, "rejected a call with {why}");
                Err(Status::unauthenticated(format!(
                    "this server requires a token: send `authorization: Bearer <token>` ({why} given)"
                )))
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The router with the three services, the token check and the size limits.
pub(super) fn router(shared: Arc<Shared>) -> Result<Router> {
    let auth = Auth {
        expected: shared.config.token.as_deref().map(Arc::from),
    };
    let limit = shared.config.max_message_bytes;
    let service = Service {
        shared: Arc::clone(&shared),
    };
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some((cert, key)) = &shared.config.tls {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))
        };
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| {
                Error::Usage(format!(
                    "TLS certificate {} or key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
    }
    Ok(builder
        // Without the token check: kubelet's gRPC probes (and grpc-health-probe) send none.
        .add_service(health_service(&shared))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            TrialsServer::new(service.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            auth.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            AgentsServer::new(service.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            auth.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ExperimentsServer::new(service)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            auth,
        )))
}

/// The standard `grpc.health.v1.Health` service: the whole server (`""`) and each `rung.v1`
/// service answer SERVING from now on (the router is built once the store's experiments have
/// been resumed), and NOT_SERVING once the server begins shutting down.
fn health_service(
    shared: &Arc<Shared>,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    use tonic::server::NamedService;
    use tonic_health::ServingStatus;

    const SERVICES: [&str; 4] = [
        "",
        <TrialsServer<Service> as NamedService>::NAME,
        <AgentsServer<Service> as NamedService>::NAME,
        <ExperimentsServer<Service> as NamedService>::NAME,
    ];
    let (reporter, server) = tonic_health::server::health_reporter();
    // Holds the server weakly: the watcher ends with it.
    let watched = Arc::downgrade(shared);
    tokio::spawn(async move {
        for name in SERVICES {
            reporter.set_service_status(name, ServingStatus::Serving).await;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let Some(shared) = watched.upgrade() else { return };
            let closing = shared.hub().closing;
            drop(shared);
            if closing {
                for name in SERVICES {
                    reporter.set_service_status(name, ServingStatus::NotServing).await;
                }
                return;
            }
        }
    });
    server
}

#[derive(Clone)]
struct Service {
    shared: Arc<Shared>,
}

type Reply<T> = std::result::Result<Response<T>, Status>;

fn trial_ref(reference: Option<v1::TrialRef>) -> std::result::Result<v1::TrialRef, Status> {
    let reference = reference.ok_or_else(|| Status::invalid_argument("trial is missing"))?;
    if reference.experiment.is_empty() {
        return Err(Status::invalid_argument("trial.experiment is empty"));
    }
    Ok(reference)
}

#[tonic::async_trait]
impl Trials for Service {
    async fn ask(&self, request: Request<v1::AskRequest>) -> Reply<v1::AskResponse> {
        let request = request.into_inner();
        let deadline = Instant::now() + Duration::from_millis(u64::from(request.wait_ms.min(60_000)));
        loop {
            let (notify, finished) = {
                let mut hub = self.shared.hub();
                if let Some(assignment) = hub.ask(&request.experiment, &request.worker)? {
                    return Ok(Response::new(v1::AskResponse {
                        assignment: Some(assignment),
                        finished: false,
                    }));
                }
                let entry = &hub.experiments[&request.experiment];
                (Arc::clone(&entry.asked), entry.state != RunState::Running)
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if finished || left.is_zero() {
                return Ok(Response::new(v1::AskResponse {
                    assignment: None,
                    finished,
                }));
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(250)), notify.notified()).await;
        }
    }

    async fn report(&self, request: Request<v1::ReportRequest>) -> Reply<v1::ReportResponse> {
        let request = request.into_inner();
        let reference = trial_ref(request.trial)?;
        let pending =
            self.shared
                .hub()
                .report(&reference, None, request.step, &request.metrics, &request.checkpoint)?;
        let (decision, duplicate) = match pending {
            Err(repeated) => (repeated.await, true),
            Ok(future) => {
                let decision = future.await;
                let key = (reference.experiment.clone(), TrialId(reference.trial));
                self.shared.hub().decided(&key, request.step, decision);
                (decision, false)
            }
        };
        Ok(Response::new(v1::ReportResponse {
            decision: decision_to_proto(decision) as i32,
            duplicate,
        }))
    }

    async fn checkpoint(&self, request: Request<v1::CheckpointRequest>) -> Reply<v1::CheckpointResponse> {
        let request = request.into_inner();
        let reference = trial_ref(request.trial)?;
        let location = request
            .checkpoint
            .ok_or_else(|| Status::invalid_argument("checkpoint is missing"))?;
        let pending = self
            .shared
            .hub()
            .checkpoint(&reference, location.step, &location.path)?;
        pending.await;
        Ok(Response::new(v1::CheckpointResponse {}))
    }

    async fn finish(&self, request: Request<v1::FinishRequest>) -> Reply<v1::FinishResponse> {
        let request = request.into_inner();
        let reference = trial_ref(request.trial)?;
        let outcome = if request.success {
            Outcome::Success
        } else {
            Outcome::Failed {
                reason: if request.reason.is_empty() {
                    "the worker reported a failure".into()
                } else {
                    request.reason
                },
            }
        };
        let committed = self.shared.hub().exited(&reference, None, outcome)?;
        self.shared.place_now();
        // Answered once the exit is in the store, as a report is.
        let _ = committed.await;
        Ok(Response::new(v1::FinishResponse {}))
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = std::result::Result<v1::ControllerMessage, Status>> + Send>>;
type WatchStream = Pin<Box<dyn Stream<Item = std::result::Result<v1::ExperimentStatus, Status>> + Send>>;

#[tonic::async_trait]
impl Agents for Service {
    async fn register(&self, request: Request<v1::RegisterRequest>) -> Reply<v1::RegisterResponse> {
        let request = request.into_inner();
        if request.name.is_empty() || request.name.len() > 128 {
            return Err(Status::invalid_argument("name must have 1 to 128 characters"));
        }
        let inventory = request
            .inventory
            .ok_or_else(|| Status::invalid_argument("inventory is missing"))?;
        let inventory = inventory_from_proto(inventory)?;
        // Where its trials keep their folders: their checkpoints must lie there.
        let work_dir = Some(std::path::PathBuf::from(&request.work_dir)).filter(|dir| dir.is_absolute());
        let id = if request.previous_id.is_empty() {
            new_agent_id(&request.name)
        } else {
            request.previous_id
        };
        tracing::info!(agent = %id, name = %request.name, inventory = %inventory.describe(), "agent registered");
        self.shared
            .hub()
            .register(id.clone(), request.name, inventory, work_dir, Instant::now());
        self.shared.place_now();
        Ok(Response::new(v1::RegisterResponse {
            agent_id: id,
            heartbeat_ms: self.shared.config.heartbeat.as_millis() as u32,
            lease_ms: self.shared.config.lease.as_millis() as u32,
        }))
    }

    type SessionStream = SessionStream;

    async fn session(&self, request: Request<Streaming<v1::AgentMessage>>) -> Reply<SessionStream> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the session ended before its hello"))?;
        let Some(v1::agent_message::Body::Hello(hello)) = first.body else {
            return Err(Status::invalid_argument("a session opens with a hello"));
        };
        let (sender, outbound) = mpsc::unbounded_channel();
        let agent = hello.agent_id.clone();
        let serial = self
            .shared
            .hub()
            .hello(&agent, &hello.running, sender.clone(), Instant::now())?;
        self.shared.place_now();
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            loop {
                let message = match inbound.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::info!(%agent, %status, "agent session ended");
                        break;
                    }
                };
                match handle_agent_message(&shared, &agent, message) {
                    Ok(Followup::None) => {}
                    Ok(Followup::Decide {
                        seq,
                        key,
                        step,
                        decision,
                    }) => {
                        let shared = Arc::clone(&shared);
                        let agent = agent.clone();
                        tokio::spawn(async move {
                            let decision = decision.await;
                            let mut hub = shared.hub();
                            hub.decided(&key, step, decision);
                            if let Some(agent) = hub.agents.get_mut(&agent) {
                                super::hub::send(agent, ack(seq, decision));
                            }
                        });
                    }
                    Ok(Followup::AcknowledgeAfter { seq, committed }) => {
                        let shared = Arc::clone(&shared);
                        let agent = agent.clone();
                        tokio::spawn(async move {
                            let _ = committed.await;
                            acknowledge(&shared, &agent, seq, Decision::Stop);
                        });
                    }
                    Err(status) => {
                        tracing::warn!(%agent, %status, "refused a message of an agent");
                    }
                }
            }
            shared.hub().session_closed(&agent, serial);
        });
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(outbound);
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(stream, Ok))))
    }
}

fn ack(seq: u64, decision: Decision) -> v1::ControllerMessage {
    v1::ControllerMessage {
        body: Some(v1::controller_message::Body::Ack(v1::Ack {
            seq,
            decision: decision_to_proto(decision) as i32,
        })),
    }
}

fn handle_agent_message(
    shared: &Shared,
    agent: &str,
    message: v1::AgentMessage,
) -> std::result::Result<Followup, Status> {
    use v1::agent_message::Body;
    let Some(body) = message.body else {
        return Ok(Followup::None);
    };
    match body {
        Body::Hello(_) => Err(Status::invalid_argument("a second hello in one session")),
        Body::Heartbeat(_) | Body::Started(_) => {
            shared.hub().renew(agent, Instant::now());
            Ok(Followup::None)
        }
        Body::Report(report) => {
            let seq = report.seq;
            let answer = trial_ref(report.trial.clone()).and_then(|reference| {
                // One lock per report: any message renews the agent's lease.
                let mut hub = shared.hub();
                hub.renew(agent, Instant::now());
                hub.report(
                    &reference,
                    Some(agent),
                    report.step,
                    &report.metrics,
                    &report.checkpoint,
                )
                .map_err(Status::from)
                .map(|pending| (reference, pending))
            });
            match answer {
                // A retry is acknowledged too only once the report it repeats is committed.
                Ok((reference, Ok(decision) | Err(decision))) => Ok(Followup::Decide {
                    seq,
                    key: (reference.experiment, TrialId(reference.trial)),
                    step: report.step,
                    decision,
                }),
                Err(status) => {
                    // A report of a launch that is no longer this agent's: acknowledged (so the
                    // agent drops it) and answered STOP (so it stops what still runs).
                    acknowledge(shared, agent, seq, Decision::Stop);
                    Err(status)
                }
            }
        }
        Body::Exited(exited) => {
            let seq = exited.seq;
            let outcome = if exited.success {
                Outcome::Success
            } else {
                Outcome::Failed {
                    reason: exited.reason.clone(),
                }
            };
            let result = trial_ref(exited.trial.clone()).and_then(|reference| {
                let mut hub = shared.hub();
                hub.renew(agent, Instant::now());
                hub.exited(&reference, Some(agent), outcome).map_err(Status::from)
            });
            shared.place_now();
            match result {
                // Acknowledged once the exit is committed: until then the agent keeps it to resend.
                Ok(committed) => Ok(Followup::AcknowledgeAfter { seq, committed }),
                Err(status) => {
                    acknowledge(shared, agent, seq, Decision::Stop);
                    Err(status)
                }
            }
        }
    }
}

fn acknowledge(shared: &Shared, agent: &str, seq: u64, decision: Decision) {
    let mut hub = shared.hub();
    if let Some(agent) = hub.agents.get_mut(agent) {
        super::hub::send(agent, ack(seq, decision));
    }
}

fn new_agent_id(name: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(name.as_bytes());
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .take(40)
        .collect();
    format!("{clean}-{:08x}", hasher.finish() as u32)
}

fn inventory_from_proto(inventory: v1::Inventory) -> std::result::Result<tune_core::resources::Inventory, Status> {
    if !inventory.cpus.is_finite() || inventory.cpus < 0.0 {
        return Err(Status::invalid_argument(format!(
            "inventory.cpus = {} must be a finite number >= 0",
            inventory.cpus
        )));
    }
    if let Some((name, amount)) = inventory.custom.iter().find(|(_, v)| !v.is_finite() || **v < 0.0) {
        return Err(Status::invalid_argument(format!(
            "inventory.custom.{name} = {amount} must be a finite number >= 0"
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for gpu in &inventory.gpus {
        if !seen.insert(gpu.index) {
            return Err(Status::invalid_argument(format!(
                "inventory lists GPU {} twice",
                gpu.index
            )));
        }
    }
    Ok(tune_core::resources::Inventory {
        cpus: inventory.cpus,
        memory: inventory.memory,
        gpus: inventory
            .gpus
            .into_iter()
            .map(|gpu| tune_core::resources::GpuInfo {
                index: gpu.index,
                uuid: gpu.uuid,
                model: gpu.model,
                memory: gpu.memory,
                mig: gpu
                    .mig
                    .into_iter()
                    .map(|mig| tune_core::resources::MigInfo {
                        uuid: mig.uuid,
                        name: mig.name,
                        memory: mig.memory,
                    })
                    .collect(),
            })
            .collect(),
        custom: inventory.custom.into_iter().collect(),
    })
}

// ---------------------------------------------------------------------------------------------

impl Service {
    fn status_of(&self, name: &str) -> std::result::Result<v1::ExperimentStatus, Status> {
        let hub = self.shared.hub();
        let name = if name.is_empty() {
            hub.experiments
                .values()
                .max_by_key(|e| e.id)
                .map(|e| e.name.clone())
                .ok_or_else(|| Status::not_found("this server has no experiment yet"))?
        } else {
            name.to_owned()
        };
        let entry = hub
            .experiments
            .get(&name)
            .ok_or_else(|| Status::not_found(format!("no experiment \"{name}\" on this server")))?;
        let progress = &entry.progress;
        Ok(v1::ExperimentStatus {
            name: entry.name.clone(),
            spec_json: entry.spec_json.clone(),
            seed: entry.seed,
            elapsed_ms: entry.elapsed().as_millis() as u64,
            metric: entry.spec.metric.clone(),
            mode: entry.spec.mode.to_string(),
            state: entry.state.label().to_owned(),
            created: progress.created,
            pending: progress.pending,
            running: progress.running,
            paused: progress.paused,
            completed: progress.completed,
            stopped: progress.stopped,
            sweep_ended: progress.sweep_ended,
            errored: progress.errored,
            best: progress.best.map(|(trial, value, step)| v1::Best {
                trial: trial.0,
                value,
                step,
            }),
            end_cause: match &entry.state {
                RunState::Finished(cause) => cause.clone(),
                RunState::Failed(why) => why.clone(),
                _ => String::new(),
            },
            waiting: hub.waiting(&name),
            agents: hub.agent_statuses(),
            max_trials: progress.max_trials.map_or(-1, |n| n as i64),
        })
    }
}

#[tonic::async_trait]
impl Experiments for Service {
    async fn create(&self, request: Request<v1::CreateRequest>) -> Reply<v1::ExperimentStatus> {
        let request = request.into_inner();
        let folder = std::path::PathBuf::from(if request.spec_dir.is_empty() {
            "."
        } else {
            &request.spec_dir
        });
        let spec = Spec::from_submitted(&request.spec, request.json, &folder)
            .map_err(|error| Status::from(Error::from(error)))?;
        if self.shared.hub().closing {
            return Err(Status::unavailable("the server is shutting down"));
        }
        let name = super::start_experiment(&self.shared, super::Start::New(Box::new(spec)))
            .await
            .map_err(Status::from)?;
        eprintln!("[rung] experiment \"{name}\" submitted");
        Ok(Response::new(self.status_of(&name)?))
    }

    async fn get(&self, request: Request<v1::GetRequest>) -> Reply<v1::ExperimentStatus> {
        Ok(Response::new(self.status_of(&request.into_inner().name)?))
    }

    async fn list(&self, _request: Request<v1::ListRequest>) -> Reply<v1::ListResponse> {
        let names: Vec<String> = self.shared.hub().experiments.keys().cloned().collect();
        let experiments = names.iter().filter_map(|name| self.status_of(name).ok()).collect();
        Ok(Response::new(v1::ListResponse { experiments }))
    }

    async fn list_trials(&self, request: Request<v1::GetRequest>) -> Reply<v1::ListTrialsResponse> {
        let status = self.status_of(&request.into_inner().name)?;
        let (id, name) = {
            let hub = self.shared.hub();
            let entry = &hub.experiments[&status.name];
            (entry.id, entry.name.clone())
        };
        let db = self.shared.config.db.clone();
        let (trials, reports) = tokio::task::spawn_blocking(move || -> Result<_> {
            let store = Store::open(&db)?;
            Ok((store.trials(id)?, store.reports(id, None)?))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::from)?;
        let mut best_metrics: HashMap<TrialId, HashMap<String, f64>> = HashMap::new();
        let best_steps: HashMap<TrialId, u64> = trials.iter().filter_map(|t| t.best.map(|(_, s)| (t.id, s))).collect();
        for (trial, report) in reports {
            if best_steps.get(&trial) == Some(&report.step) {
                best_metrics.insert(trial, report.metrics.into_iter().collect());
            }
        }
        let hub = self.shared.hub();
        let trials = trials
            .into_iter()
            .map(|trial| v1::TrialStatus {
                trial: trial.id.0,
                status: trial.status.label().to_owned(),
                config_json: trial.config.to_json(),
                last_step: trial.last.as_ref().map_or(0, |r| r.step),
                last_metrics: trial
                    .last
                    .as_ref()
                    .map(|r| r.metrics.clone().into_iter().collect())
                    .unwrap_or_default(),
                has_best: trial.best.is_some(),
                best_value: trial.best.map_or(0.0, |(v, _)| v),
                best_step: trial.best.map_or(0, |(_, s)| s),
                failures: trial.failures,
                launches: trial.launches,
                error: trial.error.clone().unwrap_or_default(),
                agent: hub.agent_of(&name, trial.id).unwrap_or_default(),
                best_metrics: best_metrics.remove(&trial.id).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(v1::ListTrialsResponse { trials }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<v1::GetRequest>) -> Reply<WatchStream> {
        let first = self.status_of(&request.into_inner().name)?;
        let mut changes = {
            let hub = self.shared.hub();
            hub.experiments[&first.name].changed.subscribe()
        };
        let service = self.clone();
        let name = first.name.clone();
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut status = first;
            loop {
                let done = status.state != "running";
                if sender.send(Ok(status)).await.is_err() || done {
                    return;
                }
                // At most ten updates a second, however fast reports come.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if changes.changed().await.is_err() {
                    return;
                }
                match service.status_of(&name) {
                    Ok(next) => status = next,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        ))))
    }

    async fn stop(&self, request: Request<v1::GetRequest>) -> Reply<v1::ExperimentStatus> {
        let status = self.status_of(&request.into_inner().name)?;
        let handle = self.shared.hub().experiments[&status.name].handle.clone();
        match handle {
            Some(handle) => handle.stop_sweep(),
            None => {
                return Err(Status::failed_precondition(format!(
                    "experiment \"{}\" is not running ({})",
                    status.name, status.state
                )));
            }
        }
        Ok(Response::new(self.status_of(&status.name)?))
    }
}
