//! The Parzen estimators of TPE: for a numeric node a one-dimensional mixture of truncated
//! Gaussians (one kernel per observation plus the prior's, bandwidths by the neighbour rule and
//! hyperopt's "magic clip"), for a categorical node a mixture of smoothed one-hot kernels, and in multivariate
//! mode joint kernels over a group of nodes (bandwidths by Scott's rule). Each can be drawn from
//! and evaluated; the [module documentation](super) describes the conventions and the
//! approximations that bound the work (merging kernels, evaluating only nearby ones).
//!
//! ## References
//!
//! - J. Bergstra, R. Bardenet, Y. Bengio, B. Kégl, "Algorithms for Hyper-Parameter
//!   Optimization", NeurIPS 2011 (the estimators and the bandwidth clip).
//! - S. Watanabe, "Tree-Structured Parzen Estimator: Understanding Its Algorithm Components and
//!   Their Roles for Better Empirical Performance", arXiv:2304.11127, 2023.
//! - D. W. Scott, *Multivariate Density Estimation*, Wiley, 1992 (the multivariate bandwidth
//!   rule, as Optuna's multivariate TPE applies it).

use std::cell::RefCell;

use rand::Rng;

use super::observations::Observations;
use super::space::{Axis, Node, NodeKind};
use crate::numerics::{LogSum, ln_gauss_mass, ndtr, normal_by_rejection};

/// ln √(2π) as TPE has always spelt it: one unit in the last place above the correctly rounded
/// [`crate::numerics::LN_SQRT_2PI`]. Kept apart so that TPE's densities, and with them its
/// seeded suggestions, stay bit for bit what they were.
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;
/// Univariate estimators with more kernels than this merge neighbouring kernels.
const MERGE_THRESHOLD: usize = 128;
/// Merged kernels span at most this many (smallest) bandwidths.
const MERGE_SPAN: f64 = 1.0;
/// Mixture terms more than this far below the largest one (in log) are left out: e⁻³² ≈ 1e-14.
const NEGLIGIBLE: f64 = 32.0;
/// A kernel counts as contributing nothing further than this many bandwidths from its centre,
/// where its density is below e⁻³² of its peak. (The prior's kernel, as wide as the range, is
/// never left out, so what is dropped stays negligible against the sum.)
const Z_CUT: f64 = 8.0;
/// A bin narrower than this many bandwidths is scored by the density at its centre times its
/// width (relative error below (0.05)²·z²/6).
const FINE_BIN: f64 = 0.05;
/// A bound more than this many bandwidths from a kernel's centre takes none of its mass, to
/// double precision (Φ(−9) ≈ 1e-19).
const INSIDE: f64 = 9.0;
/// The same for the members of merged kernels, whose weights need relative accuracy 1e-8 only.
const INSIDE_MERGED: f64 = 5.6;

/// One side (good or bad) of a group's model.
pub(super) enum Estimator {
    /// A numeric node's mixture.
    Numeric(usize, Mixture),
    /// A categorical node's mixture.
    Categorical(usize, Categorical),
    /// Joint kernels over a group of nodes (multivariate).
    Joint(Joint),
}

impl Estimator {
    /// Draws the group's nodes into `values`.
    pub(super) fn sample_into(&self, nodes: &[Node], rng: &mut impl Rng, values: &mut [f64]) {
        match self {
            Estimator::Numeric(node, mixture) => {
                values[*node] = mixture.sample(nodes[*node].axis().expect("a numeric node"), rng);
            }
            Estimator::Categorical(node, categorical) => values[*node] = categorical.sample(rng) as f64,
            Estimator::Joint(joint) => joint.sample_into(nodes, rng, values),
        }
    }

    /// The log density (or log probability, on discrete axes) of `values` at the group's nodes.
    pub(super) fn log_density(&self, nodes: &[Node], values: &[f64]) -> f64 {
        match self {
            Estimator::Numeric(node, mixture) => {
                let axis = nodes[*node].axis().expect("a numeric node");
                match axis.lattice {
                    Some(lattice) => {
                        let (a, b) = axis.bin(lattice, values[*node]);
                        mixture.log_mass(a, b)
                    }
                    None => mixture.log_pdf(values[*node]),
                }
            }
            Estimator::Categorical(node, categorical) => categorical.log_probs[values[*node] as usize],
            Estimator::Joint(joint) => joint.log_density(nodes, values),
        }
    }
}

