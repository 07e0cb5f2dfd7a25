//! Trials, their lifecycle, reports and decisions.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies a trial within its experiment: trials are numbered from 1 in creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrialId(pub u64);

impl fmt::Display for TrialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// Whether the metric is minimised or maximised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Lower is better.
    Min,
    /// Higher is better.
    Max,
}

impl Mode {
    /// The value as a score where higher is better.
    ///
    /// This is the one place where a metric value becomes a rank: NaN, `Infinity` and
    /// `-Infinity` all score `-inf` in both modes, below every finite value, so a trial that
    /// reports `-Infinity` under `min` (or `Infinity` under `max`) ranks worst, never best.
    pub fn score(self, value: f64) -> f64 {
        if !value.is_finite() {
            return f64::NEG_INFINITY;
        }
        match self {
            Mode::Min => -value,
            Mode::Max => value,
        }
    }

    /// Whether `candidate` is strictly better than `incumbent` (a non-finite value never is).
    pub fn is_better(self, candidate: f64, incumbent: f64) -> bool {
        self.score(candidate) > self.score(incumbent)
    }

    /// Whether `value` reaches `target` (NaN and infinities never do).
    pub fn reaches(self, value: f64, target: f64) -> bool {
        if !value.is_finite() {
            return false;
        }
        match self {
            Mode::Min => value <= target,
            Mode::Max => value >= target,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Min => "min",
            Mode::Max => "max",
        })
    }
}

/// Metric values by name. NaN and infinities are kept (and ranked worst).
pub type Metrics = BTreeMap<String, f64>;

/// One result a trial reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The training step (or epoch) the result is for.
    pub step: u64,
    /// The metrics at that step.
    #[serde(with = "crate::trial::metrics_serde")]
    pub metrics: Metrics,
}

/// What the scheduler decided about a trial after one of its reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Decision {
    /// Keep training.
    Continue,
    /// Stop for good.
    Stop,
    /// Checkpoint and stop; the trial may be resumed later from its checkpoint.
    Pause,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Continue => "CONTINUE",
            Decision::Stop => "STOP",
            Decision::Pause => "PAUSE",
        })
    }
}

/// Why a trial ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// It ran to its end.
    Completed,
    /// The scheduler stopped it.
    StoppedEarly,
    /// The sweep ended (target reached, time budget spent, too many failures) while it ran.
    SweepEnded,
}

/// Where a trial is in its lifecycle.
///
/// `Pending → Running → (Paused ↔ Running) → Terminated | Errored`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    /// Created, not yet launched.
    Pending,
    /// Launched (or being relaunched after a failure).
    Running,
    /// Stopped after a checkpoint, waiting to be resumed.
    Paused,
    /// Ended without an error.
    Terminated(EndReason),
    /// Failed more often than its retries allow, or never reported the metric.
    Errored,
}

impl TrialStatus {
    /// Whether the trial has ended for good.
    pub fn is_final(self) -> bool {
        matches!(self, TrialStatus::Terminated(_) | TrialStatus::Errored)
    }

    /// Whether the lifecycle allows moving from `self` to `next`.
    pub fn can_become(self, next: TrialStatus) -> bool {
        use TrialStatus::*;
        matches!(
            (self, next),
            (Pending, Running)
                | (Running, Running)
                | (Running, Paused)
                | (Paused, Running)
                | (Pending | Running | Paused, Terminated(_) | Errored)
        )
    }

    /// A short name: `pending`, `running`, `paused`, `completed`, `stopped`, `sweep_ended`, `errored`.
    pub fn label(self) -> &'static str {
        match self {
            TrialStatus::Pending => "pending",
            TrialStatus::Running => "running",
            TrialStatus::Paused => "paused",
            TrialStatus::Terminated(EndReason::Completed) => "completed",
            TrialStatus::Terminated(EndReason::StoppedEarly) => "stopped",
            TrialStatus::Terminated(EndReason::SweepEnded) => "sweep_ended",
            TrialStatus::Errored => "errored",
        }
    }

    /// Parses [`TrialStatus::label`].
    pub fn from_label(label: &str) -> Option<Self> {
        Some(match label {
            "pending" => TrialStatus::Pending,
            "running" => TrialStatus::Running,
            "paused" => TrialStatus::Paused,
            "completed" => TrialStatus::Terminated(EndReason::Completed),
            "stopped" => TrialStatus::Terminated(EndReason::StoppedEarly),
            "sweep_ended" => TrialStatus::Terminated(EndReason::SweepEnded),
            "errored" => TrialStatus::Errored,
            _ => return None,
        })
    }
}

