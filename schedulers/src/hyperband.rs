//! Synchronous Hyperband: successive halving run in brackets that trade how many configurations
//! start against how far each is trained before the first cut.
//!
//! With `R = max_t` and `η = reduction_factor` there are `s_max + 1` brackets, where
//! `s_max = ⌊log_η R⌋`. Bracket `s` (from `s_max` down to 0) starts `n = ⌈(s_max+1)/(s+1)·η^s⌉`
//! trials at `r = R·η^−s`; its rung `i` (`0..=s`) holds `n_i = ⌊n·η^−i⌋` trials trained to
//! `r_i = r·η^i`, and the top `⌊n_i/η⌋` of a rung go on to the next one. [`bracket_table`] gives
//! the whole plan; for `R = 81, η = 3` it is the table of the paper (bracket `s = 4` runs 81
//! trials for 1, then 27 for 3, 9 for 9, 3 for 27 and 1 for 81).
//!
//! # How trials move
//!
//! - New trials fill brackets in order: `n` trials into bracket `s_max`, then `n` into bracket
//!   `s_max − 1`, and so on down to bracket 0, after which a new round starts at `s_max`.
//! - All trials of a bracket sit at the same rung (the algorithm is synchronous). A trial whose
//!   time (`result.time(time_attr)`) reaches its rung's `r_i` has its score recorded and is
//!   paused: it waits for the rest of its rung. Reports between milestones just continue.
//! - A rung is *full* when every trial still in it (not removed) has recorded there and the
//!   bracket has received all its `n` trials — or no more trials will come
//!   ([`Scheduler::on_no_more_trials`]). Then the top `⌊count/η⌋` by score win (at least one
//!   while the rung holds any trial, so that every bracket that started trials trains its best
//!   to `R`); ties go to the lower trial id. Winners are handed to
//!   [`Scheduler::choose_trial_to_resume`] one per call, in the order they won; losers are
//!   handed once to [`Scheduler::take_trials_to_stop`].
//! - At the last rung (`i = s`, `r_s = R`), or whenever its time reaches `max_t`, a trial is
//!   stopped as finished when `stop_last_trials` is set; without it, trials of the last rung
//!   run to their own end.
//! - A removed trial (completed, stopped or errored) leaves its bracket and its rung's counts,
//!   which may complete the rung.
//!
//! Milestones are compared with a relative slack of `1e-9`, so a time of 27 reaches a milestone
//! computed as 26.999999999999996.
//!
//! ## References
//!
//! Lisha Li, Kevin Jamieson, Giulia DeSalvo, Afshin Rostamizadeh and Ameet Talwalkar,
//! "Hyperband: A Novel Bandit-Based Approach to Hyperparameter Optimization", Journal of
//! Machine Learning Research 18(185), 2018.

use std::collections::{BTreeMap, BTreeSet};

use tune_core::scheduler::{Scheduler, TrialReport};
use tune_core::trial::{Decision, Mode, TrialId};
use tune_core::value::Config;

use crate::HyperbandConfig;

/// Relative slack for comparing computed floats (powers of η, milestones) with exact ones.
const SLACK: f64 = 1e-9;

/// The largest `s_max` computed: a guard for η barely above 1, which no practical setting
/// reaches (η = 1.1 with R = 10⁸ gives 193).
pub const MAX_S: u32 = 256;

/// One rung of a bracket: how many trials it holds and how far they train.
#[derive(Debug, Clone, PartialEq)]
pub struct RungPlan {
    /// `n_i`: trials at this rung when the bracket is full.
    pub trials: u64,
    /// `r_i`: the time (resource) trials train to at this rung.
    pub resource: f64,
}

/// One bracket of Hyperband: its `s`, how many trials it starts and its rungs.
#[derive(Debug, Clone, PartialEq)]
pub struct BracketPlan {
    /// `s`: the bracket's index; it has `s + 1` rungs.
    pub s: u32,
    /// `n`: trials the bracket starts.
    pub trials: u64,
    /// Rungs `0..=s`; the last one trains to `R`.
    pub rungs: Vec<RungPlan>,
}

fn ceil_with_slack(value: f64) -> u64 {
    (value - value.abs() * SLACK).ceil().max(0.0) as u64
}

