//! The unit-cube view of a search space, shared by the quasi-random and model-based searchers.
//!
//! [`UnitSpace`] numbers every parameter that varies — one dimension per numeric domain, one
//! per `choice` — and maps a point of the unit cube `[0, 1)^d` to a configuration
//! ([`UnitSpace::decode`]) and back ([`UnitSpace::encode`]). Each coordinate is mapped through
//! its domain's own scale, so a uniformly spread set of points gives configurations spread the
//! way the domain draws them:
//!
//! | domain | decode `u` | encode |
//! | --- | --- | --- |
//! | `uniform(low, high)` | `low + u·(high − low)` | the inverse |
//! | `loguniform(low, high)` | `exp(ln low + u·(ln high − ln low))` | the inverse |
//! | `quniform`, `qloguniform` | as above, rounded to the nearest multiple of `q` in the bounds | the inverse |
//! | `randint(low, high)` | `low + ⌊u·(high − low)⌋` | `(k − low + ½)/(high − low)`, the centre of `k`'s bin |
//! | `qrandint(low, high, q)` | the `⌊u·n⌋`-th of the `n` multiples of `q` in `[low, high]` | its bin centre |
//! | `lograndint(low, high)` | `⌊exp(ln low + u·(ln high − ln low))⌋` | the centre of `[ln k, ln(k+1))` |
//! | `normal(mu, sigma)` | `mu + sigma·Φ⁻¹(u)` (u kept 2⁻⁴⁰ from 0 and 1) | `Φ((x − mu)/sigma)` |
//! | `choice` of `n` options | option `⌊u·n⌋` | `(i + ½)/n` |
//! | fixed value | takes no dimension | — |
//!
//! A `choice` option that is itself a domain or a nested table contributes its own further
//! dimensions, *conditioned* on the option: they exist in a configuration only when the choice
//! takes that option ([`UnitDim::condition`]). [`UnitSpace::encode`] reports which dimensions a
//! configuration uses and puts the unused (inactive) ones at the neutral `0.5`.
//!
//! Integers and choices take equal-width bins of the unit interval, so a uniform `u` draws them
//! uniformly and the bin centre is the canonical coordinate of a value; decoding the encoding
//! of a configuration gives the configuration back (floats up to rounding).
//!
//! The standard normal CDF and quantile it maps `normal` domains through, [`normal_cdf`] and
//! [`inverse_normal_cdf`] (Acklam's rational approximation refined by one Halley step), live
//! with the crate's other numerics and are re-exported here, where they were first public.

use serde_json::{Map, Value};
use tune_core::space::{Domain, Space};
use tune_core::value::Config;

pub use crate::numerics::{inverse_normal_cdf, normal_cdf};

/// The largest `f64` below 1: decoded coordinates are clamped to `[0, ONE_BELOW]`.
pub const ONE_BELOW: f64 = 1.0 - f64::EPSILON / 2.0;

/// How far a `normal` coordinate is kept from 0 and 1 (about 7.1 standard deviations).
const NORMAL_TAIL: f64 = 1.0 / (1u64 << 40) as f64;

/// What kind of values a dimension takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DimKind {
    /// A float (`uniform`, `loguniform`, their quantized forms, `normal`).
    Continuous {
        /// Whether the unit coordinate is on the log scale (`loguniform`, `qloguniform`).
        log: bool,
    },
    /// An integer range of `count` values, each taking an equal-width bin of the unit interval.
    Integer {
        /// How many integers the domain holds.
        count: u64,
        /// Whether the bins are equal on the log scale (`lograndint`) rather than linear.
        log: bool,
    },
    /// A `choice` among `options` (unordered).
    Categorical {
        /// How many options the choice has.
        options: usize,
    },
}

/// One dimension of the unit cube.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitDim {
    /// Dotted path of the parameter (`optimizer.momentum`); a choice, and a domain that is an
    /// option of a choice, go by the choice's own path.
    pub name: String,
    /// What values it takes.
    pub kind: DimKind,
    /// `(index of the controlling choice dimension, option index)` when the dimension only
    /// exists while that choice takes that option; the controlling dimension always comes first.
    pub condition: Option<(usize, usize)>,
}

/// A search space seen as the unit cube: see the [module documentation](self).
#[derive(Debug, Clone, PartialEq)]
pub struct UnitSpace {
    dims: Vec<UnitDim>,
    /// The domain behind each dimension (a `choice` for categorical ones).
    domains: Vec<Domain>,
    /// The space's parameters in name order.
    root: Vec<(String, Node)>,
}