/// The centres with the prior's inserted in order, the bandwidth of each by the neighbour rule
/// (the prior's own bandwidth is the range, not this), and where the prior is.
fn centres_and_bandwidths(sorted: &[f64], prior_mu: f64, range: f64, represented: f64) -> (Vec<f64>, Vec<f64>, usize) {
    let n = sorted.len();
    let min_sigma = range / 100f64.min(2.0 + represented);
    let prior_at = sorted.partition_point(|&mu| mu < prior_mu);
    let mut centres = Vec::with_capacity(n + 1);
    centres.extend_from_slice(&sorted[..prior_at]);
    centres.push(prior_mu);
    centres.extend_from_slice(&sorted[prior_at..]);
    let mut sigmas = vec![range; n + 1];
    if n > 0 {
        sigmas[0] = centres[1] - centres[0];
        sigmas[n] = centres[n] - centres[n - 1];
        for (sigma, window) in sigmas[1..n].iter_mut().zip(centres.windows(3)) {
            *sigma = (window[1] - window[0]).max(window[2] - window[1]);
        }
        for sigma in &mut sigmas {
            *sigma = sigma.clamp(min_sigma, range);
        }
    }
    (centres, sigmas, prior_at)
}

/// A one-dimensional mixture of truncated Gaussians: the observations' kernels sorted by
/// centre, then the prior's.
#[derive(Debug, Clone)]
pub(super) struct Mixture {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    inv_sigmas: Vec<f64>,
    log_sigmas: Vec<f64>,
    /// ln(weight) − ln(truncated mass): the log coefficient of the untruncated kernel.
    log_coefficients: Vec<f64>,
    /// `log_coefficients − ln σ − ln √(2π)`: the log density at the kernel's centre.
    log_peaks: Vec<f64>,
    /// Cumulative kernel weights, for drawing.
    cumulative: Vec<f64>,
    /// [`Z_CUT`] times the largest bandwidth among the observations' kernels: a point further
    /// than this from a kernel's centre gets nothing from it.
    reach: f64,
    /// Bin masses computed so far (candidates often share a discrete value): `(a, log mass)`.
    memo: RefCell<Vec<(f64, f64)>>,
}

impl Mixture {
    /// The Parzen estimator of observations `sorted` (ascending, model coordinates) on `axis`,
    /// each standing for `unit` observations.
    pub(super) fn fit(axis: &Axis, sorted: &[f64], unit: f64, prior_weight: f64) -> Mixture {
        let represented = unit * sorted.len() as f64;
        let (centres, sigmas, prior_at) = centres_and_bandwidths(sorted, axis.prior_mu, axis.prior_sigma, represented);
        let total = represented + prior_weight;
        let capacity = sorted.len().min(MERGE_THRESHOLD) + 1;
        let mut mixture = Mixture {
            mus: Vec::with_capacity(capacity),
            sigmas: Vec::with_capacity(capacity),
            inv_sigmas: Vec::with_capacity(capacity),
            log_sigmas: Vec::with_capacity(capacity),
            log_coefficients: Vec::with_capacity(capacity),
            log_peaks: Vec::with_capacity(capacity),
            cumulative: Vec::with_capacity(capacity),
            reach: 0.0,
            memo: RefCell::new(Vec::new()),
        };
        let observed = |i: usize| i != prior_at;
        if sorted.len() + 1 > MERGE_THRESHOLD {
            for (mu, sigma, coefficient) in merge_kernels(axis, &centres, &sigmas, prior_at, unit / total) {
                let weight = coefficient * truncated_mass(mu, sigma, axis.low, axis.high, INSIDE);
                mixture.push(mu, sigma, coefficient.ln(), weight);
            }
        } else {
            for i in (0..centres.len()).filter(|&i| observed(i)) {
                let (mu, sigma) = (centres[i], sigmas[i]);
                let mass = truncated_mass(mu, sigma, axis.low, axis.high, INSIDE);
                mixture.push(mu, sigma, (unit / (total * mass)).ln(), unit / total);
            }
        }
        mixture.reach = Z_CUT * mixture.sigmas.iter().copied().fold(0.0, f64::max);
        let (mu, sigma) = (axis.prior_mu, axis.prior_sigma);
        let mass = truncated_mass(mu, sigma, axis.low, axis.high, INSIDE);
        mixture.push(mu, sigma, (prior_weight / (total * mass)).ln(), prior_weight / total);
        mixture
    }

