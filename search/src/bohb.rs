//! BOHB's configuration proposal: a TPE-style density-ratio model fitted on the results of the
//! largest budget that has enough of them, with Hyperband or ASHA choosing the budgets.
//!
//! In rung the scheduler (Hyperband or ASHA, from `tune-schedulers`) decides how far each
//! trial trains and which trials stop or pause; this searcher only proposes configurations. It
//! learns from every intermediate result:
//!
//! - **Observations by budget.** A report at `step` is an observation of the trial's
//!   configuration at budget `step`, scored with [`Mode::score`] (higher is better). A trial
//!   that reports at steps `1..k` contributes one observation to each of those budgets; a second
//!   report at the same step replaces the first. A NaN, infinite or missing metric scores worst,
//!   and so does the latest observation of a trial that fails. Scores only rank observations;
//!   no score enters a kernel.
//! - **Random or model.** With probability `random_fraction`, or while no budget holds at least
//!   `min_points_in_model + 2` observations, the configuration is drawn at random from the space.
//! - **Model.** Otherwise the largest such budget is modelled. Its `n` observations are ranked;
//!   the best `n_good = max(m, ⌈top_n_percent/100 · n⌉)` form the good set and the worst
//!   `n_bad = max(m, ⌈(100 − top_n_percent)/100 · n⌉)` the bad set (`m` =
//!   `min_points_in_model`, by default the number of unit dimensions plus one). For small `n`
//!   the two sets overlap; hpbandster instead gives the bad set the observations ranked after
//!   the good ones, which keeps them disjoint (on this module's Branin test it does no better).
//!   Each set becomes a product-kernel density over the configurations' unit-cube encodings
//!   ([`UnitSpace`]): a Gaussian kernel for continuous and integer dimensions with a bandwidth by
//!   Scott's rule, `1.06·σ·n^(−1/(4+d))`, and an Aitchison–Aitken kernel for categorical ones,
//!   its λ computed by the same rule from the category indices (as statsmodels' `normal_reference`
//!   does for the reference implementation) and capped at `(c−1)/c`, where the kernel is
//!   uniform. Bandwidths are floored at [`MIN_BANDWIDTH`]. A dimension inactive in a point (a
//!   parameter of a conditional branch not taken) is left out of that point's kernel.
//! - **Proposal.** `num_samples` candidates are drawn from the good density with its
//!   bandwidths multiplied by `bandwidth_factor`: a random good observation, each continuous
//!   coordinate moved by a normal truncated to `[0, 1)`, each categorical one kept with
//!   probability `1 − λ·(c−1)/c` and otherwise replaced by a uniformly drawn other category
//!   (a coordinate the observation lacks is drawn uniformly). The candidate with the largest
//!   `l(x)/g(x)` under the unwidened good (`l`) and bad (`g`) densities wins; densities are
//!   compared as logarithms, so tiny bandwidths never underflow to `0/0`.
//!
//! Everything random comes from the stream `"bohb"` of the experiment seed, and observations
//! are kept in ordered maps, so the proposals are deterministic given the seed and the calls.
//!
//! ## References
//!
//! - Stefan Falkner, Aaron Klein and Frank Hutter, "BOHB: Robust and Efficient Hyperparameter
//!   Optimization at Scale", ICML 2018 (and its reference implementation, `hpbandster`'s
//!   `config_generators/bohb.py`): the model, its good/bad split, the sampling of candidates.
//! - James Bergstra, Rémi Bardenet, Yoshua Bengio and Balázs Kégl, "Algorithms for
//!   Hyper-Parameter Optimization", NeurIPS 2011: the density ratio `l(x)/g(x)` (TPE).
//! - John Aitchison and Colin Aitken, "Multivariate binary discrimination by the kernel
//!   method", Biometrika 63(3), 1976: the kernel for categorical dimensions.
//! - David W. Scott, "Multivariate Density Estimation", Wiley 1992: the bandwidth rule.

use std::collections::BTreeMap;

use rand::Rng;
use tune_core::Result;
use tune_core::rng::{self, ChaCha20Rng};
use tune_core::searcher::{Searcher, Suggestion, TrialResult};
use tune_core::space::Space;
use tune_core::trial::{Mode, Report, TrialId};
use tune_core::value::Config;

