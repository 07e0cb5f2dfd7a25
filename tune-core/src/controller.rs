//! The controller: a deterministic state machine with no I/O and no clock of its own.
//!
//! `Controller::handle(event, now) -> Vec<Command>` is the whole interface. Runners, the store
//! and the CLI are adapters around it: they turn what happens into [`Event`]s and carry out the
//! [`Command`]s. Because it is pure, the same events in the same order always give the same
//! commands and the same state — which is what makes resume exact: the store logs every event
//! the controller handled, and a resumed sweep replays them through a fresh controller (with a
//! fresh searcher and scheduler) before it carries on.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::scheduler::{Scheduler, TrialReport};
use crate::searcher::{Searcher, Suggestion, TrialResult};
use crate::trial::{Decision, EndReason, Mode, Report, TrialId, TrialStatus};
use crate::value::Config;

/// The settings the controller enforces.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// The metric to optimise.
    pub metric: String,
    /// Whether to minimise or maximise it.
    pub mode: Mode,
    /// How many trials to create at most (`None`: until another condition ends the sweep).
    pub max_trials: Option<u64>,
    /// How many trials run at once.
    pub max_concurrent: usize,
    /// End the sweep once this much time has passed.
    pub time_budget: Option<Duration>,
    /// End the sweep once a trial's metric reaches this value.
    pub target: Option<f64>,
    /// Retries per trial after a failure, each from its last checkpoint.
    pub max_failures: u32,
    /// Launches of a trial lost in a row (their machine gone) before it ends as errored: a
    /// trial that takes its agents down with it must not be relaunched without end. A launch
    /// that reports a new step resets the count.
    pub max_lost: u32,
    /// End the sweep once this many trials have errored.
    pub max_failed_trials: Option<u64>,
    /// Keep this many best checkpoints per trial (plus the most recent); `None` keeps all.
    pub checkpoint_keep: Option<usize>,
}

/// Something that happened, fed to [`Controller::handle`]. Events are what the store logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The sweep starts: fill the free slots.
    Start,
    /// A trial reported a result, possibly with a checkpoint already moved to `checkpoint`.
    Reported {
        /// The trial.
        trial: TrialId,
        /// The result.
        report: Report,
        /// Where the checkpoint taken at this step now lives, if one was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint: Option<String>,
    },
    /// A trial's process (or closure) ended.
    Exited {
        /// The trial.
        trial: TrialId,
        /// How it ended.
        outcome: Outcome,
    },
    /// Time passed; lets the time budget end the sweep. Logged only when it changed something.
    Tick,
    /// The sweep resumes after its controller stopped: relaunch what was running.
    Resume,
    /// Run this many trials at once from now on.
    SetMaxConcurrent {
        /// The new limit.
        max_concurrent: usize,
    },
    /// End the sweep now: running trials end as `sweep_ended`.
    StopSweep,
}

/// How a trial's run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Exit code 0 / the closure returned `Ok`.
    Success,
    /// Anything else, with a reason a person can read.
    Failed {
        /// What went wrong.
        reason: String,
    },
    /// The machine running it was lost (a worker agent stopped renewing its lease): the trial
    /// is relaunched from its last checkpoint, and this does not count as one of its failures.
    Lost {
        /// Which machine, and how it was lost.
        reason: String,
    },
}

/// A checkpoint of a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRef {
    /// The step it was taken at.
    pub step: u64,
    /// Where it lives.
    pub path: String,
}

/// Start (or restart) a trial.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// The trial.
    pub trial: TrialId,
    /// Its configuration.
    pub config: Config,
    /// The checkpoint to restore from, if any.
    pub restore: Option<CheckpointRef>,
    /// How many times it was launched before (0 for the first launch).
    pub attempt: u32,
}

