//! The median stopping rule: stop a trial whose best result so far is worse than the median of
//! the other trials' running averages at the same point of training.
//!
//! For each trial the rule keeps every report's `(time, score)` — time from `time_attr`, score
//! from [`Mode::score`], so higher is better and NaN ranks below everything — in time order,
//! with running sums. On a result at time `t`:
//!
//! - before `grace_period` (`t < grace_period`) the trial continues;
//! - otherwise, for every *other* trial with at least one report at time `≤ t`, its running
//!   average is the mean of its scores over those reports (a binary search in its prefix sums);
//! - with fewer than `min_samples_required` such averages (and never with none) the trial
//!   continues;
//! - else the trial stops if its best score so far is strictly below the median of the averages
//!   (the mean of the two middle ones for an even count), and continues otherwise.
//!
//! Trials that ended (completed, stopped, errored) still count as others: their history is data,
//! and a population that drops its losers would otherwise make the median ever harder to meet.
//! Reports without the time attribute (or with a NaN time) are ignored. NaN and infinite results
//! score `-inf` ([`Mode::score`]), the worst, and so do averages that come out NaN.
//!
//! # Cost
//!
//! A decision looks at every other trial once, with a binary search in its reports, and finds
//! the median by selection: O(trials · log reports). Recording a report is O(1) when times
//! arrive in order, as they do. That is far below what producing a report costs a trial, even for
//! thousands of trials; Ray Tune's `MedianStoppingRule` does the same amount of work (more, as it
//! scans each trial's results linearly).
//!
//! ## References
//!
//! Daniel Golovin, Benjamin Solnik, Subhodeep Moitra, Greg Kochanski, John Karro and D. Sculley,
//! "Google Vizier: A Service for Black-Box Optimization", Proceedings of the 23rd ACM SIGKDD
//! International Conference on Knowledge Discovery and Data Mining (KDD), 2017.

use std::collections::BTreeMap;

use tune_core::scheduler::{Scheduler, TrialReport};
use tune_core::trial::{Decision, Mode, TrialId};

use crate::MedianConfig;

/// One trial's reports, in time order, with prefix sums of their scores.
#[derive(Debug, Clone)]
struct History {
    /// Report times, non-decreasing.
    times: Vec<f64>,
    /// Scores in the same order.
    scores: Vec<f64>,
    /// `prefix[j]` is the sum of the first `j` scores.
    prefix: Vec<f64>,
    /// The best score so far.
    best: f64,
}

impl History {
    fn new() -> Self {
        History {
            times: Vec::new(),
            scores: Vec::new(),
            prefix: vec![0.0],
            best: f64::NEG_INFINITY,
        }
    }

    fn record(&mut self, time: f64, score: f64) {
        // After every report of the same time, so equal times keep their order.
        let at = self.times.partition_point(|&t| t <= time);
        self.times.insert(at, time);
        self.scores.insert(at, score);
        self.prefix.truncate(at + 1);
        for j in at..self.scores.len() {
            let sum = self.prefix[j] + self.scores[j];
            self.prefix.push(sum);
        }
        self.best = self.best.max(score);
    }

    /// The mean score over the reports at time `≤ time`, if there is one.
    fn running_average(&self, time: f64) -> Option<f64> {
        let count = self.times.partition_point(|&t| t <= time);
        if count == 0 {
            return None;
        }
        Some(not_nan(self.prefix[count] / count as f64))
    }
}

/// NaN as the worst score; -0.0 as 0.0.
fn not_nan(score: f64) -> f64 {
    if score.is_nan() { f64::NEG_INFINITY } else { score + 0.0 }
}

/// The median of `values` (none NaN, at least one), by selection.
fn median(values: &mut [f64]) -> f64 {
    debug_assert!(!values.is_empty());
    let count = values.len();
    let (lower, upper, _) = values.select_nth_unstable_by(count / 2, f64::total_cmp);
    let upper = *upper;
    if count % 2 == 1 {
        return upper;
    }
    let lower = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Halves first: the sum of two large values would overflow.
    lower / 2.0 + upper / 2.0
}

