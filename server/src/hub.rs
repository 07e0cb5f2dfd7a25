//! The hub: everything the server knows between calls — experiments and their live trials,
//! agents and their leases, the placement queue and the cluster's bin packing.
//!
//! One `std::sync::Mutex` guards it; no lock is ever held across an `.await`. Trial events do
//! not change a controller here: they go to the experiment's driver through the trial's
//! [`TrialLink`], exactly as a local runner's do, and the driver answers after its group commit.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::Shared;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tune_core::controller::{Launch, Outcome, Progress};
use tune_core::protocol::{MAX_STEP, check_metric_limits};
use tune_core::resources::{Inventory, ResourceRequest};
use tune_core::trial::{Decision, Metrics, Report, TrialId};
use tune_proto::v1;
use tune_runtime::driver::{DriverHandle, TrialLink};
use tune_runtime::storage;

use tune_sweep::spec::Spec;

use crate::packing::{Allocation, Cluster, Unplaceable};

/// A trial of an experiment.
pub type TrialKey = (String, TrialId);

/// Resolves to the driver's decision on a report, once the report is committed.
pub type Answer = std::pin::Pin<Box<dyn Future<Output = Decision> + Send>>;

/// Where a live launch is.
#[derive(Debug, Clone)]
pub enum Place {
    /// Waiting for an agent with room, and why it waits.
    Queued {
        /// Why it is not placed yet.
        reason: String,
    },
    /// Waiting for a worker's `Ask` (experiments without a command).
    AskQueue,
    /// Given to a worker that asked for it.
    Asked {
        /// The worker's name.
        worker: String,
        /// The worker is gone unless it reports (or finishes) by then.
        deadline: Instant,
    },
    /// Placed on agents: one process on one agent (`pack`), or one process per bundle, each on
    /// its own agent (`spread`).
    Agent {
        /// What it holds, and where.
        allocation: Allocation,
        /// Processes that have not exited yet.
        left: usize,
        /// The first failure among its processes.
        failure: Option<String>,
    },
}

impl Place {
    /// Whether the launch runs (in part) on `agent`.
    fn on(&self, agent: &str) -> bool {
        matches!(self, Place::Agent { allocation, .. } if allocation.bundles.iter().any(|b| b.agent == agent))
    }
}

/// Where a trial's checkpoints may lie: under the experiment's checkpoint storage
/// (`<storage>/<experiment>/<trial>`) when it has one, and in the trial's `checkpoints` folder
/// on the machine that runs it — `<work_dir>/<experiment>/<trial>/checkpoints` on each agent of
/// its place, or the server's own trial folder for a worker that asked for it. The first root
/// is the one a worker is told.
pub fn checkpoint_roots(
    experiment: &Experiment,
    trial: TrialId,
    place: &Place,
    agents: &BTreeMap<String, Agent>,
) -> Vec<String> {
    let mut roots = Vec::new();
    if let Some(uri) = &experiment.spec.trial.checkpoint_storage {
        roots.push(storage::remote_checkpoint_root(uri, &experiment.name, trial));
    }
    match place {
        Place::Agent { allocation, .. } => {
            for agent in allocation.agents() {
                if let Some(work_dir) = agents.get(agent).and_then(|a| a.work_dir.as_ref()) {
                    roots.push(storage::local_checkpoint_root(&work_dir.join(&experiment.name), trial));
                }
            }
        }
        Place::Asked { .. } | Place::AskQueue | Place::Queued { .. } => {
            roots.push(storage::local_checkpoint_root(&experiment.trials_root, trial));
        }
    }
    roots
}

/// The agents of an allocation, one per process: one for `pack`, one per bundle for `spread`.
fn process_agents(allocation: &Allocation) -> Vec<String> {
    allocation.agents().into_iter().map(str::to_owned).collect()
}

/// One launch of a trial that has not exited yet.
pub struct Live {
    /// What the controller launched.
    pub launch: Launch,
    /// Reports go through this to the driver.
    pub link: TrialLink,
    /// Tells the launch's watcher how the run ended.
    pub exit: Option<oneshot::Sender<(Outcome, oneshot::Sender<()>)>>,
    /// Where it is.
    pub place: Place,
    /// The newest step sent to the driver, and the decision of the newest step answered.
    pub last_step: Option<u64>,
    /// The decision the newest answered report got.
    pub last_decision: Decision,
    /// The newest report's decision, to be shared with retries of it: a retry is answered
    /// only once the report it repeats is committed.
    pub pending: Option<Shared<Answer>>,
    /// The driver asked it to stop.
    pub stopping: bool,
}

/// How an experiment's run is going.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Its driver runs.
    Running,
    /// It ended, with the cause.
    Finished(String),
    /// The server stopped it for now; it resumes when the server starts again.
    Interrupted,
    /// Its driver failed.
    Failed(String),
}

