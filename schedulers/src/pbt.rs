//! Population-based training: trials that fall behind copy the weights of trials ahead of them
//! (exploit) and continue with a perturbed copy of their configuration (explore).
//!
//! For each trial PBT tracks its configuration (as added, then as last explored), its last score
//! ([`Mode::score`]: higher is better, NaN worst), the time of its last perturbation (0 at first)
//! and whether it has a checkpoint. On a result at time `t` with
//! `t − last_perturbation ≥ perturbation_interval`:
//!
//! 1. `last_perturbation = t`;
//! 2. the trials that have reported and were not removed are ranked by last score (ties to the
//!    higher trial id); with `n` of them, `k = ⌈n·quantile_fraction⌉`, or `⌊n/2⌋` if that is
//!    smaller; the bottom `k` are the worst, the top `k` the best;
//! 3. if the reporting trial is in the bottom and some top trial has a checkpoint, one of those
//!    (drawn at random) is its donor: the trial's new configuration is the donor's, explored, and
//!    the decision is PAUSE; [`Scheduler::take_exploit`] then hands the controller the donor and
//!    the configuration, which relaunches the trial from the donor's newest checkpoint.
//!
//! Otherwise, and between perturbations, the trial continues. After an exploit the trial's score
//! history simply continues under its new configuration; its last perturbation stays at `t`.
//! Removed trials (ended for good) leave the population: they are neither ranked nor donors.
//! Results of trials never added (no configuration to copy) continue and are not tracked.
//!
//! # Explore
//!
//! Each mutable parameter of the donor's configuration is, with probability
//! `resample_probability`, drawn afresh from its domain, and otherwise perturbed:
//!
//! - numbers are multiplied by 0.8 or 1.2 (a coin flip), then brought back into the domain:
//!   integers rounded and clamped, quantized domains re-quantized within their bounds, uniform
//!   clamped below its (exclusive) high, loguniform clamped into `[low, high]`; a normal keeps any
//!   finite value;
//! - a `choice` moves to the neighbouring option (index −1 or +1, clamped at the ends), drawing
//!   from that option if it is itself a domain; a `grid` moves to its neighbouring value likewise;
//! - fixed values never change.
//!
//! The mutable parameters are the leaves of the space — top-level parameters and the parameters
//! of nested tables, by dotted name — or only those named in `mutate`. A `choice` with a nested
//! table among its options (a conditional space) is left as the donor has it, branch and inner
//! parameters alike: moving to another branch would need a fresh draw of a whole subtree, and
//! tuning inside a branch would need to know which branch is taken; keeping them is simple and
//! always valid. Every explored value is checked with [`Domain::contains`]; one that is not in its
//! domain (a donor value from outside the space that could not be repaired) is drawn afresh, and
//! if even that fails the donor's value is kept.
//!
//! All randomness comes from the experiment seed's `"pbt"` stream, drawn in a fixed order, so the
//! same calls give the same exploits.
//!
//! ## References
//!
//! Max Jaderberg, Valentin Dalibard, Simon Osindero, Wojciech M. Czarnecki, Jeff Donahue, Ali
//! Razavi, Oriol Vinyals, Tim Green, Iain Dunning, Karen Simonyan, Chrisantha Fernando and Koray
//! Kavukcuoglu, "Population Based Training of Neural Networks", arXiv:1711.09846, 2017.

use std::collections::BTreeMap;

use rand::Rng;
use tune_core::rng::ChaCha20Rng;
use tune_core::scheduler::{Exploit, Scheduler, TrialReport};
use tune_core::space::{Domain, Space};
use tune_core::trial::{Decision, Mode, TrialId};
use tune_core::value::{Config, Value, dotted};

use crate::PbtConfig;

/// What PBT knows of one trial.
#[derive(Debug, Clone)]
struct Member {
    config: Config,
    /// Its last score (higher is better), once it has reported.
    last_score: Option<f64>,
    last_perturbation: f64,
    has_checkpoint: bool,
    removed: bool,
}

