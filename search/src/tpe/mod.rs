//! Tree-structured Parzen Estimator (TPE): model-based search that splits the results so far into
//! the best few ("good", density `l`) and the rest ("bad", density `g`), fits a Parzen estimator
//! (a kernel mixture) to each, draws candidates from `l` and proposes the one with the largest
//! `log l(x) − log g(x)` — a monotone transform of expected improvement under the TPE model.
//!
//! How the pieces are built (the defaults follow Optuna's `TPESampler`, which Watanabe (2023)
//! analyses component by component):
//!
//! - **Start-up.** The first `n_startup_trials` suggestions are random draws from the space.
//! - **No repeats.** A configuration suggested before (or told of) is never proposed again: when
//!   the model's choice was seen, whole configurations are drawn from the good densities and the
//!   best unseen one by the summed log ratio is taken, else a fresh random one; a finite space
//!   ends with [`Suggestion::Exhausted`] once every configuration was proposed
//!   ([`crate::distinct`]).
//! - **Split.** Results are ranked by [`Mode::score`] (higher is better; a failed trial, a missing
//!   metric, NaN or an infinity ranks as the worst). The best γ(n) = min(⌈0.15·n⌉, 25) — or
//!   ⌈gamma·n⌉ (at least one) when `gamma` is set — of the `n` finished trials are good, the rest
//!   bad; only finite results are ever good, and non-finite numbers never reach a kernel. With
//!   `constant_liar`, trials suggested but not finished count as bad results too, so parallel
//!   workers are pushed apart. The value of a finished trial is its last report's metric, or, if
//!   that report lacks it, the latest intermediate result seen for it (so a trial stopped early
//!   by a scheduler counts with the value it reached).
//! - **Univariate estimators** (`multivariate = false`): one density per parameter. Numeric parameters are
//!   modelled on their natural axis (the log axis for log domains) as a mixture of Gaussians,
//!   each truncated to the range, one per observation plus a prior component (centre of the
//!   range, sigma = range width, weight `prior_weight` against 1 per observation). Each kernel's
//!   bandwidth is the larger of the gaps to its neighbours in sorted order (the prior's centre
//!   counts as a neighbour; the first and last kernels use their single gap), clipped to
//!   `[range / min(100, k + 1), range]` for `k` kernels including the prior — hyperopt's and
//!   Optuna's "magic clip". Integer and quantized parameters are drawn and scored as discrete
//!   values: a value's probability is the mixture's mass on its bin of width `q` (the bins tile
//!   the truncation range). A `choice` is a mixture of one kernel per observation, `1 + ε` on
//!   its own option and `ε` on each, with `ε = prior_weight / (n + 1)`, plus a uniform prior
//!   (see [`parzen::Categorical`] for why plain smoothed counts were too peaked). The log ratio of a configuration is the sum over its
//!   parameters, so its maximum over the candidates is reached parameter by parameter, as in
//!   hyperopt and Optuna: each parameter takes the best (by its own ratio) of `n_ei_candidates`
//!   draws from its `l`.
//! - **Multivariate estimators** (the default, as in Optuna since its version 5): one joint
//!   kernel per observation over the parameters that share a condition (all of them in a space
//!   without conditional parameters), so a candidate is drawn whole from one good observation's
//!   kernel and the best of `n_ei_candidates` by the joint ratio is kept. Each numeric
//!   dimension's bandwidths follow the neighbour rule above on that dimension's values (the
//!   bounds are the outer neighbours, the prior is not a neighbour), clipped the same way — the
//!   bandwidth Optuna 5 adopted after Watanabe (2023); Scott's rule, one width for every kernel,
//!   measured far worse on Hartmann6 (median regret 0.30 against 0.14 after 100 evaluations).
//!   Kernels are weighted by age as Optuna's `default_weights`: of more than 25 observations the
//!   older ones ramp from 1/n to 1. A categorical dimension puts `1 + ε` on the observation's own
//!   option and `ε = prior_weight / (n + 1)` on each option, normalised.
//! - **The tree.** A `choice` whose options are tables of further parameters makes conditional
//!   parameters. The choice is drawn first, then the chosen option's parameters from estimators
//!   built only on the observations that took that option: a parameter is modelled only from
//!   the observations where it is present.
//!
//! ## Speed
//!
//! Observations are kept ranked by score and, per numeric parameter, sorted by value; both are
//! updated incrementally when a trial is suggested or finishes, so a suggestion never sorts
//! them. Building a univariate estimator is one linear pass over the parameter's sorted column,
//! and evaluating it at a candidate looks only at the kernels within eight bandwidths (found by
//! binary search; the prior's is always included). Three approximations bound the work, all
//! documented where they are made:
//!
//! - a group of more than 1,024 observations of one parameter is represented by a systematic
//!   sample of about 1,024 of them (every k-th of the sorted column, each standing for k);
//! - an estimator with more than 128 kernels merges runs of neighbouring kernels (spanning at
//!   most one bandwidth, bandwidths within a factor of two) into one Gaussian with the same
//!   weight, mean and variance, which changes the density by well under a percent;
//! - a multivariate estimator uses at most 256 observations, evenly spaced by rank (running
//!   trials are all kept).
//!
//! Measured in release on [`ten_parameter_space`] (4 uniform, 2 log-uniform, 2 integer,
//! 2 categorical; the space `benches/searchers.rs` uses) on a shared 2-core virtual machine, the
//! median suggestion took 0.25–0.4 ms with 1,000 finished trials and the same with 10,000,
//! univariate or multivariate, with Optuna's 24 candidates (the ignored test
//! `suggestion_timing`). With the present defaults (48 candidates, multivariate) it takes
//! 1.9 ms with 1,000 and 2.1 ms with 10,000 (univariate 0.5–0.6 ms), measured while two
//! benchmarks shared the machine's two cores. The joint bad density, up to 257 kernels over
//! every dimension for each candidate, is most of it. After the caps above, the work per
//! suggestion no longer grows with the number of trials, apart from linear scans of the
//! ranking.
//!
//! ## References
//!
//! - J. Bergstra, R. Bardenet, Y. Bengio, B. Kégl, "Algorithms for Hyper-Parameter
//!   Optimization", NeurIPS 2011.
//! - S. Watanabe, "Tree-Structured Parzen Estimator: Understanding Its Algorithm Components and
//!   Their Roles for Better Empirical Performance", arXiv:2304.11127, 2023.
//! - T. Akiba, S. Sano, T. Yanase, T. Ohta, M. Koyama, "Optuna: A Next-generation
//!   Hyperparameter Optimization Framework", KDD 2019 (the `TPESampler` whose conventions are
//!   followed here).
//!
//! The pieces live in submodules: the compiled space in `space`, the observation store in
//! `observations`, the estimators in `parzen`; this module splits the results, draws the
//! candidates and keeps the best.

