//! The agent daemon: register, keep one session with the controller, run what it places here.
//!
//! Trials run with tune-core's local-process runner and protocol (`rung:report` lines), with
//! `CUDA_VISIBLE_DEVICES` set to the devices of their bundle. Their reports are numbered and
//! kept until the controller acknowledges them, so a lost connection loses nothing: the agent
//! keeps its trials running, reconnects with backoff, says what it still runs (the controller
//! keeps or kills each) and sends again what was not acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tonic::transport::{Channel, Endpoint};
use tune_core::controller::{CheckpointRef, Launch, Outcome};
use tune_core::resources::Inventory;
use tune_core::trial::{Decision, Report, TrialId};
use tune_core::value::Config;
use tune_proto::v1;
use tune_proto::v1::agents_client::AgentsClient;
use tune_runtime::runner::{ProcessConfig, TrialSink, run_process};
use tune_runtime::storage::CheckpointStorage;

/// Everything an agent needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The controller's URL (`http://host:7470`, or `https://` with TLS).
    pub controller: String,
    /// The bearer token, when the controller has one.
    pub token: Option<String>,
    /// A PEM CA certificate to trust for `https://` (default: the system's roots are not used;
    /// a private CA is the norm for a cluster).
    pub ca_cert: Option<PathBuf>,
    /// The name shown in `rung status`.
    pub name: String,
    /// Trial folders (checkpoints, logs) go under `<work_dir>/<experiment>/<trial>/`.
    pub work_dir: PathBuf,
    /// What this machine offers.
    pub inventory: Inventory,
}

/// Why an agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The controller URL or TLS settings are wrong.
    #[error("{0}")]
    Setup(String),
}

/// A trial this agent runs.
struct Running {
    attempt: u32,
    pid: Option<u32>,
    stop: watch::Sender<bool>,
    /// Its exit was reported but not yet acknowledged.
    exited: bool,
}

/// What an unacknowledged message was.
struct Sent {
    key: (String, u64),
    attempt: u32,
    exit: bool,
}

#[derive(Default)]
struct State {
    id: Option<String>,
    trials: HashMap<(String, u64), Running>,
    unacked: BTreeMap<u64, v1::AgentMessage>,
    /// Which launch each unacknowledged message is of, and whether it is its exit.
    message_of: HashMap<u64, Sent>,
    next_seq: u64,
    session: Option<mpsc::UnboundedSender<v1::AgentMessage>>,
}

struct Shared {
    config: AgentConfig,
    state: Mutex<State>,
    /// True while a session is open: registered, and the controller's stream answered.
    live: watch::Sender<bool>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers a message, keeps it until acknowledged, and sends it if a session is open.
    fn send_reliably(&self, build: impl FnOnce(u64) -> v1::AgentMessage, sent: Sent) {
        let mut state = self.state();
        state.next_seq += 1;
        let seq = state.next_seq;
        let message = build(seq);
        state.unacked.insert(seq, message.clone());
        state.message_of.insert(seq, sent);
        if let Some(session) = &state.session {
            let _ = session.send(message);
        }
    }

    fn send_now(&self, message: v1::AgentMessage) {
        if let Some(session) = &self.state().session {
            let _ = session.send(message);
        }
    }
}

/// Runs the agent until `shutdown` resolves; then stops its trials (SIGTERM, SIGKILL after their
/// grace) and reports their exits before returning.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    run_with_health(config, None, shutdown).await
}

