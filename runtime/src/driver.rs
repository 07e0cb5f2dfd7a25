//! The driver: the one thread that owns the controller and the store.
//!
//! Runners send [`Inbound`] messages over a channel. The driver takes everything that is
//! waiting (up to [`MAX_BATCH`] messages), hands each event to the controller, writes the
//! events and the records they caused in one transaction (group commit), and only then answers
//! the reports and carries out launches, stops and checkpoint deletions. Nothing else touches
//! the controller, so it needs no lock; the store's blocking writes run on this dedicated
//! thread, never on the async runtime.
//!
//! On resume the driver first replays the experiment's logged events through the fresh
//! controller (discarding its commands, checking that every trial it recreates has the config
//! the store holds), then handles [`Event::Resume`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::error::{Error, Result};
use crate::store::{Batch, Durability, ExperimentInfo, Flush, LoggedEvent, Store};
use tune_core::controller::{Command, Controller, Event, Launch, Outcome, Progress, Record, Summary};
use tune_core::trial::{Decision, Report, TrialId};

/// The most messages one group commit takes.
pub const MAX_BATCH: usize = 4096;

/// A message to the driver.
#[derive(Debug)]
pub enum Inbound {
    /// An event, with where to send the decision when it is a report.
    Event(Event, Option<oneshot::Sender<Decision>>),
    /// Stop the sweep for now (Ctrl-C): terminate running trials without ending them, so that a
    /// resume relaunches them from their checkpoints.
    Interrupt,
}

/// Sends messages to the driver. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DriverHandle(Sender<Inbound>);

impl DriverHandle {
    /// Asks the driver to stop the sweep for now (see [`Inbound::Interrupt`]).
    pub fn interrupt(&self) {
        let _ = self.0.send(Inbound::Interrupt);
    }

    /// Ends the sweep for good: running trials end as `sweep_ended`.
    pub fn stop_sweep(&self) {
        let _ = self.0.send(Inbound::Event(Event::StopSweep, None));
    }
}

/// A runner's line to the driver for one launch of one trial.
#[derive(Debug)]
pub struct TrialLink {
    trial: TrialId,
    driver: Sender<Inbound>,
    stop: watch::Receiver<bool>,
}

impl TrialLink {
    /// The trial.
    pub fn trial(&self) -> TrialId {
        self.trial
    }

    /// Reports a result and waits for the decision, which comes once the report is committed.
    /// When the sweep is gone the answer is [`Decision::Stop`].
    pub async fn report(&self, report: Report, checkpoint: Option<String>) -> Decision {
        self.send_report(report, checkpoint).await
    }

    /// Sends a report to the driver now, and returns what resolves to its decision. Reports sent
    /// one after another reach the driver in that order, however their answers are awaited.
    pub fn send_report(
        &self,
        report: Report,
        checkpoint: Option<String>,
    ) -> impl Future<Output = Decision> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let event = Event::Reported {
            trial: self.trial,
            report,
            checkpoint,
        };
        let sent = self.driver.send(Inbound::Event(event, Some(reply))).is_ok();
        async move {
            if !sent {
                return Decision::Stop;
            }
            answer.await.unwrap_or(Decision::Stop)
        }
    }

    /// Resolves when the driver asks this trial to stop (or the driver is gone).
    pub async fn stop_requested(&mut self) {
        while !*self.stop.borrow_and_update() {
            if self.stop.changed().await.is_err() {
                return;
            }
        }
    }

    /// A second link for the same launch, to report from while this one waits for the end.
    pub fn reporter(&self) -> TrialLink {
        TrialLink {
            trial: self.trial,
            driver: self.driver.clone(),
            stop: self.stop.clone(),
        }
    }

    /// Reports that the launch failed before its trial ran, for `reason`.
    pub fn fail(self, reason: impl std::fmt::Display) {
        self.exited(Outcome::Failed {
            reason: reason.to_string(),
        });
    }

    /// Tells the driver the trial's run ended. Call exactly once per launch.
    pub fn exited(self, outcome: Outcome) {
        let _ = self.driver.send(Inbound::Event(
            Event::Exited {
                trial: self.trial,
                outcome,
            },
            None,
        ));
    }
}