/// The median stopping rule. See the module documentation.
#[derive(Debug, Clone)]
pub struct MedianStopping {
    time_attr: String,
    mode: Mode,
    grace_period: f64,
    min_samples_required: usize,
    histories: BTreeMap<TrialId, History>,
}

impl MedianStopping {
    /// A median stopping rule over the settings `c` for a metric optimised in `mode`.
    pub fn new(c: &MedianConfig, mode: Mode) -> MedianStopping {
        MedianStopping {
            time_attr: c.time_attr.clone(),
            mode,
            grace_period: c.grace_period,
            min_samples_required: c.min_samples_required as usize,
            histories: BTreeMap::new(),
        }
    }

    /// The median of the other trials' running averages at `time`, in score terms (higher is
    /// better), and how many trials it was taken over; `None` when no other trial has reported
    /// at or before `time`.
    pub fn median_of_others(&self, trial: TrialId, time: f64) -> Option<(f64, usize)> {
        let mut averages: Vec<f64> = self
            .histories
            .iter()
            .filter(|(other, _)| **other != trial)
            .filter_map(|(_, history)| history.running_average(time))
            .collect();
        if averages.is_empty() {
            return None;
        }
        Some((median(&mut averages), averages.len()))
    }
}

impl Scheduler for MedianStopping {
    fn on_result(&mut self, trial: TrialId, result: &TrialReport<'_>) -> Decision {
        let Some(time) = result.time(&self.time_attr).filter(|t| !t.is_nan()) else {
            return Decision::Continue;
        };
        let history = self.histories.entry(trial).or_insert_with(History::new);
        history.record(time, not_nan(self.mode.score(result.value)));
        let best = history.best;
        if time < self.grace_period {
            return Decision::Continue;
        }
        match self.median_of_others(trial, time) {
            Some((median, samples)) if samples >= self.min_samples_required && best < median => Decision::Stop,
            _ => Decision::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Checkpoints, decide, metric};
    use proptest::prelude::*;

    fn rule(grace_period: f64, min_samples_required: u32, mode: Mode) -> MedianStopping {
        MedianStopping::new(
            &MedianConfig {
                time_attr: "step".into(),
                grace_period,
                min_samples_required,
            },
            mode,
        )
    }

    fn report(rule: &mut MedianStopping, trial: u64, step: u64, value: f64) -> Decision {
        decide(rule, trial, step, metric("score", value), value, Checkpoints::NONE)
    }

    /// Three trials with known histories (mode max), values that keep the arithmetic exact:
    /// t1: 2 @1, 4 @2, 6 @3 — running averages 2, 3, 4
    /// t2: 5 @1, 5 @3       — running averages 5, 5, 5
    /// t3: 1 @2, 3 @4       — running averages —, 1, 1, 2
    fn population(grace_period: f64, min_samples: u32, mode: Mode) -> MedianStopping {
        let sign = if mode == Mode::Max { 1.0 } else { -1.0 };
        let mut rule = rule(grace_period, min_samples, mode);
        for (trial, step, value) in [
            (1, 1, 2.0),
            (1, 2, 4.0),
            (1, 3, 6.0),
            (2, 1, 5.0),
            (2, 3, 5.0),
            (3, 2, 1.0),
            (3, 4, 3.0),
        ] {
            report(&mut rule, trial, step, sign * value);
        }
        rule
    }

    /// The decisions on `reports` (trial, step, value), reported in order.
    fn decisions(rule: &mut MedianStopping, reports: &[(u64, u64, f64)]) -> Vec<Decision> {
        reports
            .iter()
            .map(|&(trial, step, value)| report(rule, trial, step, value))
            .collect()
    }

    /// The decisions on a new trial 4 that reports a hopeless -10 at each of `steps` to a fresh
    /// [`population`] (mode max).
    fn hopeless_newcomer(grace_period: f64, min_samples: u32, steps: [u64; 2]) -> Vec<Decision> {
        let mut rule = population(grace_period, min_samples, Mode::Max);
        steps.map(|step| report(&mut rule, 4, step, -10.0)).to_vec()
    }

    /// The decision on a new trial 4 that reports `value` at step 2 to a fresh [`population`]
    /// (no grace period, two samples required).
    fn newcomer_at_step_2(mode: Mode, value: f64) -> Decision {
        report(&mut population(0.0, 2, mode), 4, 2, value)
    }

    #[test]
    fn exact_decisions_on_a_small_population() {
        let mut rule = population(0.0, 2, Mode::Max);
        // At step 2 the others' averages are 3, 5 and 1: median 3.
        assert_eq!(rule.median_of_others(TrialId(4), 2.0), Some((3.0, 3)));
        assert_eq!(report(&mut rule, 4, 2, 2.9), Decision::Stop);
        // At the median exactly, the trial is not strictly worse.
        assert_eq!(newcomer_at_step_2(Mode::Max, 3.0), Decision::Continue);
        // At step 1 only t1 (2) and t2 (5) have reported: an even count takes the mean of the
        // middle two, 3.5.
        let mut rule = population(0.0, 2, Mode::Max);
        assert_eq!(rule.median_of_others(TrialId(4), 1.0), Some((3.5, 2)));
        assert_eq!(report(&mut rule, 4, 1, 3.5), Decision::Continue);
        // Its best so far counts, not its latest: 3.5 beats the median 3 at step 2.
        assert_eq!(report(&mut rule, 4, 2, 0.0), Decision::Continue);
        // At step 4 the averages are 4, 5 and 2: median 4 beats the best 3.5.
        assert_eq!(report(&mut rule, 4, 4, 0.0), Decision::Stop);
    }

    #[test]
    fn grace_period_is_respected() {
        assert_eq!(hopeless_newcomer(3.0, 1, [2, 3]), [Decision::Continue, Decision::Stop]);
    }

    #[test]
    fn min_samples_required_is_respected() {
        // At step 1 only two others have reported.
        assert_eq!(hopeless_newcomer(0.0, 3, [1, 2]), [Decision::Continue, Decision::Stop]);
        // Zero required still needs one other trial to take a median of.
        let mut alone = rule(0.0, 0, Mode::Max);
        assert_eq!(
            decisions(&mut alone, &[(1, 5, -10.0), (2, 5, -20.0)]),
            [Decision::Continue, Decision::Stop]
        );
    }

    #[test]
    fn mode_min_ranks_lower_values_better() {
        // The same population negated and minimised makes the same decisions.
        assert_eq!(newcomer_at_step_2(Mode::Min, -2.9), Decision::Stop);
        assert_eq!(newcomer_at_step_2(Mode::Min, -3.1), Decision::Continue);
        // Against the unnegated population a low value stops under max.
        assert_eq!(newcomer_at_step_2(Mode::Max, 3.1), Decision::Continue);
        assert_eq!(newcomer_at_step_2(Mode::Max, -3.1), Decision::Stop);
    }

    #[test]
    fn removed_trials_still_count_and_nan_is_worst() {
        let mut rule = population(0.0, 3, Mode::Max);
        rule.on_trial_remove(TrialId(1));
        rule.on_trial_remove(TrialId(2));
        assert_eq!(report(&mut rule, 4, 2, 2.9), Decision::Stop);
        assert_eq!(report(&mut rule, 5, 2, f64::NAN), Decision::Stop);
        // NaN and infinities in other trials' histories rank worst, they do not panic: at step
        // 2, t1 (an Infinity) and t2 (a NaN) average -inf and t3 1, so the median is -inf.
        let mut rule = population(0.0, 1, Mode::Max);
        report(&mut rule, 2, 2, f64::NAN);
        report(&mut rule, 1, 2, f64::INFINITY);
        assert_eq!(rule.median_of_others(TrialId(4), 2.0), Some((f64::NEG_INFINITY, 3)));
        assert_eq!(report(&mut rule, 4, 2, 2.0), Decision::Continue);
        // Under min, a -Infinity is the worst result, not an unbeatable one: with t1 at -inf and
        // t2, t3 at 1 and 2, the others' median is the score -2 (the value 2), and a newcomer
        // whose only result is -Infinity is below it.
        let mut min_rule = self::rule(0.0, 1, Mode::Min);
        report(&mut min_rule, 1, 2, f64::NEG_INFINITY);
        report(&mut min_rule, 2, 2, 1.0);
        report(&mut min_rule, 3, 2, 2.0);
        assert_eq!(min_rule.median_of_others(TrialId(4), 2.0), Some((-2.0, 3)));
        assert_eq!(report(&mut min_rule, 4, 2, f64::NEG_INFINITY), Decision::Stop);
    }

    #[test]
    fn out_of_order_times_keep_the_prefix_sums_right() {
        let mut history = History::new();
        for (time, score) in [(1.0, 1.0), (3.0, 3.0), (2.0, 2.0), (2.0, 4.0)] {
            history.record(time, score);
        }
        assert_eq!(history.times, [1.0, 2.0, 2.0, 3.0]);
        assert_eq!(history.prefix, [0.0, 1.0, 3.0, 7.0, 10.0]);
        assert_eq!(history.running_average(2.5), Some(7.0 / 3.0));
        assert_eq!(history.running_average(0.5), None);
    }

    /// The rule written out without prefix sums or selection, for comparison.
    fn naive(histories: &[Vec<(f64, f64)>], trial: usize, time: f64, grace: f64, min_samples: usize) -> Decision {
        let mine = &histories[trial];
        let best = mine.iter().map(|&(_, s)| not_nan(s)).fold(f64::NEG_INFINITY, f64::max);
        if time < grace {
            return Decision::Continue;
        }
        let mut averages: Vec<f64> = histories
            .iter()
            .enumerate()
            .filter(|&(other, _)| other != trial)
            .filter_map(|(_, reports)| {
                let seen: Vec<f64> = reports
                    .iter()
                    .filter(|&&(t, _)| t <= time)
                    .map(|&(_, s)| not_nan(s))
                    .collect();
                (!seen.is_empty()).then(|| not_nan(seen.iter().sum::<f64>() / seen.len() as f64))
            })
            .collect();
        if averages.is_empty() || averages.len() < min_samples {
            return Decision::Continue;
        }
        averages.sort_by(f64::total_cmp);
        let n = averages.len();
        let median = if n % 2 == 1 {
            averages[n / 2]
        } else {
            averages[n / 2 - 1] / 2.0 + averages[n / 2] / 2.0
        };
        if best < median {
            Decision::Stop
        } else {
            Decision::Continue
        }
    }

    proptest! {
        #[test]
        fn decisions_match_the_naive_rule(
            reports in proptest::collection::vec(
                (0u64..5, 0u64..20, prop_oneof![8 => -100i32..100, 1 => Just(i32::MAX), 1 => Just(i32::MIN)]),
                1..80,
            ),
            grace in 0u64..6,
            min_samples in 0u32..4,
            maximise in any::<bool>(),
        ) {
            let mode = if maximise { Mode::Max } else { Mode::Min };
            let mut rule = rule(grace as f64, min_samples, mode);
            let mut histories: Vec<Vec<(f64, f64)>> = vec![Vec::new(); 5];
            for (trial, step, raw) in reports {
                // Sentinels stand for the values that must not break anything; integers keep the
                // sums exact whatever order they are added in.
                let value = match raw {
                    i32::MAX => f64::NAN,
                    i32::MIN => f64::INFINITY,
                    other => f64::from(other),
                };
                histories[trial as usize].push((step as f64, mode.score(value)));
                let expected = naive(&histories, trial as usize, step as f64, grace as f64, min_samples as usize);
                prop_assert_eq!(report(&mut rule, trial, step, value), expected);
            }
        }
    }
}
