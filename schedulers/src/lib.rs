//! tune-schedulers: early-stopping schedulers.
//!
//! - [`Fifo`] — lets every trial run to its end.
//! - [`asha::Asha`] — asynchronous successive halving, stopping (Ray Tune's AsyncHyperBand) or
//!   pausing and promoting (the ASHA paper).
//! - [`hyperband::Hyperband`] — synchronous Hyperband.
//! - [`median::MedianStopping`] — the median stopping rule.
//! - [`pbt::Pbt`] — population-based training.
//!
//! [`SchedulerConfig`] names them in spec files (`[scheduler] kind = "asha"`), with their
//! settings; every setting is validated when the spec is read.

pub mod asha;
pub mod hyperband;
pub mod median;
pub mod order_stats;
pub mod pbt;
#[cfg(test)]
mod testing;

use serde::{Deserialize, Serialize};
use tune_core::scheduler::{Scheduler, TrialReport};
use tune_core::space::Space;
use tune_core::trial::{Decision, Mode, TrialId};
use tune_core::{Error, Result};

/// The schedulers, by name, with their settings: what `[scheduler]` in a spec file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SchedulerConfig {
    /// First in, first out: no early stopping. (Empty braces, not a unit variant, so that
    /// unknown keys beside `kind` are rejected.)
    Fifo {},
    /// Asynchronous successive halving.
    Asha(AshaConfig),
    /// Synchronous Hyperband.
    Hyperband(HyperbandConfig),
    /// The median stopping rule.
    Median(MedianConfig),
    /// Population-based training.
    Pbt(PbtConfig),
}

/// Whether ASHA stops losers or pauses every trial at each rung and promotes the best.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AshaType {
    /// Stop a trial whose result at a rung falls below the rung's cutoff (Ray Tune's behaviour).
    #[default]
    Stop,
    /// Pause trials at each rung; promote the top 1/rf of a rung when a slot frees (the paper).
    Promote,
}

/// `[scheduler] kind = "asha"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AshaConfig {
    /// `stop` (default) or `promote`.
    #[serde(rename = "type", default)]
    pub kind: AshaType,
    /// What measures training progress: `step` or a reported metric.
    #[serde(default = "default_time_attr")]
    pub time_attr: String,
    /// The most a trial trains (its last rung).
    #[serde(default = "default_max_t")]
    pub max_t: f64,
    /// The first rung.
    #[serde(default = "default_grace_period")]
    pub grace_period: f64,
    /// Keep 1 in `reduction_factor` at each rung.
    #[serde(default = "default_reduction_factor")]
    pub reduction_factor: f64,
    /// Number of brackets; a trial joins one at random, weighted toward aggressive ones.
    #[serde(default = "default_brackets")]
    pub brackets: u32,
    /// Stop trials once they reach `max_t`.
    #[serde(default = "default_true")]
    pub stop_last_trials: bool,
}

/// `[scheduler] kind = "hyperband"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HyperbandConfig {
    /// What measures training progress: `step` or a reported metric.
    #[serde(default = "default_time_attr")]
    pub time_attr: String,
    /// R: the most a trial trains.
    #[serde(default = "default_max_t")]
    pub max_t: f64,
    /// η: keep 1 in `reduction_factor` at each rung.
    #[serde(default = "default_hyperband_reduction_factor")]
    pub reduction_factor: f64,
    /// Stop trials once they reach `max_t`.
    #[serde(default = "default_true")]
    pub stop_last_trials: bool,
}

/// `[scheduler] kind = "median"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MedianConfig {
    /// What measures training progress: `step` or a reported metric.
    #[serde(default = "default_time_attr")]
    pub time_attr: String,
    /// No trial is stopped before this much progress.
    #[serde(default = "default_grace_period")]
    pub grace_period: f64,
    /// How many other trials must have reached the same progress before the rule applies.
    #[serde(default = "default_min_samples")]
    pub min_samples_required: u32,
}