impl RunState {
    /// The word `rung status` shows.
    pub fn label(&self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Finished(_) => "finished",
            RunState::Interrupted => "interrupted",
            RunState::Failed(_) => "failed",
        }
    }
}

/// An experiment the server knows.
pub struct Experiment {
    /// Its name in the store.
    pub name: String,
    /// Its spec.
    pub spec: Arc<Spec>,
    /// The spec as stored.
    pub spec_json: String,
    /// Its row id in the store.
    pub id: i64,
    /// Its seed.
    pub seed: u64,
    /// Its driver, while it runs.
    pub handle: Option<DriverHandle>,
    /// Counts and best, as of the last group commit.
    pub progress: Progress,
    /// How its run is going.
    pub state: RunState,
    /// Its trials run by workers that `Ask` (it has no command).
    pub external: bool,
    /// What each of its trials asks for.
    pub request: ResourceRequest,
    /// Its live launches.
    pub trials: HashMap<TrialId, Live>,
    /// Launches waiting for an `Ask`, in launch order.
    pub ask_queue: VecDeque<TrialId>,
    /// Woken when the ask queue grows or the experiment ends.
    pub asked: Arc<Notify>,
    /// Bumped whenever its progress or state changes (for `Watch`).
    pub changed: watch::Sender<u64>,
    /// Time it ran before it started running in this server (or in all, once it ended).
    pub elapsed_ms: u64,
    /// When it started running in this server, while it runs.
    pub running_since: Option<Instant>,
    /// The server's own folder of its trials (`<store stem>_trials/<experiment>/`): where a
    /// worker that `Ask`s keeps a trial's checkpoints, in `<trial>/checkpoints/`.
    pub trials_root: PathBuf,
}

impl Experiment {
    /// Time the sweep has run, over all its sessions.
    pub fn elapsed(&self) -> Duration {
        Duration::from_millis(self.elapsed_ms) + self.running_since.map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// Bumps the change counter `Watch` streams follow.
    pub fn touch(&self) {
        self.changed.send_modify(|version| *version += 1);
    }
}

/// An agent the server knows.
pub struct Agent {
    /// Its id.
    pub id: String,
    /// The name it gave.
    pub name: String,
    /// What its machine has.
    pub inventory: Inventory,
    /// Where messages to it go while its session is open.
    pub session: Option<(u64, mpsc::UnboundedSender<v1::ControllerMessage>)>,
    /// Messages sent while it had no session, delivered when it is back.
    pub outbox: Vec<v1::ControllerMessage>,
    /// Its lease runs out at this instant unless renewed.
    pub lease_until: Instant,
    /// Its lease ran out: its trials went elsewhere.
    pub lost: bool,
    /// The trials placed on it.
    pub trials: BTreeSet<TrialKey>,
    /// Its `--work-dir` (trial folders are `<work_dir>/<experiment>/<trial>/`), when it said.
    pub work_dir: Option<PathBuf>,
}

/// The server's state.
pub struct Hub {
    /// Experiments by name.
    pub experiments: BTreeMap<String, Experiment>,
    /// Agents by id.
    pub agents: BTreeMap<String, Agent>,
    /// Capacity and allocations of the agents that are not lost (a disconnected agent within
    /// its lease keeps its place; what is placed on it waits in its outbox).
    pub cluster: Cluster,
    /// Launches waiting for an agent, in launch order.
    pub queue: VecDeque<TrialKey>,
    /// Session numbers, so a closed session never unregisters a newer one.
    pub sessions: u64,
    /// Placement waits until then (agents reconnect after a controller restart first).
    pub hold_until: Instant,
    /// The server is shutting down: nothing new is placed.
    pub closing: bool,
    /// An agent silent this long is lost.
    pub lease: Duration,
    /// A worker that took a trial with `Ask` and sends nothing for this long is gone.
    pub worker_lease: Duration,
}

/// What the agent session loop must do after a message was handled.
pub enum Followup {
    /// Nothing more.
    None,
    /// Await this decision, then acknowledge message `seq` with it.
    Decide {
        /// The message to acknowledge.
        seq: u64,
        /// The trial.
        key: TrialKey,
        /// The step reported.
        step: u64,
        /// Resolves to the driver's decision.
        decision: std::pin::Pin<Box<dyn Future<Output = Decision> + Send>>,
    },
    /// Acknowledge message `seq` once `committed` resolves (an exit is in the store).
    AcknowledgeAfter {
        /// The message to acknowledge.
        seq: u64,
        /// Resolves once the exit is committed.
        committed: oneshot::Receiver<()>,
    },
}

/// The confirmation of an exit nobody waits for (the server ended the launch itself).
fn nobody_waits() -> oneshot::Sender<()> {
    oneshot::channel().0
}

/// The proto decision for a core one.
pub fn decision_to_proto(decision: Decision) -> v1::Decision {
    match decision {
        Decision::Continue => v1::Decision::Continue,
        Decision::Stop => v1::Decision::Stop,
        Decision::Pause => v1::Decision::Pause,
    }
}

/// Why a trial event was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No such experiment or trial.
    NotFound(String),
    /// The trial exists but cannot take this now (ended, superseded).
    Precondition(String),
    /// The request itself is wrong.
    Invalid(String),
}

