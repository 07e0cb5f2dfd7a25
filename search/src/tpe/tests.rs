//! Tests of the TPE searcher as a whole: the split, the estimators it builds, where its
//! suggestions land.

use proptest::prelude::*;
use serde_json::{Value, json};
use tune_core::trial::Metrics;

use super::space::Axis;
use super::*;
use crate::test_support::{arb_space, ask, branin, distinct_or_exhausted, float, tell};
use crate::{AskTell, SearcherConfig};

fn settings(text: &str) -> TpeConfig {
    serde_json::from_str(text).unwrap()
}

fn tpe(text: &str, space: &Space, seed: u64) -> Tpe {
    Tpe::new(&settings(text), space, "loss", Mode::Min, seed)
}

/// Asks for and tells each of `trials` in turn, trial `t` with configuration `c` scoring
/// `loss(t, &c)`.
fn tell_each(tpe: &mut Tpe, trials: std::ops::RangeInclusive<u64>, loss: impl Fn(u64, &Config) -> f64) {
    for trial in trials {
        let config = ask(tpe, trial);
        tell(tpe, trial, &config, loss(trial, &config));
    }
}

fn space(value: Value) -> Space {
    Space::from_json(&value).unwrap()
}

/// The context of a suggestion from `searcher` now, with no estimators built.
fn context_of<'a>(searcher: &'a Tpe, class: &'a [u8], n_good: usize) -> Context<'a> {
    Context::new(
        &searcher.model_space,
        &searcher.observations,
        class,
        n_good,
        searcher.settings,
    )
}

fn good_trials(tpe: &Tpe) -> Vec<u64> {
    let (class, _) = tpe.classify();
    let mut good: Vec<u64> = (0..class.len())
        .filter(|&slot| class[slot] == GOOD)
        .map(|slot| tpe.observations.trials[slot])
        .collect();
    good.sort();
    good
}

#[test]
fn gamma_is_fifteen_percent_capped_at_25_or_the_fixed_fraction() {
    let default: Vec<usize> = [0, 1, 6, 7, 10, 20, 21, 100, 166, 167, 10_000]
        .iter()
        .map(|&n| n_good(None, n))
        .collect();
    assert_eq!(default, [0, 1, 1, 2, 2, 3, 4, 15, 25, 25, 25]);
    assert_eq!(n_good(Some(0.3), 10), 3);
    assert_eq!(n_good(Some(0.25), 10), 3);
    assert_eq!(n_good(Some(0.01), 10), 1);
    assert_eq!(n_good(Some(1.0), 7), 7);
    assert_eq!(n_good(Some(0.5), 0), 0);
}