/// What the controller asks its adapters to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Start a trial.
    Launch(Launch),
    /// Answer a trial's report (sent only after the report is committed).
    Respond {
        /// The trial.
        trial: TrialId,
        /// The step of the report answered.
        step: u64,
        /// The decision.
        decision: Decision,
    },
    /// Terminate a trial that is not waiting for an answer (the sweep is ending).
    Stop {
        /// The trial.
        trial: TrialId,
    },
    /// Delete a checkpoint that the keep policy no longer keeps (after the commit).
    DeleteCheckpoint {
        /// The trial.
        trial: TrialId,
        /// Where it lives.
        path: String,
    },
    /// Write this to the store, in the same transaction as the event.
    Persist(Record),
    /// The sweep is over.
    Finished(Summary),
}

/// A row of the store's derived tables.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A trial's current state.
    Trial(TrialRow),
    /// A report.
    Report {
        /// The trial.
        trial: TrialId,
        /// The report.
        report: Report,
    },
    /// A checkpoint was taken.
    Checkpoint {
        /// The trial.
        trial: TrialId,
        /// Step and location.
        checkpoint: CheckpointRef,
        /// The metric at that step.
        value: Option<f64>,
    },
    /// A trial continues with a new configuration (PBT's explore step).
    TrialConfig {
        /// The trial.
        trial: TrialId,
        /// Its new configuration.
        config: Config,
    },
    /// A checkpoint was deleted by the keep policy.
    CheckpointDeleted {
        /// The trial.
        trial: TrialId,
        /// Where it lived.
        path: String,
    },
    /// The sweep ended.
    ExperimentFinished {
        /// Why.
        cause: EndCause,
    },
}

/// A trial as the store's `trials` table holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRow {
    /// The trial.
    pub id: TrialId,
    /// Its status.
    pub status: TrialStatus,
    /// Its configuration.
    pub config: Config,
    /// Failed runs so far.
    pub failures: u32,
    /// Launches so far, relaunches after failures and resumes included.
    pub launches: u32,
    /// Its last report.
    pub last: Option<Report>,
    /// Its best value of the metric and the step it was reported at.
    pub best: Option<(f64, u64)>,
    /// Why it errored.
    pub error: Option<String>,
}

/// The trial with the best value of the metric among `trials`.
pub fn best_trial(trials: &[TrialRow], mode: Mode) -> Option<&TrialRow> {
    trials
        .iter()
        .filter_map(|trial| trial.best.map(|(value, _)| (trial, mode.score(value))))
        .fold(None, |best: Option<(&TrialRow, f64)>, (trial, score)| match best {
            Some((_, best_score)) if best_score >= score => best,
            _ => Some((trial, score)),
        })
        .map(|(trial, _)| trial)
}

/// Why the sweep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndCause {
    /// Every trial of `num_samples` ran.
    AllTrialsDone,
    /// The searcher had nothing more to propose.
    SearcherExhausted,
    /// The time budget was spent.
    TimeBudget,
    /// A trial reached the target.
    TargetReached,
    /// Too many trials errored.
    TooManyFailures,
    /// Someone asked the sweep to stop.
    StoppedByUser,
    /// The searcher failed.
    SearcherFailed,
}

impl EndCause {
    /// A short name for displays and the store.
    pub fn label(self) -> &'static str {
        match self {
            EndCause::AllTrialsDone => "all_trials_done",
            EndCause::SearcherExhausted => "searcher_exhausted",
            EndCause::TimeBudget => "time_budget",
            EndCause::TargetReached => "target_reached",
            EndCause::TooManyFailures => "too_many_failures",
            EndCause::StoppedByUser => "stopped_by_user",
            EndCause::SearcherFailed => "searcher_failed",
        }
    }
}

/// Trial counts by status and the best result so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Trials created.
    pub created: u64,
    /// Trials pending.
    pub pending: u64,
    /// Trials running.
    pub running: u64,
    /// Trials paused.
    pub paused: u64,
    /// Trials that ran to their end.
    pub completed: u64,
    /// Trials the scheduler stopped.
    pub stopped: u64,
    /// Trials ended with the sweep.
    pub sweep_ended: u64,
    /// Trials that errored.
    pub errored: u64,
    /// The best value of the metric so far, its trial and step.
    pub best: Option<(TrialId, f64, u64)>,
    /// The trial budget (`None`: unbounded).
    pub max_trials: Option<u64>,
}