impl Hub {
    /// An empty hub.
    pub fn new(lease: Duration, worker_lease: Duration, hold_until: Instant) -> Self {
        Hub {
            experiments: BTreeMap::new(),
            agents: BTreeMap::new(),
            cluster: Cluster::default(),
            queue: VecDeque::new(),
            sessions: 0,
            hold_until,
            closing: false,
            lease,
            worker_lease,
        }
    }

    /// Adds a launch: queued for an agent, or for an `Ask`.
    pub fn add_launch(
        &mut self,
        experiment: &str,
        launch: Launch,
        link: TrialLink,
        exit: oneshot::Sender<(Outcome, oneshot::Sender<()>)>,
    ) {
        let Some(entry) = self.experiments.get_mut(experiment) else {
            let _ = exit.send((
                Outcome::Failed {
                    reason: format!("experiment \"{experiment}\" is not served"),
                },
                nobody_waits(),
            ));
            return;
        };
        let trial = launch.trial;
        let place = if entry.external {
            entry.ask_queue.push_back(trial);
            entry.asked.notify_waiters();
            Place::AskQueue
        } else {
            self.queue.push_back((experiment.to_owned(), trial));
            Place::Queued {
                reason: "waiting for placement".into(),
            }
        };
        entry.trials.insert(
            trial,
            Live {
                launch,
                link,
                exit: Some(exit),
                place,
                last_step: None,
                last_decision: Decision::Continue,
                pending: None,
                stopping: false,
            },
        );
    }

    /// Places what the queue holds onto agents (bin packing); records why the rest waits.
    pub fn place(&mut self, now: Instant) {
        if self.closing || now < self.hold_until {
            let reason = if self.closing {
                "the server is shutting down".to_owned()
            } else {
                "waiting for agents to reconnect after the server started".to_owned()
            };
            for (experiment, trial) in &self.queue {
                if let Some(live) = self
                    .experiments
                    .get_mut(experiment)
                    .and_then(|e| e.trials.get_mut(trial))
                {
                    live.place = Place::Queued { reason: reason.clone() };
                }
            }
            return;
        }
        let queue = std::mem::take(&mut self.queue);
        for key in queue {
            let (experiment, trial) = &key;
            let Some(entry) = self.experiments.get_mut(experiment) else {
                continue;
            };
            let Some(live) = entry.trials.get_mut(trial) else {
                continue;
            };
            match self.cluster.allocate(&entry.request) {
                Ok(allocation) => {
                    let messages = launch_messages(experiment, &entry.spec, &live.launch, &allocation, &self.agents);
                    let agents: Vec<String> = messages.iter().map(|(agent, _)| agent.clone()).collect();
                    live.place = Place::Agent {
                        left: messages.len(),
                        allocation,
                        failure: None,
                    };
                    for (agent_id, message) in messages {
                        if let Some(agent) = self.agents.get_mut(&agent_id) {
                            agent.trials.insert(key.clone());
                            send(agent, message);
                        }
                    }
                    tracing::info!(experiment, %trial, agents = %agents.join(","), "placed");
                }
                Err(unplaceable) => {
                    let reason = match &unplaceable {
                        Unplaceable::Never(reason) => format!("unplaceable: {reason}"),
                        other => other.to_string(),
                    };
                    if let Place::Queued { reason: old } = &live.place
                        && *old != reason
                        && matches!(unplaceable, Unplaceable::Never(_))
                    {
                        tracing::warn!(experiment, %trial, %reason, "a trial cannot be placed on any registered agent");
                    }
                    live.place = Place::Queued { reason };
                    self.queue.push_back(key);
                }
            }
        }
    }

    /// The driver asked a launch to stop. Returns the outcome to report at once when the trial
    /// never started anywhere (it is then forgotten), or `None` when its exit is awaited.
    pub fn stop_launch(&mut self, experiment: &str, trial: TrialId) -> Option<Outcome> {
        let entry = self.experiments.get_mut(experiment)?;
        let live = entry.trials.get_mut(&trial)?;
        live.stopping = true;
        match &live.place {
            Place::Queued { .. } | Place::AskQueue => {
                entry.trials.remove(&trial);
                entry.ask_queue.retain(|t| *t != trial);
                self.queue.retain(|(e, t)| !(e == experiment && *t == trial));
                Some(Outcome::Failed {
                    reason: "stopped before it started".into(),
                })
            }
            Place::Asked { .. } => None, // its next report is answered STOP
            Place::Agent { allocation, .. } => {
                let message = stop_message(experiment, &live.launch, "the controller stopped it", false);
                for id in process_agents(allocation) {
                    if let Some(agent) = self.agents.get_mut(&id) {
                        send(agent, message.clone());
                    }
                }
                None
            }
        }
    }