    /// Adds a kernel: `log_coefficient` is the log weight of the untruncated Gaussian (the
    /// kernel's weight over its mass inside the bounds), `weight` its probability of being drawn.
    fn push(&mut self, mu: f64, sigma: f64, log_coefficient: f64, weight: f64) {
        let cumulative = self.cumulative.last().copied().unwrap_or(0.0) + weight;
        let log_sigma = sigma.ln();
        self.mus.push(mu);
        self.sigmas.push(sigma);
        self.inv_sigmas.push(1.0 / sigma);
        self.log_sigmas.push(log_sigma);
        self.log_coefficients.push(log_coefficient);
        self.log_peaks.push(log_coefficient - log_sigma - LN_SQRT_2PI);
        self.cumulative.push(cumulative);
    }

    /// The number of kernels, the prior's included.
    pub(super) fn len(&self) -> usize {
        self.mus.len()
    }

    /// A draw in model coordinates, snapped to the axis's values.
    fn sample(&self, axis: &Axis, rng: &mut impl Rng) -> f64 {
        let total = *self.cumulative.last().expect("the prior kernel is always there");
        let u = rng.random::<f64>() * total;
        let k = self.cumulative.partition_point(|&c| c <= u).min(self.len() - 1);
        axis.snap(truncated_normal(rng, self.mus[k], self.sigmas[k], axis.low, axis.high))
    }

    /// The kernels that can reach `[low, high]`: a range of the observations' kernels, and the
    /// prior's.
    fn window(&self, low: f64, high: f64) -> impl Iterator<Item = usize> + use<> {
        let observed = &self.mus[..self.len() - 1];
        let first = observed.partition_point(|&mu| mu < low - self.reach);
        let last = observed.partition_point(|&mu| mu <= high + self.reach);
        (first..last).chain([observed.len()])
    }

    /// The log density at `x` (continuous axes).
    fn log_pdf(&self, x: f64) -> f64 {
        let term = |k: usize| {
            let z = (x - self.mus[k]) * self.inv_sigmas[k];
            self.log_peaks[k] - 0.5 * z * z
        };
        let max = self.window(x, x).map(term).fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = self
            .window(x, x)
            .map(term)
            .filter(|&t| t > max - NEGLIGIBLE)
            .map(|t| (t - max).exp())
            .sum();
        max + sum.ln()
    }

    /// The log probability of the bin `[a, b]` (discrete axes).
    pub(super) fn log_mass(&self, a: f64, b: f64) -> f64 {
        if let Some(&(_, known)) = self.memo.borrow().iter().find(|(low, _)| *low == a) {
            return known;
        }
        let value = self.compute_log_mass(a, b);
        self.memo.borrow_mut().push((a, value));
        value
    }

    fn compute_log_mass(&self, a: f64, b: f64) -> f64 {
        let (mid, half) = (0.5 * (a + b), 0.5 * (b - a));
        let ln_width = (b - a).ln();
        // A term's exact value where cheap (a bin narrow against the kernel: the density at its
        // centre times its width), else an upper bound: the density at the bin's nearest point
        // times its width, and never more than the kernel's whole weight.
        let bound = |k: usize| {
            let inv = self.inv_sigmas[k];
            if half * inv < FINE_BIN {
                let z = (mid - self.mus[k]) * inv;
                (self.log_peaks[k] - 0.5 * z * z + ln_width, true)
            } else {
                let near = ((mid - self.mus[k]).abs() - half).max(0.0) * inv;
                let width = (ln_width - self.log_sigmas[k]).min(LN_SQRT_2PI);
                (
                    self.log_coefficients[k] + width - LN_SQRT_2PI - 0.5 * near * near,
                    false,
                )
            }
        };
        let exact = |k: usize| match bound(k) {
            (term, true) => term,
            (_, false) => {
                let inv = self.inv_sigmas[k];
                self.log_coefficients[k] + ln_gauss_mass((a - self.mus[k]) * inv, (b - self.mus[k]) * inv)
            }
        };
        let mut best = (f64::NEG_INFINITY, self.len() - 1);
        for k in self.window(a, b) {
            let (term, _) = bound(k);
            if term > best.0 {
                best = (term, k);
            }
        }
        let floor = exact(best.1) - NEGLIGIBLE;
        let mut sum = LogSum::default();
        for k in self.window(a, b) {
            if bound(k).0 > floor {
                sum.add(exact(k));
            }
        }
        sum.value()
    }
}