/// (De)serializes metrics so that NaN and infinities survive JSON: they are written as the
/// strings `"NaN"`, `"inf"` and `"-inf"`.
pub mod metrics_serde {
    use super::Metrics;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    /// Encodes one float.
    pub fn encode(value: f64) -> Value {
        match serde_json::Number::from_f64(value) {
            Some(number) => Value::Number(number),
            None if value.is_nan() => Value::from("NaN"),
            None if value > 0.0 => Value::from("inf"),
            None => Value::from("-inf"),
        }
    }

    /// Decodes one float written by [`encode`] (or a plain JSON number).
    pub fn decode(value: &Value) -> Option<f64> {
        match value {
            Value::Number(number) => number.as_f64(),
            Value::String(text) => match text.as_str() {
                "NaN" | "nan" => Some(f64::NAN),
                "inf" | "Infinity" | "+inf" => Some(f64::INFINITY),
                "-inf" | "-Infinity" => Some(f64::NEG_INFINITY),
                _ => None,
            },
            _ => None,
        }
    }

    /// Serializes a metrics table.
    pub fn serialize<S: Serializer>(metrics: &Metrics, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(metrics.iter().map(|(name, value)| (name, encode(*value))))
    }

    /// Deserializes a metrics table.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Metrics, D::Error> {
        let raw = serde_json::Map::<String, Value>::deserialize(deserializer)?;
        raw.into_iter()
            .map(|(name, value)| {
                let number = decode(&value)
                    .ok_or_else(|| D::Error::custom(format!("metric \"{name}\" is not a number: {value}")))?;
                Ok((name, number))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_infinities_rank_worst_in_both_modes() {
        let non_finite = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
        for mode in [Mode::Min, Mode::Max] {
            for bad in non_finite {
                assert_eq!(mode.score(bad), f64::NEG_INFINITY, "{mode} {bad}");
                for finite in [0.0, -1e300, 1e300, f64::MAX, f64::MIN] {
                    assert!(mode.score(bad) < mode.score(finite), "{mode}: {bad} vs {finite}");
                    assert!(!mode.is_better(bad, finite), "{mode}: {bad} better than {finite}");
                    assert!(mode.is_better(finite, bad), "{mode}: {finite} not better than {bad}");
                }
                for other in non_finite {
                    assert!(!mode.is_better(bad, other), "{mode}: {bad} better than {other}");
                }
                for target in [0.0, 1e300, -1e300] {
                    assert!(!mode.reaches(bad, target), "{mode}: {bad} reaches {target}");
                }
            }
        }
        assert!(Mode::Min.is_better(0.1, 0.2));
        assert!(Mode::Max.is_better(0.2, 0.1));
        assert!(Mode::Min.reaches(-1e300, 0.0));
        assert!(Mode::Max.reaches(1e300, 0.0));
    }

    #[test]
    fn non_finite_metrics_survive_json() {
        let report = Report {
            step: 3,
            metrics: Metrics::from([
                ("a".into(), f64::NAN),
                ("b".into(), f64::NEG_INFINITY),
                ("c".into(), 0.5),
            ]),
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(json, r#"{"step":3,"metrics":{"a":"NaN","b":"-inf","c":0.5}}"#);
        let back: Report = serde_json::from_str(&json).unwrap();
        assert!(back.metrics["a"].is_nan());
        assert_eq!(back.metrics["b"], f64::NEG_INFINITY);
    }

    #[test]
    fn lifecycle_transitions() {
        use TrialStatus::*;
        assert!(Pending.can_become(Running));
        assert!(Running.can_become(Paused));
        assert!(Paused.can_become(Running));
        assert!(!Terminated(EndReason::Completed).can_become(Running));
        assert!(!Errored.can_become(Running));
        assert!(!Pending.can_become(Paused));
        for status in [Pending, Running, Paused, Terminated(EndReason::SweepEnded), Errored] {
            assert_eq!(TrialStatus::from_label(status.label()), Some(status));
        }
    }
}