/// Runs trials: starts them on the async runtime and reports back through their [`TrialLink`].
pub trait Runner: Send + Sync + 'static {
    /// Starts one launch of a trial. Called inside the runtime's context, so it may
    /// `tokio::spawn`; it must not block.
    fn launch(&self, launch: Launch, link: TrialLink);
}

/// How a sweep run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SweepEnd {
    /// The sweep is over.
    Finished(Summary),
    /// The sweep was interrupted; `rung resume` carries on where it stopped.
    Interrupted(Progress),
}

/// Everything the driver needs.
pub struct DriverSetup {
    /// The store, opened.
    pub store: Store,
    /// How far each group commit goes before the reports in it are answered.
    pub durability: Durability,
    /// The experiment to run (new or being resumed).
    pub experiment: ExperimentInfo,
    /// A controller with a fresh searcher and scheduler.
    pub controller: Controller,
    /// Runs the trials.
    pub runner: Arc<dyn Runner>,
    /// The runtime the runner spawns onto.
    pub runtime: tokio::runtime::Handle,
    /// Called after every group commit with the current progress.
    pub observer: Box<dyn FnMut(&Progress) + Send>,
    /// Change the number of concurrent trials from now on (logged, so replay stays exact).
    pub max_concurrent: Option<usize>,
    /// How long interrupted trials get to exit before the driver returns anyway.
    pub interrupt_grace: Duration,
    /// Called after every group commit with the records it committed (experiment tracking
    /// mirrors them elsewhere). It runs on the driver's thread between the commit and the
    /// answers, so it must return at once: queue the records, never wait on I/O.
    pub on_commit: Option<CommitHook>,
}

/// What [`DriverSetup::on_commit`] calls with the records of each group commit.
pub type CommitHook = Box<dyn FnMut(&[Record]) + Send>;

/// A driver that has not started yet: its handle can be given out before [`Driver::run`].
pub struct Driver {
    sender: Sender<Inbound>,
    receiver: Receiver<Inbound>,
}

impl Default for Driver {
    fn default() -> Self {
        Driver::new()
    }
}

impl Driver {
    /// A new driver channel.
    pub fn new() -> Self {
        let (sender, receiver) = channel();
        Driver { sender, receiver }
    }

    /// A handle to send it messages.
    pub fn handle(&self) -> DriverHandle {
        DriverHandle(self.sender.clone())
    }

    /// Runs the sweep to its end (or interruption). Blocks: run it on a dedicated thread.
    pub fn run(self, setup: DriverSetup) -> Result<SweepEnd> {
        let Driver { sender, receiver } = self;
        let DriverSetup {
            mut store,
            durability,
            experiment,
            mut controller,
            runner,
            runtime,
            mut observer,
            max_concurrent,
            interrupt_grace,
            mut on_commit,
        } = setup;

        let logged = store.events(experiment.id)?;
        let resuming = !logged.is_empty();
        let offset = Duration::from_millis(experiment.elapsed_ms.max(logged.last().map_or(0, |e| e.at_ms)));
        let mut seq = logged.last().map_or(0, |e| e.seq);
        if resuming {
            replay(&store, &experiment, &mut controller, &logged)?;
        }
        drop(logged);
        if controller.is_finished() {
            observer(controller.progress());
            return Err(Error::setting(
                "experiment",
                format!("\"{}\" has already finished; nothing to resume", experiment.name),
            ));
        }

        let session_start = Instant::now();
        let now = || offset + session_start.elapsed();
        let mut waiting: Vec<Inbound> = Vec::new();
        if let Some(limit) = max_concurrent.filter(|&limit| limit != controller.config().max_concurrent) {
            waiting.push(Inbound::Event(Event::SetMaxConcurrent { max_concurrent: limit }, None));
        }
        waiting.push(Inbound::Event(
            if resuming { Event::Resume } else { Event::Start },
            None,
        ));

        let tick = Duration::from_millis(200);
        let mut stops: HashMap<TrialId, watch::Sender<bool>> = HashMap::new();
        let mut warned_no_checkpoint = false;
        // Deletions from an object store still running; the sweep waits for them before it ends.
        let mut deletions: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        loop {
            if waiting.is_empty() {
                match receiver.recv_timeout(tick) {
                    Ok(message) => waiting.push(message),
                    Err(RecvTimeoutError::Timeout) => waiting.push(Inbound::Event(Event::Tick, None)),
                    Err(RecvTimeoutError::Disconnected) => unreachable!("the driver holds a sender"),
                }
            }
            while waiting.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(message) => waiting.push(message),
                    Err(_) => break,
                }
            }

