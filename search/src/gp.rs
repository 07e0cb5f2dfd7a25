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

use std::cell::RefCell;
use std::collections::BTreeMap;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use rand::Rng;
use tune_core::Result;
use tune_core::rng::{self, ChaCha20Rng};
use tune_core::searcher::{Searcher, Suggestion, TrialResult};
use tune_core::space::Space;
use tune_core::trial::{Mode, TrialId};
use tune_core::value::Config;

use crate::GpConfig;
use crate::sobol::SobolSequence;
use crate::unit::{DimKind, UnitSpace, normal_cdf};

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
/// L-BFGS history length.
const LBFGS_MEMORY: usize = 6;
/// Smallest noise variance (standardised units), added to the fitted one.
const NOISE_FLOOR: f64 = 1e-6;
/// Smallest posterior variance, relative to the signal variance, the acquisition divides by.
const MIN_VARIANCE: f64 = 1e-12;
/// How far the best observed points are moved (uniformly, per coordinate) to start the
/// acquisition optimisation.
const PERTURBATION: f64 = 0.05;
/// What a non-finite cost is replaced by, so that a line search backs off rather than fails.
const HUGE_COST: f64 = 1e12;
/// `√5`, from the Matérn-5/2 kernel.
const SQRT_5: f64 = 2.236_067_977_499_79;
/// `ln √(2π)`.
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_7;

