//! tune-search: searchers that propose configurations.
//!
//! - [`RandomSearch`] — independent random draws from the space; grid parameters are enumerated
//!   (the whole grid is repeated `num_samples` times), every other parameter is drawn anew for
//!   each trial, the way Ray Tune's basic variant generator does it.
//! - [`GridSearch`] — the cartesian product of every enumerable parameter (grids, choices of
//!   plain values, integer ranges, fixed values), repeated `num_samples` times; a space with a
//!   continuous parameter is rejected, naming it.
//!
//! - [`sobol::SobolSearch`] — scrambled Sobol quasi-random points mapped through each domain.
//! - [`tpe::Tpe`] — the Tree-structured Parzen Estimator.
//! - [`gp::GpSearch`] — Bayesian optimisation with a Gaussian process and expected improvement.
//! - [`bohb::Bohb`] — model-based Hyperband: a TPE-style density model over the largest budget
//!   with enough results, with Hyperband or ASHA choosing the budgets.
//!
//! [`SearcherConfig`] names them in spec files (`[searcher] kind = "tpe"`). [`AskTell`] drives
//! any of them without a controller.

pub mod ask_tell;
pub mod bohb;
pub mod distinct;
pub mod gp;
mod grid;
mod numerics;
mod random;
pub mod sobol;
pub mod start;
#[cfg(test)]
mod test_support;
pub mod tpe;
pub mod unit;

pub use ask_tell::AskTell;

use serde::{Deserialize, Serialize};
use tune_core::searcher::Searcher;
use tune_core::space::Space;
use tune_core::trial::Mode;
use tune_core::{Error, Result};

pub use grid::GridSearch;
pub use random::RandomSearch;
pub use start::WarmTrial;

/// The searchers, by name, with their settings: what `[searcher]` in a spec file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SearcherConfig {
    /// Random search (grid parameters enumerated). (Empty braces, not a unit variant, so that
    /// unknown keys beside `kind` are rejected.)
    Random {},
    /// Exhaustive grid search.
    Grid {},
    /// Scrambled Sobol quasi-random search.
    Sobol(SobolConfig),
    /// Tree-structured Parzen Estimator.
    Tpe(TpeConfig),
    /// Gaussian-process Bayesian optimisation.
    Gp(GpConfig),
    /// Model-based Hyperband.
    Bohb(BohbConfig),
}

/// `[searcher] kind = "sobol"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SobolConfig {
    /// Owen-scramble the sequence with the experiment seed (unscrambled Sobol starts at the
    /// cube's corner and centre, which is rarely what a search wants).
    #[serde(default = "default_true")]
    pub scramble: bool,
}

/// `[searcher] kind = "tpe"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpeConfig {
    /// Random configurations before the model is used.
    #[serde(default = "default_startup")]
    pub n_startup_trials: i64,
    /// Candidates drawn from the good model per suggestion.
    #[serde(default = "default_ei_candidates")]
    pub n_ei_candidates: i64,
    /// Fixed fraction of results counted as good; the default is γ(n) = min(⌈0.15·n⌉, 25)/n.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// Joint (multivariate) kernels instead of one density per parameter. On by default, as in
    /// Optuna since its version 5: the joint model captures how parameters interact, and
    /// measured on the synthetic functions it finds better configurations.
    #[serde(default = "default_true")]
    pub multivariate: bool,
    /// Count running trials as bad results, so parallel workers spread out (on by default, as
    /// in Optuna since its version 5; it changes nothing for one trial at a time).
    #[serde(default = "default_true")]
    pub constant_liar: bool,
    /// Weight of the prior component of each Parzen estimator.
    #[serde(default = "default_prior_weight")]
    pub prior_weight: f64,
}

/// `[searcher] kind = "gp"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpConfig {
    /// Quasi-random configurations before the model is used.
    #[serde(default = "default_startup")]
    pub n_startup_trials: i64,
    /// Restarts of the kernel-hyperparameter fit (L-BFGS).
    #[serde(default = "default_restarts")]
    pub restarts: i64,
    /// Starting points of the acquisition optimisation.
    #[serde(default = "default_acquisition_starts")]
    pub acquisition_starts: i64,
}

/// `[searcher] kind = "bohb"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BohbConfig {
    /// Results a budget needs before its model is used (default: dimensions + 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_points_in_model: Option<i64>,
    /// Percentage of results counted as good.
    #[serde(default = "default_top_n_percent")]
    pub top_n_percent: f64,
    /// Fraction of configurations drawn at random regardless of the model.
    #[serde(default = "default_random_fraction")]
    pub random_fraction: f64,
    /// Widening of the good model's bandwidths when sampling candidates.
    #[serde(default = "default_bandwidth_factor")]
    pub bandwidth_factor: f64,
    /// Candidates drawn per suggestion.
    #[serde(default = "default_bohb_samples")]
    pub num_samples: i64,
}