fn floor_with_slack(value: f64) -> u64 {
    (value + value.abs() * SLACK).floor().max(0.0) as u64
}

/// `s_max = ⌊log_η R⌋`, computed by multiplying powers of η (exact for integer η) and compared
/// with a relative slack of `1e-9`, so `R = 81, η = 3` gives 4 and not 3. Returns 0 for
/// `R < η` or settings that cannot work (η ≤ 1, non-finite values), and at most [`MAX_S`].
pub fn s_max(max_t: f64, reduction_factor: f64) -> u32 {
    if !(max_t.is_finite() && reduction_factor.is_finite() && reduction_factor > 1.0) {
        return 0;
    }
    let mut s = 0;
    let mut next_power = reduction_factor;
    while s < MAX_S && next_power <= max_t * (1.0 + SLACK) {
        s += 1;
        next_power *= reduction_factor;
    }
    s
}

/// The plan of bracket `s` of a Hyperband with `R = max_t`, `η = reduction_factor` and the
/// given `s_max` (see the module documentation for the formulas). `s` must not exceed `s_max`.
pub fn bracket_plan(max_t: f64, reduction_factor: f64, s_max: u32, s: u32) -> BracketPlan {
    debug_assert!(s <= s_max, "bracket {s} beyond s_max {s_max}");
    let power = |k: u32| reduction_factor.powi(k as i32);
    let trials = ceil_with_slack(f64::from(s_max + 1) * power(s) / f64::from(s + 1));
    let rungs = (0..=s)
        .map(|i| RungPlan {
            trials: floor_with_slack(trials as f64 / power(i)),
            // R·η^(i−s) rather than r·η^i: the last rung trains to exactly R.
            resource: max_t / power(s - i),
        })
        .collect();
    BracketPlan { s, trials, rungs }
}

/// Every bracket of a Hyperband with `R = max_t` and `η = reduction_factor`, from `s_max` down
/// to 0.
///
/// ```
/// use tune_schedulers::hyperband::bracket_table;
///
/// let table = bracket_table(81.0, 3.0);
/// assert_eq!(table.len(), 5);
/// assert_eq!((table[1].s, table[1].trials, table[1].rungs[0].resource), (3, 34, 3.0));
/// ```
pub fn bracket_table(max_t: f64, reduction_factor: f64) -> Vec<BracketPlan> {
    let s_max = s_max(max_t, reduction_factor);
    (0..=s_max)
        .rev()
        .map(|s| bracket_plan(max_t, reduction_factor, s_max, s))
        .collect()
}

/// How many of `count` trials at a full rung go on to the next: `⌊count/η⌋`, but at least one
/// when `count ≥ 1`.
pub fn survivors(count: usize, reduction_factor: f64) -> usize {
    if count == 0 {
        return 0;
    }
    let kept = floor_with_slack(count as f64 / reduction_factor) as usize;
    kept.clamp(1, count)
}

/// Where a trial is, as Hyperband sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrialState {
    /// Training toward its rung's milestone.
    Training,
    /// Recorded at its rung; paused until the rung is full.
    Waiting,
    /// Won its rung; paused until it is resumed.
    Promoted,
    /// Lost, finished or removed.
    Done,
}

#[derive(Debug, Clone)]
struct TrialInfo {
    bracket: usize,
    state: TrialState,
}

#[derive(Debug, Clone)]
struct Bracket {
    plan: BracketPlan,
    /// Trials added to the bracket, removed ones included.
    received: u64,
    /// The rung its trials are at.
    rung: usize,
    /// The trials in the current rung that were not removed.
    members: BTreeSet<TrialId>,
    /// Scores recorded at the current rung (higher is better).
    scores: BTreeMap<TrialId, f64>,
}

/// Synchronous Hyperband. See the module documentation.
#[derive(Debug, Clone)]
pub struct Hyperband {
    time_attr: String,
    mode: Mode,
    max_t: f64,
    reduction_factor: f64,
    stop_last_trials: bool,
    s_max: u32,
    brackets: Vec<Bracket>,
    trials: BTreeMap<TrialId, TrialInfo>,
    /// Rung winners waiting to be resumed, in the order they won.
    promoted: Vec<TrialId>,
    /// Rung losers not yet handed to the controller.
    to_stop: Vec<TrialId>,
    no_more_trials: bool,
}