use crate::BohbConfig;
use crate::distinct::Distinct;
use crate::numerics::{LN_SQRT_2PI, log_sum_exp, normal_by_rejection};
use crate::unit::{DimKind, UnitSpace};

/// The smallest kernel bandwidth (in unit coordinates, or λ for a categorical dimension).
pub const MIN_BANDWIDTH: f64 = 1e-3;

/// The standard deviation of the uniform distribution on `[0, 1)`: the spread assumed for a
/// dimension with fewer than two active values in a set.
const UNIFORM_SIGMA: f64 = 0.288_675_134_594_812_9;

/// Draws of a truncated normal before falling back to a uniform coordinate.
const TRUNCATED_NORMAL_TRIES: usize = 64;

/// Model-based Hyperband's searcher: random configurations until some budget has enough results,
/// then the best of `num_samples` candidates under the density ratio of that budget's good and
/// bad results (see the [module documentation](self)).
pub struct Bohb {
    space: Space,
    unit: UnitSpace,
    kinds: Vec<Kernel>,
    metric: String,
    mode: Mode,
    min_points_in_model: usize,
    top_n_percent: f64,
    random_fraction: f64,
    bandwidth_factor: f64,
    num_samples: usize,
    rng: ChaCha20Rng,
    /// The unit encoding of each trial's configuration.
    encodings: BTreeMap<TrialId, Encoding>,
    /// Budget → trial → score (higher is better, `-inf` for the worst).
    budgets: BTreeMap<u64, BTreeMap<TrialId, f64>>,
    /// The budget of each trial's most recent observation.
    latest: BTreeMap<TrialId, u64>,
    /// Every configuration suggested or told of, so that none is proposed twice.
    distinct: Distinct,
}

/// A configuration in unit coordinates with the mask of its active dimensions.
#[derive(Debug, Clone, PartialEq)]
struct Encoding {
    unit: Vec<f64>,
    active: Vec<bool>,
}

/// How one unit dimension is smoothed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kernel {
    /// Gaussian, truncated to `[0, 1)` when sampling (continuous and integer dimensions).
    Gaussian,
    /// Aitchison–Aitken over this many categories.
    Categorical(usize),
}

impl Bohb {
    /// A BOHB searcher over `space` maximising or minimising `metric`, its randomness drawn from
    /// the stream `"bohb"` of the experiment `seed`. Settings out of range are clamped to the
    /// nearest sensible value ([`crate::SearcherConfig::validate`] rejects them before a sweep).
    pub fn new(c: &BohbConfig, space: &Space, metric: &str, mode: Mode, seed: u64) -> Self {
        let unit = UnitSpace::new(space);
        let kinds: Vec<Kernel> = unit
            .dims()
            .iter()
            .map(|dim| match dim.kind {
                DimKind::Categorical { options } => Kernel::Categorical(options.max(1)),
                _ => Kernel::Gaussian,
            })
            .collect();
        let min_points_in_model = match c.min_points_in_model {
            Some(points) => usize::try_from(points.max(1)).unwrap_or(usize::MAX / 4),
            None => kinds.len() + 1,
        };
        Bohb {
            space: space.clone(),
            unit,
            kinds,
            metric: metric.to_owned(),
            mode,
            min_points_in_model,
            top_n_percent: if c.top_n_percent.is_finite() {
                c.top_n_percent.clamp(0.0, 100.0)
            } else {
                15.0
            },
            random_fraction: if c.random_fraction.is_nan() {
                0.0
            } else {
                c.random_fraction.clamp(0.0, 1.0)
            },
            bandwidth_factor: if c.bandwidth_factor.is_finite() && c.bandwidth_factor > 0.0 {
                c.bandwidth_factor
            } else {
                1.0
            },
            num_samples: usize::try_from(c.num_samples.max(1)).unwrap_or(1),
            rng: rng::stream(seed, "bohb"),
            encodings: BTreeMap::new(),
            budgets: BTreeMap::new(),
            latest: BTreeMap::new(),
            distinct: Distinct::new(space),
        }
    }

