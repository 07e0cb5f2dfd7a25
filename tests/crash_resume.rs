//! The crash test: `kill -9` the controller in the middle of a sweep, several times, resume,
//! and check that nothing was lost, nothing ran twice, and interrupted trials restarted from
//! their checkpoints.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, Snapshot, snapshot, stderr, stdout, wait_for_store};
use rung::tune_core::controller::{Event, Outcome};
use rung::tune_core::trial::TrialId;

const TRIALS: u64 = 8;
const STEPS: u64 = 15;

/// Processes whose command line mentions `marker`.
fn processes_mentioning(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(cmdline);
            }
        }
    }
    found
}

fn spawn(sandbox: &Sandbox, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rung"))
        .args(args)
        .current_dir(sandbox.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_sweep_killed_with_sigkill_resumes_exactly() {
    // The default level, with the keep policy deleting checkpoints as the sweep goes: each
    // deletion waits for an fsynced commit, so a kill never leaves the store pointing at a
    // deleted checkpoint.
    killed_three_times_resumes_exactly("process", "checkpoint_keep = 1");
}

#[test]
fn a_sweep_killed_with_sigkill_resumes_exactly_at_durability_power() {
    killed_three_times_resumes_exactly("power", "");
}

/// Runs a sweep at `durability` (`extra_trial` added to its `[trial]` table), kills it with
/// SIGKILL three times mid-run, resumes it to its end and checks the store against what each
/// kill left.
fn killed_three_times_resumes_exactly(durability: &str, extra_trial: &str) {
    let _deadline = common::deadline(Duration::from_secs(300));
    let sandbox = Sandbox::new();
    let script = sandbox.path("trials/learning_curve.py").display().to_string();
    let spec = common::learning_curve_spec(
        &format!("num_samples = {TRIALS}\nmax_concurrent = 3\ndurability = \"{durability}\""),
        &[
            "--steps",
            &STEPS.to_string(),
            "--sleep",
            "0.05",
            "--checkpoint-every",
            "3",
        ],
        extra_trial,
    )
    .replace("\"trials/learning_curve.py\"", &format!("\"{script}\""));
    sandbox.write("spec.toml", &spec);

    let mut snapshots: Vec<Snapshot> = Vec::new();
    // Each kill waits for a trial that runs with a committed checkpoint and has at least six
    // steps (0.3 s) still to go, after more trials have ended than at the kill before.
    let kills = [0, 2, 4];
    for (round, ended_before_kill) in kills.iter().enumerate() {
        let args: &[&str] = if round == 0 {
            &["run", "spec.toml", "-q"]
        } else {
            &["resume", "--db", "rung.db", "-q"]
        };
        let reports_before = snapshots.last().map_or(0, |s| s.reports.len());
        let mut child = spawn(&sandbox, args);
        wait_for_store(&sandbox, &mut child, "checkpointed trial mid-run", |s| {
            s.ended.len() >= *ended_before_kill
                && s.reports.len() > reports_before
                && s.running_with_checkpoint.values().any(|&step| step + 6 <= STEPS)
        });
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Trial processes die with their controller.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !processes_mentioning(&script).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            processes_mentioning(&script),
            Vec::<String>::new(),
            "orphaned trials after kill {round}"
        );
        let landed = snapshot(&sandbox);
        assert!(landed.unfinished > 0, "kill {round} landed after the sweep's end");
        assert!(
            !landed.running_with_checkpoint.is_empty(),
            "kill {round} landed while no checkpointed trial ran"
        );
        snapshots.push(landed);
    }

    let last = sandbox.rung(&["resume", "--db", "rung.db", "-q"]);
    assert!(last.status.success(), "{}{}", stdout(&last), stderr(&last));
    assert!(
        stdout(&last).contains("finished (all_trials_done)"),
        "{}",
        stdout(&last)
    );
    let done = snapshot(&sandbox);
    let (store, info) = sandbox.store("rung.db");
    let trials = store.trials(info.id).unwrap();

    // Every trial ran to its end, exactly once, with every step reported exactly once.
    assert_eq!(trials.len() as u64, TRIALS);
    for trial in &trials {
        assert_eq!(trial.status.label(), "completed", "{trial:?}");
        let steps: Vec<u64> = done
            .reports
            .keys()
            .filter(|(t, _)| *t == trial.id)
            .map(|(_, step)| *step)
            .collect();
        assert_eq!(steps, (1..=STEPS).collect::<Vec<_>>(), "{}", trial.id);
    }
    let events = store.events(info.id).unwrap();
    let mut successes = BTreeMap::<TrialId, u32>::new();
    for logged in &events {
        if let Event::Exited {
            trial,
            outcome: Outcome::Success,
        } = &logged.event
        {
            *successes.entry(*trial).or_default() += 1;
        }
    }
    assert!(
        successes.values().all(|&n| n == 1) && successes.len() as u64 == TRIALS,
        "{successes:?}"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "the log has no gap and no duplicate"
    );
    assert_eq!(events.iter().filter(|e| e.event == Event::Resume).count(), kills.len());

    let launches: BTreeMap<TrialId, u32> = trials.iter().map(|t| (t.id, t.launches)).collect();
    let mut restarted_from_checkpoint = BTreeSet::new();
    for (round, snap) in snapshots.iter().enumerate() {
        // Every report committed before a kill is still there, unchanged.
        for (key, value) in &snap.reports {
            assert_eq!(
                done.reports.get(key),
                Some(value),
                "report {key:?} committed before kill {round}"
            );
        }
        // No trial that had ended was ever launched again.
        for (trial, count) in &snap.ended {
            assert_eq!(
                launches[trial], *count,
                "{trial} ended before kill {round} and must not rerun"
            );
        }
        // Trials running at a kill restarted from their newest committed checkpoint.
        for (trial, step) in &snap.running_with_checkpoint {
            let log = std::fs::read_to_string(sandbox.path(&format!("rung_trials/lc/{trial}/trial.log"))).unwrap();
            assert!(
                log.contains(&format!("restoring step {step} from")),
                "{trial} after kill {round}: {log}"
            );
            assert!(
                log.contains(&format!("continuing at step {}", step + 1)),
                "{trial}: {log}"
            );
            restarted_from_checkpoint.insert(*trial);
        }
    }
    assert!(
        !restarted_from_checkpoint.is_empty(),
        "at least one kill should land while a checkpointed trial runs"
    );
    // The store never points at a checkpoint that is gone.
    let checkpoints = store.checkpoints(info.id).unwrap();
    for checkpoint in checkpoints.iter().filter(|c| !c.deleted) {
        assert!(
            std::path::Path::new(&checkpoint.path).is_dir(),
            "the store lists {checkpoint:?}, which is not on disk"
        );
    }
    if !extra_trial.is_empty() {
        assert!(
            checkpoints.iter().any(|c| c.deleted),
            "the keep policy deleted no checkpoint"
        );
    }
}

#[test]
fn ctrl_c_stops_the_sweep_for_now_and_resume_finishes_it() {
    let _deadline = common::deadline(Duration::from_secs(300));
    let sandbox = Sandbox::new();
    sandbox.write(
        "spec.toml",
        &common::learning_curve_spec(
            "num_samples = 4\nmax_concurrent = 2",
            &["--steps", "12", "--sleep", "0.05", "--checkpoint-every", "2"],
            "",
        ),
    );
    // Interrupt while a trial runs with a checkpoint and has at least six steps to go.
    common::interrupt_mid_sweep(&sandbox, "INT", 12);
    let status = common::json(&sandbox.rung(&["status", "--db", "rung.db", "--json"]));
    assert_eq!(status["state"], "unfinished");
    assert!(status["counts"]["running"].as_u64().unwrap() >= 1, "{status}");

    let resumed = sandbox.rung(&["resume", "--db", "rung.db", "-q"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let trials = sandbox.trials("rung.db");
    assert_eq!(trials.len(), 4);
    assert!(
        trials
            .iter()
            .all(|t| t.status.label() == "completed" && t.last.as_ref().unwrap().step == 12)
    );
    assert!(
        trials.iter().any(|t| t.launches == 2),
        "an interrupted trial was relaunched"
    );
}

#[test]
fn a_pausing_scheduler_survives_sigkill_and_resumes() {
    let _deadline = common::deadline(Duration::from_secs(300));
    let sandbox = Sandbox::new();
    let spec = common::learning_curve_spec(
        "num_samples = 9\nmax_concurrent = 3",
        &["--steps", "9", "--sleep", "0.03", "--checkpoint-every", "1"],
        "",
    ) + "\n[scheduler]\nkind = \"asha\"\ntype = \"promote\"\nmax_t = 9\ngrace_period = 1\nreduction_factor = 3\n";
    sandbox.write("spec.toml", &spec);
    let mut child = spawn(&sandbox, &["run", "spec.toml", "-q"]);
    // Kill once the first rung has results from several trials and most are still to run.
    wait_for_store(&sandbox, &mut child, "results at the first rung", |s| {
        s.reports.keys().map(|(trial, _)| trial).collect::<BTreeSet<_>>().len() >= 3 && s.unfinished >= 5
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let before = snapshot(&sandbox);
    assert!(before.unfinished > 0, "the kill landed after the sweep's end");

    let resumed = sandbox.rung(&["resume", "--db", "rung.db", "-q"]);
    assert!(resumed.status.success(), "{}{}", stdout(&resumed), stderr(&resumed));
    let after = snapshot(&sandbox);
    for (key, value) in &before.reports {
        assert_eq!(
            after.reports.get(key),
            Some(value),
            "report {key:?} committed before the kill"
        );
    }
    let trials = sandbox.trials("rung.db");
    assert_eq!(trials.len(), 9);
    for trial in &trials {
        assert!(trial.status.is_final(), "{trial:?}");
        // Each trial's steps are 1..=last with no gap, each stored once.
        let steps: Vec<u64> = after
            .reports
            .keys()
            .filter(|(t, _)| *t == trial.id)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(steps, (1..=steps.len() as u64).collect::<Vec<_>>(), "{}", trial.id);
    }
    // Promotion happened: some trial trained past the first rung after pausing there.
    assert!(
        trials
            .iter()
            .any(|t| t.launches >= 2 && t.last.as_ref().unwrap().step >= 3),
        "{trials:?}"
    );
    // The top rung is reached by at least one trial, which is then stopped there.
    assert!(trials.iter().any(|t| t.last.as_ref().unwrap().step == 9));
}
