//! Tests of the GP searcher: where its suggestions land, its robustness, and the gradients
//! of the two objectives it minimises.

use rand::Rng;
use serde_json::json;
use tune_core::space::Domain;

use super::acquisition::log_h;
use super::*;
use crate::numerics::{LN_SQRT_2PI, normal_cdf};
use crate::test_support::{self, config_of, float};
use crate::{AskTell, SearcherConfig};

fn gp(n_startup_trials: i64) -> SearcherConfig {
    SearcherConfig::Gp(GpConfig {
        n_startup_trials,
        restarts: 3,
        acquisition_starts: 8,
    })
}

/// Branin at a configuration's `x1` and `x2`.
fn branin(config: &Config) -> f64 {
    test_support::branin(float(config, "x1"), float(config, "x2"))
}

fn branin_space() -> Space {
    Space::from_json(&json!({"x1": {"uniform": [-5, 10]}, "x2": {"uniform": [0, 15]}})).unwrap()
}

fn run(
    config: &SearcherConfig,
    space: &Space,
    seed: u64,
    trials: usize,
    f: impl Fn(&Config) -> f64,
) -> (f64, Vec<Config>) {
    let mut search = AskTell::new(config, space, Mode::Min, seed).unwrap();
    let mut configs = Vec::new();
    for _ in 0..trials {
        let (trial, config) = search.ask().unwrap().expect("gp never runs out");
        assert!(space.contains(&config), "{config:?}");
        search.tell(trial, f(&config));
        configs.push(config);
    }
    (search.best().unwrap().1, configs)
}

#[test]
fn finds_branin_minimum_faster_than_random_search() {
    let space = branin_space();
    let mut gp_total = 0.0;
    let mut random_total = 0.0;
    for seed in [1, 2, 3] {
        let config = SearcherConfig::Gp(GpConfig {
            n_startup_trials: 10,
            restarts: 5,
            acquisition_starts: 16,
        });
        let (gp_best, _) = run(&config, &space, seed, 40, branin);
        let (random_best, _) = run(&SearcherConfig::Random {}, &space, seed, 40, branin);
        eprintln!("seed {seed}: gp {gp_best:.4}, random {random_best:.4}");
        assert!(gp_best < 0.6, "seed {seed}: gp best {gp_best}");
        gp_total += gp_best;
        random_total += random_best;
    }
    assert!(gp_total < 0.5 * random_total, "gp {gp_total} vs random {random_total}");
}

#[test]
fn same_seed_and_calls_give_the_same_suggestions() {
    let space = branin_space();
    let (_, first) = run(&gp(4), &space, 9, 12, branin);
    let (_, second) = run(&gp(4), &space, 9, 12, branin);
    assert_eq!(first, second);
    let (_, other) = run(&gp(4), &space, 10, 12, branin);
    assert_ne!(first, other);
}

#[test]
fn startup_points_are_the_sobol_points() {
    let space = branin_space();
    let (_, gp_configs) = run(&gp(5), &space, 4, 5, branin);
    let (_, sobol_configs) = run(
        &SearcherConfig::Sobol(crate::SobolConfig { scramble: true }),
        &space,
        4,
        5,
        branin,
    );
    assert_eq!(gp_configs, sobol_configs);
}

#[test]
fn integer_and_choice_parameters_stay_in_the_space() {
    let space = Space::from_json(&json!({
        "layers": {"randint": [1, 6]},
        "width": {"qrandint": [16, 256, 16]},
        "lr": {"loguniform": [1e-5, 1e-1]},
        "act": {"choice": ["relu", "tanh", "gelu"]},
        "opt": {"choice": [{"name": "sgd", "momentum": {"uniform": [0, 0.99]}}, {"name": "adam"}, "none"]},
        "fixed": 3
    }))
    .unwrap();
    let objective = |c: &Config| {
        let layers = c.get("layers").unwrap().as_f64().unwrap();
        let lr = c.get("lr").unwrap().as_f64().unwrap();
        let act = if c.get("act") == Some(&json!("gelu")) { 0.0 } else { 1.0 };
        let opt = match c.get("opt.name").and_then(|v| v.as_str()) {
            Some("sgd") => (c.get("opt.momentum").unwrap().as_f64().unwrap() - 0.9).abs(),
            Some("adam") => 0.3,
            _ => 1.0,
        };
        (layers - 3.0).powi(2) + (lr.log10() + 3.0).powi(2) + act + opt
    };
    let (best, configs) = run(&gp(6), &space, 5, 30, objective);
    assert!(best < 2.0, "{best}");
    // No configuration is proposed twice.
    for (i, a) in configs.iter().enumerate() {
        assert!(!configs[..i].contains(a), "duplicate {a:?}");
    }
}