/// Merges runs of neighbouring kernels (sorted by centre, skipping the prior's at `prior_at`)
/// that span at most [`MERGE_SPAN`] bandwidths and whose bandwidths are within a factor of two
/// into one Gaussian with the same total coefficient, mean and variance. Each kernel has weight
/// `unit` inside the bounds, so the coefficient of its untruncated Gaussian is `unit` over its
/// mass inside. Returns `(centre, sigma, coefficient)` triples.
fn merge_kernels(axis: &Axis, centres: &[f64], sigmas: &[f64], prior_at: usize, unit: f64) -> Vec<(f64, f64, f64)> {
    let (low, high) = (axis.low, axis.high);
    let mut merged = Vec::new();
    let mut kernels = (0..centres.len())
        .filter(|&i| i != prior_at)
        .map(|i| (centres[i], sigmas[i]))
        .peekable();
    while let Some((start, first_sigma)) = kernels.next() {
        let (mut smallest, mut largest) = (first_sigma, first_sigma);
        let (mut total, mut sum, mut sum_squares) = (0.0, 0.0, 0.0);
        let mut kernel = (start, first_sigma);
        loop {
            let (mu, sigma) = kernel;
            // Weights need relative accuracy 1e-8 only: a bound further than `INSIDE_MERGED`
            // bandwidths away counts as infinitely far.
            let reach = INSIDE_MERGED * sigma;
            let coefficient = if mu - low > reach && high - mu > reach {
                unit
            } else {
                unit / truncated_mass(mu, sigma, low, high, INSIDE_MERGED)
            };
            // Offsets from the run's first centre keep the variance free of cancellation.
            let offset = mu - start;
            total += coefficient;
            sum += coefficient * offset;
            sum_squares += coefficient * (offset * offset + sigma * sigma);
            let Some(&(next_mu, next_sigma)) = kernels.peek() else {
                break;
            };
            let (narrowest, widest) = (smallest.min(next_sigma), largest.max(next_sigma));
            if next_mu - start > MERGE_SPAN * narrowest || widest > 2.0 * narrowest {
                break;
            }
            (smallest, largest) = (narrowest, widest);
            kernel = kernels.next().expect("peeked");
        }
        let mean = sum / total;
        let variance = (sum_squares / total - mean * mean).max(smallest * smallest);
        merged.push(((start + mean).clamp(low, high), variance.sqrt(), total));
    }
    merged
}

/// A categorical Parzen estimator: one kernel per observation plus the prior's, mixed with
/// weight 1 per observation and `prior_weight` for the prior.
///
/// An observation's kernel puts `1 + ε` on its own option and `ε` on every option (normalised),
/// with `ε = prior_weight / kernels` for `kernels` = observations + 1; the prior's kernel is
/// uniform. This is the smoothing Optuna's `TPESampler` documents and Watanabe (2023, §3.3)
/// analyses. It is far flatter than plain smoothed counts (`count + prior_weight / options`,
/// what this estimator did before): with one good observation of five options that gave its
/// option 0.6 of the good density against 0.1 for each other, so after the start-up trials the
/// best configuration's options won every parameter's ratio and the searcher proposed it again
/// and again (shared/findings/tpe-categorical.md). Here the same case gives 0.31 against 0.17.
#[derive(Debug, Clone)]
pub(super) struct Categorical {
    /// The log probability of each option.
    pub(super) log_probs: Vec<f64>,
    cumulative: Vec<f64>,
}

impl Categorical {
    /// The estimator of observations that took each option `counts` times.
    pub(super) fn fit(counts: &[f64], prior_weight: f64) -> Categorical {
        let options = counts.len() as f64;
        let n: f64 = counts.iter().sum();
        let epsilon = prior_weight / (n + 1.0);
        let norm = 1.0 + options * epsilon;
        // Σ over kernels of each kernel's probability of the option, the prior's included.
        let shared = n * epsilon / norm + prior_weight / options;
        let total = n + prior_weight;
        let mut cumulative = 0.0;
        let mut cumulatives = Vec::with_capacity(counts.len());
        let log_probs = counts
            .iter()
            .map(|&count| {
                let p = (count / norm + shared) / total;
                cumulative += p;
                cumulatives.push(cumulative);
                p.ln()
            })
            .collect();
        Categorical {
            log_probs,
            cumulative: cumulatives,
        }
    }

    fn sample(&self, rng: &mut impl Rng) -> usize {
        let total = *self.cumulative.last().expect("a categorical has at least one option");
        let u = rng.random::<f64>() * total;
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.cumulative.len() - 1)
    }
}

/// Joint kernels over the nodes of a group: one per observation, plus the prior (the last).
#[derive(Debug, Clone)]
pub(super) struct Joint {
    nodes: Vec<usize>,
    /// The log weight of each kernel, the prior's last.
    pub(super) log_weights: Vec<f64>,
    cumulative: Vec<f64>,
    dims: Vec<JointDim>,
}