/// How one value of a configuration is built from the unit coordinates.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Fixed(Value),
    Numeric(usize),
    Choice { dim: usize, options: Vec<(Domain, Node)> },
    Grid { dim: usize, values: Vec<Value> },
    Table(Vec<(String, Node)>),
}

impl UnitSpace {
    /// The unit-cube view of `space`. Grid domains (which the model-based searchers reject
    /// before they get here) are treated as a choice among their values.
    pub fn new(space: &Space) -> UnitSpace {
        let mut unit = UnitSpace {
            dims: Vec::new(),
            domains: Vec::new(),
            root: Vec::new(),
        };
        let root = space
            .params()
            .map(|(name, domain)| (name.to_owned(), unit.build(name, domain, None)))
            .collect();
        unit.root = root;
        unit
    }

    fn push(&mut self, name: &str, kind: DimKind, domain: &Domain, condition: Option<(usize, usize)>) -> usize {
        self.dims.push(UnitDim {
            name: name.to_owned(),
            kind,
            condition,
        });
        self.domains.push(domain.clone());
        self.dims.len() - 1
    }

    fn build(&mut self, path: &str, domain: &Domain, condition: Option<(usize, usize)>) -> Node {
        match domain {
            Domain::Fixed(value) => Node::Fixed(value.clone()),
            Domain::Nested(space) => Node::Table(
                space
                    .params()
                    .map(|(name, inner)| (name.to_owned(), self.build(&format!("{path}.{name}"), inner, condition)))
                    .collect(),
            ),
            Domain::Choice(options) => {
                let kind = DimKind::Categorical { options: options.len() };
                let dim = self.push(path, kind, domain, condition);
                let options = options
                    .iter()
                    .enumerate()
                    .map(|(index, option)| (option.clone(), self.build(path, option, Some((dim, index)))))
                    .collect();
                Node::Choice { dim, options }
            }
            Domain::Grid(values) => {
                let kind = DimKind::Categorical { options: values.len() };
                let dim = self.push(path, kind, domain, condition);
                Node::Grid {
                    dim,
                    values: values.clone(),
                }
            }
            numeric => {
                let dim = self.push(path, numeric_kind(numeric), numeric, condition);
                Node::Numeric(dim)
            }
        }
    }

    /// The dimensions, in the order of the coordinates.
    pub fn dims(&self) -> &[UnitDim] {
        &self.dims
    }

    /// The number of dimensions.
    pub fn len(&self) -> usize {
        self.dims.len()
    }

    /// Whether the space has no varying parameter (every point decodes to the same config).
    pub fn is_empty(&self) -> bool {
        self.dims.is_empty()
    }

    /// The configuration at `u` (one coordinate per dimension; each is clamped into `[0, 1)`,
    /// NaN and missing coordinates read as 0.5). The values always lie in the space.
    pub fn decode(&self, u: &[f64]) -> Config {
        let map = self
            .root
            .iter()
            .map(|(name, node)| (name.clone(), self.decode_node(node, u)))
            .collect();
        Config(map)
    }