#[test]
fn duplicates_failures_and_nan_results_never_panic() {
    // A tiny discrete space: the searcher proposes each of its 4 configurations once, then
    // reports it exhausted.
    let space = Space::from_json(&json!({"a": {"choice": [1, 2]}, "b": {"randint": [0, 2]}})).unwrap();
    let mut search = AskTell::new(&gp(1), &space, Mode::Max, 3).unwrap();
    let mut configs = Vec::new();
    for round in 0..5 {
        let Some((trial, config)) = search.ask().unwrap() else {
            assert_eq!(round, 4, "exhausted after {round} of 4 configurations");
            break;
        };
        assert!(space.contains(&config));
        assert!(!configs.contains(&config), "{config:?} twice");
        configs.push(config.clone());
        match round % 3 {
            0 => search.tell(trial, f64::NAN),
            1 => search.tell_failure(trial),
            _ => search.tell(trial, 1.0),
        }
    }
    // Every result NaN or infinite: constant outputs.
    let space = branin_space();
    for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 5.0] {
        let mut search = AskTell::new(&gp(2), &space, Mode::Min, 4).unwrap();
        for _ in 0..8 {
            let (trial, config) = search.ask().unwrap().unwrap();
            assert!(space.contains(&config));
            search.tell(trial, value);
        }
    }
    // The same configuration told again and again.
    let mut searcher = GpSearch::new(
        &GpConfig {
            n_startup_trials: 1,
            restarts: 2,
            acquisition_starts: 4,
        },
        &space,
        "objective",
        Mode::Min,
        5,
    );
    let config = config_of(searcher.suggest(TrialId(1)).unwrap());
    let report = tune_core::trial::Report {
        step: 1,
        metrics: [("objective".to_owned(), 1.0)].into(),
    };
    for n in 1..=6 {
        searcher.on_trial_complete(
            TrialId(n),
            &TrialResult {
                config: &config,
                last: Some(&report),
                failed: false,
            },
        );
        let Suggestion::Config(next) = searcher.suggest(TrialId(n + 1)).unwrap() else {
            panic!("gp never runs out");
        };
        assert!(space.contains(&next));
    }
}

#[test]
fn zero_and_one_observations_and_an_empty_space() {
    let space = branin_space();
    let mut search = AskTell::new(&gp(1), &space, Mode::Min, 6).unwrap();
    // Nothing told yet: quasi-random points, all different.
    let (first, a) = search.ask().unwrap().unwrap();
    let (_, b) = search.ask().unwrap().unwrap();
    assert_ne!(a, b);
    search.tell(first, 3.0);
    let (_, c) = search.ask().unwrap().unwrap();
    assert!(space.contains(&c));
    let fixed = Space::new().with("k", Domain::fixed(1)).unwrap();
    let mut search = AskTell::new(&gp(1), &fixed, Mode::Min, 6).unwrap();
    let (trial, config) = search.ask().unwrap().unwrap();
    assert_eq!(config.get("k"), Some(&json!(1)));
    search.tell(trial, 1.0);
    // Its one configuration was run: nothing is left to propose.
    assert!(search.ask().unwrap().is_none());
}

#[test]
fn pending_trials_spread_parallel_suggestions() {
    let space = branin_space();
    let mut search = AskTell::new(&gp(5), &space, Mode::Min, 8).unwrap();
    for _ in 0..8 {
        let (trial, config) = search.ask().unwrap().unwrap();
        search.tell(trial, branin(&config));
    }
    // Four suggestions in a row with no result in between: all different, apart.
    let batch: Vec<(f64, f64)> = (0..4)
        .map(|_| {
            let (_, c) = search.ask().unwrap().unwrap();
            (float(&c, "x1"), float(&c, "x2"))
        })
        .collect();
    for i in 0..batch.len() {
        for j in 0..i {
            let distance = ((batch[i].0 - batch[j].0).powi(2) + (batch[i].1 - batch[j].1).powi(2)).sqrt();
            assert!(distance > 1e-3, "{batch:?}");
        }
    }
}

#[test]
fn log_h_is_accurate_and_continuous() {
    for z in [-5.0, -1.0, 0.0, 0.5, 3.0] {
        let direct = (-0.5 * z * z - LN_SQRT_2PI).exp() + z * normal_cdf(z);
        assert!((log_h(z).0 - direct.ln()).abs() < 1e-12, "{z}");
    }
    let (below, ratio_below) = log_h(-20.0 - 1e-9);
    let (above, ratio_above) = log_h(-20.0 + 1e-9);
    // The two sides differ by the slope (about 20) times the 2·10⁻⁹ between them.
    assert!((below + 2e-9 * ratio_below - above).abs() < 1e-10, "{below} {above}");
    assert!((ratio_below - ratio_above).abs() < 1e-6 * ratio_above);
    assert!(log_h(-1e6).0.is_finite() && log_h(-1e6).0 < -1e11);
    // The derivative ratio matches finite differences.
    for z in [-30.0, -8.0, -0.3, 2.0] {
        let step = 1e-6;
        let numeric = (log_h(z + step).0 - log_h(z - step).0) / (2.0 * step);
        assert!((numeric - log_h(z).1).abs() < 1e-5 * numeric.abs().max(1.0), "{z}");
    }
}

