//! The simulator: a sweep against a built-in workload in virtual time.
//!
//! The real controller, searcher, scheduler and store run; only the trials are simulated. A
//! discrete-event queue stands in for the processes: launching a trial schedules its first
//! report after the workload's start-up cost, each report is handed to the controller at its
//! virtual time, and the answer schedules the next step (or the trial's exit). Nothing sleeps
//! and no process starts, so 10,000 trials take seconds, and the same spec and seed give the
//! same events in the same order — byte-identical `rung export` output.
//!
//! Workloads: `learning-curve` (`shared/workloads/README.md`): the loss of step t of a config,
//! one step costing `0.5 + 0.1·layers` virtual seconds plus 2 s of start-up per launch.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use tune_core::controller::{Command, Event, Outcome, Progress, Summary};
use tune_core::trial::{Report, TrialId};
use tune_runtime::store::{Batch, LoggedEvent, Store};

use crate::error::{Error, Result};
use crate::spec::Spec;
use crate::workloads::LearningCurve;

/// The workloads `[trial] simulate` can name.
pub const WORKLOADS: [&str; 1] = ["learning-curve"];

/// Steps of a `learning-curve` trial.
pub const LEARNING_CURVE_STEPS: u64 = 81;

/// Virtual start-up cost of a launch, in milliseconds.
const STARTUP_MS: u64 = 2_000;

/// Events committed per transaction.
const COMMIT_EVERY: usize = 4_096;

/// What a simulation ended with.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The experiment's name in the store.
    pub experiment: String,
    /// How the sweep ended.
    pub summary: Summary,
    /// The virtual wall-clock time the sweep took.
    pub virtual_time: Duration,
    /// Reports handled.
    pub reports: u64,
    /// Events handled.
    pub events: u64,
    /// The configuration of the best trial.
    pub best_config: Option<tune_core::value::Config>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// The trial's next report. Ordered before exits at the same time (seq breaks ties anyway).
    Report {
        trial: TrialId,
        launch: u32,
        step: u64,
    },
    Exit {
        trial: TrialId,
        launch: u32,
    },
}

struct Running {
    curve: LearningCurve,
    launch: u32,
}

