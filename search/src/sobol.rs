//! Scrambled Sobol quasi-random search.
//!
//! A Sobol sequence is a deterministic point set in the unit cube that fills it far more evenly
//! than independent random draws: the first `2^k` points split every axis into `2^k` equal
//! intervals with exactly one point in each, and the first two dimensions form a (0, k, 2)-net
//! (every box of volume `2^-k` made of dyadic intervals holds exactly one point). A search over
//! a few dozen trials therefore covers each parameter's range without the clumps and gaps of
//! random search. [`SobolSearch`] gives trial `n` the `(n − 1)`-th point, mapped through
//! [`UnitSpace::decode`] (each coordinate through its domain's scale; a choice takes the option
//! whose bin the coordinate falls in).
//!
//! The points come from the `sobol_burley` crate's building blocks (Joe–Kuo direction numbers
//! for 256 dimensions, Burley's hash-based Owen scrambling), kept at 32 bits rather than the
//! crate's `f32` output. Beyond 256 dimensions, and beyond the crate's 2^16 points, further
//! dimensions and blocks of points are independently scrambled copies of the sequence
//! ("padding", Burley §4): each stays stratified on its own.
//!
//! ## References
//!
//! - I. M. Sobol', "On the distribution of points in a cube and the approximate evaluation of
//!   integrals", USSR Computational Mathematics and Mathematical Physics 7(4), 1967.
//! - S. Joe, F. Y. Kuo, "Constructing Sobol sequences with better two-dimensional projections",
//!   SIAM Journal on Scientific Computing 30(5), 2008.
//! - B. Burley, "Practical Hash-based Owen Scrambling", Journal of Computer Graphics Techniques
//!   9(4), 2020.

use rand::Rng;
use sobol_burley::parts::{hash, owen_scramble_rev, sobol_rev};
use tune_core::Result;
use tune_core::rng;
use tune_core::searcher::{Searcher, Suggestion};
use tune_core::space::Space;
use tune_core::trial::TrialId;

use crate::SobolConfig;
use crate::unit::UnitSpace;

/// Dimensions the direction numbers cover.
const DIRECTION_DIMENSIONS: usize = sobol_burley::NUM_DIMENSIONS as usize;
/// Points per block: `sobol_burley` supports indices below 2^16.
const BLOCK_BITS: u32 = 16;
/// 2^32, to turn a 32-bit fixed-point coordinate into `[0, 1)`.
const TWO_TO_32: f64 = 4_294_967_296.0;

/// An (optionally Owen-scrambled) Sobol sequence of any dimension.
///
/// **Scrambling.** The plain sequence is a fixed, highly regular lattice: its first point is the
/// corner `(0, …, 0)` and its second the centre `(½, …, ½)`, so the first two trials sit at the
/// edges or middle of every range, and in higher dimensions pairs of coordinates line up in
/// visible diagonal patterns. Owen scrambling randomly permutes the dyadic intervals of each
/// axis, nested level by level: every point becomes uniformly distributed over the cube (the
/// set is an unbiased randomised quasi-Monte Carlo sample), the patterns between dimensions
/// are broken, and all the stratification above is kept exactly. Each seed gives a different,
/// independent scramble, so two experiments with different seeds explore different points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SobolSequence {
    /// `None` for the plain sequence.
    scramble: Option<u32>,
}

impl SobolSequence {
    /// The sequence Owen-scrambled with a scramble drawn from the experiment `seed`.
    pub fn scrambled(seed: u64) -> Self {
        SobolSequence {
            scramble: Some(rng::stream(seed, "sobol").random()),
        }
    }

    /// The plain (unscrambled) sequence: point 0 is the corner, point 1 the centre. Padding
    /// dimensions (from 256 on) and points from 2^16 on are still scrambled, with fixed seeds.
    pub fn unscrambled() -> Self {
        SobolSequence { scramble: None }
    }

    /// Point `index` (from 0) in `dims` dimensions; every coordinate lies in `[0, 1)`.
    pub fn point(&self, index: u64, dims: usize) -> Vec<f64> {
        (0..dims).map(|dim| self.coordinate(index, dim)).collect()
    }

    /// Coordinate `dim` of point `index`.
    pub fn coordinate(&self, index: u64, dim: usize) -> f64 {
        f64::from(self.bits(index, dim)) / TWO_TO_32
    }