    /// The budget the model would be fitted on now: the largest with at least
    /// `min_points_in_model + 2` observations.
    fn model_budget(&self) -> Option<u64> {
        let needed = self.min_points_in_model.saturating_add(2);
        self.budgets
            .iter()
            .rev()
            .find(|(_, observations)| observations.len() >= needed)
            .map(|(&budget, _)| budget)
    }

    /// The score of a metric value: `-inf` (the worst) unless the value is finite.
    fn score(&self, value: Option<f64>) -> f64 {
        match value {
            Some(value) if value.is_finite() => self.mode.score(value),
            _ => f64::NEG_INFINITY,
        }
    }

    fn observe(&mut self, trial: TrialId, budget: u64, score: f64) {
        debug_assert!(!score.is_nan());
        self.budgets.entry(budget).or_default().insert(trial, score);
        self.latest.insert(trial, budget);
    }

    fn remember(&mut self, trial: TrialId, config: &Config) {
        if !self.encodings.contains_key(&trial) {
            let (unit, active) = self.unit.encode(config);
            self.encodings.insert(trial, Encoding { unit, active });
        }
    }

    /// The encodings of `budget`'s observations, best first (ties to the older trial).
    fn ranked(&self, budget: u64) -> Vec<&Encoding> {
        let mut scored: Vec<(TrialId, f64)> = self.budgets[&budget]
            .iter()
            .filter(|(trial, _)| self.encodings.contains_key(trial))
            .map(|(&trial, &score)| (trial, score))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.iter().map(|(trial, _)| &self.encodings[trial]).collect()
    }

    /// The best of `num_samples` candidates drawn around the good observations of `budget`, or
    /// `None` when the budget's observations are too few to model.
    fn propose(&mut self, budget: u64) -> Option<Config> {
        let ranked: Vec<Encoding> = self.ranked(budget).into_iter().cloned().collect();
        if ranked.len() < self.min_points_in_model.saturating_add(2) {
            return None;
        }
        let (n_good, n_bad) = split_sizes(ranked.len(), self.min_points_in_model, self.top_n_percent);
        let good = Density::fit(&self.kinds, ranked[..n_good].iter().collect());
        let bad = Density::fit(&self.kinds, ranked[ranked.len() - n_bad..].iter().collect());
        let mut best: Option<(f64, Config)> = None;
        for _ in 0..self.num_samples {
            let unit = good.sample(&self.kinds, self.bandwidth_factor, &mut self.rng);
            let config = self.unit.decode(&unit);
            let (unit, active) = self.unit.encode(&config);
            let candidate = Encoding { unit, active };
            let ratio = good.log_density(&self.kinds, &candidate) - bad.log_density(&self.kinds, &candidate);
            debug_assert!(!ratio.is_nan());
            if self.distinct.contains(&config) {
                continue;
            }
            if best.as_ref().is_none_or(|(incumbent, _)| ratio > *incumbent) {
                best = Some((ratio, config));
            }
        }
        best.map(|(_, config)| config)
    }
}

impl Searcher for Bohb {
    fn suggest(&mut self, trial: TrialId) -> Result<Suggestion> {
        let random = self.rng.random::<f64>() < self.random_fraction;
        let modelled = if random || self.kinds.is_empty() {
            None
        } else {
            self.model_budget().and_then(|budget| self.propose(budget))
        };
        let config = match modelled {
            Some(config) => config,
            None => self.space.sample(&mut self.rng, &BTreeMap::new()),
        };
        // Every candidate (or the random draw) was seen: a fresh random one instead, if any is left.
        let Some(config) = self.distinct.claim(config, &self.space, &mut self.rng) else {
            return Ok(Suggestion::Exhausted);
        };
        self.encodings.remove(&trial);
        self.remember(trial, &config);
        Ok(Suggestion::Config(config))
    }

    fn on_trial_result(&mut self, trial: TrialId, report: &Report) {
        if !self.encodings.contains_key(&trial) {
            return;
        }
        let score = self.score(report.metrics.get(&self.metric).copied());
        self.observe(trial, report.step, score);
    }

