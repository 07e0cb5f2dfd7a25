//! The "Trust" findings, end to end: what a trial, a spec or a signal can do to rung is refused
//! or survived.

mod common;

use std::time::Duration;

use common::{Sandbox, stderr, stdout};

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
