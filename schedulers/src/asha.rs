//! ASHA: asynchronous successive halving, stopping losers at each rung (Ray Tune's
//! `AsyncHyperBandScheduler`) or pausing every trial at each rung and promoting the best (the
//! paper's algorithm).
//!
//! A trial joins one of `brackets` brackets when it is created: bracket `s` is drawn with
//! probability proportional to `exp(rungs(s) − max_s' rungs(s'))`, so brackets with more rungs
//! (the aggressive ones) get more trials. Bracket `s` has rungs at the milestones
//! `grace_period · reduction_factor^(k+s)` for `k = 0 … ⌊ln(max_t/grace_period) / ln(rf)⌋ − s`
//! (the count is computed with a 1e-9 slack, so float error such as `ln 1000 / ln 10 =
//! 2.9999999999999996` does not drop the rung at `max_t`). A rung records the score of each
//! trial that reached it, higher is better ([`Mode::score`]: the metric for `max`, its negation
//! for `min`, `-inf` for NaN). The time of a result is [`TrialReport::time`] of `time_attr`.
//!
//! # Stop ([`AshaType::Stop`]): Ray Tune's rule, decision for decision
//!
//! 1. A result without the time attribute (or with a NaN time) continues.
//! 2. With `stop_last_trials`, a result whose time is `≥ max_t` stops the trial and is recorded
//!    nowhere.
//! 3. Otherwise the bracket's rungs are walked from the highest milestone down; the first rung
//!    whose milestone is `≤ time` and that holds no score of this trial is checked (so each
//!    result is checked at one rung at most, and a result that skipped a rung fills the highest
//!    one). Without `stop_last_trials` the walk ends at the first rung reached that already
//!    holds a score of the trial, as Ray's does.
//! 4. The cutoff is the `(1 − 1/rf)·100` percentile of the scores already recorded at that rung,
//!    linearly interpolated as numpy computes it ([`ScoreMultiset::percentile`]); an empty rung
//!    has none. The trial stops if its score is strictly below the cutoff (ties continue); its
//!    score is recorded either way, and stays recorded when the trial is removed.
//!
//! The only deliberate differences from Ray: a NaN result ranks worst (score `-inf`) where Ray
//! lets it continue and leaves it out of the percentile; the 1e-9 slack in the rung count; a
//! bracket has at most [`MAX_RUNGS`] rungs.
//!
//! # Promote ([`AshaType::Promote`]): Algorithm 2 of the paper
//!
//! A trial that reaches a rung above every rung it has reached before records its score there
//! and pauses (the controller checkpoints it and frees its slot); at the bracket's top rung it
//! stops instead: it has finished training. When a slot frees, the controller asks
//! [`Scheduler::choose_trial_to_resume`]: from the highest rung below the top down to the
//! lowest (across brackets, by milestone), the best paused trial among the top `⌊n_k/rf⌋`
//! scores of rung `k` (`n_k` = the scores recorded there; ties go to the older trial) that has
//! not been promoted from that rung yet is resumed, and pauses again at its next rung. When no
//! trial is promotable the controller starts a new trial, as the paper grows the bottom rung.
//! With `stop_last_trials`, a result at `max_t` or later stops the trial like rule 2 above.
//!
//! # Cost
//!
//! With `n` scores at the rung concerned: [`Scheduler::on_result`] is O(log n) plus the
//! insertion into a sorted block (see [`crate::order_stats`]); the trial's own record is a hash
//! map entry. [`Scheduler::choose_trial_to_resume`] costs O(R·log n + c) for R rungs below the
//! top, where c counts the promotable trials that are not resumable yet (paused but their
//! processes still exiting): it reads the `⌊n/rf⌋`-th best score of each rung as an order
//! statistic and walks the rung's still-promotable trials from the best, never the whole rung.
//! [`Scheduler::on_trial_remove`] is O(rungs · log n).
//!
//! ## References
//!
//! - Li, Jamieson, Rostamizadeh, Gonina, Ben-tzur, Hardt, Recht and Talwalkar, "A System for
//!   Massively Parallel Hyperparameter Tuning", MLSys 2020 (arXiv:1810.05934): ASHA, its rungs
//!   and its promotion rule (Algorithm 2).
//! - Ray Tune's `AsyncHyperBandScheduler` (`python/ray/tune/schedulers/async_hyperband.py`):
//!   the stopping rule, brackets and cutoffs reproduced by [`AshaType::Stop`].

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use rand::Rng;
use tune_core::rng::{self, ChaCha20Rng};
use tune_core::scheduler::{Scheduler, TrialReport};
use tune_core::trial::{Decision, Mode, TrialId};
use tune_core::value::Config;

use crate::order_stats::{OrderStatistics, ScoreMultiset, TotalOrder};
use crate::{AshaConfig, AshaType};

/// The most rungs a bracket has (only reduction factors barely above 1 reach it).
pub const MAX_RUNGS: usize = 256;

/// Added to the rung count before rounding down, so float error cannot drop the rung at `max_t`.
const RUNG_COUNT_SLACK: f64 = 1e-9;

