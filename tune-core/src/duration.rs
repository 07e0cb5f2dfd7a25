//! Durations given as a number of seconds: the one check every such setting goes through.
//!
//! A spec's `time_budget_s` and `stop_grace_s`, the tracking flush timeout and the server's
//! lease flags are plain floats. `Duration::from_secs_f64` panics on a value that is negative,
//! NaN or too large for a `Duration`, and adding a huge `Duration` to an `Instant` panics too,
//! so every such setting is checked here, once, and refused with an error naming it: finite,
//! in range, and at most [`MAX_SECONDS`] (ten years), far beyond any sweep and far below what
//! a `Duration` or an `Instant` can hold.

use std::time::Duration;

use crate::error::{Error, Result};

/// The longest duration a setting may give: ten years of 365.25 days, in seconds.
pub const MAX_SECONDS: f64 = 10.0 * 365.25 * 24.0 * 3600.0;

/// What a duration setting allows besides positive values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lower {
    /// Zero is allowed (a grace period of 0 s kills at once).
    Zero,
    /// The value must be above zero (a time budget of 0 s makes no sense).
    AboveZero,
}

/// `value` seconds of the setting `setting` as a [`Duration`], or an error naming the setting
/// and the value when it is NaN, infinite, below the bound or above [`MAX_SECONDS`].
///
/// ```
/// use std::time::Duration;
/// use tune_core::duration::{seconds, Lower};
///
/// assert_eq!(seconds("stop_grace_s", 2.5, Lower::Zero).unwrap(), Duration::from_millis(2500));
/// let error = seconds("time_budget_s", 1e20, Lower::AboveZero).unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "setting \"time_budget_s\": must be a number of seconds above 0 and at most 315576000 (10 years), got 1e20"
/// );
/// ```
pub fn seconds(setting: &str, value: f64, lower: Lower) -> Result<Duration> {
    let in_range = match lower {
        Lower::Zero => value >= 0.0,
        Lower::AboveZero => value > 0.0,
    } && value <= MAX_SECONDS;
    let duration = Duration::try_from_secs_f64(value).ok().filter(|_| in_range);
    duration.ok_or_else(|| {
        let bound = match lower {
            Lower::Zero => "at least 0",
            Lower::AboveZero => "above 0",
        };
        Error::setting(
            setting,
            format!(
                "must be a number of seconds {bound} and at most {} (10 years), got {}",
                MAX_SECONDS,
                show(value)
            ),
        )
    })
}

/// A number as a person would write it in a spec: `600`, `0.5`, `1e20`, `inf`, `NaN`.
fn show(value: f64) -> String {
    if value.is_finite() && value != 0.0 && !(1e-6..1e16).contains(&value.abs()) {
        format!("{value:e}")
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_a_duration_holds_up_to_ten_years() {
        assert_eq!(seconds("s", 0.0, Lower::Zero).unwrap(), Duration::ZERO);
        assert_eq!(seconds("s", 600.0, Lower::AboveZero).unwrap(), Duration::from_secs(600));
        assert_eq!(
            seconds("s", MAX_SECONDS, Lower::AboveZero).unwrap(),
            Duration::from_secs(315_576_000)
        );
    }

    #[test]
    fn refuses_what_would_panic_or_overflow_naming_setting_and_value() {
        let cases = [
            (1e20, Lower::AboveZero, "got 1e20"),
            (MAX_SECONDS + 1.0, Lower::Zero, "got 315576001"),
            (f64::INFINITY, Lower::Zero, "got inf"),
            (f64::NAN, Lower::Zero, "got NaN"),
            (-1.0, Lower::Zero, "got -1"),
            (0.0, Lower::AboveZero, "got 0"),
            (f64::MAX, Lower::Zero, "got 1.7976931348623157e308"),
        ];
        for (value, lower, shown) in cases {
            let message = seconds("trial.stop_grace_s", value, lower).unwrap_err().to_string();
            assert!(
                message.starts_with("setting \"trial.stop_grace_s\": must be a number of seconds"),
                "{message}"
            );
            assert!(message.ends_with(shown), "{value}: {message}");
        }
    }
}