impl Progress {
    fn count(&mut self, status: TrialStatus) -> &mut u64 {
        match status {
            TrialStatus::Pending => &mut self.pending,
            TrialStatus::Running => &mut self.running,
            TrialStatus::Paused => &mut self.paused,
            TrialStatus::Terminated(EndReason::Completed) => &mut self.completed,
            TrialStatus::Terminated(EndReason::StoppedEarly) => &mut self.stopped,
            TrialStatus::Terminated(EndReason::SweepEnded) => &mut self.sweep_ended,
            TrialStatus::Errored => &mut self.errored,
        }
    }

    /// Trials that have ended for good.
    pub fn done(&self) -> u64 {
        self.completed + self.stopped + self.sweep_ended + self.errored
    }
}

/// How the sweep ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Why it ended.
    pub cause: EndCause,
    /// The counts at the end.
    pub progress: Progress,
    /// The searcher's error, when it failed.
    pub error: Option<String>,
}

struct TrialState {
    status: TrialStatus,
    config: Config,
    /// Whether a process (or closure) of this trial holds a slot.
    alive: bool,
    failures: u32,
    /// Launches lost in a row, without a new step reported since.
    lost_in_a_row: u32,
    launches: u32,
    last: Option<Report>,
    best: Option<(f64, u64)>,
    has_metric: bool,
    /// Metric names it reported, remembered only until it reports the sweep's metric.
    other_metrics: BTreeSet<String>,
    checkpoints: Vec<(CheckpointRef, Option<f64>)>,
    error: Option<String>,
    /// The checkpoint the next launch restores from instead of its own (PBT's donor).
    restore_override: Option<CheckpointRef>,
    /// Relaunch as soon as its process has exited (it was exploited while paused).
    restart_when_exited: bool,
    /// The donor checkpoint this trial pins until it has restored from it.
    pin: Option<String>,
}

/// The sans-IO controller. See the module documentation.
pub struct Controller {
    config: ControllerConfig,
    searcher: Box<dyn Searcher>,
    scheduler: Box<dyn Scheduler>,
    trials: Vec<TrialState>,
    alive: BTreeSet<TrialId>,
    paused: BTreeSet<TrialId>,
    /// Paused trials whose processes have exited: what a scheduler may resume.
    resumable: BTreeSet<TrialId>,
    /// Exploited trials whose processes have exited, to relaunch first.
    restart_queue: VecDeque<TrialId>,
    /// Checkpoints an exploited trial will restore from: the keep policy leaves them alone.
    pinned: std::collections::BTreeMap<String, u32>,
    progress: Progress,
    searcher_done: bool,
    told_no_more_trials: bool,
    ending: Option<EndCause>,
    searcher_error: Option<String>,
    finished: bool,
    warned_pause_without_checkpoint: bool,
}

impl Controller {
    /// A controller with a fresh searcher and scheduler.
    pub fn new(config: ControllerConfig, searcher: Box<dyn Searcher>, scheduler: Box<dyn Scheduler>) -> Self {
        let progress = Progress {
            max_trials: config.max_trials,
            ..Progress::default()
        };
        Controller {
            config,
            searcher,
            scheduler,
            trials: Vec::new(),
            alive: BTreeSet::new(),
            paused: BTreeSet::new(),
            resumable: BTreeSet::new(),
            restart_queue: VecDeque::new(),
            pinned: std::collections::BTreeMap::new(),
            progress,
            searcher_done: false,
            told_no_more_trials: false,
            ending: None,
            searcher_error: None,
            finished: false,
            warned_pause_without_checkpoint: false,
        }
    }

    /// The settings.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// Counts and best so far.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Whether the sweep is over.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The status of a trial.
    pub fn status(&self, trial: TrialId) -> Option<TrialStatus> {
        self.state(trial).map(|state| state.status)
    }