/// Box of the log hyperparameters: (length scale, signal variance, noise variance).
const LOG_LENGTH_BOUNDS: (f64, f64) = (-6.9, 6.9);
const LOG_SIGNAL_BOUNDS: (f64, f64) = (-6.9, 4.6);
const LOG_NOISE_BOUNDS: (f64, f64) = (-20.7, 0.0);
/// Priors (normal on the log): length scales per Hvarfner et al. (mean √2 + ½ ln d, sd √3);
/// signal variance around 1 (the outputs are standardised); noise variance around e⁻⁴.
const LOG_LENGTH_PRIOR_SD: f64 = 1.732_050_807_568_877_2;
const LOG_SIGNAL_PRIOR: (f64, f64) = (0.0, 1.0);
const LOG_NOISE_PRIOR: (f64, f64) = (-4.0, 2.0);

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
            .find(|(_, _, point)| {
                !self.observations.iter().any(|(seen, _)| seen == point) && !self.pending.values().any(|p| p == point)
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
        let (u, active) = self.unit.encode(&config);
        self.pending.insert(trial, self.layout.point(&u, &active));
        Ok(Suggestion::Config(config))
    }

    fn on_trial_complete(&mut self, trial: TrialId, result: &TrialResult<'_>) {
        self.pending.remove(&trial);
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

// ---------------------------------------------------------------------------------------------
// GP inputs.

/// Where each dimension of the space lies in a GP input: one column per numeric dimension, a
/// one-hot block per categorical one.
#[derive(Debug, Clone)]
struct Layout {
    /// First column of each dimension.
    offsets: Vec<usize>,
    /// Columns of each dimension (1, or the number of options).
    widths: Vec<usize>,
    /// The dimension each column belongs to.
    owner: Vec<usize>,
    /// Each dimension's condition, as in [`crate::unit::UnitDim::condition`].
    conditions: Vec<Option<(usize, usize)>>,
    /// Whether each dimension is a choice (a one-hot block).
    categorical: Vec<bool>,
    /// Total number of columns.
    features: usize,
}

impl Layout {
    fn new(unit: &UnitSpace) -> Self {
        let mut layout = Layout {
            offsets: Vec::new(),
            widths: Vec::new(),
            owner: Vec::new(),
            conditions: Vec::new(),
            categorical: Vec::new(),
            features: 0,
        };
        for (index, dim) in unit.dims().iter().enumerate() {
            let (width, categorical) = match dim.kind {
                DimKind::Categorical { options } => (options.max(1), true),
                DimKind::Continuous { .. } | DimKind::Integer { .. } => (1, false),
            };
            layout.categorical.push(categorical);
            layout.offsets.push(layout.features);
            layout.widths.push(width);
            layout.owner.extend(std::iter::repeat_n(index, width));
            layout.conditions.push(dim.condition);
            layout.features += width;
        }
        layout
    }

    fn dims(&self) -> usize {
        self.widths.len()
    }

    fn is_categorical(&self, dim: usize) -> bool {
        self.categorical[dim]
    }

    /// The GP input of a unit-cube encoding.
    fn point(&self, u: &[f64], active: &[bool]) -> Vec<f64> {
        let mut point = vec![0.0; self.features];
        for dim in 0..self.dims() {
            let offset = self.offsets[dim];
            if self.is_categorical(dim) {
                if active[dim] {
                    let width = self.widths[dim];
                    let option = ((u[dim] * width as f64).floor().max(0.0) as usize).min(width - 1);
                    point[offset + option] = 1.0;
                }
            } else {
                point[offset] = if active[dim] { u[dim] } else { 0.5 };
            }
        }
        point
    }

    /// The option a (relaxed) one-hot block takes: its largest entry, the first on ties.
    fn option(&self, dim: usize, z: &[f64]) -> usize {
        let block = &z[self.offsets[dim]..self.offsets[dim] + self.widths[dim]];
        let mut best = 0;
        for (index, value) in block.iter().enumerate() {
            if *value > block[best] {
                best = index;
            }
        }
        best
    }

    /// Which dimensions a relaxed point uses.
    fn active(&self, z: &[f64]) -> Vec<bool> {
        let mut active = vec![false; self.dims()];
        for dim in 0..self.dims() {
            active[dim] = match self.conditions[dim] {
                None => true,
                Some((controller, option)) => active[controller] && self.option(controller, z) == option,
            };
        }
        active
    }

    /// A relaxed point with unused dimensions set to their neutral value, and which columns
    /// stay free (belong to a used dimension).
    fn canonical(&self, z: &[f64]) -> (Vec<f64>, Vec<bool>) {
        let active = self.active(z);
        let mut point = z.to_vec();
        let mut free = vec![true; self.features];
        for (dim, _) in active.iter().enumerate().filter(|(_, used)| !**used) {
            let neutral = if self.is_categorical(dim) { 0.0 } else { 0.5 };
            for column in self.offsets[dim]..self.offsets[dim] + self.widths[dim] {
                point[column] = neutral;
                free[column] = false;
            }
        }
        (point, free)
    }

    /// The unit-cube point a relaxed point decodes from.
    fn to_unit(&self, z: &[f64]) -> Vec<f64> {
        (0..self.dims())
            .map(|dim| {
                if self.is_categorical(dim) {
                    (self.option(dim, z) as f64 + 0.5) / self.widths[dim] as f64
                } else {
                    z[self.offsets[dim]].clamp(0.0, 1.0)
                }
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The Gaussian process.

/// The Matérn-5/2 correlation at squared scaled distance `r2`, and `(5/3)(1 + √5 r)e^{−√5 r}`
/// (minus twice its derivative with respect to `r2`).
fn matern52(r2: f64) -> (f64, f64) {
    let r = r2.max(0.0).sqrt();
    let decay = (-SQRT_5 * r).exp();
    let correlation = (1.0 + SQRT_5 * r + 5.0 / 3.0 * r2) * decay;
    let slope = 5.0 / 3.0 * (1.0 + SQRT_5 * r) * decay;
    (correlation, slope)
}

/// Kernel hyperparameters in natural units.
#[derive(Debug, Clone)]
struct Hyper {
    /// `1 / length²` per GP input column.
    inverse_squared_lengths: Vec<f64>,
    signal: f64,
    noise: f64,
}

impl Hyper {
    /// From log hyperparameters `[ln l_1 … ln l_d, ln signal, ln noise]`.
    fn from_log(theta: &[f64], layout: &Layout) -> Self {
        let dims = layout.dims();
        Hyper {
            inverse_squared_lengths: layout.owner.iter().map(|&dim| (-2.0 * theta[dim]).exp()).collect(),
            signal: theta[dims].exp(),
            noise: theta[dims + 1].exp() + NOISE_FLOOR,
        }
    }
}

/// A fitted GP: the Cholesky factor of the kernel matrix and `α = K⁻¹y`.
struct Model {
    x: Vec<f64>,
    n: usize,
    features: usize,
    hyper: Hyper,
    cholesky: Vec<f64>,
    alpha: Vec<f64>,
}

impl Model {
    /// The GP on inputs `x` (`y.len()` rows of `features` columns); `None` if the kernel matrix
    /// cannot be factorised even with jitter.
    fn new(x: Vec<f64>, features: usize, y: &[f64], hyper: &Hyper) -> Option<Model> {
        let n = y.len();
        let mut kernel = vec![0.0; n * n];
        for i in 0..n {
            let xi = &x[i * features..(i + 1) * features];
            for j in 0..i {
                let xj = &x[j * features..(j + 1) * features];
                let r2 = scaled_distance(xi, xj, &hyper.inverse_squared_lengths);
                kernel[i * n + j] = hyper.signal * matern52(r2).0;
            }
            kernel[i * n + i] = hyper.signal + hyper.noise;
        }
        let cholesky = cholesky_with_jitter(&kernel, n)?;
        let mut alpha = y.to_vec();
        solve_lower(&cholesky, n, &mut alpha);
        solve_lower_transposed(&cholesky, n, &mut alpha);
        if alpha.iter().any(|a| !a.is_finite()) {
            return None;
        }
        Some(Model {
            x,
            n,
            features,
            hyper: hyper.clone(),
            cholesky,
            alpha,
        })
    }

    /// The kernel vector `k(z, x_i)` and the slopes `(5/3)(1 + √5 r)e^{−√5 r}` (times signal).
    fn kernel_vector(&self, z: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let mut k = Vec::with_capacity(self.n);
        let mut slopes = Vec::with_capacity(self.n);
        for i in 0..self.n {
            let xi = &self.x[i * self.features..(i + 1) * self.features];
            let (correlation, slope) = matern52(scaled_distance(z, xi, &self.hyper.inverse_squared_lengths));
            k.push(self.hyper.signal * correlation);
            slopes.push(self.hyper.signal * slope);
        }
        (k, slopes)
    }

    /// Posterior mean and variance of the latent function at `z`.
    fn predict(&self, z: &[f64]) -> (f64, f64) {
        let (mut k, _) = self.kernel_vector(z);
        let mean = dot(&k, &self.alpha);
        solve_lower(&self.cholesky, self.n, &mut k);
        let variance = self.hyper.signal - dot(&k, &k);
        (mean, variance)
    }
}

/// `Σ_f (a_f − b_f)² w_f`.
fn scaled_distance(a: &[f64], b: &[f64], weights: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .zip(weights)
        .map(|((a, b), w)| (a - b) * (a - b) * w)
        .sum()
}

/// Dot product with four accumulators (vectorises).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let len = a.len().min(b.len());
    let (a, b) = (&a[..len], &b[..len]);
    let mut sums = [0.0; 4];
    let chunks = len / 4 * 4;
    for (x, y) in a[..chunks].chunks_exact(4).zip(b[..chunks].chunks_exact(4)) {
        for lane in 0..4 {
            sums[lane] += x[lane] * y[lane];
        }
    }
    let tail: f64 = a[chunks..].iter().zip(&b[chunks..]).map(|(x, y)| x * y).sum();
    (sums[0] + sums[1]) + (sums[2] + sums[3]) + tail
}

/// In-place Cholesky factorisation of the lower triangle of the `n × n` row-major `a`;
/// `false` if it is not (numerically) positive definite.
fn cholesky_in_place(a: &mut [f64], n: usize) -> bool {
    for i in 0..n {
        for j in 0..=i {
            let sum = {
                let (upper, lower) = a.split_at(i * n);
                let row_i = &lower[..j];
                if j == i {
                    dot(row_i, row_i)
                } else {
                    dot(row_i, &upper[j * n..j * n + j])
                }
            };
            let value = a[i * n + j] - sum;
            if j == i {
                if !(value > 0.0 && value.is_finite()) {
                    return false;
                }
                a[i * n + i] = value.sqrt();
            } else {
                a[i * n + j] = value / a[j * n + j];
            }
        }
        for j in i + 1..n {
            a[i * n + j] = 0.0;
        }
    }
    true
}

/// The Cholesky factor of `kernel`, adding jitter to its diagonal (from 10⁻⁸, ×10 per try)
/// until the factorisation succeeds; `None` if even a jitter of 10³ fails (non-finite input).
fn cholesky_with_jitter(kernel: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut jitter = 1e-8;
    while jitter <= 1e3 {
        let mut factor = kernel.to_vec();
        for i in 0..n {
            factor[i * n + i] += jitter;
        }
        if cholesky_in_place(&mut factor, n) {
            return Some(factor);
        }
        jitter *= 10.0;
    }
    None
}

/// Solves `L v = b` in place.
fn solve_lower(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        let sum = dot(&l[i * n..i * n + i], &b[..i]);
        b[i] = (b[i] - sum) / l[i * n + i];
    }
}

/// Solves `Lᵀ x = b` in place (row-oriented: each solved entry is subtracted from the rest).
fn solve_lower_transposed(l: &[f64], n: usize, b: &mut [f64]) {
    for i in (0..n).rev() {
        b[i] /= l[i * n + i];
        let value = b[i];
        for (target, factor) in b[..i].iter_mut().zip(&l[i * n..i * n + i]) {
            *target -= factor * value;
        }
    }
}

/// The lower triangle of `K⁻¹` from the Cholesky factor `L` of `K` (`K⁻¹ = L⁻ᵀ L⁻¹`).
fn inverse_from_cholesky(l: &[f64], n: usize) -> Vec<f64> {
    // Rows of X = L⁻¹ (lower triangular): row i = (e_i − Σ_{k<i} L_ik X_k) / L_ii.
    let mut x = vec![0.0; n * n];
    for i in 0..n {
        let (done, rest) = x.split_at_mut(i * n);
        let row = &mut rest[..n];
        row[i] = 1.0;
        for k in 0..i {
            let factor = l[i * n + k];
            if factor != 0.0 {
                for (target, source) in row[..=k].iter_mut().zip(&done[k * n..k * n + k + 1]) {
                    *target -= factor * source;
                }
            }
        }
        let diagonal = l[i * n + i];
        for value in &mut row[..=i] {
            *value /= diagonal;
        }
    }
    // K⁻¹_ij = Σ_{k ≥ i} X_ki X_kj for j ≤ i: rank-one updates, one per row of X.
    let mut inverse = vec![0.0; n * n];
    for k in 0..n {
        let row_k = &x[k * n..k * n + k + 1];
        for i in 0..=k {
            let factor = row_k[i];
            for (target, source) in inverse[i * n..i * n + i + 1].iter_mut().zip(&row_k[..=i]) {
                *target += factor * source;
            }
        }
    }
    inverse
}

// ---------------------------------------------------------------------------------------------
// Hyperparameter fit.

/// The negative log posterior of the log hyperparameters (per observation), with its gradient.
struct Marginal<'a> {
    y: &'a [f64],
    n: usize,
    dims: usize,
    /// Per pair `(i, j)`, `j < i`, in order, the squared difference summed over each
    /// dimension's columns.
    pair_distances: Vec<f64>,
    length_prior_mean: f64,
}

impl<'a> Marginal<'a> {
    fn new(x: &[f64], y: &'a [f64], layout: &Layout) -> Self {
        let n = y.len();
        let dims = layout.dims();
        let features = layout.features;
        let mut pair_distances = Vec::with_capacity(n * n.saturating_sub(1) / 2 * dims);
        for i in 0..n {
            for j in 0..i {
                let start = pair_distances.len();
                pair_distances.resize(start + dims, 0.0);
                for column in 0..features {
                    let difference = x[i * features + column] - x[j * features + column];
                    pair_distances[start + layout.owner[column]] += difference * difference;
                }
            }
        }
        Marginal {
            y,
            n,
            dims,
            pair_distances,
            length_prior_mean: std::f64::consts::SQRT_2 + 0.5 * (dims.max(1) as f64).ln(),
        }
    }

    fn bounds(&self, index: usize) -> (f64, f64) {
        if index < self.dims {
            LOG_LENGTH_BOUNDS
        } else if index == self.dims {
            LOG_SIGNAL_BOUNDS
        } else {
            LOG_NOISE_BOUNDS
        }
    }

    fn clamp(&self, theta: &mut [f64]) {
        for (index, value) in theta.iter_mut().enumerate() {
            let (low, high) = self.bounds(index);
            *value = if value.is_nan() {
                0.5 * (low + high)
            } else {
                value.clamp(low, high)
            };
        }
    }

    /// Length scales `½√d`, signal variance 1, noise variance 10⁻³.
    fn defaults(&self) -> Vec<f64> {
        let mut theta = vec![(0.5f64).ln() + 0.5 * (self.dims.max(1) as f64).ln(); self.dims];
        theta.push(0.0);
        theta.push((1e-3f64).ln());
        theta
    }

    fn random_start(&self, rng: &mut ChaCha20Rng) -> Vec<f64> {
        let mut theta: Vec<f64> = (0..self.dims)
            .map(|_| rng.random_range((0.05f64).ln()..(5.0f64).ln()))
            .collect();
        theta.push(rng.random_range(-1.0..1.0));
        theta.push(rng.random_range((1e-6f64).ln()..(1e-1f64).ln()));
        theta
    }

    /// Cost and gradient at `theta` (outside the box: the value at the clamped point plus a
    /// quadratic penalty).
    fn cost(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let (n, dims) = (self.n, self.dims);
        let mut clamped = theta.to_vec();
        self.clamp(&mut clamped);
        let mut penalty = 0.0;
        let mut gradient = vec![0.0; dims + 2];
        for index in 0..dims + 2 {
            let excess = theta[index] - clamped[index];
            penalty += 10.0 * excess * excess;
            gradient[index] = 20.0 * excess;
        }
        let weights: Vec<f64> = clamped[..dims].iter().map(|t| (-2.0 * t).exp()).collect();
        let signal = clamped[dims].exp();
        let raw_noise = clamped[dims + 1].exp();
        let noise = raw_noise + NOISE_FLOOR;

        let pairs = n * n.saturating_sub(1) / 2;
        let mut correlations = Vec::with_capacity(pairs);
        let mut slopes = Vec::with_capacity(pairs);
        let mut kernel = vec![0.0; n * n];
        let mut pair = 0;
        for i in 0..n {
            for j in 0..i {
                let distances = &self.pair_distances[pair * dims..(pair + 1) * dims];
                let r2: f64 = distances.iter().zip(&weights).map(|(q, w)| q * w).sum();
                let (correlation, slope) = matern52(r2);
                kernel[i * n + j] = signal * correlation;
                correlations.push(correlation);
                slopes.push(slope);
                pair += 1;
            }
            kernel[i * n + i] = signal + noise;
        }
        let Some(cholesky) = cholesky_with_jitter(&kernel, n) else {
            return (HUGE_COST, gradient);
        };
        let mut alpha = self.y.to_vec();
        solve_lower(&cholesky, n, &mut alpha);
        let log_determinant: f64 = (0..n).map(|i| 2.0 * cholesky[i * n + i].ln()).sum();
        let fit = dot(&alpha, &alpha);
        solve_lower_transposed(&cholesky, n, &mut alpha);
        let log_likelihood = -0.5 * fit - 0.5 * log_determinant - n as f64 * LN_SQRT_2PI;

        // ∂ log p / ∂θ = ½ tr((ααᵀ − K⁻¹) ∂K/∂θ).
        let inverse = inverse_from_cholesky(&cholesky, n);
        let mut likelihood_gradient = vec![0.0; dims + 2];
        let mut pair = 0;
        for i in 0..n {
            for j in 0..i {
                let w = alpha[i] * alpha[j] - inverse[i * n + j];
                let distances = &self.pair_distances[pair * dims..(pair + 1) * dims];
                let common = w * signal * slopes[pair];
                for dim in 0..dims {
                    likelihood_gradient[dim] += common * distances[dim] * weights[dim];
                }
                likelihood_gradient[dims] += w * signal * correlations[pair];
                pair += 1;
            }
            let w = alpha[i] * alpha[i] - inverse[i * n + i];
            likelihood_gradient[dims] += 0.5 * w * signal;
            likelihood_gradient[dims + 1] += 0.5 * w * raw_noise;
        }

        let mut log_prior = 0.0;
        let mut prior_gradient = vec![0.0; dims + 2];
        let mut normal = |index: usize, mean: f64, sd: f64| {
            let z = (clamped[index] - mean) / sd;
            log_prior -= 0.5 * z * z;
            prior_gradient[index] = -z / sd;
        };
        for dim in 0..dims {
            normal(dim, self.length_prior_mean, LOG_LENGTH_PRIOR_SD);
        }
        normal(dims, LOG_SIGNAL_PRIOR.0, LOG_SIGNAL_PRIOR.1);
        normal(dims + 1, LOG_NOISE_PRIOR.0, LOG_NOISE_PRIOR.1);

        let scale = 1.0 / n.max(1) as f64;
        let cost = -(log_likelihood + log_prior) * scale + penalty;
        if !cost.is_finite() {
            return (HUGE_COST, gradient);
        }
        for index in 0..dims + 2 {
            let (low, high) = self.bounds(index);
            if theta[index] >= low && theta[index] <= high {
                gradient[index] -= (likelihood_gradient[index] + prior_gradient[index]) * scale;
            }
        }
        if gradient.iter().any(|g| !g.is_finite()) {
            return (HUGE_COST, vec![0.0; dims + 2]);
        }
        (cost, gradient)
    }
}

// ---------------------------------------------------------------------------------------------
// Acquisition.

/// `ln h(z)` for `h(z) = φ(z) + zΦ(z)` (expected improvement is `σ·h((μ − best)/σ)`), and
/// `Φ(z)/h(z)`, its derivative. Far in the lower tail, where `h` underflows and its direct
/// evaluation cancels, both come from the asymptotic series of the Mills ratio (Ament et al.).
fn log_h(z: f64) -> (f64, f64) {
    if z > -20.0 {
        let cdf = normal_cdf(z);
        let pdf = (-0.5 * z * z - LN_SQRT_2PI).exp();
        let h = pdf + z * cdf;
        return (h.ln(), cdf / h);
    }
    // t = 1/z²: h/φ = t(1 − 3t + 15t² − …), |z|·Φ/φ = 1 − t + 3t² − 15t³ + ….
    let t = 1.0 / (z * z);
    let series = |coefficients: &[f64]| coefficients.iter().rev().fold(0.0, |sum, c| sum * t + c);
    let h_over_pdf = series(&[1.0, -3.0, 15.0, -105.0, 945.0, -10_395.0, 135_135.0]);
    let mills = series(&[1.0, -1.0, 3.0, -15.0, 105.0, -945.0, 10_395.0]);
    let log = -0.5 * z * z - LN_SQRT_2PI + t.ln() + h_over_pdf.ln();
    (log, z.abs() * mills / h_over_pdf)
}

/// Log expected improvement over `best` under `model`, on relaxed points of `layout`.
struct Acquisition<'a> {
    model: &'a Model,
    layout: &'a Layout,
    best: f64,
}

impl Acquisition<'_> {
    /// Log EI at a GP input (no gradient).
    fn log_ei(&self, point: &[f64]) -> f64 {
        let (mean, variance) = self.model.predict(point);
        let variance = variance.max(MIN_VARIANCE * self.model.hyper.signal);
        let sd = variance.sqrt();
        log_h((mean - self.best) / sd).0 + sd.ln()
    }

    /// Negative log EI at the relaxed point `z` (clamped into the cube, unused dimensions
    /// neutral) and its gradient (zero along columns outside the cube or unused).
    fn cost(&self, z: &[f64]) -> (f64, Vec<f64>) {
        let model = self.model;
        let clamped: Vec<f64> = z.iter().map(|v| v.clamp(0.0, 1.0)).collect();
        let (point, free) = self.layout.canonical(&clamped);
        let (k, slopes) = model.kernel_vector(&point);
        let mean = dot(&k, &model.alpha);
        let mut v = k;
        solve_lower(&model.cholesky, model.n, &mut v);
        let raw_variance = model.hyper.signal - dot(&v, &v);
        let floor = MIN_VARIANCE * model.hyper.signal;
        let variance = raw_variance.max(floor);
        let sd = variance.sqrt();
        let u = (mean - self.best) / sd;
        let (log_h_value, ratio) = log_h(u);
        let value = log_h_value + sd.ln();
        let mut gradient = vec![0.0; z.len()];
        if !value.is_finite() {
            return (HUGE_COST, gradient);
        }
        // d value/dμ = ratio/σ; d value/dσ² = (1 − u·ratio)/(2σ²).
        let by_mean = ratio / sd;
        let by_variance = if raw_variance > floor {
            (1.0 - u * ratio) / (2.0 * variance)
        } else {
            0.0
        };
        // ∇μ = Σ α_i ∇k_i, ∇σ² = −2 Σ (K⁻¹k)_i ∇k_i, ∇k_i = −slope_i (z − x_i) ⊙ w.
        let mut w = v;
        solve_lower_transposed(&model.cholesky, model.n, &mut w);
        let features = model.features;
        for i in 0..model.n {
            let coefficient = -slopes[i] * (by_mean * model.alpha[i] - 2.0 * by_variance * w[i]);
            if coefficient == 0.0 {
                continue;
            }
            let xi = &model.x[i * features..(i + 1) * features];
            for (column, g) in gradient.iter_mut().enumerate() {
                *g += coefficient * (point[column] - xi[column]);
            }
        }
        for (column, g) in gradient.iter_mut().enumerate() {
            let inside = (0.0..=1.0).contains(&z[column]);
            *g = if free[column] && inside {
                -*g * model.hyper.inverse_squared_lengths[column]
            } else {
                0.0
            };
            if !g.is_finite() {
                *g = 0.0;
            }
        }
        (-value, gradient)
    }
}

// ---------------------------------------------------------------------------------------------
// L-BFGS through argmin.

/// Evaluations a [`Problem`] remembers.
const EVALUATION_CACHE: usize = 4;

/// A point with its cost and gradient.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

/// A cost-and-gradient function as an argmin problem. The line search asks for the cost and
/// then the gradient at a point, and L-BFGS asks again for the gradient at the point the line
/// search settled on, so the last few evaluations are remembered.
struct Problem<F> {
    function: F,
    recent: RefCell<Vec<Evaluation>>,
}

impl<F: Fn(&[f64]) -> (f64, Vec<f64>)> Problem<F> {
    fn evaluate(&self, param: &[f64]) -> (f64, Vec<f64>) {
        if let Some((_, cost, gradient)) = self.recent.borrow().iter().find(|(at, _, _)| at.as_slice() == param) {
            return (*cost, gradient.clone());
        }
        let (cost, mut gradient) = (self.function)(param);
        let cost = if cost.is_finite() { cost } else { HUGE_COST };
        for g in &mut gradient {
            if !g.is_finite() {
                *g = 0.0;
            }
        }
        let mut recent = self.recent.borrow_mut();
        if recent.len() == EVALUATION_CACHE {
            recent.remove(0);
        }
        recent.push((param.to_vec(), cost, gradient.clone()));
        (cost, gradient)
    }
}

impl<F: Fn(&[f64]) -> (f64, Vec<f64>)> CostFunction for Problem<F> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, param: &Vec<f64>) -> std::result::Result<f64, argmin::core::Error> {
        Ok(self.evaluate(param).0)
    }
}