    /// Finds the live launch a trial event names, checking its attempt (and agent).
    fn live_mut(&mut self, reference: &v1::TrialRef, agent: Option<&str>) -> Result<&mut Live, Refusal> {
        let Some(entry) = self.experiments.get_mut(&reference.experiment) else {
            return Err(Refusal::NotFound(format!(
                "no experiment \"{}\" on this server",
                reference.experiment
            )));
        };
        let trial = TrialId(reference.trial);
        let created = entry.progress.created;
        let Some(live) = entry.trials.get_mut(&trial) else {
            return Err(if reference.trial == 0 || reference.trial > created {
                Refusal::NotFound(format!("experiment \"{}\" has no trial {trial}", reference.experiment))
            } else {
                Refusal::Precondition(format!(
                    "trial {trial} of \"{}\" is not running (it ended or waits to be relaunched)",
                    reference.experiment
                ))
            });
        };
        if live.launch.attempt != reference.attempt {
            return Err(Refusal::Precondition(format!(
                "launch {} of trial {trial} was superseded by launch {}",
                reference.attempt, live.launch.attempt
            )));
        }
        if let Some(agent) = agent
            && !live.place.on(agent)
        {
            return Err(Refusal::Precondition(format!(
                "trial {trial} of \"{}\" is not placed on agent {agent}",
                reference.experiment
            )));
        }
        Ok(live)
    }

    /// Refuses a checkpoint `path` a report names unless it lies inside one of the trial's
    /// checkpoint roots (see [`checkpoint_roots`]): the controller deletes the checkpoints its
    /// keep policy drops, so a path elsewhere (`/home/me`) must never get that far.
    fn confine_checkpoint(&self, reference: &v1::TrialRef, path: &str) -> Result<(), Refusal> {
        let trial = TrialId(reference.trial);
        let Some((entry, live)) = self
            .experiments
            .get(&reference.experiment)
            .and_then(|entry| Some((entry, entry.trials.get(&trial)?)))
        else {
            return Err(Refusal::NotFound(format!(
                "experiment \"{}\" has no running trial {trial}",
                reference.experiment
            )));
        };
        let roots = checkpoint_roots(entry, trial, &live.place, &self.agents);
        if roots.iter().any(|root| storage::is_inside(path, root)) {
            return Ok(());
        }
        let roots = if roots.is_empty() {
            "none: its agent did not say its --work-dir".to_owned()
        } else {
            roots
                .iter()
                .map(|root| format!("{root:?}"))
                .collect::<Vec<_>>()
                .join(" or ")
        };
        Err(Refusal::Invalid(format!(
            "checkpoint {path:?} of trial {trial} is outside the trial's checkpoint root ({roots}); a checkpoint must lie inside it"
        )))
    }

    /// A report from an agent or a trial process. `Ok(Err(decision))` answers a repeated step
    /// at once; `Ok(Ok(future))` resolves to the decision once the driver committed it.
    #[allow(clippy::type_complexity)]
    pub fn report(
        &mut self,
        reference: &v1::TrialRef,
        agent: Option<&str>,
        step: u64,
        metrics: &HashMap<String, f64>,
        checkpoint: &str,
    ) -> Result<Result<Answer, Answer>, Refusal> {
        if step > MAX_STEP {
            return Err(Refusal::Invalid(format!(
                "step {step} is larger than {MAX_STEP}, the largest step the store keeps"
            )));
        }
        let metrics = validate_metrics(metrics)?;
        let worker_lease = self.worker_lease;
        let live = self.live_mut(reference, agent)?;
        if let Place::Asked { deadline, .. } = &mut live.place {
            if live.stopping {
                return Ok(Err(Box::pin(std::future::ready(Decision::Stop))));
            }
            *deadline = Instant::now() + worker_lease;
        }
        if live.last_step.is_some_and(|last| step <= last) {
            // A retry (or an older step): its answer waits for the newest report's commit, so
            // nothing is acknowledged before it is in the store.
            return Ok(Err(match &live.pending {
                Some(pending) => Box::pin(pending.clone()),
                None => Box::pin(std::future::ready(live.last_decision)),
            }));
        }
        if !checkpoint.is_empty() {
            self.confine_checkpoint(reference, checkpoint)?;
        }
        let live = self.live_mut(reference, agent)?;
        live.last_step = Some(step);
        let checkpoint = (!checkpoint.is_empty()).then(|| checkpoint.to_owned());
        let answer: Answer = Box::pin(live.link.send_report(Report { step, metrics }, checkpoint));
        let answer = answer.shared();
        live.pending = Some(answer.clone());
        Ok(Ok(Box::pin(answer)))
    }