impl Hyperband {
    /// A Hyperband over the settings `c` for a metric optimised in `mode`.
    pub fn new(c: &HyperbandConfig, mode: Mode) -> Hyperband {
        Hyperband {
            time_attr: c.time_attr.clone(),
            mode,
            max_t: c.max_t,
            reduction_factor: c.reduction_factor,
            stop_last_trials: c.stop_last_trials,
            s_max: s_max(c.max_t, c.reduction_factor),
            brackets: Vec::new(),
            trials: BTreeMap::new(),
            promoted: Vec::new(),
            to_stop: Vec::new(),
            no_more_trials: false,
        }
    }

    /// The bracket (its `s`) and the rung a trial is at, if the trial was added and is still in
    /// a bracket.
    pub fn position(&self, trial: TrialId) -> Option<(u32, usize)> {
        let info = self.trials.get(&trial)?;
        if info.state == TrialState::Done {
            return None;
        }
        let bracket = &self.brackets[info.bracket];
        Some((bracket.plan.s, bracket.rung))
    }

    /// The trial leaves its bracket for good.
    fn leave(&mut self, trial: TrialId) {
        let Some(info) = self.trials.get_mut(&trial) else {
            return;
        };
        if info.state == TrialState::Done {
            return;
        }
        info.state = TrialState::Done;
        let index = info.bracket;
        let bracket = &mut self.brackets[index];
        bracket.members.remove(&trial);
        bracket.scores.remove(&trial);
        self.promoted.retain(|t| *t != trial);
        self.advance(index);
    }

    /// Closes the bracket's current rung if it is full (see the module documentation).
    fn advance(&mut self, index: usize) {
        let bracket = &mut self.brackets[index];
        let last_rung = bracket.plan.s as usize;
        if bracket.rung >= last_rung || bracket.members.is_empty() {
            return;
        }
        let enrolled = bracket.received >= bracket.plan.trials || self.no_more_trials;
        if !enrolled || bracket.members.iter().any(|m| !bracket.scores.contains_key(m)) {
            return;
        }
        let mut ranked: Vec<(TrialId, f64)> = bracket.members.iter().map(|&m| (m, bracket.scores[&m])).collect();
        // Best first; ties to the lower trial id.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let kept = survivors(ranked.len(), self.reduction_factor);
        bracket.rung += 1;
        bracket.scores.clear();
        bracket.members = ranked[..kept].iter().map(|&(trial, _)| trial).collect();
        for (position, &(trial, _)) in ranked.iter().enumerate() {
            let info = self.trials.get_mut(&trial).expect("bracket members are known trials");
            if position < kept {
                info.state = TrialState::Promoted;
                self.promoted.push(trial);
            } else {
                info.state = TrialState::Done;
                self.to_stop.push(trial);
            }
        }
        // No loop: the winners have not trained to the next rung yet, so it cannot be full.
    }
}

impl Scheduler for Hyperband {
    fn on_result(&mut self, trial: TrialId, result: &TrialReport<'_>) -> Decision {
        let Some(info) = self.trials.get(&trial) else {
            return Decision::Continue;
        };
        match info.state {
            TrialState::Training => {}
            // A paused trial does not report; if it does, it keeps waiting.
            TrialState::Waiting | TrialState::Promoted => return Decision::Pause,
            TrialState::Done => return Decision::Stop,
        }
        let Some(time) = result.time(&self.time_attr).filter(|t| !t.is_nan()) else {
            return Decision::Continue;
        };
        let index = info.bracket;
        if self.stop_last_trials && time >= self.max_t * (1.0 - SLACK) {
            self.leave(trial);
            return Decision::Stop;
        }
        let bracket = &mut self.brackets[index];
        if bracket.rung >= bracket.plan.s as usize {
            // The last rung: with stop_last_trials the trial stopped above on reaching R.
            return Decision::Continue;
        }
        let milestone = bracket.plan.rungs[bracket.rung].resource;
        if time < milestone * (1.0 - SLACK) {
            return Decision::Continue;
        }
        // `+ 0.0` turns -0.0 into 0.0, so equal values tie.
        bracket.scores.insert(trial, self.mode.score(result.value) + 0.0);
        self.trials.get_mut(&trial).expect("known trial").state = TrialState::Waiting;
        self.advance(index);
        Decision::Pause
    }