#[test]
fn the_best_results_are_good_and_failures_never_are() {
    let space = space(json!({"x": {"uniform": [0, 1]}}));
    let mut searcher = tpe(r#"{"n_startup_trials": 100}"#, &space, 1);
    // Trial t has loss |t − 15|: ⌈0.15 · 30⌉ = 5 good, the best five are 13 to 17.
    tell_each(&mut searcher, 1..=30, |trial, _| (trial as f64 - 15.0).abs());
    assert_eq!(good_trials(&searcher), [13, 14, 15, 16, 17]);

    // Maximising with a fixed fraction: the best half of the finite results, and a failure,
    // a NaN and an infinity are bad however many are asked for.
    let mut searcher = Tpe::new(
        &settings(r#"{"n_startup_trials": 100, "gamma": 1.0}"#),
        &space,
        "loss",
        Mode::Max,
        1,
    );
    tell_each(&mut searcher, 1..=6, |trial, _| trial as f64);
    let config = ask(&mut searcher, 7);
    tell(&mut searcher, 7, &config, f64::NAN);
    let config = ask(&mut searcher, 8);
    tell(&mut searcher, 8, &config, f64::INFINITY);
    let config = ask(&mut searcher, 9);
    searcher.on_trial_complete(
        TrialId(9),
        &TrialResult {
            config: &config,
            last: None,
            failed: true,
        },
    );
    assert_eq!(good_trials(&searcher), [1, 2, 3, 4, 5, 6]);
    searcher.settings.gamma = Some(0.5);
    // ⌈0.5 · 9⌉ = 5 of the 9 results; the three non-finite ones rank last.
    assert_eq!(good_trials(&searcher), [2, 3, 4, 5, 6]);
    // The model still works with failures in it.
    searcher.settings.n_startup_trials = 0;
    let config = ask(&mut searcher, 10);
    assert!(space.contains(&config));
}

#[test]
fn a_trial_stopped_early_counts_with_its_latest_intermediate_value() {
    let space = space(json!({"x": {"uniform": [0, 1]}}));
    let mut searcher = tpe(r#"{"n_startup_trials": 100}"#, &space, 1);
    tell_each(&mut searcher, 1..=20, |trial, _| 10.0 + trial as f64);
    let config = ask(&mut searcher, 21);
    for (step, value) in [(1, 9.0), (2, 1.0)] {
        let report = Report {
            step,
            metrics: Metrics::from([("loss".to_owned(), value)]),
        };
        searcher.on_trial_result(TrialId(21), &report);
    }
    let other = Report {
        step: 3,
        metrics: Metrics::from([("accuracy".to_owned(), 0.5)]),
    };
    searcher.on_trial_complete(
        TrialId(21),
        &TrialResult {
            config: &config,
            last: Some(&other),
            failed: false,
        },
    );
    // ⌈0.15 · 21⌉ = 4 good results: trial 21 (loss 1), trials 1 to 3 (losses 11 to 13).
    assert_eq!(good_trials(&searcher), [1, 2, 3, 21]);
}

/// The categorical mixture written out kernel by kernel: each observation's kernel puts
/// `1 + ε` on its own option and `ε` on each (normalised), `ε = prior_weight / (n + 1)`, the
/// prior's is uniform, and the kernels weigh 1 each and `prior_weight` for the prior.
fn kernel_by_kernel(observed: &[usize], options: usize, prior_weight: f64) -> Vec<f64> {
    let epsilon = prior_weight / (observed.len() as f64 + 1.0);
    let mut p = vec![prior_weight / options as f64; options];
    for &own in observed {
        for (option, p) in p.iter_mut().enumerate() {
            let mass = if option == own { 1.0 + epsilon } else { epsilon };
            *p += mass / (1.0 + options as f64 * epsilon);
        }
    }
    let total = observed.len() as f64 + prior_weight;
    p.iter().map(|p| p / total).collect()
}

#[test]
fn categorical_estimators_mix_one_smoothed_kernel_per_observation() {
    let categorical = Categorical::fit(&[3.0, 0.0, 1.0], 1.5);
    let probs: Vec<f64> = categorical.log_probs.iter().map(|p| p.exp()).collect();
    let expected = kernel_by_kernel(&[0, 0, 0, 2], 3, 1.5);
    for (p, expected) in probs.iter().zip(&expected) {
        assert!((p - expected).abs() < 1e-12, "{probs:?} vs {expected:?}");
    }
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    // One good observation among five options (the start-up case of
    // shared/findings/tpe-categorical.md): its option gets 0.31, not the 0.6 of smoothed counts,
    // and every other option 0.17.
    let one = Categorical::fit(&[1.0, 0.0, 0.0, 0.0, 0.0], 1.0);
    let probs: Vec<f64> = one.log_probs.iter().map(|p| p.exp()).collect();
    assert!(
        (probs[0] - (1.0 / 3.5 + 0.5 / 3.5 + 0.2) / 2.0).abs() < 1e-12,
        "{probs:?}"
    );
    assert!((probs[1] - (0.5 / 3.5 + 0.2) / 2.0).abs() < 1e-12, "{probs:?}");
    // Through the searcher: 10 good results all took "b", so the good density favours it
    // but still gives every option its share.
    let space = space(json!({"c": {"choice": ["a", "b", "c", "d"]}, "x": {"uniform": [0, 1]}}));
    let mut searcher = tpe(
        r#"{"n_startup_trials": 100, "gamma": 0.5, "prior_weight": 2.0, "multivariate": false}"#,
        &space,
        3,
    );
    for trial in 1..=20 {
        let mut config = ask(&mut searcher, trial);
        let option = if trial <= 10 { "b" } else { "a" };
        config.0.insert("c".into(), json!(option));
        tell(&mut searcher, trial, &config, trial as f64);
    }
    let (class, n_good) = searcher.classify();
    let context = context_of(&searcher, &class, n_good);
    let model = context.build(0);
    let Estimator::Categorical(_, good) = &model.good else {
        panic!("c is categorical")
    };
    let probs: Vec<f64> = good.log_probs.iter().map(|p| p.exp()).collect();
    let expected = kernel_by_kernel(&[1; 10], 4, 2.0);
    for (p, expected) in probs.iter().zip(&expected) {
        assert!((p - expected).abs() < 1e-12, "{probs:?} vs {expected:?}");
    }
    // Smoothed counts gave "b" 10.5/12 = 0.875 here.
    assert!(probs[1] < 0.65 && probs[0] > 0.125, "{probs:?}");
}

#[test]
fn log_domains_are_modelled_in_log_space() {
    let axis = Axis::new(&Domain::loguniform(1e-5, 1e-1).unwrap()).unwrap();
    assert!((axis.low - 1e-5f64.ln()).abs() < 1e-12 && (axis.high - 1e-1f64.ln()).abs() < 1e-12);
    // The prior is centred on the geometric mean.
    assert!((axis.prior_mu.exp() - 1e-3).abs() < 1e-15);
    let axis = Axis::new(&Domain::lograndint(1, 1024).unwrap()).unwrap();
    assert!((axis.low - 0.5f64.ln()).abs() < 1e-12 && (axis.high - 1023.5f64.ln()).abs() < 1e-12);
    let (a, b) = axis.bin(axis.lattice.unwrap(), 100f64.ln());
    assert!((a - 99.5f64.ln()).abs() < 1e-12 && (b - 100.5f64.ln()).abs() < 1e-12);

    // An optimum at 1e-4: the search concentrates within a decade of it on the log scale,
    // which a model on the linear axis (where all of [1e-5, 1e-3] is one bandwidth) cannot.
    let space = space(json!({"lr": {"loguniform": [1e-5, 1e-1]}}));
    let mut searcher = tpe("{}", &space, 5);
    let mut late = Vec::new();
    for trial in 1..=60 {
        let config = ask(&mut searcher, trial);
        let lr = float(&config, "lr");
        if trial > 40 {
            late.push(lr.log10());
        }
        tell(&mut searcher, trial, &config, (lr.log10() + 4.0).powi(2));
    }
    late.sort_by(f64::total_cmp);
    let median = late[late.len() / 2];
    assert!((median + 4.0).abs() < 0.5, "median log10(lr) {median}: {late:?}");
}

#[test]
fn integers_and_quantized_values_stay_on_their_grid() {
    let space = space(json!({
        "a": {"randint": [-3, 4]}, "b": {"qrandint": [-10, 40, 5]}, "c": {"lograndint": [1, 1000]},
        "d": {"quniform": [0.05, 2.0, 0.1]}, "e": {"qloguniform": [0.01, 10.0, 0.01]},
        "f": {"qrandint": [2, 3, 2]}
    }));
    for multivariate in [false, true] {
        let mut searcher = tpe(
            &format!(r#"{{"n_startup_trials": 5, "multivariate": {multivariate}}}"#),
            &space,
            7,
        );
        let mut seen_b = std::collections::BTreeSet::new();
        for trial in 1..=80 {
            let config = ask(&mut searcher, trial);
            assert!(space.contains(&config), "{config:?}");
            let a = config.get("a").unwrap().as_i64().unwrap();
            let b = config.get("b").unwrap().as_i64().unwrap();
            let d = float(&config, "d");
            let e = float(&config, "e");
            assert!((-3..4).contains(&a) && b % 5 == 0 && (-10..=40).contains(&b));
            assert!(((d / 0.1).round() * 0.1 - d).abs() < 1e-12 && (0.1..=2.0).contains(&d));
            assert!(((e / 0.01).round() * 0.01 - e).abs() < 1e-12 && (0.01..=10.0).contains(&e));
            assert_eq!(config.get("f"), Some(&json!(2)));
            seen_b.insert(b);
            let loss = (a as f64 - 1.0).powi(2) + (b as f64 - 20.0).abs() + d;
            tell(&mut searcher, trial, &config, loss);
        }
        // The grid ends are reachable.
        assert!(seen_b.contains(&-10) || seen_b.contains(&40), "{seen_b:?}");
    }
    // A discrete estimator is a distribution over the grid: the bin masses sum to one.
    let axis = Axis::new(&Domain::randint(0, 7).unwrap()).unwrap();
    let mixture = Mixture::fit(&axis, &[1.0, 1.0, 2.0, 6.0], 1.0, 1.0);
    let total: f64 = (0..7)
        .map(|v| {
            let (a, b) = axis.bin(axis.lattice.unwrap(), v as f64);
            mixture.log_mass(a, b).exp()
        })
        .sum();
    assert!((total - 1.0).abs() < 1e-12, "{total}");
}

fn optimizer_space() -> Space {
    space(json!({
        "optimizer": {"choice": [
            {"name": "sgd", "momentum": {"uniform": [0.0, 1.0]}},
            {"name": "adam", "beta1": {"uniform": [0.8, 0.99]}}
        ]},
        "lr": {"loguniform": [1e-4, 1.0]}
    }))
}

#[test]
fn conditional_parameters_are_modelled_only_where_present() {
    let space = optimizer_space();
    for multivariate in [false, true] {
        let mut searcher = tpe(
            &format!(r#"{{"n_startup_trials": 20, "multivariate": {multivariate}}}"#),
            &space,
            11,
        );
        let loss = |config: &Config| match config.get("optimizer.name").and_then(Value::as_str) {
            Some("sgd") => (float(config, "optimizer.momentum") - 0.9).abs(),
            _ => 1.0 + float(config, "optimizer.beta1"),
        };
        let mut sgd = 0;
        for trial in 1..=20 {
            let config = ask(&mut searcher, trial);
            sgd += usize::from(config.get("optimizer.momentum").is_some());
            tell(&mut searcher, trial, &config, loss(&config));
        }
        // Nodes in name order: lr, the optimizer choice, then each option's parameters.
        assert!(matches!(searcher.model_space.nodes[0].kind, NodeKind::Numeric(_)));
        assert!(matches!(searcher.model_space.nodes[1].kind, NodeKind::Categorical(2)));
        let (momentum, beta1) = (2, 3);
        assert_eq!(searcher.model_space.nodes[momentum].condition, Some((1, 0)));
        assert_eq!(searcher.model_space.nodes[beta1].condition, Some((1, 1)));
        assert_eq!(searcher.observations.columns[momentum].values.len(), sgd);
        assert_eq!(searcher.observations.columns[beta1].values.len(), 20 - sgd);
        assert!(sgd > 0 && sgd < 20, "{sgd}");

        // The estimators of momentum see only the sgd trials.
        let (class, n_good) = searcher.classify();
        let context = context_of(&searcher, &class, n_good);
        let model = context.build(searcher.model_space.group_of[momentum]);
        let kernels = |estimator: &Estimator| match estimator {
            Estimator::Numeric(_, mixture) => mixture.len() - 1,
            Estimator::Joint(joint) => joint.log_weights.len() - 1,
            Estimator::Categorical(..) => unreachable!(),
        };
        assert_eq!(kernels(&model.good) + kernels(&model.bad), sgd);

        // sgd is better whatever its momentum: the search settles on it, momentum near 0.9.
        let mut late_sgd = 0;
        for trial in 21..=60 {
            let config = ask(&mut searcher, trial);
            assert!(space.contains(&config), "{config:?}");
            if trial > 40 && config.get("optimizer.name") == Some(&json!("sgd")) {
                late_sgd += 1;
                assert!(config.get("optimizer.beta1").is_none());
            }
            tell(&mut searcher, trial, &config, loss(&config));
        }
        assert!(
            late_sgd >= 15,
            "multivariate={multivariate}: {late_sgd} of 20 late trials chose sgd"
        );
        let best = searcher.observations.ranked[0] as usize;
        let momentum = searcher.observations.row(best)[momentum];
        assert!((momentum - 0.9).abs() < 0.05, "best momentum {momentum}");
    }
}

/// Eight suggestions asked at once (no results in between) after 30 results on a bowl with
/// its minimum at the centre of `domain`.
fn parallel_asks(domain: Value, constant_liar: bool, seed: u64) -> Vec<f64> {
    let space = space(json!({ "x": domain }));
    let mut searcher = tpe(&format!(r#"{{"constant_liar": {constant_liar}}}"#), &space, seed);
    tell_each(&mut searcher, 1..=30, |_, config| (float(config, "x") - 10.0).powi(2));
    (31..=38).map(|trial| float(&ask(&mut searcher, trial), "x")).collect()
}

#[test]
fn constant_liar_spreads_parallel_suggestions() {
    let seeds = 0..12;
    // Continuous: mean pairwise distance of the eight.
    let spread = |constant_liar: bool| -> f64 {
        let total: f64 = seeds
            .clone()
            .map(|seed| {
                let xs = parallel_asks(json!({"uniform": [0, 20]}), constant_liar, seed);
                let pairs = xs
                    .iter()
                    .enumerate()
                    .flat_map(|(i, a)| xs[i + 1..].iter().map(move |b| (a - b).abs()));
                pairs.sum::<f64>() / 28.0
            })
            .sum();
        total / 12.0
    };
    let (with, without) = (spread(true), spread(false));
    assert!(with > 1.5 * without, "spread with the liar {with}, without {without}");
    // Discrete: a value already proposed is never proposed again, liar or not (without the
    // liar the model alone would propose the same few values again).
    for constant_liar in [true, false] {
        for seed in seeds.clone() {
            let mut xs = parallel_asks(json!({"randint": [0, 201]}), constant_liar, seed);
            xs.sort_by(f64::total_cmp);
            xs.dedup();
            assert_eq!(xs.len(), 8, "liar {constant_liar}, seed {seed}");
        }
    }

    // Running trials are bad results only with the liar.
    let space = space(json!({"x": {"uniform": [0, 1]}}));
    for constant_liar in [false, true] {
        let mut searcher = tpe(
            &format!(r#"{{"n_startup_trials": 3, "constant_liar": {constant_liar}}}"#),
            &space,
            2,
        );
        for trial in 1..=5 {
            ask(&mut searcher, trial);
        }
        let (class, _) = searcher.classify();
        let expected = if constant_liar { BAD } else { SKIP };
        assert!(class.iter().all(|&c| c == expected), "{class:?}");
    }
}

#[test]
fn same_seed_and_calls_give_the_same_suggestions() {
    let space = optimizer_space();
    let run = |seed: u64, multivariate: bool| {
        let mut searcher = tpe(
            &format!(r#"{{"n_startup_trials": 5, "multivariate": {multivariate}, "constant_liar": true}}"#),
            &space,
            seed,
        );
        let mut configs = Vec::new();
        for trial in 1..=25 {
            let config = ask(&mut searcher, trial);
            if trial % 3 != 0 {
                tell(&mut searcher, trial, &config, float(&config, "lr"));
            }
            configs.push(config);
        }
        configs
    };
    for multivariate in [false, true] {
        assert_eq!(run(4, multivariate), run(4, multivariate));
        assert_ne!(run(4, multivariate), run(5, multivariate));
    }
}

fn best_on_branin(searcher: &SearcherConfig, seed: u64, evaluations: usize) -> f64 {
    let space = space(json!({"x1": {"uniform": [-5, 10]}, "x2": {"uniform": [0, 15]}}));
    let mut search = AskTell::new(searcher, &space, Mode::Min, seed).unwrap();
    for _ in 0..evaluations {
        let (trial, config) = search.ask().unwrap().unwrap();
        search.tell(trial, branin(float(&config, "x1"), float(&config, "x2")));
    }
    search.best().unwrap().1
}

#[test]
fn tpe_beats_random_search_on_branin() {
    let seeds = 0..8u64;
    let mean = |searcher: &SearcherConfig| {
        seeds
            .clone()
            .map(|seed| best_on_branin(searcher, seed, 60))
            .sum::<f64>()
            / seeds.clone().count() as f64
    };
    let random = mean(&SearcherConfig::Random {});
    let tpe = mean(&SearcherConfig::Tpe(settings(r#"{"multivariate": false}"#)));
    let multivariate = mean(&SearcherConfig::Tpe(settings("{}")));
    // Minimum 0.397887. Random search's mean best after 60 draws is around 1.3; TPE's is
    // well below it. The margins are loose on purpose.
    assert!(tpe < 0.7 * random, "tpe {tpe} vs random {random}");
    assert!(
        multivariate < 0.7 * random,
        "multivariate tpe {multivariate} vs random {random}"
    );
}

/// Six parameters of five options each (15,625 configurations), as in
/// shared/findings/tpe-categorical.md.
fn six_choices() -> Space {
    let mut space = Space::new();
    for i in 0..6 {
        space
            .insert(&format!("p{i}"), Domain::choice(["a", "b", "c", "d", "e"]).unwrap())
            .unwrap();
    }
    space
}

/// The separable objective of the finding: Σ (index(p_i) − 2)² · (1 + i), 0 at all "c".
fn separable(config: &Config) -> f64 {
    (0..6)
        .map(|i| {
            let option = config.get(&format!("p{i}")).and_then(Value::as_str).unwrap();
            let index = f64::from(option.as_bytes()[0] - b'a');
            (index - 2.0).powi(2) * (1.0 + i as f64)
        })
        .sum()
}

/// Pure noise: a hash of the configuration, in [0, 1).
fn noise(config: &Config) -> f64 {
    let text = serde_json::to_string(&config.0).unwrap();
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs `evaluations` sequential ask/tell rounds; the distinct configurations and the best value.
fn run_sequentially(
    searcher: &SearcherConfig,
    space: &Space,
    seed: u64,
    evaluations: usize,
    objective: fn(&Config) -> f64,
) -> (usize, f64) {
    let mut search = AskTell::new(searcher, space, Mode::Min, seed).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..evaluations {
        let (trial, config) = search.ask().unwrap().expect("the space is far from exhausted");
        seen.insert(serde_json::to_string(&config.0).unwrap());
        search.tell(trial, objective(&config));
    }
    (seen.len(), search.best().unwrap().1)
}

/// The CI guard of shared/findings/tpe-categorical.md: on a categorical space TPE proposes no
/// configuration twice, and it finds much better configurations than random search does.
#[test]
fn tpe_never_repeats_a_categorical_configuration_and_beats_random_search() {
    let space = six_choices();
    for multivariate in [false, true] {
        let tpe = SearcherConfig::Tpe(settings(&format!(r#"{{"multivariate": {multivariate}}}"#)));
        for seed in 0..3 {
            for objective in [separable as fn(&Config) -> f64, noise] {
                let (distinct, _) = run_sequentially(&tpe, &space, seed, 100, objective);
                assert_eq!(
                    distinct, 100,
                    "multivariate {multivariate}, seed {seed}: repeated configurations"
                );
            }
        }
    }
    let median_best = |searcher: &SearcherConfig| {
        let mut best: Vec<f64> = (0..9)
            .map(|seed| run_sequentially(searcher, &space, seed, 100, separable).1)
            .collect();
        best.sort_by(f64::total_cmp);
        best[best.len() / 2]
    };
    let random = median_best(&SearcherConfig::Random {});
    let tpe = median_best(&SearcherConfig::Tpe(settings("{}")));
    // Measured: TPE 0 (the optimum), random search 9.
    assert!(tpe <= 0.25 * random, "tpe {tpe} vs random {random}");
}

#[test]
fn a_finite_space_is_exhausted_after_each_configuration_once() {
    let space = space(json!({"a": {"choice": ["x", "y", "z"]}, "b": {"choice": [1, 2]}}));
    for startup in [2, 10] {
        let mut searcher = tpe(&format!(r#"{{"n_startup_trials": {startup}}}"#), &space, 7);
        let mut seen = std::collections::BTreeSet::new();
        for trial in 1..=6 {
            let config = ask(&mut searcher, trial);
            assert!(
                seen.insert(serde_json::to_string(&config.0).unwrap()),
                "{config:?} twice"
            );
            tell(&mut searcher, trial, &config, trial as f64);
        }
        assert_eq!(searcher.suggest(TrialId(7)).unwrap(), Suggestion::Exhausted);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn every_suggestion_lies_in_the_space(
        space in arb_space(),
        seed in any::<u64>(),
        multivariate in any::<bool>(),
        constant_liar in any::<bool>(),
    ) {
        let config = settings(&format!(
            r#"{{"n_startup_trials": 4, "n_ei_candidates": 8, "multivariate": {multivariate}, "constant_liar": {constant_liar}}}"#
        ));
        let mut searcher = Tpe::new(&config, &space, "loss", Mode::Min, seed);
        let mut seen = crate::distinct::Distinct::new(&space);
        for trial in 1..=30 {
            let suggestion = searcher.suggest(TrialId(trial)).unwrap();
            let Some(config) = distinct_or_exhausted(suggestion, &space, &mut seen)? else {
                break;
            };
            // A loss that depends on the configuration, with a failure now and then.
            let loss = (config.to_json().len() as f64 * 0.37 + trial as f64 * 1.7).sin();
            if trial % 7 != 0 {
                tell(&mut searcher, trial, &config, if trial % 11 == 0 { f64::NAN } else { loss });
            }
        }
    }
}

/// Median time of a suggestion after `n` finished trials (each followed by a result, so
/// every suggestion rebuilds its estimators).
fn median_suggestion(n: usize, multivariate: bool) -> std::time::Duration {
    let space = ten_parameter_space();
    let objective = |config: &Config| -> f64 { (0..4).map(|i| float(config, &format!("u{i}")).powi(2)).sum() };
    let settings = settings(&format!(
        r#"{{"n_startup_trials": {n}, "multivariate": {multivariate}}}"#
    ));
    let mut search = AskTell::new(&SearcherConfig::Tpe(settings), &space, Mode::Min, 1).unwrap();
    for _ in 0..n {
        let (trial, config) = search.ask().unwrap().unwrap();
        search.tell(trial, objective(&config));
    }
    let mut times: Vec<std::time::Duration> = (0..201)
        .map(|_| {
            let start = std::time::Instant::now();
            let (trial, config) = search.ask().unwrap().unwrap();
            let elapsed = start.elapsed();
            search.tell(trial, objective(&config));
            elapsed
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Run with `cargo test --release -p tune-search -- --ignored tpe`.
#[test]
#[ignore = "timing: run in release"]
fn suggestion_timing() {
    let mut medians = Vec::new();
    for multivariate in [false, true] {
        for n in [1_000, 10_000] {
            let median = median_suggestion(n, multivariate);
            println!("tpe (multivariate: {multivariate}) suggest with {n} trials, 10 parameters: median {median:?}");
            medians.push(median);
        }
    }
    // Not a speed limit, a complexity check: ten times the trials must not cost a hundred
    // times as much (quadratic work per suggestion would).
    assert!(medians[1] < medians[0] * 40, "{medians:?}");
}

#[test]
fn joint_bandwidths_follow_the_gaps_to_the_neighbours() {
    use super::parzen::{age_weight, neighbour_bandwidths};
    // On [0, 10], observations 1, 2 and 6 (given unsorted): the smallest and the largest take
    // the gap to their inner neighbour (1 and 4), the middle one its larger gap (4); the clip
    // is [10 / min(100, 5), 10] = [2, 10].
    assert_eq!(neighbour_bandwidths(&[6.0, 1.0, 2.0], 0.0, 10.0, 10.0), [4.0, 2.0, 4.0]);
    // One observation: its larger gap to the bounds.
    assert_eq!(neighbour_bandwidths(&[3.0], 0.0, 10.0, 10.0), [7.0]);
    // Many close observations: the clip at range / 100.
    let crowded: Vec<f64> = (0..200).map(|i| 5.0 + 1e-4 * f64::from(i)).collect();
    assert!(
        neighbour_bandwidths(&crowded, 0.0, 10.0, 10.0)
            .iter()
            .all(|&sigma| sigma == 0.1)
    );
    // Ages: 25 or fewer weigh 1 each; of 30, the 5 oldest ramp from 1/30 to 1.
    assert_eq!(age_weight(0, 25), 1.0);
    let ramp: Vec<f64> = (0..6).map(|rank| age_weight(rank, 30)).collect();
    let expected = [
        1.0 / 30.0,
        1.0 / 30.0 + 29.0 / 30.0 / 4.0,
        1.0 / 30.0 + 29.0 / 30.0 / 2.0,
    ];
    for (got, want) in ramp.iter().zip(expected) {
        assert!((got - want).abs() < 1e-12, "{ramp:?}");
    }
    assert_eq!(ramp[4], 1.0);
    assert_eq!(ramp[5], 1.0);
}

#[test]
fn trials_told_without_a_suggestion_count_towards_the_start_up() {
    // Twenty results told first (a warm start), the good ones near x = 0.9: the first
    // suggestion comes from the model, not from the ten random start-up draws.
    let space = space(json!({"x": {"uniform": [0, 1]}}));
    for seed in 0..8 {
        let mut searcher = tpe("{}", &space, seed);
        for trial in 1..=20u64 {
            let x = trial as f64 / 20.0 - 0.025;
            let config: Config = serde_json::from_value(json!({ "x": x })).unwrap();
            tell(&mut searcher, trial, &config, (x - 0.9).abs());
        }
        let x = float(&ask(&mut searcher, 21), "x");
        assert!(x > 0.6, "seed {seed}: {x}");
    }
}
