//! No wasted trials: the configurations a searcher has proposed or been told of, and, for a space
//! with finitely many configurations, the ones that are left.
//!
//! Re-running a configuration of a deterministic objective buys nothing, and on a small discrete
//! space a model-based searcher that keeps proposing its favourite spends the whole budget on it
//! (shared/findings/tpe-categorical.md). So every searcher that draws configurations keeps a
//! [`Distinct`] and, when its first choice was seen already, looks for a fresh one; in a finite
//! space it reports the space exhausted once every configuration has been proposed.
//!
//! A configuration is known by its index in the enumeration of the space when the space is
//! finite (so that `1` and `1.0`, or two spellings of the same quantized float, are one
//! configuration), and by its canonical JSON text otherwise.

use std::collections::{BTreeMap, HashSet};

use rand::Rng;
use serde_json::Value;
use tune_core::space::{Domain, Space};
use tune_core::value::Config;

/// A finite space larger than this is never scanned whole: an unseen configuration is found by
/// drawing indices at random.
const SCAN_LIMIT: u128 = 1 << 20;
/// Draws from the space tried before a finite space is searched by index.
const SPACE_DRAWS: usize = 64;
/// Indices drawn from a space too large to scan before giving up on a fresh configuration.
const INDEX_DRAWS: usize = 10_000;

/// The configurations seen so far (see the [module documentation](self)).
#[derive(Debug, Clone)]
pub struct Distinct {
    finite: Option<Enumeration>,
    indices: HashSet<u128>,
    texts: HashSet<String>,
}

impl Distinct {
    /// Nothing seen yet, of configurations of `space`.
    pub fn new(space: &Space) -> Distinct {
        Distinct {
            finite: Enumeration::of(space),
            indices: HashSet::new(),
            texts: HashSet::new(),
        }
    }

    /// The number of configurations of the space, when it is finite.
    pub fn size(&self) -> Option<u128> {
        self.finite.as_ref().map(|finite| finite.size)
    }

    /// Whether `config` was seen.
    pub fn contains(&self, config: &Config) -> bool {
        match self.index_of(config) {
            Some(index) => self.indices.contains(&index),
            None => self.texts.contains(&canonical(config)),
        }
    }

    /// Records `config`; false when it was seen already.
    pub fn insert(&mut self, config: &Config) -> bool {
        match self.index_of(config) {
            Some(index) => self.indices.insert(index),
            None => self.texts.insert(canonical(config)),
        }
    }

    /// Whether every configuration of a finite space was seen.
    pub fn exhausted(&self) -> bool {
        self.finite
            .as_ref()
            .is_some_and(|finite| self.indices.len() as u128 >= finite.size)
    }

    /// A configuration not seen yet: the first unseen of a few draws from `space`, then, in a
    /// finite space, one chosen uniformly among those left. `None` when none is left (a finite
    /// space is exhausted) or, in an infinite space, when every draw was seen.
    pub fn fresh(&self, space: &Space, rng: &mut impl Rng) -> Option<Config> {
        if self.exhausted() {
            return None;
        }
        for _ in 0..SPACE_DRAWS {
            let config = space.sample(rng, &BTreeMap::new());
            if !self.contains(&config) {
                return Some(config);
            }
        }
        let finite = self.finite.as_ref()?;
        // An index is canonical when it is the first spelling of its configuration: options of
        // a choice may overlap (`choice([randint(0, 3), randint(1, 4)])`), and the duplicate
        // spellings must not count as configurations left.
        let unseen = |index: u128| {
            !self.indices.contains(&index) && {
                let config = finite.nth(index);
                finite.index_of(&config) == Some(index)
            }
        };
        let index = if finite.size <= SCAN_LIMIT {
            let left: Vec<u128> = (0..finite.size).filter(|&index| unseen(index)).collect();
            if left.is_empty() {
                return None;
            }
            left[rng.random_range(0..left.len())]
        } else {
            (0..INDEX_DRAWS)
                .map(|_| rng.random_range(0..finite.size))
                .find(|&index| unseen(index))?
        };
        Some(finite.nth(index))
    }

    /// `config` if it was not seen, else a [fresh](Distinct::fresh) one; recorded as seen.
    /// `None` when the space has none left.
    pub fn claim(&mut self, config: Config, space: &Space, rng: &mut impl Rng) -> Option<Config> {
        let config = if self.contains(&config) {
            self.fresh(space, rng)?
        } else {
            config
        };
        self.insert(&config);
        Some(config)
    }

    fn index_of(&self, config: &Config) -> Option<u128> {
        self.finite.as_ref().and_then(|finite| finite.index_of(config))
    }
}

/// The text a configuration is known by in an infinite space: its JSON, keys in order.
fn canonical(config: &Config) -> String {
    serde_json::to_string(&config.0).expect("a configuration is plain JSON")
}

/// The configurations of a finite space, numbered `0..size`.
#[derive(Debug, Clone)]
struct Enumeration {
    root: Node,
    size: u128,
}

