//! Tests of the controller: each drives it with events at fake instants and checks the commands.

use super::*;
use crate::error::Result;
use crate::trial::Metrics;
use serde_json::json;

/// A searcher that hands out `{"x": n}` for trial n.
struct Counting;
impl Searcher for Counting {
    fn suggest(&mut self, trial: TrialId) -> Result<Suggestion> {
        Ok(Suggestion::Config(
            serde_json::from_value(json!({"x": trial.0})).unwrap(),
        ))
    }
}

/// Stops every trial whose metric is above 0.5; pauses at step 2 when asked.
struct Threshold {
    pause_at: Option<u64>,
    removed: Vec<TrialId>,
}
impl Scheduler for Threshold {
    fn on_result(&mut self, _trial: TrialId, result: &TrialReport<'_>) -> Decision {
        if Some(result.report.step) == self.pause_at {
            return Decision::Pause;
        }
        if result.value > 0.5 {
            Decision::Stop
        } else {
            Decision::Continue
        }
    }
    fn on_trial_remove(&mut self, trial: TrialId) {
        self.removed.push(trial);
    }
}

fn config() -> ControllerConfig {
    ControllerConfig {
        metric: "loss".into(),
        mode: Mode::Min,
        max_trials: Some(3),
        max_concurrent: 2,
        time_budget: None,
        target: None,
        max_failures: 1,
        max_lost: 3,
        max_failed_trials: None,
        checkpoint_keep: None,
    }
}

/// The error of the first trial row the commands persist.
fn persisted_error(commands: &[Command]) -> Option<String> {
    commands.iter().find_map(|c| match c {
        Command::Persist(Record::Trial(row)) => row.error.clone(),
        _ => None,
    })
}

fn controller(config: ControllerConfig) -> Controller {
    Controller::new(
        config,
        Box::new(Counting),
        Box::new(Threshold {
            pause_at: None,
            removed: vec![],
        }),
    )
}

/// A report of `loss` at `step`, declaring a checkpoint at `checkpoint` when given.
fn reported(trial: u64, step: u64, loss: f64, checkpoint: Option<&str>) -> Event {
    Event::Reported {
        trial: TrialId(trial),
        report: Report {
            step,
            metrics: Metrics::from([("loss".into(), loss)]),
        },
        checkpoint: checkpoint.map(str::to_owned),
    }
}

/// A controller that has handled [`Event::Start`], its first launches discarded.
fn started(config: ControllerConfig) -> Controller {
    let mut c = controller(config);
    c.handle(&Event::Start, T0);
    c
}

fn report(trial: u64, step: u64, loss: f64) -> Event {
    reported(trial, step, loss, None)
}

fn exit(trial: u64, outcome: Outcome) -> Event {
    Event::Exited {
        trial: TrialId(trial),
        outcome,
    }
}

/// The trial's process exited with a failure, for `reason`.
fn failed(trial: u64, reason: &str) -> Event {
    exit(trial, Outcome::Failed { reason: reason.into() })
}

fn launches(commands: &[Command]) -> Vec<(u64, u32, Option<u64>)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Launch(l) => Some((l.trial.0, l.attempt, l.restore.as_ref().map(|r| r.step))),
            _ => None,
        })
        .collect()
}

fn decision(commands: &[Command]) -> Option<Decision> {
    commands.iter().find_map(|c| match c {
        Command::Respond { decision, .. } => Some(*decision),
        _ => None,
    })
}

const T0: Duration = Duration::ZERO;

/// The status of a trial that ended for `reason`.
fn terminated(reason: EndReason) -> Option<TrialStatus> {
    Some(TrialStatus::Terminated(reason))
}

