//! Search quality (a benchmark binary, not a test): `cargo bench --bench search_quality`.
//!
//! On Branin, Hartmann6, Rosenbrock-4 and the mixed Branin of `shared/workloads/README.md`,
//! 20 seeds each, the regret (best found − minimum) after 25, 50 and 100 sequential evaluations
//! for random, Sobol, TPE and GP search: median and interquartile range. `RUNG_BENCH_SEEDS=N`
//! changes the number of seeds, `RUNG_BENCH_SEARCHERS=tpe,gp` runs only those searchers.

use rung::SearcherConfig;
use rung::tune_core::trial::Mode;
use rung::tune_search::{AskTell, GpConfig, SobolConfig, TpeConfig};
use rung::workloads::{Synthetic, quantile};

const CHECKPOINTS: [usize; 3] = [25, 50, 100];

fn searchers() -> Vec<(&'static str, SearcherConfig)> {
    let tpe: TpeConfig = serde_json::from_str("{}").unwrap();
    let gp: GpConfig = serde_json::from_str("{}").unwrap();
    let sobol: SobolConfig = serde_json::from_str("{}").unwrap();
    let only = std::env::var("RUNG_BENCH_SEARCHERS").ok();
    vec![
        ("random", SearcherConfig::Random {}),
        ("sobol", SearcherConfig::Sobol(sobol)),
        ("tpe", SearcherConfig::Tpe(tpe)),
        ("gp", SearcherConfig::Gp(gp)),
    ]
    .into_iter()
    .filter(|(name, _)| only.as_ref().is_none_or(|only| only.split(',').any(|o| o == *name)))
    .collect()
}

/// Regret after each of the CHECKPOINTS evaluations.
fn run(function: Synthetic, searcher: &SearcherConfig, seed: u64) -> [f64; 3] {
    let space = function.space();
    let mut search = AskTell::new(searcher, &space, Mode::Min, seed).unwrap();
    let mut best = f64::INFINITY;
    let mut out = [0.0; 3];
    for evaluation in 1..=CHECKPOINTS[2] {
        let (trial, config) = search.ask().unwrap().expect("these searchers never run out");
        let value = function.value(&config);
        search.tell(trial, value);
        best = best.min(value);
        if let Some(index) = CHECKPOINTS.iter().position(|&c| c == evaluation) {
            out[index] = (best - function.minimum()).max(0.0);
        }
    }
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seeds: u64 = std::env::var("RUNG_BENCH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!("regret (best − minimum), median [IQR] over {seeds} seeds");
    println!("| function | searcher | after 25 | after 50 | after 100 | seconds |");
    println!("|---|---|---|---|---|---|");
    let mut medians = std::collections::BTreeMap::new();
    for function in Synthetic::ALL {
        for (name, searcher) in searchers() {
            let started = std::time::Instant::now();
            let runs: Vec<[f64; 3]> = (0..seeds).map(|seed| run(function, &searcher, seed)).collect();
            let mut cells = Vec::new();
            for (index, _) in CHECKPOINTS.iter().enumerate() {
                let mut regrets: Vec<f64> = runs.iter().map(|r| r[index]).collect();
                regrets.sort_by(f64::total_cmp);
                let median = quantile(&regrets, 0.5);
                medians.insert((function.name(), name, CHECKPOINTS[index]), median);
                cells.push(format!(
                    "{median:.4} [{:.4}–{:.4}]",
                    quantile(&regrets, 0.25),
                    quantile(&regrets, 0.75)
                ));
            }
            println!(
                "| {} | {name} | {} | {:.1} |",
                function.name(),
                cells.join(" | "),
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!();
    let median = |function: Synthetic, name: &str, at: usize| medians.get(&(function.name(), name, at)).copied();
    for function in Synthetic::ALL {
        let Some(random) = median(function, "random", 100) else {
            break;
        };
        for name in ["tpe", "gp"] {
            if let Some(own) = median(function, name, 100) {
                let verdict = if own < random { "beats" } else { "does NOT beat" };
                println!(
                    "{name} {verdict} random on {} at 100 evaluations ({own:.4} vs {random:.4})",
                    function.name()
                );
            }
        }
    }
}