/// Runs `spec` in virtual time with `workers` trials at once, storing everything in `store`.
/// `observer` sees every event with the commands it caused (tests use it to check replay);
/// when it answers `Break`, the sweep is ended there (a logged `StopSweep`).
pub fn simulate(
    spec: &Spec,
    store_path: &Path,
    workers: usize,
    mut observer: impl FnMut(&Event, &[Command]) -> ControlFlow<()>,
) -> Result<Simulation> {
    let workload = spec.trial.simulate.as_deref().ok_or_else(|| {
        Error::Usage("the spec has no [trial] simulate = \"learning-curve\": nothing to simulate".into())
    })?;
    if workload != "learning-curve" {
        return Err(Error::setting(
            "trial.simulate",
            format!("unknown workload \"{workload}\" (known: {})", WORKLOADS.join(", ")),
        ));
    }
    let mut spec = spec.clone();
    spec.max_concurrent = Some(workers.max(1));
    spec.resolve_defaults();
    spec.validate()?;
    let checkpoints = spec.scheduler.pauses_trials();
    if checkpoints && spec.trial.checkpoint_keep.is_none() {
        // Simulated trials checkpoint every step; keep memory and the store small.
        spec.trial.checkpoint_keep = Some(1);
    }
    let seed = spec.seed.expect("resolved");
    let mut store = Store::open_or_create(store_path)?;
    if let Some(name) = &spec.searcher.warm_start {
        spec.searcher.warm_trials = crate::tuner::warm_trials(&store, name, &spec)?;
    }
    let json = serde_json::to_string(&spec).expect("a spec always serializes");
    let experiment = store.create_experiment(&spec.name, &json, seed)?;
    let mut controller = crate::tuner::controller_for(&spec, seed)?;

    let mut queue: BinaryHeap<Reverse<(u64, u64, Due)>> = BinaryHeap::new();
    let mut next_seq = 0u64;
    let mut push = |queue: &mut BinaryHeap<_>, at: u64, due: Due| {
        next_seq += 1;
        queue.push(Reverse((at, next_seq, due)));
    };
    let mut running: HashMap<TrialId, Running> = HashMap::new();
    let mut batch = Batch::default();
    let mut log_seq = 0u64;
    let (mut reports, mut events) = (0u64, 0u64);
    let mut pending: Vec<(u64, Event)> = vec![(0, Event::Start)];
    let mut summary = None;
    let mut now = 0u64;
    let mut stop_requested = false;
    let mut stop_at = None;

    loop {
        for (at, event) in pending.drain(..) {
            let commands = controller.handle(&event, Duration::from_millis(at));
            if observer(&event, &commands).is_break() && !stop_requested {
                stop_requested = true;
                stop_at = Some(at);
            }
            events += 1;
            let answered_step = match &event {
                Event::Reported { trial, report, .. } => Some((*trial, report.step)),
                _ => None,
            };
            log_seq += 1;
            batch.events.push(LoggedEvent {
                seq: log_seq,
                at_ms: at,
                event,
            });
            for command in commands {
                match command {
                    Command::Persist(record) => batch.records.push(record),
                    Command::Launch(launch) => {
                        let curve = LearningCurve::from_config(&launch.config).ok_or_else(|| {
                            Error::Usage(format!(
                                "the learning-curve workload needs lr, batch, layers and dropout; {} has {}",
                                launch.trial,
                                launch.config.to_json()
                            ))
                        })?;
                        let step = launch.restore.as_ref().map_or(0, |r| r.step) + 1;
                        let cost = step_cost_ms(&curve);
                        push(
                            &mut queue,
                            at + STARTUP_MS + cost,
                            Due::Report {
                                trial: launch.trial,
                                launch: launch.attempt,
                                step,
                            },
                        );
                        running.insert(
                            launch.trial,
                            Running {
                                curve,
                                launch: launch.attempt,
                            },
                        );
                    }
                    Command::Respond { trial, step, decision } => {
                        debug_assert_eq!(answered_step, Some((trial, step)));
                        let Some(run) = running.get(&trial) else { continue };
                        if decision == tune_core::trial::Decision::Continue && step < LEARNING_CURVE_STEPS {
                            let due = Due::Report {
                                trial,
                                launch: run.launch,
                                step: step + 1,
                            };
                            push(&mut queue, at + step_cost_ms(&run.curve), due);
                        } else {
                            push(&mut queue, at, exit_of(trial, run));
                        }
                    }
                    Command::Stop { trial } => {
                        if let Some(run) = running.get(&trial) {
                            push(&mut queue, at, exit_of(trial, run));
                        }
                    }
                    Command::DeleteCheckpoint { .. } => {}
                    Command::Finished(end) => summary = Some(end),
                }
            }
        }
        if let Some(at) = stop_at.take() {
            pending.push((at, Event::StopSweep));
            continue;
        }
        if batch.events.len() >= COMMIT_EVERY || summary.is_some() {
            store.commit(experiment.id, &std::mem::take(&mut batch), spec.durability.flush())?;
        }
        if let Some(summary) = summary {
            let trials = store.trials(experiment.id)?;
            let best_config = crate::tuner::best_trial(&trials, spec.mode).map(|t| t.config.clone());
            return Ok(Simulation {
                experiment: experiment.name,
                summary,
                virtual_time: Duration::from_millis(now),
                reports,
                events,
                best_config,
            });
        }
        let Some(Reverse((at, _, due))) = queue.pop() else {
            return Err(Error::Internal(
                "the simulation ran out of events before the sweep finished".into(),
            ));
        };
        now = at;
        match due {
            Due::Report { trial, launch, step } => {
                let Some(run) = running.get(&trial).filter(|r| r.launch == launch) else {
                    continue;
                };
                reports += 1;
                let report = Report {
                    step,
                    metrics: [("loss".to_owned(), run.curve.loss(step))].into(),
                };
                let checkpoint = checkpoints.then(|| format!("sim://{}/{trial}/step_{step}", experiment.name));
                pending.push((
                    at,
                    Event::Reported {
                        trial,
                        report,
                        checkpoint,
                    },
                ));
            }
            Due::Exit { trial, launch } => {
                if running.get(&trial).is_some_and(|r| r.launch == launch) {
                    running.remove(&trial);
                    pending.push((
                        at,
                        Event::Exited {
                            trial,
                            outcome: Outcome::Success,
                        },
                    ));
                }
            }
        }
    }
}

/// The exit of `trial`'s current launch: what a stop, or its last step, makes due.
fn exit_of(trial: TrialId, run: &Running) -> Due {
    Due::Exit {
        trial,
        launch: run.launch,
    }
}

fn step_cost_ms(curve: &LearningCurve) -> u64 {
    500 + 100 * curve.layers
}

/// A one-line description of a simulation's progress counts.
pub fn describe(progress: &Progress) -> String {
    format!(
        "{} trials: {} completed, {} stopped early, {} ended with the sweep, {} errored",
        progress.created, progress.completed, progress.stopped, progress.sweep_ended, progress.errored
    )
}
