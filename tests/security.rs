//! The "Trust" findings, end to end: what a trial, a spec or a signal can do to rung is refused
//! or survived.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Sandbox, stderr, stdout};
use rung::remote::Remote;
use rung::tune_core::trial::TrialStatus;
use rung::tune_proto::v1;
use rung::tune_proto::v1::trials_client::TrialsClient;
use rung::tune_runtime::store::Store;

/// A spec whose trials run `sh trial.sh {x}` for x in 1..=`points` (a grid), one at a time.
fn shell_spec(extra_top: &str, points: u32, extra_trial: &str) -> String {
    let grid: Vec<String> = (1..=points).map(|x| x.to_string()).collect();
    format!(
        r#"name = "sec"
metric = "loss"
mode = "min"
seed = 1
max_concurrent = 1
{extra_top}

[space]
x = {{ grid = [{}] }}

[trial]
command = ["sh", "trial.sh", "{{x}}"]
stop_grace_s = 2
{extra_trial}
"#,
        grid.join(", ")
    )
}

// ---- 4: -Infinity ranks worst -----------------------------------------------------------------

#[test]
fn negative_infinity_under_min_is_the_worst_result_not_the_target() {
    let _deadline = common::deadline(Duration::from_secs(120));
    let _light = common::light();
    let sandbox = Sandbox::new();
    // Trial 1 reports -Infinity (as Python's json.dumps writes it); the others report x.
    sandbox.write(
        "trial.sh",
        r#"if [ "$1" = 1 ]; then echo 'rung:report {"loss": -Infinity}'; else echo "rung:report {\"loss\": $1}"; fi
"#,
    );
    sandbox.write("spec.toml", &shell_spec("target = 0", 3, ""));
    let run = sandbox.rung(&["run", "spec.toml", "-q"]);
    assert_eq!(run.status.code(), Some(0), "{}{}", stdout(&run), stderr(&run));

    let status = common::json(&sandbox.rung(&["status", "--db", "rung.db", "--json"]));
    assert_eq!(status["end_cause"], "all_trials_done", "{status}");
    assert_eq!(status["best"]["trial"], "t2", "{status}");
    let best = common::json(&sandbox.rung(&["best", "--db", "rung.db", "--json"]));
    assert_eq!(best["trial"], "t2", "{best}");
    assert_eq!(best["value"], 2.0, "{best}");
    let trials = sandbox.trials("rung.db");
    assert_eq!(trials.len(), 3, "the sweep ran on past the -Infinity");
    assert_eq!(
        trials[0].best.map(|(value, _)| value),
        Some(f64::NEG_INFINITY),
        "kept as reported"
    );
}

// ---- 8: durations a Duration cannot hold ------------------------------------------------------

