//! Where a searcher starts: configurations to try first (`points_to_evaluate`, as in Ray Tune's
//! searchers and Optuna's `enqueue_trial`) and the results of an earlier experiment to learn
//! from before the first suggestion (`warm_start`).
//!
//! Both wrap any searcher ([`Started`]). The inner searcher is told of every trial, the given
//! points included, so a model learns from them and never proposes them again. Warm-start
//! trials are told first, under their own trial ids; the sweep's trials follow them, so the
//! inner searcher sees one sequence of distinct ids.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tune_core::searcher::{Searcher, Suggestion, TrialResult};
use tune_core::space::Space;
use tune_core::trial::{Metrics, Report, TrialId};
use tune_core::value::Config;
use tune_core::{Error, Result};

/// A finished trial of an earlier experiment, as a warm start keeps it: its configuration and
/// its final value of the metric (`None` when it failed or never reported the metric).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmTrial {
    /// The configuration it ran.
    pub config: Config,
    /// Its final value of the metric.
    pub value: Option<f64>,
}

/// Checks `points` against `space` and completes them: a point may leave out top-level
/// parameters, which are then drawn from the space with `seed` (Ray Tune's and Optuna's
/// convention for partial points). The error names the point and the parameter.
pub fn complete_points(points: &[Config], space: &Space, seed: u64) -> Result<Vec<Config>> {
    let mut rng = tune_core::rng::stream(seed, "points_to_evaluate");
    points
        .iter()
        .enumerate()
        .map(|(index, point)| {
            let setting = format!("searcher.points_to_evaluate[{index}]");
            let known: Vec<&str> = space.params().map(|(name, _)| name).collect();
            if let Some(unknown) = point.0.keys().find(|name| !known.contains(&name.as_str())) {
                return Err(Error::setting(
                    setting,
                    format!("\"{unknown}\" is not a parameter of the space"),
                ));
            }
            let mut complete = space.sample(&mut rng, &Default::default());
            for (name, value) in &point.0 {
                complete.0.insert(name.clone(), value.clone());
            }
            if let Some((name, value)) = space
                .params()
                .map(|(name, domain)| (name, domain, &complete.0[name]))
                .find(|(_, domain, value)| !domain.contains(value))
                .map(|(name, _, value)| (name, value))
            {
                return Err(Error::setting(
                    setting,
                    format!("parameter \"{name}\": {} is not a value of its domain", show(value)),
                ));
            }
            Ok(complete)
        })
        .collect()
}

/// A value for an error message, cut at 80 characters.
fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

/// A searcher that learns from `warm` trials first, then proposes `points` before asking
/// `inner` (see the [module documentation](self)).
pub struct Started {
    inner: Box<dyn Searcher>,
    points: VecDeque<Config>,
    /// The number of warm-start trials: a sweep trial `n` is trial `n + offset` to `inner`.
    offset: u64,
}

impl Started {
    /// `inner` told of `warm` (finished trials of an earlier experiment, optimising `metric`),
    /// proposing `points` first.
    pub fn new(mut inner: Box<dyn Searcher>, points: Vec<Config>, warm: &[WarmTrial], metric: &str) -> Started {
        for (index, trial) in warm.iter().enumerate() {
            let id = TrialId(index as u64 + 1);
            let report = trial.value.map(|value| Report {
                step: 1,
                metrics: Metrics::from([(metric.to_owned(), value)]),
            });
            if let Some(report) = &report {
                inner.on_trial_result(id, report);
            }
            inner.on_trial_complete(
                id,
                &TrialResult {
                    config: &trial.config,
                    last: report.as_ref(),
                    failed: trial.value.is_none(),
                },
            );
        }
        Started {
            inner,
            points: points.into(),
            offset: warm.len() as u64,
        }
    }

    fn id(&self, trial: TrialId) -> TrialId {
        TrialId(trial.0 + self.offset)
    }
}

impl Searcher for Started {
    fn suggest(&mut self, trial: TrialId) -> Result<Suggestion> {
        match self.points.pop_front() {
            Some(point) => Ok(Suggestion::Config(point)),
            None => self.inner.suggest(self.id(trial)),
        }
    }

    fn on_trial_result(&mut self, trial: TrialId, report: &Report) {
        let id = self.id(trial);
        self.inner.on_trial_result(id, report);
    }