mod observations;
mod parzen;
mod space;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use tune_core::Result;
use tune_core::rng::{self, ChaCha20Rng};
use tune_core::searcher::{Searcher, Suggestion, TrialResult};
use tune_core::space::{Domain, Space};
use tune_core::trial::{Mode, Report, TrialId};
use tune_core::value::Config;

use self::observations::{BAD, GOOD, Observations, SKIP, gather};
use self::parzen::{Categorical, Estimator, Joint, Mixture};
use self::space::{ModelSpace, NodeKind, Template};
use crate::TpeConfig;
use crate::distinct::Distinct;

/// Multivariate estimators use at most this many observations.
const MAX_JOINT_OBSERVATIONS: usize = 256;
/// When the model's suggestion was seen already, whole configurations are drawn from the good
/// densities: this many times `n_ei_candidates` of them.
const FRESH_ROUNDS: usize = 4;

/// The Tree-structured Parzen Estimator searcher (see the [module documentation](self)).
pub struct Tpe {
    space: Space,
    metric: String,
    mode: Mode,
    settings: Settings,
    rng: ChaCha20Rng,
    /// The space as the model sees it.
    model_space: ModelSpace,
    observations: Observations,
    /// The latest intermediate value of the metric per unfinished trial.
    latest: BTreeMap<u64, f64>,
    /// The configurations suggested and not finished yet.
    pending: BTreeMap<u64, Config>,
    /// Every configuration suggested or told of, so that none is proposed twice.
    distinct: Distinct,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    n_startup_trials: u64,
    n_ei_candidates: usize,
    gamma: Option<f64>,
    multivariate: bool,
    constant_liar: bool,
    prior_weight: f64,
}