/// `[scheduler] kind = "pbt"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PbtConfig {
    /// What measures training progress: `step` or a reported metric.
    #[serde(default = "default_time_attr")]
    pub time_attr: String,
    /// Exploit and explore every this much progress.
    pub perturbation_interval: f64,
    /// The bottom fraction copies the top fraction; in (0, 0.5].
    #[serde(default = "default_quantile_fraction")]
    pub quantile_fraction: f64,
    /// Probability of drawing a fresh value from the space instead of perturbing.
    #[serde(default = "default_resample_probability")]
    pub resample_probability: f64,
    /// The (dotted) parameters to explore; all that are not fixed when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutate: Option<Vec<String>>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig::Fifo {}
    }
}

fn default_time_attr() -> String {
    "step".into()
}
fn default_max_t() -> f64 {
    100.0
}
fn default_grace_period() -> f64 {
    1.0
}
fn default_reduction_factor() -> f64 {
    4.0
}
fn default_hyperband_reduction_factor() -> f64 {
    3.0
}
fn default_brackets() -> u32 {
    1
}
fn default_true() -> bool {
    true
}
fn default_min_samples() -> u32 {
    3
}
fn default_quantile_fraction() -> f64 {
    0.25
}
fn default_resample_probability() -> f64 {
    0.25
}

/// `Ok` when `holds`; otherwise the error for `setting`, whose `message` says what it must be.
fn require(holds: bool, setting: &str, message: impl FnOnce() -> String) -> Result<()> {
    if holds {
        Ok(())
    } else {
        Err(Error::setting(setting, message()))
    }
}

/// Checks that a setting is a finite number above 0.
fn positive(setting: &str, value: f64) -> Result<()> {
    require(value.is_finite() && value > 0.0, setting, || {
        format!("must be a positive number, got {value}")
    })
}

/// Checks `scheduler.reduction_factor`: finite and greater than 1, or no rung would ever shrink.
fn reduction_factor(value: f64) -> Result<()> {
    require(value.is_finite() && value > 1.0, "scheduler.reduction_factor", || {
        format!("must be greater than 1, got {value}")
    })
}

impl SchedulerConfig {
    /// The name used in spec files.
    pub fn kind(&self) -> &'static str {
        match self {
            SchedulerConfig::Fifo {} => "fifo",
            SchedulerConfig::Asha(_) => "asha",
            SchedulerConfig::Hyperband(_) => "hyperband",
            SchedulerConfig::Median(_) => "median",
            SchedulerConfig::Pbt(_) => "pbt",
        }
    }

    /// Checks the settings, naming the one that cannot work.
    pub fn validate(&self, space: &Space) -> Result<()> {
        match self {
            SchedulerConfig::Fifo {} => Ok(()),
            SchedulerConfig::Asha(c) => {
                positive("scheduler.max_t", c.max_t)?;
                positive("scheduler.grace_period", c.grace_period)?;
                // Both are finite now, so `<=` is exactly "does not exceed".
                require(c.grace_period <= c.max_t, "scheduler.grace_period", || {
                    format!(
                        "must not exceed max_t, got grace_period={} > max_t={}",
                        c.grace_period, c.max_t
                    )
                })?;
                reduction_factor(c.reduction_factor)?;
                require(c.brackets >= 1, "scheduler.brackets", || {
                    format!("must be at least 1, got {}", c.brackets)
                })
            }
            SchedulerConfig::Hyperband(c) => {
                positive("scheduler.max_t", c.max_t)?;
                reduction_factor(c.reduction_factor)
            }
            SchedulerConfig::Median(c) => require(
                c.grace_period.is_finite() && c.grace_period >= 0.0,
                "scheduler.grace_period",
                || format!("must be a non-negative number, got {}", c.grace_period),
            ),
            SchedulerConfig::Pbt(c) => {
                positive("scheduler.perturbation_interval", c.perturbation_interval)?;
                require(
                    c.quantile_fraction > 0.0 && c.quantile_fraction <= 0.5,
                    "scheduler.quantile_fraction",
                    || format!("must be in (0, 0.5], got {}", c.quantile_fraction),
                )?;
                require(
                    (0.0..=1.0).contains(&c.resample_probability),
                    "scheduler.resample_probability",
                    || format!("must be in [0, 1], got {}", c.resample_probability),
                )?;
                if let Some(names) = &c.mutate {
                    let known = space.parameter_names();
                    for name in names {
                        require(known.contains(name), "scheduler.mutate", || {
                            format!(
                                "\"{name}\" names no parameter of the space (known: {})",
                                known.join(", ")
                            )
                        })?;
                    }
                }
                Ok(())
            }
        }
    }

    /// A fresh scheduler for a sweep whose metric is optimised in `mode` over `space`, its randomness
    /// drawn from the experiment `seed`.
    pub fn build(&self, mode: Mode, seed: u64, space: &Space) -> Result<Box<dyn Scheduler>> {
        self.validate(space)?;
        Ok(match self {
            SchedulerConfig::Fifo {} => Box::new(Fifo),
            SchedulerConfig::Asha(c) => Box::new(asha::Asha::new(c, mode, seed)),
            SchedulerConfig::Hyperband(c) => Box::new(hyperband::Hyperband::new(c, mode)),
            SchedulerConfig::Median(c) => Box::new(median::MedianStopping::new(c, mode)),
            SchedulerConfig::Pbt(c) => Box::new(pbt::Pbt::new(c, mode, seed, space.clone())),
        })
    }

    /// Whether the scheduler pauses trials (and so needs them to checkpoint).
    pub fn pauses_trials(&self) -> bool {
        matches!(
            self,
            SchedulerConfig::Asha(AshaConfig {
                kind: AshaType::Promote,
                ..
            }) | SchedulerConfig::Hyperband(_)
                | SchedulerConfig::Pbt(_)
        )
    }
}