    fn on_trial_complete(&mut self, trial: TrialId, result: &TrialResult<'_>) {
        self.distinct.insert(result.config);
        self.remember(trial, result.config);
        if let Some(report) = result.last {
            let already = self.budgets.get(&report.step).is_some_and(|b| b.contains_key(&trial));
            if !already {
                let score = self.score(report.metrics.get(&self.metric).copied());
                self.observe(trial, report.step, score);
            }
        }
        if result.failed
            && let Some(&budget) = self.latest.get(&trial)
        {
            self.observe(trial, budget, f64::NEG_INFINITY);
        }
    }
}

/// The sizes of the good and the bad set among `n` ranked observations:
/// `max(m, ⌈p/100 · n⌉)` and `max(m, ⌈(100 − p)/100 · n⌉)`, each at most `n`.
fn split_sizes(n: usize, min_points_in_model: usize, top_n_percent: f64) -> (usize, usize) {
    let ceil_percent = |percent: f64| {
        let exact = percent * n as f64 / 100.0;
        // A relative slack so that 15% of 40 is 6, not 7 through 6.000000000000001.
        (exact - exact.abs() * 1e-9).ceil().max(0.0) as usize
    };
    let good = ceil_percent(top_n_percent).max(min_points_in_model).min(n);
    let bad = ceil_percent(100.0 - top_n_percent).max(min_points_in_model).min(n);
    (good, bad)
}

/// The category a unit coordinate falls in.
fn category_of(unit: f64, options: usize) -> usize {
    ((unit * options as f64).floor().max(0.0) as usize).min(options.saturating_sub(1))
}

/// The unit coordinate of a category: the middle of its cell.
fn category_unit(category: usize, options: usize) -> f64 {
    (category as f64 + 0.5) / options as f64
}

/// A product-kernel density estimate over unit encodings.
struct Density<'a> {
    points: Vec<&'a Encoding>,
    /// One bandwidth per dimension: σ of the Gaussian, or λ of the Aitchison–Aitken kernel.
    bandwidths: Vec<f64>,
}

impl<'a> Density<'a> {
    /// Fits bandwidths to `points` (at least one) by Scott's rule, per dimension over the points
    /// where it is active.
    fn fit(kinds: &[Kernel], points: Vec<&'a Encoding>) -> Self {
        debug_assert!(!points.is_empty());
        let exponent = -1.0 / (4.0 + kinds.len() as f64);
        let bandwidths = kinds
            .iter()
            .enumerate()
            .map(|(dim, kind)| {
                let values: Vec<f64> = points
                    .iter()
                    .filter(|point| point.active[dim])
                    .map(|point| match *kind {
                        Kernel::Gaussian => point.unit[dim],
                        Kernel::Categorical(options) => category_of(point.unit[dim], options) as f64,
                    })
                    .collect();
                let sigma = if values.len() >= 2 {
                    sample_std(&values)
                } else {
                    match *kind {
                        Kernel::Gaussian => UNIFORM_SIGMA,
                        Kernel::Categorical(options) => options as f64 * UNIFORM_SIGMA,
                    }
                };
                let bandwidth = (1.06 * sigma * (values.len().max(1) as f64).powf(exponent)).max(MIN_BANDWIDTH);
                match *kind {
                    Kernel::Gaussian => bandwidth,
                    Kernel::Categorical(options) => bandwidth.min(uniform_lambda(options)).max(0.0),
                }
            })
            .collect();
        Density { points, bandwidths }
    }

    /// The log density at `x`: the log of the mean over points of the product of the kernels of
    /// the dimensions active in both.
    fn log_density(&self, kinds: &[Kernel], x: &Encoding) -> f64 {
        let terms: Vec<f64> = self
            .points
            .iter()
            .map(|point| {
                kinds
                    .iter()
                    .enumerate()
                    .filter(|&(dim, _)| x.active[dim] && point.active[dim])
                    .map(|(dim, kind)| {
                        let bandwidth = self.bandwidths[dim];
                        match *kind {
                            Kernel::Gaussian => {
                                let z = (x.unit[dim] - point.unit[dim]) / bandwidth;
                                -0.5 * z * z - bandwidth.ln() - LN_SQRT_2PI
                            }
                            Kernel::Categorical(options) => {
                                aitchison_aitken_ln(x.unit[dim], point.unit[dim], options, bandwidth)
                            }
                        }
                    })
                    .sum()
            })
            .collect();
        log_sum_exp(&terms) - (self.points.len() as f64).ln()
    }