#[test]
fn huge_durations_are_refused_by_name_before_anything_runs() {
    let _deadline = common::deadline(Duration::from_secs(120));
    let _light = common::light();
    let sandbox = Sandbox::new();
    sandbox.write("trial.sh", "echo 'rung:report {\"loss\": 1}'\n");
    for (top, trial, setting, shown) in [
        ("time_budget_s = 1e20", "", "\"time_budget_s\"", "got 1e20"),
        ("", "stop_grace_s = 1e20", "\"trial.stop_grace_s\"", "got 1e20"),
        ("time_budget_s = 400000000", "", "\"time_budget_s\"", "got 400000000"),
        ("", "stop_grace_s = -1", "\"trial.stop_grace_s\"", "got -1"),
    ] {
        let spec = shell_spec(top, 1, trial).replace("stop_grace_s = 2\nstop_grace_s", "stop_grace_s");
        sandbox.write("spec.toml", &spec);
        for command in [
            vec!["run", "spec.toml", "-q"],
            // `rung submit` checks the spec before it reaches for the server.
            vec!["submit", "spec.toml", "--server", "http://127.0.0.1:9"],
        ] {
            let output = sandbox.rung(&command);
            let message = stderr(&output);
            assert_eq!(output.status.code(), Some(2), "{command:?} {top}{trial}: {message}");
            assert!(
                message.contains(setting)
                    && message.contains(shown)
                    && message.contains("at most 315576000 (10 years)"),
                "{command:?}: {message}"
            );
            assert!(!message.contains("panicked"), "{message}");
        }
    }
    assert!(!sandbox.path("rung.db").exists(), "nothing ran, no store was made");

    for flag in ["--lease-s", "--heartbeat-s", "--worker-lease-s"] {
        let output = sandbox.rung(&["serve", "--listen", "127.0.0.1:0", flag, "1e20"]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{flag}: {message}");
        assert!(
            message.contains(flag) && message.contains("got 1e20"),
            "{flag}: {message}"
        );
    }
}

#[test]
fn a_stored_spec_with_a_huge_duration_is_refused_on_resume_not_a_panic() {
    let _deadline = common::deadline(Duration::from_secs(120));
    let _light = common::light();
    let sandbox = Sandbox::new();
    sandbox.write("trial.sh", "echo 'rung:report {\"loss\": 1}'\n");
    // A spec stored by a rung that did not check: valid otherwise, with a budget of 1e20 s.
    let mut spec = rung::Spec::from_toml_str(&shell_spec("", 1, "")).unwrap();
    spec.resolve_defaults();
    spec.time_budget_s = Some(1e20);
    let mut store = Store::open_or_create(&sandbox.path("rung.db")).unwrap();
    store
        .create_experiment("sec", &serde_json::to_string(&spec).unwrap(), 1)
        .unwrap();
    drop(store);
    let output = sandbox.rung(&["resume", "--db", "rung.db", "-q"]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(
        message.contains("\"time_budget_s\"") && message.contains("got 1e20"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
}

// ---- 5: bytes that are not UTF-8, lines without end ------------------------------------------

#[test]
fn invalid_utf8_and_overlong_lines_neither_hang_nor_kill_a_trial() {
    let _deadline = common::deadline(Duration::from_secs(120));
    let _light = common::light();
    let sandbox = Sandbox::new();
    // Invalid bytes on both pipes, then far more than a pipe holds on each, a 2 MiB report
    // line, and only then the real result.
    sandbox.write(
        "trial.sh",
        r#"printf 'bad \377\376 bytes\n'
printf 'rung:report {"loss": \377}\n'
printf 'err \377 bytes\n' >&2
i=0; while [ $i -lt 3000 ]; do
    echo "filler line $i ......................................................"
    echo "stderr filler $i ...................................................." >&2
    i=$((i+1))
done
head -c 2097152 /dev/zero | tr '\0' '7' > big
{ printf 'rung:report {"loss": -5, "pad": "'; cat big; printf '"}\n'; }
printf 'rung:report {"loss": %s}\n' "$1"
"#,
    );
    sandbox.write("spec.toml", &shell_spec("", 2, ""));
    let run = sandbox.rung(&["run", "spec.toml", "-q"]);
    assert_eq!(run.status.code(), Some(0), "{}{}", stdout(&run), stderr(&run));
    let trials = sandbox.trials("rung.db");
    assert_eq!(trials.len(), 2);
    for (trial, x) in trials.iter().zip([1.0, 2.0]) {
        assert_eq!(trial.status.label(), "completed", "{trial:?}");
        assert_eq!(trial.best, Some((x, 1)), "only the real report counts: {trial:?}");
    }
    let log = std::fs::read(sandbox.path("rung_trials/sec/t1/trial.log")).unwrap();
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("bad \u{fffd}\u{fffd} bytes") && log.contains("err \u{fffd} bytes"));
    assert!(log.contains("== rung: report ignored (not UTF-8)"));
    assert!(log.contains("== rung: report ignored (longer than 1048576 bytes, cut there for the log)"));
    assert!(log.contains("stderr filler 2999"), "stderr was read to its end");
}

// ---- 6: a child left behind --------------------------------------------------------------------

/// Waits, with a deadline, until `pid` is no longer a live process (a zombie counts as gone).
fn wait_until_gone(pid: i32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
    };
    while alive() {
        assert!(Instant::now() < deadline, "{what} (pid {pid}) is still alive");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_background_child_neither_keeps_the_trial_running_nor_outlives_it() {
    let _deadline = common::deadline(Duration::from_secs(120));
    let _light = common::light();
    let sandbox = Sandbox::new();
    // The child holds the trial's stdout and stderr open for 300 s.
    sandbox.write(
        "trial.sh",
        r#"sleep 300 &
echo $! > "$RUNG_TRIAL_DIR/child.pid"
echo "rung:report {\"loss\": $1}"
"#,
    );
    sandbox.write("spec.toml", &shell_spec("", 2, ""));
    let run = sandbox.rung(&["run", "spec.toml", "-q"]);
    assert_eq!(run.status.code(), Some(0), "{}{}", stdout(&run), stderr(&run));
    let trials = sandbox.trials("rung.db");
    assert!(
        trials
            .iter()
            .all(|t| t.status == TrialStatus::Terminated(rung::tune_core::trial::EndReason::Completed)),
        "{trials:?}"
    );
    for trial in ["t1", "t2"] {
        let pid = std::fs::read_to_string(sandbox.path(&format!("rung_trials/sec/{trial}/child.pid"))).unwrap();
        wait_until_gone(pid.trim().parse().unwrap(), &format!("the background child of {trial}"));
    }
}

// ---- 7: SIGTERM is an interrupt ---------------------------------------------------------------

#[test]
fn sigterm_stops_the_sweep_for_now_and_resume_finishes_it() {
    let _deadline = common::deadline(Duration::from_secs(300));
    let _light = common::light();
    let sandbox = Sandbox::new();
    sandbox.write(
        "spec.toml",
        &common::learning_curve_spec(
            "num_samples = 3\nmax_concurrent = 2",
            &["--steps", "40", "--sleep", "0.05", "--checkpoint-every", "2"],
            "",
        ),
    );
    // Signal once a trial runs with a committed checkpoint (it is mid-run: 40 steps to make).
    let output = common::interrupt_mid_sweep(&sandbox, "TERM", 40);
    assert!(stderr(&output).contains("interrupted (SIGTERM)"), "{}", stderr(&output));
    let status = common::json(&sandbox.rung(&["status", "--db", "rung.db", "--json"]));
    assert_eq!(status["state"], "unfinished", "{status}");

    let resumed = sandbox.rung(&["resume", "--db", "rung.db", "-q"]);
    assert!(resumed.status.success(), "{}{}", stdout(&resumed), stderr(&resumed));
    let trials = sandbox.trials("rung.db");
    assert_eq!(trials.len(), 3);
    assert!(
        trials
            .iter()
            .all(|t| t.status.label() == "completed" && t.last.as_ref().unwrap().step == 40),
        "{trials:?}"
    );
    assert!(
        trials.iter().any(|t| t.launches == 2),
        "an interrupted trial was relaunched"
    );
}

// ---- 1: checkpoint confinement ----------------------------------------------------------------

#[test]
fn a_worker_cannot_make_the_server_delete_outside_the_trials_checkpoint_root() {
    let _deadline = common::deadline(Duration::from_secs(120));
    let _light = common::light();
    let sandbox = Sandbox::new();
    // Trials go to workers that ask; the keep policy deletes every checkpoint but the best.
    sandbox.write(
        "ask.toml",
        "name = \"ask\"\nmetric = \"loss\"\nmode = \"min\"\nnum_samples = 1\nmax_concurrent = 1\nseed = 3\n\n\
         [space]\nlr = { uniform = [0.0, 1.0] }\n\n[trial]\ncheckpoint_keep = 1\n",
    );
    let precious = sandbox.path("precious");
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("data"), "keep me").unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_rung"));
    command
        .args(["serve", "--db", "server.db", "--listen", "127.0.0.1:0", "ask.toml"])
        .current_dir(sandbox.dir.path());
    let server = common::Proc::spawn("server", command);
    let line = server.wait_for_line("serving", Duration::from_secs(30));
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http"))
        .expect("the URL is printed")
        .to_owned();
    let root = std::fs::canonicalize(sandbox.dir.path())
        .unwrap()
        .join("server_trials/ask/t1/checkpoints");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let remote = Remote {
            url,
            token: None,
            ca_cert: None,
        };
        let mut trials = TrialsClient::new(remote.channel().await.unwrap());
        let assignment = trials
            .ask(v1::AskRequest {
                experiment: "ask".into(),
                worker: "w".into(),
                wait_ms: 5_000,
            })
            .await
            .unwrap()
            .into_inner()
            .assignment
            .expect("a trial to run");
        assert_eq!(
            assignment.checkpoint_root,
            root.display().to_string(),
            "the worker is told its root"
        );
        let reference = assignment.trial.unwrap();
        let report = |step: u64, loss: f64, checkpoint: &Path| v1::ReportRequest {
            trial: Some(reference.clone()),
            step,
            metrics: [("loss".to_owned(), loss)].into(),
            checkpoint: checkpoint.display().to_string(),
        };

        // A checkpoint outside the root, in a report or declared on its own: refused, naming both.
        let outside = [
            precious.clone(),
            root.join("../../t2/checkpoints/step_1"),
            root.clone(),
            PathBuf::from("relative/step_1"),
        ];
        for path in &outside {
            let error = trials.report(report(1, 0.5, path)).await.unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{path:?}: {error:?}");
            assert!(
                error.message().contains(&format!("{:?}", path.display().to_string()))
                    && error.message().contains(&format!("{:?}", root.display().to_string())),
                "{error:?}"
            );
        }
        // Inside the root: taken.
        for step in [1, 2] {
            std::fs::create_dir_all(root.join(format!("step_{step}"))).unwrap();
        }
        let first = trials
            .report(report(1, 0.5, &root.join("step_1")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.decision(), v1::Decision::Continue);
        assert!(!first.duplicate, "the refused reports did not count");
        let error = trials
            .checkpoint(v1::CheckpointRequest {
                trial: Some(reference.clone()),
                checkpoint: Some(v1::CheckpointLocation {
                    step: 1,
                    path: precious.display().to_string(),
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
        // A better step 2: the keep policy drops step 1 — inside the root, where rung may delete.
        let second = trials
            .report(report(2, 0.4, &root.join("step_2")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(second.decision(), v1::Decision::Continue);
        let deadline = Instant::now() + Duration::from_secs(30);
        while root.join("step_1").exists() {
            assert!(Instant::now() < deadline, "the dropped checkpoint was never deleted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        trials
            .finish(v1::FinishRequest {
                trial: Some(reference.clone()),
                success: true,
                reason: String::new(),
            })
            .await
            .unwrap();
    });
    assert!(root.join("step_2").is_dir(), "the kept checkpoint stays");
    assert_eq!(std::fs::read_to_string(precious.join("data")).unwrap(), "keep me");
}

// ---- 9: limits ----------------------------------------------------------------------------------

#[test]
fn a_report_with_too_many_metrics_too_long_a_name_or_too_large_a_step_is_refused_naming_the_limit() {
    let _deadline = common::deadline(Duration::from_secs(120));
    let _light = common::light();
    let sandbox = Sandbox::new();
    // 1,500 metrics in one line (under the 1 MiB line limit, so the metric limit is what
    // refuses it; before it, 40,000 such keys cost 21 MB of store per two reports), a metric
    // name of 300 bytes, and then the real result.
    sandbox.write(
        "trial.sh",
        r#"printf 'rung:report {"loss": -1'
i=0; while [ $i -lt 1500 ]; do printf ', "metric_with_a_long_name_%s": 1' "$i"; i=$((i+1)); done
printf '}\n'
name=$(head -c 300 /dev/zero | tr '\0' 'n')
printf 'rung:report {"loss": -2, "%s": 1}\n' "$name"
printf 'rung:report {"loss": -3, "step": 9223372036854775808}\n'
printf 'rung:report {"loss": %s}\n' "$1"
"#,
    );
    sandbox.write("spec.toml", &shell_spec("", 1, ""));
    let run = sandbox.rung(&["run", "spec.toml", "-q"]);
    assert_eq!(run.status.code(), Some(0), "{}{}", stdout(&run), stderr(&run));
    let (store, info) = sandbox.store("rung.db");
    let reports = store.reports(info.id, None).unwrap();
    assert_eq!(reports.len(), 1, "only the real report is stored: {reports:?}");
    assert_eq!(
        reports[0].1.metrics,
        rung::tune_core::trial::Metrics::from([("loss".to_owned(), 1.0)])
    );
    let log = std::fs::read_to_string(sandbox.path("rung_trials/sec/t1/trial.log")).unwrap();
    assert!(
        log.contains("malformed report ignored (1501 metrics in one report; at most 1000 are accepted)"),
        "{}",
        &log[..log.len().min(2000)]
    );
    assert!(
        log.contains("metric name of 300 bytes"),
        "{}",
        &log[..log.len().min(2000)]
    );
    assert!(log.contains("at most 256 are accepted"));
    // A step the store's signed integers cannot hold (it would sort before step 0).
    assert!(
        log.contains("\"step\" must be an integer from 0 to 9223372036854775807, got 9223372036854775808"),
        "{}",
        &log[..log.len().min(2000)]
    );
}
