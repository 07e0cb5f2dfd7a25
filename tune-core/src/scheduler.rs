//! The scheduler trait: which trials keep running.

use crate::trial::{Decision, Report, TrialId};
use crate::value::Config;

/// Decides, report by report, whether trials continue, stop or pause.
///
/// One required method; the hooks tell the scheduler about the trials' lifecycles. Like a
/// searcher, a scheduler must be deterministic given its seed and the calls it receives.
pub trait Scheduler: Send {
    /// A trial reported `report`; `value` is the sweep's metric in it, when present.
    fn on_result(&mut self, trial: TrialId, report: &Report, value: Option<f64>) -> Decision;

    /// A trial was created.
    fn on_trial_add(&mut self, _trial: TrialId, _config: &Config) {}

    /// A trial ended (completed, stopped, errored or ended with the sweep).
    fn on_trial_remove(&mut self, _trial: TrialId) {}

    /// A slot is free: the paused trial to resume in it, if any (schedulers that pause).
    fn choose_trial_to_resume(&mut self) -> Option<TrialId> {
        None
    }
}
