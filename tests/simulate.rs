//! The simulator: deterministic virtual-time sweeps, and replay of their logs reproducing the
//! uninterrupted run at every point (what makes resume exact, for every scheduler).

mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use common::{Sandbox, stdout};
use rung::Spec;
use rung::tune_core::controller::{Command, Record};
use rung::tune_runtime::store::Store;
use rung::tuner::controller_for;

fn spec(scheduler: &str, num_samples: u64) -> String {
    spec_with("kind = \"random\"", scheduler, num_samples)
}

fn spec_with(searcher: &str, scheduler: &str, num_samples: u64) -> String {
    format!(
        r#"name = "sim"
metric = "loss"
mode = "min"
num_samples = {num_samples}
seed = 3

[space]
lr = {{ loguniform = [1e-5, 1e-1] }}
batch = {{ choice = [16, 32, 64, 128, 256] }}
layers = {{ randint = [1, 8] }}
dropout = {{ uniform = [0.0, 0.5] }}

[searcher]
{searcher}

[scheduler]
{scheduler}

[trial]
simulate = "learning-curve"
"#
    )
}

fn digest(value: &impl std::fmt::Debug) -> u64 {
    let mut hasher = DefaultHasher::new();
    format!("{value:?}").hash(&mut hasher);
    hasher.finish()
}

/// Simulates `scheduler`, then replays the stored log through a fresh controller (as a resume
/// does) and checks that it makes exactly the same commands for every event.
fn replay_matches_the_uninterrupted_run(scheduler: &str, num_samples: u64) {
    replay_matches("kind = \"random\"", scheduler, num_samples);
}