impl Default for SearcherConfig {
    fn default() -> Self {
        SearcherConfig::Random {}
    }
}

fn default_true() -> bool {
    true
}
fn default_startup() -> i64 {
    10
}
/// Twice Optuna's 24: a suggestion costs rung well under a millisecond, and the larger
/// candidate set measured better with the larger good set (see `tpe::n_good`).
fn default_ei_candidates() -> i64 {
    48
}
fn default_prior_weight() -> f64 {
    1.0
}
fn default_restarts() -> i64 {
    5
}
fn default_acquisition_starts() -> i64 {
    16
}
fn default_top_n_percent() -> f64 {
    15.0
}
fn default_random_fraction() -> f64 {
    1.0 / 3.0
}
fn default_bandwidth_factor() -> f64 {
    3.0
}
fn default_bohb_samples() -> i64 {
    64
}

fn at_least(setting: &str, value: i64, least: i64) -> Result<()> {
    if value >= least {
        Ok(())
    } else {
        Err(Error::setting(
            setting,
            format!("must be at least {least}, got {value}"),
        ))
    }
}

/// `[searcher]` as a spec file writes it: the searcher with its settings, configurations to try
/// first, and an earlier experiment to learn from (see [`start`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SearcherSpec {
    /// The searcher (`kind`) and its settings.
    #[serde(flatten)]
    pub config: SearcherConfig,
    /// Configurations to run first, in order; top-level parameters a point leaves out are drawn
    /// from the space. They count towards `num_samples`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points_to_evaluate: Vec<tune_core::value::Config>,
    /// The name of an earlier experiment in the same store: the searcher learns from its
    /// finished trials before its first suggestion, and does not run their configurations again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<String>,
    /// The trials of `warm_start`, read from the store when the experiment is created and stored
    /// with its spec, so that a resumed sweep replays from the same ones (filled in by rung).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warm_trials: Vec<WarmTrial>,
}

impl SearcherSpec {
    /// Checks the settings and the points against `space`.
    pub fn validate(&self, space: &Space) -> Result<()> {
        self.config.validate(space)?;
        start::complete_points(&self.points_to_evaluate, space, 0)?;
        Ok(())
    }

    /// The searcher, started from the points and the warm-start trials (those outside `space`
    /// are left out).
    pub fn build(&self, space: &Space, metric: &str, mode: Mode, seed: u64) -> Result<Box<dyn Searcher>> {
        let inner = self.config.build(space, metric, mode, seed)?;
        if self.points_to_evaluate.is_empty() && self.warm_trials.is_empty() {
            return Ok(inner);
        }
        let points = start::complete_points(&self.points_to_evaluate, space, seed)?;
        let warm: Vec<WarmTrial> = self
            .warm_trials
            .iter()
            .filter(|trial| space.contains(&trial.config))
            .cloned()
            .collect();
        Ok(Box::new(start::Started::new(inner, points, &warm, metric)))
    }
}

impl From<SearcherConfig> for SearcherSpec {
    fn from(config: SearcherConfig) -> SearcherSpec {
        SearcherSpec {
            config,
            ..SearcherSpec::default()
        }
    }
}