            let mut batch = Batch::default();
            let mut replies = Vec::new();
            let mut actions = Vec::new();
            let mut interrupted = false;
            for message in waiting.drain(..) {
                let (event, mut reply) = match message {
                    Inbound::Interrupt => {
                        interrupted = true;
                        continue;
                    }
                    Inbound::Event(event, reply) => (event, reply),
                };
                if interrupted {
                    // Left unanswered: the trial is being stopped and will redo this step.
                    continue;
                }
                if let Event::Exited { trial, .. } = event {
                    stops.remove(&trial);
                }
                let at = now();
                let commands = controller.handle(&event, at);
                if !(event == Event::Tick && commands.is_empty()) {
                    seq += 1;
                    batch.events.push(LoggedEvent {
                        seq,
                        at_ms: at.as_millis() as u64,
                        event,
                    });
                }
                for command in commands {
                    match command {
                        Command::Persist(record) => batch.records.push(record),
                        Command::Respond { decision, .. } => {
                            if let Some(reply) = reply.take() {
                                replies.push((reply, decision));
                            }
                        }
                        other => actions.push(other),
                    }
                }
            }
            // A checkpoint the keep policy dropped is deleted only once the commit that stops
            // referencing it is on the disk: after a power loss the store must not point at a
            // checkpoint that is gone.
            let deletes = actions.iter().any(|a| matches!(a, Command::DeleteCheckpoint { .. }));
            let flush = if deletes { Flush::Disk } else { durability.flush() };
            store.commit(experiment.id, &batch, flush)?;
            if let Some(on_commit) = on_commit.as_mut()
                && !batch.records.is_empty()
            {
                on_commit(&batch.records);
            }
            for (reply, decision) in replies {
                let _ = reply.send(decision);
            }
            let mut finished = None;
            for action in actions {
                match action {
                    Command::Launch(launch) => {
                        let (stop_sender, stop) = watch::channel(false);
                        stops.insert(launch.trial, stop_sender);
                        let link = TrialLink {
                            trial: launch.trial,
                            driver: sender.clone(),
                            stop,
                        };
                        let _entered = runtime.enter();
                        runner.launch(launch, link);
                    }
                    Command::Stop { trial } => {
                        if let Some(stop) = stops.get(&trial) {
                            let _ = stop.send(true);
                        }
                    }
                    Command::DeleteCheckpoint { trial, path } => {
                        if !crate::storage::is_checkpoint_of(&path, &experiment.name, trial) {
                            // Reports are checked where they come in; this is the last guard:
                            // nothing that is not a checkpoint folder of this trial is deleted.
                            tracing::warn!(%trial, %path, "not deleting a checkpoint outside the trial's checkpoint folders");
                        } else if crate::storage::is_remote(&path) {
                            // Off this thread: an object store may be slow or down, the sweep is not.
                            deletions.retain(|deletion| !deletion.is_finished());
                            deletions.push(runtime.spawn(async move {
                                if let Err(error) = crate::storage::delete(&path).await {
                                    tracing::warn!(%trial, %path, %error, "could not delete a checkpoint the keep policy dropped");
                                }
                            }));
                        } else if let Err(error) = std::fs::remove_dir_all(&path)
                            && error.kind() != std::io::ErrorKind::NotFound
                        {
                            tracing::warn!(%trial, %path, %error, "could not delete a checkpoint the keep policy dropped");
                        }
                    }
                    Command::Finished(summary) => finished = Some(summary),
                    Command::Persist(_) | Command::Respond { .. } => unreachable!("handled above"),
                }
            }
            if !warned_no_checkpoint && controller.paused_without_checkpoint() {
                warned_no_checkpoint = true;
                let message = "the scheduler pauses trials, but a trial asked to pause had no checkpoint: \
                               it was stopped instead (a trial is paused and resumed only from a checkpoint: \"checkpoint\": true \
                               on its report line, or rung.report(..., checkpoint=folder) in Python)";
                eprintln!("warning: {message}");
            }
            observer(controller.progress());
            if finished.is_some() || interrupted {
                await_deletions(&runtime, std::mem::take(&mut deletions));
            }
            if let Some(summary) = finished {
                return Ok(SweepEnd::Finished(summary));
            }
            if interrupted {
                shut_down(&receiver, stops, interrupt_grace);
                return Ok(SweepEnd::Interrupted(controller.progress().clone()));
            }
        }
    }
}