/// Asynchronous successive halving; see the [module documentation](self) for the rules.
///
/// ```
/// use tune_core::scheduler::{Scheduler, TrialReport};
/// use tune_core::trial::{Decision, Mode, Report, TrialId};
/// use tune_schedulers::asha::Asha;
/// use tune_schedulers::{AshaConfig, AshaType};
///
/// let config = AshaConfig {
///     kind: AshaType::Stop,
///     time_attr: "step".into(),
///     max_t: 81.0,
///     grace_period: 1.0,
///     reduction_factor: 3.0,
///     brackets: 1,
///     stop_last_trials: true,
/// };
/// let mut asha = Asha::new(&config, Mode::Min, 42);
/// assert_eq!(asha.milestones(0), [1.0, 3.0, 9.0, 27.0, 81.0]);
/// let mut report = |trial, step, loss| {
///     let report = Report { step, metrics: Default::default() };
///     let result = TrialReport { report: &report, value: loss, checkpointed: false, has_checkpoint: false };
///     asha.on_result(TrialId(trial), &result)
/// };
/// assert_eq!(report(1, 1, 0.5), Decision::Continue); // first at the rung: no cutoff yet
/// assert_eq!(report(2, 1, 0.4), Decision::Continue); // better than the cutoff, 0.5
/// assert_eq!(report(3, 1, 0.9), Decision::Stop); // worse than the cutoff, 0.433…
/// assert_eq!(report(1, 81, 0.1), Decision::Stop); // max_t
/// ```
#[derive(Debug, Clone)]
pub struct Asha {
    kind: AshaType,
    mode: Mode,
    time_attr: String,
    max_t: f64,
    reduction_factor: f64,
    stop_last_trials: bool,
    /// `(1 − 1/rf)·100`, computed as Ray computes it.
    cutoff_percentile: f64,
    brackets: Vec<Bracket>,
    /// Unnormalised probabilities of joining each bracket.
    bracket_weights: Vec<f64>,
    /// Every `(bracket, rung)` a trial can be promoted from (all but each bracket's top rung),
    /// highest milestone first.
    promotion_order: Vec<(usize, usize)>,
    trials: HashMap<TrialId, TrialRungs>,
    rng: ChaCha20Rng,
}

#[derive(Debug, Clone)]
struct Bracket {
    /// Lowest milestone first.
    rungs: Vec<Rung>,
}

#[derive(Debug, Clone)]
struct Rung {
    milestone: f64,
    /// Every score recorded here (both variants): the stop rule's cutoff.
    scores: ScoreMultiset,
    /// Promote variant: every score recorded here with its trial, for ranks.
    ranked: OrderStatistics<Ranked>,
    /// Promote variant: the trials paused here that have been neither promoted nor removed.
    candidates: BTreeSet<Ranked>,
}

/// A trial's score at a rung, ordered best last: by score, then the older trial (smaller id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Ranked {
    score: TotalOrder,
    trial: Reverse<TrialId>,
}

impl Ranked {
    fn new(score: f64, trial: TrialId) -> Self {
        Self {
            score: TotalOrder(score),
            trial: Reverse(trial),
        }
    }
}

/// A trial's bracket and the score it recorded at each of the bracket's rungs.
#[derive(Debug, Clone)]
struct TrialRungs {
    bracket: usize,
    scores: Vec<Option<f64>>,
}

impl Asha {
    /// A scheduler with `config`'s settings (already validated by
    /// [`SchedulerConfig::validate`](crate::SchedulerConfig::validate)) for a metric optimised in
    /// `mode`; bracket draws come from the experiment `seed`'s `"asha"` stream.
    pub fn new(config: &AshaConfig, mode: Mode, seed: u64) -> Self {
        let brackets: Vec<Bracket> = (0..config.brackets.max(1))
            .map(|bracket| Bracket {
                rungs: bracket_milestones(config.grace_period, config.max_t, config.reduction_factor, bracket)
                    .into_iter()
                    .map(|milestone| Rung {
                        milestone,
                        scores: ScoreMultiset::new(),
                        ranked: OrderStatistics::new(),
                        candidates: BTreeSet::new(),
                    })
                    .collect(),
            })
            .collect();
        let most_rungs = brackets.iter().map(|bracket| bracket.rungs.len()).max().unwrap_or(0);
        let bracket_weights = brackets
            .iter()
            .map(|bracket| (bracket.rungs.len() as f64 - most_rungs as f64).exp())
            .collect();
        let mut promotion_order: Vec<(usize, usize)> = brackets
            .iter()
            .enumerate()
            .flat_map(|(index, bracket)| (0..bracket.rungs.len().saturating_sub(1)).map(move |rung| (index, rung)))
            .collect();
        let milestone = |&(bracket, rung): &(usize, usize)| brackets[bracket].rungs[rung].milestone;
        promotion_order.sort_by(|a, b| milestone(b).total_cmp(&milestone(a)).then(a.0.cmp(&b.0)));
        Self {
            kind: config.kind,
            mode,
            time_attr: config.time_attr.clone(),
            max_t: config.max_t,
            reduction_factor: config.reduction_factor,
            stop_last_trials: config.stop_last_trials,
            cutoff_percentile: (1.0 - 1.0 / config.reduction_factor) * 100.0,
            brackets,
            bracket_weights,
            promotion_order,
            trials: HashMap::new(),
            rng: rng::stream(seed, "asha"),
        }
    }

    /// The number of brackets.
    pub fn bracket_count(&self) -> usize {
        self.brackets.len()
    }

    /// The milestones of `bracket`'s rungs, lowest first (empty for a bracket that does not exist
    /// or has no rung).
    pub fn milestones(&self, bracket: usize) -> Vec<f64> {
        self.brackets
            .get(bracket)
            .map(|bracket| bracket.rungs.iter().map(|rung| rung.milestone).collect())
            .unwrap_or_default()
    }

    /// The bracket `trial` joined, if it has joined one.
    pub fn bracket_of(&self, trial: TrialId) -> Option<usize> {
        self.trials.get(&trial).map(|record| record.bracket)
    }