impl Tpe {
    /// A TPE searcher over `space` optimising `metric` in `mode`, its randomness drawn from the
    /// experiment `seed`. The settings are assumed validated ([`crate::SearcherConfig::validate`]);
    /// out-of-range values are clamped to the nearest valid one.
    pub fn new(c: &TpeConfig, space: &Space, metric: &str, mode: Mode, seed: u64) -> Tpe {
        let settings = Settings {
            n_startup_trials: c.n_startup_trials.max(0) as u64,
            n_ei_candidates: c.n_ei_candidates.max(1) as usize,
            gamma: c.gamma.filter(|gamma| *gamma > 0.0 && *gamma <= 1.0),
            multivariate: c.multivariate,
            constant_liar: c.constant_liar,
            prior_weight: if c.prior_weight.is_finite() && c.prior_weight > 0.0 {
                c.prior_weight
            } else {
                1.0
            },
        };
        let model_space = ModelSpace::new(space, settings.multivariate);
        Tpe {
            space: space.clone(),
            metric: metric.to_owned(),
            mode,
            settings,
            rng: rng::stream(seed, "tpe"),
            observations: Observations::new(model_space.options()),
            model_space,
            latest: BTreeMap::new(),
            pending: BTreeMap::new(),
            distinct: Distinct::new(space),
        }
    }

    /// The split: per slot whether it is good, bad or left out, and the number of good ones.
    fn classify(&self) -> (Vec<u8>, usize) {
        let observations = &self.observations;
        let n_good = n_good(self.settings.gamma, observations.ranked.len()).min(observations.finite);
        let running = if self.settings.constant_liar { BAD } else { SKIP };
        let mut class: Vec<u8> = observations
            .completed
            .iter()
            .map(|&completed| if completed { BAD } else { running })
            .collect();
        for &slot in &observations.ranked[..n_good] {
            class[slot as usize] = GOOD;
        }
        (class, n_good)
    }

    /// A configuration from the model, with its encoding.
    fn suggest_from_model(&mut self) -> (Config, Vec<f64>) {
        let (class, n_good) = self.classify();
        let mut context = Context::new(&self.model_space, &self.observations, &class, n_good, self.settings);
        let mut draw = Draw::new(&self.model_space);
        draw_table(&self.model_space.root, &mut context, &mut self.rng, &mut draw);
        let config = self.model_space.build(&draw.values);
        (config, draw.values)
    }

    /// The best configuration not seen yet among whole draws from the good densities, scored by
    /// the sum of their log ratios.
    ///
    /// The model's own suggestion maximises each parameter's ratio separately, so once it was
    /// run, drawing it again tends to give it again. Whole draws give the next-best
    /// configurations instead: nearby ones (from the same good kernels) that the ratio still
    /// rates highly.
    fn fresh_from_model(&mut self) -> Option<(Config, Vec<f64>)> {
        let (class, n_good) = self.classify();
        let mut context = Context::new(&self.model_space, &self.observations, &class, n_good, self.settings);
        context.whole = true;
        let mut best: Option<(f64, Config, Vec<f64>)> = None;
        for _ in 0..FRESH_ROUNDS * self.settings.n_ei_candidates {
            let mut draw = Draw::new(&self.model_space);
            context.score = 0.0;
            draw_table(&self.model_space.root, &mut context, &mut self.rng, &mut draw);
            if best.as_ref().is_some_and(|(score, _, _)| context.score <= *score) {
                continue;
            }
            let config = self.model_space.build(&draw.values);
            if !self.distinct.contains(&config) {
                best = Some((context.score, config, draw.values));
            }
        }
        best.map(|(_, config, values)| (config, values))
    }

    /// A configuration not seen yet, with its encoding: `proposal` if it is new, else the best
    /// fresh one from the model (after the start-up trials), else a fresh random one; `None`
    /// when the space has none left.
    fn distinct(&mut self, proposal: (Config, Vec<f64>), modelled: bool) -> Option<(Config, Vec<f64>)> {
        if !self.distinct.contains(&proposal.0) {
            return Some(proposal);
        }
        if modelled && let Some(fresh) = self.fresh_from_model() {
            return Some(fresh);
        }
        let config = self.distinct.fresh(&self.space, &mut self.rng)?;
        let row = self.model_space.encode(&config);
        Some((config, row))
    }
}

