//! Bayesian optimisation with a Gaussian process and (log) expected improvement.
//!
//! [`GpSearch`] proposes the first `n_startup_trials` configurations from a scrambled Sobol
//! sequence (the points [`SobolSearch`](crate::sobol::SobolSearch) gives with the same seed).
//! From then on each suggestion:
//!
//! 1. **Inputs.** Every completed trial's configuration is encoded in the unit cube
//!    ([`UnitSpace`]: log domains already on their log scale, integers at the centre of their
//!    bin); each choice becomes a one-hot block, and dimensions a configuration does not use
//!    (an option not taken) are set to a neutral value (0.5, or an all-zero one-hot block).
//! 2. **Outputs.** Scores `mode.score(value)` (higher is better) of the metric's last report;
//!    failed trials and NaN or infinite values take the worst finite score observed, so they
//!    repel the search without distorting the model. Scores are standardised to mean 0, sd 1.
//! 3. **Model.** A Gaussian process with a Matérn-5/2 kernel, one length scale per dimension
//!    of the space (a one-hot block shares one), a signal variance and a noise variance. The
//!    log hyperparameters maximise the log marginal likelihood plus weak log-normal priors
//!    (MAP), by L-BFGS with a Moré–Thuente line search and analytic gradients, from `restarts`
//!    starting points: the previous fit (or sensible defaults), the defaults, and random draws.
//!    With more than [`FIT_SUBSET`] results the hyperparameters are fitted on a subset (the
//!    best quarter and a random rest); the model itself always uses every result.
//! 4. **Pending trials** (suggested, not yet complete) join the data as "kriging believers":
//!    with the model's predicted mean as their value, which leaves the mean unchanged and
//!    shrinks the variance around them, so parallel suggestions spread out.
//! 5. **Acquisition.** Log expected improvement over the best observed standardised score,
//!    computed stably far into the tail, maximised by L-BFGS from `acquisition_starts` points
//!    (random points and the best observed points slightly perturbed) in the relaxed cube
//!    (integers continuous, one-hot blocks in `[0, 1]` each), the box handled by clamping.
//!    Each optimum is decoded (integers rounded to their bin, the largest entry of a one-hot
//!    block taken), re-scored at its decoded point, and the best one not already observed or
//!    pending is suggested.
//!
//! Everything is deterministic given the seed and the sequence of calls. Numerical trouble
//! (duplicate points, constant or non-finite outputs, a failed factorisation) never panics: the
//! Cholesky factorisation adds jitter (from 10⁻⁸, ×10 until it succeeds), and a model that
//! cannot be built falls back to the next Sobol point.
//!
//! The pieces live in submodules: the GP-input layout in `layout`, the kernel, the posterior
//! and the hyperparameter objective in `model`, log EI in `acquisition`, the L-BFGS driver in
//! `lbfgs` (the Cholesky factorisation is in the crate's shared numerics); this module ties them
//! into the searcher.
//!
//! ## References
//!
//! - C. E. Rasmussen, C. K. I. Williams, *Gaussian Processes for Machine Learning*, MIT Press,
//!   2006 (the Matérn kernel, §4.2; the marginal likelihood and its gradient, §5.4.1;
//!   Algorithm 2.1).
//! - D. R. Jones, M. Schonlau, W. J. Welch, "Efficient Global Optimization of Expensive
//!   Black-Box Functions", Journal of Global Optimization 13, 1998 (expected improvement).
//! - S. Ament, S. Daulton, D. Eriksson, M. Balandat, E. Bakshy, "Unexpected Improvements to
//!   Expected Improvement for Bayesian Optimization", NeurIPS 2023 (log EI).
//! - C. Hvarfner, E. O. Hellsten, L. Nardi, "Vanilla Bayesian Optimization Performs Great in
//!   High Dimensions", ICML 2024 (the length-scale prior LogNormal(√2 + ½ ln d, √3)).
//! - D. Ginsbourger, R. Le Riche, L. Carraro, "Kriging Is Well-Suited to Parallelize
//!   Optimization", 2010 (the kriging believer).
//! - J. Nocedal, S. J. Wright, *Numerical Optimization*, Springer, 2006 (L-BFGS), and
//!   J. J. Moré, D. J. Thuente, "Line search algorithms with guaranteed sufficient decrease",
//!   ACM TOMS 20(3), 1994.

