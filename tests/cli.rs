//! The `rung` binary end to end: sweeps of real trial processes, the read commands, bad input.

mod common;

use std::time::Duration;

use common::{Sandbox, json, learning_curve_spec, stderr, stdout};
use rung::tune_core::trial::TrialStatus;

#[test]
fn a_sweep_runs_and_status_best_export_agree() {
    let _deadline = common::deadline(Duration::from_secs(180));
    let sandbox = Sandbox::new();
    sandbox.write(
        "spec.toml",
        &learning_curve_spec(
            "num_samples = 6\nmax_concurrent = 3",
            &["--steps", "5", "--sleep", "0", "--checkpoint-every", "2"],
            "checkpoint_keep = 1",
        ),
    );
    let run = sandbox.rung(&["run", "spec.toml", "--quiet"]);
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    assert!(
        stdout(&run).contains("sweep \"lc\" finished (all_trials_done)"),
        "{}",
        stdout(&run)
    );

    let status = json(&sandbox.rung(&["status", "--db", "rung.db", "--json"]));
    assert_eq!(status["counts"]["completed"], 6);
    assert_eq!(status["state"], "finished");
    assert_eq!(status["end_cause"], "all_trials_done");

    let export = json(&sandbox.rung(&["export", "--db", "rung.db", "--format", "json"]));
    let rows = export.as_array().unwrap();
    assert_eq!(rows.len(), 6);
    assert!(
        rows.iter()
            .all(|r| r["steps"] == 5 && r["status"] == "completed" && r["failures"] == 0)
    );
    let (best_row, best_value) = rows
        .iter()
        .map(|r| (r, r["best"].as_f64().unwrap()))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    let best = json(&sandbox.rung(&["best", "--db", "rung.db", "--json"]));
    assert_eq!(best["trial"], best_row["trial_id"]);
    assert_eq!(best["value"].as_f64().unwrap(), best_value);
    assert_eq!(best["config"], best_row["config"]);
    assert_eq!(best["metrics"]["loss"].as_f64().unwrap(), best_value);

    let csv = stdout(&sandbox.rung(&["export", "--db", "rung.db", "--format", "csv"]));
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "trial_id,status,config.batch,config.dropout,config.layers,config.lr,last_loss,best_loss,best_step,steps,failures,error"
    );
    assert_eq!(lines.count(), 6);

    // checkpoint_keep = 1 keeps the best checkpoint and the latest; the rest are gone from disk.
    let (store, info) = sandbox.store("rung.db");
    let checkpoints = store.checkpoints(info.id).unwrap();
    assert_eq!(checkpoints.len(), 12, "steps 2 and 4 of 6 trials");
    for checkpoint in &checkpoints {
        assert_eq!(
            std::path::Path::new(&checkpoint.path).exists(),
            !checkpoint.deleted,
            "{checkpoint:?}"
        );
    }
    // The loss falls with the step, so step 4 is both the best and the latest: step 2 goes.
    assert!(checkpoints.iter().all(|c| c.deleted == (c.step == 2)));

    // A second run into the same store is a new experiment, and the old one is untouched.
    let again = sandbox.rung(&["run", "spec.toml", "--quiet"]);
    assert!(again.status.success());
    let (store, latest) = sandbox.store("rung.db");
    assert_eq!(latest.name, "lc-2");
    assert_eq!(store.trials(info.id).unwrap().len(), 6);
}

#[test]
fn the_same_seed_gives_the_same_export() {
    let _deadline = common::deadline(Duration::from_secs(180));
    let sandbox = Sandbox::new();
    sandbox.write(
        "spec.toml",
        &learning_curve_spec(
            "num_samples = 5\nmax_concurrent = 2",
            &["--steps", "3", "--sleep", "0"],
            "",
        ),
    );
    assert!(
        sandbox
            .rung(&["run", "spec.toml", "--db", "a.db", "-q"])
            .status
            .success()
    );
    assert!(
        sandbox
            .rung(&["run", "spec.toml", "--db", "b.db", "-q"])
            .status
            .success()
    );
    let a = stdout(&sandbox.rung(&["export", "--db", "a.db", "--format", "json"]));
    let b = stdout(&sandbox.rung(&["export", "--db", "b.db", "--format", "json"]));
    assert_eq!(a, b);
    assert!(
        sandbox
            .rung(&["run", "spec.toml", "--db", "c.db", "-q", "--seed", "8"])
            .status
            .success()
    );
    assert_ne!(
        a,
        stdout(&sandbox.rung(&["export", "--db", "c.db", "--format", "json"]))
    );
}