    fn on_trial_add(&mut self, trial: TrialId, _config: &Config) {
        if self.trials.contains_key(&trial) {
            return;
        }
        let open = self
            .brackets
            .last()
            .is_some_and(|bracket| bracket.rung == 0 && bracket.received < bracket.plan.trials);
        if !open {
            let round_position = self.brackets.len() as u64 % (u64::from(self.s_max) + 1);
            let s = self.s_max - round_position as u32;
            self.brackets.push(Bracket {
                plan: bracket_plan(self.max_t, self.reduction_factor, self.s_max, s),
                received: 0,
                rung: 0,
                members: BTreeSet::new(),
                scores: BTreeMap::new(),
            });
        }
        let index = self.brackets.len() - 1;
        let bracket = &mut self.brackets[index];
        bracket.received += 1;
        bracket.members.insert(trial);
        self.trials.insert(
            trial,
            TrialInfo {
                bracket: index,
                state: TrialState::Training,
            },
        );
    }

    fn on_trial_remove(&mut self, trial: TrialId) {
        self.leave(trial);
    }

    fn choose_trial_to_resume(&mut self, resumable: &BTreeSet<TrialId>) -> Option<TrialId> {
        let position = self.promoted.iter().position(|trial| resumable.contains(trial))?;
        let trial = self.promoted.remove(position);
        self.trials.get_mut(&trial).expect("promoted trials are known").state = TrialState::Training;
        Some(trial)
    }

    fn take_trials_to_stop(&mut self) -> Vec<TrialId> {
        std::mem::take(&mut self.to_stop)
    }