/// One dimension of a [`Joint`]: each kernel's factor for one node.
#[derive(Debug, Clone)]
enum JointDim {
    Numeric(NumericDim),
    Categorical(CategoricalDim),
}

/// Truncated Gaussian factors, one per kernel.
#[derive(Debug, Clone)]
struct NumericDim {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    inv_sigmas: Vec<f64>,
    /// −ln σ − ln √(2π) − ln(truncated mass): the log density at the centre.
    log_peaks: Vec<f64>,
    /// −ln(truncated mass).
    log_inverse_masses: Vec<f64>,
    /// Kernels by centre, so that a bin's mass is computed once per distinct kernel.
    order: Vec<u32>,
}

/// Aitchison–Aitken-style factors: most weight on each kernel's own option.
#[derive(Debug, Clone)]
struct CategoricalDim {
    options: usize,
    /// Each kernel's own option (`None` for the prior).
    own: Vec<Option<usize>>,
    log_own: f64,
    log_other: f64,
    /// Probability of drawing the own option outright (otherwise uniformly).
    keep: f64,
}

impl Joint {
    /// The joint kernels of the observations in `slots` over the nodes of `group`.
    pub(super) fn fit(
        nodes: &[Node],
        group: &[usize],
        slots: &[usize],
        observations: &Observations,
        prior_weight: f64,
    ) -> Joint {
        let n = slots.len();
        let weights = age_weights(slots);
        let total = weights.iter().sum::<f64>() + prior_weight;
        let mut log_weights: Vec<f64> = weights.iter().map(|w| (w / total).ln()).collect();
        log_weights.push((prior_weight / total).ln());
        let mut cumulative: Vec<f64> = weights
            .iter()
            .scan(0.0, |sum, w| {
                *sum += w / total;
                Some(*sum)
            })
            .collect();
        cumulative.push(1.0);
        debug_assert_eq!(cumulative.len(), n + 1);
        let dims = group
            .iter()
            .map(|&node| match &nodes[node].kind {
                NodeKind::Numeric(axis) => {
                    let observed = slots.iter().map(|&slot| observations.row(slot)[node]).collect();
                    JointDim::Numeric(NumericDim::fit(axis, observed))
                }
                &NodeKind::Categorical(options) => {
                    let own = slots
                        .iter()
                        .map(|&slot| Some(observations.row(slot)[node] as usize))
                        .collect();
                    JointDim::Categorical(CategoricalDim::fit(options, own, prior_weight))
                }
            })
            .collect();
        Joint {
            nodes: group.to_vec(),
            log_weights,
            cumulative,
            dims,
        }
    }

    fn sample_into(&self, nodes: &[Node], rng: &mut impl Rng, values: &mut [f64]) {
        let u = rng.random::<f64>();
        let k = self
            .cumulative
            .partition_point(|&c| c <= u)
            .min(self.log_weights.len() - 1);
        for (&node, dim) in self.nodes.iter().zip(&self.dims) {
            values[node] = match dim {
                JointDim::Numeric(dim) => {
                    let axis = nodes[node].axis().expect("a numeric node");
                    axis.snap(truncated_normal(rng, dim.mus[k], dim.sigmas[k], axis.low, axis.high))
                }
                JointDim::Categorical(dim) => match dim.own[k] {
                    Some(option) if rng.random::<f64>() < dim.keep => option as f64,
                    _ => rng.random_range(0..dim.options) as f64,
                },
            };
        }
    }

    fn log_density(&self, nodes: &[Node], values: &[f64]) -> f64 {
        let mut terms = self.log_weights.clone();
        for (&node, dim) in self.nodes.iter().zip(&self.dims) {
            let x = values[node];
            match dim {
                JointDim::Numeric(dim) => {
                    dim.add_log_densities(nodes[node].axis().expect("a numeric node"), x, &mut terms);
                }
                JointDim::Categorical(dim) => dim.add_log_probabilities(x as usize, &mut terms),
            }
        }
        let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = terms
            .iter()
            .filter(|&&t| t > max - NEGLIGIBLE)
            .map(|&t| (t - max).exp())
            .sum();
        max + sum.ln()
    }
}

/// Optuna's default weights of `n` observations by age: 1 for each of the 25 newest, and for the
/// older ones a ramp from 1/n (the oldest) to 1. `rank` 0 is the oldest.
pub(super) fn age_weight(rank: usize, n: usize) -> f64 {
    let ramp = n.saturating_sub(25);
    if rank >= ramp {
        return 1.0;
    }
    let first = 1.0 / n as f64;
    if ramp == 1 {
        return first;
    }
    first + (1.0 - first) * rank as f64 / (ramp - 1) as f64
}