/// [`run`], also answering health checks over HTTP on `health` (see [`serve_health`]).
pub async fn run_with_health(
    config: AgentConfig,
    health: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let endpoint = endpoint(&config)?;
    std::fs::create_dir_all(&config.work_dir)
        .map_err(|e| AgentError::Setup(format!("cannot create --work-dir {}: {e}", config.work_dir.display())))?;
    let shared = Arc::new(Shared {
        config,
        state: Mutex::new(State::default()),
        live: watch::channel(false).0,
    });
    let health = health.map(|listener| tokio::spawn(serve_health(listener, shared.live.subscribe())));
    let sessions = {
        let shared = Arc::clone(&shared);
        async move {
            let first = Duration::from_millis(100);
            let mut backoff = first;
            loop {
                let began = tokio::time::Instant::now();
                let why = session(&shared, endpoint.clone()).await.err().unwrap_or_default();
                if began.elapsed() > Duration::from_secs(10) {
                    backoff = first; // it was a working session: retry at once
                }
                tracing::warn!(controller = %shared.config.controller, %why, retry_in = ?backoff, "no session with the controller");
                shared.state().session = None;
                shared.live.send_replace(false);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    tokio::select! {
        () = sessions => unreachable!("the session loop never ends"),
        () = shutdown => {}
    }
    shared.live.send_replace(false);
    // Stop what runs; give the exits a moment to reach the controller.
    let stops: Vec<watch::Sender<bool>> = shared.state().trials.values().map(|t| t.stop.clone()).collect();
    for stop in &stops {
        let _ = stop.send(true);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if shared.state().trials.values().all(|t| t.exited) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(health) = health {
        health.abort();
    }
    Ok(())
}

/// Answers health checks over HTTP on `listener` until dropped: `GET /live` is 200 while the
/// process runs, `GET /ready` is 200 while `live` is true (the agent has a session with the
/// controller) and 503 otherwise, anything else 404. For Kubernetes' HTTP probes.
pub async fn serve_health(listener: tokio::net::TcpListener, live: watch::Receiver<bool>) {
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(error) => {
                tracing::warn!(%error, "health endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let live = live.clone();
        tokio::spawn(tokio::time::timeout(
            Duration::from_secs(5),
            answer_health(socket, live),
        ));
    }
}

async fn answer_health(mut socket: tokio::net::TcpStream, live: watch::Receiver<bool>) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The request's head (a probe sends no body), read whole so that closing does not reset.
    let mut head = Vec::with_capacity(256);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let read = socket.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let line = head.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (status, body) = match (words.next(), words.next()) {
        (Some(b"GET"), Some(b"/live")) => ("200 OK", "live\n"),
        (Some(b"GET"), Some(b"/ready")) if *live.borrow() => ("200 OK", "ready\n"),
        (Some(b"GET"), Some(b"/ready")) => ("503 Service Unavailable", "no session with the controller\n"),
        _ => ("404 Not Found", "not found\n"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

fn endpoint(config: &AgentConfig) -> Result<Endpoint, AgentError> {
    tune_proto::endpoint(&config.controller, config.ca_cert.as_deref())
        .map_err(|e| AgentError::Setup(format!("--controller: {e}")))
}

fn with_token<T>(token: &Option<String>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        request.metadata_mut().insert(tune_proto::AUTHORIZATION, value);
    }
    request
}

/// One session: register, hello, resend, then serve until the stream breaks.
async fn session(shared: &Arc<Shared>, endpoint: Endpoint) -> Result<(), String> {
    let channel: Channel = endpoint.connect().await.map_err(|e| format!("cannot connect: {e}"))?;
    let mut client = AgentsClient::new(channel);
    let config = &shared.config;
    let previous = shared.state().id.clone().unwrap_or_default();
    let registered = client
        .register(with_token(
            &config.token,
            v1::RegisterRequest {
                name: config.name.clone(),
                inventory: Some(inventory_to_proto(&config.inventory)),
                previous_id: previous,
                version: env!("CARGO_PKG_VERSION").into(),
                work_dir: config.work_dir.display().to_string(),
            },
        ))
        .await
        .map_err(|status| format!("register: {}", status.message()))?
        .into_inner();
    let heartbeat = Duration::from_millis(u64::from(registered.heartbeat_ms.max(100)));
    let (sender, outbound) = mpsc::unbounded_channel();
    {
        let mut state = shared.state();
        state.id = Some(registered.agent_id.clone());
        let running = state
            .trials
            .iter()
            .map(|((experiment, trial), running)| v1::RunningTrial {
                trial: Some(v1::TrialRef {
                    experiment: experiment.clone(),
                    trial: *trial,
                    attempt: running.attempt,
                }),
                pid: running.pid.unwrap_or(0),
            })
            .collect();
        let _ = sender.send(v1::AgentMessage {
            body: Some(v1::agent_message::Body::Hello(v1::Hello {
                agent_id: registered.agent_id.clone(),
                running,
            })),
        });
        for message in state.unacked.values() {
            let _ = sender.send(message.clone());
        }
        state.session = Some(sender.clone());
    }
    tracing::info!(agent = %registered.agent_id, controller = %config.controller, "session open");
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(outbound);
    let mut inbound = client
        .session(with_token(&config.token, stream))
        .await
        .map_err(|status| format!("session: {}", status.message()))?
        .into_inner();
    shared.live.send_replace(true);
    let mut ticker = tokio::time::interval(heartbeat);
    loop {
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(message)) => handle(shared, message),
                Ok(None) => return Err("the controller closed the session".into()),
                Err(status) => return Err(format!("session: {}", status.message())),
            },
            _ = ticker.tick() => {
                let _ = sender.send(v1::AgentMessage { body: Some(v1::agent_message::Body::Heartbeat(v1::Heartbeat {})) });
            }
        }
    }
}

fn handle(shared: &Arc<Shared>, message: v1::ControllerMessage) {
    use v1::controller_message::Body;
    match message.body {
        Some(Body::Launch(launch)) => start_trial(shared, launch),
        Some(Body::Stop(stop)) => {
            let Some(reference) = stop.trial else { return };
            let state = shared.state();
            let key = (reference.experiment.clone(), reference.trial);
            match state.trials.get(&key) {
                Some(running) if running.attempt == reference.attempt => {
                    tracing::info!(experiment = %key.0, trial = key.1, reason = %stop.reason, kill = stop.kill, "stopping a trial");
                    // Only a process that has not exited: its group id could belong to
                    // something else by now.
                    if stop.kill
                        && !running.exited
                        && let Some(pid) = running.pid
                    {
                        tune_runtime::runner::kill_process_group(pid);
                    }
                    let _ = running.stop.send(true);
                }
                _ => {}
            }
        }
        Some(Body::Ack(ack)) => {
            let mut state = shared.state();
            state.unacked.remove(&ack.seq);
            let Some(sent) = state.message_of.remove(&ack.seq) else {
                return;
            };
            let decision = v1::Decision::try_from(ack.decision).unwrap_or(v1::Decision::Continue);
            let same_launch = state.trials.get(&sent.key).is_some_and(|r| r.attempt == sent.attempt);
            if !same_launch {
                return;
            }
            if sent.exit {
                // The controller has the exit: the launch is done here.
                state.trials.remove(&sent.key);
            } else if matches!(decision, v1::Decision::Stop | v1::Decision::Pause) {
                let _ = state.trials[&sent.key].stop.send(true);
            }
        }
        None => {}
    }
}

fn start_trial(shared: &Arc<Shared>, launch: v1::Launch) {
    let Some(reference) = launch.trial.clone() else { return };
    let key = (reference.experiment.clone(), reference.trial);
    let (stop, stop_requested) = watch::channel(false);
    {
        let mut state = shared.state();
        if let Some(running) = state.trials.get(&key)
            && running.attempt == reference.attempt
        {
            return; // sent again after a reconnect; it already runs
        }
        state.trials.insert(
            key.clone(),
            Running {
                attempt: reference.attempt,
                pid: None,
                stop,
                exited: false,
            },
        );
    }
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let outcome = match prepare(&shared.config, &launch) {
            Ok((process, launch)) => {
                let mut sink = AgentSink {
                    shared: Arc::clone(&shared),
                    reference: reference.clone(),
                    stop: stop_requested,
                };
                run_process(&process, &launch, &mut sink).await
            }
            Err(reason) => Outcome::Failed { reason },
        };
        let (success, reason) = match outcome {
            Outcome::Success => (true, String::new()),
            Outcome::Failed { reason } | Outcome::Lost { reason } => (false, reason),
        };
        tracing::info!(experiment = %key.0, trial = key.1, success, %reason, "trial exited");
        let attempt = reference.attempt;
        if let Some(running) = shared.state().trials.get_mut(&key)
            && running.attempt == attempt
        {
            running.exited = true;
        }
        shared.send_reliably(
            |seq| v1::AgentMessage {
                body: Some(v1::agent_message::Body::Exited(v1::TrialExited {
                    seq,
                    trial: Some(reference),
                    success,
                    reason,
                })),
            },
            Sent {
                key,
                attempt,
                exit: true,
            },
        );
    });
}

/// The process settings and core launch for a `Launch` message.
fn prepare(config: &AgentConfig, launch: &v1::Launch) -> Result<(ProcessConfig, Launch), String> {
    let reference = launch.trial.as_ref().ok_or("the launch names no trial")?;
    let config_value: Config =
        serde_json::from_str(&launch.config_json).map_err(|e| format!("the launch's config is not JSON: {e}"))?;
    let workdir = PathBuf::from(&launch.workdir);
    let workdir = if !launch.workdir.is_empty() && workdir.is_dir() {
        workdir
    } else {
        config.work_dir.clone()
    };
    let mut env: BTreeMap<String, String> = launch.env.clone().into_iter().collect();
    env.insert("CUDA_VISIBLE_DEVICES".into(), launch.devices.join(","));
    env.insert("RUNG_CONTROLLER".into(), config.controller.clone());
    env.insert("RUNG_ATTEMPT".into(), reference.attempt.to_string());
    env.insert("RUNG_AGENT".into(), config.name.clone());
    // What a trial needs to report to the controller itself (rung.Client.this_trial()).
    if let Some(token) = &config.token {
        env.insert("RUNG_TOKEN".into(), token.clone());
    }
    if let Some(ca) = &config.ca_cert {
        env.insert("RUNG_CA_CERT".into(), ca.display().to_string());
    }
    // NVML numbers GPUs in PCI bus order; make CUDA number them the same way.
    env.insert("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into());
    if launch.bundles > 1 {
        env.insert("RUNG_BUNDLE_INDEX".into(), launch.bundle.to_string());
        env.insert("RUNG_BUNDLE_COUNT".into(), launch.bundles.to_string());
        env.insert("RUNG_BUNDLE_AGENTS".into(), launch.bundle_agents.join(","));
    }
    let grace = if launch.stop_grace_s.is_finite() && launch.stop_grace_s >= 0.0 {
        Duration::from_secs_f64(launch.stop_grace_s.min(3600.0))
    } else {
        Duration::from_secs(10)
    };
    // The controller's checkpoint storage, opened with this machine's AWS_* variables.
    // With several processes (placement "spread") the first one's checkpoints are the trial's,
    // as rank 0's are in distributed training; the others' stay on their agents.
    let checkpoint_storage = if launch.checkpoint_storage.is_empty() || launch.bundle > 0 {
        CheckpointStorage::Local
    } else {
        CheckpointStorage::parse(&launch.checkpoint_storage).map_err(|e| format!("on agent {}: {e}", config.name))?
    };
    if reference.experiment.contains(['/', '\\']) || reference.experiment.starts_with('.') {
        return Err(format!(
            "experiment name {:?} cannot name a folder",
            reference.experiment
        ));
    }
    Ok((
        ProcessConfig {
            command: launch.command.clone(),
            workdir,
            trials_root: config.work_dir.join(&reference.experiment),
            stop_grace: grace,
            env,
            experiment: reference.experiment.clone(),
            checkpoint_storage,
        },
        Launch {
            trial: TrialId(reference.trial),
            config: config_value,
            restore: launch.restore.as_ref().map(|r| CheckpointRef {
                step: r.step,
                path: r.path.clone(),
            }),
            attempt: reference.attempt,
        },
    ))
}

/// Relays a trial's reports to the controller; the decisions come back as acknowledgements.
struct AgentSink {
    shared: Arc<Shared>,
    reference: v1::TrialRef,
    stop: watch::Receiver<bool>,
}

impl TrialSink for AgentSink {
    async fn report(&mut self, report: Report, checkpoint: Option<String>) -> Decision {
        let reference = self.reference.clone();
        let sent = Sent {
            key: (reference.experiment.clone(), reference.trial),
            attempt: reference.attempt,
            exit: false,
        };
        self.shared.send_reliably(
            |seq| v1::AgentMessage {
                body: Some(v1::agent_message::Body::Report(v1::TrialReport {
                    seq,
                    trial: Some(reference),
                    step: report.step,
                    metrics: report.metrics.into_iter().collect(),
                    checkpoint: checkpoint.unwrap_or_default(),
                })),
            },
            sent,
        );
        if *self.stop.borrow() {
            Decision::Stop
        } else {
            Decision::Continue
        }
    }

    async fn stop_requested(&mut self) {
        while !*self.stop.borrow_and_update() {
            if self.stop.changed().await.is_err() {
                return;
            }
        }
    }

    fn started(&mut self, pid: u32) {
        let key = (self.reference.experiment.clone(), self.reference.trial);
        if let Some(running) = self.shared.state().trials.get_mut(&key) {
            running.pid = Some(pid);
        }
        self.shared.send_now(v1::AgentMessage {
            body: Some(v1::agent_message::Body::Started(v1::TrialStarted {
                trial: Some(self.reference.clone()),
                pid,
            })),
        });
    }
}

/// The inventory in proto form.
pub fn inventory_to_proto(inventory: &Inventory) -> v1::Inventory {
    v1::Inventory {
        cpus: inventory.cpus,
        memory: inventory.memory,
        gpus: inventory
            .gpus
            .iter()
            .map(|gpu| v1::Gpu {
                index: gpu.index,
                uuid: gpu.uuid.clone(),
                model: gpu.model.clone(),
                memory: gpu.memory,
                mig: gpu
                    .mig
                    .iter()
                    .map(|mig| v1::MigDevice {
                        uuid: mig.uuid.clone(),
                        name: mig.name.clone(),
                        memory: mig.memory,
                    })
                    .collect(),
            })
            .collect(),
        custom: inventory.custom.clone().into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn status_of(address: std::net::SocketAddr, request: &str) -> String {
        let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        socket.read_to_string(&mut response).await.unwrap();
        response.lines().next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn health_endpoint_is_ready_only_with_a_session() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (live, watched) = watch::channel(false);
        let server = tokio::spawn(serve_health(listener, watched));
        let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: probe\r\nUser-Agent: kube-probe/1.33\r\n\r\n");

        assert_eq!(
            status_of(address, &get("/ready")).await,
            "HTTP/1.1 503 Service Unavailable"
        );
        assert_eq!(status_of(address, &get("/live")).await, "HTTP/1.1 200 OK");
        live.send_replace(true);
        assert_eq!(status_of(address, &get("/ready")).await, "HTTP/1.1 200 OK");
        assert_eq!(status_of(address, &get("/metrics")).await, "HTTP/1.1 404 Not Found");
        assert_eq!(
            status_of(address, "POST /ready HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await,
            "HTTP/1.1 404 Not Found"
        );
        assert_eq!(status_of(address, "garbage\r\n\r\n").await, "HTTP/1.1 404 Not Found");
        live.send_replace(false);
        assert_eq!(
            status_of(address, &get("/ready")).await,
            "HTTP/1.1 503 Service Unavailable"
        );
        server.abort();
    }
}
