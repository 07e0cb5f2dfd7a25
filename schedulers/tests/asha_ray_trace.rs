//! Replays a recorded trace of Ray Tune's `AsyncHyperBandScheduler` through rung's ASHA (stop
//! variant) and checks that every result gets the decision Ray gave it.
//!
//! The trace lives in the repository (`tests/fixtures/asha-ray-trace-1.jsonl`, a copy of the
//! team's `shared/reference/asha-ray-trace-1.jsonl`, whose README describes the format), so a
//! plain clone checks it; a missing trace is a failure, never a skip.

use std::collections::BTreeMap;

use serde_json::Value;
use tune_core::scheduler::{Scheduler, TrialReport};
use tune_core::trial::{Decision, Mode, Report, TrialId};
use tune_core::value::Config;
use tune_schedulers::asha::Asha;
use tune_schedulers::{AshaConfig, AshaType};

const TRACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/asha-ray-trace-1.jsonl");

/// `"t7"` → `TrialId(8)`: Ray numbers trials from 0, rung from 1.
fn trial_id(event: &Value, line: usize) -> TrialId {
    let name = event["trial"]
        .as_str()
        .unwrap_or_else(|| panic!("line {line}: no trial name"));
    let number: u64 = name
        .strip_prefix('t')
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("line {line}: trial name {name:?} is not tN"));
    TrialId(number + 1)
}

fn number(event: &Value, field: &str, line: usize) -> f64 {
    event[field]
        .as_f64()
        .unwrap_or_else(|| panic!("line {line}: {field} is not a number: {}", event[field]))
}

fn settings(event: &Value) -> (AshaConfig, Mode) {
    assert_eq!(event["scheduler"], "asha");
    let kind = match event["type"].as_str() {
        Some("stop") => AshaType::Stop,
        Some("promote") => AshaType::Promote,
        other => panic!("unknown ASHA type {other:?}"),
    };
    let mode = match event["mode"].as_str() {
        Some("min") => Mode::Min,
        Some("max") => Mode::Max,
        other => panic!("unknown mode {other:?}"),
    };
    let config = AshaConfig {
        kind,
        time_attr: event["time_attr"].as_str().expect("time_attr").to_owned(),
        max_t: number(event, "max_t", 1),
        grace_period: number(event, "grace_period", 1),
        reduction_factor: number(event, "reduction_factor", 1),
        brackets: event["brackets"].as_u64().expect("brackets") as u32,
        stop_last_trials: event["stop_last_trials"].as_bool().expect("stop_last_trials"),
    };
    (config, mode)
}

/// The decision for the result on this line.
fn decide(asha: &mut Asha, metric: &str, event: &Value, line: usize) -> Decision {
    let value = number(event, metric, line);
    let step = event["step"]
        .as_u64()
        .unwrap_or_else(|| panic!("line {line}: step is not an integer"));
    let report = Report {
        step,
        metrics: BTreeMap::from([(metric.to_owned(), value)]),
    };
    let result = TrialReport {
        report: &report,
        value,
        checkpointed: false,
        has_checkpoint: false,
    };
    asha.on_result(trial_id(event, line), &result)
}

#[test]
fn asha_stop_reproduces_rays_decisions() {
    let text = std::fs::read_to_string(TRACE).unwrap_or_else(|error| panic!("the Ray trace {TRACE}: {error}"));
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| !line.trim().is_empty());
    let (_, first) = lines.next().expect("a settings line");
    let first: Value = serde_json::from_str(first).expect("settings are JSON");
    assert_eq!(first["event"], "settings", "line 1 must hold the settings");
    let (config, mode) = settings(&first);
    assert_eq!(config.time_attr, "step");
    let metric = first["metric"].as_str().expect("metric").to_owned();
    let mut asha = Asha::new(&config, mode, 0);

    let (mut results, mut matched) = (0, 0);
    let mut mismatches = Vec::new();
    for (line, text) in lines {
        let event: Value = serde_json::from_str(text).unwrap_or_else(|error| panic!("line {line}: {error}"));
        match event["event"].as_str() {
            Some("add") => {
                let config = match &event["config"] {
                    Value::Object(map) => Config(map.clone()),
                    _ => Config::default(),
                };
                asha.on_trial_add(trial_id(&event, line), &config);
            }
            Some("result") => {
                results += 1;
                let expected = match event["decision"].as_str() {
                    Some("CONTINUE") => Decision::Continue,
                    Some("STOP") => Decision::Stop,
                    other => panic!("line {line}: unknown decision {other:?}"),
                };
                let decision = decide(&mut asha, &metric, &event, line);
                if decision == expected {
                    matched += 1;
                } else {
                    mismatches.push(format!(
                        "line {line}: {} step {} {metric} {}: Ray {expected}, rung {decision}",
                        event["trial"],
                        event["step"],
                        event[metric.as_str()]
                    ));
                }
            }
            Some("complete") => {
                // Ray records a completed trial's final result; the decision does not matter.
                let _ = decide(&mut asha, &metric, &event, line);
                asha.on_trial_remove(trial_id(&event, line));
            }
            Some("remove") => asha.on_trial_remove(trial_id(&event, line)),
            other => panic!("line {line}: unknown event {other:?}"),
        }
    }
    let result_lines = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["event"] == "result")
        .count();
    eprintln!("Ray trace: {matched} of {results} decisions match");
    assert!(results > 0, "the trace holds no result");
    assert_eq!(results, result_lines, "every result line was replayed");
    assert!(
        mismatches.is_empty(),
        "{} of {results} decisions differ from Ray's:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert_eq!(matched, results);
}
