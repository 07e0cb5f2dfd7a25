//! Helpers the searchers' tests share: a test objective, reading suggestions and configurations,
//! and random search spaces for property tests.

use proptest::prelude::*;
use tune_core::searcher::{Searcher, Suggestion, TrialResult};
use tune_core::space::{Domain, Space};
use tune_core::trial::{Metrics, Report, TrialId};
use tune_core::value::Config;

/// The Branin function, minimum 0.397887 (at three points of `[-5, 10] × [0, 15]`).
pub(crate) fn branin(x1: f64, x2: f64) -> f64 {
    use std::f64::consts::PI;
    let (b, c, t) = (5.1 / (4.0 * PI * PI), 5.0 / PI, 1.0 / (8.0 * PI));
    (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
}

/// The configuration of a suggestion that must be one.
pub(crate) fn config_of(suggestion: Suggestion) -> Config {
    match suggestion {
        Suggestion::Config(config) => config,
        other => panic!("expected a config, got {other:?}"),
    }
}

/// The configuration `searcher` suggests for `trial`, which must be one.
pub(crate) fn ask(searcher: &mut dyn Searcher, trial: u64) -> Config {
    config_of(searcher.suggest(TrialId(trial)).unwrap())
}

/// Tells `searcher` that `trial` ran `config` and ended with `loss` = `value` at step 1.
pub(crate) fn tell(searcher: &mut dyn Searcher, trial: u64, config: &Config, value: f64) {
    let report = Report {
        step: 1,
        metrics: Metrics::from([("loss".to_owned(), value)]),
    };
    searcher.on_trial_result(TrialId(trial), &report);
    searcher.on_trial_complete(
        TrialId(trial),
        &TrialResult {
            config,
            last: Some(&report),
            failed: false,
        },
    );
}

/// Checks a suggestion of a property test: a configuration in `space` not proposed before
/// (recorded in `seen`), or `Exhausted` only once `seen` holds the whole finite space. `None`
/// when exhausted.
pub(crate) fn distinct_or_exhausted(
    suggestion: Suggestion,
    space: &Space,
    seen: &mut crate::distinct::Distinct,
) -> Result<Option<Config>, TestCaseError> {
    let config = match suggestion {
        Suggestion::Config(config) => config,
        other => {
            prop_assert_eq!(other, Suggestion::Exhausted);
            prop_assert!(seen.exhausted(), "exhausted after {:?} of {space:?}", seen.size());
            return Ok(None);
        }
    };
    prop_assert!(space.contains(&config), "{config:?} not in {space:?}");
    prop_assert!(seen.insert(&config), "{config:?} proposed twice");
    Ok(Some(config))
}

/// The number at `name` (a dotted path) in `config`.
pub(crate) fn float(config: &Config, name: &str) -> f64 {
    config.get(name).and_then(|value| value.as_f64()).unwrap()
}

/// The domains the property tests nest: every numeric kind (quantized ranges both aligned and
/// not aligned to `q`), choices of numbers and of strings, and fixed values. (The union of what
/// the TPE and BOHB property tests each drew before they shared it.)
fn arb_leaf() -> impl Strategy<Value = Domain> {
    prop_oneof![
        (-100.0f64..100.0, 1e-3f64..100.0).prop_map(|(low, width)| Domain::uniform(low, low + width).unwrap()),
        (1e-6f64..10.0, 1.01f64..1e6).prop_map(|(low, ratio)| Domain::loguniform(low, low * ratio).unwrap()),
        (-50.0f64..50.0, 0.01f64..5.0, 1u32..50).prop_map(|(low, q, n)| Domain::quniform(
            low,
            low + q * f64::from(n),
            q
        )
        .unwrap()),
        (-10.0f64..10.0, 1.0f64..50.0, 0.1f64..2.0).prop_map(|(low, width, q)| Domain::QUniform {
            low,
            high: low + width.max(q),
            q
        }),
        (1e-3f64..10.0, 1e-3f64..1.0, 2.0f64..100.0).prop_map(|(low, q, ratio)| Domain::qloguniform(
            low,
            low * ratio + q,
            q
        )
        .unwrap()),
        (-1000i64..1000, 1i64..2000).prop_map(|(low, width)| Domain::randint(low, low + width).unwrap()),
        (-100i64..100, 1i64..20, 1i64..10).prop_map(|(low, q, n)| Domain::qrandint(low, low + q * n, q).unwrap()),
        (1i64..100, 1i64..10_000).prop_map(|(low, width)| Domain::lograndint(low, low + width).unwrap()),
        (-10.0f64..10.0, 0.01f64..10.0).prop_map(|(mu, sigma)| Domain::normal(mu, sigma).unwrap()),
        proptest::collection::vec(-5i64..5, 1..5).prop_map(|values| Domain::choice(values).unwrap()),
        (1usize..4).prop_map(|n| Domain::choice((0..n as i64).map(|i| i * 16)).unwrap()),
        (1usize..6).prop_map(|n| Domain::choice((0..n).map(|i| format!("c{i}"))).unwrap()),
        Just(Domain::fixed("constant")),
    ]
}

/// Spaces of one to four parameters drawn from [`arb_leaf`], nested up to two levels:
/// conditional choices (each option a table naming itself, with up to two further parameters)
/// and plain nested tables.
pub(crate) fn arb_space() -> impl Strategy<Value = Space> {
    let domain = arb_leaf().prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(proptest::collection::vec(inner.clone(), 0..3), 1..4).prop_map(|options| {
                let options = options
                    .into_iter()
                    .enumerate()
                    .map(|(index, params)| {
                        let mut space = Space::new().with("name", Domain::fixed(format!("o{index}"))).unwrap();
                        for (i, domain) in params.into_iter().enumerate() {
                            space.insert(&format!("p{i}"), domain).unwrap();
                        }
                        Domain::Nested(space)
                    })
                    .collect();
                Domain::choice_of(options).unwrap()
            }),
            proptest::collection::vec(inner, 1..3).prop_map(|params| {
                let mut space = Space::new();
                for (i, domain) in params.into_iter().enumerate() {
                    space.insert(&format!("n{i}"), domain).unwrap();
                }
                Domain::Nested(space)
            }),
        ]
    });
    proptest::collection::vec(domain, 1..5).prop_map(|domains| {
        let mut space = Space::new();
        for (i, domain) in domains.into_iter().enumerate() {
            space.insert(&format!("x{i}"), domain).unwrap();
        }
        space
    })
}