/// The weight of each of `slots` by [`age_weight`]: slots are numbered in the order trials
/// were first seen, so a slot's rank among them is its age.
fn age_weights(slots: &[usize]) -> Vec<f64> {
    let n = slots.len();
    if n <= 25 {
        return vec![1.0; n];
    }
    let mut by_age = slots.to_vec();
    by_age.sort_unstable();
    slots
        .iter()
        .map(|slot| age_weight(by_age.partition_point(|s| s < slot), n))
        .collect()
}

/// Per-observation bandwidths of one dimension by the neighbour rule Optuna's joint kernels use
/// since its version 5: each observation's larger gap to its neighbours in sorted order, the
/// bounds `low` and `high` counting as neighbours, except that the smallest and the largest of
/// two or more observations take the gap to their one inner neighbour; then clipped to
/// `[range / min(100, n + 2), range]` (the "magic clip"). Unlike Scott's rule, which gives every
/// kernel the same width, a kernel is narrow where observations crowd (near the optimum the
/// search has found) and wide where they are sparse.
pub(super) fn neighbour_bandwidths(observed: &[f64], low: f64, high: f64, range: f64) -> Vec<f64> {
    let n = observed.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| observed[a].total_cmp(&observed[b]));
    let at = |rank: usize| observed[order[rank]];
    let min_sigma = range / 100f64.min(2.0 + n as f64);
    let mut sigmas = vec![range; n];
    for rank in 0..n {
        let left = at(rank) - if rank == 0 { low } else { at(rank - 1) };
        let right = if rank + 1 == n { high } else { at(rank + 1) } - at(rank);
        let sigma = match rank {
            0 if n >= 2 => right,
            last if n >= 2 && last == n - 1 => left,
            _ => left.max(right),
        };
        sigmas[order[rank]] = sigma.clamp(min_sigma, range);
    }
    sigmas
}

impl NumericDim {
    /// Kernels on the `observed` values (bandwidths by [`neighbour_bandwidths`]) and the
    /// prior's.
    fn fit(axis: &Axis, observed: Vec<f64>) -> NumericDim {
        let n = observed.len();
        let kernels = n + 1;
        let range = axis.prior_sigma;
        let low = if axis.low.is_finite() {
            axis.low
        } else {
            axis.prior_mu - range
        };
        let high = if axis.high.is_finite() {
            axis.high
        } else {
            axis.prior_mu + range
        };
        let mut sigmas = neighbour_bandwidths(&observed, low, high, range);
        let mut mus = observed;
        mus.push(axis.prior_mu);
        sigmas.push(range);
        let log_inverse_masses: Vec<f64> = mus
            .iter()
            .zip(&sigmas)
            .map(|(&mu, &sigma)| -truncated_mass(mu, sigma, axis.low, axis.high, INSIDE).ln())
            .collect();
        let log_peaks = log_inverse_masses
            .iter()
            .zip(&sigmas)
            .map(|(log_inverse_mass, sigma)| log_inverse_mass - sigma.ln() - LN_SQRT_2PI)
            .collect();
        let inv_sigmas = sigmas.iter().map(|sigma| 1.0 / sigma).collect();
        let mut order: Vec<u32> = Vec::new();
        if axis.lattice.is_some() {
            order.extend(0..kernels as u32);
            order.sort_by(|&i, &j| mus[i as usize].total_cmp(&mus[j as usize]));
        }
        NumericDim {
            mus,
            sigmas,
            inv_sigmas,
            log_peaks,
            log_inverse_masses,
            order,
        }
    }

    /// Adds each kernel's log density at `x` (its log mass on `x`'s bin, on a discrete axis)
    /// to its term.
    fn add_log_densities(&self, axis: &Axis, x: f64, terms: &mut [f64]) {
        let Some(lattice) = axis.lattice else {
            for (((term, &mu), &inv), &log_peak) in terms
                .iter_mut()
                .zip(&self.mus)
                .zip(&self.inv_sigmas)
                .zip(&self.log_peaks)
            {
                let z = (x - mu) * inv;
                *term += log_peak - 0.5 * z * z;
            }
            return;
        };
        let (a, b) = axis.bin(lattice, x);
        let (mid, half, ln_width) = (0.5 * (a + b), 0.5 * (b - a), (b - a).ln());
        let mut previous = (f64::NAN, f64::NAN, 0.0);
        for &k in &self.order {
            let k = k as usize;
            let (mu, sigma, inv) = (self.mus[k], self.sigmas[k], self.inv_sigmas[k]);
            if (mu, sigma) != (previous.0, previous.1) {
                let log_mass = if half * inv < FINE_BIN {
                    let z = (mid - mu) * inv;
                    self.log_peaks[k] - self.log_inverse_masses[k] - 0.5 * z * z + ln_width
                } else {
                    ln_gauss_mass((a - mu) * inv, (b - mu) * inv)
                };
                previous = (mu, sigma, log_mass);
            }
            terms[k] += previous.2 + self.log_inverse_masses[k];
        }
    }
}

