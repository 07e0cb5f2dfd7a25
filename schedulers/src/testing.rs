//! Helpers shared by the schedulers' unit tests.

use tune_core::scheduler::{Scheduler, TrialReport};
use tune_core::trial::{Decision, Metrics, Report, TrialId};

/// What a test report says about checkpoints: whether it declares one, and whether the trial
/// has one to restore from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checkpoints {
    /// The report declares a checkpoint.
    pub(crate) checkpointed: bool,
    /// The trial has a checkpoint (this one or an earlier one).
    pub(crate) has_checkpoint: bool,
}

impl Checkpoints {
    /// No checkpoint at all.
    pub(crate) const NONE: Checkpoints = Checkpoints {
        checkpointed: false,
        has_checkpoint: false,
    };
    /// A checkpoint with every report.
    pub(crate) const EVERY_REPORT: Checkpoints = Checkpoints {
        checkpointed: true,
        has_checkpoint: true,
    };
}

/// Feeds `scheduler` one report of `trial` at `step` with `metrics`, scored `value`, and returns
/// its decision.
pub(crate) fn decide<S: Scheduler + ?Sized>(
    scheduler: &mut S,
    trial: u64,
    step: u64,
    metrics: Metrics,
    value: f64,
    checkpoints: Checkpoints,
) -> Decision {
    let report = Report { step, metrics };
    let result = TrialReport {
        report: &report,
        value,
        checkpointed: checkpoints.checkpointed,
        has_checkpoint: checkpoints.has_checkpoint,
    };
    scheduler.on_result(TrialId(trial), &result)
}

/// The metrics of a report that holds one metric.
pub(crate) fn metric(name: &str, value: f64) -> Metrics {
    Metrics::from([(name.to_owned(), value)])
}