    /// Remembers the decision the driver gave a report.
    pub fn decided(&mut self, key: &TrialKey, step: u64, decision: Decision) {
        if let Some(live) = self.experiments.get_mut(&key.0).and_then(|e| e.trials.get_mut(&key.1))
            && live.last_step == Some(step)
        {
            live.last_decision = decision;
        }
    }

    /// A checkpoint of an already reported step (`Trials.Checkpoint`).
    #[allow(clippy::type_complexity)]
    pub fn checkpoint(
        &mut self,
        reference: &v1::TrialRef,
        step: u64,
        path: &str,
    ) -> Result<std::pin::Pin<Box<dyn Future<Output = Decision> + Send>>, Refusal> {
        if path.is_empty() {
            return Err(Refusal::Invalid("checkpoint.path is empty".into()));
        }
        let worker_lease = self.worker_lease;
        let live = self.live_mut(reference, None)?;
        if let Place::Asked { deadline, .. } = &mut live.place {
            *deadline = Instant::now() + worker_lease;
        }
        match live.last_step {
            Some(last) if last == step => {}
            last => {
                return Err(Refusal::Precondition(format!(
                    "a checkpoint names a step that was reported: step {step} was not (the last reported step is {})",
                    last.map_or_else(|| "none".to_owned(), |s| s.to_string())
                )));
            }
        }
        self.confine_checkpoint(reference, path)?;
        let live = self.live_mut(reference, None)?;
        // A repeated step with a checkpoint: the controller keeps the checkpoint, counts nothing.
        Ok(Box::pin(live.link.send_report(
            Report {
                step,
                metrics: Metrics::new(),
            },
            Some(path.to_owned()),
        )))
    }

    /// A process of a launch ended (agent `exited`, or `Trials.Finish`). The launch ends when
    /// all its processes have; the first failure stops the others and is its outcome.
    ///
    /// Returns what resolves once the exit is committed (at once when the launch has other
    /// processes still running, whose exits end it).
    pub fn exited(
        &mut self,
        reference: &v1::TrialRef,
        agent: Option<&str>,
        outcome: Outcome,
    ) -> Result<oneshot::Receiver<()>, Refusal> {
        let (committed, done) = oneshot::channel();
        let key = (reference.experiment.clone(), TrialId(reference.trial));
        let live = self.live_mut(reference, agent)?;
        if let Place::Agent { left, failure, .. } = &mut live.place {
            *left = left.saturating_sub(1);
            if let Outcome::Failed { reason } = &outcome
                && failure.is_none()
            {
                *failure = Some(reason.clone());
            }
            let (left, failure) = (*left, failure.clone());
            if left > 0 {
                if let (Some(reason), Place::Agent { allocation, .. }) = (failure, &live.place) {
                    let message = stop_message(
                        &key.0,
                        &live.launch,
                        &format!("another process of the trial failed: {reason}"),
                        false,
                    );
                    let others: Vec<String> = process_agents(allocation)
                        .into_iter()
                        .filter(|a| Some(a.as_str()) != agent)
                        .collect();
                    for id in others {
                        if let Some(agent) = self.agents.get_mut(&id) {
                            send(agent, message.clone());
                        }
                    }
                }
                if let Some(id) = agent
                    && let Some(agent) = self.agents.get_mut(id)
                {
                    agent.trials.remove(&key);
                }
                return Ok(done); // `committed` is dropped: nothing to wait for
            }
        }
        let live = self
            .experiments
            .get_mut(&key.0)
            .and_then(|e| e.trials.remove(&key.1))
            .expect("checked above");
        let outcome = match &live.place {
            Place::Agent {
                failure: Some(reason), ..
            } => Outcome::Failed { reason: reason.clone() },
            _ => outcome,
        };
        self.release(&key, &live.place);
        if let Some(exit) = live.exit {
            let _ = exit.send((outcome, committed));
        }
        Ok(done)
    }

    fn release(&mut self, key: &TrialKey, place: &Place) {
        if let Place::Agent { allocation, .. } = place {
            self.cluster.release(allocation);
            for id in process_agents(allocation) {
                if let Some(agent) = self.agents.get_mut(&id) {
                    agent.trials.remove(key);
                }
            }
        }
    }

