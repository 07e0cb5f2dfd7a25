//! The driver: the controller and the store, and the one place events are handled.
//!
//! Runners post [`Inbound`] messages to the driver's mailbox. Whoever drives takes everything
//! that is waiting (up to [`MAX_BATCH`] messages), hands each event to the controller, writes
//! the events and the records they caused in one transaction (group commit), and only then
//! answers the reports and carries out launches, stops and checkpoint deletions. The
//! controller and the store sit behind one lock, and the mailbox is emptied only under it, so
//! events are handled one batch at a time, in the order they were posted.
//!
//! Two kinds of threads drive:
//! - the driver thread ([`Driver::run`]), woken by messages posted from the async runtime (a
//!   trial process's reports, exits, the server) and by a tick when nothing happens;
//! - a trial thread reporting through [`TrialLink::report_blocking`] or ending through
//!   [`TrialLink::exited_blocking`] (Python trials, which run on threads of their own; Rust
//!   in-process trials, from `block_in_place`), when its trial is the only one running and
//!   nothing else waits ([`TrialLink::would_drive`]): it handles the batch itself.
//!   The answer then comes without a hand-off to another thread and back (two context
//!   switches per report, most of the engine's cost when one trial reports often), and an exit
//!   launches the next trial before the thread returns. With other trials running, the thread
//!   leaves its report to the driver thread, which commits the reports that arrive together in
//!   one transaction.
//!
//! Whoever drives holds the right to drive (set under the mailbox's lock) until the mailbox is
//! empty, so a message posted meanwhile is never left behind.
//!
//! The store's blocking writes never run on the async runtime's threads.
//!
//! On resume the driver first replays the experiment's logged events through the fresh
//! controller (discarding its commands, checking that every trial it recreates has the config
//! the store holds), then handles [`Event::Resume`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::error::{Error, Result};
use crate::store::{Batch, Durability, ExperimentInfo, Flush, LoggedEvent, Store};
use tune_core::controller::{Command, Controller, Event, Launch, Outcome, Progress, Record, Summary};
use tune_core::trial::{Decision, Report, TrialId};

/// The most messages one group commit takes.
pub const MAX_BATCH: usize = 4096;

/// How long the driver thread waits for a message before it hands the controller a tick.
const TICK: Duration = Duration::from_millis(200);

