//! Random search.

use rand::Rng;
use tune_core::Result;
use tune_core::rng::{self, ChaCha20Rng};
use tune_core::searcher::{Searcher, Suggestion, TrialResult};
use tune_core::space::Space;
use tune_core::trial::TrialId;

use crate::distinct::Distinct;

/// Independent random draws; grid parameters cycle through their grid.
///
/// Trial n (from 1) takes grid point (n − 1) mod grid size, so each pass over the grid is one
/// "sample"; the controller caps the trial count at `num_samples` × grid size.
///
/// Without grid parameters no configuration is drawn twice: a draw seen already is replaced
/// by a fresh one, and a finite space ends the search once every configuration was drawn. With
/// grid parameters the grid is meant to be repeated (`num_samples` passes, Ray Tune's
/// convention), and a space of fixed values only is one configuration run `num_samples` times
/// (repeated runs, as in Ray Tune), so there draws are kept as they come.
pub struct RandomSearch {
    space: Space,
    rng: ChaCha20Rng,
    /// The configurations drawn so far, for a space without grid parameters.
    distinct: Option<Distinct>,
}

impl RandomSearch {
    /// A random searcher over `space`, seeded from the experiment seed.
    pub fn new(space: Space, seed: u64) -> Self {
        // A space with nothing to draw (fixed values only) is one configuration to repeat
        // `num_samples` times, as in Ray Tune, and a grid is meant to be repeated too.
        let distinct =
            Some(Distinct::new(&space)).filter(|distinct| space.grid_axes().is_empty() && distinct.size() != Some(1));
        RandomSearch {
            space,
            rng: rng::stream(seed, "searcher"),
            distinct,
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
        let mut config = self.space.sample(&mut self.rng, &point);
        if let Some(distinct) = &mut self.distinct {
            match distinct.claim(config, &self.space, &mut self.rng) {
                Some(claimed) => config = claimed,
                None => return Ok(Suggestion::Exhausted),
            }
        }
        Ok(Suggestion::Config(config))
    }

    fn on_trial_complete(&mut self, _trial: TrialId, result: &TrialResult<'_>) {
        // A trial the searcher did not draw (a configuration given to try first) counts too.
        if let Some(distinct) = &mut self.distinct {
            distinct.insert(result.config);
        }
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

    #[test]
    fn a_space_of_fixed_values_is_repeated() {
        let space = Space::from_json(&json!({"x": 1, "name": {"fixed": "a"}})).unwrap();
        let mut searcher = RandomSearch::new(space, 9);
        for n in 1..=3 {
            assert!(matches!(searcher.suggest(TrialId(n)).unwrap(), Suggestion::Config(_)));
        }
    }

    #[test]
    fn draws_each_configuration_of_a_finite_space_once_then_ends() {
        let space = Space::from_json(&json!({"a": {"choice": ["x", "y", "z"]}, "n": {"randint": [0, 4]}})).unwrap();
        let mut searcher = RandomSearch::new(space.clone(), 9);
        let mut seen = std::collections::BTreeSet::new();
        for n in 1..=12 {
            match searcher.suggest(TrialId(n)).unwrap() {
                Suggestion::Config(config) => assert!(seen.insert(format!("{:?}", config.0)), "{config:?} twice"),
                other => panic!("trial {n}: {other:?}"),
            }
        }
        assert_eq!(searcher.suggest(TrialId(13)).unwrap(), Suggestion::Exhausted);
    }
}
