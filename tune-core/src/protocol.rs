//! The reporting protocol of trial processes: one `rung:report {json}` line per result.
//!
//! ```text
//! rung:report {"step": 3, "loss": 0.41, "accuracy": 0.9}
//! rung:report {"step": 4, "loss": 0.38, "checkpoint": true}
//! ```
//!
//! `step` is optional (a counter is used), every other number is a metric, and
//! `"checkpoint": true` declares that the files in `RUNG_CHECKPOINT_DIR` are a checkpoint at that
//! step. Python's `json.dumps` writes non-finite floats as bare `NaN`, `Infinity` and
//! `-Infinity`; they are accepted (and ranked worst).

use crate::trial::{Metrics, metrics_serde};

/// The prefix of a report line.
pub const REPORT_PREFIX: &str = "rung:report";

/// The most metrics one report may carry, on every path (a `rung:report` line, gRPC). A trial
/// that reports tens of thousands of keys would fill the store by megabytes a report.
pub const MAX_METRICS_PER_REPORT: usize = 1000;
/// The longest metric name, in bytes.
pub const MAX_METRIC_NAME_BYTES: usize = 256;

/// The largest step a report may carry: the store keeps steps as SQLite's signed 64-bit
/// integers, and a larger one would sort before step 0.
pub const MAX_STEP: u64 = i64::MAX as u64;

/// A report line, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportLine {
    /// The step, when given.
    pub step: Option<u64>,
    /// The metrics.
    pub metrics: Metrics,
    /// Whether a checkpoint was declared.
    pub checkpoint: bool,
    /// Keys that were ignored because their values are not numbers.
    pub ignored: Vec<String>,
}

/// Why a report line is malformed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReportLineError {
    /// The payload is not JSON (bare `NaN` and `Infinity` aside).
    #[error("not valid JSON: {reason}")]
    NotJson {
        /// What the JSON parser said.
        reason: String,
    },
    /// The payload is JSON but not an object.
    #[error("expected a JSON object")]
    NotAnObject,
    /// `step` is not a non-negative integer of at most [`MAX_STEP`].
    #[error("\"step\" must be an integer from 0 to {MAX_STEP}, got {got}")]
    BadStep {
        /// The value given.
        got: serde_json::Value,
    },
    /// `checkpoint` is not a boolean.
    #[error("\"checkpoint\" must be true or false, got {got}")]
    BadCheckpoint {
        /// The value given.
        got: serde_json::Value,
    },
    /// More keys than a report may carry.
    #[error("{count} metrics in one report; at most {MAX_METRICS_PER_REPORT} are accepted")]
    TooManyMetrics {
        /// How many the line had.
        count: usize,
    },
    /// A metric name longer than the limit.
    #[error("metric name of {bytes} bytes (starting {start:?}); at most {MAX_METRIC_NAME_BYTES} are accepted")]
    NameTooLong {
        /// Its length.
        bytes: usize,
        /// Its first characters.
        start: String,
    },
}

/// Checks one report's metric names and count against [`MAX_METRICS_PER_REPORT`] and
/// [`MAX_METRIC_NAME_BYTES`]: the limits of every path a report comes in by.
pub fn check_metric_limits(names: &[&str]) -> Result<(), ReportLineError> {
    if names.len() > MAX_METRICS_PER_REPORT {
        return Err(ReportLineError::TooManyMetrics { count: names.len() });
    }
    for name in names {
        if name.len() > MAX_METRIC_NAME_BYTES {
            return Err(ReportLineError::NameTooLong {
                bytes: name.len(),
                start: name.chars().take(32).collect(),
            });
        }
    }
    Ok(())
}

/// Parses a line of a trial's stdout: `None` when it is not a report line, `Some(Err(why))`
/// when it is one but malformed.
pub fn parse_report_line(line: &str) -> Option<Result<ReportLine, ReportLineError>> {
    let rest = line.trim_end().strip_prefix(REPORT_PREFIX)?;
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return None;
    }
    Some(parse_payload(rest.trim()))
}