    /// Hands out the next trial of an experiment run by workers that ask.
    pub fn ask(&mut self, experiment: &str, worker: &str) -> Result<Option<v1::TrialAssignment>, Refusal> {
        let Some(entry) = self.experiments.get_mut(experiment) else {
            return Err(Refusal::NotFound(format!(
                "no experiment \"{experiment}\" on this server"
            )));
        };
        if !entry.external {
            return Err(Refusal::Precondition(format!(
                "experiment \"{experiment}\" runs its trials on agents ([trial] command); Ask serves experiments without a command"
            )));
        }
        while let Some(trial) = entry.ask_queue.pop_front() {
            let Some(live) = entry.trials.get_mut(&trial) else {
                continue;
            };
            live.place = Place::Asked {
                worker: worker.to_owned(),
                deadline: Instant::now() + self.worker_lease,
            };
            let mut assignment = v1::TrialAssignment {
                trial: Some(v1::TrialRef {
                    experiment: experiment.to_owned(),
                    trial: trial.0,
                    attempt: live.launch.attempt,
                }),
                config_json: live.launch.config.to_json(),
                restore: live.launch.restore.as_ref().map(|r| v1::CheckpointLocation {
                    step: r.step,
                    path: r.path.clone(),
                }),
                checkpoint_root: String::new(),
            };
            let place = live.place.clone();
            assignment.checkpoint_root = checkpoint_roots(entry, trial, &place, &self.agents)
                .into_iter()
                .next()
                .unwrap_or_default();
            return Ok(Some(assignment));
        }
        Ok(None)
    }

    /// Registers an agent (or one coming back under its previous id).
    pub fn register(
        &mut self,
        id: String,
        name: String,
        inventory: Inventory,
        work_dir: Option<PathBuf>,
        now: Instant,
    ) {
        self.cluster.add_agent(&id, inventory.clone());
        match self.agents.get_mut(&id) {
            Some(agent) => {
                // Back before or after its lease ran out: its capacity starts empty and what it
                // still runs is settled by its hello.
                for key in std::mem::take(&mut agent.trials) {
                    if let Some(live) = self.experiments.get_mut(&key.0).and_then(|e| e.trials.get_mut(&key.1))
                        && let Place::Agent { allocation, .. } = &live.place
                    {
                        // Re-adding the agent emptied its capacity; take what its trials hold again.
                        let _ = self.cluster.reserve(allocation);
                        agent.trials.insert(key);
                    }
                }
                agent.name = name;
                agent.inventory = inventory;
                agent.work_dir = work_dir;
                agent.lost = false;
                agent.lease_until = now + self.lease;
            }
            None => {
                self.agents.insert(
                    id.clone(),
                    Agent {
                        id,
                        name,
                        inventory,
                        session: None,
                        outbox: Vec::new(),
                        lease_until: now + self.lease,
                        lost: false,
                        work_dir,
                        trials: BTreeSet::new(),
                    },
                );
            }
        }
    }