    /// The coordinate as a 32-bit fixed-point fraction.
    fn bits(&self, index: u64, dim: usize) -> u32 {
        let block = index >> BLOCK_BITS;
        let within = (index & ((1 << BLOCK_BITS) - 1)) as u32;
        let padding = dim / DIRECTION_DIMENSIONS;
        let direction_dim = (dim % DIRECTION_DIMENSIONS) as u32;
        match self.scramble {
            None if block == 0 && padding == 0 => sobol_rev(within.reverse_bits(), direction_dim).reverse_bits(),
            scramble => {
                let seed = padded_seed(scramble.unwrap_or(0), block, padding);
                owen_sobol(within, direction_dim, seed)
            }
        }
    }
}

/// The seed of padding copy `padding` of block `block` (the seed itself for the first).
fn padded_seed(seed: u32, block: u64, padding: usize) -> u32 {
    if block == 0 && padding == 0 {
        return seed;
    }
    let block_hash = hash(block as u32 ^ hash((block >> 32) as u32));
    hash(seed ^ block_hash.wrapping_add(hash(padding as u32 ^ 0x9e37_79b9)))
}

/// `sobol_burley::sample` at full 32-bit resolution: the index shuffled by a nested uniform
/// scramble (so the first 2^k points stay the same set), then the coordinate Owen-scrambled.
fn owen_sobol(index: u32, dim: u32, seed: u32) -> u32 {
    let shuffled_rev = owen_scramble_rev(index.reverse_bits(), hash(seed ^ 0x79c6_8e4a));
    let sobol = sobol_rev(shuffled_rev, dim);
    let scramble = {
        let seed = seed.wrapping_mul(0x9c8f_2d3b);
        (dim >> 2) ^ seed ^ [0x912f_69ba, 0x174f_18ab, 0x691e_72ca, 0xb40c_c1b8][dim as usize & 0b11]
    };
    owen_scramble_rev(sobol, hash(scramble)).reverse_bits()
}

/// Quasi-random search: trial `n` takes point `n − 1` of a (scrambled) Sobol sequence, decoded
/// into the space. Needs no results, never runs out, and is deterministic given the seed.
#[derive(Debug, Clone)]
pub struct SobolSearch {
    unit: UnitSpace,
    sequence: SobolSequence,
}

impl SobolSearch {
    /// A Sobol searcher over `space`; with `c.scramble` the scramble is drawn from `seed`.
    pub fn new(c: &SobolConfig, space: &Space, seed: u64) -> SobolSearch {
        SobolSearch {
            unit: UnitSpace::new(space),
            sequence: if c.scramble {
                SobolSequence::scrambled(seed)
            } else {
                SobolSequence::unscrambled()
            },
        }
    }
}

