//! Random search.

use rand::Rng;
use tune_core::Result;
use tune_core::rng::{self, ChaCha20Rng};
use tune_core::searcher::{Searcher, Suggestion};
use tune_core::space::Space;
use tune_core::trial::TrialId;

/// Independent random draws; grid parameters cycle through their grid.
///
/// Trial n (from 1) takes grid point (n − 1) mod grid size, so each pass over the grid is one
/// "sample"; the controller caps the trial count at `num_samples` × grid size.
pub struct RandomSearch {
    space: Space,
    rng: ChaCha20Rng,
}

impl RandomSearch {
    /// A random searcher over `space`, seeded from the experiment seed.
    pub fn new(space: Space, seed: u64) -> Self {
        RandomSearch {
            space,
            rng: rng::stream(seed, "searcher"),
        }
    }

    /// Draws one number from the searcher's stream (for tests of determinism).
    #[doc(hidden)]
    pub fn peek_u64(&mut self) -> u64 {
        self.rng.random()
    }
}

impl Searcher for RandomSearch {
    fn suggest(&mut self, trial: TrialId) -> Result<Suggestion> {
        let point = self.space.grid_point(trial.0.saturating_sub(1));
        Ok(Suggestion::Config(self.space.sample(&mut self.rng, &point)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cycles_the_grid_and_draws_the_rest() {
        let space = Space::from_json(&json!({"a": {"grid": [1, 2, 3]}, "lr": {"loguniform": [1e-4, 1e-1]}})).unwrap();
        let mut searcher = RandomSearch::new(space.clone(), 5);
        let configs: Vec<_> = (1..=6)
            .map(|n| match searcher.suggest(TrialId(n)).unwrap() {
                Suggestion::Config(config) => config,
                other => panic!("{other:?}"),
            })
            .collect();
        let grid: Vec<_> = configs.iter().map(|c| c.get("a").unwrap().as_i64().unwrap()).collect();
        assert_eq!(grid, [1, 2, 3, 1, 2, 3]);
        assert_ne!(configs[0].get("lr"), configs[3].get("lr"));
        assert!(configs.iter().all(|c| space.contains(c)));
        let mut again = RandomSearch::new(space, 5);
        assert_eq!(
            again.suggest(TrialId(1)).unwrap(),
            Suggestion::Config(configs[0].clone())
        );
    }
}
