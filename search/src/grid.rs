//! Exhaustive grid search.

use std::collections::BTreeMap;

use tune_core::searcher::{Searcher, Suggestion};
use tune_core::space::{Domain, Space};
use tune_core::trial::TrialId;
use tune_core::value::{Config, Value};
use tune_core::{Error, Result};

/// The most values an integer range may enumerate.
const MAX_VALUES: i64 = 10_000;

/// Enumerates the cartesian product of every parameter, each taking all its values: grids,
/// choices of plain values, integer ranges and fixed values. Trial n takes point (n − 1) mod
/// the number of points, the last parameter varying fastest.
pub struct GridSearch {
    axes: Vec<(String, Vec<Value>)>,
}

impl GridSearch {
    /// A grid search over `space`; fails naming the first parameter it cannot enumerate.
    /// (Grid search draws nothing at random, so the seed is unused.)
    pub fn new(space: &Space, _seed: u64) -> Result<Self> {
        let mut axes = Vec::new();
        for (name, domain) in space.params() {
            collect_axes(name, domain, &mut axes)?;
        }
        Ok(GridSearch { axes })
    }

    /// The number of points in one pass.
    pub fn points(&self) -> u64 {
        self.axes.iter().map(|(_, values)| values.len() as u64).product()
    }

    fn point(&self, index: u64) -> Config {
        let mut rest = index % self.points().max(1);
        let mut values = BTreeMap::new();
        for (name, axis) in self.axes.iter().rev() {
            let len = axis.len() as u64;
            values.insert(name.as_str(), axis[(rest % len) as usize].clone());
            rest /= len;
        }
        let mut config = serde_json::Map::new();
        for (name, value) in values {
            insert_dotted(&mut config, name, value);
        }
        Config(config)
    }
}

fn insert_dotted(map: &mut serde_json::Map<String, Value>, dotted: &str, value: Value) {
    match dotted.split_once('.') {
        None => {
            map.insert(dotted.to_owned(), value);
        }
        Some((head, tail)) => {
            let inner = map
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if let Value::Object(inner) = inner {
                insert_dotted(inner, tail, value);
            }
        }
    }
}

fn collect_axes(name: &str, domain: &Domain, axes: &mut Vec<(String, Vec<Value>)>) -> Result<()> {
    let not_enumerable = |why: &str| {
        Error::param(
            name,
            format!("grid search cannot enumerate a {} domain: {why}", domain.kind()),
        )
    };
    let values: Vec<Value> = match domain {
        Domain::Grid(values) => values.clone(),
        Domain::Fixed(value) => vec![value.clone()],
        Domain::Choice(options) => options
            .iter()
            .map(|option| match option {
                Domain::Fixed(value) => Ok(value.clone()),
                _ => Err(not_enumerable(
                    "its options must be plain values; use random search for nested choices",
                )),
            })
            .collect::<Result<_>>()?,
        Domain::RandInt { low, high } | Domain::LogRandInt { low, high } => {
            if high - low > MAX_VALUES {
                return Err(not_enumerable(&format!(
                    "it has {} values, more than {MAX_VALUES}",
                    high - low
                )));
            }
            (*low..*high).map(Value::from).collect()
        }
        Domain::QRandInt { low, high, q } => {
            let first = low.div_euclid(*q) + i64::from(low.rem_euclid(*q) != 0);
            let last = high.div_euclid(*q);
            if last - first >= MAX_VALUES {
                return Err(not_enumerable(&format!("it has more than {MAX_VALUES} values")));
            }
            (first..=last).map(|k| Value::from(k * q)).collect()
        }
        Domain::Nested(space) => {
            for (inner, domain) in space.params() {
                collect_axes(&format!("{name}.{inner}"), domain, axes)?;
            }
            return Ok(());
        }
        Domain::Uniform { .. }
        | Domain::QUniform { .. }
        | Domain::LogUniform { .. }
        | Domain::QLogUniform { .. }
        | Domain::Normal { .. } => {
            return Err(not_enumerable(
                "it is continuous and has no grid values; use grid = [...] or random search",
            ));
        }
    };
    axes.push((name.to_owned(), values));
    Ok(())
}

impl Searcher for GridSearch {
    fn suggest(&mut self, trial: TrialId) -> Result<Suggestion> {
        Ok(Suggestion::Config(self.point(trial.0.saturating_sub(1))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn enumerates_every_combination() {
        let space = Space::from_json(&json!({
            "batch": {"choice": [16, 32]}, "layers": {"randint": [1, 4]}, "act": "relu", "m": {"d": {"grid": [0.1, 0.2]}}
        }))
        .unwrap();
        let mut search = GridSearch::new(&space, 0).unwrap();
        assert_eq!(search.points(), 12);
        let mut seen = std::collections::BTreeSet::new();
        for n in 1..=12 {
            let Suggestion::Config(config) = search.suggest(TrialId(n)).unwrap() else {
                panic!()
            };
            assert!(space.contains(&config), "{config:?}");
            seen.insert(config.to_json());
        }
        assert_eq!(seen.len(), 12);
        let Suggestion::Config(first) = search.suggest(TrialId(1)).unwrap() else {
            panic!()
        };
        let Suggestion::Config(thirteenth) = search.suggest(TrialId(13)).unwrap() else {
            panic!()
        };
        assert_eq!(first, thirteenth, "the grid repeats for the next sample");
    }

    #[test]
    fn rejects_continuous_parameters_by_name() {
        let space = Space::from_json(&json!({"lr": {"loguniform": [1e-4, 1e-1]}})).unwrap();
        assert_eq!(
            GridSearch::new(&space, 0).err().unwrap().to_string(),
            "parameter \"lr\": grid search cannot enumerate a loguniform domain: it is continuous and has no grid values; use grid = [...] or random search"
        );
    }
}