fn parse_payload(payload: &str) -> Result<ReportLine, ReportLineError> {
    let value: serde_json::Value = serde_json::from_str(&quote_non_finite(payload))
        .map_err(|e| ReportLineError::NotJson { reason: e.to_string() })?;
    let serde_json::Value::Object(map) = value else {
        return Err(ReportLineError::NotAnObject);
    };
    let names: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|key| !matches!(*key, "step" | "checkpoint"))
        .collect();
    check_metric_limits(&names)?;
    let mut line = ReportLine {
        step: None,
        metrics: Metrics::new(),
        checkpoint: false,
        ignored: Vec::new(),
    };
    for (key, value) in map {
        match key.as_str() {
            "step" => {
                let step = value
                    .as_u64()
                    .or_else(|| {
                        value
                            .as_f64()
                            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15)
                            .map(|f| f as u64)
                    })
                    .filter(|step| *step <= MAX_STEP)
                    .ok_or_else(|| ReportLineError::BadStep { got: value.clone() })?;
                line.step = Some(step);
            }
            "checkpoint" => {
                line.checkpoint = value
                    .as_bool()
                    .ok_or_else(|| ReportLineError::BadCheckpoint { got: value.clone() })?;
            }
            _ => match metrics_serde::decode(&value) {
                Some(number) => {
                    line.metrics.insert(key, number);
                }
                None => match value {
                    serde_json::Value::Bool(flag) => {
                        line.metrics.insert(key, f64::from(u8::from(flag)));
                    }
                    _ => line.ignored.push(key),
                },
            },
        }
    }
    Ok(line)
}

/// Rewrites bare `NaN`, `Infinity` and `-Infinity` outside strings as JSON strings.
fn quote_non_finite(payload: &str) -> String {
    let mut out = String::with_capacity(payload.len() + 8);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = payload;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|token| rest.starts_with(token));
        if let Some(token) = token {
            out.push('"');
            out.push_str(token);
            out.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reports() {
        let line = parse_report_line(r#"rung:report {"step": 3, "loss": 0.41, "accuracy": 0.9, "checkpoint": true}"#)
            .unwrap()
            .unwrap();
        assert_eq!(line.step, Some(3));
        assert_eq!(
            line.metrics,
            Metrics::from([("loss".into(), 0.41), ("accuracy".into(), 0.9)])
        );
        assert!(line.checkpoint);
        let line = parse_report_line(r#"rung:report {"loss": NaN, "x": -Infinity, "note": "NaN here", "y": Infinity}"#)
            .unwrap()
            .unwrap();
        assert_eq!(line.step, None);
        assert!(line.metrics["loss"].is_nan());
        assert_eq!(line.metrics["x"], f64::NEG_INFINITY);
        assert_eq!(line.metrics["y"], f64::INFINITY);
        assert_eq!(line.ignored, ["note"]);
    }

    #[test]
    fn reports_over_the_limits_are_refused_naming_the_limit() {
        let many: Vec<String> = (0..=MAX_METRICS_PER_REPORT).map(|i| format!("\"m{i}\": 1")).collect();
        let line = format!("rung:report {{\"step\": 1, {}}}", many.join(", "));
        assert_eq!(
            parse_report_line(&line).unwrap().unwrap_err().to_string(),
            "1001 metrics in one report; at most 1000 are accepted"
        );
        // Exactly at the limit (step and checkpoint aside) is fine.
        let at_limit = format!(
            "rung:report {{\"step\": 1, \"checkpoint\": false, {}}}",
            many[1..].join(", ")
        );
        assert_eq!(
            parse_report_line(&at_limit).unwrap().unwrap().metrics.len(),
            MAX_METRICS_PER_REPORT
        );
        let long = "x".repeat(MAX_METRIC_NAME_BYTES + 1);
        let error = parse_report_line(&format!("rung:report {{\"{long}\": 1}}"))
            .unwrap()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "metric name of 257 bytes (starting {:?}); at most 256 are accepted",
                "x".repeat(32)
            )
        );
        let longest = "y".repeat(MAX_METRIC_NAME_BYTES);
        assert!(
            parse_report_line(&format!("rung:report {{\"{longest}\": 1}}"))
                .unwrap()
                .is_ok()
        );
    }

    #[test]
    fn other_lines_are_not_reports_and_bad_ones_say_why() {
        assert_eq!(parse_report_line("epoch 3 done"), None);
        assert_eq!(parse_report_line("rung:reporter {}"), None);
        let why = |line: &str| parse_report_line(line).map(|parsed| parsed.map_err(|error| error.to_string()));
        assert_eq!(why("rung:report [1, 2]"), Some(Err("expected a JSON object".into())));
        assert!(
            parse_report_line("rung:report {loss: 1}")
                .unwrap()
                .unwrap_err()
                .to_string()
                .starts_with("not valid JSON")
        );
        assert_eq!(
            why(r#"rung:report {"step": -1, "loss": 1}"#),
            Some(Err(
                "\"step\" must be an integer from 0 to 9223372036854775807, got -1".into()
            ))
        );
        // 2^63 would be stored as a negative integer and sort before step 0.
        assert_eq!(
            why(r#"rung:report {"step": 9223372036854775808, "loss": 1}"#),
            Some(Err(
                "\"step\" must be an integer from 0 to 9223372036854775807, got 9223372036854775808".into()
            ))
        );
        assert!(
            why(r#"rung:report {"step": 9223372036854775807, "loss": 1}"#)
                .unwrap()
                .is_ok()
        );
    }
}