/// Population-based training. See the module documentation.
#[derive(Debug, Clone)]
pub struct Pbt {
    time_attr: String,
    mode: Mode,
    perturbation_interval: f64,
    quantile_fraction: f64,
    resample_probability: f64,
    /// The parameters explore changes, by dotted name, with their domains.
    mutable: Vec<(String, Domain)>,
    rng: ChaCha20Rng,
    members: BTreeMap<TrialId, Member>,
    /// Exploits decided by `on_result`, until the controller takes them.
    exploits: BTreeMap<TrialId, Exploit>,
}

/// Whether a domain has a nested table somewhere among its options (a conditional space).
fn branches(domain: &Domain) -> bool {
    match domain {
        Domain::Nested(_) => true,
        Domain::Choice(options) => options.iter().any(branches),
        _ => false,
    }
}

/// The leaves explore may change: every parameter of `space` and its nested tables except fixed
/// values and conditional choices, by dotted name, in name order.
fn leaves(prefix: &str, space: &Space, out: &mut Vec<(String, Domain)>) {
    for (name, domain) in space.params() {
        let dotted = dotted(prefix, name);
        match domain {
            Domain::Nested(inner) => leaves(&dotted, inner, out),
            Domain::Fixed(_) => {}
            choice @ Domain::Choice(_) if branches(choice) => {}
            other => out.push((dotted, other.clone())),
        }
    }
}

/// A fresh draw from `domain`, through a one-parameter space.
fn resample(domain: &Domain, rng: &mut ChaCha20Rng) -> Option<Value> {
    let space = Space::new().with("p", domain.clone()).ok()?;
    space.sample(rng, &BTreeMap::new()).0.remove("p")
}

fn float(value: f64) -> Option<Value> {
    serde_json::Number::from_f64(value).map(Value::Number)
}

/// Rounds `value` to the nearest multiple of `q` within `[low, high]` (as sampling does).
fn quantize(value: f64, low: f64, high: f64, q: f64) -> f64 {
    let first = (low / q).ceil();
    let last = (high / q).floor();
    (value / q).round().clamp(first, last) * q
}

/// An integer from a scaled value, clamped into `[low, high]`.
fn round_into(value: f64, low: i64, high: i64) -> Value {
    Value::from((value.round() as i64).clamp(low, high))
}

/// `current` multiplied by 0.8 or 1.2 (a coin flip), if it is a number and stays finite.
fn scaled(current: &Value, rng: &mut ChaCha20Rng) -> Option<f64> {
    let value = current.as_f64()?;
    let factor = if rng.random_bool(0.5) { 1.2 } else { 0.8 };
    Some(value * factor).filter(|scaled| scaled.is_finite())
}

/// The index next to `index` (one down or up, a coin flip), clamped into `0..len`.
fn neighbour(index: usize, len: usize, rng: &mut ChaCha20Rng) -> usize {
    if rng.random_bool(0.5) {
        (index + 1).min(len - 1)
    } else {
        index.saturating_sub(1)
    }
}