#[test]
fn fills_slots_runs_num_samples_and_finishes() {
    let mut c = controller(config());
    assert_eq!(launches(&c.handle(&Event::Start, T0)), [(1, 0, None), (2, 0, None)]);
    assert_eq!(decision(&c.handle(&report(1, 1, 0.3), T0)), Some(Decision::Continue));
    assert_eq!(decision(&c.handle(&report(2, 1, 0.9), T0)), Some(Decision::Stop));
    assert_eq!(c.status(TrialId(2)), terminated(EndReason::StoppedEarly));
    // The stopped trial's slot frees only once its process is gone.
    assert!(launches(&c.handle(&report(1, 2, 0.2), T0)).is_empty());
    assert_eq!(launches(&c.handle(&failed(2, "SIGTERM"), T0)), [(3, 0, None)]);
    c.handle(&exit(1, Outcome::Success), T0);
    assert_eq!(c.status(TrialId(1)), terminated(EndReason::Completed));
    c.handle(&report(3, 1, 0.1), T0);
    let end = c.handle(&exit(3, Outcome::Success), T0);
    let Some(Command::Finished(summary)) = end.last() else {
        panic!("{end:?}")
    };
    assert_eq!(summary.cause, EndCause::AllTrialsDone);
    assert_eq!((summary.progress.completed, summary.progress.stopped), (2, 1));
    assert_eq!(summary.progress.best, Some((TrialId(3), 0.1, 1)));
    assert!(c.is_finished());
}

#[test]
fn failures_retry_from_last_checkpoint_then_error() {
    let mut c = started(ControllerConfig {
        max_trials: Some(1),
        ..config()
    });
    c.handle(&reported(1, 4, 0.4, Some("/ck/4")), T0);
    let retry = c.handle(&failed(1, "exit code 3"), T0);
    assert_eq!(launches(&retry), [(1, 1, Some(4))]);
    assert_eq!(c.status(TrialId(1)), Some(TrialStatus::Running));
    let end = c.handle(&failed(1, "exit code 3"), T0);
    assert_eq!(c.status(TrialId(1)), Some(TrialStatus::Errored));
    let Some(Command::Persist(Record::Trial(row))) =
        end.iter().find(|c| matches!(c, Command::Persist(Record::Trial(_))))
    else {
        panic!()
    };
    assert_eq!(row.error.as_deref(), Some("exit code 3 (after 2 attempts)"));
}

#[test]
fn a_lost_machine_relaunches_from_the_checkpoint_without_counting_a_failure() {
    let mut c = started(ControllerConfig {
        max_trials: Some(1),
        max_failures: 0,
        ..config()
    });
    c.handle(&reported(1, 2, 0.5, Some("/ck/2")), T0);
    let lost = || Outcome::Lost {
        reason: "agent a1 lost".into(),
    };
    // Lost twice with max_failures = 0: still relaunched each time, never errored.
    assert_eq!(launches(&c.handle(&exit(1, lost()), T0)), [(1, 1, Some(2))]);
    assert_eq!(launches(&c.handle(&exit(1, lost()), T0)), [(1, 2, Some(2))]);
    assert_eq!(c.status(TrialId(1)), Some(TrialStatus::Running));
    c.handle(&exit(1, Outcome::Success), T0);
    assert_eq!(c.status(TrialId(1)), terminated(EndReason::Completed));
}

#[test]
fn a_trial_lost_max_lost_times_in_a_row_ends_errored_and_progress_resets_the_count() {
    let mut c = started(ControllerConfig {
        max_trials: Some(1),
        max_lost: 3,
        ..config()
    });
    let lost = || Outcome::Lost {
        reason: "agent a1 lost".into(),
    };
    c.handle(&exit(1, lost()), T0);
    c.handle(&exit(1, lost()), T0);
    // A launch that reports a new step resets the count: two more losses are tolerated.
    c.handle(&reported(1, 1, 0.5, None), T0);
    assert_eq!(launches(&c.handle(&exit(1, lost()), T0)).len(), 1);
    assert_eq!(launches(&c.handle(&exit(1, lost()), T0)).len(), 1);
    let end = c.handle(&exit(1, lost()), T0);
    assert!(launches(&end).is_empty(), "not relaunched a third time in a row");
    assert_eq!(c.status(TrialId(1)), Some(TrialStatus::Errored));
    let error = persisted_error(&end);
    assert_eq!(
        error.as_deref(),
        Some("agent a1 lost (3 launches in a row lost; max_lost is 3)")
    );
}

