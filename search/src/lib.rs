//! tune-search: searchers that propose configurations.
//!
//! - [`RandomSearch`] — independent random draws from the space; grid parameters are enumerated
//!   (the whole grid is repeated `num_samples` times), every other parameter is drawn anew for
//!   each trial, the way Ray Tune's basic variant generator does it.
//! - [`GridSearch`] — the cartesian product of every enumerable parameter (grids, choices of
//!   plain values, integer ranges, fixed values), repeated `num_samples` times; a space with a
//!   continuous parameter is rejected, naming it.
//!
//! [`SearcherConfig`] names them in spec files (`[searcher] kind = "random"`).

mod grid;
mod random;

use serde::{Deserialize, Serialize};
use tune_core::Result;
use tune_core::searcher::Searcher;
use tune_core::space::Space;

pub use grid::GridSearch;
pub use random::RandomSearch;

/// The searchers, by name, with their settings: what `[searcher]` in a spec file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SearcherConfig {
    /// Random search (grid parameters enumerated).
    #[default]
    Random,
    /// Exhaustive grid search.
    Grid,
}

impl SearcherConfig {
    /// How many trials one pass over the space makes: the grid size (1 without grid parameters)
    /// for random search, the number of grid points for grid search.
    pub fn trials_per_sample(&self, space: &Space) -> Result<u64> {
        match self {
            SearcherConfig::Random => Ok(space.grid_size()),
            SearcherConfig::Grid => Ok(GridSearch::new(space, 0)?.points()),
        }
    }

    /// Checks that the searcher can handle `space`, naming the parameter that it cannot.
    pub fn validate(&self, space: &Space) -> Result<()> {
        self.trials_per_sample(space).map(|_| ())
    }

    /// A fresh searcher for `space`, its randomness drawn from the experiment `seed`.
    pub fn build(&self, space: &Space, seed: u64) -> Result<Box<dyn Searcher>> {
        Ok(match self {
            SearcherConfig::Random => Box::new(RandomSearch::new(space.clone(), seed)),
            SearcherConfig::Grid => Box::new(GridSearch::new(space, seed)?),
        })
    }
}