    /// A draw from the density with every bandwidth multiplied by `factor`.
    fn sample(&self, kinds: &[Kernel], factor: f64, rng: &mut impl Rng) -> Vec<f64> {
        let base = self.points[rng.random_range(0..self.points.len())];
        kinds
            .iter()
            .enumerate()
            .map(|(dim, kind)| {
                if !base.active[dim] {
                    return rng.random::<f64>();
                }
                let bandwidth = self.bandwidths[dim] * factor;
                match *kind {
                    Kernel::Gaussian => truncated_normal(rng, base.unit[dim], bandwidth),
                    Kernel::Categorical(options) => {
                        let kept = category_of(base.unit[dim], options);
                        if options < 2 {
                            return category_unit(kept, options);
                        }
                        let change = bandwidth.min(1.0) * uniform_lambda(options);
                        let category = if rng.random::<f64>() < change {
                            let other = rng.random_range(0..options - 1);
                            if other >= kept { other + 1 } else { other }
                        } else {
                            kept
                        };
                        category_unit(category, options)
                    }
                }
            })
            .collect()
    }
}

/// The λ at which the Aitchison–Aitken kernel over `options` categories is uniform.
fn uniform_lambda(options: usize) -> f64 {
    (options.saturating_sub(1)) as f64 / options.max(1) as f64
}

/// The log of the Aitchison–Aitken kernel: `1 − λ` for the same category, `λ/(c − 1)` for
/// each other one.
fn aitchison_aitken_ln(x: f64, center: f64, options: usize, lambda: f64) -> f64 {
    if options < 2 {
        return 0.0;
    }
    if category_of(x, options) == category_of(center, options) {
        (1.0 - lambda).ln()
    } else {
        (lambda / (options - 1) as f64).ln()
    }
}