fn random_inputs(n: usize, features: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = rng::stream(seed, "test");
    let x: Vec<f64> = (0..n * features).map(|_| rng.random::<f64>()).collect();
    let y: Vec<f64> = (0..n)
        .map(|i| (6.0 * x[i * features]).sin() + x[i * features + 1] * x[i * features + 1])
        .collect();
    (x, standardise(&y))
}

fn check_gradient(f: impl Fn(&[f64]) -> (f64, Vec<f64>), at: &[f64], tolerance: f64) {
    let (_, gradient) = f(at);
    for index in 0..at.len() {
        let step = 1e-6;
        let mut plus = at.to_vec();
        plus[index] += step;
        let mut minus = at.to_vec();
        minus[index] -= step;
        let numeric = (f(&plus).0 - f(&minus).0) / (2.0 * step);
        assert!(
            (numeric - gradient[index]).abs() < tolerance * numeric.abs().max(1.0),
            "component {index}: analytic {} numeric {numeric}",
            gradient[index]
        );
    }
}

#[test]
fn marginal_likelihood_gradient_matches_finite_differences() {
    let space = Space::from_json(&json!({
        "a": {"uniform": [0, 1]}, "b": {"uniform": [0, 1]}, "c": {"choice": [1, 2, 3]}
    }))
    .unwrap();
    let layout = Layout::new(&UnitSpace::new(&space));
    assert_eq!(layout.features, 5);
    let (x, y) = random_inputs(25, 5, 1);
    let objective = Marginal::new(&x, &y, &layout);
    for theta in [objective.defaults(), vec![-1.0, 0.3, 0.8, 0.4, -7.0]] {
        check_gradient(|t| objective.cost(t), &theta, 1e-5);
    }
}

#[test]
fn acquisition_gradient_matches_finite_differences() {
    let space =
        Space::from_json(&json!({"a": {"uniform": [0, 1]}, "b": {"uniform": [0, 1]}, "c": {"uniform": [0, 1]}}))
            .unwrap();
    let layout = Layout::new(&UnitSpace::new(&space));
    let (x, y) = random_inputs(30, 3, 2);
    let hyper = Hyper::from_log(&[-1.0, -0.5, 0.2, 0.0, -6.0], &layout);
    let model = Model::new(x, 3, &y, &hyper).unwrap();
    let best = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let acquisition = Acquisition {
        model: &model,
        layout: &layout,
        best,
    };
    for z in [[0.3, 0.6, 0.2], [0.9, 0.1, 0.5], [0.5, 0.5, 0.5]] {
        check_gradient(|z| acquisition.cost(z), &z, 1e-4);
    }
}

/// Times one model-based suggestion with 100 and 500 observations in 6 dimensions:
/// `cargo test --release -p tune-search -- --ignored --nocapture suggestion_timing`.
#[test]
#[ignore = "timing, run in release by hand"]
fn suggestion_timing() {
    let mut space = Space::new();
    for dim in 0..6 {
        space
            .insert(&format!("x{dim}"), Domain::uniform(0.0, 1.0).unwrap())
            .unwrap();
    }
    for observations in [100u64, 500] {
        let mut searcher = GpSearch::new(
            &GpConfig {
                n_startup_trials: observations as i64,
                restarts: 5,
                acquisition_starts: 16,
            },
            &space,
            "objective",
            Mode::Min,
            1,
        );
        for trial in 1..=observations {
            let Suggestion::Config(config) = searcher.suggest(TrialId(trial)).unwrap() else {
                unreachable!()
            };
            let value: f64 = (0..6)
                .map(|d| {
                    let x = config.get(&format!("x{d}")).unwrap().as_f64().unwrap();
                    (x - 0.3).powi(2) * (d + 1) as f64
                })
                .sum();
            let report = tune_core::trial::Report {
                step: 1,
                metrics: [("objective".to_owned(), value)].into(),
            };
            searcher.on_trial_complete(
                TrialId(trial),
                &TrialResult {
                    config: &config,
                    last: Some(&report),
                    failed: false,
                },
            );
        }
        for round in 0..3 {
            let start = std::time::Instant::now();
            searcher.suggest(TrialId(observations + 1 + round)).unwrap();
            eprintln!(
                "{observations} observations, 6 dims: suggestion {round} took {:.1} ms",
                start.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}