/// Stops every live trial and waits (up to `grace`) until their runners said they exited.
fn shut_down(receiver: &Receiver<Inbound>, mut stops: HashMap<TrialId, watch::Sender<bool>>, grace: Duration) {
    for stop in stops.values() {
        let _ = stop.send(true);
    }
    let deadline = Instant::now() + grace;
    while !stops.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(Inbound::Event(Event::Exited { trial, .. }, _)) => {
                stops.remove(&trial);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

/// Feeds the logged events to a fresh controller, checking each recreated trial's config.
fn replay(
    store: &Store,
    experiment: &ExperimentInfo,
    controller: &mut Controller,
    logged: &[LoggedEvent],
) -> Result<()> {
    let stored: HashMap<TrialId, _> = store
        .trials(experiment.id)?
        .into_iter()
        .map(|trial| (trial.id, trial.config))
        .collect();
    for entry in logged {
        for command in controller.handle(&entry.event, Duration::from_millis(entry.at_ms)) {
            if let Command::Launch(Launch {
                trial,
                config,
                attempt: 0,
                ..
            }) = command
            {
                match stored.get(&trial) {
                    Some(expected) if *expected == config => {}
                    Some(expected) => {
                        return Err(Error::ReplayDiverged(format!(
                            "event {} recreated {trial} with {} but the store holds {}",
                            entry.seq,
                            config.to_json(),
                            expected.to_json()
                        )));
                    }
                    None => {
                        return Err(Error::ReplayDiverged(format!(
                            "event {} created {trial}, which the store does not hold",
                            entry.seq
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Holds an experiment's lock: while it lives, no other process can drive the experiment.
#[derive(Debug)]
pub struct ExperimentLock {
    _file: std::fs::File,
}

impl ExperimentLock {
    /// Locks the experiment whose trial folders live in `trials_root`, or explains who holds it.
    pub fn acquire(trials_root: &std::path::Path, experiment: &str) -> Result<Self> {
        std::fs::create_dir_all(trials_root)
            .map_err(|e| Error::io(format!("creating {}", trials_root.display()), e))?;
        let path = trials_root.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        match crate::sys::try_lock_exclusive(&file) {
            Ok(true) => Ok(ExperimentLock { _file: file }),
            Ok(false) => Err(Error::setting(
                "experiment",
                format!(
                    "\"{experiment}\" is being run by another rung process right now (lock {})",
                    path.display()
                ),
            )),
            Err(e) => Err(Error::io(format!("locking {}", path.display()), e)),
        }
    }
}

/// Waits (up to a minute) for checkpoint deletions still running when the sweep ends.
fn await_deletions(runtime: &tokio::runtime::Handle, deletions: Vec<tokio::task::JoinHandle<()>>) {
    if deletions.iter().all(|deletion| deletion.is_finished()) {
        return;
    }
    let all = async {
        for deletion in deletions {
            let _ = deletion.await;
        }
    };
    if runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), all).await })
        .is_err()
    {
        tracing::warn!("checkpoint deletions still running after a minute; the rest are left in the store");
    }
}