/// The sample standard deviation (n − 1 in the denominator) of at least two values.
fn sample_std(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// A normal draw around `mean` with deviation `sigma`, truncated to `[0, 1)` by rejection; after
/// [`TRUNCATED_NORMAL_TRIES`] rejections (which takes a mean far outside the interval) a uniform
/// draw.
fn truncated_normal(rng: &mut impl Rng, mean: f64, sigma: f64) -> f64 {
    normal_by_rejection(rng, mean, sigma, TRUNCATED_NORMAL_TRIES, |value| {
        (0.0..1.0).contains(&value)
    })
    .unwrap_or_else(|| rng.random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{arb_space, branin, config_of, distinct_or_exhausted, float};
    use proptest::prelude::*;
    use rand::Rng;
    use serde_json::json;
    use tune_core::space::Domain;
    use tune_core::trial::Metrics;

    fn settings() -> BohbConfig {
        BohbConfig {
            min_points_in_model: None,
            top_n_percent: 15.0,
            random_fraction: 1.0 / 3.0,
            bandwidth_factor: 3.0,
            num_samples: 64,
        }
    }

    fn report(step: u64, value: f64) -> Report {
        Report {
            step,
            metrics: Metrics::from([("loss".to_owned(), value)]),
        }
    }

    fn complete(searcher: &mut Bohb, trial: TrialId, config: &Config, last: Option<&Report>, failed: bool) {
        searcher.on_trial_complete(trial, &TrialResult { config, last, failed });
    }

    fn square() -> Space {
        Space::new()
            .with("x", Domain::uniform(0.0, 1.0).unwrap())
            .unwrap()
            .with("y", Domain::uniform(0.0, 1.0).unwrap())
            .unwrap()
    }

    /// The default settings with `random_fraction` changed.
    fn with_random_fraction(random_fraction: f64) -> BohbConfig {
        BohbConfig {
            random_fraction,
            ..settings()
        }
    }

    /// A searcher over [`square`] that optimises "loss".
    fn on_square(settings: &BohbConfig, mode: Mode, seed: u64) -> Bohb {
        Bohb::new(settings, &square(), "loss", mode, seed)
    }

    #[test]
    fn split_sizes_follow_the_reference_rule() {
        // Few points: both sets hold min_points_in_model and overlap.
        assert_eq!(split_sizes(5, 3, 15.0), (3, 5));
        assert_eq!(split_sizes(5, 3, 50.0), (3, 3));
        // 15% of 40 is exactly 6 (no float round-up to 7), 85% is 34.
        assert_eq!(split_sizes(40, 3, 15.0), (6, 34));
        assert_eq!(split_sizes(100, 3, 15.0), (15, 85));
        assert_eq!(split_sizes(41, 3, 15.0), (7, 35));
        // min_points_in_model dominates a small percentage, and nothing exceeds n.
        assert_eq!(split_sizes(12, 10, 15.0), (10, 11));
        assert_eq!(split_sizes(2, 5, 15.0), (2, 2));
    }

    #[test]
    fn observations_are_bucketed_by_budget_and_the_largest_full_budget_is_modelled() {
        // d = 2, so min_points_in_model = 3 and a budget needs 5 observations.
        let mut searcher = on_square(&settings(), Mode::Min, 1);
        assert_eq!(searcher.min_points_in_model, 3);
        let counts = |searcher: &Bohb| -> Vec<(u64, usize)> {
            searcher
                .budgets
                .iter()
                .map(|(&budget, obs)| (budget, obs.len()))
                .collect()
        };
        for n in 1..=6 {
            let trial = TrialId(n);
            config_of(searcher.suggest(trial).unwrap());
            searcher.on_trial_result(trial, &report(1, n as f64));
            // A second report at the same step replaces the first.
            searcher.on_trial_result(trial, &report(1, 10.0 - n as f64));
            searcher.on_trial_result(trial, &report(3, n as f64));
            if n <= 4 {
                searcher.on_trial_result(trial, &report(9, n as f64));
            }
        }
        assert_eq!(counts(&searcher), [(1, 6), (3, 6), (9, 4)]);
        assert_eq!(searcher.budgets[&1][&TrialId(2)], -8.0);
        assert_eq!(searcher.model_budget(), Some(3));
        // A report from a trial the searcher never proposed (nor was told about) is ignored.
        searcher.on_trial_result(TrialId(99), &report(9, 0.0));
        assert_eq!(counts(&searcher), [(1, 6), (3, 6), (9, 4)]);
        searcher.on_trial_result(TrialId(5), &report(9, 5.0));
        assert_eq!(searcher.model_budget(), Some(9));
        assert_eq!(searcher.ranked(9).len(), 5);
    }

    /// Trials whose results at budget 1 favour small `x` and at budget 9 favour large `x`: the
    /// model follows whichever is the largest budget with enough results.
    #[test]
    fn the_model_follows_the_largest_budget_with_enough_points() {
        let model_only = with_random_fraction(0.0);
        let mut searcher = on_square(&model_only, Mode::Min, 3);
        let mut next = 0;
        let mut add = |searcher: &mut Bohb, x: f64, y: f64, budgets: &[u64]| {
            next += 1;
            let trial = TrialId(next);
            let config = Config(serde_json::from_value(json!({"x": x, "y": y})).unwrap());
            complete(searcher, trial, &config, None, false);
            for &budget in budgets {
                let loss = if budget == 1 { x } else { 1.0 - x };
                searcher.on_trial_result(trial, &report(budget, loss));
            }
        };
        let mean_x = |searcher: &mut Bohb, from: u64| {
            (0..20)
                .map(|i| {
                    let config = config_of(searcher.suggest(TrialId(from + i)).unwrap());
                    float(&config, "x")
                })
                .sum::<f64>()
                / 20.0
        };
        for i in 0..20 {
            add(
                &mut searcher,
                (i as f64 + 0.5) / 20.0,
                ((i * 7) % 20) as f64 / 20.0,
                &[1],
            );
        }
        for i in 0..4 {
            add(&mut searcher, 0.1 + 0.25 * i as f64, 0.5, &[1, 9]);
        }
        assert_eq!(searcher.model_budget(), Some(1));
        let low = mean_x(&mut searcher, 1000);
        assert!(low < 0.3, "budget 1 favours small x, got mean {low}");
        add(&mut searcher, 0.95, 0.5, &[1, 9]);
        assert_eq!(searcher.model_budget(), Some(9));
        let high = mean_x(&mut searcher, 2000);
        assert!(high > 0.6, "budget 9 favours large x, got mean {high}");
    }

    #[test]
    fn random_fraction_one_never_uses_the_model() {
        let random_only = with_random_fraction(1.0);
        let mut informed = on_square(&random_only, Mode::Min, 11);
        let mut blind = on_square(&random_only, Mode::Min, 11);
        for n in 1..=40 {
            let trial = TrialId(n);
            let config = config_of(informed.suggest(trial).unwrap());
            assert_eq!(Suggestion::Config(config.clone()), blind.suggest(trial).unwrap());
            let x = float(&config, "x");
            informed.on_trial_result(trial, &report(1, x));
        }
        assert_eq!(informed.model_budget(), Some(1));
        // The same history with random_fraction = 0 does use the model.
        let mut modelled = on_square(&with_random_fraction(0.0), Mode::Min, 11);
        modelled.encodings = informed.encodings.clone();
        modelled.budgets = informed.budgets.clone();
        let mut reference = on_square(&random_only, Mode::Min, 11);
        assert_ne!(
            modelled.suggest(TrialId(41)).unwrap(),
            reference.suggest(TrialId(41)).unwrap()
        );
    }

    #[test]
    fn same_seed_and_calls_give_the_same_configs() {
        let run = |seed| {
            let mut searcher = on_square(&settings(), Mode::Max, seed);
            (1..=30)
                .map(|n| {
                    let config = config_of(searcher.suggest(TrialId(n)).unwrap());
                    let x = float(&config, "x");
                    searcher.on_trial_result(TrialId(n), &report(1, x));
                    config
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn non_finite_and_missing_results_rank_worst_without_panicking() {
        let mut searcher = on_square(&with_random_fraction(0.0), Mode::Min, 2);
        for n in 1..=30u64 {
            let trial = TrialId(n);
            let config = config_of(searcher.suggest(trial).unwrap());
            assert!(square().contains(&config));
            let value = match n % 5 {
                0 => f64::NAN,
                1 => f64::NEG_INFINITY,
                2 => f64::INFINITY,
                _ => n as f64,
            };
            searcher.on_trial_result(trial, &report(1, value));
            if n % 7 == 0 {
                let other = Report {
                    step: 2,
                    metrics: Metrics::from([("accuracy".to_owned(), 1.0)]),
                };
                searcher.on_trial_result(trial, &other);
            }
            if n % 4 == 0 {
                complete(&mut searcher, trial, &config, Some(&report(1, value)), true);
            }
        }
        let scores = &searcher.budgets[&1];
        assert_eq!(scores[&TrialId(5)], f64::NEG_INFINITY, "NaN");
        assert_eq!(
            scores[&TrialId(1)],
            f64::NEG_INFINITY,
            "-inf in min mode is not the best"
        );
        assert_eq!(scores[&TrialId(2)], f64::NEG_INFINITY, "inf");
        assert_eq!(scores[&TrialId(3)], -3.0);
        assert_eq!(scores[&TrialId(8)], f64::NEG_INFINITY, "failed");
        assert_eq!(searcher.budgets[&2][&TrialId(7)], f64::NEG_INFINITY, "missing metric");
        // The best observations are the finite ones, lowest loss first.
        let best = searcher.ranked(1)[0].clone();
        assert_eq!(best, searcher.encodings[&TrialId(3)]);
        // Every observation worst: the model still proposes configurations in the space.
        let mut all_bad = on_square(&with_random_fraction(0.0), Mode::Max, 4);
        for n in 1..=10 {
            config_of(all_bad.suggest(TrialId(n)).unwrap());
            all_bad.on_trial_result(TrialId(n), &report(3, f64::NAN));
        }
        for n in 11..=20 {
            assert!(square().contains(&config_of(all_bad.suggest(TrialId(n)).unwrap())));
        }
    }

    #[test]
    fn a_failed_trial_turns_its_latest_observation_worst() {
        let mut searcher = on_square(&settings(), Mode::Min, 9);
        let config = config_of(searcher.suggest(TrialId(1)).unwrap());
        searcher.on_trial_result(TrialId(1), &report(1, 0.5));
        searcher.on_trial_result(TrialId(1), &report(3, 0.4));
        complete(&mut searcher, TrialId(1), &config, Some(&report(3, 0.4)), true);
        assert_eq!(searcher.budgets[&1][&TrialId(1)], -0.5);
        assert_eq!(searcher.budgets[&3][&TrialId(1)], f64::NEG_INFINITY);
        // A trial that failed before reporting leaves no observation.
        let config = config_of(searcher.suggest(TrialId(2)).unwrap());
        complete(&mut searcher, TrialId(2), &config, None, true);
        assert!(searcher.budgets.values().all(|b| !b.contains_key(&TrialId(2))));
    }

    /// Branin as a multi-fidelity toy: brackets of 9 configurations, each reporting at steps 1, 3
    /// and 9 the value `f(x) + 10/step` (the budget only adds a known offset), then completing.
    /// Returns the smallest `f` over all `brackets · 9` configurations.
    fn branin_brackets(searcher: &mut dyn Searcher, brackets: u64) -> f64 {
        let mut best = f64::INFINITY;
        let mut next = 0;
        for _ in 0..brackets {
            let bracket: Vec<(TrialId, Config, f64)> = (0..9)
                .map(|_| {
                    next += 1;
                    let config = config_of(searcher.suggest(TrialId(next)).unwrap());
                    let x1 = float(&config, "x1");
                    let x2 = float(&config, "x2");
                    (TrialId(next), config, branin(x1, x2))
                })
                .collect();
            for (trial, config, f) in &bracket {
                best = best.min(*f);
                for step in [1, 3, 9] {
                    searcher.on_trial_result(*trial, &report(step, f + 10.0 / step as f64));
                }
                let last = report(9, f + 10.0 / 9.0);
                complete_any(searcher, *trial, config, &last);
            }
        }
        best
    }

    fn complete_any(searcher: &mut dyn Searcher, trial: TrialId, config: &Config, last: &Report) {
        let result = TrialResult {
            config,
            last: Some(last),
            failed: false,
        };
        searcher.on_trial_complete(trial, &result);
    }

    /// 63 configurations on Branin, over 32 fixed seeds: the geometric mean of BOHB's regret
    /// (best `f` above the minimum 0.397887) is well below random search's. Single seeds are
    /// noisy at this size (either can win), so the comparison is over the whole block of seeds;
    /// at the time of writing the means are about 0.22 against 0.49.
    #[test]
    fn beats_random_search_on_multi_fidelity_branin() {
        let space = Space::new()
            .with("x1", Domain::uniform(-5.0, 10.0).unwrap())
            .unwrap()
            .with("x2", Domain::uniform(0.0, 15.0).unwrap())
            .unwrap();
        let seeds = 1..=32u64;
        let count = seeds.clone().count() as f64;
        let (mut bohb_log_regret, mut random_log_regret) = (0.0, 0.0);
        for seed in seeds {
            let mut bohb = Bohb::new(&settings(), &space, "loss", Mode::Min, seed);
            let mut random = crate::RandomSearch::new(space.clone(), seed);
            bohb_log_regret += (branin_brackets(&mut bohb, 7) - 0.397887).ln();
            random_log_regret += (branin_brackets(&mut random, 7) - 0.397887).ln();
        }
        let bohb = (bohb_log_regret / count).exp();
        let random = (random_log_regret / count).exp();
        assert!(
            bohb < 0.7 * random,
            "geometric mean regret: bohb {bohb}, random {random}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn suggestions_always_lie_in_the_space(space in arb_space(), seed in any::<u64>()) {
            let model_mostly = BohbConfig { random_fraction: 0.1, num_samples: 16, ..settings() };
            let mut searcher = Bohb::new(&model_mostly, &space, "loss", Mode::Min, seed);
            let mut values = rng::stream(seed, "test");
            let mut seen = crate::distinct::Distinct::new(&space);
            for n in 1..=40 {
                let suggestion = searcher.suggest(TrialId(n)).unwrap();
                let Some(_config) = distinct_or_exhausted(suggestion, &space, &mut seen)? else {
                    break;
                };
                searcher.on_trial_result(TrialId(n), &report(1, values.random::<f64>()));
                if n % 2 == 0 {
                    searcher.on_trial_result(TrialId(n), &report(2, values.random::<f64>()));
                }
            }
        }
    }
}