#[test]
fn missing_metric_errors_naming_it() {
    let mut c = started(ControllerConfig {
        max_trials: Some(1),
        ..config()
    });
    let accuracy = Event::Reported {
        trial: TrialId(1),
        report: Report {
            step: 1,
            metrics: Metrics::from([("accuracy".into(), 0.9)]),
        },
        checkpoint: None,
    };
    assert_eq!(decision(&c.handle(&accuracy, T0)), Some(Decision::Continue));
    let end = c.handle(&exit(1, Outcome::Success), T0);
    assert_eq!(c.status(TrialId(1)), Some(TrialStatus::Errored));
    let error = persisted_error(&end);
    assert_eq!(
        error.as_deref(),
        Some("trial never reported the metric \"loss\" (it reported: accuracy)")
    );
}

#[test]
fn duplicate_steps_after_restart_are_ignored() {
    let mut c = started(config());
    c.handle(&report(1, 1, 0.3), T0);
    c.handle(&report(1, 2, 0.25), T0);
    let again = c.handle(&report(1, 2, 0.2), T0);
    assert!(
        !again
            .iter()
            .any(|c| matches!(c, Command::Persist(Record::Report { .. })))
    );
    assert_eq!(decision(&again), Some(Decision::Continue));
    assert_eq!(c.progress().best, Some((TrialId(1), 0.25, 2)));
    // A checkpoint on a repeated step is still kept as a newer restore point.
    let with_checkpoint = reported(1, 2, 0.2, Some("/ck/2"));
    let kept = c.handle(&with_checkpoint, T0);
    assert!(
        kept.iter()
            .any(|c| matches!(c, Command::Persist(Record::Checkpoint { checkpoint, .. }) if checkpoint.step == 2))
    );
    let retry = c.handle(&failed(1, "oom"), T0);
    assert_eq!(launches(&retry), [(1, 1, Some(2))]);
}

#[test]
fn target_ends_the_sweep_and_stops_everyone() {
    let mut c = started(ControllerConfig {
        target: Some(0.05),
        max_trials: None,
        ..config()
    });
    let hit = c.handle(&report(2, 1, 0.01), T0);
    assert_eq!(decision(&hit), Some(Decision::Stop));
    assert!(hit.contains(&Command::Stop { trial: TrialId(1) }));
    assert_eq!(c.status(TrialId(1)), terminated(EndReason::SweepEnded));
    c.handle(&exit(2, Outcome::Success), T0);
    let end = c.handle(&failed(1, "signal 15"), T0);
    assert!(matches!(
        end.last(),
        Some(Command::Finished(Summary {
            cause: EndCause::TargetReached,
            ..
        }))
    ));
    assert_eq!(c.progress().created, 2, "no trial is created once the sweep is ending");
}

#[test]
fn time_budget_ends_the_sweep_on_a_tick() {
    let mut c = started(ControllerConfig {
        time_budget: Some(Duration::from_secs(10)),
        max_trials: None,
        ..config()
    });
    assert!(
        c.handle(&Event::Tick, Duration::from_secs(9)).is_empty(),
        "a tick that changes nothing emits nothing"
    );
    let stop = c.handle(&Event::Tick, Duration::from_secs(10));
    assert!(stop.contains(&Command::Stop { trial: TrialId(1) }) && stop.contains(&Command::Stop { trial: TrialId(2) }));
    c.handle(&exit(1, Outcome::Success), Duration::from_secs(11));
    let end = c.handle(&exit(2, Outcome::Success), Duration::from_secs(11));
    assert!(matches!(
        end.last(),
        Some(Command::Finished(Summary {
            cause: EndCause::TimeBudget,
            ..
        }))
    ));
}

#[test]
fn resume_relaunches_running_trials_from_checkpoints() {
    let mut c = started(config());
    c.handle(&reported(1, 3, 0.4, Some("/ck/3")), T0);
    c.handle(&report(2, 1, 0.9), T0); // stopped, but its process had not exited yet
    let resumed = c.handle(&Event::Resume, T0);
    // t1 restarts from its checkpoint, t2's slot is free again, so t3 starts.
    assert_eq!(launches(&resumed), [(1, 1, Some(3)), (3, 0, None)]);
    assert_eq!(c.progress().running, 2);
}