    fn decode_node(&self, node: &Node, u: &[f64]) -> Value {
        match node {
            Node::Fixed(value) => value.clone(),
            Node::Numeric(dim) => decode_numeric(&self.domains[*dim], coordinate(u, *dim)),
            Node::Choice { dim, options } => {
                let index = bin(coordinate(u, *dim), options.len() as u64) as usize;
                self.decode_node(&options[index].1, u)
            }
            Node::Grid { dim, values } => values[bin(coordinate(u, *dim), values.len() as u64) as usize].clone(),
            Node::Table(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(name, inner)| (name.clone(), self.decode_node(inner, u)))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }

    /// The unit coordinates of `config` and which dimensions it uses. Inactive dimensions (an
    /// option not taken, a parameter missing from the config) are at 0.5; integers and choices
    /// are at the centre of their bin; values outside a domain are clamped to its bounds.
    pub fn encode(&self, config: &Config) -> (Vec<f64>, Vec<bool>) {
        let mut u = vec![0.5; self.len()];
        let mut active = vec![false; self.len()];
        for (name, node) in &self.root {
            if let Some(value) = config.0.get(name) {
                self.encode_node(node, value, &mut u, &mut active);
            }
        }
        (u, active)
    }

    fn encode_node(&self, node: &Node, value: &Value, u: &mut [f64], active: &mut [bool]) {
        match node {
            Node::Fixed(_) => {}
            Node::Numeric(dim) => {
                if let Some(x) = encode_numeric(&self.domains[*dim], value) {
                    u[*dim] = x;
                    active[*dim] = true;
                }
            }
            Node::Choice { dim, options } => {
                let containing: Vec<usize> = (0..options.len())
                    .filter(|&index| options[index].0.contains(value))
                    .collect();
                // Options may overlap (a `normal` option contains every float): prefer one that
                // gives the value back, then any that contains it, then one of its shape.
                let index = match containing.as_slice() {
                    [] => options.iter().position(|(domain, _)| same_shape(domain, value)),
                    [only] => Some(*only),
                    several => several
                        .iter()
                        .copied()
                        .find(|&index| self.reproduces(&options[index].1, value))
                        .or(Some(several[0])),
                };
                if let Some(index) = index {
                    u[*dim] = (index as f64 + 0.5) / options.len() as f64;
                    active[*dim] = true;
                    self.encode_node(&options[index].1, value, u, active);
                }
            }
            Node::Grid { dim, values } => {
                if let Some(index) = values.iter().position(|candidate| candidate == value) {
                    u[*dim] = (index as f64 + 0.5) / values.len() as f64;
                    active[*dim] = true;
                }
            }
            Node::Table(entries) => {
                let Some(map) = value.as_object() else {
                    return;
                };
                for (name, inner) in entries {
                    if let Some(inner_value) = map.get(name) {
                        self.encode_node(inner, inner_value, u, active);
                    }
                }
            }
        }
    }

    /// Whether encoding `value` through `node` and decoding it again gives `value` back.
    fn reproduces(&self, node: &Node, value: &Value) -> bool {
        let mut u = vec![0.5; self.len()];
        let mut active = vec![false; self.len()];
        self.encode_node(node, value, &mut u, &mut active);
        nearly_equal(&self.decode_node(node, &u), value)
    }

    /// Which option categorical dimension `dim` takes at `u`.
    pub fn option_at(&self, dim: usize, u: &[f64]) -> usize {
        match self.dims[dim].kind {
            DimKind::Categorical { options } => bin(coordinate(u, dim), options as u64) as usize,
            _ => 0,
        }
    }

    /// Which dimensions the configuration at `u` uses: those whose conditions (transitively)
    /// hold. The same mask [`UnitSpace::encode`] gives for [`UnitSpace::decode`]`(u)`, up to
    /// choices whose options overlap.
    pub fn active(&self, u: &[f64]) -> Vec<bool> {
        let mut active = vec![false; self.len()];
        for (index, dim) in self.dims.iter().enumerate() {
            active[index] = match dim.condition {
                None => true,
                Some((controller, option)) => active[controller] && self.option_at(controller, u) == option,
            };
        }
        active
    }
}

fn numeric_kind(domain: &Domain) -> DimKind {
    match *domain {
        Domain::LogUniform { .. } | Domain::QLogUniform { .. } => DimKind::Continuous { log: true },
        Domain::RandInt { low, high } => DimKind::Integer {
            count: int_width(low, high),
            log: false,
        },
        Domain::LogRandInt { low, high } => DimKind::Integer {
            count: int_width(low, high),
            log: true,
        },
        Domain::QRandInt { low, high, q } => {
            let (first, last) = qrandint_range(low, high, q);
            DimKind::Integer {
                count: int_width(first, last) + 1,
                log: false,
            }
        }
        _ => DimKind::Continuous { log: false },
    }
}

fn int_width(low: i64, high: i64) -> u64 {
    (i128::from(high) - i128::from(low)).max(1) as u64
}

/// The first and last multiple index of `q` in `[low, high]`.
fn qrandint_range(low: i64, high: i64, q: i64) -> (i64, i64) {
    let first = low.div_euclid(q) + i64::from(low.rem_euclid(q) != 0);
    let last = high.div_euclid(q);
    (first, last.max(first))
}

/// Coordinate `dim` of `u`, clamped into `[0, 1)`; NaN or missing reads as 0.5.
fn coordinate(u: &[f64], dim: usize) -> f64 {
    match u.get(dim) {
        Some(x) if !x.is_nan() => x.clamp(0.0, ONE_BELOW),
        _ => 0.5,
    }
}

/// The bin of `u ∈ [0, 1)` among `count` equal bins.
fn bin(u: f64, count: u64) -> u64 {
    ((u * count as f64).floor().max(0.0) as u64).min(count.saturating_sub(1))
}

/// Rounds `value` to the nearest multiple of `q` that lies in `[low, high]`.
fn quantize(value: f64, low: f64, high: f64, q: f64) -> f64 {
    let first = (low / q).ceil();
    let last = (high / q).floor().max(first);
    (value / q).round().clamp(first, last) * q
}

fn float_value(value: f64) -> Value {
    serde_json::Number::from_f64(value)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn log_scale(low: f64, high: f64, u: f64) -> f64 {
    let (log_low, log_high) = (low.ln(), high.ln());
    (log_low + u * (log_high - log_low)).exp()
}

fn decode_numeric(domain: &Domain, u: f64) -> Value {
    match *domain {
        Domain::Uniform { low, high } => {
            let x = low + u * (high - low);
            float_value(if x >= high {
                high.next_down().max(low)
            } else {
                x.max(low)
            })
        }
        Domain::QUniform { low, high, q } => float_value(quantize(low + u * (high - low), low, high, q)),
        Domain::LogUniform { low, high } => float_value(log_scale(low, high, u).clamp(low, high)),
        Domain::QLogUniform { low, high, q } => float_value(quantize(log_scale(low, high, u), low, high, q)),
        Domain::RandInt { low, high } => {
            let offset = bin(u, int_width(low, high));
            Value::from((i128::from(low) + i128::from(offset)).min(i128::from(high) - 1) as i64)
        }
        Domain::QRandInt { low, high, q } => {
            let (first, last) = qrandint_range(low, high, q);
            let offset = bin(u, int_width(first, last) + 1);
            let index = (i128::from(first) + i128::from(offset)).min(i128::from(last));
            Value::from((index * i128::from(q)) as i64)
        }
        Domain::LogRandInt { low, high } => {
            let drawn = log_scale(low as f64, high as f64, u).floor();
            Value::from((drawn as i64).clamp(low, high - 1))
        }
        Domain::Normal { mu, sigma } => {
            let z = inverse_normal_cdf(u.clamp(NORMAL_TAIL, 1.0 - NORMAL_TAIL));
            float_value(mu + sigma * z)
        }
        Domain::Fixed(ref value) => value.clone(),
        // Not numeric: never reached through a `Node::Numeric`.
        Domain::Choice(_) | Domain::Grid(_) | Domain::Nested(_) => Value::Null,
    }
}

fn encode_numeric(domain: &Domain, value: &Value) -> Option<f64> {
    let x = value.as_f64().filter(|x| x.is_finite())?;
    let linear = |low: f64, high: f64| (x - low) / (high - low);
    let logarithmic = |low: f64, high: f64| (x.max(f64::MIN_POSITIVE).ln() - low.ln()) / (high.ln() - low.ln());
    let integer_bin = |index: f64, first: f64, count: f64| (index - first + 0.5) / count;
    let u = match *domain {
        Domain::Uniform { low, high } | Domain::QUniform { low, high, .. } => linear(low, high),
        Domain::LogUniform { low, high } | Domain::QLogUniform { low, high, .. } => logarithmic(low, high),
        Domain::RandInt { low, high } => {
            let k = x.round().clamp(low as f64, (high - 1) as f64);
            integer_bin(k, low as f64, int_width(low, high) as f64)
        }
        Domain::QRandInt { low, high, q } => {
            let (first, last) = qrandint_range(low, high, q);
            let index = (x / q as f64).round().clamp(first as f64, last as f64);
            integer_bin(index, first as f64, (int_width(first, last) + 1) as f64)
        }
        Domain::LogRandInt { low, high } => {
            let k = x.round().clamp(low as f64, (high - 1) as f64);
            let centre = 0.5 * (k.ln() + (k + 1.0).ln());
            (centre - (low as f64).ln()) / ((high as f64).ln() - (low as f64).ln())
        }
        Domain::Normal { mu, sigma } => normal_cdf((x - mu) / sigma),
        _ => return None,
    };
    Some(if u.is_nan() { 0.5 } else { u.clamp(0.0, ONE_BELOW) })
}

/// Whether `value` has the shape `domain` produces (a table for a nested space, a number for a
/// numeric domain), for encoding configs that no option contains exactly.
fn same_shape(domain: &Domain, value: &Value) -> bool {
    match domain {
        Domain::Nested(_) => value.is_object(),
        Domain::Fixed(fixed) => fixed == value,
        Domain::Choice(options) => options.iter().any(|option| same_shape(option, value)),
        Domain::Grid(values) => values.contains(value),
        _ => value.is_number(),
    }
}

/// Whether two values agree, floats up to 10⁻⁹ relative (absolute below 1).
fn nearly_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| nearly_equal(v, w)))
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
            _ => false,
        },
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use serde_json::json;
    use tune_core::rng::ChaCha20Rng;

    fn optimizer_space() -> Space {
        Space::from_json(&json!({
            "lr": {"loguniform": [1e-5, 1e-1]},
            "layers": {"randint": [1, 8]},
            "act": "relu",
            "optimizer": {"choice": [
                {"name": "sgd", "momentum": {"uniform": [0.0, 0.99]}},
                {"name": "adam", "beta1": {"uniform": [0.8, 0.99]}, "eps": {"choice": [1e-8, {"loguniform": [1e-9, 1e-6]}]}},
                "none"
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn dims_follow_the_space_with_conditions() {
        let unit = UnitSpace::new(&optimizer_space());
        let names: Vec<&str> = unit.dims().iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "layers",
                "lr",
                "optimizer",
                "optimizer.momentum",
                "optimizer.beta1",
                "optimizer.eps",
                "optimizer.eps"
            ]
        );
        let conditions: Vec<_> = unit.dims().iter().map(|d| d.condition).collect();
        assert_eq!(
            conditions,
            [None, None, None, Some((2, 0)), Some((2, 1)), Some((2, 1)), Some((5, 1))]
        );
        assert_eq!(unit.dims()[0].kind, DimKind::Integer { count: 7, log: false });
        assert_eq!(unit.dims()[1].kind, DimKind::Continuous { log: true });
        assert_eq!(unit.dims()[2].kind, DimKind::Categorical { options: 3 });
        assert_eq!(unit.len(), 7);
        assert!(UnitSpace::new(&Space::new()).is_empty());
    }

    #[test]
    fn decode_maps_each_scale_and_encode_flags_inactive_dims() {
        let unit = UnitSpace::new(&optimizer_space());
        // layers bin 3 of 7, lr at the log midpoint, adam, beta1 at 0, eps = the loguniform option.
        let u = [3.5 / 7.0, 0.5, 0.5, 0.9, 0.0, 0.75, 1.0];
        let config = unit.decode(&u);
        assert_eq!(config.get("layers"), Some(&json!(4)));
        assert!((config.get("lr").unwrap().as_f64().unwrap() - 1e-3).abs() < 1e-15);
        assert_eq!(config.get("act"), Some(&json!("relu")));
        assert_eq!(config.get("optimizer.name"), Some(&json!("adam")));
        assert_eq!(config.get("optimizer.beta1"), Some(&json!(0.8)));
        assert_eq!(config.get("optimizer.momentum"), None);
        let eps = config.get("optimizer.eps").unwrap().as_f64().unwrap();
        assert!((eps - 1e-6).abs() < 1e-18, "{eps}");
        let (encoded, active) = unit.encode(&config);
        assert_eq!(active, [true, true, true, false, true, true, true]);
        assert_eq!(active, unit.active(&u));
        assert_eq!(encoded[3], 0.5);
        assert_eq!(encoded[0], 3.5 / 7.0);
        assert_eq!(encoded[2], 0.5);
        assert!((encoded[1] - 0.5).abs() < 1e-12);
        assert_eq!(unit.decode(&encoded), config);

        let none = unit.decode(&[0.0, 0.0, 0.99, 0.5, 0.5, 0.5, 0.5]);
        assert_eq!(none.get("optimizer"), Some(&json!("none")));
        let (encoded, active) = unit.encode(&none);
        assert_eq!(active, [true, true, true, false, false, false, false]);
        assert_eq!(&encoded[3..], [0.5; 4]);
        // Missing parameters are inactive; odd coordinates are clamped, never panicking.
        let (_, active) = unit.encode(&Config::default());
        assert_eq!(active, [false; 7]);
        let odd = unit.decode(&[f64::NAN, -3.0, 7.0]);
        assert!(optimizer_space().contains(&odd), "{odd:?}");
    }

    #[test]
    fn overlapping_options_encode_through_the_one_that_gives_the_value_back() {
        // A `normal` option contains every float; the value drawn from the uniform option must
        // still round-trip (proptest found this).
        let space = Space::from_json(&json!({"p": {"choice": [{"choice": [
            {"normal": [0.0, 1e-6]}, {"uniform": [0.0, 453224.1642304422]}
        ]}]}}))
        .unwrap();
        let unit = UnitSpace::new(&space);
        let config = unit.decode(&[0.5, 0.9, 0.5, 0.4]);
        let value = config.get("p").unwrap().as_f64().unwrap();
        assert!(value > 1e5, "{value}");
        let (encoded, active) = unit.encode(&config);
        assert_eq!(active, [true, true, false, true]);
        assert_eq!(unit.decode(&encoded), config);
    }

    #[test]
    fn integers_take_equal_bins() {
        let space = Space::from_json(&json!({"k": {"randint": [-3, 4]}, "q": {"qrandint": [1, 20, 5]}})).unwrap();
        let unit = UnitSpace::new(&space);
        assert_eq!(unit.dims()[1].kind, DimKind::Integer { count: 4, log: false });
        let mut seen = Vec::new();
        for i in 0..70 {
            let u = (i as f64 + 0.5) / 70.0;
            let config = unit.decode(&[u, u]);
            seen.push((
                config.get("k").unwrap().as_i64().unwrap(),
                config.get("q").unwrap().as_i64().unwrap(),
            ));
        }
        for k in -3..4 {
            assert_eq!(seen.iter().filter(|(a, _)| *a == k).count(), 10);
        }
        for q in [5, 10, 15, 20] {
            assert!(seen.iter().any(|(_, b)| *b == q));
        }
    }

    fn arb_numeric() -> impl Strategy<Value = Domain> {
        prop_oneof![
            tune_core::testing::numeric_domain(),
            Just(Domain::Fixed(json!("fixed")))
        ]
    }

    /// Domains with nested tables and (nested) conditional choices.
    fn arb_domain() -> impl Strategy<Value = Domain> {
        arb_numeric().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..4).prop_map(Domain::Choice),
                prop::collection::btree_map("[a-c]", inner, 1..3).prop_map(|params| {
                    let mut space = Space::new();
                    for (name, domain) in params {
                        space.insert(&name, domain).unwrap();
                    }
                    Domain::Nested(space)
                }),
            ]
        })
    }

    fn arb_space() -> impl Strategy<Value = Space> {
        prop::collection::btree_map("[p-s]", arb_domain(), 1..4).prop_map(|params| {
            let mut space = Space::new();
            for (name, domain) in params {
                space.insert(&name, domain).unwrap();
            }
            space
        })
    }

    proptest! {
        #[test]
        fn decoded_points_lie_in_the_space_and_round_trip(space in arb_space(), seed in any::<u64>()) {
            let unit = UnitSpace::new(&space);
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            for _ in 0..16 {
                let u: Vec<f64> = (0..unit.len()).map(|_| rng.random::<f64>()).collect();
                let config = unit.decode(&u);
                prop_assert!(space.contains(&config), "{config:?} not in {space:?}");
                let (encoded, active) = unit.encode(&config);
                prop_assert_eq!(encoded.len(), unit.len());
                prop_assert!(encoded.iter().all(|x| (0.0..1.0).contains(x)));
                for (index, dim) in unit.dims().iter().enumerate() {
                    if !active[index] {
                        prop_assert_eq!(encoded[index], 0.5);
                    }
                    if let Some((controller, option)) = dim.condition && active[index] {
                        prop_assert!(active[controller] && unit.option_at(controller, &encoded) == option);
                    }
                }
                prop_assert_eq!(unit.active(&encoded), active.clone());
                let again = unit.decode(&encoded);
                prop_assert!(nearly_equal(&Value::Object(again.0.clone()), &Value::Object(config.0.clone())),
                    "{again:?} != {config:?}");
                prop_assert_eq!(unit.encode(&again).1, active);
            }
        }
    }

    #[test]
    fn continuous_coordinates_round_trip_and_inactive_dims_are_flagged() {
        let unit = UnitSpace::new(&optimizer_space());
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        for _ in 0..500 {
            let u: Vec<f64> = (0..unit.len()).map(|_| rng.random::<f64>()).collect();
            let (encoded, active) = unit.encode(&unit.decode(&u));
            assert_eq!(active, unit.active(&u));
            for (index, dim) in unit.dims().iter().enumerate() {
                match dim.kind {
                    DimKind::Continuous { .. } if active[index] => assert!((encoded[index] - u[index]).abs() < 1e-9),
                    DimKind::Integer { count, .. } if active[index] => {
                        let count = count as f64;
                        assert_eq!((encoded[index] * count).floor(), (u[index] * count).floor());
                    }
                    DimKind::Categorical { options } if active[index] => {
                        let count = options as f64;
                        assert_eq!((encoded[index] * count).floor(), (u[index] * count).floor());
                    }
                    _ => assert_eq!(encoded[index], 0.5),
                }
            }
        }
    }
}