    /// An agent opened its session: what it still runs is kept when it is the live launch on
    /// that agent and killed otherwise; launches it should run but does not know are sent again.
    pub fn hello(
        &mut self,
        agent_id: &str,
        running: &[v1::RunningTrial],
        sender: mpsc::UnboundedSender<v1::ControllerMessage>,
        now: Instant,
    ) -> Result<u64, Refusal> {
        self.sessions += 1;
        let serial = self.sessions;
        let lease = self.lease;
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return Err(Refusal::NotFound(format!(
                "agent {agent_id} is not registered: call Register first"
            )));
        };
        agent.lease_until = now + lease;
        agent.session = Some((serial, sender));
        let mut known = BTreeSet::new();
        let mut kills = Vec::new();
        for running in running {
            let Some(reference) = &running.trial else { continue };
            let key = (reference.experiment.clone(), TrialId(reference.trial));
            let live = self.experiments.get(&key.0).and_then(|e| e.trials.get(&key.1));
            let ours = live.is_some_and(|live| live.launch.attempt == reference.attempt && live.place.on(agent_id));
            if ours {
                known.insert(key);
            } else {
                kills.push(v1::ControllerMessage {
                    body: Some(v1::controller_message::Body::Stop(v1::Stop {
                        trial: Some(reference.clone()),
                        reason: "this launch was superseded while the agent was away".into(),
                        kill: true,
                    })),
                });
            }
        }
        let agent = self.agents.get_mut(agent_id).expect("checked above");
        let outbox = std::mem::take(&mut agent.outbox);
        let placed: Vec<TrialKey> = agent.trials.iter().cloned().collect();
        let mut resend = Vec::new();
        for key in &placed {
            if known.contains(key) {
                continue;
            }
            if let Some(entry) = self.experiments.get(&key.0)
                && let Some(live) = entry.trials.get(&key.1)
                && let Place::Agent { allocation, .. } = &live.place
            {
                for (id, launch) in launch_messages(&key.0, &entry.spec, &live.launch, allocation, &self.agents) {
                    if id == agent_id && !outbox.contains(&launch) {
                        resend.push(launch);
                    }
                }
            }
        }
        let agent = self.agents.get_mut(agent_id).expect("checked above");
        for message in kills.into_iter().chain(outbox).chain(resend) {
            send(agent, message);
        }
        Ok(serial)
    }

    /// Any message from an agent renews its lease.
    pub fn renew(&mut self, agent_id: &str, now: Instant) {
        let lease = self.lease;
        if let Some(agent) = self.agents.get_mut(agent_id)
            && !agent.lost
        {
            agent.lease_until = now + lease;
        }
    }

    /// An agent's session closed (its lease keeps running).
    pub fn session_closed(&mut self, agent_id: &str, serial: u64) {
        if let Some(agent) = self.agents.get_mut(agent_id)
            && agent.session.as_ref().is_some_and(|(s, _)| *s == serial)
        {
            agent.session = None;
        }
    }

    /// Agents whose lease ran out are lost: their capacity leaves the cluster and their trials
    /// are relaunched elsewhere from their checkpoints. Returns the ids lost.
    pub fn expire_leases(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> = self
            .agents
            .values()
            .filter(|a| !a.lost && a.lease_until <= now)
            .map(|a| a.id.clone())
            .collect();
        for id in &expired {
            let lease = self.lease;
            let agent = self.agents.get_mut(id).expect("listed above");
            agent.lost = true;
            agent.session = None;
            agent.outbox.clear();
            let name = agent.name.clone();
            let trials = std::mem::take(&mut agent.trials);
            self.cluster.remove_agent(id);
            tracing::warn!(agent = %id, %name, trials = trials.len(), "agent lost: no heartbeat within its lease");
            for key in trials {
                let Some(live) = self.experiments.get_mut(&key.0).and_then(|e| e.trials.remove(&key.1)) else {
                    continue;
                };
                // Its processes on other agents (spread) must not run on: kill them.
                if let Place::Agent { allocation, .. } = &live.place {
                    let kill = stop_message(&key.0, &live.launch, "another agent of the trial was lost", true);
                    for other in process_agents(allocation).into_iter().filter(|a| a != id) {
                        if let Some(agent) = self.agents.get_mut(&other) {
                            agent.trials.remove(&key);
                            send(agent, kill.clone());
                        }
                    }
                    let surviving: Vec<String> = process_agents(allocation).into_iter().filter(|a| a != id).collect();
                    let mut held = allocation.clone();
                    held.bundles.retain(|b| surviving.contains(&b.agent));
                    self.cluster.release(&held);
                }
                if let Some(exit) = live.exit {
                    let _ = exit.send((
                        Outcome::Lost {
                            reason: format!(
                                "agent {name} ({id}) was lost: no heartbeat for {:.0}s",
                                lease.as_secs_f64()
                            ),
                        },
                        nobody_waits(),
                    ));
                }
            }
        }
        expired
    }

    /// Trials given to workers that have sent nothing within their lease go back to the ask
    /// queue as new launches (from their checkpoints). Returns how many.
    pub fn expire_workers(&mut self, now: Instant) -> usize {
        let lease = self.worker_lease;
        let mut expired = 0;
        for entry in self.experiments.values_mut() {
            let gone: Vec<TrialId> = entry
                .trials
                .iter()
                .filter(|(_, live)| matches!(&live.place, Place::Asked { deadline, .. } if *deadline <= now))
                .map(|(trial, _)| *trial)
                .collect();
            for trial in gone {
                let live = entry.trials.remove(&trial).expect("listed above");
                let worker = match &live.place {
                    Place::Asked { worker, .. } => worker.clone(),
                    _ => unreachable!("filtered above"),
                };
                tracing::warn!(experiment = %entry.name, %trial, %worker, "a worker went silent: its trial is handed out again");
                if let Some(exit) = live.exit {
                    let _ = exit.send((
                        Outcome::Lost {
                            reason: format!("worker {worker} sent nothing for {:.0}s", lease.as_secs_f64()),
                        },
                        nobody_waits(),
                    ));
                }
                expired += 1;
            }
        }
        expired
    }

    /// Why each queued trial of an experiment waits.
    pub fn waiting(&self, experiment: &str) -> Vec<v1::Waiting> {
        let Some(entry) = self.experiments.get(experiment) else {
            return Vec::new();
        };
        let mut waiting: Vec<v1::Waiting> = entry
            .trials
            .iter()
            .filter_map(|(trial, live)| match &live.place {
                Place::Queued { reason } => Some(v1::Waiting {
                    trial: trial.0,
                    reason: reason.clone(),
                }),
                Place::AskQueue => Some(v1::Waiting {
                    trial: trial.0,
                    reason: "waiting for a worker to ask for it (Trials.Ask)".into(),
                }),
                _ => None,
            })
            .collect();
        waiting.sort_by_key(|w| w.trial);
        waiting
    }

    /// The agents, for displays.
    pub fn agent_statuses(&self) -> Vec<v1::AgentStatus> {
        self.agents
            .values()
            .filter(|a| !a.lost)
            .map(|a| v1::AgentStatus {
                id: a.id.clone(),
                name: a.name.clone(),
                inventory: a.inventory.describe(),
                trials: a.trials.len() as u32,
                connected: a.session.is_some(),
            })
            .collect()
    }

    /// The agent a live trial runs on.
    pub fn agent_of(&self, experiment: &str, trial: TrialId) -> Option<String> {
        let live = self.experiments.get(experiment)?.trials.get(&trial)?;
        match &live.place {
            Place::Agent { allocation, .. } => Some(
                process_agents(allocation)
                    .iter()
                    .filter_map(|id| self.agents.get(id).map(|a| a.name.clone()))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            Place::Asked { worker, .. } => Some(worker.clone()),
            _ => None,
        }
    }
}

