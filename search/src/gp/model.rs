//! The Gaussian process: the Matérn-5/2 kernel with one length scale per dimension, the
//! posterior given the data, and the objective its hyperparameters are fitted by — the
//! negative log marginal likelihood plus weak log-normal priors (MAP), with its analytic
//! gradient.
//!
//! ## References
//!
//! - C. E. Rasmussen, C. K. I. Williams, *Gaussian Processes for Machine Learning*, MIT Press,
//!   2006 (the Matérn kernel, §4.2; the marginal likelihood and its gradient, §5.4.1;
//!   Algorithm 2.1).
//! - C. Hvarfner, E. O. Hellsten, L. Nardi, "Vanilla Bayesian Optimization Performs Great in
//!   High Dimensions", ICML 2024 (the length-scale prior LogNormal(√2 + ½ ln d, √3)).

use rand::Rng;
use tune_core::rng::ChaCha20Rng;

use super::layout::Layout;
use super::lbfgs::HUGE_COST;
use crate::numerics::{
    LN_SQRT_2PI, cholesky_with_jitter, dot, inverse_from_cholesky, solve_lower, solve_lower_transposed,
};

/// Smallest noise variance (standardised units), added to the fitted one.
const NOISE_FLOOR: f64 = 1e-6;
/// `√5`, from the Matérn-5/2 kernel.
const SQRT_5: f64 = 2.236_067_977_499_79;
/// Box of the log hyperparameters: (length scale, signal variance, noise variance).
const LOG_LENGTH_BOUNDS: (f64, f64) = (-6.9, 6.9);
const LOG_SIGNAL_BOUNDS: (f64, f64) = (-6.9, 4.6);
const LOG_NOISE_BOUNDS: (f64, f64) = (-20.7, 0.0);
/// Priors (normal on the log): length scales per Hvarfner et al. (mean √2 + ½ ln d, sd √3);
/// signal variance around 1 (the outputs are standardised); noise variance around e⁻⁴.
const LOG_LENGTH_PRIOR_SD: f64 = 1.732_050_807_568_877_2;
const LOG_SIGNAL_PRIOR: (f64, f64) = (0.0, 1.0);
const LOG_NOISE_PRIOR: (f64, f64) = (-4.0, 2.0);

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
pub(super) struct Hyper {
    /// `1 / length²` per GP input column.
    pub(super) inverse_squared_lengths: Vec<f64>,
    /// The signal variance.
    pub(super) signal: f64,
    /// The noise variance, floor included.
    noise: f64,
}

impl Hyper {
    /// From log hyperparameters `[ln l_1 … ln l_d, ln signal, ln noise]`.
    pub(super) fn from_log(theta: &[f64], layout: &Layout) -> Self {
        let dims = layout.dims();
        Hyper {
            inverse_squared_lengths: layout.owner.iter().map(|&dim| (-2.0 * theta[dim]).exp()).collect(),
            signal: theta[dims].exp(),
            noise: theta[dims + 1].exp() + NOISE_FLOOR,
        }
    }
}

/// A fitted GP: the Cholesky factor of the kernel matrix and `α = K⁻¹y`.
pub(super) struct Model {
    /// The inputs, `n` rows of `features` columns.
    pub(super) x: Vec<f64>,
    /// The number of inputs.
    pub(super) n: usize,
    /// Columns per input.
    pub(super) features: usize,
    /// The kernel hyperparameters.
    pub(super) hyper: Hyper,
    /// The lower Cholesky factor of the kernel matrix, row-major.
    pub(super) cholesky: Vec<f64>,
    /// `K⁻¹y`.
    pub(super) alpha: Vec<f64>,
}

impl Model {
    /// The GP on inputs `x` (`y.len()` rows of `features` columns); `None` if the kernel matrix
    /// cannot be factorised even with jitter.
    pub(super) fn new(x: Vec<f64>, features: usize, y: &[f64], hyper: &Hyper) -> Option<Model> {
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
    pub(super) fn kernel_vector(&self, z: &[f64]) -> (Vec<f64>, Vec<f64>) {
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
    pub(super) fn predict(&self, z: &[f64]) -> (f64, f64) {
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

/// The negative log posterior of the log hyperparameters (per observation), with its gradient.
pub(super) struct Marginal<'a> {
    y: &'a [f64],
    n: usize,
    dims: usize,
    /// Per pair `(i, j)`, `j < i`, in order, the squared difference summed over each
    /// dimension's columns.
    pair_distances: Vec<f64>,
    length_prior_mean: f64,
}

impl<'a> Marginal<'a> {
    /// The objective of inputs `x` (rows laid out by `layout`) with standardised outputs `y`.
    pub(super) fn new(x: &[f64], y: &'a [f64], layout: &Layout) -> Self {
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

    /// Clamps `theta` into the box (NaN to the middle).
    pub(super) fn clamp(&self, theta: &mut [f64]) {
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
    pub(super) fn defaults(&self) -> Vec<f64> {
        let mut theta = vec![(0.5f64).ln() + 0.5 * (self.dims.max(1) as f64).ln(); self.dims];
        theta.push(0.0);
        theta.push((1e-3f64).ln());
        theta
    }

    /// A random start of the fit, spread over plausible values.
    pub(super) fn random_start(&self, rng: &mut ChaCha20Rng) -> Vec<f64> {
        let mut theta: Vec<f64> = (0..self.dims)
            .map(|_| rng.random_range((0.05f64).ln()..(5.0f64).ln()))
            .collect();
        theta.push(rng.random_range(-1.0..1.0));
        theta.push(rng.random_range((1e-6f64).ln()..(1e-1f64).ln()));
        theta
    }

    /// Cost and gradient at `theta` (outside the box: the value at the clamped point plus a
    /// quadratic penalty).
    pub(super) fn cost(&self, theta: &[f64]) -> (f64, Vec<f64>) {
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