#[test]
fn pause_without_checkpoint_stops_instead() {
    let scheduler = Threshold {
        pause_at: Some(2),
        removed: vec![],
    };
    let mut c = Controller::new(
        ControllerConfig {
            max_trials: Some(1),
            ..config()
        },
        Box::new(Counting),
        Box::new(scheduler),
    );
    c.handle(&Event::Start, T0);
    assert_eq!(decision(&c.handle(&report(1, 2, 0.1), T0)), Some(Decision::Stop));
    assert!(c.paused_without_checkpoint());
    assert_eq!(c.status(TrialId(1)), terminated(EndReason::StoppedEarly));
}

#[test]
fn keep_policy_keeps_n_best_plus_latest() {
    let mut c = started(ControllerConfig {
        checkpoint_keep: Some(2),
        ..config()
    });
    let mut deleted = Vec::new();
    for (step, loss) in [(1, 0.5), (2, 0.3), (3, 0.4), (4, 0.35), (5, 0.6)] {
        let commands = c.handle(&reported(1, step, loss, Some(&format!("/ck/{step}"))), T0);
        deleted.extend(commands.into_iter().filter_map(|c| match c {
            Command::DeleteCheckpoint { path, .. } => Some(path),
            _ => None,
        }));
    }
    // Kept at the end: the two best (steps 2 and 4) and the latest (step 5).
    assert_eq!(deleted, ["/ck/1", "/ck/3"]);
}

#[test]
fn nan_is_kept_but_never_best() {
    let mut c = started(config());
    c.handle(&report(1, 1, f64::NAN), T0);
    assert_eq!(c.progress().best, None);
    c.handle(&report(2, 1, 3.0), T0);
    assert_eq!(c.progress().best, Some((TrialId(2), 3.0, 1)));
}

#[test]
fn infinities_never_reach_the_target_nor_rank_best() {
    // mode = "min", target = 0: a -Infinity is not a loss below 0, it is no result at all.
    let mut c = started(ControllerConfig {
        target: Some(0.0),
        max_trials: None,
        ..config()
    });
    for (trial, value) in [(1, f64::NEG_INFINITY), (2, f64::INFINITY)] {
        let commands = c.handle(&report(trial, 1, value), T0);
        if value < 0.0 {
            // (The test scheduler stops anything above 0.5, so +inf is stopped by it, not the target.)
            assert_eq!(decision(&commands), Some(Decision::Continue), "{value}");
        }
        assert!(
            !commands.iter().any(|c| matches!(c, Command::Stop { .. })),
            "{value}: {commands:?}"
        );
        assert!(!c.is_finished());
        assert_eq!(c.progress().best, None, "{value} is never the best");
    }
    c.handle(&report(1, 2, 0.3), T0);
    assert_eq!(c.progress().best, Some((TrialId(1), 0.3, 2)));
    c.handle(&report(1, 3, f64::NEG_INFINITY), T0);
    assert_eq!(
        c.progress().best,
        Some((TrialId(1), 0.3, 2)),
        "a later -inf does not win either"
    );
    let hit = c.handle(&report(1, 4, -0.5), T0);
    assert_eq!(
        decision(&hit),
        Some(Decision::Stop),
        "a finite value below the target reaches it"
    );
}