impl CategoricalDim {
    /// Factors over `options` for kernels whose own options are `own` (the observations'),
    /// the prior's (uniform) added last.
    fn fit(options: usize, mut own: Vec<Option<usize>>, prior_weight: f64) -> CategoricalDim {
        own.push(None);
        let epsilon = prior_weight / own.len() as f64;
        let norm = 1.0 + options as f64 * epsilon;
        CategoricalDim {
            options,
            own,
            log_own: ((1.0 + epsilon) / norm).ln(),
            log_other: (epsilon / norm).ln(),
            keep: 1.0 / norm,
        }
    }

    /// Adds each kernel's log probability of `option` to its term.
    fn add_log_probabilities(&self, option: usize, terms: &mut [f64]) {
        let log_uniform = -(self.options as f64).ln();
        for (term, own) in terms.iter_mut().zip(&self.own) {
            *term += match own {
                None => log_uniform,
                Some(own) if *own == option => self.log_own,
                Some(_) => self.log_other,
            };
        }
    }
}

/// The mass of N(mu, sigma) inside `[low, high]`, for `mu` inside; a bound further than `inside`
/// bandwidths away counts as infinitely far. Every kernel here has sigma at most √2 × the
/// range's width, so the mass is above 1/4 and needs no logarithmic care.
fn truncated_mass(mu: f64, sigma: f64, low: f64, high: f64, inside: f64) -> f64 {
    let below = if mu - low > inside * sigma {
        0.0
    } else {
        ndtr((low - mu) / sigma)
    };
    let above = if high - mu > inside * sigma {
        0.0
    } else {
        ndtr((mu - high) / sigma)
    };
    1.0 - below - above
}

/// A draw from N(mu, sigma) restricted to `[low, high]` (which contains `mu`), by rejection.
fn truncated_normal(rng: &mut impl Rng, mu: f64, sigma: f64, low: f64, high: f64) -> f64 {
    debug_assert!(mu >= low && mu <= high, "{mu} outside [{low}, {high}]");
    // Every kernel is centred inside the range with sigma at most √2 × its width, so a draw is
    // accepted with probability above 1/4; 64 failures in a row would take about 1e-8.
    normal_by_rejection(rng, mu, sigma, 64, |x| x >= low && x <= high).unwrap_or(mu)
}

#[cfg(test)]
mod tests {
    use tune_core::space::Domain;

    use super::*;
    use crate::tpe::observations::{BAD, Column, GOOD, gather};

    /// Bandwidths of kernels centred on `sorted` (ascending) with a prior kernel at `prior_mu`: for
    /// each, the larger of the gaps to its neighbours among all centres (the first and last use
    /// their only gap), clipped to `[range / min(100, k + 1), range]` for `k = represented + 1`
    /// kernels (`represented` is `sorted.len()` unless the observations were thinned).
    fn neighbour_bandwidths(sorted: &[f64], prior_mu: f64, range: f64, represented: f64) -> Vec<f64> {
        let (_, sigmas, prior_at) = centres_and_bandwidths(sorted, prior_mu, range, represented);
        sigmas[..prior_at]
            .iter()
            .chain(&sigmas[prior_at + 1..])
            .copied()
            .collect()
    }

    #[test]
    fn bandwidths_are_the_larger_neighbour_gap_clipped() {
        // Centres 1, 2, 4, (prior 5), 9 on a range of width 10: 5 kernels, so the smallest
        // bandwidth is 10 / min(100, 6).
        let sigmas = neighbour_bandwidths(&[1.0, 2.0, 4.0, 9.0], 5.0, 10.0, 4.0);
        let expected = [10.0 / 6.0, 2.0, 2.0, 4.0];
        for (sigma, expected) in sigmas.iter().zip(expected) {
            assert!((sigma - expected).abs() < 1e-12, "{sigmas:?}");
        }
        // One observation: its gap to the prior, at least range / 3.
        assert_eq!(neighbour_bandwidths(&[0.0], 5.0, 10.0, 1.0), [5.0]);
        assert_eq!(neighbour_bandwidths(&[4.0], 5.0, 10.0, 1.0), [10.0 / 3.0]);
        // Many close observations: range / 100; never wider than the range.
        let dense: Vec<f64> = (0..500).map(|i| 4.75 + i as f64 * 1e-3).collect();
        assert!(neighbour_bandwidths(&dense, 5.0, 10.0, 500.0).iter().all(|&s| s == 0.1));
        assert_eq!(neighbour_bandwidths(&[-100.0, 100.0], 0.0, 10.0, 2.0), [10.0, 10.0]);
    }