fn replay_matches(searcher: &str, scheduler: &str, num_samples: u64) {
    let sandbox = Sandbox::new();
    let spec = Spec::from_toml_str(&spec_with(searcher, scheduler, num_samples)).unwrap();
    let mut original = Vec::new();
    let simulation = rung::simulate::simulate(&spec, &sandbox.path("sim.db"), 8, |_, commands| {
        original.push(digest(&commands));
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(simulation.summary.progress.created, num_samples);

    let store = Store::open(&sandbox.path("sim.db")).unwrap();
    let info = store.experiment(None).unwrap();
    let stored: Spec = serde_json::from_str(&info.spec).unwrap();
    let mut replayed = controller_for(&stored, info.seed).unwrap();
    let events = store.events(info.id).unwrap();
    assert_eq!(events.len(), original.len());
    for (index, logged) in events.iter().enumerate() {
        let commands = replayed.handle(&logged.event, Duration::from_millis(logged.at_ms));
        assert_eq!(
            digest(&commands),
            original[index],
            "{scheduler}: replay diverged at event {} ({:?})",
            logged.seq,
            logged.event
        );
    }
    assert!(replayed.is_finished());
}

#[test]
fn replay_reproduces_fifo_exactly() {
    let _deadline = common::deadline(Duration::from_secs(300));
    replay_matches_the_uninterrupted_run("kind = \"fifo\"", 40);
}

#[test]
fn replay_reproduces_asha_stop_exactly() {
    let _deadline = common::deadline(Duration::from_secs(300));
    replay_matches_the_uninterrupted_run(
        "kind = \"asha\"\nmax_t = 81\ngrace_period = 1\nreduction_factor = 3\nbrackets = 3",
        300,
    );
}

#[test]
fn replay_reproduces_asha_promote_exactly() {
    let _deadline = common::deadline(Duration::from_secs(300));
    replay_matches_the_uninterrupted_run(
        "kind = \"asha\"\ntype = \"promote\"\nmax_t = 81\ngrace_period = 1\nreduction_factor = 3",
        200,
    );
}

#[test]
fn replay_reproduces_hyperband_exactly() {
    let _deadline = common::deadline(Duration::from_secs(300));
    replay_matches_the_uninterrupted_run("kind = \"hyperband\"\nmax_t = 81\nreduction_factor = 3", 200);
}

#[test]
fn replay_reproduces_median_stopping_exactly() {
    let _deadline = common::deadline(Duration::from_secs(300));
    replay_matches_the_uninterrupted_run("kind = \"median\"\ngrace_period = 3\nmin_samples_required = 3", 100);
}

#[test]
fn replay_reproduces_pbt_exactly() {
    let _deadline = common::deadline(Duration::from_secs(300));
    replay_matches_the_uninterrupted_run("kind = \"pbt\"\nperturbation_interval = 9", 24);
}

#[test]
fn replay_reproduces_model_based_searchers_exactly() {
    let _deadline = common::deadline(Duration::from_secs(300));
    let asha = "kind = \"asha\"\nmax_t = 81\ngrace_period = 1\nreduction_factor = 3";
    replay_matches("kind = \"tpe\"\nconstant_liar = true", asha, 60);
    replay_matches("kind = \"gp\"", asha, 30);
    replay_matches("kind = \"sobol\"", asha, 30);
    replay_matches(
        "kind = \"bohb\"",
        "kind = \"hyperband\"\nmax_t = 81\nreduction_factor = 3",
        60,
    );
}

#[test]
fn early_stopping_saves_most_of_the_work_and_pbt_exploits() {
    let _deadline = common::deadline(Duration::from_secs(300));
    let sandbox = Sandbox::new();
    let run = |scheduler: &str, n| {
        let spec = Spec::from_toml_str(&spec(scheduler, n)).unwrap();
        let db = sandbox.path(&format!("{}.db", digest(&scheduler)));
        rung::simulate::simulate(&spec, &db, 8, |_, _| std::ops::ControlFlow::Continue(())).unwrap()
    };
    let fifo = run("kind = \"fifo\"", 100);
    let asha = run(
        "kind = \"asha\"\nmax_t = 81\ngrace_period = 1\nreduction_factor = 3",
        100,
    );
    assert_eq!(fifo.reports, 100 * 81);
    assert!(
        asha.reports * 3 < fifo.reports,
        "ASHA should stop most trials early: {} vs {}",
        asha.reports,
        fifo.reports
    );
    assert!(asha.summary.progress.stopped > 50);
    assert!(asha.virtual_time * 2 < fifo.virtual_time);
    // PBT: count what the controller commands, not process exits. An exploit gives a paused
    // trial a new config (a `TrialConfig` record) and relaunches it from the donor's checkpoint.
    let pbt_spec = Spec::from_toml_str(&spec("kind = \"pbt\"\nperturbation_interval = 9", 16)).unwrap();
    let mut explored = std::collections::BTreeSet::new();
    let mut restored_from_a_donor = 0;
    let pbt = rung::simulate::simulate(&pbt_spec, &sandbox.path("pbt.db"), 8, |_, commands| {
        for command in commands {
            match command {
                Command::Persist(Record::TrialConfig { trial, .. }) => {
                    explored.insert(*trial);
                }
                Command::Launch(launch) if explored.contains(&launch.trial) => {
                    let restore = launch
                        .restore
                        .as_ref()
                        .expect("an exploited trial restores a checkpoint");
                    let own = format!("/{}/", launch.trial);
                    if !restore.path.contains(&own) {
                        restored_from_a_donor += 1;
                    }
                }
                _ => {}
            }
        }
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert!(explored.len() >= 2, "PBT exploited {} trials", explored.len());
    assert!(
        restored_from_a_donor >= explored.len(),
        "every exploited trial restarts from another trial's checkpoint: {restored_from_a_donor} of {}",
        explored.len()
    );
    assert_eq!(pbt.summary.progress.created, 16);
}

#[test]
fn the_same_spec_and_seed_give_byte_identical_exports() {
    let _deadline = common::deadline(Duration::from_secs(300));
    let sandbox = Sandbox::new();
    sandbox.write("sim.toml", &spec("kind = \"fifo\"", 30));
    let mut exports = Vec::new();
    for db in ["a.db", "b.db"] {
        let run = sandbox.rung(&["simulate", "sim.toml", "--workers", "4", "--db", db]);
        assert!(run.status.success(), "{}", stdout(&run));
        assert!(stdout(&run).contains("virtual time"), "{}", stdout(&run));
        exports.push(sandbox.rung(&["export", "--db", db, "--format", "json"]).stdout);
    }
    assert_eq!(exports[0], exports[1]);
    let other = sandbox.rung(&["simulate", "sim.toml", "--workers", "4", "--db", "c.db", "--seed", "4"]);
    assert!(other.status.success());
    assert_ne!(
        exports[0],
        sandbox.rung(&["export", "--db", "c.db", "--format", "json"]).stdout
    );
}

#[test]
fn simulate_refuses_specs_without_a_workload_and_run_refuses_simulated_specs() {
    let _deadline = common::deadline(Duration::from_secs(300));
    let sandbox = Sandbox::new();
    sandbox.write("sim.toml", &spec("kind = \"fifo\"", 3));
    let run = sandbox.rung(&["run", "sim.toml"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        common::stderr(&run).contains("its trials are simulated"),
        "{}",
        common::stderr(&run)
    );
    sandbox.write(
        "bad.toml",
        &spec("kind = \"fifo\"", 3).replace("learning-curve", "mnist"),
    );
    let bad = sandbox.rung(&["simulate", "bad.toml"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        common::stderr(&bad).contains("unknown workload \"mnist\" (known: learning-curve)"),
        "{}",
        common::stderr(&bad)
    );
}

#[test]
fn every_example_spec_is_valid() {
    let _deadline = common::deadline(Duration::from_secs(300));
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut specs: Vec<_> = std::fs::read_dir(examples.join("simulate"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    specs.push(examples.join("quickstart.toml"));
    assert!(specs.len() >= 7, "{specs:?}");
    for path in specs {
        Spec::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
