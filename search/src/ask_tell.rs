//! Ask/tell: drive a searcher without a controller, for users who keep their own loop.
//!
//! ```
//! use tune_core::space::{Domain, Space};
//! use tune_core::trial::Mode;
//! use tune_search::{AskTell, SearcherConfig};
//!
//! let space = Space::new().with("x", Domain::uniform(-5.0, 5.0).unwrap()).unwrap();
//! let mut search = AskTell::new(&SearcherConfig::Random {}, &space, Mode::Min, 7).unwrap();
//! for _ in 0..20 {
//!     let (trial, config) = search.ask().unwrap().expect("random search never runs out");
//!     let x = config.get("x").unwrap().as_f64().unwrap();
//!     search.tell(trial, (x - 1.0).powi(2));
//! }
//! assert!(search.best().unwrap().1 < 1.0);
//! ```

use tune_core::Result;
use tune_core::searcher::{Searcher, Suggestion, TrialResult};
use tune_core::space::Space;
use tune_core::trial::{Metrics, Mode, Report, TrialId};
use tune_core::value::Config;

use crate::SearcherConfig;

/// The metric name ask/tell results are reported under.
pub const OBJECTIVE: &str = "objective";

/// A searcher driven by hand: [`AskTell::ask`] for a configuration, [`AskTell::tell`] its result.
pub struct AskTell {
    searcher: Box<dyn Searcher>,
    mode: Mode,
    next: u64,
    configs: Vec<Config>,
    best: Option<(TrialId, f64)>,
}

impl AskTell {
    /// A searcher of kind `config` over `space`, minimising or maximising the told values.
    pub fn new(config: &SearcherConfig, space: &Space, mode: Mode, seed: u64) -> Result<Self> {
        Ok(AskTell {
            searcher: config.build(space, OBJECTIVE, mode, seed)?,
            mode,
            next: 0,
            configs: Vec::new(),
            best: None,
        })
    }

    /// The next configuration to evaluate, with its trial id; `None` when the searcher has
    /// nothing more to propose (or must wait for results it has not been told yet).
    pub fn ask(&mut self) -> Result<Option<(TrialId, Config)>> {
        let trial = TrialId(self.next + 1);
        match self.searcher.suggest(trial)? {
            Suggestion::Config(config) => {
                self.next += 1;
                self.configs.push(config.clone());
                Ok(Some((trial, config)))
            }
            Suggestion::Wait | Suggestion::Exhausted => Ok(None),
        }
    }

    /// An intermediate result of `trial` at `step` (multi-fidelity searchers learn from it).
    pub fn tell_intermediate(&mut self, trial: TrialId, step: u64, value: f64) {
        let report = Report {
            step,
            metrics: Metrics::from([(OBJECTIVE.to_owned(), value)]),
        };
        self.searcher.on_trial_result(trial, &report);
    }

    /// The final result of `trial`. NaN and infinities are kept and count as the worst.
    pub fn tell(&mut self, trial: TrialId, value: f64) {
        let Some(config) = trial.0.checked_sub(1).and_then(|i| self.configs.get(i as usize)) else {
            return;
        };
        let report = Report {
            step: 1,
            metrics: Metrics::from([(OBJECTIVE.to_owned(), value)]),
        };
        self.searcher.on_trial_result(trial, &report);
        self.searcher.on_trial_complete(
            trial,
            &TrialResult {
                config,
                last: Some(&report),
                failed: false,
            },
        );
        if self.best.is_none_or(|(_, best)| self.mode.is_better(value, best)) && !value.is_nan() {
            self.best = Some((trial, value));
        }
    }

    /// `trial` failed: it has no result.
    pub fn tell_failure(&mut self, trial: TrialId) {
        let Some(config) = trial.0.checked_sub(1).and_then(|i| self.configs.get(i as usize)) else {
            return;
        };
        self.searcher.on_trial_complete(
            trial,
            &TrialResult {
                config,
                last: None,
                failed: true,
            },
        );
    }

    /// The best trial told so far and its value.
    pub fn best(&self) -> Option<(TrialId, f64)> {
        self.best
    }

    /// The configuration asked for `trial`.
    pub fn config(&self, trial: TrialId) -> Option<&Config> {
        trial.0.checked_sub(1).and_then(|i| self.configs.get(i as usize))
    }
}