#[test]
fn best_trial_ranks_nan_and_infinities_last() {
    let row = |id: u64, value: f64| TrialRow {
        id: TrialId(id),
        status: TrialStatus::Terminated(EndReason::Completed),
        config: serde_json::from_value(json!({"x": id})).unwrap(),
        failures: 0,
        launches: 1,
        last: None,
        best: Some((value, 1)),
        error: None,
    };
    for mode in [Mode::Min, Mode::Max] {
        let rows = [
            row(1, f64::NEG_INFINITY),
            row(2, f64::INFINITY),
            row(3, 1e300),
            row(4, f64::NAN),
            row(5, -1e300),
        ];
        let best = best_trial(&rows, mode).map(|t| t.id);
        let expected = if mode == Mode::Min { TrialId(5) } else { TrialId(3) };
        assert_eq!(best, Some(expected), "{mode}");
    }
    // With nothing finite, the first trial stands (all rank equally worst).
    let rows = [row(1, f64::NAN), row(2, f64::NEG_INFINITY), row(3, f64::INFINITY)];
    assert_eq!(best_trial(&rows, Mode::Min).map(|t| t.id), Some(TrialId(1)));
}

#[test]
fn keep_policy_ranks_infinite_checkpoints_worst() {
    let mut c = started(ControllerConfig {
        checkpoint_keep: Some(1),
        ..config()
    });
    let mut deleted = Vec::new();
    for (step, loss) in [(1, 0.5), (2, f64::NEG_INFINITY), (3, 0.7)] {
        let commands = c.handle(&reported(1, step, loss, Some(&format!("/ck/{step}"))), T0);
        deleted.extend(commands.into_iter().filter_map(|c| match c {
            Command::DeleteCheckpoint { path, .. } => Some(path),
            _ => None,
        }));
    }
    // Kept: the best (step 1) and the latest (step 3); the -inf one is the worst, not the best.
    assert_eq!(deleted, ["/ck/2"]);
}

#[test]
fn too_many_failed_trials_end_the_sweep() {
    let mut c = started(ControllerConfig {
        max_failures: 0,
        max_failed_trials: Some(1),
        max_trials: None,
        ..config()
    });
    let commands = c.handle(&failed(1, "boom"), T0);
    assert!(commands.contains(&Command::Stop { trial: TrialId(2) }));
    let end = c.handle(&exit(2, Outcome::Success), T0);
    assert!(matches!(
        end.last(),
        Some(Command::Finished(Summary {
            cause: EndCause::TooManyFailures,
            ..
        }))
    ));
}

/// What a [`Scripted`] scheduler does next; the test keeps a handle to change it.
#[derive(Default)]
struct Script {
    resume: Option<TrialId>,
    stop: Vec<TrialId>,
    exploit: Option<(TrialId, TrialId)>,
    no_more: bool,
}

/// A scheduler driven by a script: pauses at step 2, then resumes, stops or exploits as told.
struct Scripted(std::sync::Arc<std::sync::Mutex<Script>>);

impl Scheduler for Scripted {
    fn on_result(&mut self, _trial: TrialId, result: &TrialReport<'_>) -> Decision {
        if result.report.step == 2 {
            Decision::Pause
        } else {
            Decision::Continue
        }
    }
    fn choose_trial_to_resume(&mut self, resumable: &BTreeSet<TrialId>) -> Option<TrialId> {
        let mut script = self.0.lock().unwrap();
        let trial = script.resume.filter(|t| resumable.contains(t))?;
        script.resume = None;
        Some(trial)
    }
    fn take_trials_to_stop(&mut self) -> Vec<TrialId> {
        std::mem::take(&mut self.0.lock().unwrap().stop)
    }
    fn take_exploit(&mut self, trial: TrialId) -> Option<crate::scheduler::Exploit> {
        let (recipient, donor) = self.0.lock().unwrap().exploit?;
        (recipient == trial).then(|| crate::scheduler::Exploit {
            donor,
            config: serde_json::from_value(json!({"x": 100})).unwrap(),
        })
    }
    fn on_no_more_trials(&mut self) {
        self.0.lock().unwrap().no_more = true;
    }
}

fn scripted(config: ControllerConfig, script: Script) -> (Controller, std::sync::Arc<std::sync::Mutex<Script>>) {
    let script = std::sync::Arc::new(std::sync::Mutex::new(script));
    (
        Controller::new(config, Box::new(Counting), Box::new(Scripted(script.clone()))),
        script,
    )
}

fn checkpointed(trial: u64, step: u64, loss: f64) -> Event {
    reported(trial, step, loss, Some(&format!("/ck/{trial}/{step}")))
}