mod acquisition;
mod layout;
mod lbfgs;
mod model;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use rand::Rng;
use tune_core::Result;
use tune_core::rng::{self, ChaCha20Rng};
use tune_core::searcher::{Searcher, Suggestion, TrialResult};
use tune_core::space::Space;
use tune_core::trial::{Mode, TrialId};
use tune_core::value::Config;

use self::acquisition::Acquisition;
use self::layout::Layout;
use self::lbfgs::minimize;
use self::model::{Hyper, Marginal, Model};
use crate::GpConfig;
use crate::distinct::Distinct;
use crate::sobol::SobolSequence;
use crate::unit::UnitSpace;

/// Most results the kernel hyperparameters are fitted on (the model then uses all of them).
pub const FIT_SUBSET: usize = 100;
/// L-BFGS iterations of each hyperparameter restart; the best then goes on for
/// [`FIT_POLISH_ITERATIONS`] more.
const FIT_ITERATIONS: u64 = 10;
/// L-BFGS iterations that polish the best hyperparameter restart.
const FIT_POLISH_ITERATIONS: u64 = 40;
/// L-BFGS iterations per acquisition start.
const ACQUISITION_ITERATIONS: u64 = 30;
/// Stopping tolerances (gradient norm, cost change) of the hyperparameter fit; its cost is the
/// negative log posterior per observation.
const FIT_TOLERANCE: (f64, f64) = (1e-5, 1e-9);
/// Stopping tolerances of the acquisition optimisation (log EI).
const ACQUISITION_TOLERANCE: (f64, f64) = (1e-7, 1e-10);
/// How far the best observed points are moved (uniformly, per coordinate) to start the
/// acquisition optimisation.
const PERTURBATION: f64 = 0.05;

/// Gaussian-process Bayesian optimisation: see the [module documentation](self).
pub struct GpSearch {
    unit: UnitSpace,
    layout: Layout,
    sobol: SobolSequence,
    metric: String,
    mode: Mode,
    n_startup_trials: u64,
    restarts: usize,
    acquisition_starts: usize,
    rng: ChaCha20Rng,
    /// Completed trials: GP features and score (`None`: failed, NaN or infinite).
    observations: Vec<(Vec<f64>, Option<f64>)>,
    /// Suggested trials not yet complete, by id: their GP features.
    pending: BTreeMap<TrialId, Vec<f64>>,
    /// The last fitted log hyperparameters, the first start of the next fit.
    last_fit: Option<Vec<f64>>,
    /// The space, for fresh draws when a suggestion was seen already.
    space: Space,
    /// Every configuration suggested or told of, so that none is proposed twice.
    distinct: Distinct,
}

impl GpSearch {
    /// A GP searcher over `space` optimising `metric` in `mode`, its randomness drawn from the
    /// experiment `seed` (settings are checked by [`SearcherConfig::validate`](crate::SearcherConfig::validate);
    /// out-of-range ones are raised to 1 here).
    pub fn new(c: &GpConfig, space: &Space, metric: &str, mode: Mode, seed: u64) -> GpSearch {
        let unit = UnitSpace::new(space);
        GpSearch {
            layout: Layout::new(&unit),
            unit,
            sobol: SobolSequence::scrambled(seed),
            metric: metric.to_owned(),
            mode,
            n_startup_trials: c.n_startup_trials.max(1) as u64,
            restarts: c.restarts.max(1) as usize,
            acquisition_starts: c.acquisition_starts.max(1) as usize,
            rng: rng::stream(seed, "gp"),
            observations: Vec::new(),
            pending: BTreeMap::new(),
            last_fit: None,
            space: space.clone(),
            distinct: Distinct::new(space),
        }
    }

    /// The configuration at Sobol point `index`.
    fn quasi_random(&self, index: u64) -> Config {
        self.unit.decode(&self.sobol.point(index, self.unit.len()))
    }