    #[test]
    fn merged_kernels_keep_the_density() {
        let axis = Axis::new(&Domain::uniform(0.0, 10.0).unwrap()).unwrap();
        // 2,000 observations crowded towards the low end, like a bad group late in a search.
        let sorted: Vec<f64> = (0..2000).map(|i| 10.0 * (i as f64 / 2000.0).powi(2)).collect();
        let merged = Mixture::fit(&axis, &sorted, 1.0, 1.0);
        assert!(merged.len() < 200, "{} kernels", merged.len());
        let sigmas = neighbour_bandwidths(&sorted, 5.0, 10.0, 2000.0);
        let exact = |x: f64| {
            let mut sum = LogSum::default();
            let total = 2001.0;
            for (&mu, &sigma) in sorted.iter().zip(&sigmas).chain([(&5.0, &10.0)]) {
                let z = (x - mu) / sigma;
                let log_coefficient = -(total * truncated_mass(mu, sigma, 0.0, 10.0, INSIDE)).ln();
                sum.add(log_coefficient - sigma.ln() - LN_SQRT_2PI - 0.5 * z * z);
            }
            sum.value()
        };
        for x in [0.0, 0.01, 0.5, 2.0, 5.0, 7.5, 9.99] {
            let (approximate, exact) = (merged.log_pdf(x), exact(x));
            assert!((approximate - exact).abs() < 0.01, "at {x}: {approximate} vs {exact}");
        }
        // The density integrates to one.
        let integral: f64 = (0..10_000)
            .map(|i| merged.log_pdf((i as f64 + 0.5) * 1e-3).exp() * 1e-3)
            .sum();
        assert!((integral - 1.0).abs() < 1e-3, "{integral}");
    }

    #[test]
    fn large_groups_are_thinned_without_changing_the_density_much() {
        let axis = Axis::new(&Domain::uniform(0.0, 10.0).unwrap()).unwrap();
        // 6,000 observations, denser towards 0, in a column where every third slot is good.
        let values: Vec<f64> = (0..6000).map(|i| 10.0 * (i as f64 / 6000.0).powf(1.5)).collect();
        let column = Column {
            values: values.clone(),
            slots: (0..6000).collect(),
        };
        let class: Vec<u8> = (0..6000).map(|slot| if slot % 3 == 0 { GOOD } else { BAD }).collect();
        let bad: Vec<f64> = (0..6000).filter(|i| i % 3 != 0).map(|i| values[i]).collect();
        let (thinned, unit) = gather(&column, &class, BAD, bad.len());
        assert!((1000..=1100).contains(&thinned.len()), "{}", thinned.len());
        assert!((unit * thinned.len() as f64 - 4000.0).abs() < 1e-9, "{unit}");
        assert!(thinned.windows(2).all(|pair| pair[0] <= pair[1]));
        let (full, thinned) = (
            Mixture::fit(&axis, &bad, 1.0, 1.0),
            Mixture::fit(&axis, &thinned, unit, 1.0),
        );
        // Within 2% inside the range; near its ends, where the sample's first and last points
        // sit up to half a stride in from the data's, within 10%.
        for (x, tolerance) in [
            (0.0, 0.1),
            (0.3, 0.02),
            (1.0, 0.02),
            (2.5, 0.02),
            (5.0, 0.02),
            (7.5, 0.02),
            (9.9, 0.1),
        ] {
            let (a, b) = (full.log_pdf(x), thinned.log_pdf(x));
            assert!((a - b).abs() < tolerance, "at {x}: full {a}, thinned {b}");
        }
        // Below the cap nothing is thinned.
        let class: Vec<u8> = (0..6000).map(|slot| if slot % 6 == 0 { GOOD } else { BAD }).collect();
        let (all, unit) = gather(&column, &class, GOOD, 1000);
        assert_eq!((all.len(), unit), (1000, 1.0));
    }
}