/// A domain's values as an enumeration; each node knows its size.
#[derive(Debug, Clone)]
enum Node {
    /// Every combination of the members (a table of parameters); the first varies fastest.
    Table(Vec<(String, Node, u128)>),
    /// One of the options (a choice whose options are domains).
    Either(Vec<(Node, u128)>),
    /// One of these values.
    Values(Vec<Value>),
    /// `first + k · step` for `k` in `0..count`.
    Integers { first: i64, step: i64, count: u128 },
    /// `(first + k) · q` for `k` in `0..count`, as floats (what a quantized domain draws).
    Multiples { first: f64, q: f64, count: u128 },
}

impl Enumeration {
    /// The enumeration of `space`, or `None` when it has a continuous parameter (or more
    /// configurations than a `u128` counts).
    fn of(space: &Space) -> Option<Enumeration> {
        let root = table(space)?;
        let size = root.size();
        Some(Enumeration { root, size })
    }

    fn nth(&self, index: u128) -> Config {
        match self.root.nth(index) {
            Value::Object(map) => Config(map),
            _ => unreachable!("the root is a table"),
        }
    }

    fn index_of(&self, config: &Config) -> Option<u128> {
        self.root.index_of(&Value::Object(config.0.clone()))
    }
}

fn table(space: &Space) -> Option<Node> {
    let members = space
        .params()
        .map(|(name, domain)| {
            let node = node(domain)?;
            let size = node.size();
            Some((name.to_owned(), node, size))
        })
        .collect::<Option<Vec<_>>>()?;
    members
        .iter()
        .try_fold(1u128, |product, (_, _, size)| product.checked_mul(*size))?;
    Some(Node::Table(members))
}

fn node(domain: &Domain) -> Option<Node> {
    let count = |first: i64, last: i64| u128::try_from(i128::from(last) - i128::from(first) + 1).ok();
    Some(match *domain {
        Domain::Uniform { .. } | Domain::LogUniform { .. } | Domain::Normal { .. } => return None,
        Domain::QUniform { low, high, q } | Domain::QLogUniform { low, high, q } => {
            let (first, last) = ((low / q).ceil(), (high / q).floor());
            if !(first.is_finite() && last.is_finite()) || last - first > 1e15 {
                return None;
            }
            Node::Multiples {
                first,
                q,
                count: (last - first + 1.0).max(0.0) as u128,
            }
        }
        Domain::RandInt { low, high } | Domain::LogRandInt { low, high } => Node::Integers {
            first: low,
            step: 1,
            count: count(low, high - 1)?,
        },
        Domain::QRandInt { low, high, q } => {
            let first = low.div_euclid(q) + i64::from(low.rem_euclid(q) != 0);
            let last = high.div_euclid(q);
            Node::Integers {
                first: first.checked_mul(q)?,
                step: q,
                count: count(first, last)?,
            }
        }
        Domain::Choice(ref options) if options.iter().all(|option| matches!(option, Domain::Fixed(_))) => {
            values(options.iter().map(|option| match option {
                Domain::Fixed(value) => value,
                _ => unreachable!("checked above"),
            }))
        }
        Domain::Choice(ref options) => {
            let options = options
                .iter()
                .map(|option| {
                    let node = node(option)?;
                    let size = node.size();
                    Some((node, size))
                })
                .collect::<Option<Vec<_>>>()?;
            options
                .iter()
                .try_fold(0u128, |sum, (_, size)| sum.checked_add(*size))?;
            Node::Either(options)
        }
        Domain::Grid(ref grid) => values(grid.iter()),
        Domain::Fixed(ref value) => Node::Values(vec![value.clone()]),
        Domain::Nested(ref space) => table(space)?,
    })
}

/// The distinct values of a list, in order.
fn values<'a>(list: impl Iterator<Item = &'a Value>) -> Node {
    let mut distinct: Vec<Value> = Vec::new();
    for value in list {
        if !distinct.iter().any(|kept| same(kept, value)) {
            distinct.push(value.clone());
        }
    }
    Node::Values(distinct)
}

/// Equal values, numbers compared by value (`1` is `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

impl Node {
    fn size(&self) -> u128 {
        match self {
            Node::Table(members) => members.iter().map(|(_, _, size)| size).product(),
            Node::Either(options) => options.iter().map(|(_, size)| size).sum(),
            Node::Values(values) => values.len() as u128,
            Node::Integers { count, .. } | Node::Multiples { count, .. } => *count,
        }
    }

    fn nth(&self, index: u128) -> Value {
        match self {
            Node::Table(members) => {
                let mut rest = index;
                let map = members
                    .iter()
                    .map(|(name, node, size)| {
                        let value = node.nth(rest % size);
                        rest /= size;
                        (name.clone(), value)
                    })
                    .collect();
                Value::Object(map)
            }
            Node::Either(options) => {
                let mut rest = index;
                for (node, size) in options {
                    if rest < *size {
                        return node.nth(rest);
                    }
                    rest -= size;
                }
                unreachable!("index {index} is below the size")
            }
            Node::Values(values) => values[index as usize].clone(),
            Node::Integers { first, step, .. } => Value::from(first + index as i64 * step),
            Node::Multiples { first, q, .. } => serde_json::Number::from_f64((first + index as f64) * q)
                .map(Value::Number)
                .unwrap_or(Value::Null),
        }
    }

