//! tune-schedulers: early-stopping schedulers.
//!
//! - [`Fifo`] — lets every trial run to its end.
//!
//! [`SchedulerConfig`] names them in spec files (`[scheduler] kind = "fifo"`).

use serde::{Deserialize, Serialize};
use tune_core::Result;
use tune_core::scheduler::Scheduler;
use tune_core::trial::{Decision, Mode, Report, TrialId};

/// The schedulers, by name, with their settings: what `[scheduler]` in a spec file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SchedulerConfig {
    /// First in, first out: no early stopping.
    #[default]
    Fifo,
}

impl SchedulerConfig {
    /// Checks the settings, naming the one that cannot work.
    pub fn validate(&self) -> Result<()> {
        match self {
            SchedulerConfig::Fifo => Ok(()),
        }
    }

    /// A fresh scheduler for a sweep optimising `metric` in `mode`, seeded from the experiment.
    pub fn build(&self, _metric: &str, _mode: Mode, _seed: u64) -> Result<Box<dyn Scheduler>> {
        self.validate()?;
        Ok(match self {
            SchedulerConfig::Fifo => Box::new(Fifo),
        })
    }

    /// Whether the scheduler pauses trials (and so needs them to checkpoint).
    pub fn pauses_trials(&self) -> bool {
        false
    }
}

/// Lets every trial run to its end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fifo;

impl Scheduler for Fifo {
    fn on_result(&mut self, _trial: TrialId, _report: &Report, _value: Option<f64>) -> Decision {
        Decision::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_always_continues_and_parses() {
        let mut fifo = SchedulerConfig::Fifo.build("loss", Mode::Min, 0).unwrap();
        let report = Report {
            step: 1,
            metrics: [("loss".to_owned(), f64::NAN)].into(),
        };
        assert_eq!(fifo.on_result(TrialId(1), &report, Some(f64::NAN)), Decision::Continue);
        let parsed: SchedulerConfig = serde_json::from_str(r#"{"kind": "fifo"}"#).unwrap();
        assert_eq!(parsed, SchedulerConfig::Fifo);
        let error = serde_json::from_str::<SchedulerConfig>(r#"{"kind": "hyperbandit"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown variant `hyperbandit`"), "{error}");
    }
}