/// Sends to an agent's session, or keeps the message until it has one.
pub fn send(agent: &mut Agent, message: v1::ControllerMessage) {
    if let Some((_, session)) = &agent.session
        && session.send(message.clone()).is_ok()
    {
        return;
    }
    agent.outbox.push(message);
}

fn validate_metrics(metrics: &HashMap<String, f64>) -> Result<Metrics, Refusal> {
    if metrics.is_empty() {
        return Err(Refusal::Invalid("a report needs at least one metric".into()));
    }
    let names: Vec<&str> = metrics.keys().map(String::as_str).collect();
    check_metric_limits(&names).map_err(|error| Refusal::Invalid(error.to_string()))?;
    let mut out = Metrics::new();
    for (name, value) in metrics {
        if name.is_empty() {
            return Err(Refusal::Invalid("a metric name must not be empty".into()));
        }
        if !value.is_finite() {
            return Err(Refusal::Invalid(format!(
                "metric \"{name}\" is {value}: reported values must be finite"
            )));
        }
        out.insert(name.clone(), *value);
    }
    Ok(out)
}

/// The `Launch` messages for a launch placed on `allocation`, each with the agent it goes to:
/// one process with every device (`pack`, one agent), or one process per bundle (`spread`).
pub fn launch_messages(
    experiment: &str,
    spec: &Spec,
    launch: &Launch,
    allocation: &Allocation,
    registered: &BTreeMap<String, Agent>,
) -> Vec<(String, v1::ControllerMessage)> {
    let agents = process_agents(allocation);
    let names: Vec<String> = agents
        .iter()
        .map(|id| registered.get(id).map_or_else(|| id.clone(), |a| a.name.clone()))
        .collect();
    let devices_of = |agent: &str| -> Vec<String> {
        allocation
            .bundles
            .iter()
            .filter(|b| b.agent == agent)
            .flat_map(|b| b.gpus.iter().map(|g| g.device.clone()))
            .collect()
    };
    agents
        .iter()
        .enumerate()
        .map(|(index, agent)| {
            let message = v1::ControllerMessage {
                body: Some(v1::controller_message::Body::Launch(v1::Launch {
                    trial: Some(v1::TrialRef {
                        experiment: experiment.to_owned(),
                        trial: launch.trial.0,
                        attempt: launch.attempt,
                    }),
                    command: spec.trial.command.clone(),
                    workdir: spec
                        .trial
                        .workdir
                        .as_ref()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default(),
                    env: spec.trial.env.clone().into_iter().collect(),
                    config_json: launch.config.to_json(),
                    restore: launch.restore.as_ref().map(|r| v1::CheckpointLocation {
                        step: r.step,
                        path: r.path.clone(),
                    }),
                    devices: devices_of(agent),
                    stop_grace_s: spec.trial.stop_grace_s,
                    bundle: index as u32,
                    bundles: agents.len() as u32,
                    bundle_agents: names.clone(),
                    checkpoint_storage: spec.trial.checkpoint_storage.clone().unwrap_or_default(),
                })),
            };
            (agent.clone(), message)
        })
        .collect()
}

/// The `Stop` message for a launch.
pub fn stop_message(experiment: &str, launch: &Launch, reason: &str, kill: bool) -> v1::ControllerMessage {
    v1::ControllerMessage {
        body: Some(v1::controller_message::Body::Stop(v1::Stop {
            trial: Some(v1::TrialRef {
                experiment: experiment.to_owned(),
                trial: launch.trial.0,
                attempt: launch.attempt,
            }),
            reason: reason.to_owned(),
            kill,
        })),
    }
}