#[test]
fn paused_trials_are_resumed_or_stopped_as_the_scheduler_says() {
    let (mut c, script) = scripted(
        ControllerConfig {
            max_trials: Some(3),
            max_concurrent: 2,
            ..config()
        },
        Script::default(),
    );
    c.handle(&Event::Start, T0);
    c.handle(&checkpointed(1, 1, 0.5), T0);
    assert_eq!(decision(&c.handle(&checkpointed(1, 2, 0.4), T0)), Some(Decision::Pause));
    assert_eq!(c.status(TrialId(1)), Some(TrialStatus::Paused));
    // Its process exits: the slot goes to a new trial, t1 waits to be resumed.
    assert_eq!(launches(&c.handle(&exit(1, Outcome::Success), T0)), [(3, 0, None)]);
    script.lock().unwrap().resume = Some(TrialId(1));
    c.handle(&checkpointed(2, 1, 0.9), T0);
    c.handle(&checkpointed(2, 2, 0.9), T0); // t2 pauses too
    assert!(script.lock().unwrap().no_more, "told once all 3 trials exist");
    let resumed = c.handle(&exit(2, Outcome::Success), T0);
    assert_eq!(
        launches(&resumed),
        [(1, 1, Some(2))],
        "t1 resumes from its step-2 checkpoint"
    );
    script.lock().unwrap().stop = vec![TrialId(2)];
    c.handle(&Event::Tick, T0);
    assert_eq!(c.status(TrialId(2)), terminated(EndReason::StoppedEarly));
}

#[test]
fn an_exploited_trial_restarts_with_the_new_config_from_the_donor_checkpoint() {
    let cfg = ControllerConfig {
        max_trials: Some(2),
        max_concurrent: 2,
        checkpoint_keep: Some(1),
        ..config()
    };
    let (mut c, _script) = scripted(
        cfg,
        Script {
            exploit: Some((TrialId(2), TrialId(1))),
            ..Script::default()
        },
    );
    c.handle(&Event::Start, T0);
    c.handle(&checkpointed(1, 1, 0.3), T0);
    c.handle(&checkpointed(2, 1, 0.9), T0);
    let paused = c.handle(&checkpointed(2, 2, 0.9), T0);
    assert_eq!(decision(&paused), Some(Decision::Pause));
    assert!(
        paused
            .iter()
            .any(|c| matches!(c, Command::Persist(Record::TrialConfig { trial, .. }) if *trial == TrialId(2)))
    );
    // The donor checkpoints again; its step-1 checkpoint is pinned, so it survives keep = 1.
    let donor = c.handle(&checkpointed(1, 3, 0.2), T0);
    assert!(
        !donor
            .iter()
            .any(|c| matches!(c, Command::DeleteCheckpoint { path, .. } if path == "/ck/1/1"))
    );
    let relaunch = c.handle(&exit(2, Outcome::Success), T0);
    let Some(Command::Launch(launch)) = relaunch.iter().find(|c| matches!(c, Command::Launch(_))) else {
        panic!("{relaunch:?}")
    };
    assert_eq!((launch.trial, launch.config.get("x")), (TrialId(2), Some(&json!(100))));
    assert_eq!(launch.restore.as_ref().map(|r| r.path.as_str()), Some("/ck/1/1"));
    // Once t2 reports, the pin is gone and the next keep pass may delete it.
    c.handle(&checkpointed(2, 3, 0.5), T0);
    let later = c.handle(&checkpointed(1, 4, 0.15), T0);
    assert!(
        later
            .iter()
            .any(|c| matches!(c, Command::DeleteCheckpoint { path, .. } if path == "/ck/1/1")),
        "{later:?}"
    );
}

#[test]
fn same_events_same_commands() {
    let events = [
        Event::Start,
        report(1, 1, 0.3),
        report(2, 1, 0.7),
        exit(2, Outcome::Success),
        exit(1, Outcome::Success),
    ];
    let run = || {
        let mut c = controller(config());
        events.iter().map(|e| c.handle(e, T0)).collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}