    fn index_of(&self, value: &Value) -> Option<u128> {
        match self {
            Node::Table(members) => {
                let map = value.as_object()?;
                if map.len() != members.len() {
                    return None;
                }
                let (mut index, mut radix) = (0u128, 1u128);
                for (name, node, size) in members {
                    index += node.index_of(map.get(name)?)? * radix;
                    radix *= size;
                }
                Some(index)
            }
            Node::Either(options) => {
                let mut offset = 0;
                for (node, size) in options {
                    if let Some(index) = node.index_of(value) {
                        return Some(offset + index);
                    }
                    offset += size;
                }
                None
            }
            Node::Values(values) => values.iter().position(|kept| same(kept, value)).map(|i| i as u128),
            &Node::Integers { first, step, count } => {
                let v = match value.as_i64() {
                    Some(v) => v,
                    None => {
                        let f = value.as_f64()?;
                        if f.fract() != 0.0 || f.abs() > 9.0e15 {
                            return None;
                        }
                        f as i64
                    }
                };
                let offset = i128::from(v) - i128::from(first);
                let step = i128::from(step);
                (offset >= 0 && offset % step == 0)
                    .then(|| (offset / step) as u128)
                    .filter(|&k| k < count)
            }
            &Node::Multiples { first, q, count } => {
                let f = value.as_f64()?;
                let m = (f / q).round();
                let close = (m * q - f).abs() <= 1e-9 * f.abs().max(q.abs());
                let k = m - first;
                (close && k >= 0.0 && (k as u128) < count).then_some(k as u128)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tune_core::rng;

    fn space(value: Value) -> Space {
        Space::from_json(&value).unwrap()
    }

    fn config(value: Value) -> Config {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn finite_spaces_are_counted_and_enumerated_one_to_one() {
        let space = space(json!({
            "c": {"choice": ["a", "b", "a"]},
            "n": {"randint": [1, 4]},
            "q": {"quniform": [0.0, 1.0, 0.25]},
            "s": {"qrandint": [1, 10, 4]},
            "f": {"fixed": 7},
        }));
        let distinct = Distinct::new(&space);
        let finite = distinct.finite.as_ref().unwrap();
        // 2 distinct options × 3 integers × 5 quarters × {4, 8} × 1.
        assert_eq!(distinct.size(), Some(2 * 3 * 5 * 2));
        let mut texts = HashSet::new();
        for index in 0..finite.size {
            let config = finite.nth(index);
            assert!(space.contains(&config), "{config:?}");
            assert_eq!(finite.index_of(&config), Some(index));
            assert!(texts.insert(canonical(&config)));
        }
        // Another spelling of the same configuration has the same index.
        let a = config(json!({"c": "b", "n": 2, "q": 0.5, "s": 8, "f": 7}));
        let b = config(json!({"c": "b", "n": 2.0, "q": 0.5000000000000001, "s": 8.0, "f": 7}));
        assert_eq!(finite.index_of(&a), finite.index_of(&b));
        assert!(finite.index_of(&a).is_some());
    }

    #[test]
    fn continuous_parameters_make_a_space_infinite() {
        let space = space(json!({"c": {"choice": ["a", "b"]}, "x": {"uniform": [0, 1]}}));
        let mut distinct = Distinct::new(&space);
        assert_eq!(distinct.size(), None);
        let a = config(json!({"c": "a", "x": 0.5}));
        assert!(distinct.insert(&a));
        assert!(!distinct.insert(&a));
        assert!(distinct.contains(&a));
        assert!(!distinct.contains(&config(json!({"c": "a", "x": 0.25}))));
        assert!(!distinct.exhausted());
    }

    #[test]
    fn fresh_configurations_run_out_with_the_space() {
        // A conditional space: 2 + 3 = 5 configurations, with a choice of tables.
        let space = space(json!({"model": {"choice": [
            {"name": "tree", "depth": {"choice": [2, 4]}},
            {"name": "knn", "k": {"randint": [1, 4]}},
        ]}}));
        let mut distinct = Distinct::new(&space);
        assert_eq!(distinct.size(), Some(5));
        let mut rng = rng::stream(1, "test");
        let mut seen = Vec::new();
        while let Some(config) = distinct.fresh(&space, &mut rng) {
            assert!(space.contains(&config));
            assert!(distinct.insert(&config), "{config:?} twice");
            seen.push(config);
        }
        assert_eq!(seen.len(), 5);
        assert!(distinct.exhausted());
    }

    #[test]
    fn overlapping_options_count_once() {
        let space = space(json!({"n": {"choice": [{"randint": [0, 3]}, {"randint": [1, 4]}]}}));
        let mut distinct = Distinct::new(&space);
        let mut rng = rng::stream(2, "test");
        let mut values = Vec::new();
        while let Some(config) = distinct.fresh(&space, &mut rng) {
            assert!(distinct.insert(&config));
            values.push(config.get("n").and_then(Value::as_i64).unwrap());
        }
        values.sort_unstable();
        assert_eq!(values, [0, 1, 2, 3]);
    }
}
