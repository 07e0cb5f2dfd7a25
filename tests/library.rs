//! The Rust API: in-process trials, failures, interruption and exact resume.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rung::workloads::{LearningCurve, learning_curve_space};
use rung::{Decision, Mode, SweepStatus, Tuner, TunerBuilder};

fn builder(store: &std::path::Path) -> TunerBuilder {
    Tuner::builder()
        .name("lib")
        .space(learning_curve_space())
        .metric("loss", Mode::Min)
        .num_samples(12)
        .max_concurrent(3)
        .seed(99)
        .progress(false)
        .interrupt_on_ctrl_c(false)
        .store(store)
}

/// A trainable of the learning-curve workload: 10 steps, a checkpoint every 2.
async fn train(mut trial: rung::TrialContext, reports: Arc<AtomicUsize>) -> anyhow::Result<()> {
    let curve = LearningCurve::from_config(trial.config()).unwrap();
    let start = trial.restore().map_or(1, |(step, dir)| {
        assert_eq!(std::fs::read_to_string(dir.join("step")).unwrap(), step.to_string());
        step + 1
    });
    for step in start..=10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        reports.fetch_add(1, Ordering::SeqCst);
        let decision = if step % 2 == 0 {
            std::fs::write(trial.checkpoint_dir()?.join("step"), step.to_string())?;
            trial.report_checkpoint(step, [("loss", curve.loss(step))]).await
        } else {
            trial.report(step, [("loss", curve.loss(step))]).await
        };
        if decision != Decision::Continue {
            break;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_sweep_runs_every_trial_and_finds_the_best() {
    let dir = tempfile::tempdir().unwrap();
    let reports = Arc::new(AtomicUsize::new(0));
    let counter = reports.clone();
    let result = builder(&dir.path().join("s.db"))
        .build()
        .unwrap()
        .run(move |trial| train(trial, counter.clone()))
        .await
        .unwrap();
    assert_eq!(
        result.status,
        SweepStatus::Finished {
            cause: "all_trials_done".into()
        }
    );
    assert_eq!(result.count("completed"), 12);
    assert_eq!(reports.load(Ordering::SeqCst), 120);
    let best = result.best().unwrap();
    let curve = LearningCurve::from_config(&best.config).unwrap();
    assert_eq!(best.best, Some((curve.loss(10), 10)));
    for trial in &result.trials {
        let (value, _) = trial.best.unwrap();
        assert!(value >= best.best.unwrap().0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_panics_fail_trials_with_their_message_and_retries_apply() {
    let dir = tempfile::tempdir().unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    let result = builder(&dir.path().join("s.db"))
        .num_samples(3)
        .max_failures(1)
        .build()
        .unwrap()
        .run(move |mut trial| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                trial.report(1, [("loss", 1.0)]).await;
                match trial.id().0 {
                    1 => anyhow::bail!("out of memory"),
                    2 => panic!("index out of bounds"),
                    _ => Ok(()),
                }
            }
        })
        .await
        .unwrap();
    let errors: Vec<_> = result
        .trials
        .iter()
        .map(|t| (t.status.label(), t.error.clone(), t.launches))
        .collect();
    assert_eq!(
        errors,
        [
            ("errored", Some("out of memory (after 2 attempts)".to_owned()), 2),
            (
                "errored",
                Some("panicked: index out of bounds (after 2 attempts)".to_owned()),
                2
            ),
            ("completed", None, 1),
        ]
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_sweep_resumes_to_the_same_result_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let reports = Arc::new(AtomicUsize::new(0));

    let counter = reports.clone();
    let reference = builder(&dir.path().join("reference.db"))
        .build()
        .unwrap()
        .run(move |t| train(t, counter.clone()))
        .await
        .unwrap();

    let store = dir.path().join("interrupted.db");
    let tuner = builder(&store).build().unwrap();
    let handle = tuner.handle();
    let counter = Arc::new(AtomicUsize::new(0));
    let watcher = counter.clone();
    tokio::spawn(async move {
        while watcher.load(Ordering::SeqCst) < 45 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        handle.interrupt();
    });
    let first = tuner.run(move |t| train(t, counter.clone())).await.unwrap();
    assert_eq!(first.status, SweepStatus::Interrupted);
    let ended_before: Vec<_> = first
        .trials
        .iter()
        .filter(|t| t.status.is_final())
        .map(|t| (t.id, t.launches))
        .collect();
    assert!(
        !ended_before.is_empty() && first.trials.len() < 12,
        "interrupted mid-way: {} trials",
        first.trials.len()
    );

    let counter = Arc::new(AtomicUsize::new(0));
    let resumed = builder(&store)
        .resume(true)
        .build()
        .unwrap()
        .run(move |t| train(t, counter.clone()))
        .await
        .unwrap();
    assert_eq!(
        resumed.status,
        SweepStatus::Finished {
            cause: "all_trials_done".into()
        }
    );
    assert_eq!(resumed.experiment, "lib", "resume(true) carried on the same experiment");
    // Same configs, same results, same best as the sweep that never stopped.
    let configs = |r: &rung::SweepResult| {
        r.trials
            .iter()
            .map(|t| (t.id, t.config.clone(), t.best))
            .collect::<Vec<_>>()
    };
    assert_eq!(configs(&resumed), configs(&reference));
    for (trial, launches) in ended_before {
        let after = resumed.trials.iter().find(|t| t.id == trial).unwrap();
        assert_eq!(after.launches, launches, "{trial} had ended and must not rerun");
    }
    assert!(
        resumed.trials.iter().any(|t| t.launches == 2),
        "a trial interrupted mid-run was relaunched"
    );

    // Running it once more returns the finished result without running anything.
    let again = builder(&store)
        .resume(true)
        .build()
        .unwrap()
        .run(|_| async { anyhow::Ok(()) })
        .await
        .unwrap();
    assert_eq!(configs(&again), configs(&resumed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_edited_by_hand_is_caught_by_replay() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    let tuner = builder(&store).build().unwrap();
    let handle = tuner.handle();
    let counter = Arc::new(AtomicUsize::new(0));
    let watcher = counter.clone();
    tokio::spawn(async move {
        while watcher.load(Ordering::SeqCst) < 10 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        handle.interrupt();
    });
    tuner.run(move |t| train(t, counter.clone())).await.unwrap();
    let conn = rusqlite::Connection::open(&store).unwrap();
    conn.execute("UPDATE trials SET config = '{\"lr\": 0.5}' WHERE trial_id = 1", [])
        .unwrap();
    drop(conn);
    let error = builder(&store)
        .resume(true)
        .build()
        .unwrap()
        .run(|_| async { anyhow::Ok(()) })
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("replay diverged from the stored log: event 1 recreated t1 with"),
        "{error}"
    );
}

#[test]
fn invalid_settings_never_reach_a_run() {
    let error = Tuner::builder()
        .space(learning_curve_space())
        .num_samples(5)
        .build()
        .err()
        .unwrap();
    assert_eq!(
        error.to_string(),
        "setting \"metric\": must name the metric to optimise"
    );
    let error = Tuner::builder()
        .metric("loss", Mode::Min)
        .max_concurrent(0)
        .build()
        .err()
        .unwrap();
    assert_eq!(
        error.to_string(),
        "setting \"max_concurrent\": must be at least 1, got 0"
    );
}

/// Counts to 9, checkpointing every step; resumes after the step of its checkpoint (checking the
/// checkpoint holds that step) and records the folder it restored from.
async fn count_to_nine(mut trial: rung::TrialContext, restored: Arc<Mutex<Vec<PathBuf>>>) -> anyhow::Result<()> {
    let curve = LearningCurve::from_config(trial.config()).unwrap();
    let start = match trial.restore() {
        Some((step, dir)) => {
            restored.lock().unwrap().push(dir.to_owned());
            assert_eq!(std::fs::read_to_string(dir.join("step"))?, step.to_string());
            step + 1
        }
        None => 1,
    };
    for step in start..=9 {
        std::fs::write(trial.checkpoint_dir()?.join("step"), step.to_string())?;
        if trial.report_checkpoint(step, [("loss", curve.loss(step))]).await != Decision::Continue {
            break;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_trials_are_paused_and_promoted_through_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let promote: rung::SchedulerConfig = serde_json::from_str(
        r#"{"kind": "asha", "type": "promote", "max_t": 9, "grace_period": 1, "reduction_factor": 3}"#,
    )
    .unwrap();
    let restored = Arc::new(Mutex::new(Vec::new()));
    let counter = restored.clone();
    let result = builder(&dir.path().join("s.db"))
        .num_samples(9)
        .scheduler(promote)
        .build()
        .unwrap()
        .run(move |trial| count_to_nine(trial, counter.clone()))
        .await
        .unwrap();
    assert_eq!(result.trials.len(), 9);
    assert!(result.trials.iter().all(|t| t.status.is_final()), "{:?}", result.trials);
    assert!(
        restored.lock().unwrap().len() >= 3,
        "promoted trials resumed from their checkpoints"
    );
    // The best trial of the first rung was promoted all the way to max_t.
    assert!(
        result
            .trials
            .iter()
            .any(|t| t.last.as_ref().unwrap().step == 9 && t.launches >= 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_checkpoints_go_to_object_storage_and_come_back_for_promotions() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let promote: rung::SchedulerConfig = serde_json::from_str(
        r#"{"kind": "asha", "type": "promote", "max_t": 9, "grace_period": 1, "reduction_factor": 3}"#,
    )
    .unwrap();
    let restored = Arc::new(Mutex::new(Vec::new()));
    let counter = restored.clone();
    let result = builder(&dir.path().join("s.db"))
        .num_samples(9)
        .scheduler(promote)
        .checkpoint_storage(format!("file://{}/ckpt", bucket.display()))
        .checkpoint_keep(1)
        .build()
        .unwrap()
        .run(move |trial| count_to_nine(trial, counter.clone()))
        .await
        .unwrap();
    let restored = restored.lock().unwrap().clone();
    assert!(restored.len() >= 3, "promoted trials resumed from the bucket");
    // Each was downloaded into the trial's own folder, not read from the bucket.
    assert!(restored.iter().all(|dir| dir.ends_with("restore")), "{restored:?}");
    // Every trial's kept checkpoint is in the bucket, whole; the keep policy deleted the rest.
    for trial in &result.trials {
        let root = bucket.join("ckpt/lib").join(trial.id.to_string());
        let whole: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|step| step.join(".rung-complete").exists())
            .collect();
        assert_eq!(whole.len(), 1, "{root:?}: {whole:?}");
        let step: u64 = whole[0].file_name().unwrap().to_str().unwrap().parse().unwrap();
        assert_eq!(
            std::fs::read_to_string(whole[0].join("step")).unwrap(),
            step.to_string()
        );
    }
}

/// A trainable that reports one value of `score` for its configuration.
async fn score_once(mut trial: rung::TrialContext) -> anyhow::Result<()> {
    let c = trial
        .config()
        .get("c")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_owned();
    let n = trial.config().get("n").and_then(|v| v.as_i64()).unwrap_or(0);
    let value = f64::from(c.as_bytes()[0] - b'a') + n as f64;
    trial.report(1, [("score", value)]).await;
    Ok(())
}

fn small_space() -> rung::Space {
    rung::Space::from_json(&serde_json::json!({"c": {"choice": ["a", "b", "c"]}, "n": {"randint": [0, 4]}})).unwrap()
}

fn small(store: &std::path::Path, name: &str) -> TunerBuilder {
    Tuner::builder()
        .name(name)
        .space(small_space())
        .metric("score", Mode::Min)
        .searcher(serde_json::from_value(serde_json::json!({"kind": "tpe", "n_startup_trials": 3})).unwrap())
        .max_concurrent(1)
        .seed(5)
        .progress(false)
        .interrupt_on_ctrl_c(false)
        .store(store)
}

/// The error of a sweep that must not run.
async fn refusal(builder: TunerBuilder) -> String {
    builder.build().unwrap().run(score_once).await.unwrap_err().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_run_first_and_a_warm_start_never_reruns_an_earlier_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.db");
    // The first experiment: two given points, then the searcher, 5 trials of the 12.
    let points = vec![
        serde_json::from_value(serde_json::json!({"c": "c", "n": 3})).unwrap(),
        serde_json::from_value(serde_json::json!({"c": "b"})).unwrap(),
    ];
    let first = small(&store, "first")
        .num_samples(5)
        .points_to_evaluate(points)
        .build()
        .unwrap()
        .run(score_once)
        .await
        .unwrap();
    assert_eq!(first.trials.len(), 5);
    assert_eq!(first.trials[0].config.get("c"), Some(&serde_json::json!("c")));
    assert_eq!(first.trials[0].config.get("n"), Some(&serde_json::json!(3)));
    assert_eq!(first.trials[1].config.get("c"), Some(&serde_json::json!("b")));
    // The second learns from the first: it runs the 7 configurations left, then the space is
    // exhausted and the sweep ends although 20 samples were asked for.
    let second = small(&store, "second")
        .num_samples(20)
        .warm_start("first")
        .build()
        .unwrap()
        .run(score_once)
        .await
        .unwrap();
    let key = |t: &rung::tune_runtime::store::StoredTrial| serde_json::to_string(&t.config.0).unwrap();
    let earlier: Vec<String> = first.trials.iter().map(key).collect();
    let later: Vec<String> = second.trials.iter().map(key).collect();
    assert_eq!(later.len(), 7, "{later:?}");
    assert!(
        later.iter().all(|config| !earlier.contains(config)),
        "{later:?} reran one of {earlier:?}"
    );
    // Together they ran the whole space once, so the optimum (c = "a", n = 0) is among them.
    let best = |result: &rung::SweepResult| result.best().unwrap().best.unwrap().0;
    assert_eq!(best(&first).min(best(&second)), 0.0);
    // The warm-start trials are kept with the experiment's spec, so a resume replays from them.
    let info = rung::tune_runtime::store::Store::open(&store)
        .unwrap()
        .experiment(Some("second"))
        .unwrap();
    let spec: serde_json::Value = serde_json::from_str(&info.spec).unwrap();
    assert_eq!(spec["searcher"]["warm_trials"].as_array().map(Vec::len), Some(5));
    // An unknown experiment, or one that optimises another metric, is refused by name.
    let error = refusal(small(&store, "third").warm_start("nope")).await;
    assert!(
        error.contains("setting \"searcher.warm_start\": no experiment \"nope\""),
        "{error}"
    );
    let error = refusal(small(&store, "fourth").metric("score", Mode::Max).warm_start("first")).await;
    assert!(
        error.contains("experiment \"first\" optimises \"score\" (min), this sweep \"score\" (max)"),
        "{error}"
    );
}

/// Runs every launch on an OS thread of its own that reports with `report_blocking` and ends
/// with `exited_blocking`, as Python trials do: the thread drives the controller itself.
struct ThreadRunner {
    steps: u64,
}

impl rung::tune_runtime::driver::Runner for ThreadRunner {
    fn launch(&self, launch: rung::tune_core::controller::Launch, link: rung::tune_runtime::driver::TrialLink) {
        let steps = self.steps;
        std::thread::spawn(move || {
            let curve = LearningCurve::from_config(&launch.config).unwrap();
            for step in 1..=steps {
                let report = rung::tune_core::trial::Report {
                    step,
                    metrics: [("loss".to_owned(), curve.loss(step))].into_iter().collect(),
                };
                if link.report_blocking(report, None) != Decision::Continue {
                    break;
                }
            }
            link.exited_blocking(rung::tune_core::controller::Outcome::Success);
        });
    }
}

/// The stored reports of a finished sweep, by trial and step.
fn stored_reports(store: &std::path::Path) -> Vec<(rung::TrialId, u64, f64)> {
    let store = rung::tune_runtime::store::Store::open(store).unwrap();
    let info = store.experiment(None).unwrap();
    store
        .reports(info.id, None)
        .unwrap()
        .into_iter()
        .map(|(trial, report)| (trial, report.step, report.metrics["loss"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trial_threads_that_drive_the_controller_run_the_same_sweep_as_async_trials() {
    let asha: rung::SchedulerConfig =
        serde_json::from_str(r#"{"kind": "asha", "max_t": 27, "grace_period": 1, "reduction_factor": 3}"#).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sweep = |name: &str, concurrency: usize| {
        builder(&dir.path().join(format!("{name}.db")))
            .num_samples(40)
            .max_concurrent(concurrency)
            .scheduler(asha.clone())
            .build()
            .unwrap()
    };
    // One trial at a time, a sweep is deterministic: the blocking path must decide exactly as
    // the async one does, and store every report it answered. On a current-thread runtime an
    // in-process trial never blocks its thread, so every report goes through the driver thread.
    let reference = sweep("async", 1);
    let reference = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(reference.run(|mut trial| async move {
            let curve = LearningCurve::from_config(trial.config()).unwrap();
            for step in 1..=27 {
                if trial.report(step, [("loss", curve.loss(step))]).await != Decision::Continue {
                    break;
                }
            }
            anyhow::Ok(())
        }))
    })
    .join()
    .unwrap()
    .unwrap();
    // On this multi-thread runtime the same in-process trials drive the controller themselves.
    let driving = sweep("driving", 1)
        .run(|mut trial| async move {
            let curve = LearningCurve::from_config(trial.config()).unwrap();
            for step in 1..=27 {
                if trial.report(step, [("loss", curve.loss(step))]).await != Decision::Continue {
                    break;
                }
            }
            anyhow::Ok(())
        })
        .await
        .unwrap();
    assert_eq!(driving.status, reference.status);
    let threaded = sweep("threads", 1)
        .run_with_runner(|_, _, _| Ok(Arc::new(ThreadRunner { steps: 27 })))
        .await
        .unwrap();
    assert_eq!(threaded.status, reference.status);
    let expected = stored_reports(&dir.path().join("async.db"));
    assert!(expected.len() > 40, "ASHA let some trials past the first rung");
    assert_eq!(stored_reports(&dir.path().join("threads.db")), expected);
    assert_eq!(stored_reports(&dir.path().join("driving.db")), expected);

    // Eight at once: threads drive in turn with the driver thread, and every trial ends.
    let busy = sweep("busy", 8)
        .run_with_runner(|_, _, _| Ok(Arc::new(ThreadRunner { steps: 27 })))
        .await
        .unwrap();
    assert_eq!(busy.count("completed") + busy.count("stopped"), 40, "{:?}", busy.trials);
    let reports = stored_reports(&dir.path().join("busy.db"));
    for trial in &busy.trials {
        let steps: Vec<u64> = reports.iter().filter(|r| r.0 == trial.id).map(|r| r.1).collect();
        let last = trial.last.as_ref().unwrap().step;
        assert_eq!(
            steps,
            (1..=last).collect::<Vec<_>>(),
            "{} stored every report it was answered",
            trial.id
        );
    }
}
