//! The searcher trait: where new configurations come from.

use crate::error::Result;
use crate::trial::{Report, TrialId};
use crate::value::Config;

/// What a searcher answers when asked for a configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Suggestion {
    /// Run this configuration.
    Config(Config),
    /// Nothing now; ask again when a trial reports or ends.
    Wait,
    /// The searcher has nothing more to propose.
    Exhausted,
}

/// How a trial ended, as a searcher sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialResult<'a> {
    /// The configuration it ran.
    pub config: &'a Config,
    /// Its last report, if any.
    pub last: Option<&'a Report>,
    /// Whether it failed (errored) rather than ended normally or was stopped.
    pub failed: bool,
}

/// Proposes configurations. One required method; the hooks let model-based searchers learn.
///
/// A searcher must be deterministic given its seed and the sequence of calls it receives: on
/// resume the controller rebuilds it by replaying the event log, never by unpickling it.
pub trait Searcher: Send {
    /// The configuration for the new trial `trial`.
    fn suggest(&mut self, trial: TrialId) -> Result<Suggestion>;

    /// An intermediate result of a trial.
    fn on_trial_result(&mut self, _trial: TrialId, _report: &Report) {}

    /// A trial ended (completed, stopped or errored).
    fn on_trial_complete(&mut self, _trial: TrialId, _result: &TrialResult<'_>) {}
}