impl SearcherConfig {
    /// The name used in spec files.
    pub fn kind(&self) -> &'static str {
        match self {
            SearcherConfig::Random {} => "random",
            SearcherConfig::Grid {} => "grid",
            SearcherConfig::Sobol(_) => "sobol",
            SearcherConfig::Tpe(_) => "tpe",
            SearcherConfig::Gp(_) => "gp",
            SearcherConfig::Bohb(_) => "bohb",
        }
    }

    /// How many trials one pass over the space makes: the grid size (1 without grid parameters)
    /// for random search, the number of grid points for grid search, 1 for the others.
    pub fn trials_per_sample(&self, space: &Space) -> Result<u64> {
        match self {
            SearcherConfig::Random {} => Ok(space.grid_size()),
            SearcherConfig::Grid {} => Ok(GridSearch::new(space, 0)?.points()),
            _ => Ok(1),
        }
    }

    /// Checks the settings and that the searcher can handle `space`, naming the setting or the
    /// parameter that it cannot.
    pub fn validate(&self, space: &Space) -> Result<()> {
        match self {
            SearcherConfig::Random {} | SearcherConfig::Grid {} => {}
            SearcherConfig::Sobol(_) => {}
            SearcherConfig::Tpe(c) => {
                at_least("searcher.n_startup_trials", c.n_startup_trials, 0)?;
                at_least("searcher.n_ei_candidates", c.n_ei_candidates, 1)?;
                if let Some(gamma) = c.gamma
                    && !(gamma > 0.0 && gamma <= 1.0)
                {
                    return Err(Error::setting(
                        "searcher.gamma",
                        format!("must be in (0, 1], got {gamma}"),
                    ));
                }
                if !(c.prior_weight.is_finite() && c.prior_weight > 0.0) {
                    return Err(Error::setting(
                        "searcher.prior_weight",
                        format!("must be positive, got {}", c.prior_weight),
                    ));
                }
            }
            SearcherConfig::Gp(c) => {
                at_least("searcher.n_startup_trials", c.n_startup_trials, 1)?;
                at_least("searcher.restarts", c.restarts, 1)?;
                at_least("searcher.acquisition_starts", c.acquisition_starts, 1)?;
            }
            SearcherConfig::Bohb(c) => {
                if let Some(points) = c.min_points_in_model {
                    at_least("searcher.min_points_in_model", points, 1)?;
                }
                if !(c.top_n_percent > 0.0 && c.top_n_percent < 100.0) {
                    return Err(Error::setting(
                        "searcher.top_n_percent",
                        format!("must be in (0, 100), got {}", c.top_n_percent),
                    ));
                }
                if !(0.0..=1.0).contains(&c.random_fraction) {
                    return Err(Error::setting(
                        "searcher.random_fraction",
                        format!("must be in [0, 1], got {}", c.random_fraction),
                    ));
                }
                if !(c.bandwidth_factor.is_finite() && c.bandwidth_factor > 0.0) {
                    return Err(Error::setting(
                        "searcher.bandwidth_factor",
                        format!("must be positive, got {}", c.bandwidth_factor),
                    ));
                }
                at_least("searcher.num_samples", c.num_samples, 1)?;
            }
        }
        if !matches!(self, SearcherConfig::Random {} | SearcherConfig::Grid {}) && !space.grid_axes().is_empty() {
            let axis = &space.grid_axes()[0];
            return Err(Error::param(
                &axis.name,
                format!(
                    "the {} searcher proposes every value itself: use choice instead of grid",
                    self.kind()
                ),
            ));
        }
        self.trials_per_sample(space).map(|_| ())
    }

    /// A fresh searcher for `space`, optimising `metric` in `mode`, its randomness drawn from the
    /// experiment `seed`.
    pub fn build(&self, space: &Space, metric: &str, mode: Mode, seed: u64) -> Result<Box<dyn Searcher>> {
        self.validate(space)?;
        Ok(match self {
            SearcherConfig::Random {} => Box::new(RandomSearch::new(space.clone(), seed)),
            SearcherConfig::Grid {} => Box::new(GridSearch::new(space, seed)?),
            SearcherConfig::Sobol(c) => Box::new(sobol::SobolSearch::new(c, space, seed)),
            SearcherConfig::Tpe(c) => Box::new(tpe::Tpe::new(c, space, metric, mode, seed)),
            SearcherConfig::Gp(c) => Box::new(gp::GpSearch::new(c, space, metric, mode, seed)),
            SearcherConfig::Bohb(c) => Box::new(bohb::Bohb::new(c, space, metric, mode, seed)),
        })
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    fn parse(text: &str) -> serde_json::Result<SearcherConfig> {
        serde_json::from_str(text)
    }

    /// Why `text` is not a searcher config.
    fn rejection(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_keys_are_rejected_for_every_kind() {
        assert!(rejection(r#"{"kind": "random", "n": 1}"#).contains("unknown field `n`"));
        assert!(rejection(r#"{"kind": "tpe", "n_startup": 1}"#).contains("unknown field `n_startup`"));
        assert_eq!(parse(r#"{"kind": "tpe"}"#).unwrap().kind(), "tpe");
    }

    #[test]
    fn settings_out_of_range_are_named() {
        let space = Space::new();
        let check = |text: &str| parse(text).unwrap().validate(&space).unwrap_err().to_string();
        let cases = [
            (
                r#"{"kind": "tpe", "gamma": 0}"#,
                "setting \"searcher.gamma\": must be in (0, 1], got 0",
            ),
            (
                r#"{"kind": "tpe", "n_ei_candidates": 0}"#,
                "setting \"searcher.n_ei_candidates\": must be at least 1, got 0",
            ),
            (
                r#"{"kind": "tpe", "n_startup_trials": -3}"#,
                "setting \"searcher.n_startup_trials\": must be at least 0, got -3",
            ),
            (
                r#"{"kind": "bohb", "top_n_percent": 100}"#,
                "setting \"searcher.top_n_percent\": must be in (0, 100), got 100",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(check(text), message, "{text}");
        }
        let grid = Space::from_json(&serde_json::json!({"a": {"grid": [1, 2]}})).unwrap();
        assert_eq!(
            parse(r#"{"kind": "tpe"}"#)
                .unwrap()
                .validate(&grid)
                .unwrap_err()
                .to_string(),
            "parameter \"a\": the tpe searcher proposes every value itself: use choice instead of grid"
        );
    }
}