/// `current` perturbed within `domain` (see the module documentation); `None` when `current`
/// cannot be perturbed (not a number, not one of the options), and it should be drawn afresh.
fn perturb(domain: &Domain, current: &Value, rng: &mut ChaCha20Rng) -> Option<Value> {
    match *domain {
        Domain::Uniform { low, high } => float(scaled(current, rng)?.clamp(low, high.next_down().max(low))),
        Domain::LogUniform { low, high } => float(scaled(current, rng)?.clamp(low, high)),
        Domain::QUniform { low, high, q } | Domain::QLogUniform { low, high, q } => {
            float(quantize(scaled(current, rng)?, low, high, q))
        }
        Domain::RandInt { low, high } | Domain::LogRandInt { low, high } => {
            Some(round_into(scaled(current, rng)?, low, high - 1))
        }
        Domain::QRandInt { low, high, q } => {
            let first = low.div_euclid(q) + i64::from(low.rem_euclid(q) != 0);
            let last = high.div_euclid(q);
            let multiple = ((scaled(current, rng)? / q as f64).round() as i64).clamp(first, last);
            Some(Value::from(multiple * q))
        }
        Domain::Normal { .. } => float(scaled(current, rng)?),
        Domain::Choice(ref options) => {
            let index = options.iter().position(|option| option.contains(current))?;
            let moved = neighbour(index, options.len(), rng);
            if moved == index {
                return Some(current.clone());
            }
            match &options[moved] {
                Domain::Fixed(value) => Some(value.clone()),
                option => resample(option, rng),
            }
        }
        Domain::Grid(ref values) => {
            let index = values.iter().position(|value| value == current)?;
            Some(values[neighbour(index, values.len(), rng)].clone())
        }
        Domain::Fixed(_) | Domain::Nested(_) => Some(current.clone()),
    }
}

/// Sets the value at a dotted path that exists in `config`.
fn set_dotted(config: &mut Config, dotted: &str, value: Value) {
    let mut parts = dotted.split('.').peekable();
    let mut map = &mut config.0;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            if let Some(slot) = map.get_mut(part) {
                *slot = value;
            }
            return;
        }
        match map.get_mut(part) {
            Some(Value::Object(inner)) => map = inner,
            _ => return,
        }
    }
}

impl Pbt {
    /// A PBT over the settings `c` for a metric optimised in `mode`, exploring `space`, its
    /// randomness drawn from the experiment `seed`.
    pub fn new(c: &PbtConfig, mode: Mode, seed: u64, space: Space) -> Pbt {
        let mut mutable = Vec::new();
        leaves("", &space, &mut mutable);
        if let Some(names) = &c.mutate {
            mutable.retain(|(name, _)| names.contains(name));
        }
        Pbt {
            time_attr: c.time_attr.clone(),
            mode,
            perturbation_interval: c.perturbation_interval,
            quantile_fraction: c.quantile_fraction,
            resample_probability: c.resample_probability,
            mutable,
            rng: tune_core::rng::stream(seed, "pbt"),
            members: BTreeMap::new(),
            exploits: BTreeMap::new(),
        }
    }

    /// The dotted names of the parameters explore changes, in name order.
    pub fn mutable_parameters(&self) -> impl Iterator<Item = &str> {
        self.mutable.iter().map(|(name, _)| name.as_str())
    }

    /// A trial's current configuration as PBT tracks it (after any exploit).
    pub fn config(&self, trial: TrialId) -> Option<&Config> {
        self.members.get(&trial).map(|member| &member.config)
    }

    /// The bottom and top `k` of the population, each worst first and best first respectively.
    fn quantiles(&self) -> (Vec<TrialId>, Vec<TrialId>) {
        let mut ranked: Vec<(f64, TrialId)> = self
            .members
            .iter()
            .filter(|(_, member)| !member.removed)
            .filter_map(|(&trial, member)| Some((member.last_score?, trial)))
            .collect();
        // Worst first; among equal scores the higher id counts as worse.
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
        let n = ranked.len();
        let wanted = n as f64 * self.quantile_fraction;
        // A relative slack so that 20 × 0.15 = 3.0000000000000004 gives 3.
        let mut k = (wanted - wanted * 1e-9).ceil().max(0.0) as usize;
        if 2 * k > n {
            k = n / 2;
        }
        let bottom = ranked[..k].iter().map(|&(_, trial)| trial).collect();
        let top = ranked[n - k..].iter().rev().map(|&(_, trial)| trial).collect();
        (bottom, top)
    }