/// A message to the driver.
#[derive(Debug)]
pub enum Inbound {
    /// An event, with where to send the decision when it is a report.
    Event(Event, Option<oneshot::Sender<Decision>>),
    /// Stop the sweep for now (Ctrl-C): terminate running trials without ending them, so that a
    /// resume relaunches them from their checkpoints.
    Interrupt,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the driver's senders share: the mailbox, and the controller with its store once the
/// sweep runs.
struct Shared {
    mailbox: Mutex<Mailbox>,
    /// Signalled when the driver thread has work: a message posted while nobody drives, a
    /// driving trial thread leaving messages behind, or the sweep ending.
    posted: Condvar,
    /// `None` before the sweep starts and after it ended.
    core: Mutex<Option<Core>>,
    /// Launches running, as of the last batch.
    live: AtomicUsize,
}

/// Messages waiting to be handled, and who handles them.
#[derive(Default)]
struct Mailbox {
    queue: VecDeque<Inbound>,
    /// Some thread holds the right to drive: it handles every message in the queue before it
    /// gives the right up (or wakes the driver thread to take over), so a message posted while
    /// this is set is never left behind.
    driving: bool,
    /// The sweep ended: the driver thread winds it down, nobody else handles messages.
    ended: bool,
    /// Messages are dropped unread (their reports answer STOP): the sweep is over.
    closed: bool,
}

/// What the driver thread is woken for.
enum Wake {
    /// Messages to handle, or a tick when nothing happened for a while.
    Drive { tick: bool },
    /// The sweep ended.
    Ended,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            mailbox: Mutex::new(Mailbox::default()),
            posted: Condvar::new(),
            core: Mutex::new(None),
            live: AtomicUsize::new(0),
        })
    }

    /// Posts a message, waking the driver thread when no thread drives.
    fn post(&self, message: Inbound) {
        let mut mailbox = lock(&self.mailbox);
        if mailbox.closed {
            return;
        }
        mailbox.queue.push_back(message);
        if !mailbox.driving {
            self.posted.notify_one();
        }
    }

    /// Posts a message and takes the right to drive when nobody holds it: `Some(true)` when
    /// this thread must now drive, `Some(false)` when the thread driving handles the message,
    /// `None` when the mailbox is closed.
    fn post_and_claim(&self, message: Inbound) -> Option<bool> {
        let mut mailbox = lock(&self.mailbox);
        if mailbox.closed {
            return None;
        }
        mailbox.queue.push_back(message);
        if mailbox.driving {
            return Some(false);
        }
        if mailbox.queue.len() > 1 || self.live.load(Ordering::Relaxed) > 1 {
            // Other trials report too: the driver thread takes their reports together, in one
            // commit, while this thread waits. Driving here would commit this report alone.
            self.posted.notify_one();
            return Some(false);
        }
        mailbox.driving = true;
        Some(true)
    }

    /// The next batch for the thread driving: `first`, then the messages waiting (at most
    /// [`MAX_BATCH`] in all). `None` when there is nothing to do or `leave` says this thread has
    /// what it came for: the right to drive is then given up, and the driver thread woken for
    /// whatever is left.
    fn next_batch(&self, mut first: Vec<Inbound>, leave: bool) -> Option<Vec<Inbound>> {
        let mut mailbox = lock(&self.mailbox);
        if first.is_empty() && (mailbox.queue.is_empty() || leave) {
            mailbox.driving = false;
            if !mailbox.queue.is_empty() {
                self.posted.notify_one();
            }
            return None;
        }
        let room = MAX_BATCH.saturating_sub(first.len()).min(mailbox.queue.len());
        first.extend(mailbox.queue.drain(..room));
        Some(first)
    }

    /// Marks the sweep ended and wakes the driver thread to wind it down.
    fn end(&self) {
        let mut mailbox = lock(&self.mailbox);
        mailbox.driving = false;
        mailbox.ended = true;
        self.posted.notify_one();
    }

    /// Waits, on the driver thread, until it has something to do, and takes the right to drive.
    fn wait_for_work(&self) -> Wake {
        let mut deadline = Instant::now() + TICK;
        let mut mailbox = lock(&self.mailbox);
        loop {
            if mailbox.ended {
                return Wake::Ended;
            }
            if !mailbox.driving && !mailbox.queue.is_empty() {
                mailbox.driving = true;
                return Wake::Drive { tick: false };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if mailbox.driving {
                    // A trial thread drives, so the sweep is not idle: no tick needed.
                    deadline = Instant::now() + TICK;
                    continue;
                }
                mailbox.driving = true;
                return Wake::Drive { tick: true };
            }
            mailbox = self
                .posted
                .wait_timeout(mailbox, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Every message waiting, whoever drives (for the wind-down after an interrupt).
    fn take_all(&self) -> Vec<Inbound> {
        lock(&self.mailbox).queue.drain(..).collect()
    }

    /// Waits until a message is waiting or `timeout` passed (for the wind-down).
    fn wait_for_message(&self, timeout: Duration) {
        let mailbox = lock(&self.mailbox);
        if mailbox.queue.is_empty() {
            let _ = self.posted.wait_timeout(mailbox, timeout);
        }
    }

    /// Closes the mailbox and drops what it holds: every report still waiting answers STOP.
    fn close(&self) {
        let dropped: Vec<Inbound> = {
            let mut mailbox = lock(&self.mailbox);
            mailbox.closed = true;
            mailbox.ended = true;
            mailbox.queue.drain(..).collect()
        };
        drop(dropped);
    }
}

/// Handles batches until the mailbox is empty or `leave()` says the calling thread has what it
/// came for, then gives up the right to drive (which the caller holds). A batch that ends the
/// sweep hands it to the driver thread to wind down.
fn drive(shared: &Arc<Shared>, core: &mut Option<Core>, mut first: Vec<Inbound>, mut leave: impl FnMut() -> bool) {
    /// Ends the sweep if handling a batch panics (on a trial thread, the panic is the trial's;
    /// the sweep must not wait for a driver that is gone).
    struct EndOnPanic<'a>(&'a Shared);
    impl Drop for EndOnPanic<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.end();
            }
        }
    }
    let _guard = EndOnPanic(shared);
    loop {
        let Some(running) = core.as_mut().filter(|core| core.end.is_none()) else {
            shared.end();
            return;
        };
        let Some(waiting) = shared.next_batch(std::mem::take(&mut first), leave()) else {
            return;
        };
        running.step(shared, waiting);
    }
}

