//! The acquisition function: log expected improvement over the best observed score, with
//! its gradient on relaxed points (integers continuous, one-hot blocks in `[0, 1]` each),
//! computed stably far into the tail.
//!
//! ## References
//!
//! - D. R. Jones, M. Schonlau, W. J. Welch, "Efficient Global Optimization of Expensive
//!   Black-Box Functions", Journal of Global Optimization 13, 1998 (expected improvement).
//! - S. Ament, S. Daulton, D. Eriksson, M. Balandat, E. Bakshy, "Unexpected Improvements to
//!   Expected Improvement for Bayesian Optimization", NeurIPS 2023 (log EI).

use super::layout::Layout;
use super::lbfgs::HUGE_COST;
use super::model::Model;
use crate::numerics::{LN_SQRT_2PI, dot, normal_cdf, solve_lower, solve_lower_transposed};

/// Smallest posterior variance, relative to the signal variance, the acquisition divides by.
const MIN_VARIANCE: f64 = 1e-12;

/// `ln h(z)` for `h(z) = φ(z) + zΦ(z)` (expected improvement is `σ·h((μ − best)/σ)`), and
/// `Φ(z)/h(z)`, its derivative. Far in the lower tail, where `h` underflows and its direct
/// evaluation cancels, both come from the asymptotic series of the Mills ratio (Ament et al.).
pub(super) fn log_h(z: f64) -> (f64, f64) {
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
pub(super) struct Acquisition<'a> {
    /// The GP.
    pub(super) model: &'a Model,
    /// Where each dimension lies in a GP input.
    pub(super) layout: &'a Layout,
    /// The best observed standardised score.
    pub(super) best: f64,
}

impl Acquisition<'_> {
    /// Log EI at a GP input (no gradient).
    pub(super) fn log_ei(&self, point: &[f64]) -> f64 {
        let (mean, variance) = self.model.predict(point);
        let variance = variance.max(MIN_VARIANCE * self.model.hyper.signal);
        let sd = variance.sqrt();
        log_h((mean - self.best) / sd).0 + sd.ln()
    }

    /// Negative log EI at the relaxed point `z` (clamped into the cube, unused dimensions
    /// neutral) and its gradient (zero along columns outside the cube or unused).
    pub(super) fn cost(&self, z: &[f64]) -> (f64, Vec<f64>) {
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