impl Searcher for Tpe {
    fn suggest(&mut self, trial: TrialId) -> Result<Suggestion> {
        // Trials told of without being suggested here (a warm start, points to evaluate) count
        // towards the start-up trials: the model has their results to work from.
        // (In a plain sweep this is the number of suggestions so far.)
        let modelled = self.observations.trials.len() as u64 >= self.settings.n_startup_trials;
        let proposal = if modelled {
            self.suggest_from_model()
        } else {
            let config = self.space.sample(&mut self.rng, &BTreeMap::new());
            let row = self.model_space.encode(&config);
            (config, row)
        };
        let Some((config, row)) = self.distinct(proposal, modelled) else {
            return Ok(Suggestion::Exhausted);
        };
        self.distinct.insert(&config);
        let slot = self.observations.slot(trial.0);
        if !self.observations.completed[slot] {
            self.observations.set_row(slot, &row);
            self.pending.insert(trial.0, config.clone());
        }
        Ok(Suggestion::Config(config))
    }

    fn on_trial_result(&mut self, trial: TrialId, report: &Report) {
        if let Some(&value) = report.metrics.get(&self.metric) {
            self.latest.insert(trial.0, value);
        }
    }

    fn on_trial_complete(&mut self, trial: TrialId, result: &TrialResult<'_>) {
        let latest = self.latest.remove(&trial.0);
        let value = if result.failed {
            None
        } else {
            result
                .last
                .and_then(|report| report.metrics.get(&self.metric).copied())
                .or(latest)
        };
        let score = value
            .map(|value| self.mode.score(value))
            .filter(|score| score.is_finite())
            .unwrap_or(f64::NEG_INFINITY);
        let known = self
            .pending
            .remove(&trial.0)
            .is_some_and(|config| &config == result.config);
        let slot = self.observations.slot(trial.0);
        if !known {
            self.distinct.insert(result.config);
            let row = self.model_space.encode(result.config);
            self.observations.set_row(slot, &row);
        }
        self.observations.complete(slot, score);
    }
}

