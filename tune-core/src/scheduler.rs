//! The scheduler trait: which trials keep running.

use std::collections::BTreeSet;

use crate::trial::{Decision, Report, TrialId};
use crate::value::Config;

/// One result as a scheduler sees it.
#[derive(Debug, Clone, Copy)]
pub struct TrialReport<'a> {
    /// The report: its step and every metric.
    pub report: &'a Report,
    /// The sweep's metric in it (reports without it never reach the scheduler).
    pub value: f64,
    /// Whether the trial took a checkpoint at this step (it can be paused and resumed from here).
    pub checkpointed: bool,
    /// Whether the trial has any checkpoint (this one or an earlier one).
    pub has_checkpoint: bool,
}

impl TrialReport<'_> {
    /// The value of the time attribute: `step`, or a metric of that name.
    pub fn time(&self, time_attr: &str) -> Option<f64> {
        if time_attr == "step" {
            return Some(self.report.step as f64);
        }
        self.report.metrics.get(time_attr).copied()
    }
}

/// PBT's exploitation: continue the paused trial with `config`, from `donor`'s newest checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Exploit {
    /// The trial whose checkpoint is copied.
    pub donor: TrialId,
    /// The new (explored) configuration.
    pub config: Config,
}

/// Decides, report by report, whether trials continue, stop or pause.
///
/// One required method; the hooks tell the scheduler about the trials' lifecycles and let
/// schedulers that pause trials resume or stop them later. Like a searcher, a scheduler must be
/// deterministic given its seed and the calls it receives: on resume the controller rebuilds it
/// by replaying the event log.
pub trait Scheduler: Send {
    /// A trial reported a result carrying the sweep's metric.
    fn on_result(&mut self, trial: TrialId, result: &TrialReport<'_>) -> Decision;

    /// A trial was created.
    fn on_trial_add(&mut self, _trial: TrialId, _config: &Config) {}

    /// A trial ended for good (completed, stopped, errored or ended with the sweep).
    fn on_trial_remove(&mut self, _trial: TrialId) {}

    /// A slot is free: the paused trial to resume in it, if any. `resumable` holds the paused
    /// trials whose processes have exited; the answer must be one of them.
    fn choose_trial_to_resume(&mut self, _resumable: &BTreeSet<TrialId>) -> Option<TrialId> {
        None
    }

    /// Paused trials the scheduler has given up on (Hyperband's losers); the controller stops
    /// them. Asked after every event.
    fn take_trials_to_stop(&mut self) -> Vec<TrialId> {
        Vec::new()
    }

    /// No new trial will be created (the trial budget is reached or the searcher is exhausted):
    /// schedulers that wait for a full set of trials (Hyperband) should work with what they
    /// have. Called once.
    fn on_no_more_trials(&mut self) {}

    /// Right after `on_result` paused `trial`: how it should continue, if it is to be exploited
    /// (PBT). The controller relaunches it with the new config from the donor's checkpoint.
    fn take_exploit(&mut self, _trial: TrialId) -> Option<Exploit> {
        None
    }
}