impl Searcher for SobolSearch {
    fn suggest(&mut self, trial: TrialId) -> Result<Suggestion> {
        let point = self.sequence.point(trial.0.saturating_sub(1), self.unit.len());
        Ok(Suggestion::Config(self.unit.decode(&point)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AskTell, SearcherConfig};
    use serde_json::json;
    use tune_core::trial::Mode;
    use tune_core::value::Config;

    fn configs(space: &Space, scramble: bool, seed: u64, count: u64) -> Vec<Config> {
        let mut searcher = SobolSearch::new(&SobolConfig { scramble }, space, seed);
        (1..=count)
            .map(|n| match searcher.suggest(TrialId(n)).unwrap() {
                Suggestion::Config(config) => config,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// Whether every one of the `cells` equal intervals of `[low, high)` holds exactly one value.
    fn stratified(values: &[f64], low: f64, high: f64, cells: usize) -> bool {
        let mut counts = vec![0; cells];
        for value in values {
            let cell = ((value - low) / (high - low) * cells as f64).floor() as usize;
            counts[cell.min(cells - 1)] += 1;
        }
        counts.iter().all(|&count| count == 1)
    }

    #[test]
    fn matches_sobol_burley_at_its_precision() {
        let sequence = SobolSequence { scramble: Some(12345) };
        for index in [0u32, 1, 2, 7, 100, 65_535] {
            for dim in [0u32, 1, 5, 255] {
                let bits = sequence.bits(u64::from(index), dim as usize);
                let truncated = sobol_burley::parts::u32_to_f32_norm(bits);
                assert_eq!(truncated, sobol_burley::sample(index, dim, 12345), "{index} {dim}");
            }
        }
        let plain = SobolSequence::unscrambled();
        assert_eq!(plain.point(0, 3), [0.0; 3]);
        assert_eq!(plain.point(1, 3), [0.5; 3]);
    }

    #[test]
    fn first_points_form_a_net_in_two_dimensions() {
        let space = Space::from_json(&json!({"x1": {"uniform": [-5, 10]}, "x2": {"uniform": [0, 15]}})).unwrap();
        for (scramble, seed) in [(true, 1), (true, 2), (true, 99), (false, 0)] {
            let points: Vec<(f64, f64)> = configs(&space, scramble, seed, 16)
                .iter()
                .map(|c| {
                    (
                        c.get("x1").unwrap().as_f64().unwrap(),
                        c.get("x2").unwrap().as_f64().unwrap(),
                    )
                })
                .collect();
            let x1: Vec<f64> = points.iter().map(|p| p.0).collect();
            let x2: Vec<f64> = points.iter().map(|p| p.1).collect();
            assert!(stratified(&x1, -5.0, 10.0, 16), "{scramble} {seed}: {x1:?}");
            assert!(stratified(&x2, 0.0, 15.0, 16), "{scramble} {seed}: {x2:?}");
            // (0, 4, 2)-net: every 2^a × 2^(4−a) grid of boxes holds one point per box.
            for a in 0..=4 {
                let (cols, rows) = (1usize << a, 1usize << (4 - a));
                let mut counts = vec![0; 16];
                for (x, y) in &points {
                    let col = ((x + 5.0) / 15.0 * cols as f64) as usize;
                    let row = (y / 15.0 * rows as f64) as usize;
                    counts[col * rows + row] += 1;
                }
                assert!(counts.iter().all(|&c| c == 1), "{scramble} {seed} a={a}: {counts:?}");
            }
        }
    }

    #[test]
    fn many_dimensions_stay_stratified_and_in_the_space() {
        for dims in [21, 300] {
            let mut space = Space::new();
            for dim in 0..dims {
                space
                    .insert(
                        &format!("p{dim:03}"),
                        tune_core::space::Domain::uniform(0.0, 1.0).unwrap(),
                    )
                    .unwrap();
            }
            let points = configs(&space, true, 5, 64);
            assert!(points.iter().all(|c| space.contains(c)));
            for dim in 0..dims {
                let values: Vec<f64> = points[..16]
                    .iter()
                    .map(|c| c.get(&format!("p{dim:03}")).unwrap().as_f64().unwrap())
                    .collect();
                assert!(stratified(&values, 0.0, 1.0, 16), "{dims} dims, dim {dim}");
            }
        }
    }

    #[test]
    fn points_lie_in_the_space_for_every_domain() {
        let space = Space::from_json(&json!({
            "a": {"uniform": [0, 1]}, "b": {"quniform": [0, 10, 0.5]}, "c": {"loguniform": [1e-5, 1e-1]},
            "d": {"qloguniform": [1, 1000, 1]}, "e": {"randint": [1, 8]}, "f": {"qrandint": [0, 100, 5]},
            "g": {"lograndint": [1, 1024]}, "h": {"normal": [0, 2]}, "i": {"choice": [16, "x", true]},
            "k": "relu", "l": {"width": {"randint": [1, 4]}, "act": "tanh"},
            "opt": {"choice": [{"name": "sgd", "m": {"uniform": [0, 0.99]}}, {"name": "adam"}]}
        }))
        .unwrap();
        let points = configs(&space, true, 3, 300);
        assert!(points.iter().all(|c| space.contains(c)));
        // Large indices cross into the padded blocks without panicking.
        let sequence = SobolSequence::scrambled(3);
        let far = sequence.point(70_000, 300);
        assert!(far.iter().all(|x| (0.0..1.0).contains(x)));
        assert_ne!(far, sequence.point(70_000 - 65_536, 300));
    }

    #[test]
    fn same_seed_same_points() {
        let space = Space::from_json(&json!({"lr": {"loguniform": [1e-5, 1e-1]}, "b": {"choice": [16, 32]}})).unwrap();
        assert_eq!(configs(&space, true, 7, 20), configs(&space, true, 7, 20));
        assert_ne!(configs(&space, true, 7, 20), configs(&space, true, 8, 20));
        assert_eq!(configs(&space, false, 7, 20), configs(&space, false, 8, 20));
        let mut search = AskTell::new(
            &SearcherConfig::Sobol(SobolConfig { scramble: true }),
            &space,
            Mode::Min,
            7,
        )
        .unwrap();
        let (_, first) = search.ask().unwrap().unwrap();
        assert_eq!(first, configs(&space, true, 7, 1)[0]);
    }
}