fn assert_bad_spec(sandbox: &Sandbox, spec: &str, expected: &[&str]) {
    sandbox.write("bad.toml", spec);
    let output = sandbox.rung(&["run", "bad.toml", "--db", "bad.db", "-q"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    for part in expected {
        assert!(message.contains(part), "expected {part:?} in: {message}");
    }
    assert!(!sandbox.path("bad.db").exists(), "a rejected spec creates no store");
}

#[test]
fn bad_specs_are_rejected_with_clear_errors_and_exit_2() {
    let _deadline = common::deadline(Duration::from_secs(180));
    let sandbox = Sandbox::new();
    let good = learning_curve_spec("num_samples = 2", &[], "");
    assert_bad_spec(
        &sandbox,
        &good.replace("mode = \"min\"", "mode = \"min"),
        &["bad.toml", "line 3"],
    );
    assert_bad_spec(
        &sandbox,
        &good.replace("seed = 7", "seeed = 7"),
        &["line 4, column 1", "unknown field `seeed`"],
    );
    assert_bad_spec(
        &sandbox,
        &good.replace("[1e-5, 1e-1]", "[0.0, 1e-1]"),
        &["parameter \"lr\": loguniform needs 0 < low < high, got low=0, high=0.1"],
    );
    assert_bad_spec(
        &sandbox,
        &good.replace("{ choice = [16, 32, 64, 128, 256] }", "{ choice = [] }"),
        &["parameter \"batch\": choice needs at least one option"],
    );
    assert_bad_spec(
        &sandbox,
        &format!("{good}\n[searcher]\nkind = \"annealing\"\n"),
        &["unknown variant `annealing`"],
    );
    assert_bad_spec(
        &sandbox,
        &format!("{good}\n[scheduler]\nkind = \"asha2\"\n"),
        &["unknown variant `asha2`"],
    );
    assert_bad_spec(
        &sandbox,
        &good.replace("\"python3\"", "\"pyhton3\""),
        &["program \"pyhton3\" not found on PATH"],
    );
    assert_bad_spec(
        &sandbox,
        &good.replace("{dropout}", "{drop}"),
        &["placeholder {drop} names no parameter"],
    );
    assert_bad_spec(
        &sandbox,
        &good.replace("num_samples = 2", "num_samples = 0"),
        &["setting \"num_samples\": must be at least 1"],
    );
    let missing = sandbox.rung(&["run", "nope.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("nope.toml: cannot read"));
}

#[test]
fn json_specs_work_and_their_errors_have_positions() {
    let _deadline = common::deadline(Duration::from_secs(180));
    let sandbox = Sandbox::new();
    let spec = serde_json::json!({
        "name": "from-json", "metric": "loss", "mode": "min", "num_samples": 2, "seed": 1,
        "space": {"lr": {"loguniform": [1e-5, 1e-1]}, "batch": 32, "layers": 3, "dropout": {"uniform": [0, 0.5]}},
        "trial": {"command": ["python3", "trials/learning_curve.py", "--lr", "{lr}", "--batch", "{batch}", "--layers", "{layers}", "--dropout", "{dropout}", "--steps", "2", "--sleep", "0"]}
    });
    sandbox.write("spec.json", &serde_json::to_string_pretty(&spec).unwrap());
    let run = sandbox.rung(&["run", "spec.json", "-q"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let export = json(&sandbox.rung(&["export", "--db", "rung.db", "--format", "json"]));
    assert!(
        export
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["config"]["batch"] == 32 && r["config"]["layers"] == 3)
    );
    sandbox.write(
        "bad.json",
        "{\"metric\": \"loss\",\n \"mode\": \"min\",\n \"colour\": 3}",
    );
    let bad = sandbox.rung(&["run", "bad.json"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("unknown field `colour`") && stderr(&bad).contains("line 3"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn resume_refuses_what_is_not_a_rung_store_without_touching_it() {
    let _deadline = common::deadline(Duration::from_secs(180));
    let sandbox = Sandbox::new();
    let notes = sandbox.write("notes.txt", "not a database");
    let output = sandbox.rung(&["resume", "--db", "notes.txt"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("notes.txt: not a rung store (not an SQLite database)"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_to_string(notes).unwrap(), "not a database");

    let output = sandbox.rung(&["status", "--db", "missing.db"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("missing.db: no rung store there"));
    assert!(!sandbox.path("missing.db").exists());

    sandbox.write(
        "spec.toml",
        &learning_curve_spec("num_samples = 1", &["--steps", "1", "--sleep", "0"], ""),
    );
    assert!(sandbox.rung(&["run", "spec.toml", "-q"]).status.success());
    let conn = rusqlite::Connection::open(sandbox.path("rung.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let output = sandbox.rung(&["resume", "--db", "rung.db"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("written by a newer rung (store schema 99"),
        "{}",
        stderr(&output)
    );
}

const FLAKY_TRIAL: &str = r#"
import json, os, sys
config = json.loads(os.environ["RUNG_CONFIG"])
x = config["x"]
print("starting", flush=True)
print("rung:report {not json}", flush=True)
print("rung:report [1, 2]", flush=True)
if x == 1:
    print("rung:report " + json.dumps({"step": 1, "accuracy": 0.5}), flush=True)
    sys.exit(0)
if x == 2:
    print('rung:report {"step": 1, "loss": NaN}', flush=True)
    sys.exit(0)
if x == 3:
    print('rung:report {"step": 1, "loss": 2.5, "note": "hello", "ok": true}', flush=True)
    print("something on stderr", file=sys.stderr, flush=True)
    sys.exit(0)
print('rung:report {"loss": 4.0}', flush=True)
print('rung:report {"loss": 3.0}', flush=True)
sys.exit(5)
"#;

#[test]
fn malformed_reports_missing_metrics_nan_and_crashes_are_each_handled() {
    let _deadline = common::deadline(Duration::from_secs(180));
    let sandbox = Sandbox::new();
    sandbox.write("flaky.py", FLAKY_TRIAL);
    sandbox.write(
        "spec.toml",
        r#"name = "flaky"
metric = "loss"
mode = "min"
num_samples = 1
max_concurrent = 2
seed = 1
[space]
x = { grid = [1, 2, 3, 4] }
[trial]
command = ["python3", "flaky.py"]
max_failures = 1
"#,
    );
    let run = sandbox.rung(&["run", "spec.toml", "-q"]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "some trials errored but not all: {}",
        stdout(&run)
    );
    let out = stdout(&run);
    assert!(
        out.contains("errored: t1 — trial never reported the metric \"loss\" (it reported: accuracy)"),
        "{out}"
    );
    assert!(out.contains("errored: t4 — exit code 5 (after 2 attempts)"), "{out}");

    let trials = sandbox.trials("rung.db");
    let status: Vec<TrialStatus> = trials.iter().map(|t| t.status).collect();
    assert_eq!(
        status.iter().map(|s| s.label()).collect::<Vec<_>>(),
        ["errored", "completed", "completed", "errored"]
    );
    // NaN is kept but ranks worst: the best trial is t3.
    assert!(trials[1].best.unwrap().0.is_nan());
    let best = json(&sandbox.rung(&["best", "--db", "rung.db", "--json"]));
    assert_eq!(best["trial"], "t3");
    assert_eq!(best["metrics"]["ok"], 1.0, "booleans count as 0/1");
    assert!(best["metrics"].get("note").is_none(), "non-numeric values are ignored");
    // t4 reported steps 1 and 2 by counter, failed, was relaunched once and reported them again:
    // each step is stored once.
    assert_eq!(trials[3].launches, 2);
    assert_eq!(trials[3].failures, 2);
    let (store, info) = sandbox.store("rung.db");
    let t4_steps: Vec<u64> = store
        .reports(info.id, Some(trials[3].id))
        .unwrap()
        .iter()
        .map(|(_, r)| r.step)
        .collect();
    assert_eq!(t4_steps, [1, 2]);

    let log = std::fs::read_to_string(sandbox.path("rung_trials/flaky/t3/trial.log")).unwrap();
    assert!(log.contains("starting"), "{log}");
    assert!(log.contains("malformed report ignored (not valid JSON"), "{log}");
    assert!(
        log.contains("malformed report ignored (expected a JSON object)"),
        "{log}"
    );
    assert!(log.contains("something on stderr"), "{log}");
    assert!(log.contains("non-numeric values ignored: note"), "{log}");
    let export = stdout(&sandbox.rung(&["export", "--db", "rung.db"]));
    assert!(export.lines().nth(2).unwrap().contains("NaN"), "{export}");
}

#[test]
fn every_trial_erroring_is_a_failure() {
    let _deadline = common::deadline(Duration::from_secs(180));
    let sandbox = Sandbox::new();
    sandbox.write(
        "spec.toml",
        &learning_curve_spec("num_samples = 2", &["--steps", "2", "--sleep", "0"], "")
            .replace("metric = \"loss\"", "metric = \"val_loss\""),
    );
    let run = sandbox.rung(&["run", "spec.toml", "-q"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stdout(&run).contains("trial never reported the metric \"val_loss\" (it reported: loss)"),
        "{}",
        stdout(&run)
    );
    assert!(stderr(&run).contains("every trial errored"));
}

#[test]
fn failed_trials_retry_from_their_last_checkpoint() {
    let _deadline = common::deadline(Duration::from_secs(180));
    let sandbox = Sandbox::new();
    sandbox.write(
        "spec.toml",
        &learning_curve_spec(
            "num_samples = 3\nmax_concurrent = 3",
            &[
                "--steps",
                "8",
                "--sleep",
                "0",
                "--checkpoint-every",
                "3",
                "--fail-once-at",
                "5",
            ],
            "max_failures = 1",
        ),
    );
    let run = sandbox.rung(&["run", "spec.toml", "-q"]);
    assert!(run.status.success(), "{}", stdout(&run));
    let (store, info) = sandbox.store("rung.db");
    for trial in store.trials(info.id).unwrap() {
        assert_eq!(
            (trial.status.label(), trial.failures, trial.launches),
            ("completed", 1, 2),
            "{trial:?}"
        );
        let steps: Vec<u64> = store
            .reports(info.id, Some(trial.id))
            .unwrap()
            .iter()
            .map(|(_, r)| r.step)
            .collect();
        assert_eq!(steps, (1..=8).collect::<Vec<_>>());
        let log = std::fs::read_to_string(sandbox.path(&format!("rung_trials/lc/{}/trial.log", trial.id))).unwrap();
        assert!(log.contains("simulated failure at step 5"), "{log}");
        assert!(
            log.contains("launch 2 of") && log.contains("restoring step 3 from"),
            "{log}"
        );
        assert!(log.contains("continuing at step 4"), "{log}");
    }
}

#[test]
fn a_target_ends_the_sweep_early() {
    let _deadline = common::deadline(Duration::from_secs(180));
    let sandbox = Sandbox::new();
    sandbox.write(
        "spec.toml",
        &learning_curve_spec(
            "num_samples = 50\nmax_concurrent = 2\ntarget = 100.0",
            &["--steps", "50", "--sleep", "0.05"],
            "",
        ),
    );
    let run = sandbox.rung(&["run", "spec.toml", "-q"]);
    assert!(run.status.success(), "{}", stdout(&run));
    assert!(stdout(&run).contains("finished (target_reached)"), "{}", stdout(&run));
    let trials = sandbox.trials("rung.db");
    assert!(trials.len() <= 3, "the sweep stops creating trials: {}", trials.len());
    assert!(trials.iter().all(|t| t.status.label() == "sweep_ended"));
    assert!(trials.iter().all(|t| t.last.as_ref().is_none_or(|r| r.step < 50)));
}

#[test]
fn a_time_budget_ends_an_unbounded_sweep_and_stops_running_trials() {
    let _deadline = common::deadline(Duration::from_secs(180));
    let sandbox = Sandbox::new();
    sandbox.write(
        "spec.toml",
        &learning_curve_spec(
            "num_samples = -1\nmax_concurrent = 2\ntime_budget_s = 1.5",
            &["--steps", "1000", "--sleep", "0.05"],
            "",
        ),
    );
    let run = sandbox.rung(&["run", "spec.toml", "-q"]);
    assert!(run.status.success(), "{}", stdout(&run));
    assert!(stdout(&run).contains("finished (time_budget)"), "{}", stdout(&run));
    let trials = sandbox.trials("rung.db");
    assert_eq!(trials.len(), 2);
    assert!(
        trials
            .iter()
            .all(|t| t.status.label() == "sweep_ended" && t.last.as_ref().unwrap().step < 1000)
    );
}

#[test]
fn a_pausing_scheduler_with_trials_that_never_checkpoint_warns_and_stops_them() {
    let _deadline = common::deadline(Duration::from_secs(180));
    let sandbox = Sandbox::new();
    let spec = learning_curve_spec(
        "num_samples = 4\nmax_concurrent = 2",
        &["--steps", "9", "--sleep", "0", "--checkpoint-every", "0"],
        "",
    ) + "\n[scheduler]\nkind = \"asha\"\ntype = \"promote\"\nmax_t = 9\ngrace_period = 1\nreduction_factor = 3\n";
    sandbox.write("spec.toml", &spec);
    let run = sandbox.rung(&["run", "spec.toml", "-q"]);
    assert!(run.status.success(), "{}{}", stdout(&run), stderr(&run));
    let warning = "a trial asked to pause had no checkpoint: it was stopped instead";
    assert_eq!(
        stderr(&run).matches(warning).count(),
        1,
        "warned once: {}",
        stderr(&run)
    );
    let trials = sandbox.trials("rung.db");
    assert_eq!(trials.len(), 4);
    assert!(
        trials.iter().all(|t| t.status.is_final()),
        "no trial is left paused: {trials:?}"
    );
    assert!(trials.iter().all(|t| t.status.label() != "paused"));
}