/// Lets every trial run to its end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fifo;

impl Scheduler for Fifo {
    fn on_result(&mut self, _trial: TrialId, _result: &TrialReport<'_>) -> Decision {
        Decision::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Checkpoints, decide, metric};

    fn parse(text: &str) -> serde_json::Result<SchedulerConfig> {
        serde_json::from_str(text)
    }

    #[test]
    fn fifo_always_continues_and_configs_parse() {
        let mut fifo = SchedulerConfig::Fifo {}.build(Mode::Min, 0, &Space::new()).unwrap();
        let loss = metric("loss", f64::NAN);
        assert_eq!(
            decide(&mut *fifo, 1, 1, loss, f64::NAN, Checkpoints::NONE),
            Decision::Continue
        );
        assert_eq!(parse(r#"{"kind": "fifo"}"#).unwrap(), SchedulerConfig::Fifo {});
        let asha =
            parse(r#"{"kind": "asha", "type": "promote", "max_t": 81, "grace_period": 1, "reduction_factor": 3}"#)
                .unwrap();
        assert!(asha.pauses_trials());
        let rejections = [
            (r#"{"kind": "hyperbandit"}"#, "unknown variant `hyperbandit`"),
            (r#"{"kind": "asha", "grace": 3}"#, "unknown field `grace`"),
            (r#"{"kind": "fifo", "grace": 3}"#, "unknown field `grace`"),
        ];
        for (text, reason) in rejections {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn settings_that_cannot_work_are_named() {
        let check = |text: &str| parse(text).unwrap().validate(&Space::new()).unwrap_err().to_string();
        let cases = [
            (
                r#"{"kind": "asha", "max_t": 10, "grace_period": 20}"#,
                "setting \"scheduler.grace_period\": must not exceed max_t, got grace_period=20 > max_t=10",
            ),
            (
                r#"{"kind": "asha", "reduction_factor": 1}"#,
                "setting \"scheduler.reduction_factor\": must be greater than 1, got 1",
            ),
            (
                r#"{"kind": "asha", "brackets": 0}"#,
                "setting \"scheduler.brackets\": must be at least 1, got 0",
            ),
            (
                r#"{"kind": "hyperband", "reduction_factor": 0.5}"#,
                "setting \"scheduler.reduction_factor\": must be greater than 1, got 0.5",
            ),
            (
                r#"{"kind": "pbt", "perturbation_interval": 0}"#,
                "setting \"scheduler.perturbation_interval\": must be a positive number, got 0",
            ),
            (
                r#"{"kind": "pbt", "perturbation_interval": 4, "quantile_fraction": 0.6}"#,
                "setting \"scheduler.quantile_fraction\": must be in (0, 0.5], got 0.6",
            ),
            (
                r#"{"kind": "pbt", "perturbation_interval": 4, "mutate": ["lr"]}"#,
                "setting \"scheduler.mutate\": \"lr\" names no parameter of the space (known: )",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(check(text), message);
        }
    }
}