    fn on_trial_complete(&mut self, trial: TrialId, result: &TrialResult<'_>) {
        let id = self.id(trial);
        self.inner.on_trial_complete(id, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SearcherConfig;
    use crate::test_support::{ask, tell};
    use serde_json::json;
    use tune_core::trial::Mode;

    fn space() -> Space {
        Space::from_json(&json!({"c": {"choice": ["a", "b", "c"]}, "n": {"randint": [0, 4]}})).unwrap()
    }

    fn config(value: Value) -> Config {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn points_are_completed_and_checked() {
        let points = [config(json!({"c": "b", "n": 2})), config(json!({"c": "a"}))];
        let complete = complete_points(&points, &space(), 1).unwrap();
        assert_eq!(complete[0], points[0]);
        assert_eq!(complete[1].get("c"), Some(&json!("a")));
        assert!(space().contains(&complete[1]), "{:?}", complete[1]);
        let error = complete_points(&[config(json!({"c": "z"}))], &space(), 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "setting \"searcher.points_to_evaluate[0]\": parameter \"c\": \"z\" is not a value of its domain"
        );
        let error = complete_points(&[points[0].clone(), config(json!({"lr": 1}))], &space(), 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "setting \"searcher.points_to_evaluate[1]\": \"lr\" is not a parameter of the space"
        );
    }

    #[test]
    fn points_come_first_and_are_never_proposed_again() {
        let tpe = SearcherConfig::Tpe(serde_json::from_str(r#"{"n_startup_trials": 2}"#).unwrap());
        let inner = tpe.build(&space(), "loss", Mode::Min, 3).unwrap();
        let points = vec![config(json!({"c": "b", "n": 2})), config(json!({"c": "c", "n": 0}))];
        let mut searcher = Started::new(inner, points.clone(), &[], "loss");
        let mut seen = Vec::new();
        for trial in 1..=12 {
            let config = ask(&mut searcher, trial);
            if trial <= 2 {
                assert_eq!(config, points[trial as usize - 1]);
            }
            assert!(!seen.contains(&config), "{config:?} twice");
            tell(&mut searcher, trial, &config, trial as f64);
            seen.push(config);
        }
        assert_eq!(searcher.suggest(TrialId(13)).unwrap(), Suggestion::Exhausted);
    }

    #[test]
    fn a_warm_start_is_learnt_from_and_not_repeated() {
        // The earlier experiment ran 11 of the 12 configurations; the best had c = "b", n = 3.
        let space = space();
        let mut warm = Vec::new();
        for c in ["a", "b", "c"] {
            for n in 0..4 {
                if (c, n) != ("c", 3) {
                    let value = if (c, n) == ("b", 3) { 0.0 } else { 1.0 + f64::from(n) };
                    warm.push(WarmTrial {
                        config: config(json!({"c": c, "n": n})),
                        value: Some(value),
                    });
                }
            }
        }
        let tpe = SearcherConfig::Tpe(serde_json::from_str(r#"{"n_startup_trials": 0}"#).unwrap());
        let inner = tpe.build(&space, "loss", Mode::Min, 5).unwrap();
        let mut searcher = Started::new(inner, Vec::new(), &warm, "loss");
        // The one configuration left is proposed, then the space is exhausted.
        assert_eq!(ask(&mut searcher, 1), config(json!({"c": "c", "n": 3})));
        assert_eq!(searcher.suggest(TrialId(2)).unwrap(), Suggestion::Exhausted);
    }
}

#[cfg(test)]
mod spec_tests {
    use serde_json::json;

    use crate::{SearcherConfig, SearcherSpec};

    #[test]
    fn the_searcher_section_carries_points_and_a_warm_start_beside_the_settings() {
        let spec: SearcherSpec = serde_json::from_value(json!({
            "kind": "tpe",
            "n_startup_trials": 5,
            "points_to_evaluate": [{"lr": 0.01}],
            "warm_start": "yesterday",
        }))
        .unwrap();
        let SearcherConfig::Tpe(tpe) = &spec.config else {
            panic!("{spec:?}")
        };
        assert_eq!(tpe.n_startup_trials, 5);
        assert_eq!(spec.points_to_evaluate.len(), 1);
        assert_eq!(spec.warm_start.as_deref(), Some("yesterday"));
        // It round-trips, and a section without them reads as before.
        let text = serde_json::to_value(&spec).unwrap();
        assert_eq!(serde_json::from_value::<SearcherSpec>(text).unwrap(), spec);
        let plain: SearcherSpec = serde_json::from_value(json!({"kind": "random"})).unwrap();
        assert_eq!(plain, SearcherSpec::from(SearcherConfig::Random {}));
        assert_eq!(serde_json::to_value(&plain).unwrap(), json!({"kind": "random"}));
        // Unknown keys are still refused, naming the key.
        let error = serde_json::from_value::<SearcherSpec>(json!({"kind": "tpe", "n_startup": 5})).unwrap_err();
        assert!(error.to_string().contains("n_startup"), "{error}");
    }
}