    fn on_no_more_trials(&mut self) {
        self.no_more_trials = true;
        for index in 0..self.brackets.len() {
            self.advance(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Checkpoints, decide, metric};
    use proptest::prelude::*;
    use tune_core::trial::Report;

    fn config(max_t: f64, reduction_factor: f64) -> HyperbandConfig {
        HyperbandConfig {
            time_attr: "step".into(),
            max_t,
            reduction_factor,
            stop_last_trials: true,
        }
    }

    fn report(hyperband: &mut Hyperband, trial: u64, step: u64, value: f64) -> Decision {
        decide(
            hyperband,
            trial,
            step,
            metric("loss", value),
            value,
            Checkpoints::EVERY_REPORT,
        )
    }

    fn add(hyperband: &mut Hyperband, trials: impl IntoIterator<Item = u64>) {
        for trial in trials {
            hyperband.on_trial_add(TrialId(trial), &Config::default());
        }
    }

    fn ids(trials: impl IntoIterator<Item = u64>) -> BTreeSet<TrialId> {
        trials.into_iter().map(TrialId).collect()
    }

    /// Resumes winners one per call until none is left.
    fn resume_all(hyperband: &mut Hyperband, resumable: &BTreeSet<TrialId>) -> Vec<u64> {
        let mut resumable = resumable.clone();
        let mut resumed = Vec::new();
        while let Some(trial) = hyperband.choose_trial_to_resume(&resumable) {
            assert!(resumable.remove(&trial), "{trial} resumed twice or not resumable");
            resumed.push(trial.0);
        }
        resumed
    }

    /// A Hyperband (R = 9, η = 3) with trials 1..=`added`, of which 1..=`paused` have reported
    /// their own number at step 1 and paused there, with no rung decided yet.
    fn paused_at_rung_0(mode: Mode, added: u64, paused: u64) -> Hyperband {
        let mut hyperband = Hyperband::new(&config(9.0, 3.0), mode);
        add(&mut hyperband, 1..=added);
        for trial in 1..=paused {
            assert_eq!(report(&mut hyperband, trial, 1, trial as f64), Decision::Pause);
        }
        assert!(hyperband.take_trials_to_stop().is_empty());
        hyperband
    }

    /// Reports the only trial left at rung 1 (step 3): it pauses, stops no one, and is resumed
    /// as the rung's one winner.
    fn lone_trial_at_rung_1_goes_on(hyperband: &mut Hyperband, trial: u64) {
        assert_eq!(report(hyperband, trial, 3, 1.0), Decision::Pause);
        assert!(hyperband.take_trials_to_stop().is_empty());
        assert_eq!(resume_all(hyperband, &ids([trial])), [trial]);
    }

    fn sorted(mut trials: Vec<TrialId>) -> Vec<u64> {
        trials.sort();
        trials.into_iter().map(|t| t.0).collect()
    }

    #[test]
    fn bracket_table_for_81_and_3_is_the_papers() {
        let table: Vec<(u32, Vec<(u64, f64)>)> = bracket_table(81.0, 3.0)
            .into_iter()
            .map(|b| (b.s, b.rungs.iter().map(|r| (r.trials, r.resource)).collect()))
            .collect();
        let expected: Vec<(u32, Vec<(u64, f64)>)> = vec![
            (4, vec![(81, 1.0), (27, 3.0), (9, 9.0), (3, 27.0), (1, 81.0)]),
            (3, vec![(34, 3.0), (11, 9.0), (3, 27.0), (1, 81.0)]),
            (2, vec![(15, 9.0), (5, 27.0), (1, 81.0)]),
            (1, vec![(8, 27.0), (2, 81.0)]),
            (0, vec![(5, 81.0)]),
        ];
        assert_eq!(table, expected);
        let starts: Vec<u64> = bracket_table(81.0, 3.0).iter().map(|b| b.trials).collect();
        assert_eq!(starts, [81, 34, 15, 8, 5]);
    }

    #[test]
    fn s_max_is_robust_to_float_error() {
        assert_eq!(s_max(81.0, 3.0), 4);
        assert_eq!(s_max(80.999, 3.0), 3);
        assert_eq!(s_max(1000.0, 10.0), 3);
        assert_eq!(s_max(0.5, 3.0), 0);
        assert_eq!(s_max(2.0, 3.0), 0);
        assert_eq!(s_max(100.0, 1.0), 0);
        assert_eq!(s_max(1e300, 1.0 + 1e-12), MAX_S);
        assert_eq!(survivors(0, 3.0), 0);
        assert_eq!(survivors(2, 3.0), 1);
        assert_eq!(survivors(9, 3.0), 3);
        assert_eq!(survivors(8, 3.0), 2);
    }

    #[test]
    fn a_full_rung_resumes_exactly_the_top_third_and_stops_the_rest() {
        // R = 9, η = 3: bracket s = 2 runs 9 trials to 1, then 3 to 3, then 1 to 9.
        let mut hyperband = Hyperband::new(&config(9.0, 3.0), Mode::Min);
        add(&mut hyperband, 1..=9);
        assert_eq!(hyperband.position(TrialId(1)), Some((2, 0)));
        let losses = [0.9, 0.1, f64::NAN, 0.5, 0.3, 0.7, 0.2, 0.8, 0.6];
        for (trial, loss) in (1..=9).zip(losses) {
            if trial == 4 {
                // A report below the milestone just continues.
                assert_eq!(report(&mut hyperband, trial, 0, loss), Decision::Continue);
            }
            assert_eq!(report(&mut hyperband, trial, 1, loss), Decision::Pause);
            if trial < 9 {
                assert!(hyperband.take_trials_to_stop().is_empty());
                assert_eq!(hyperband.choose_trial_to_resume(&ids(1..=9)), None);
            }
        }
        // The best three by loss are t2 (0.1), t7 (0.2) and t5 (0.3); NaN ranks worst.
        assert_eq!(sorted(hyperband.take_trials_to_stop()), [1, 3, 4, 6, 8, 9]);
        assert!(
            hyperband.take_trials_to_stop().is_empty(),
            "losers are handed over once"
        );
        // A winner whose process has not exited yet is not resumed.
        assert_eq!(hyperband.choose_trial_to_resume(&ids([1, 3])), None);
        assert_eq!(resume_all(&mut hyperband, &ids(1..=9)), [2, 7, 5]);
        assert_eq!(hyperband.position(TrialId(2)), Some((2, 1)));

        // Rung 1 trains to 3; a report at step 2 continues.
        assert_eq!(report(&mut hyperband, 2, 2, 0.05), Decision::Continue);
        assert_eq!(report(&mut hyperband, 2, 3, 0.05), Decision::Pause);
        assert_eq!(report(&mut hyperband, 7, 3, 0.01), Decision::Pause);
        assert_eq!(report(&mut hyperband, 5, 3, 0.3), Decision::Pause);
        assert_eq!(sorted(hyperband.take_trials_to_stop()), [2, 5]);
        assert_eq!(resume_all(&mut hyperband, &ids([2, 5, 7])), [7]);

        // The last rung trains to R = 9, where the trial is finished.
        assert_eq!(report(&mut hyperband, 7, 8, 0.01), Decision::Continue);
        assert_eq!(report(&mut hyperband, 7, 9, 0.01), Decision::Stop);
        assert_eq!(hyperband.position(TrialId(7)), None);
    }

    #[test]
    fn brackets_fill_in_order_and_start_over() {
        // R = 9, η = 3: brackets s = 2 (9 trials at 1), s = 1 (5 at 3), s = 0 (3 at 9).
        let mut hyperband = Hyperband::new(&config(9.0, 3.0), Mode::Max);
        add(&mut hyperband, 1..=18);
        let brackets: Vec<u32> = (1..=18).map(|t| hyperband.position(TrialId(t)).unwrap().0).collect();
        assert_eq!(brackets, [2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 0, 0, 0, 2]);
        // Bracket s = 1 pauses at 3, not at 1; bracket s = 0 runs straight to R.
        assert_eq!(report(&mut hyperband, 10, 1, 0.5), Decision::Continue);
        assert_eq!(report(&mut hyperband, 10, 3, 0.5), Decision::Pause);
        assert_eq!(report(&mut hyperband, 15, 3, 0.5), Decision::Continue);
        assert_eq!(report(&mut hyperband, 15, 9, 0.5), Decision::Stop);
    }

    #[test]
    fn removing_a_trial_lets_its_rung_complete() {
        let mut hyperband = paused_at_rung_0(Mode::Max, 9, 8);
        hyperband.on_trial_remove(TrialId(9));
        // Eight left: the top ⌊8/3⌋ = 2 (highest values) go on.
        assert_eq!(sorted(hyperband.take_trials_to_stop()), [1, 2, 3, 4, 5, 6]);
        assert_eq!(resume_all(&mut hyperband, &ids(1..=9)), [8, 7]);
        // A removed winner leaves the next rung, which completes without it.
        hyperband.on_trial_remove(TrialId(8));
        lone_trial_at_rung_1_goes_on(&mut hyperband, 7);
    }

    #[test]
    fn no_more_trials_closes_an_under_filled_bracket() {
        let mut hyperband = paused_at_rung_0(Mode::Min, 5, 5);
        assert_eq!(hyperband.choose_trial_to_resume(&ids(1..=5)), None);
        hyperband.on_no_more_trials();
        // ⌊5/3⌋ = 1 goes on: the lowest loss.
        assert_eq!(sorted(hyperband.take_trials_to_stop()), [2, 3, 4, 5]);
        assert_eq!(resume_all(&mut hyperband, &ids(1..=5)), [1]);
        // With one trial left at rung 1, ⌊1/3⌋ = 0 but one still goes on.
        lone_trial_at_rung_1_goes_on(&mut hyperband, 1);
    }

    #[test]
    fn max_t_stops_and_stop_last_trials_off_continues() {
        let mut hyperband = Hyperband::new(&config(9.0, 3.0), Mode::Min);
        add(&mut hyperband, 1..=2);
        // A report far past every milestone: the trial has trained to R.
        assert_eq!(report(&mut hyperband, 1, 20, 0.1), Decision::Stop);
        let mut lenient = Hyperband::new(
            &HyperbandConfig {
                stop_last_trials: false,
                ..config(9.0, 3.0)
            },
            Mode::Min,
        );
        // R = 9, η = 9: bracket s = 1 starts 9 trials at 1, bracket s = 0 two at 9.
        let mut lenient_last = Hyperband::new(
            &HyperbandConfig {
                reduction_factor: 9.0,
                stop_last_trials: false,
                ..config(9.0, 3.0)
            },
            Mode::Min,
        );
        add(&mut lenient_last, 1..=10);
        assert_eq!(lenient_last.position(TrialId(10)), Some((0, 0)));
        assert_eq!(report(&mut lenient_last, 10, 9, 0.1), Decision::Continue);
        assert_eq!(report(&mut lenient_last, 10, 30, 0.1), Decision::Continue);
        add(&mut lenient, [1]);
        assert_eq!(report(&mut lenient, 1, 20, 0.1), Decision::Pause, "rung 0 still pauses");
    }

    #[test]
    fn unknown_trials_and_missing_time_continue() {
        let mut hyperband = Hyperband::new(
            &HyperbandConfig {
                time_attr: "epoch".into(),
                ..config(9.0, 3.0)
            },
            Mode::Min,
        );
        assert_eq!(report(&mut hyperband, 42, 5, 0.1), Decision::Continue);
        add(&mut hyperband, [1]);
        assert_eq!(report(&mut hyperband, 1, 5, 0.1), Decision::Continue);
    }

    /// Runs a whole sweep through the controller, one trial process at a time: each launched
    /// trial reports every step (with a checkpoint) from where it restored until it is told to
    /// pause or stop, then exits. Returns how far each trial trained.
    fn sweep(max_trials: u64, loss: impl Fn(u64) -> f64) -> BTreeMap<u64, u64> {
        use std::collections::VecDeque;
        use std::time::Duration;
        use tune_core::controller::{Command, Controller, ControllerConfig, Event, Launch, Outcome};
        use tune_core::searcher::{Searcher, Suggestion};

        struct Empty;
        impl Searcher for Empty {
            fn suggest(&mut self, _trial: TrialId) -> tune_core::Result<Suggestion> {
                Ok(Suggestion::Config(Config::default()))
            }
        }
        let settings = ControllerConfig {
            metric: "loss".into(),
            mode: Mode::Min,
            max_trials: Some(max_trials),
            max_concurrent: 3,
            time_budget: None,
            target: None,
            max_failures: 0,
            max_lost: 3,
            max_failed_trials: None,
            checkpoint_keep: None,
        };
        let scheduler = Hyperband::new(&config(9.0, 3.0), Mode::Min);
        let mut controller = Controller::new(settings, Box::new(Empty), Box::new(scheduler));
        let mut launched: VecDeque<Launch> = VecDeque::new();
        let mut trained = BTreeMap::new();
        let take_launches = |commands: Vec<Command>, launched: &mut VecDeque<Launch>| {
            launched.extend(commands.into_iter().filter_map(|c| match c {
                Command::Launch(launch) => Some(launch),
                _ => None,
            }))
        };
        take_launches(controller.handle(&Event::Start, Duration::ZERO), &mut launched);
        while let Some(launch) = launched.pop_front() {
            let trial = launch.trial;
            let mut step = launch.restore.map_or(0, |r| r.step);
            loop {
                step += 1;
                let event = Event::Reported {
                    trial,
                    report: Report {
                        step,
                        metrics: [("loss".to_owned(), loss(trial.0))].into(),
                    },
                    checkpoint: Some(format!("/ck/{trial}/{step}")),
                };
                let commands = controller.handle(&event, Duration::ZERO);
                let decision = commands.iter().find_map(|c| match c {
                    Command::Respond { decision, .. } => Some(*decision),
                    _ => None,
                });
                take_launches(commands, &mut launched);
                trained.insert(trial.0, step);
                if decision != Some(Decision::Continue) || step >= 100 {
                    break;
                }
            }
            let exit = Event::Exited {
                trial,
                outcome: Outcome::Success,
            };
            take_launches(controller.handle(&exit, Duration::ZERO), &mut launched);
        }
        assert!(controller.is_finished(), "the sweep ends");
        trained
    }

    #[test]
    fn a_whole_round_through_the_controller() {
        // R = 9, η = 3: 9 trials at 1 → 3 at 3 → 1 at 9; 5 at 3 → 1 at 9; 3 at 9. Lower ids
        // have lower losses, so the best of each bracket goes on.
        let trained = sweep(17, |trial| trial as f64);
        let to = |step: u64| {
            trained
                .iter()
                .filter(|&(_, &s)| s == step)
                .map(|(&t, _)| t)
                .collect::<Vec<_>>()
        };
        assert_eq!(to(9), [1, 10, 15, 16, 17]);
        assert_eq!(to(3), [2, 3, 11, 12, 13, 14]);
        assert_eq!(to(1), [4, 5, 6, 7, 8, 9]);
        // A sweep that ends inside a bracket still finishes it with what it has: 5 trials at 1,
        // the best one on to 3 and 9.
        let trained = sweep(5, |trial| -(trial as f64));
        assert_eq!(trained, BTreeMap::from([(1, 1), (2, 1), (3, 1), (4, 1), (5, 9)]));
    }

    proptest! {
        #[test]
        fn bracket_plans_hold_their_invariants(
            max_t in prop_oneof![1.0f64..1e6, (0u32..12).prop_map(|k| 3f64.powi(k as i32))],
            reduction_factor in prop_oneof![1.5f64..10.0, (2u32..6).prop_map(f64::from)],
        ) {
            let table = bracket_table(max_t, reduction_factor);
            let s_max = s_max(max_t, reduction_factor);
            prop_assert_eq!(table.len() as u32, s_max + 1);
            prop_assert!(reduction_factor.powi(s_max as i32) <= max_t * (1.0 + 1e-9));
            prop_assert!(reduction_factor.powi(s_max as i32 + 1) > max_t * (1.0 - 1e-9));
            for plan in &table {
                prop_assert_eq!(plan.rungs.len() as u32, plan.s + 1);
                prop_assert_eq!(plan.rungs[0].trials, plan.trials);
                prop_assert!(plan.trials as f64 >= reduction_factor.powi(plan.s as i32) * (1.0 - 1e-9));
                prop_assert_eq!(plan.rungs.last().unwrap().resource, max_t);
                for pair in plan.rungs.windows(2) {
                    prop_assert!(pair[1].trials >= 1);
                    prop_assert!(pair[1].trials <= pair[0].trials);
                    // ⌊n_i/η⌋ ≤ n_(i+1), with equality for integer η.
                    let kept = survivors(pair[0].trials as usize, reduction_factor) as u64;
                    prop_assert!(kept <= pair[1].trials);
                    if reduction_factor.fract() == 0.0 {
                        prop_assert_eq!(kept, pair[1].trials);
                    }
                    prop_assert!((pair[1].resource / pair[0].resource - reduction_factor).abs() < 1e-9 * reduction_factor);
                }
            }
        }

        #[test]
        fn every_trial_of_a_rung_is_resumed_or_stopped_once(
            values in proptest::collection::vec(prop_oneof![Just(f64::NAN), Just(f64::INFINITY), -1e3f64..1e3], 1..40),
            removed in proptest::collection::vec(any::<bool>(), 40),
        ) {
            // R = 27, η = 3: bracket s = 3 starts 27 trials at 1.
            let mut hyperband = Hyperband::new(&config(27.0, 3.0), Mode::Max);
            let count = values.len().min(27) as u64;
            add(&mut hyperband, 1..=count);
            let mut kept = Vec::new();
            for (trial, &value) in (1..=count).zip(&values) {
                if removed[trial as usize] {
                    hyperband.on_trial_remove(TrialId(trial));
                } else {
                    prop_assert_eq!(report(&mut hyperband, trial, 1, value), Decision::Pause);
                    kept.push((trial, value));
                }
            }
            hyperband.on_no_more_trials();
            let stopped = sorted(hyperband.take_trials_to_stop());
            let resumed = resume_all(&mut hyperband, &ids(1..=count));
            prop_assert_eq!(resumed.len(), survivors(kept.len(), 3.0));
            let mut all: Vec<u64> = stopped.iter().chain(&resumed).copied().collect();
            all.sort_unstable();
            let mut expected: Vec<u64> = kept.iter().map(|&(t, _)| t).collect();
            expected.sort_unstable();
            prop_assert_eq!(all, expected);
            // No loser scores better than a winner.
            let score = |t: u64| Mode::Max.score(kept.iter().find(|k| k.0 == t).unwrap().1);
            for &winner in &resumed {
                for &loser in &stopped {
                    prop_assert!(score(winner) >= score(loser));
                }
            }
        }
    }
}