    /// Trials holding a slot.
    pub fn alive(&self) -> impl Iterator<Item = TrialId> + '_ {
        self.alive.iter().copied()
    }

    /// Whether a scheduler asked to pause a trial that had no checkpoint (it was stopped instead).
    pub fn paused_without_checkpoint(&self) -> bool {
        self.warned_pause_without_checkpoint
    }

    fn index(&self, trial: TrialId) -> Option<usize> {
        let index = usize::try_from(trial.0.checked_sub(1)?).ok()?;
        (index < self.trials.len()).then_some(index)
    }

    fn state(&self, trial: TrialId) -> Option<&TrialState> {
        self.index(trial).map(|index| &self.trials[index])
    }

    fn state_mut(&mut self, trial: TrialId) -> Option<&mut TrialState> {
        self.index(trial).map(|index| &mut self.trials[index])
    }

    /// Handles one event at time `now` (time since the sweep first started).
    pub fn handle(&mut self, event: &Event, now: Duration) -> Vec<Command> {
        let mut commands = Vec::new();
        if self.finished {
            if let Event::Reported { trial, report, .. } = event {
                commands.push(Command::Respond {
                    trial: *trial,
                    step: report.step,
                    decision: Decision::Stop,
                });
            }
            return commands;
        }
        if let Some(budget) = self.config.time_budget
            && now >= budget
        {
            self.begin_end(EndCause::TimeBudget, &mut commands);
        }
        match event {
            Event::Start => {}
            Event::Resume => self.resume(&mut commands),
            Event::Reported {
                trial,
                report,
                checkpoint,
            } => self.on_report(*trial, report, checkpoint.as_deref(), &mut commands),
            Event::Exited { trial, outcome } => self.on_exit(*trial, outcome, &mut commands),
            Event::Tick => {}
            Event::SetMaxConcurrent { max_concurrent } => self.config.max_concurrent = (*max_concurrent).max(1),
            Event::StopSweep => self.begin_end(EndCause::StoppedByUser, &mut commands),
        }
        self.fill(&mut commands);
        self.maybe_finish(&mut commands);
        commands
    }

    fn set_status(&mut self, trial: TrialId, next: TrialStatus) {
        let state = self.state_mut(trial).expect("status of a known trial");
        let previous = state.status;
        debug_assert!(
            previous.can_become(next),
            "illegal transition of {trial}: {previous:?} -> {next:?}"
        );
        state.status = next;
        *self.progress.count(previous) -= 1;
        *self.progress.count(next) += 1;
        match next {
            TrialStatus::Paused => {
                self.paused.insert(trial);
            }
            _ => {
                self.paused.remove(&trial);
                self.resumable.remove(&trial);
            }
        }
    }

    fn row(&self, trial: TrialId) -> Record {
        let state = self.state(trial).expect("row of a known trial");
        Record::Trial(TrialRow {
            id: trial,
            status: state.status,
            config: state.config.clone(),
            failures: state.failures,
            launches: state.launches,
            last: state.last.clone(),
            best: state.best,
            error: state.error.clone(),
        })
    }

    fn launch(&mut self, trial: TrialId, commands: &mut Vec<Command>) {
        let state = self.state_mut(trial).expect("launch of a known trial");
        let restore = state
            .restore_override
            .take()
            .or_else(|| state.checkpoints.last().map(|(checkpoint, _)| checkpoint.clone()));
        let attempt = state.launches;
        state.launches += 1;
        state.alive = true;
        let config = state.config.clone();
        if state.status != TrialStatus::Running {
            self.set_status(trial, TrialStatus::Running);
        }
        self.alive.insert(trial);
        commands.push(Command::Persist(self.row(trial)));
        commands.push(Command::Launch(Launch {
            trial,
            config,
            restore,
            attempt,
        }));
    }

    /// Ends a trial for good and tells the searcher and scheduler.
    fn finish_trial(
        &mut self,
        trial: TrialId,
        status: TrialStatus,
        error: Option<String>,
        commands: &mut Vec<Command>,
    ) {
        self.set_status(trial, status);
        self.unpin(trial);
        let index = self.index(trial).expect("finish of a known trial");
        self.trials[index].error = error;
        let state = &self.trials[index];
        self.searcher.on_trial_complete(
            trial,
            &TrialResult {
                config: &state.config,
                last: state.last.as_ref(),
                failed: status == TrialStatus::Errored,
            },
        );
        self.scheduler.on_trial_remove(trial);
        if status == TrialStatus::Errored
            && let Some(limit) = self.config.max_failed_trials
            && self.progress.errored >= limit
        {
            self.begin_end(EndCause::TooManyFailures, commands);
        }
        commands.push(Command::Persist(self.row(trial)));
    }

    fn resume(&mut self, commands: &mut Vec<Command>) {
        let was_alive: Vec<TrialId> = self.alive.iter().copied().collect();
        for trial in was_alive {
            let status = self.status(trial).expect("alive trials are known");
            self.alive.remove(&trial);
            self.state_mut(trial).expect("known").alive = false;
            // A trial that was running when the controller stopped restarts from its last
            // checkpoint; that is not one of its failures.
            if status == TrialStatus::Running && self.ending.is_none() {
                self.launch(trial, commands);
            } else if status == TrialStatus::Paused {
                self.paused_trial_exited(trial);
            }
        }
    }

    fn on_report(&mut self, trial: TrialId, report: &Report, checkpoint: Option<&str>, commands: &mut Vec<Command>) {
        let respond = |decision| Command::Respond {
            trial,
            step: report.step,
            decision,
        };
        let Some(index) = self.index(trial) else {
            commands.push(respond(Decision::Stop));
            return;
        };
        if self.trials[index].status != TrialStatus::Running {
            commands.push(respond(Decision::Stop));
            return;
        }
        self.unpin(trial); // it reports, so it has restored from whatever it pinned
        let state = &mut self.trials[index];
        // Reports are idempotent per (trial, step): a trial restarted from a checkpoint repeats
        // steps that were already committed; the first value stands.
        if state.last.as_ref().is_some_and(|last| report.step <= last.step) {
            // A checkpoint taken on such a repeated step is newer than the one the trial
            // restarted from (else the restart would have used it): keep it as a restore point.
            if let Some(path) = checkpoint
                && state
                    .checkpoints
                    .last()
                    .is_none_or(|(newest, _)| newest.step < report.step)
            {
                let value = report.metrics.get(&self.config.metric).copied();
                self.record_checkpoint(trial, report.step, path, value, commands);
            }
            commands.push(respond(Decision::Continue));
            return;
        }
        let metric = &self.config.metric;
        let value = report.metrics.get(metric).copied();
        match value {
            Some(value) => {
                state.has_metric = true;
                state.other_metrics.clear();
                if state
                    .best
                    .is_none_or(|(best, _)| self.config.mode.is_better(value, best) || best.is_nan())
                {
                    state.best = Some((value, report.step));
                }
            }
            None if !state.has_metric => state.other_metrics.extend(report.metrics.keys().cloned()),
            None => {}
        }
        state.last = Some(report.clone());
        state.lost_in_a_row = 0; // this launch made progress
        commands.push(Command::Persist(Record::Report {
            trial,
            report: report.clone(),
        }));
        if let Some(path) = checkpoint {
            self.record_checkpoint(trial, report.step, path, value, commands);
        }
        if let Some(value) = value
            && self
                .progress
                .best
                .is_none_or(|(_, best, _)| self.config.mode.is_better(value, best))
            && value.is_finite()
        {
            self.progress.best = Some((trial, value, report.step));
        }
        self.searcher.on_trial_result(trial, report);

        if let (Some(value), Some(target)) = (value, self.config.target)
            && self.config.mode.reaches(value, target)
        {
            commands.push(Command::Persist(self.row(trial)));
            commands.push(respond(Decision::Stop));
            self.begin_end(EndCause::TargetReached, commands);
            return;
        }
        let has_checkpoint = self.state(trial).is_some_and(|s| !s.checkpoints.is_empty());
        let decision = match value {
            Some(value) => {
                let view = TrialReport {
                    report,
                    value,
                    checkpointed: checkpoint.is_some(),
                    has_checkpoint,
                };
                self.scheduler.on_result(trial, &view)
            }
            None => Decision::Continue,
        };
        let mut exploit = None;
        if decision == Decision::Pause {
            exploit = self.scheduler.take_exploit(trial).and_then(|exploit| {
                let donor = self.state(exploit.donor)?.checkpoints.last()?.0.clone();
                Some((exploit.config, donor))
            });
        }
        let decision = match decision {
            Decision::Pause if exploit.is_none() && !has_checkpoint => {
                // Never leave a trial paused with no way back.
                self.warned_pause_without_checkpoint = true;
                Decision::Stop
            }
            other => other,
        };
        match decision {
            Decision::Continue => commands.push(Command::Persist(self.row(trial))),
            Decision::Stop => {
                self.finish_trial(trial, TrialStatus::Terminated(EndReason::StoppedEarly), None, commands)
            }
            Decision::Pause => {
                self.set_status(trial, TrialStatus::Paused);
                if let Some((config, donor)) = exploit {
                    *self.pinned.entry(donor.path.clone()).or_default() += 1;
                    let state = self.state_mut(trial).expect("known trial");
                    state.pin = Some(donor.path.clone());
                    state.config = config.clone();
                    state.restore_override = Some(donor);
                    state.restart_when_exited = true;
                    commands.push(Command::Persist(Record::TrialConfig { trial, config }));
                }
                commands.push(Command::Persist(self.row(trial)));
            }
        }
        commands.push(respond(decision));
    }

    /// Records a checkpoint of `trial` taken at `step` and applies the keep policy.
    fn record_checkpoint(
        &mut self,
        trial: TrialId,
        step: u64,
        path: &str,
        value: Option<f64>,
        commands: &mut Vec<Command>,
    ) {
        let checkpoint = CheckpointRef {
            step,
            path: path.to_owned(),
        };
        self.state_mut(trial)
            .expect("known trial")
            .checkpoints
            .push((checkpoint.clone(), value));
        commands.push(Command::Persist(Record::Checkpoint {
            trial,
            checkpoint,
            value,
        }));
        self.apply_keep_policy(trial, commands);
    }

    fn apply_keep_policy(&mut self, trial: TrialId, commands: &mut Vec<Command>) {
        let Some(keep) = self.config.checkpoint_keep else {
            return;
        };
        let mode = self.config.mode;
        let index = self.index(trial).expect("known trial");
        let pinned = &self.pinned;
        let state = &mut self.trials[index];
        let latest = state.checkpoints.len() - 1;
        let mut ranked: Vec<usize> = (0..latest).collect();
        let score = |index: usize, checkpoints: &[(CheckpointRef, Option<f64>)]| {
            checkpoints[index].1.map_or(f64::NEG_INFINITY, |v| mode.score(v))
        };
        // Best first; among equals the newer first.
        ranked.sort_by(|&a, &b| {
            score(b, &state.checkpoints)
                .total_cmp(&score(a, &state.checkpoints))
                .then(b.cmp(&a))
        });
        let latest_in_top = score(latest, &state.checkpoints)
            >= ranked
                .get(keep.saturating_sub(1))
                .map_or(f64::NEG_INFINITY, |&i| score(i, &state.checkpoints));
        let others_kept = if latest_in_top { keep.saturating_sub(1) } else { keep };
        let mut doomed: Vec<usize> = ranked
            .into_iter()
            .skip(others_kept)
            .filter(|&i| !pinned.contains_key(&state.checkpoints[i].0.path))
            .collect();
        doomed.sort_unstable_by(|a, b| b.cmp(a));
        for index in doomed {
            let (checkpoint, _) = state.checkpoints.remove(index);
            commands.push(Command::Persist(Record::CheckpointDeleted {
                trial,
                path: checkpoint.path.clone(),
            }));
            commands.push(Command::DeleteCheckpoint {
                trial,
                path: checkpoint.path,
            });
        }
    }

    fn on_exit(&mut self, trial: TrialId, outcome: &Outcome, commands: &mut Vec<Command>) {
        let Some(index) = self.index(trial) else { return };
        let state = &mut self.trials[index];
        if !state.alive {
            return;
        }
        state.alive = false;
        self.alive.remove(&trial);
        if self.trials[index].status == TrialStatus::Running {
            self.unpin(trial);
        }
        let state = &mut self.trials[index];
        let status = state.status;
        if status == TrialStatus::Paused {
            self.paused_trial_exited(trial);
            return;
        }
        if status != TrialStatus::Running {
            return; // stopped or ended with the sweep: its slot is free now, nothing else
        }
        match outcome {
            Outcome::Success if !state.has_metric => {
                let reported = if state.other_metrics.is_empty() {
                    "it reported nothing".to_owned()
                } else {
                    format!(
                        "it reported: {}",
                        state.other_metrics.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                };
                let error = format!(
                    "trial never reported the metric \"{}\" ({reported})",
                    self.config.metric
                );
                self.finish_trial(trial, TrialStatus::Errored, Some(error), commands);
            }
            Outcome::Success => self.finish_trial(trial, TrialStatus::Terminated(EndReason::Completed), None, commands),
            Outcome::Lost { reason } if self.ending.is_none() => {
                state.lost_in_a_row += 1;
                if state.lost_in_a_row < self.config.max_lost {
                    self.launch(trial, commands);
                } else {
                    let error = format!(
                        "{reason} ({} launches in a row lost; max_lost is {})",
                        state.lost_in_a_row, self.config.max_lost
                    );
                    self.finish_trial(trial, TrialStatus::Errored, Some(error), commands);
                }
            }
            Outcome::Lost { reason } | Outcome::Failed { reason } => {
                state.failures += 1;
                if state.failures <= self.config.max_failures && self.ending.is_none() {
                    state.error = Some(reason.clone());
                    self.launch(trial, commands);
                } else {
                    let error = if state.failures > 1 {
                        format!("{reason} (after {} attempts)", state.failures)
                    } else {
                        reason.clone()
                    };
                    self.finish_trial(trial, TrialStatus::Errored, Some(error), commands);
                }
            }
        }
    }

    fn begin_end(&mut self, cause: EndCause, commands: &mut Vec<Command>) {
        if self.ending.is_some() {
            return;
        }
        self.ending = Some(cause);
        let running: Vec<TrialId> = self
            .alive
            .iter()
            .copied()
            .filter(|&t| self.status(t) == Some(TrialStatus::Running))
            .collect();
        for trial in running {
            self.finish_trial(trial, TrialStatus::Terminated(EndReason::SweepEnded), None, commands);
            commands.push(Command::Stop { trial });
        }
        let paused: Vec<TrialId> = self.paused.iter().copied().collect();
        for trial in paused {
            self.finish_trial(trial, TrialStatus::Terminated(EndReason::SweepEnded), None, commands);
        }
    }

    /// The trial no longer needs the donor checkpoint it pinned (it restored from it, or ended).
    fn unpin(&mut self, trial: TrialId) {
        let Some(path) = self.state_mut(trial).and_then(|state| state.pin.take()) else {
            return;
        };
        if let Some(count) = self.pinned.get_mut(&path) {
            *count -= 1;
            if *count == 0 {
                self.pinned.remove(&path);
            }
        }
    }

    /// A paused trial's process is gone: it waits to be resumed, or restarts at once when it
    /// was exploited.
    fn paused_trial_exited(&mut self, trial: TrialId) {
        let state = self.state_mut(trial).expect("known trial");
        if std::mem::take(&mut state.restart_when_exited) {
            self.restart_queue.push_back(trial);
        } else {
            self.resumable.insert(trial);
        }
    }

    /// Stops the trials the scheduler gave up on.
    fn stop_given_up(&mut self, commands: &mut Vec<Command>) {
        for trial in self.scheduler.take_trials_to_stop() {
            match self.status(trial) {
                Some(TrialStatus::Paused) => {
                    self.restart_queue.retain(|t| *t != trial);
                    self.finish_trial(trial, TrialStatus::Terminated(EndReason::StoppedEarly), None, commands);
                }
                Some(TrialStatus::Running) => {
                    self.finish_trial(trial, TrialStatus::Terminated(EndReason::StoppedEarly), None, commands);
                    commands.push(Command::Stop { trial });
                }
                _ => {}
            }
        }
    }

    fn fill(&mut self, commands: &mut Vec<Command>) {
        self.fill_slots(commands);
        let no_more = self.searcher_done || self.config.max_trials.is_some_and(|max| self.progress.created >= max);
        if no_more && !self.told_no_more_trials {
            self.told_no_more_trials = true;
            self.scheduler.on_no_more_trials();
            self.fill_slots(commands);
        }
    }

    fn fill_slots(&mut self, commands: &mut Vec<Command>) {
        self.stop_given_up(commands);
        while self.ending.is_none() && self.alive.len() < self.config.max_concurrent {
            if let Some(trial) = self.restart_queue.pop_front() {
                self.launch(trial, commands);
                continue;
            }
            if !self.resumable.is_empty()
                && let Some(trial) = self.scheduler.choose_trial_to_resume(&self.resumable)
            {
                debug_assert!(
                    self.resumable.contains(&trial),
                    "scheduler resumed {trial}, which is not resumable"
                );
                if self.resumable.remove(&trial) {
                    self.launch(trial, commands);
                    continue;
                }
            }
            if self.searcher_done || self.config.max_trials.is_some_and(|max| self.progress.created >= max) {
                return;
            }
            let trial = TrialId(self.progress.created + 1);
            match self.searcher.suggest(trial) {
                Ok(Suggestion::Config(config)) => {
                    self.progress.created += 1;
                    self.progress.pending += 1;
                    self.trials.push(TrialState {
                        status: TrialStatus::Pending,
                        config,
                        alive: false,
                        failures: 0,
                        lost_in_a_row: 0,
                        launches: 0,
                        last: None,
                        best: None,
                        has_metric: false,
                        other_metrics: BTreeSet::new(),
                        checkpoints: Vec::new(),
                        error: None,
                        restore_override: None,
                        restart_when_exited: false,
                        pin: None,
                    });
                    let config = &self.trials.last().expect("just pushed").config;
                    self.scheduler.on_trial_add(trial, config);
                    self.launch(trial, commands);
                }
                Ok(Suggestion::Wait) => {
                    if self.alive.is_empty() {
                        // Nobody will ever report again: waiting would hang the sweep.
                        self.searcher_done = true;
                    }
                    return;
                }
                Ok(Suggestion::Exhausted) => {
                    self.searcher_done = true;
                    return;
                }
                Err(error) => {
                    self.searcher_error = Some(error.to_string());
                    self.begin_end(EndCause::SearcherFailed, commands);
                    return;
                }
            }
        }
    }

    fn maybe_finish(&mut self, commands: &mut Vec<Command>) {
        if self.finished || !self.alive.is_empty() {
            return;
        }
        let cause = match self.ending {
            Some(cause) => cause,
            None if self.config.max_trials.is_some_and(|max| self.progress.created >= max) => EndCause::AllTrialsDone,
            None if self.searcher_done => EndCause::SearcherExhausted,
            None => return,
        };
        // Paused trials that nothing will resume end with the sweep rather than wait forever.
        let paused: Vec<TrialId> = self.paused.iter().copied().collect();
        for trial in paused {
            self.finish_trial(trial, TrialStatus::Terminated(EndReason::SweepEnded), None, commands);
        }
        self.finished = true;
        commands.push(Command::Persist(Record::ExperimentFinished { cause }));
        commands.push(Command::Finished(Summary {
            cause,
            progress: self.progress.clone(),
            error: self.searcher_error.clone(),
        }));
    }
}

#[cfg(test)]
mod tests;