    /// The donor's configuration with its mutable parameters explored.
    fn explore(&mut self, donor: &Config) -> Config {
        let mut config = donor.clone();
        for (name, domain) in &self.mutable {
            let Some(current) = donor.get(name) else {
                continue;
            };
            let fresh = self.rng.random::<f64>() < self.resample_probability;
            let explored = if fresh {
                resample(domain, &mut self.rng)
            } else {
                perturb(domain, current, &mut self.rng)
            };
            let value = match explored {
                Some(value) if domain.contains(&value) => value,
                _ => match resample(domain, &mut self.rng) {
                    Some(value) if domain.contains(&value) => value,
                    _ => current.clone(),
                },
            };
            set_dotted(&mut config, name, value);
        }
        config
    }
}

impl Scheduler for Pbt {
    fn on_result(&mut self, trial: TrialId, result: &TrialReport<'_>) -> Decision {
        let Some(member) = self.members.get_mut(&trial) else {
            return Decision::Continue;
        };
        // `+ 0.0` turns -0.0 into 0.0, so equal values tie.
        member.last_score = Some(self.mode.score(result.value) + 0.0);
        member.has_checkpoint |= result.has_checkpoint || result.checkpointed;
        let Some(time) = result.time(&self.time_attr).filter(|t| !t.is_nan()) else {
            return Decision::Continue;
        };
        // False for a NaN difference (inf − inf): such a trial waits rather than perturbs.
        let due = time - member.last_perturbation >= self.perturbation_interval;
        if !due {
            return Decision::Continue;
        }
        member.last_perturbation = time;
        let (bottom, top) = self.quantiles();
        if !bottom.contains(&trial) {
            return Decision::Continue;
        }
        let donors: Vec<TrialId> = top
            .into_iter()
            .filter(|donor| self.members[donor].has_checkpoint)
            .collect();
        if donors.is_empty() {
            return Decision::Continue;
        }
        let donor = donors[self.rng.random_range(0..donors.len())];
        let donor_config = self.members[&donor].config.clone();
        let config = self.explore(&donor_config);
        self.members.get_mut(&trial).expect("known trial").config = config.clone();
        self.exploits.insert(trial, Exploit { donor, config });
        Decision::Pause
    }

    fn on_trial_add(&mut self, trial: TrialId, config: &Config) {
        self.members.insert(
            trial,
            Member {
                config: config.clone(),
                last_score: None,
                last_perturbation: 0.0,
                has_checkpoint: false,
                removed: false,
            },
        );
    }

    fn on_trial_remove(&mut self, trial: TrialId) {
        if let Some(member) = self.members.get_mut(&trial) {
            member.removed = true;
        }
        self.exploits.remove(&trial);
    }