/// Sends messages to the driver. Cheap to clone.
#[derive(Clone)]
pub struct DriverHandle(Arc<Shared>);

impl std::fmt::Debug for DriverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DriverHandle")
    }
}

impl DriverHandle {
    /// Asks the driver to stop the sweep for now (see [`Inbound::Interrupt`]).
    pub fn interrupt(&self) {
        self.0.post(Inbound::Interrupt);
    }

    /// Ends the sweep for good: running trials end as `sweep_ended`.
    pub fn stop_sweep(&self) {
        self.0.post(Inbound::Event(Event::StopSweep, None));
    }
}

/// A runner's line to the driver for one launch of one trial.
pub struct TrialLink {
    trial: TrialId,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
}

impl std::fmt::Debug for TrialLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrialLink").field("trial", &self.trial).finish()
    }
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
        self.shared.post(self.reported(report, checkpoint, reply));
        async move { answer.await.unwrap_or(Decision::Stop) }
    }

    /// Reports a result from a thread that may block (never a thread of the async runtime),
    /// driving the controller on this thread when no other thread is (see the module
    /// documentation). Returns the decision once the report is committed; [`Decision::Stop`]
    /// when the sweep is gone.
    pub fn report_blocking(&self, report: Report, checkpoint: Option<String>) -> Decision {
        let (reply, mut answer) = oneshot::channel();
        match self.shared.post_and_claim(self.reported(report, checkpoint, reply)) {
            None => return Decision::Stop,
            Some(false) => {} // the thread driving answers it
            Some(true) => {
                let mut decision = None;
                let mut core = lock(&self.shared.core);
                drive(&self.shared, &mut core, Vec::new(), || {
                    if decision.is_none() {
                        decision = match answer.try_recv() {
                            Ok(decision) => Some(decision),
                            Err(oneshot::error::TryRecvError::Closed) => Some(Decision::Stop),
                            Err(oneshot::error::TryRecvError::Empty) => None,
                        };
                    }
                    decision.is_some()
                });
                if let Some(decision) = decision {
                    return decision;
                }
            }
        }
        answer.blocking_recv().unwrap_or(Decision::Stop)
    }

    /// Whether a report now would be handled on the reporting thread: nobody drives, nothing
    /// waits, and this trial runs alone. A hint (the answer may change at once), for an async
    /// trial choosing between [`TrialLink::report`] and [`TrialLink::report_blocking`].
    pub fn would_drive(&self) -> bool {
        let mailbox = lock(&self.shared.mailbox);
        !mailbox.driving && mailbox.queue.is_empty() && self.shared.live.load(Ordering::Relaxed) <= 1
    }

    fn reported(&self, report: Report, checkpoint: Option<String>, reply: oneshot::Sender<Decision>) -> Inbound {
        let event = Event::Reported {
            trial: self.trial,
            report,
            checkpoint,
        };
        Inbound::Event(event, Some(reply))
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
            shared: Arc::clone(&self.shared),
            stop: self.stop.clone(),
        }
    }

    /// Reports that the launch failed before its trial ran, for `reason`.
    pub fn fail(self, reason: impl std::fmt::Display) {
        self.exited(Outcome::Failed {
            reason: reason.to_string(),
        });
    }

    /// Tells the driver the trial's run ended, from a thread that may block, driving on this
    /// thread as [`TrialLink::report_blocking`] does: the next trial is launched before this
    /// returns. Call exactly once per launch (this or [`TrialLink::exited`]).
    pub fn exited_blocking(&self, outcome: Outcome) {
        let message = Inbound::Event(
            Event::Exited {
                trial: self.trial,
                outcome,
            },
            None,
        );
        if self.shared.post_and_claim(message) == Some(true) {
            // One batch: the one with this exit in it.
            let mut batches = 0;
            drive(&self.shared, &mut lock(&self.shared.core), Vec::new(), || {
                batches += 1;
                batches > 1
            });
        }
    }

    /// Tells the driver the trial's run ended, and resolves once the exit is committed. Call
    /// exactly once per launch (this, [`TrialLink::exited`] or [`TrialLink::exited_blocking`]).
    pub fn exited_committed(self, outcome: Outcome) -> impl Future<Output = ()> + Send + 'static {
        let (reply, committed) = oneshot::channel();
        self.shared.post(Inbound::Event(
            Event::Exited {
                trial: self.trial,
                outcome,
            },
            Some(reply),
        ));
        // The driver answers nothing to an exit: it drops the sender once the batch with the
        // exit in it is committed (or the sweep is gone).
        async move {
            let _ = committed.await;
        }
    }

    /// Tells the driver the trial's run ended. Call exactly once per launch.
    pub fn exited(self, outcome: Outcome) {
        self.shared.post(Inbound::Event(
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
    /// Called after every group commit with the current progress, on whichever thread drove
    /// it: it must return at once.
    pub observer: Box<dyn FnMut(&Progress) + Send>,
    /// Change the number of concurrent trials from now on (logged, so replay stays exact).
    pub max_concurrent: Option<usize>,
    /// How long interrupted trials get to exit before the driver returns anyway.
    pub interrupt_grace: Duration,
    /// Called after every group commit with the records it committed (experiment tracking
    /// mirrors them elsewhere). It runs between the commit and the answers, on whichever
    /// thread drove it, so it must return at once: queue the records, never wait on I/O.
    pub on_commit: Option<CommitHook>,
}

/// What [`DriverSetup::on_commit`] calls with the records of each group commit.
pub type CommitHook = Box<dyn FnMut(&[Record]) + Send>;

/// Why handling stopped.
enum End {
    Finished(Summary),
    Interrupted,
    Failed(Error),
}

/// The controller, the store and what the driver keeps between batches.
struct Core {
    store: Store,
    durability: Durability,
    experiment: ExperimentInfo,
    controller: Controller,
    runner: Arc<dyn Runner>,
    runtime: tokio::runtime::Handle,
    observer: Box<dyn FnMut(&Progress) + Send>,
    on_commit: Option<CommitHook>,
    /// Sweep time at the start of this session, and when the session started.
    offset: Duration,
    session_start: Instant,
    /// The last logged event's position.
    seq: u64,
    /// How to stop each live launch.
    stops: HashMap<TrialId, watch::Sender<bool>>,
    warned_no_checkpoint: bool,
    /// Deletions from an object store still running; the sweep waits for them before it ends.
    deletions: Vec<tokio::task::JoinHandle<()>>,
    /// Set by the batch that ended the sweep (or failed to commit).
    end: Option<End>,
}

impl Core {
    /// Handles one batch; a failure to commit ends the sweep with that error.
    fn step(&mut self, shared: &Arc<Shared>, waiting: Vec<Inbound>) {
        if let Err(error) = self.handle(shared, waiting) {
            self.end = Some(End::Failed(error));
        }
    }

    /// Hands the batch's events to the controller, commits what they caused, then answers the
    /// reports and carries out the commands.
    fn handle(&mut self, shared: &Arc<Shared>, waiting: Vec<Inbound>) -> Result<()> {
        let mut batch = Batch::default();
        let mut replies = Vec::new();
        // Senders of messages that get no answer (an exit waiting for its commit): dropped
        // only once the batch is committed, which is what their receivers wait for.
        let mut unanswered = Vec::new();
        let mut actions = Vec::new();
        let mut interrupted = false;
        for message in waiting {
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
                self.stops.remove(&trial);
            }
            let at = self.offset + self.session_start.elapsed();
            let commands = self.controller.handle(&event, at);
            if !(event == Event::Tick && commands.is_empty()) {
                self.seq += 1;
                batch.events.push(LoggedEvent {
                    seq: self.seq,
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
            unanswered.extend(reply);
        }
        // A checkpoint the keep policy dropped is deleted only once the commit that stops
        // referencing it is on the disk: after a power loss the store must not point at a
        // checkpoint that is gone.
        let deletes = actions.iter().any(|a| matches!(a, Command::DeleteCheckpoint { .. }));
        let flush = if deletes { Flush::Disk } else { self.durability.flush() };
        self.store.commit(self.experiment.id, &batch, flush)?;
        if let Some(on_commit) = self.on_commit.as_mut()
            && !batch.records.is_empty()
        {
            on_commit(&batch.records);
        }
        for (reply, decision) in replies {
            let _ = reply.send(decision);
        }
        drop(unanswered);
        for action in actions {
            self.act(shared, action);
        }
        if !self.warned_no_checkpoint && self.controller.paused_without_checkpoint() {
            self.warned_no_checkpoint = true;
            let message = "the scheduler pauses trials, but a trial asked to pause had no checkpoint: \
                           it was stopped instead (a trial is paused and resumed only from a checkpoint: \"checkpoint\": true \
                           on its report line, or rung.report(..., checkpoint=folder) in Python)";
            eprintln!("warning: {message}");
        }
        (self.observer)(self.controller.progress());
        shared.live.store(self.stops.len(), Ordering::Relaxed);
        if interrupted && self.end.is_none() {
            self.end = Some(End::Interrupted);
        }
        Ok(())
    }

    /// Carries out one command of the controller.
    fn act(&mut self, shared: &Arc<Shared>, action: Command) {
        match action {
            Command::Launch(launch) => {
                let (stop_sender, stop) = watch::channel(false);
                self.stops.insert(launch.trial, stop_sender);
                let link = TrialLink {
                    trial: launch.trial,
                    shared: Arc::clone(shared),
                    stop,
                };
                let _entered = self.runtime.enter();
                self.runner.launch(launch, link);
            }
            Command::Stop { trial } => {
                if let Some(stop) = self.stops.get(&trial) {
                    let _ = stop.send(true);
                }
            }
            Command::DeleteCheckpoint { trial, path } => {
                if !crate::storage::is_checkpoint_of(&path, &self.experiment.name, trial) {
                    // Reports are checked where they come in; this is the last guard: nothing
                    // that is not a checkpoint folder of this trial is deleted.
                    tracing::warn!(%trial, %path, "not deleting a checkpoint outside the trial's checkpoint folders");
                } else if crate::storage::is_remote(&path) {
                    // Off this thread: an object store may be slow or down, the sweep is not.
                    self.deletions.retain(|deletion| !deletion.is_finished());
                    self.deletions.push(self.runtime.spawn(async move {
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
            Command::Finished(summary) => {
                if !matches!(self.end, Some(End::Failed(_))) {
                    self.end = Some(End::Finished(summary));
                }
            }
            Command::Persist(_) | Command::Respond { .. } => unreachable!("handled before the commands"),
        }
    }
}

/// A driver that has not started yet: its handle can be given out before [`Driver::run`].
pub struct Driver {
    shared: Arc<Shared>,
}

impl Default for Driver {
    fn default() -> Self {
        Driver::new()
    }
}

impl Driver {
    /// A new driver mailbox.
    pub fn new() -> Self {
        Driver { shared: Shared::new() }
    }

    /// A handle to send it messages.
    pub fn handle(&self) -> DriverHandle {
        DriverHandle(Arc::clone(&self.shared))
    }

    /// Runs the sweep to its end (or interruption). Blocks: run it on a dedicated thread.
    pub fn run(self, setup: DriverSetup) -> Result<SweepEnd> {
        let shared = self.shared;
        let result = run_sweep(&shared, setup);
        shared.close();
        result
    }
}

fn run_sweep(shared: &Arc<Shared>, setup: DriverSetup) -> Result<SweepEnd> {
    let DriverSetup {
        store,
        durability,
        experiment,
        mut controller,
        runner,
        runtime,
        mut observer,
        max_concurrent,
        interrupt_grace,
        on_commit,
    } = setup;

    let logged = store.events(experiment.id)?;
    let resuming = !logged.is_empty();
    let offset = Duration::from_millis(experiment.elapsed_ms.max(logged.last().map_or(0, |e| e.at_ms)));
    let seq = logged.last().map_or(0, |e| e.seq);
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

    let mut first = Vec::new();
    if let Some(limit) = max_concurrent.filter(|&limit| limit != controller.config().max_concurrent) {
        first.push(Inbound::Event(Event::SetMaxConcurrent { max_concurrent: limit }, None));
    }
    first.push(Inbound::Event(
        if resuming { Event::Resume } else { Event::Start },
        None,
    ));
    let mut core = lock(&shared.core);
    *core = Some(Core {
        store,
        durability,
        experiment,
        controller,
        runner,
        runtime,
        observer,
        on_commit,
        offset,
        session_start: Instant::now(),
        seq,
        stops: HashMap::new(),
        warned_no_checkpoint: false,
        deletions: Vec::new(),
        end: None,
    });
    // The first batch starts the sweep, before any message posted meanwhile.
    lock(&shared.mailbox).driving = true;
    drive(shared, &mut core, first, || false);
    drop(core);

    loop {
        if let Wake::Drive { tick } = shared.wait_for_work() {
            let first = if tick {
                vec![Inbound::Event(Event::Tick, None)]
            } else {
                Vec::new()
            };
            drive(shared, &mut lock(&shared.core), first, || false);
            continue;
        }
        let core = lock(&shared.core)
            .take()
            .expect("the core lives until the sweep is wound down");
        return wind_down(shared, core, interrupt_grace);
    }
}

/// Ends a sweep whose last batch was handled: waits for checkpoint deletions, and after an
/// interrupt stops the live trials and waits (up to `grace`) for their runners to say they
/// exited.
fn wind_down(shared: &Arc<Shared>, core: Core, grace: Duration) -> Result<SweepEnd> {
    let Core {
        controller,
        runtime,
        stops,
        deletions,
        end,
        ..
    } = core;
    let end = end.unwrap_or_else(|| End::Failed(Error::Internal("handling the sweep's events panicked".into())));
    if let End::Failed(error) = end {
        return Err(error);
    }
    await_deletions(&runtime, deletions);
    match end {
        End::Finished(summary) => Ok(SweepEnd::Finished(summary)),
        End::Interrupted => {
            shut_down(shared, stops, grace);
            Ok(SweepEnd::Interrupted(controller.progress().clone()))
        }
        End::Failed(_) => unreachable!("returned above"),
    }
}

/// Stops every live trial and waits (up to `grace`) until their runners said they exited.
/// Other messages are dropped (their reports answer STOP).
fn shut_down(shared: &Shared, mut stops: HashMap<TrialId, watch::Sender<bool>>, grace: Duration) {
    for stop in stops.values() {
        let _ = stop.send(true);
    }
    let deadline = Instant::now() + grace;
    while !stops.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        shared.wait_for_message(left);
        for message in shared.take_all() {
            if let Inbound::Event(Event::Exited { trial, .. }, _) = message {
                stops.remove(&trial);
            }
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