    /// How many scores are recorded at rung `rung` (0 = lowest) of `bracket`.
    pub fn recorded(&self, bracket: usize, rung: usize) -> usize {
        self.rung(bracket, rung).map_or(0, |rung| rung.scores.len())
    }

    /// The stop rule's cutoff at rung `rung` of `bracket` now: the `(1 − 1/rf)·100` percentile
    /// of its scores; `None` while it has none.
    pub fn cutoff(&self, bracket: usize, rung: usize) -> Option<f64> {
        self.rung(bracket, rung)?.scores.percentile(self.cutoff_percentile)
    }

    fn rung(&self, bracket: usize, rung: usize) -> Option<&Rung> {
        self.brackets.get(bracket)?.rungs.get(rung)
    }
}

impl Scheduler for Asha {
    fn on_result(&mut self, trial: TrialId, result: &TrialReport<'_>) -> Decision {
        let Some(time) = result.time(&self.time_attr).filter(|time| !time.is_nan()) else {
            return Decision::Continue;
        };
        if time >= self.max_t && self.stop_last_trials {
            return Decision::Stop;
        }
        let score = self.mode.score(result.value);
        debug_assert!(!score.is_nan(), "Mode::score ranks NaN as -inf");
        let Self {
            kind,
            stop_last_trials,
            cutoff_percentile,
            brackets,
            bracket_weights,
            trials,
            rng,
            ..
        } = self;
        let record = trials
            .entry(trial)
            .or_insert_with(|| TrialRungs::join(brackets, bracket_weights, rng));
        let rungs = &mut brackets[record.bracket].rungs;
        match kind {
            AshaType::Stop => {
                let Some(index) = rung_to_check(rungs, &record.scores, time, *stop_last_trials) else {
                    return Decision::Continue;
                };
                let rung = &mut rungs[index];
                let cutoff = rung.scores.percentile(*cutoff_percentile);
                rung.scores.insert(score);
                record.scores[index] = Some(score);
                if cutoff.is_some_and(|cutoff| score < cutoff) {
                    Decision::Stop
                } else {
                    Decision::Continue
                }
            }
            AshaType::Promote => {
                let Some(index) = rung_reached(rungs, &record.scores, time) else {
                    return Decision::Continue;
                };
                let is_top = index + 1 == rungs.len();
                let rung = &mut rungs[index];
                let ranked = Ranked::new(score, trial);
                rung.scores.insert(score);
                rung.ranked.insert(ranked);
                record.scores[index] = Some(score);
                if is_top {
                    return Decision::Stop;
                }
                rung.candidates.insert(ranked);
                Decision::Pause
            }
        }
    }

    fn on_trial_add(&mut self, trial: TrialId, _config: &Config) {
        let Self {
            brackets,
            bracket_weights,
            trials,
            rng,
            ..
        } = self;
        trials
            .entry(trial)
            .or_insert_with(|| TrialRungs::join(brackets, bracket_weights, rng));
    }

    /// Recorded scores stay (as in Ray); the trial can no longer be promoted.
    fn on_trial_remove(&mut self, trial: TrialId) {
        let Some(record) = self.trials.get(&trial) else {
            return;
        };
        let rungs = &mut self.brackets[record.bracket].rungs;
        for (rung, score) in rungs.iter_mut().zip(&record.scores) {
            if let Some(score) = score {
                rung.candidates.remove(&Ranked::new(*score, trial));
            }
        }
    }

    fn choose_trial_to_resume(&mut self, resumable: &BTreeSet<TrialId>) -> Option<TrialId> {
        if self.kind != AshaType::Promote {
            return None;
        }
        for &(bracket, rung) in &self.promotion_order {
            let rung = &mut self.brackets[bracket].rungs[rung];
            let quota = (rung.ranked.len() as f64 / self.reduction_factor).floor() as usize;
            if quota == 0 || rung.candidates.is_empty() {
                continue;
            }
            // The quota-th best score: a candidate is in the top `quota` iff it ranks at or above it.
            let threshold = rung
                .ranked
                .kth_smallest(rung.ranked.len() - quota)
                .expect("0 < quota ≤ len");
            let chosen = rung
                .candidates
                .range(threshold..)
                .rev()
                .find(|candidate| resumable.contains(&candidate.trial.0))
                .copied();
            if let Some(chosen) = chosen {
                rung.candidates.remove(&chosen);
                return Some(chosen.trial.0);
            }
        }
        None
    }
}

impl TrialRungs {
    /// A new trial's record, in a bracket drawn from `weights` (no draw with one bracket).
    fn join(brackets: &[Bracket], weights: &[f64], rng: &mut ChaCha20Rng) -> Self {
        let bracket = if brackets.len() == 1 {
            0
        } else {
            weighted_index(weights, rng.random::<f64>())
        };
        Self {
            bracket,
            scores: vec![None; brackets[bracket].rungs.len()],
        }
    }
}

/// The index whose cumulative weight first exceeds `uniform · Σ weights`, for `uniform` in [0, 1).
fn weighted_index(weights: &[f64], uniform: f64) -> usize {
    let mut remaining = uniform * weights.iter().sum::<f64>();
    for (index, weight) in weights.iter().enumerate() {
        if remaining < *weight {
            return index;
        }
        remaining -= weight;
    }
    weights.len() - 1
}

/// The milestones of bracket `bracket`: `grace · rf^(k + bracket)` for every `k` that keeps them
/// within `max_t` (up to float error), at most [`MAX_RUNGS`].
fn bracket_milestones(grace_period: f64, max_t: f64, reduction_factor: f64, bracket: u32) -> Vec<f64> {
    let rungs_of_first = ((max_t / grace_period).ln() / reduction_factor.ln() + 1.0 + RUNG_COUNT_SLACK).floor();
    if rungs_of_first.is_nan() || rungs_of_first < 1.0 {
        return Vec::new(); // NaN comes from settings that were never validated
    }
    let rungs_of_first = rungs_of_first.min(f64::from((MAX_RUNGS as u32).saturating_add(bracket))) as u32;
    (bracket..rungs_of_first)
        .map(|exponent| grace_period * reduction_factor.powf(f64::from(exponent)))
        .collect()
}