    /// The standardised scores of the observations (failures at the worst finite score).
    fn standardised_scores(&self) -> Vec<f64> {
        let worst = self
            .observations
            .iter()
            .filter_map(|(_, score)| *score)
            .fold(f64::INFINITY, f64::min);
        let worst = if worst.is_finite() { worst } else { 0.0 };
        let scores: Vec<f64> = self
            .observations
            .iter()
            .map(|(_, score)| score.unwrap_or(worst))
            .collect();
        standardise(&scores)
    }

    /// The model-based suggestion, or `None` when no usable model could be built.
    fn model_suggestion(&mut self) -> Option<Config> {
        let n = self.observations.len();
        let features = self.layout.features;
        let y = self.standardised_scores();
        let x: Vec<f64> = self
            .observations
            .iter()
            .flat_map(|(point, _)| point.iter().copied())
            .collect();

        let theta = self.fit_hyperparameters(&x, &y);
        self.last_fit = Some(theta.clone());
        let hyper = Hyper::from_log(&theta, &self.layout);

        // Kriging believer: pending points join with the predicted mean as their value.
        let (x, y) = if self.pending.is_empty() {
            (x, y)
        } else {
            let model = Model::new(x.clone(), features, &y, &hyper)?;
            let mut x_all = x;
            let mut y_all = y;
            for point in self.pending.values() {
                let (mean, _) = model.predict(point);
                x_all.extend_from_slice(point);
                y_all.push(if mean.is_finite() { mean } else { 0.0 });
            }
            (x_all, y_all)
        };
        let model = Model::new(x, features, &y, &hyper)?;
        let best = y[..n].iter().copied().fold(f64::NEG_INFINITY, f64::max);

        let starts = self.acquisition_start_points(&y[..n]);
        let acquisition = Acquisition {
            model: &model,
            layout: &self.layout,
            best,
        };
        let mut candidates: Vec<(f64, Config, Vec<f64>)> = starts
            .into_iter()
            .map(|start| {
                let (optimum, _) = minimize(
                    |z| acquisition.cost(z),
                    start,
                    ACQUISITION_ITERATIONS,
                    ACQUISITION_TOLERANCE,
                );
                let optimum: Vec<f64> = optimum.iter().map(|v| v.clamp(0.0, 1.0)).collect();
                let config = self.unit.decode(&self.layout.to_unit(&optimum));
                let (u, active) = self.unit.encode(&config);
                let point = self.layout.point(&u, &active);
                let value = acquisition.log_ei(&point);
                (if value.is_nan() { f64::NEG_INFINITY } else { value }, config, point)
            })
            .collect();
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        candidates
            .into_iter()
            .find(|(_, config, point)| {
                !self.distinct.contains(config)
                    && !self.observations.iter().any(|(seen, _)| seen == point)
                    && !self.pending.values().any(|p| p == point)
            })
            .map(|(_, config, _)| config)
    }