/// The number of good observations among `n`: min(⌈0.15·n⌉, 25) by default, ⌈gamma·n⌉ (at
/// least one) with a fixed fraction.
///
/// Optuna's default is min(⌈0.1·n⌉, 25). With rung's estimators identical to Optuna 5's (checked
/// density by density), a good set half as large again measured better on every synthetic
/// function at 50 and 100 evaluations (200 seeds, together with 48 candidates), e.g. Branin
/// 0.0096 against 0.0173 and Hartmann6 0.113 against 0.134 after 100: the good density spreads
/// over more of the promising region instead of collapsing on the few best points.
fn n_good(gamma: Option<f64>, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    match gamma {
        None => (15 * n).div_ceil(100).min(25),
        Some(fraction) => {
            let exact = fraction * n as f64;
            let rounded = exact.round();
            // 0.3 · 10 is 3.0000000000000004 in floating point; that is 3 good results, not 4.
            let count = if (exact - rounded).abs() <= 1e-9 * exact.max(1.0) {
                rounded
            } else {
                exact.ceil()
            };
            (count as usize).clamp(1, n)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Drawing and scoring candidates.

/// What a suggestion draws from: the space, the observations and their split, and the
/// estimators built so far.
struct Context<'a> {
    space: &'a ModelSpace,
    observations: &'a Observations,
    class: &'a [u8],
    n_good: usize,
    settings: Settings,
    /// Estimators per group, built when a candidate first reaches the group.
    models: Vec<Option<GroupModel>>,
    /// Draw one candidate per group (a whole configuration from the good densities) instead of
    /// the best of `n_ei_candidates`, adding each group's log ratio to `score`.
    whole: bool,
    score: f64,
}

/// The configuration being drawn: node values (NaN until drawn or where absent), and which
/// groups are done.
struct Draw {
    values: Vec<f64>,
    drawn: Vec<bool>,
}

impl Draw {
    fn new(space: &ModelSpace) -> Draw {
        Draw {
            values: vec![f64::NAN; space.nodes.len()],
            drawn: vec![false; space.groups.len()],
        }
    }
}

/// A group's good and bad estimators.
struct GroupModel {
    good: Estimator,
    bad: Estimator,
}

impl<'a> Context<'a> {
    /// A context with no estimators built yet, for the split `class` with `n_good` good slots.
    fn new(
        space: &'a ModelSpace,
        observations: &'a Observations,
        class: &'a [u8],
        n_good: usize,
        settings: Settings,
    ) -> Context<'a> {
        Context {
            space,
            observations,
            class,
            n_good,
            settings,
            models: (0..space.groups.len()).map(|_| None).collect(),
            whole: false,
            score: 0.0,
        }
    }

    fn model(&mut self, group: usize) -> &GroupModel {
        if self.models[group].is_none() {
            let model = self.build(group);
            self.models[group] = Some(model);
        }
        self.models[group].as_ref().expect("just built")
    }

    fn build(&self, group: usize) -> GroupModel {
        let prior_weight = self.settings.prior_weight;
        let nodes = &self.space.groups[group].nodes;
        if self.settings.multivariate {
            let (good, bad) = self.joint_observations(nodes);
            return GroupModel {
                good: Estimator::Joint(Joint::fit(
                    &self.space.nodes,
                    nodes,
                    &good,
                    self.observations,
                    prior_weight,
                )),
                bad: Estimator::Joint(Joint::fit(
                    &self.space.nodes,
                    nodes,
                    &bad,
                    self.observations,
                    prior_weight,
                )),
            };
        }
        let (node, observations) = (nodes[0], self.observations);
        let good_slots = &observations.ranked[..self.n_good];
        let liar = self.settings.constant_liar;
        match &self.space.nodes[node].kind {
            NodeKind::Numeric(axis) => {
                let column = &observations.columns[node];
                let present = |slot: usize| !observations.row(slot)[node].is_nan();
                let good_count = good_slots.iter().filter(|&&slot| present(slot as usize)).count();
                let running = observations.running.iter().filter(|&&slot| present(slot)).count();
                let bad_count = column.values.len() - good_count - if liar { 0 } else { running };
                // A few good observations are quicker sorted than found in the column.
                let (good, good_unit) = if good_count <= 256 {
                    let mut values: Vec<f64> = good_slots
                        .iter()
                        .map(|&slot| observations.row(slot as usize)[node])
                        .filter(|value| !value.is_nan())
                        .collect();
                    values.sort_by(f64::total_cmp);
                    (values, 1.0)
                } else {
                    gather(column, self.class, GOOD, good_count)
                };
                let (bad, bad_unit) = gather(column, self.class, BAD, bad_count);
                GroupModel {
                    good: Estimator::Numeric(node, Mixture::fit(axis, &good, good_unit, prior_weight)),
                    bad: Estimator::Numeric(node, Mixture::fit(axis, &bad, bad_unit, prior_weight)),
                }
            }
            &NodeKind::Categorical(options) => {
                let option = |slot: usize| Some(observations.row(slot)[node]).filter(|value| !value.is_nan());
                let mut good = vec![0.0; options];
                for &slot in good_slots {
                    if let Some(option) = option(slot as usize) {
                        good[option as usize] += 1.0;
                    }
                }
                let mut bad: Vec<f64> = observations.counts[node]
                    .iter()
                    .zip(&good)
                    .map(|(all, good)| all - good)
                    .collect();
                if liar {
                    for &slot in &observations.running {
                        if let Some(option) = option(slot) {
                            bad[option as usize] += 1.0;
                        }
                    }
                }
                GroupModel {
                    good: Estimator::Categorical(node, Categorical::fit(&good, prior_weight)),
                    bad: Estimator::Categorical(node, Categorical::fit(&bad, prior_weight)),
                }
            }
        }
    }

    /// The good and bad slots where every node of a group is present, in rank order; each list
    /// of finished trials longer than [`MAX_JOINT_OBSERVATIONS`] is thinned to that many, evenly
    /// by rank (running trials, for the liar, are all kept).
    fn joint_observations(&self, group: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let observations = self.observations;
        let present = |slot: &usize| {
            let row = observations.row(*slot);
            group.iter().all(|&node| !row[node].is_nan())
        };
        let select = |ranked: &[u32]| -> Vec<usize> {
            let every =
                |ranked: &[u32]| -> Vec<usize> { ranked.iter().map(|&slot| slot as usize).filter(present).collect() };
            let len = ranked.len();
            if len <= MAX_JOINT_OBSERVATIONS {
                return every(ranked);
            }
            // Evenly spaced ranks, unless the group is absent from too many of them (a rarely
            // taken branch of a choice): then every slot where it is present, thinned.
            let picked: Vec<usize> = (0..MAX_JOINT_OBSERVATIONS)
                .map(|i| ranked[(2 * i + 1) * len / (2 * MAX_JOINT_OBSERVATIONS)] as usize)
                .filter(present)
                .collect();
            if picked.len() >= MAX_JOINT_OBSERVATIONS / 2 {
                return picked;
            }
            let all = every(ranked);
            if all.len() <= MAX_JOINT_OBSERVATIONS {
                return all;
            }
            (0..MAX_JOINT_OBSERVATIONS)
                .map(|i| all[(2 * i + 1) * all.len() / (2 * MAX_JOINT_OBSERVATIONS)])
                .collect()
        };
        let good = select(&observations.ranked[..self.n_good]);
        let mut bad = select(&observations.ranked[self.n_good..]);
        if self.settings.constant_liar {
            bad.extend(observations.running.iter().copied().filter(present));
        }
        (good, bad)
    }
}

fn draw_table(table: &[(String, Template)], context: &mut Context<'_>, rng: &mut ChaCha20Rng, draw: &mut Draw) {
    for (_, template) in table {
        draw_value(template, context, rng, draw);
    }
}

fn draw_value(template: &Template, context: &mut Context<'_>, rng: &mut ChaCha20Rng, draw: &mut Draw) {
    let mut ensure = |node: usize, context: &mut Context<'_>, draw: &mut Draw| {
        let space = context.space;
        let group = space.group_of[node];
        if draw.drawn[group] {
            return;
        }
        draw.drawn[group] = true;
        let (nodes, members) = (&space.nodes, &space.groups[group].nodes);
        let candidates = if context.whole {
            1
        } else {
            context.settings.n_ei_candidates
        };
        let model = context.model(group);
        let mut best = (f64::NEG_INFINITY, vec![f64::NAN; members.len()]);
        for candidate in 0..candidates {
            model.good.sample_into(nodes, rng, &mut draw.values);
            let score = model.good.log_density(nodes, &draw.values) - model.bad.log_density(nodes, &draw.values);
            if candidate == 0 || score > best.0 {
                best.0 = score;
                for (kept, &member) in best.1.iter_mut().zip(members) {
                    *kept = draw.values[member];
                }
            }
        }
        for (&kept, &member) in best.1.iter().zip(members) {
            draw.values[member] = kept;
        }
        context.score += best.0;
    };
    match template {
        Template::Fixed(_) => {}
        Template::Nested(table) => draw_table(table, context, rng, draw),
        Template::Numeric(node) | Template::Grid(node, _) => ensure(*node, context, draw),
        Template::Choice(node, options) => {
            ensure(*node, context, draw);
            let option = draw.values[*node] as usize;
            draw_value(&options[option].1, context, rng, draw);
        }
    }
}

/// The 10-parameter space the timings in the [module documentation](self) are measured on:
/// 4 uniform, 2 log-uniform, 2 integer and 2 categorical parameters. `benches/searchers.rs` and
/// the timing test both use it, so that the quoted numbers and the benchmark measure the same
/// thing.
pub fn ten_parameter_space() -> Space {
    let groups = [
        ("u", 4, Domain::uniform(-5.0, 5.0)),
        ("l", 2, Domain::loguniform(1e-5, 1.0)),
        ("i", 2, Domain::randint(1, 100)),
        ("c", 2, Domain::choice(["a", "b", "c", "d"])),
    ];
    let mut space = Space::new();
    for (prefix, count, domain) in groups {
        let domain = domain.expect("the bounds are valid");
        for i in 0..count {
            space
                .insert(&format!("{prefix}{i}"), domain.clone())
                .expect("the names are distinct");
        }
    }
    space
}