/// The stop rule's rung: walking down from the highest milestone, the first one `≤ time` that
/// holds no score of the trial. Without `stop_last_trials` Ray ends the walk at the first rung
/// `≤ time` that already holds one.
fn rung_to_check(rungs: &[Rung], recorded: &[Option<f64>], time: f64, stop_last_trials: bool) -> Option<usize> {
    for (index, rung) in rungs.iter().enumerate().rev() {
        if time < rung.milestone {
            continue;
        }
        if recorded[index].is_none() {
            return Some(index);
        }
        if !stop_last_trials {
            return None;
        }
    }
    None
}

/// The promote rule's rung: the highest milestone `≤ time`, if it is above every rung the trial
/// has reached (a promoted trial never falls back to a rung it jumped over).
fn rung_reached(rungs: &[Rung], recorded: &[Option<f64>], time: f64) -> Option<usize> {
    let reached = rungs.iter().rposition(|rung| rung.milestone <= time)?;
    let highest_recorded = recorded.iter().rposition(Option::is_some);
    if highest_recorded.is_some_and(|highest| reached <= highest) {
        return None;
    }
    Some(reached)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Checkpoints, decide, metric};
    use proptest::prelude::*;
    use tune_core::trial::Metrics;

    fn settings(kind: AshaType, grace_period: f64, reduction_factor: f64, max_t: f64, brackets: u32) -> AshaConfig {
        AshaConfig {
            kind,
            time_attr: "step".into(),
            max_t,
            grace_period,
            reduction_factor,
            brackets,
            stop_last_trials: true,
        }
    }

    fn report(asha: &mut Asha, trial: u64, step: u64, value: f64) -> Decision {
        decide(asha, trial, step, Metrics::new(), value, Checkpoints::EVERY_REPORT)
    }

    fn resumable(trials: &[u64]) -> BTreeSet<TrialId> {
        trials.iter().map(|&trial| TrialId(trial)).collect()
    }

    use Decision::{Continue, Pause, Stop};

    #[test]
    fn bracket_milestones_follow_the_reduction_factor() {
        let asha = Asha::new(&settings(AshaType::Stop, 1.0, 3.0, 81.0, 3), Mode::Max, 0);
        assert_eq!(asha.bracket_count(), 3);
        assert_eq!(asha.milestones(0), [1.0, 3.0, 9.0, 27.0, 81.0]);
        assert_eq!(asha.milestones(1), [3.0, 9.0, 27.0, 81.0]);
        assert_eq!(asha.milestones(2), [9.0, 27.0, 81.0]);
        assert!(asha.milestones(3).is_empty());
        // Ray's docstring bracket: _Bracket(1, 10, 2, 0).
        let asha = Asha::new(&settings(AshaType::Stop, 1.0, 2.0, 10.0, 1), Mode::Max, 0);
        assert_eq!(asha.milestones(0), [1.0, 2.0, 4.0, 8.0]);
        // ln(1000) / ln(10) = 2.9999999999999996: the slack keeps the rung at max_t.
        let asha = Asha::new(&settings(AshaType::Stop, 1.0, 10.0, 1000.0, 1), Mode::Max, 0);
        assert_eq!(asha.milestones(0), [1.0, 10.0, 100.0, 1000.0]);
        // More brackets than rungs: the extra brackets have none.
        let asha = Asha::new(&settings(AshaType::Stop, 4.0, 4.0, 16.0, 4), Mode::Max, 0);
        assert_eq!(asha.milestones(1), [16.0]);
        assert!(asha.milestones(2).is_empty() && asha.milestones(3).is_empty());
    }

    #[test]
    fn ray_docstring_example() {
        let mut asha = Asha::new(&settings(AshaType::Stop, 1.0, 2.0, 10.0, 1), Mode::Max, 0);
        assert_eq!(report(&mut asha, 1, 1, 2.0), Continue);
        assert_eq!(report(&mut asha, 2, 1, 4.0), Continue);
        assert_eq!(asha.cutoff(0, 0), Some(3.0));
        assert_eq!(report(&mut asha, 3, 1, 1.0), Stop);
        assert_eq!(asha.cutoff(0, 0), Some(2.0));
    }

    #[test]
    fn cutoff_interpolates_and_only_strictly_below_stops() {
        // rf 4: the cutoff is the 75th percentile.
        let mut asha = Asha::new(&settings(AshaType::Stop, 1.0, 4.0, 64.0, 1), Mode::Max, 0);
        assert_eq!(asha.cutoff(0, 0), None);
        assert_eq!(
            report(&mut asha, 1, 1, 0.0),
            Continue,
            "the first arrival has no cutoff"
        );
        assert_eq!(report(&mut asha, 2, 1, 10.0), Continue);
        assert_eq!(report(&mut asha, 3, 1, 20.0), Continue); // cutoff 7.5
        assert_eq!(report(&mut asha, 4, 1, 30.0), Continue); // cutoff 15
        assert_eq!(
            asha.cutoff(0, 0),
            Some(22.5),
            "position 0.75 · 3 = 2.25 between 20 and 30"
        );
        assert_eq!(report(&mut asha, 5, 1, 22.4), Stop);
        assert_eq!(asha.recorded(0, 0), 5, "a stopped trial's score is recorded too");
        assert_eq!(asha.cutoff(0, 0), Some(22.4), "position 3 of [0, 10, 20, 22.4, 30]");
        assert_eq!(
            report(&mut asha, 6, 1, 22.4),
            Continue,
            "a tie with the cutoff continues"
        );
        // min mode: the score is the negated loss.
        let mut asha = Asha::new(&settings(AshaType::Stop, 1.0, 2.0, 64.0, 1), Mode::Min, 0);
        assert_eq!(report(&mut asha, 1, 1, 0.3), Continue);
        assert_eq!(report(&mut asha, 2, 1, 0.2), Continue);
        assert_eq!(asha.cutoff(0, 0), Some(-0.25));
        assert_eq!(report(&mut asha, 3, 1, 0.26), Stop);
        assert_eq!(report(&mut asha, 4, 1, 0.25), Continue); // median of [-0.3, -0.26, -0.2] is -0.26
    }

    #[test]
    fn max_t_stops_without_recording() {
        let mut asha = Asha::new(&settings(AshaType::Stop, 1.0, 3.0, 81.0, 1), Mode::Max, 0);
        assert_eq!(report(&mut asha, 1, 81, 5.0), Stop);
        assert_eq!(report(&mut asha, 2, 100, 5.0), Stop);
        assert!((0..5).all(|rung| asha.recorded(0, rung) == 0));
        // Without stop_last_trials max_t is a rung like the others.
        let mut config = settings(AshaType::Stop, 1.0, 3.0, 81.0, 1);
        config.stop_last_trials = false;
        let mut asha = Asha::new(&config, Mode::Max, 0);
        assert_eq!(report(&mut asha, 1, 81, 5.0), Continue);
        assert_eq!(asha.recorded(0, 4), 1);
        assert_eq!(report(&mut asha, 2, 81, 4.0), Stop);
    }

    #[test]
    fn one_rung_per_result_when_steps_jump() {
        let mut asha = Asha::new(&settings(AshaType::Stop, 1.0, 3.0, 81.0, 1), Mode::Max, 0);
        let counts = |asha: &Asha| (0..5).map(|rung| asha.recorded(0, rung)).collect::<Vec<_>>();
        report(&mut asha, 1, 4, 1.0);
        assert_eq!(counts(&asha), [0, 1, 0, 0, 0], "step 4 fills rung 3 only");
        report(&mut asha, 1, 5, 1.0);
        assert_eq!(
            counts(&asha),
            [1, 1, 0, 0, 0],
            "Ray walks down past a filled rung to an empty one"
        );
        report(&mut asha, 1, 6, 1.0);
        assert_eq!(counts(&asha), [1, 1, 0, 0, 0], "nothing left to fill below 9");
        report(&mut asha, 1, 30, 1.0);
        assert_eq!(counts(&asha), [1, 1, 0, 1, 0], "step 30 fills rung 27 only");
        // Without stop_last_trials Ray stops walking at the first filled rung.
        let mut config = settings(AshaType::Stop, 1.0, 3.0, 81.0, 1);
        config.stop_last_trials = false;
        let mut asha = Asha::new(&config, Mode::Max, 0);
        report(&mut asha, 1, 4, 1.0);
        report(&mut asha, 1, 5, 1.0);
        assert_eq!(counts(&asha), [0, 1, 0, 0, 0]);
    }

    #[test]
    fn below_the_grace_period_or_without_time_nothing_happens() {
        let mut config = settings(AshaType::Stop, 2.0, 2.0, 16.0, 1);
        config.time_attr = "epoch".into();
        let mut asha = Asha::new(&config, Mode::Max, 0);
        assert_eq!(report(&mut asha, 1, 5, 1.0), Continue, "no epoch in the report");
        let mut with_epoch =
            |trial, epoch: f64, value| decide(&mut asha, trial, 0, metric("epoch", epoch), value, Checkpoints::NONE);
        assert_eq!(with_epoch(1, 1.5, 1.0), Continue);
        assert_eq!(with_epoch(1, f64::NAN, 1.0), Continue);
        assert_eq!(with_epoch(1, 2.0, 1.0), Continue);
        assert_eq!(with_epoch(2, 2.5, 0.5), Stop);
        assert_eq!(with_epoch(3, 16.0, 9.0), Stop);
        assert_eq!(asha.recorded(0, 0), 2);
    }

    #[test]
    fn nan_ranks_worst_and_never_panics() {
        for mode in [Mode::Min, Mode::Max] {
            let mut asha = Asha::new(&settings(AshaType::Stop, 1.0, 3.0, 27.0, 1), mode, 0);
            let good = |loss: f64| if mode == Mode::Min { loss } else { -loss };
            assert_eq!(
                report(&mut asha, 1, 1, f64::NAN),
                Continue,
                "the first arrival continues"
            );
            assert_eq!(asha.cutoff(0, 0), Some(f64::NEG_INFINITY));
            assert_eq!(report(&mut asha, 2, 1, good(0.5)), Continue);
            assert_eq!(report(&mut asha, 3, 1, good(0.4)), Continue);
            assert_eq!(report(&mut asha, 4, 1, f64::NAN), Stop);
            assert_eq!(asha.recorded(0, 0), 4, "a NaN score is recorded as -inf");
        }
    }

    #[test]
    fn brackets_are_drawn_toward_more_rungs_and_reproducibly() {
        let config = settings(AshaType::Stop, 1.0, 3.0, 81.0, 3); // 5, 4 and 3 rungs
        let assign = |seed| {
            let mut asha = Asha::new(&config, Mode::Max, seed);
            (1..=6_000)
                .map(|trial| {
                    asha.on_trial_add(TrialId(trial), &Config::default());
                    asha.bracket_of(TrialId(trial)).unwrap()
                })
                .collect::<Vec<_>>()
        };
        let brackets = assign(7);
        assert_eq!(brackets, assign(7));
        assert_ne!(brackets, assign(8));
        let mut counts = [0; 3];
        for bracket in brackets {
            counts[bracket] += 1;
        }
        // Probabilities 1, 1/e, 1/e² normalised: 0.665, 0.245, 0.090; allow 5 standard deviations.
        let expected = [3_990.0, 1_469.0, 541.0];
        let deviation = [183.0, 167.0, 111.0];
        for ((count, expected), deviation) in counts.iter().zip(expected).zip(deviation) {
            assert!((f64::from(*count) - expected).abs() < deviation, "{counts:?}");
        }
    }

    #[test]
    fn stop_never_pauses_nor_resumes() {
        let mut asha = Asha::new(&settings(AshaType::Stop, 1.0, 3.0, 81.0, 1), Mode::Max, 0);
        for trial in 1..=9 {
            assert_ne!(report(&mut asha, trial, 1, trial as f64), Pause);
        }
        assert_eq!(
            asha.choose_trial_to_resume(&resumable(&[1, 2, 3, 4, 5, 6, 7, 8, 9])),
            None
        );
    }

    #[test]
    fn promote_pauses_at_rungs_and_stops_at_the_top() {
        // Milestones 1, 3, 9; max_t 10 so the top rung comes before max_t.
        let mut asha = Asha::new(&settings(AshaType::Promote, 1.0, 3.0, 10.0, 1), Mode::Max, 0);
        assert_eq!(asha.milestones(0), [1.0, 3.0, 9.0]);
        for trial in 1..=3 {
            assert_eq!(report(&mut asha, trial, 1, trial as f64), Pause);
        }
        assert_eq!(asha.choose_trial_to_resume(&resumable(&[1, 2, 3])), Some(TrialId(3)));
        assert_eq!(
            report(&mut asha, 3, 1, 3.0),
            Continue,
            "a resumed trial repeating its step goes on"
        );
        assert_eq!(report(&mut asha, 3, 2, 3.0), Continue);
        assert_eq!(report(&mut asha, 3, 3, 3.0), Pause);
        assert_eq!(report(&mut asha, 3, 9, 3.0), Stop, "the top rung ends the trial");
        assert_eq!(asha.recorded(0, 2), 1);
        for trial in 4..=5 {
            assert_eq!(report(&mut asha, trial, 9, 1.0), Stop);
        }
        assert_eq!(asha.recorded(0, 2), 3);
        assert_eq!(
            asha.choose_trial_to_resume(&resumable(&[1, 2, 4, 5])),
            None,
            "never from the top rung"
        );
        // With max_t on the top rung, stop_last_trials stops there without recording.
        let mut asha = Asha::new(&settings(AshaType::Promote, 1.0, 3.0, 9.0, 1), Mode::Max, 0);
        assert_eq!(report(&mut asha, 1, 9, 1.0), Stop);
        assert_eq!(asha.recorded(0, 2), 0);
    }

    #[test]
    fn promote_takes_the_top_fraction_highest_rung_first() {
        let mut asha = Asha::new(&settings(AshaType::Promote, 1.0, 3.0, 27.0, 1), Mode::Max, 0);
        let mut paused = BTreeSet::new();
        for (trial, value) in [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0), (6, 6.0)] {
            assert_eq!(report(&mut asha, trial, 1, value), Pause);
            paused.insert(TrialId(trial));
        }
        // 6 at rung 1: the top ⌊6/3⌋ = 2 are promotable, best first.
        for expected in [6, 5] {
            let chosen = asha.choose_trial_to_resume(&paused).unwrap();
            assert_eq!(chosen, TrialId(expected));
            paused.remove(&chosen);
        }
        assert_eq!(asha.choose_trial_to_resume(&paused), None);
        assert_eq!(report(&mut asha, 6, 3, 6.5), Pause);
        assert_eq!(report(&mut asha, 5, 3, 5.5), Pause);
        paused.extend([TrialId(6), TrialId(5)]);
        assert_eq!(
            asha.choose_trial_to_resume(&paused),
            None,
            "⌊2/3⌋ = 0 at rung 3, nothing new at rung 1"
        );
        // Three more at rung 1: the top ⌊9/3⌋ = 3 are 9, 6 and 5, and only 9 is left to promote.
        for (trial, value) in [(7, 0.5), (8, 0.6), (9, 7.0)] {
            assert_eq!(report(&mut asha, trial, 1, value), Pause);
            paused.insert(TrialId(trial));
        }
        assert_eq!(asha.choose_trial_to_resume(&paused), Some(TrialId(9)));
        paused.remove(&TrialId(9));
        assert_eq!(report(&mut asha, 9, 3, 9.0), Pause);
        paused.insert(TrialId(9));
        for (trial, value) in [(10, 8.0), (11, 0.1), (12, 0.2)] {
            assert_eq!(report(&mut asha, trial, 1, value), Pause);
            paused.insert(TrialId(trial));
        }
        // Rung 3 holds 3 scores: its best (9) goes before rung 1's promotable trial (10).
        assert_eq!(asha.choose_trial_to_resume(&paused), Some(TrialId(9)));
        paused.remove(&TrialId(9));
        assert_eq!(asha.choose_trial_to_resume(&paused), Some(TrialId(10)));
        paused.remove(&TrialId(10));
        assert_eq!(asha.choose_trial_to_resume(&paused), None);
    }

    #[test]
    fn promote_returns_only_resumable_trials_and_forgets_removed_ones() {
        let mut asha = Asha::new(&settings(AshaType::Promote, 1.0, 3.0, 27.0, 1), Mode::Max, 0);
        for trial in 1..=6 {
            assert_eq!(report(&mut asha, trial, 1, trial as f64), Pause);
        }
        // 6 is still exiting; 5 is the other promotable trial.
        assert_eq!(asha.choose_trial_to_resume(&resumable(&[1, 2, 3, 4])), None);
        assert_eq!(
            asha.choose_trial_to_resume(&resumable(&[1, 2, 3, 4, 5])),
            Some(TrialId(5))
        );
        assert_eq!(asha.choose_trial_to_resume(&resumable(&[1, 2, 3, 4])), None);
        asha.on_trial_remove(TrialId(6));
        assert_eq!(
            asha.choose_trial_to_resume(&resumable(&[1, 2, 3, 4, 6])),
            None,
            "6 was removed"
        );
        assert_eq!(asha.recorded(0, 0), 6, "its score still counts");
    }

    fn arb_value() -> impl Strategy<Value = f64> {
        prop_oneof![
            8 => (-20i32..20).prop_map(|half| f64::from(half) / 2.0),
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
            1 => any::<f64>(),
        ]
    }

    type ModelRung = (f64, Vec<(TrialId, f64)>);

    /// Ray's `_Bracket.on_result`, written out with plain vectors and a sort per cutoff (finite
    /// scores only).
    struct RayModel {
        /// Per bracket, per rung (highest last): the milestone and the scores recorded there.
        rungs: Vec<Vec<ModelRung>>,
        rf: f64,
        max_t: f64,
        stop_last_trials: bool,
    }

    impl RayModel {
        fn on_result(&mut self, bracket: usize, trial: TrialId, time: f64, score: f64) -> Decision {
            if time >= self.max_t && self.stop_last_trials {
                return Stop;
            }
            for (milestone, recorded) in self.rungs[bracket].iter_mut().rev() {
                let has = recorded.iter().any(|(t, _)| *t == trial);
                if time >= *milestone && has && !self.stop_last_trials {
                    break;
                }
                if time < *milestone || has {
                    continue;
                }
                let mut action = Continue;
                if !recorded.is_empty() {
                    let mut sorted: Vec<f64> = recorded.iter().map(|(_, s)| *s).collect();
                    sorted.sort_by(f64::total_cmp);
                    let position = (sorted.len() - 1) as f64 * ((1.0 - 1.0 / self.rf) * 100.0 / 100.0);
                    let below = position.floor() as usize;
                    let above = (below + 1).min(sorted.len() - 1);
                    let t = position - below as f64;
                    let (a, b) = (sorted[below], sorted[above]);
                    let cutoff = if t >= 0.5 {
                        b - (b - a) * (1.0 - t)
                    } else {
                        a + (b - a) * t
                    };
                    if score < cutoff {
                        action = Stop;
                    }
                }
                recorded.push((trial, score));
                return action;
            }
            Continue
        }
    }

    /// The promotion test's reference: what each rung recorded and who was promoted from it.
    struct PromotionReference {
        milestones: Vec<f64>,
        rf: f64,
        recorded: Vec<Vec<(u64, f64)>>,
        promoted: Vec<BTreeSet<u64>>,
        paused_at: std::collections::BTreeMap<u64, usize>,
        removed: BTreeSet<u64>,
    }

    impl PromotionReference {
        fn new(milestones: Vec<f64>, rf: f64) -> Self {
            let rungs = milestones.len();
            Self {
                milestones,
                rf,
                recorded: vec![Vec::new(); rungs],
                promoted: vec![BTreeSet::new(); rungs],
                paused_at: Default::default(),
                removed: BTreeSet::new(),
            }
        }

        /// Reports `trial` at rung `rung` with `score`: it must pause there, or stop at the top.
        fn run(&mut self, asha: &mut Asha, trial: u64, rung: usize, score: f64) -> Result<(), TestCaseError> {
            let decision = report(asha, trial, self.milestones[rung] as u64, score);
            self.recorded[rung].push((trial, score));
            if rung + 1 == self.milestones.len() {
                prop_assert_eq!(decision, Stop);
            } else {
                prop_assert_eq!(decision, Pause);
                self.paused_at.insert(trial, rung);
            }
            Ok(())
        }

        /// The trial to promote, and its rung: from the highest rung below the top down, the best
        /// resumable trial in the top ⌊n/rf⌋ not yet promoted from there (ties: the older one).
        fn expected_promotion(&self, resumable: &BTreeSet<TrialId>) -> Option<(u64, usize)> {
            (0..self.milestones.len() - 1).rev().find_map(|rung| {
                let mut ranked = self.recorded[rung].clone();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                let quota = (ranked.len() as f64 / self.rf).floor() as usize;
                ranked[..quota]
                    .iter()
                    .map(|(trial, _)| *trial)
                    .filter(|trial| !self.promoted[rung].contains(trial) && !self.removed.contains(trial))
                    .find(|trial| resumable.contains(&TrialId(*trial)))
                    .map(|trial| (trial, rung))
            })
        }
    }

    proptest! {
        #[test]
        fn milestones_are_grace_times_powers_of_rf_within_max_t(
            grace in 0.01f64..100.0,
            ratio in 1.0f64..1e6,
            rf in 1.2f64..10.0,
            brackets in 1u32..6,
        ) {
            let max_t = grace * ratio;
            let asha = Asha::new(&settings(AshaType::Stop, grace, rf, max_t, brackets), Mode::Max, 0);
            let first = asha.milestones(0);
            prop_assert!(!first.is_empty());
            prop_assert_eq!(first[0], grace);
            for bracket in 0..brackets as usize {
                let milestones = asha.milestones(bracket);
                prop_assert_eq!(&milestones[..], &first[bracket.min(first.len())..]);
                for (k, milestone) in milestones.iter().enumerate() {
                    prop_assert_eq!(*milestone, grace * rf.powf((k + bracket) as f64));
                    prop_assert!(*milestone <= max_t * (1.0 + 1e-8), "{milestone} > {max_t}");
                }
                prop_assert!(milestones.windows(2).all(|pair| pair[0] < pair[1]));
            }
            let next = grace * rf.powf(first.len() as f64);
            prop_assert!(next > max_t * (1.0 - 1e-8), "rung {next} ≤ max_t {max_t} is missing");
        }

        #[test]
        fn stop_matches_rays_bracket(
            rf in prop_oneof![Just(2.0), Just(3.0), Just(4.0), Just(2.5)],
            grace in 1u64..4,
            brackets in 1u32..4,
            stop_last_trials in any::<bool>(),
            seed in any::<u64>(),
            results in prop::collection::vec((1u64..16, 0u64..4, -20i32..20), 1..300),
        ) {
            let mut config = settings(AshaType::Stop, grace as f64, rf, 40.0, brackets);
            config.stop_last_trials = stop_last_trials;
            let mut asha = Asha::new(&config, Mode::Max, seed);
            for trial in 1..16 {
                asha.on_trial_add(TrialId(trial), &Config::default());
            }
            let mut model = RayModel {
                rungs: (0..brackets as usize)
                    .map(|b| asha.milestones(b).into_iter().map(|m| (m, Vec::new())).collect())
                    .collect(),
                rf,
                max_t: 40.0,
                stop_last_trials,
            };
            let mut steps = [0u64; 16];
            for (trial, advance, half) in results {
                steps[trial as usize] += advance;
                let (step, value) = (steps[trial as usize], f64::from(half) / 2.0);
                let decision = report(&mut asha, trial, step, value);
                let bracket = asha.bracket_of(TrialId(trial)).unwrap();
                prop_assert_eq!(decision, model.on_result(bracket, TrialId(trial), step as f64, value));
            }
        }

        #[test]
        fn arbitrary_values_never_panic(
            kind in prop_oneof![Just(AshaType::Stop), Just(AshaType::Promote)],
            brackets in 1u32..4,
            results in prop::collection::vec((1u64..12, 0u64..100, arb_value()), 1..200),
        ) {
            let mut asha = Asha::new(&settings(kind, 1.0, 2.0, 64.0, brackets), Mode::Min, 3);
            let all = resumable(&(1..12).collect::<Vec<_>>());
            for (trial, step, value) in results {
                let decision = report(&mut asha, trial, step, value);
                prop_assert!(kind == AshaType::Promote || decision != Pause);
                if let Some(chosen) = asha.choose_trial_to_resume(&all) {
                    prop_assert!(kind == AshaType::Promote && all.contains(&chosen));
                }
                if step.is_multiple_of(7) {
                    asha.on_trial_remove(TrialId(trial));
                }
            }
        }

        /// Promotion against a reference: the chosen trial is resumable, in the top ⌊n/rf⌋ of
        /// its rung, promoted from there once, and no higher rung had a promotable trial. (More
        /// than ⌊n/rf⌋ trials can be promoted from a rung over time, as in the paper: a trial
        /// promoted early can later drop out of the top fraction.)
        #[test]
        fn promotions_take_the_top_fraction_highest_rung_first(
            rf in prop_oneof![Just(2.0), Just(3.0), Just(4.0)],
            scores in prop::collection::vec(-8i32..8, 40..120),
            actions in prop::collection::vec(0u8..10, 60..240),
        ) {
            let max_t = rf * rf * rf * rf + 1.0; // the top rung, rf⁴, comes before max_t
            let mut asha = Asha::new(&settings(AshaType::Promote, 1.0, rf, max_t, 1), Mode::Max, 0);
            let mut reference = PromotionReference::new(asha.milestones(0), rf);
            let mut next_score = scores.iter().cycle().map(|score| f64::from(*score));
            let mut next_trial = 1u64;
            for action in actions {
                match action {
                    0..=4 => {
                        reference.run(&mut asha, next_trial, 0, next_score.next().unwrap())?;
                        next_trial += 1;
                    }
                    5 if !reference.paused_at.is_empty() => {
                        let index = next_trial as usize % reference.paused_at.len();
                        let trial = *reference.paused_at.keys().nth(index).unwrap();
                        reference.paused_at.remove(&trial);
                        reference.removed.insert(trial);
                        asha.on_trial_remove(TrialId(trial));
                    }
                    _ => {
                        // Every fourth paused trial is still exiting.
                        let resumable: BTreeSet<TrialId> = reference
                            .paused_at
                            .keys()
                            .filter(|trial| !(*trial + next_trial).is_multiple_of(4))
                            .map(|trial| TrialId(*trial))
                            .collect();
                        let expected = reference.expected_promotion(&resumable);
                        prop_assert_eq!(asha.choose_trial_to_resume(&resumable), expected.map(|(t, _)| TrialId(t)));
                        if let Some((trial, rung)) = expected {
                            prop_assert_eq!(reference.paused_at.remove(&trial), Some(rung));
                            prop_assert!(reference.promoted[rung].insert(trial));
                            reference.run(&mut asha, trial, rung + 1, next_score.next().unwrap())?;
                        }
                    }
                }
            }
        }
    }
}