    /// MAP log hyperparameters from `restarts` L-BFGS runs.
    fn fit_hyperparameters(&mut self, x: &[f64], y: &[f64]) -> Vec<f64> {
        let n = y.len();
        let features = self.layout.features;
        let (x_fit, y_fit) = if n <= FIT_SUBSET {
            (x.to_vec(), y.to_vec())
        } else {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| y[b].total_cmp(&y[a]));
            let keep_best = FIT_SUBSET / 4;
            let rest = &order[keep_best..];
            let mut chosen: Vec<usize> = order[..keep_best].to_vec();
            chosen.extend(
                rand::seq::index::sample(&mut self.rng, rest.len(), FIT_SUBSET - keep_best)
                    .into_iter()
                    .map(|i| rest[i]),
            );
            chosen.sort_unstable();
            let x_fit = chosen
                .iter()
                .flat_map(|&i| x[i * features..(i + 1) * features].iter().copied())
                .collect();
            (x_fit, chosen.iter().map(|&i| y[i]).collect())
        };
        let objective = Marginal::new(&x_fit, &y_fit, &self.layout);
        let defaults = objective.defaults();
        let mut starts = Vec::with_capacity(self.restarts);
        if let Some(previous) = &self.last_fit {
            starts.push(previous.clone());
        }
        starts.push(defaults.clone());
        starts.truncate(self.restarts);
        while starts.len() < self.restarts {
            starts.push(objective.random_start(&mut self.rng));
        }
        // Every start gets a short run; the most promising one is then polished.
        let mut best: Option<(Vec<f64>, f64)> = None;
        for start in starts {
            let (theta, cost) = minimize(|theta| objective.cost(theta), start, FIT_ITERATIONS, FIT_TOLERANCE);
            if cost.is_finite() && best.as_ref().is_none_or(|(_, best_cost)| cost < *best_cost) {
                best = Some((theta, cost));
            }
        }
        let mut theta = match best {
            Some((theta, _)) => {
                minimize(
                    |theta| objective.cost(theta),
                    theta,
                    FIT_POLISH_ITERATIONS,
                    FIT_TOLERANCE,
                )
                .0
            }
            None => defaults,
        };
        objective.clamp(&mut theta);
        theta
    }

    /// Random points of the relaxed cube and the best observed points slightly perturbed.
    fn acquisition_start_points(&mut self, y: &[f64]) -> Vec<Vec<f64>> {
        let features = self.layout.features;
        let perturbed = (self.acquisition_starts / 2).min(y.len());
        let mut order: Vec<usize> = (0..y.len()).collect();
        order.sort_by(|&a, &b| y[b].total_cmp(&y[a]));
        let mut starts = Vec::with_capacity(self.acquisition_starts);
        for &index in &order[..perturbed] {
            let point = &self.observations[index].0;
            starts.push(
                point
                    .iter()
                    .map(|&v| (v + self.rng.random_range(-PERTURBATION..PERTURBATION)).clamp(0.0, 1.0))
                    .collect(),
            );
        }
        while starts.len() < self.acquisition_starts {
            starts.push((0..features).map(|_| self.rng.random::<f64>()).collect());
        }
        starts
    }
}

impl Searcher for GpSearch {
    fn suggest(&mut self, trial: TrialId) -> Result<Suggestion> {
        let index = trial.0.saturating_sub(1);
        let config = if self.unit.is_empty() || trial.0 <= self.n_startup_trials || self.observations.is_empty() {
            self.quasi_random(index)
        } else {
            self.model_suggestion().unwrap_or_else(|| self.quasi_random(index))
        };
        // Every acquisition optimum (or the Sobol point) was seen: a fresh random one instead, if any.
        let Some(config) = self.distinct.claim(config, &self.space, &mut self.rng) else {
            return Ok(Suggestion::Exhausted);
        };
        let (u, active) = self.unit.encode(&config);
        self.pending.insert(trial, self.layout.point(&u, &active));
        Ok(Suggestion::Config(config))
    }

    fn on_trial_complete(&mut self, trial: TrialId, result: &TrialResult<'_>) {
        self.pending.remove(&trial);
        self.distinct.insert(result.config);
        let value = if result.failed {
            None
        } else {
            result.last.and_then(|report| report.metrics.get(&self.metric)).copied()
        };
        let score = value.map(|v| self.mode.score(v)).filter(|s| s.is_finite());
        let (u, active) = self.unit.encode(result.config);
        self.observations.push((self.layout.point(&u, &active), score));
    }
}

/// Scores shifted to mean 0 and scaled to sd 1 (sd 1 kept when they are constant).
fn standardise(scores: &[f64]) -> Vec<f64> {
    if scores.is_empty() {
        return Vec::new();
    }
    let n = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let centred: Vec<f64> = scores.iter().map(|s| s - mean).collect();
    let largest = centred.iter().fold(0.0f64, |m, c| m.max(c.abs()));
    let sd = if largest > 0.0 && largest.is_finite() {
        largest * (centred.iter().map(|c| (c / largest).powi(2)).sum::<f64>() / n).sqrt()
    } else {
        0.0
    };
    let sd = if sd > 1e-12 * mean.abs().max(1e-300) && sd.is_finite() {
        sd
    } else {
        1.0
    };
    centred
        .iter()
        .map(|c| if c.is_finite() { c / sd } else { 0.0 })
        .collect()
}