    fn take_exploit(&mut self, trial: TrialId) -> Option<Exploit> {
        self.exploits.remove(&trial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Checkpoints, decide, metric};
    use proptest::prelude::*;
    use rand::SeedableRng;
    use serde_json::json;
    use tune_core::trial::Report;

    fn settings(mutate: Option<&[&str]>) -> PbtConfig {
        PbtConfig {
            time_attr: "step".into(),
            perturbation_interval: 4.0,
            quantile_fraction: 0.25,
            resample_probability: 0.25,
            mutate: mutate.map(|names| names.iter().map(|n| (*n).to_owned()).collect()),
        }
    }

    fn space() -> Space {
        Space::from_json(&json!({
            "lr": {"loguniform": [1e-4, 1e-1]},
            "batch": {"choice": [16, 32, 64, 128]},
            "layers": {"randint": [1, 8]},
            "activation": "relu",
            "model": {"width": {"qrandint": [32, 512, 32]}, "dropout": {"uniform": [0.0, 0.5]}},
            "optimizer": {"choice": [
                {"name": "sgd", "momentum": {"uniform": [0.0, 0.99]}},
                {"name": "adam", "beta1": {"uniform": [0.8, 0.99]}}
            ]}
        }))
        .unwrap()
    }

    fn config(value: serde_json::Value) -> Config {
        serde_json::from_value(value).unwrap()
    }

    fn population_config(trial: u64) -> Config {
        config(json!({
            "lr": 1e-3 * trial as f64,
            "batch": 32,
            "layers": trial,
            "activation": "relu",
            "model": {"width": 64, "dropout": 0.1},
            "optimizer": {"name": "sgd", "momentum": 0.9}
        }))
    }

    fn report(pbt: &mut Pbt, trial: u64, step: u64, value: f64, has_checkpoint: bool) -> Decision {
        let checkpoints = Checkpoints {
            checkpointed: false,
            has_checkpoint,
        };
        decide(pbt, trial, step, metric("loss", value), value, checkpoints)
    }

    /// Reports `value` at `step` (with a checkpoint) and checks that the trial continues with no
    /// exploit to take.
    fn continues_without_exploit(pbt: &mut Pbt, trial: u64, step: u64, value: f64) {
        assert_eq!(report(pbt, trial, step, value, true), Decision::Continue);
        assert_eq!(pbt.take_exploit(TrialId(trial)), None);
    }

    /// Four trials (mode min: t1 is best, t4 worst) that reported at step 1; t1 has a checkpoint
    /// when `donor_checkpoint`.
    fn population(mutate: Option<&[&str]>, donor_checkpoint: bool, seed: u64) -> Pbt {
        let mut pbt = Pbt::new(&settings(mutate), Mode::Min, seed, space());
        for trial in 1..=4 {
            pbt.on_trial_add(TrialId(trial), &population_config(trial));
        }
        for trial in 1..=4 {
            let checkpoint = trial != 1 || donor_checkpoint;
            assert_eq!(report(&mut pbt, trial, 1, trial as f64, checkpoint), Decision::Continue);
        }
        pbt
    }

    #[test]
    fn mutable_parameters_are_the_unconditional_leaves() {
        let pbt = Pbt::new(&settings(None), Mode::Min, 0, space());
        assert_eq!(
            pbt.mutable_parameters().collect::<Vec<_>>(),
            ["batch", "layers", "lr", "model.dropout", "model.width"]
        );
        let pbt = Pbt::new(
            &settings(Some(&["lr", "model.width", "optimizer.momentum"])),
            Mode::Min,
            0,
            space(),
        );
        assert_eq!(pbt.mutable_parameters().collect::<Vec<_>>(), ["lr", "model.width"]);
    }

    #[test]
    fn bottom_trial_exploits_a_top_trial_with_a_checkpoint() {
        let mutate: &[&str] = &["lr", "batch", "model.width"];
        for seed in 0..20 {
            let mut pbt = population(Some(mutate), true, seed);
            assert_eq!(report(&mut pbt, 4, 4, 4.0, true), Decision::Pause);
            let exploit = pbt.take_exploit(TrialId(4)).expect("an exploit after the pause");
            assert_eq!(pbt.take_exploit(TrialId(4)), None, "taken once");
            assert_eq!(exploit.donor, TrialId(1));
            assert!(space().contains(&exploit.config), "{exploit:?}");
            let donor = population_config(1);
            for (name, value) in donor.flatten() {
                if !mutate.contains(&name.as_str()) {
                    assert_eq!(exploit.config.get(&name), Some(value), "{name} changed");
                }
            }
            assert_eq!(pbt.config(TrialId(4)), Some(&exploit.config));
        }
    }

    #[test]
    fn perturbations_stay_close_to_the_donor() {
        let mut pbt = population(None, true, 3);
        pbt.resample_probability = 0.0;
        assert_eq!(report(&mut pbt, 4, 4, 4.0, true), Decision::Pause);
        let config = pbt.take_exploit(TrialId(4)).unwrap().config;
        let lr = config.get("lr").unwrap().as_f64().unwrap();
        assert!(
            (lr - 1e-3 * 0.8).abs() < 1e-12 || (lr - 1e-3 * 1.2).abs() < 1e-12,
            "lr {lr}"
        );
        assert!([16, 64].contains(&config.get("batch").unwrap().as_i64().unwrap()));
        let width = config.get("model.width").unwrap().as_i64().unwrap();
        // 64 × 0.8 = 51.2 → 64 (nearest multiple of 32); 64 × 1.2 = 76.8 → 64.
        assert_eq!(width, 64);
        assert_eq!(
            config.get("layers"),
            Some(&json!(1)),
            "1 × 0.8 and 1 × 1.2 both round to 1"
        );
    }

    #[test]
    fn a_top_trial_never_exploits() {
        let mut pbt = population(None, true, 0);
        continues_without_exploit(&mut pbt, 1, 4, 1.0);
        // Nor does a middle one.
        assert_eq!(report(&mut pbt, 2, 4, 2.0, true), Decision::Continue);
    }

    #[test]
    fn no_donor_with_a_checkpoint_continues() {
        let mut pbt = population(None, false, 0);
        continues_without_exploit(&mut pbt, 4, 4, 4.0);
        // Once the top trial has a checkpoint, the next perturbation exploits it.
        assert_eq!(report(&mut pbt, 1, 5, 1.0, true), Decision::Continue);
        assert_eq!(report(&mut pbt, 4, 7, 4.0, true), Decision::Continue);
        assert_eq!(report(&mut pbt, 4, 8, 4.0, true), Decision::Pause);
    }

    #[test]
    fn perturbation_interval_is_respected() {
        let mut pbt = population(None, true, 0);
        assert_eq!(report(&mut pbt, 4, 3, 4.0, true), Decision::Continue);
        assert_eq!(report(&mut pbt, 4, 4, 4.0, true), Decision::Pause);
        pbt.take_exploit(TrialId(4)).unwrap();
        // Still the worst, but the last perturbation was at 4.
        for step in 5..8 {
            assert_eq!(report(&mut pbt, 4, step, 9.0, true), Decision::Continue);
        }
        assert_eq!(report(&mut pbt, 4, 8, 9.0, true), Decision::Pause);
        assert_eq!(pbt.take_exploit(TrialId(4)).unwrap().donor, TrialId(1));
    }

    #[test]
    fn small_populations_and_removed_trials() {
        // Alone, a trial is neither bottom nor top.
        let mut pbt = Pbt::new(&settings(None), Mode::Max, 0, space());
        pbt.on_trial_add(TrialId(1), &population_config(1));
        assert_eq!(report(&mut pbt, 1, 4, 1.0, true), Decision::Continue);
        // With the worst NaN and the best removed, the next best is the donor.
        let mut pbt = population(None, true, 0);
        pbt.on_trial_remove(TrialId(1));
        assert_eq!(report(&mut pbt, 3, 4, f64::NAN, true), Decision::Pause);
        assert_eq!(pbt.take_exploit(TrialId(3)).unwrap().donor, TrialId(2));
    }

    #[test]
    fn same_seed_same_exploits() {
        let run = |seed| {
            let mut pbt = population(None, true, seed);
            report(&mut pbt, 2, 4, 1.5, true);
            report(&mut pbt, 3, 4, 0.5, true);
            report(&mut pbt, 4, 4, 9.0, true);
            pbt.take_exploit(TrialId(4))
        };
        assert_eq!(run(7), run(7));
        assert!((0..10).any(|seed| run(seed) != run(7)), "the seed matters");
    }

    #[test]
    fn quantile_sizes() {
        let mut pbt = Pbt::new(&settings(None), Mode::Max, 0, space());
        let mut sizes = Vec::new();
        for trial in 1..=9 {
            pbt.on_trial_add(TrialId(trial), &population_config(trial));
            report(&mut pbt, trial, 1, trial as f64, true);
            sizes.push(pbt.quantiles().0.len());
        }
        // ⌈n/4⌉, capped at ⌊n/2⌋.
        assert_eq!(sizes, [0, 1, 1, 1, 2, 2, 2, 2, 3]);
        let (bottom, top) = pbt.quantiles();
        assert_eq!(bottom, [TrialId(1), TrialId(2), TrialId(3)]);
        assert_eq!(top, [TrialId(9), TrialId(8), TrialId(7)]);
        pbt.quantile_fraction = 0.15;
        for trial in 10..=20 {
            pbt.on_trial_add(TrialId(trial), &population_config(trial));
            report(&mut pbt, trial, 1, trial as f64, true);
        }
        assert_eq!(pbt.quantiles().0.len(), 3, "20 × 0.15 is 3, not 4");
    }

    #[test]
    fn every_domain_kind_perturbs_into_its_domain() {
        let mut rng = tune_core::rng::stream(1, "test");
        let cases = [
            (Domain::uniform(0.0, 1.0).unwrap(), json!(0.99)),
            (Domain::loguniform(1e-3, 1.0).unwrap(), json!(1.0)),
            (Domain::quniform(0.0, 1.0, 0.25).unwrap(), json!(1.0)),
            (Domain::qloguniform(1.0, 100.0, 1.0).unwrap(), json!(100.0)),
            (Domain::randint(0, 3).unwrap(), json!(2)),
            (Domain::qrandint(-10, 10, 5).unwrap(), json!(10)),
            (Domain::lograndint(1, 10).unwrap(), json!(9)),
            (Domain::normal(0.0, 1.0).unwrap(), json!(-3.0)),
            (Domain::choice([1, 2, 3]).unwrap(), json!(3)),
            (Domain::grid(["a", "b"]).unwrap(), json!("a")),
        ];
        for (domain, value) in cases {
            for _ in 0..50 {
                let moved = perturb(&domain, &value, &mut rng).unwrap();
                assert!(domain.contains(&moved), "{moved} not in {domain:?}");
            }
        }
        // A choice never jumps more than one option.
        let choice = Domain::choice([1, 2, 3, 4]).unwrap();
        for _ in 0..50 {
            let moved = perturb(&choice, &json!(1), &mut rng).unwrap();
            assert!([json!(1), json!(2)].contains(&moved), "{moved}");
        }
        // Values that cannot be perturbed are drawn afresh instead.
        assert_eq!(perturb(&choice, &json!(7), &mut rng), None);
        assert_eq!(
            perturb(&Domain::uniform(0.0, 1.0).unwrap(), &json!("x"), &mut rng),
            None
        );
    }

    #[test]
    fn the_controller_relaunches_an_exploited_trial_from_its_donor() {
        use std::time::Duration;
        use tune_core::controller::{Command, Controller, ControllerConfig, Event, Launch};
        use tune_core::searcher::{Searcher, Suggestion};

        struct Fixed;
        impl Searcher for Fixed {
            fn suggest(&mut self, trial: TrialId) -> tune_core::Result<Suggestion> {
                Ok(Suggestion::Config(population_config(trial.0)))
            }
        }
        let controller_settings = ControllerConfig {
            metric: "loss".into(),
            mode: Mode::Min,
            max_trials: Some(4),
            max_concurrent: 4,
            time_budget: None,
            target: None,
            max_failures: 0,
            max_lost: 3,
            max_failed_trials: None,
            checkpoint_keep: None,
        };
        let pbt = Pbt::new(&settings(Some(&["lr"])), Mode::Min, 5, space());
        let mut controller = Controller::new(controller_settings, Box::new(Fixed), Box::new(pbt));
        controller.handle(&Event::Start, Duration::ZERO);
        let mut last = Vec::new();
        for step in 1..=4 {
            for trial in 1..=4 {
                let event = Event::Reported {
                    trial: TrialId(trial),
                    report: Report {
                        step,
                        metrics: [("loss".to_owned(), trial as f64)].into(),
                    },
                    checkpoint: Some(format!("/ck/{trial}/{step}")),
                };
                last = controller.handle(&event, Duration::ZERO);
            }
        }
        // t4, the worst, was paused at step 4 to copy t1; once its process exits it relaunches
        // with the explored config from t1's checkpoint.
        assert!(last.iter().any(|c| matches!(
            c,
            Command::Respond {
                decision: Decision::Pause,
                ..
            }
        )));
        let exit = Event::Exited {
            trial: TrialId(4),
            outcome: tune_core::controller::Outcome::Success,
        };
        let relaunch = controller.handle(&exit, Duration::ZERO);
        let launch: Vec<&Launch> = relaunch
            .iter()
            .filter_map(|c| match c {
                Command::Launch(launch) => Some(launch),
                _ => None,
            })
            .collect();
        assert_eq!(launch.len(), 1);
        assert_eq!(launch[0].trial, TrialId(4));
        assert_eq!(launch[0].restore.as_ref().map(|r| r.path.as_str()), Some("/ck/1/4"));
        assert!(space().contains(&launch[0].config));
        assert_eq!(launch[0].config.get("layers"), Some(&json!(1)), "copied from t1");
        assert_ne!(launch[0].config.get("lr"), Some(&json!(1e-3)), "explored");
    }

    fn arb_leaf() -> impl Strategy<Value = Domain> {
        prop_oneof![
            8 => arb_numeric(),
            1 => proptest::collection::vec(-100i64..100, 1..6).prop_map(|v| Domain::choice(v).unwrap()),
            1 => proptest::collection::vec(-100i64..100, 1..6).prop_map(|v| Domain::grid(v).unwrap()),
            1 => (-100i64..100).prop_map(Domain::fixed),
        ]
    }

    fn arb_numeric() -> impl Strategy<Value = Domain> {
        tune_core::testing::numeric_domain()
    }

    fn arb_space() -> impl Strategy<Value = Space> {
        let nested = proptest::collection::vec(arb_leaf(), 1..4).prop_map(|domains| {
            let mut inner = Space::new();
            for (i, domain) in domains.into_iter().enumerate() {
                inner.insert(&format!("n{i}"), domain).unwrap();
            }
            Domain::Nested(inner)
        });
        // Choice options may not hold grids, so branches hold numeric domains.
        let conditional = (arb_numeric(), arb_numeric()).prop_map(|(a, b)| {
            let branch = |domain: Domain| Domain::Nested(Space::new().with("inner", domain).unwrap());
            Domain::choice_of(vec![branch(a), branch(b), Domain::fixed("none")]).unwrap()
        });
        let domain = prop_oneof![6 => arb_leaf(), 2 => nested, 1 => conditional];
        proptest::collection::vec(domain, 1..6).prop_map(|domains| {
            let mut space = Space::new();
            for (i, domain) in domains.into_iter().enumerate() {
                space.insert(&format!("p{i}"), domain).unwrap();
            }
            space
        })
    }

    proptest! {
        #[test]
        fn explored_configs_lie_in_the_space(
            space in arb_space(),
            seed in any::<u64>(),
            resample_probability in prop_oneof![Just(0.0), Just(1.0), 0.0f64..1.0],
        ) {
            let mut pbt = Pbt::new(&PbtConfig { resample_probability, ..settings(None) }, Mode::Max, seed, space.clone());
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let mut donor = space.sample(&mut rng, &BTreeMap::new());
            prop_assert!(space.contains(&donor));
            // Explore repeatedly from the previous result, as a lineage of exploits would.
            for _ in 0..20 {
                let explored = pbt.explore(&donor);
                prop_assert!(space.contains(&explored), "{} not in the space from {}", explored.to_json(), donor.to_json());
                for (name, value) in donor.flatten() {
                    if !pbt.mutable_parameters().any(|m| m == name) {
                        prop_assert_eq!(explored.get(&name), Some(value));
                    }
                }
                donor = explored;
            }
        }
    }
}