impl<F: Fn(&[f64]) -> (f64, Vec<f64>)> Gradient for Problem<F> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, param: &Vec<f64>) -> std::result::Result<Vec<f64>, argmin::core::Error> {
        Ok(self.evaluate(param).1)
    }
}

/// Minimises `function` from `start` with L-BFGS (Moré–Thuente line search) for at most
/// `iterations` iterations or until the gradient norm or the change in cost falls below
/// `tolerance`; the best point seen and its cost (the start if argmin fails).
fn minimize(
    function: impl Fn(&[f64]) -> (f64, Vec<f64>),
    start: Vec<f64>,
    iterations: u64,
    tolerance: (f64, f64),
) -> (Vec<f64>, f64) {
    let problem = Problem {
        function,
        recent: RefCell::new(Vec::with_capacity(EVALUATION_CACHE)),
    };
    let start_cost = problem.evaluate(&start).0;
    let line_search: MoreThuenteLineSearch<Vec<f64>, Vec<f64>, f64> = MoreThuenteLineSearch::new();
    let Ok(solver) = LBFGS::new(line_search, LBFGS_MEMORY)
        .with_tolerance_grad(tolerance.0)
        .and_then(|solver| solver.with_tolerance_cost(tolerance.1))
    else {
        return (start, start_cost);
    };
    let outcome = Executor::new(problem, solver)
        .configure(|state| state.param(start.clone()).max_iters(iterations))
        .timer(false)
        .run();
    match outcome {
        Ok(result) => {
            let state = result.state();
            match state.get_best_param() {
                Some(best) if state.get_best_cost() <= start_cost => (best.clone(), state.get_best_cost()),
                _ => (start, start_cost),
            }
        }
        Err(_) => (start, start_cost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AskTell, SearcherConfig};
    use serde_json::json;
    use std::f64::consts::PI;
    use tune_core::space::Domain;

    fn gp(n_startup_trials: i64) -> SearcherConfig {
        SearcherConfig::Gp(GpConfig {
            n_startup_trials,
            restarts: 3,
            acquisition_starts: 8,
        })
    }

    fn branin(config: &Config) -> f64 {
        let x1 = config.get("x1").unwrap().as_f64().unwrap();
        let x2 = config.get("x2").unwrap().as_f64().unwrap();
        let b = 5.1 / (4.0 * PI * PI);
        let c = 5.0 / PI;
        (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - 1.0 / (8.0 * PI)) * x1.cos() + 10.0
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
        // A tiny discrete space: the searcher soon runs out of new points and falls back.
        let space = Space::from_json(&json!({"a": {"choice": [1, 2]}, "b": {"randint": [0, 2]}})).unwrap();
        let mut search = AskTell::new(&gp(1), &space, Mode::Max, 3).unwrap();
        for round in 0..12 {
            let (trial, config) = search.ask().unwrap().unwrap();
            assert!(space.contains(&config));
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
        let config = match searcher.suggest(TrialId(1)).unwrap() {
            Suggestion::Config(config) => config,
            other => panic!("{other:?}"),
        };
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
        for _ in 0..3 {
            let (trial, config) = search.ask().unwrap().unwrap();
            assert_eq!(config.get("k"), Some(&json!(1)));
            search.tell(trial, 1.0);
        }
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
                (
                    c.get("x1").unwrap().as_f64().unwrap(),
                    c.get("x2").unwrap().as_f64().unwrap(),
                )
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

    #[test]
    fn layout_one_hots_choices_and_neutralises_unused_dimensions() {
        let space = Space::from_json(&json!({
            "opt": {"choice": [{"name": "sgd", "momentum": {"uniform": [0, 1]}}, {"name": "adam"}]},
            "x": {"randint": [0, 4]}
        }))
        .unwrap();
        let unit = UnitSpace::new(&space);
        let layout = Layout::new(&unit);
        // Columns: opt (one-hot of 2), momentum, x.
        assert_eq!(layout.features, 4);
        let config = unit.decode(&[0.2, 0.7, 0.6]);
        let (u, active) = unit.encode(&config);
        assert_eq!(layout.point(&u, &active), [1.0, 0.0, 0.7, 0.625]);
        let config = unit.decode(&[0.8, 0.7, 0.6]);
        let (u, active) = unit.encode(&config);
        assert_eq!(layout.point(&u, &active), [0.0, 1.0, 0.5, 0.625]);
        // A relaxed point: adam's entry is the largest, so momentum is unused.
        let (point, free) = layout.canonical(&[0.4, 0.6, 0.9, 0.3]);
        assert_eq!(point, [0.4, 0.6, 0.5, 0.3]);
        assert_eq!(free, [true, true, false, true]);
        assert_eq!(layout.to_unit(&[0.4, 0.6, 0.9, 0.3]), [0.75, 0.9, 0.3]);
        assert_eq!(
            unit.decode(&layout.to_unit(&[0.4, 0.6, 0.9, 0.3])).get("opt.name"),
            Some(&json!("adam"))
        );
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

    #[test]
    fn cholesky_survives_duplicates_and_the_inverse_is_right() {
        let n = 4;
        // Four identical points without noise: singular.
        let kernel = vec![1.0; n * n];
        let factor = cholesky_with_jitter(&kernel, n).unwrap();
        assert!(factor.iter().all(|v| v.is_finite()));
        assert!(cholesky_with_jitter(&[f64::NAN], 1).is_none());
        let a = [4.0, 0.0, 0.0, 2.0, 5.0, 0.0, 0.4, 1.0, 3.0];
        let mut factor = a.to_vec();
        assert!(cholesky_in_place(&mut factor, 3));
        let inverse = inverse_from_cholesky(&factor, 3);
        let full = |m: &[f64], i: usize, j: usize| if j <= i { m[i * 3 + j] } else { m[j * 3 + i] };
        for i in 0..3 {
            for j in 0..3 {
                let product: f64 = (0..3).map(|k| full(&a, i, k) * full(&inverse, k, j)).sum();
                assert!((product - f64::from(u8::from(i == j))).abs() < 1e-12);
            }
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
}
