//! Simulator figures (a benchmark binary, not a test): `cargo bench --bench simulate`.
//!
//! 1. Wall time to simulate 10,000 trials of `learning-curve` with ASHA on 64 workers, and
//!    reports per second through the whole controller with the store on (median of 3 runs).
//! 2. Search quality with 16 simulated workers over 20 seeds: virtual time until some trial's
//!    final loss (step 81) is within 0.01 of the best achievable, for random search with FIFO,
//!    ASHA (stop), ASHA (promote), Hyperband and the median stopping rule — median and IQR.
//!
//! `RUNG_BENCH_SEEDS=N` changes the number of seeds; `RUNG_BENCH_QUICK=1` skips part 1.

use std::ops::ControlFlow;
use std::time::Instant;

use rung::Spec;
use rung::simulate::{LEARNING_CURVE_STEPS, simulate};
use rung::tune_core::controller::Event;
use rung::workloads::{LearningCurve, quantile};

fn spec(scheduler: &str, num_samples: i64, extra: &str) -> Spec {
    Spec::from_toml_str(&format!(
        r#"name = "bench"
metric = "loss"
mode = "min"
num_samples = {num_samples}
{extra}

[space]
lr = {{ loguniform = [1e-5, 1e-1] }}
batch = {{ choice = [16, 32, 64, 128, 256] }}
layers = {{ randint = [1, 8] }}
dropout = {{ uniform = [0.0, 0.5] }}

[scheduler]
{scheduler}

[trial]
simulate = "learning-curve"
"#
    ))
    .expect("a valid spec")
}

/// The lowest final loss (step 81) over the space, by a grid over (lr, dropout) refined twice
/// around the best point, for every batch and layer count.
fn best_achievable() -> f64 {
    let mut best = f64::INFINITY;
    for batch in [16u64, 32, 64, 128, 256] {
        for layers in 1..8u64 {
            let (mut z_lo, mut z_hi, mut d_lo, mut d_hi) = (-5.0f64, -1.0f64, 0.0f64, 0.5f64);
            for _round in 0..3 {
                let (mut best_z, mut best_d, mut local) = (z_lo, d_lo, f64::INFINITY);
                for i in 0..=200 {
                    let z = z_lo + (z_hi - z_lo) * i as f64 / 200.0;
                    for j in 0..=100 {
                        let d = d_lo + (d_hi - d_lo) * j as f64 / 100.0;
                        let loss = LearningCurve {
                            lr: 10f64.powf(z),
                            batch,
                            layers,
                            dropout: d,
                        }
                        .loss(LEARNING_CURVE_STEPS);
                        if loss < local {
                            (best_z, best_d, local) = (z, d, loss);
                        }
                    }
                }
                best = best.min(local);
                let (dz, dd) = ((z_hi - z_lo) / 20.0, (d_hi - d_lo) / 20.0);
                (z_lo, z_hi) = ((best_z - dz).max(-5.0), (best_z + dz).min(-1.0));
                (d_lo, d_hi) = ((best_d - dd).max(0.0), (best_d + dd).min(0.5));
            }
        }
    }
    best
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks harness-less benches to list their tests
    }
    let dir = tempfile::tempdir().unwrap();
    let mut run = 0;
    let mut store = || {
        run += 1;
        dir.path().join(format!("sim{run}.db"))
    };

    if std::env::var_os("RUNG_BENCH_QUICK").is_none() {
        let asha = r#"kind = "asha"
max_t = 81
grace_period = 1
reduction_factor = 3"#;
        let mut walls = Vec::new();
        let mut rates = Vec::new();
        for seed in 0..3 {
            let spec = spec(asha, 10_000, &format!("seed = {seed}"));
            let started = Instant::now();
            let simulation = simulate(&spec, &store(), 64, |_, _| ControlFlow::Continue(())).unwrap();
            let wall = started.elapsed().as_secs_f64();
            walls.push(wall);
            rates.push(simulation.reports as f64 / wall);
            println!(
                "10,000 trials, ASHA stop, 64 workers, seed {seed}: {wall:.2} s wall, {} reports, {:.0} reports/s, {} events, virtual {:.1} h",
                simulation.reports,
                simulation.reports as f64 / wall,
                simulation.events,
                simulation.virtual_time.as_secs_f64() / 3600.0
            );
        }
        walls.sort_by(f64::total_cmp);
        rates.sort_by(f64::total_cmp);
        println!("median: {:.2} s wall, {:.0} reports/s\n", walls[1], rates[1]);
    }

    let best = best_achievable();
    let goal = best + 0.01;
    println!("best achievable final loss {best:.5}; goal: a trial ending at step 81 with loss <= {goal:.5}");
    let seeds: u64 = std::env::var("RUNG_BENCH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let setups = [
        ("random + FIFO", r#"kind = "fifo""#.to_owned()),
        (
            "ASHA stop",
            "kind = \"asha\"\nmax_t = 81\ngrace_period = 1\nreduction_factor = 3".to_owned(),
        ),
        (
            "ASHA promote",
            "kind = \"asha\"\ntype = \"promote\"\nmax_t = 81\ngrace_period = 1\nreduction_factor = 3".to_owned(),
        ),
        (
            "Hyperband",
            "kind = \"hyperband\"\nmax_t = 81\nreduction_factor = 3".to_owned(),
        ),
        (
            "median stopping",
            "kind = \"median\"\ngrace_period = 1\nmin_samples_required = 3".to_owned(),
        ),
    ];
    let mut fifo_median = None;
    println!("| setup | median hours to goal | IQR (hours) | found | speed-up vs FIFO |");
    println!("|---|---|---|---|---|");
    for (name, scheduler) in &setups {
        let mut hours = Vec::new();
        for seed in 0..seeds {
            // Unbounded, with a generous virtual budget; the observer ends the sweep at the goal.
            let spec = spec(scheduler, -1, &format!("seed = {seed}\ntime_budget_s = 3600000"));
            let mut found = None;
            simulate(&spec, &store(), 16, |event, _| {
                if let Event::Reported { report, .. } = event
                    && report.step == LEARNING_CURVE_STEPS
                    && report.metrics["loss"] <= goal
                {
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })
            .map(|simulation| {
                if simulation.summary.cause.label() == "stopped_by_user" {
                    found = Some(simulation.virtual_time.as_secs_f64() / 3600.0);
                }
            })
            .unwrap();
            if let Some(h) = found {
                hours.push(h);
            }
        }
        hours.sort_by(f64::total_cmp);
        if hours.is_empty() {
            println!("| {name} | not found | - | 0/{seeds} | - |");
            continue;
        }
        let median = quantile(&hours, 0.5);
        let (q1, q3) = (quantile(&hours, 0.25), quantile(&hours, 0.75));
        let speedup = fifo_median.map_or_else(|| "1.0x".to_owned(), |f: f64| format!("{:.1}x", f / median));
        if fifo_median.is_none() {
            fifo_median = Some(median);
        }
        println!(
            "| {name} | {median:.2} | {q1:.2}–{q3:.2} | {}/{seeds} | {speedup} |",
            hours.len()
        );
    }
}
