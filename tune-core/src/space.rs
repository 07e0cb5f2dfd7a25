//! Search spaces: the domains parameters are drawn from, their validation and sampling.
//!
//! A [`Space`] is a table of parameter names to [`Domain`]s. A domain may itself be a nested
//! table ([`Domain::Nested`]), and a `choice` may offer tables of further domains, which makes
//! conditional spaces: an optimizer choice where "sgd" has a momentum and "adam" has betas.
//!
//! In a spec file a domain is a one-key table naming it — `{ loguniform = [1e-5, 1e-1] }` —
//! a plain value is fixed, and any other table is a nested space. Every constructor validates,
//! so an invalid domain never reaches a sweep.

use std::collections::BTreeMap;
use std::fmt;

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::value::{Config, Value, dotted};

/// Where one parameter's values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// A float uniform in `[low, high)`.
    Uniform {
        /// Lower bound (inclusive).
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// A uniform float rounded to a multiple of `q`, within `[low, high]`.
    QUniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
        /// Quantum.
        q: f64,
    },
    /// A float whose logarithm is uniform in `[ln low, ln high)`.
    LogUniform {
        /// Lower bound, > 0.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// A log-uniform float rounded to a multiple of `q`, within `[low, high]`.
    QLogUniform {
        /// Lower bound, > 0.
        low: f64,
        /// Upper bound.
        high: f64,
        /// Quantum.
        q: f64,
    },
    /// An integer uniform in `[low, high)` (high exclusive).
    RandInt {
        /// Lower bound (inclusive).
        low: i64,
        /// Upper bound (exclusive).
        high: i64,
    },
    /// An integer multiple of `q` uniform in `[low, high]` (high inclusive).
    QRandInt {
        /// Lower bound (inclusive).
        low: i64,
        /// Upper bound (inclusive).
        high: i64,
        /// Quantum.
        q: i64,
    },
    /// An integer whose logarithm is uniform, in `[low, high)` (high exclusive).
    LogRandInt {
        /// Lower bound (inclusive), >= 1.
        low: i64,
        /// Upper bound (exclusive).
        high: i64,
    },
    /// A float from a normal distribution.
    Normal {
        /// Mean.
        mu: f64,
        /// Standard deviation, > 0.
        sigma: f64,
    },
    /// One of the options, each equally likely; an option may be a nested table of domains.
    Choice(Vec<Domain>),
    /// Every value in turn: the searcher enumerates the cartesian product of all grid parameters.
    Grid(Vec<Value>),
    /// Always this value.
    Fixed(Value),
    /// A nested table of further parameters.
    Nested(Space),
}

/// The names domains go by in spec files, for parsing and for error messages.
pub const DOMAIN_NAMES: [&str; 12] = [
    "uniform",
    "quniform",
    "loguniform",
    "qloguniform",
    "randint",
    "qrandint",
    "lograndint",
    "normal",
    "choice",
    "grid",
    "fixed",
    "nested",
];

/// A search space: parameter names to domains, kept in name order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Space {
    params: BTreeMap<String, Domain>,
}

/// One grid parameter: its dotted name and the values it takes.
#[derive(Debug, Clone, PartialEq)]
pub struct GridAxis {
    /// Dotted name of the parameter.
    pub name: String,
    /// Values in the order they are enumerated.
    pub values: Vec<Value>,
}

/// Writes one checked constructor per numeric domain from a table of `name => Variant { field:
/// type, ... }` rows: `Domain::uniform(0.0, 1.0)` is `Domain::Uniform { low: 0.0, high: 1.0 }`,
/// validated.
macro_rules! numeric_constructors {
    ($($(#[$doc:meta])* $name:ident => $variant:ident { $($field:ident: $type:ty),+ };)+) => {
        $(
            $(#[$doc])*
            pub fn $name($($field: $type),+) -> Result<Self> {
                Domain::$variant { $($field),+ }.validated("")
            }
        )+
    };
}

impl Domain {
    numeric_constructors! {
        /// `uniform(low, high)`.
        uniform => Uniform { low: f64, high: f64 };
        /// `quniform(low, high, q)`.
        quniform => QUniform { low: f64, high: f64, q: f64 };
        /// `loguniform(low, high)`.
        loguniform => LogUniform { low: f64, high: f64 };
        /// `qloguniform(low, high, q)`.
        qloguniform => QLogUniform { low: f64, high: f64, q: f64 };
        /// `randint(low, high)`, high exclusive.
        randint => RandInt { low: i64, high: i64 };
        /// `qrandint(low, high, q)`, high inclusive.
        qrandint => QRandInt { low: i64, high: i64, q: i64 };
        /// `lograndint(low, high)`, high exclusive.
        lograndint => LogRandInt { low: i64, high: i64 };
        /// `normal(mu, sigma)`.
        normal => Normal { mu: f64, sigma: f64 };
    }

    /// `choice([...])` over plain values.
    pub fn choice<V: Into<Value>>(options: impl IntoIterator<Item = V>) -> Result<Self> {
        Domain::Choice(options.into_iter().map(|v| Domain::Fixed(v.into())).collect()).validated("")
    }
    /// `choice([...])` whose options may be domains or nested spaces.
    pub fn choice_of(options: Vec<Domain>) -> Result<Self> {
        Domain::Choice(options).validated("")
    }
    /// `grid([...])`.
    pub fn grid<V: Into<Value>>(values: impl IntoIterator<Item = V>) -> Result<Self> {
        Domain::Grid(values.into_iter().map(Into::into).collect()).validated("")
    }
    /// A fixed value.
    pub fn fixed(value: impl Into<Value>) -> Self {
        Domain::Fixed(value.into())
    }

    /// The name this domain goes by in spec files.
    pub fn kind(&self) -> &'static str {
        match self {
            Domain::Uniform { .. } => "uniform",
            Domain::QUniform { .. } => "quniform",
            Domain::LogUniform { .. } => "loguniform",
            Domain::QLogUniform { .. } => "qloguniform",
            Domain::RandInt { .. } => "randint",
            Domain::QRandInt { .. } => "qrandint",
            Domain::LogRandInt { .. } => "lograndint",
            Domain::Normal { .. } => "normal",
            Domain::Choice(_) => "choice",
            Domain::Grid(_) => "grid",
            Domain::Fixed(_) => "fixed",
            Domain::Nested(_) => "nested",
        }
    }

    /// Checks the domain, naming `param` in any error; returns it unchanged when valid.
    pub fn validated(self, param: &str) -> Result<Self> {
        self.validate(param)?;
        Ok(self)
    }

    /// Checks the domain, naming `param` (its dotted name) in any error.
    pub fn validate(&self, param: &str) -> Result<()> {
        let param = if param.is_empty() { "<unnamed>" } else { param };
        let fail = |message: String| Err(Error::param(param, message));
        let kind = self.kind();
        let finite = |name: &str, value: f64| -> Result<()> {
            if value.is_finite() {
                Ok(())
            } else {
                Err(Error::param(
                    param,
                    format!("{kind} needs finite {name}, got {name}={value}"),
                ))
            }
        };
        match *self {
            Domain::Uniform { low, high } | Domain::QUniform { low, high, .. } => {
                finite("low", low)?;
                finite("high", high)?;
                if low >= high {
                    return fail(format!("{kind} needs low < high, got low={low}, high={high}"));
                }
            }
            Domain::LogUniform { low, high } | Domain::QLogUniform { low, high, .. } => {
                finite("low", low)?;
                finite("high", high)?;
                if !(low > 0.0 && low < high) {
                    return fail(format!("{kind} needs 0 < low < high, got low={low}, high={high}"));
                }
            }
            Domain::RandInt { low, high } => {
                if low >= high {
                    return fail(format!(
                        "randint needs low < high (high is exclusive), got low={low}, high={high}"
                    ));
                }
            }
            Domain::QRandInt { low, high, q } => {
                if q <= 0 {
                    return fail(format!("qrandint needs q > 0, got q={q}"));
                }
                if low >= high {
                    return fail(format!("qrandint needs low < high, got low={low}, high={high}"));
                }
            }
            Domain::LogRandInt { low, high } => {
                if !(low > 0 && low < high) {
                    return fail(format!("lograndint needs 0 < low < high, got low={low}, high={high}"));
                }
            }
            Domain::Normal { mu, sigma } => {
                finite("mu", mu)?;
                finite("sigma", sigma)?;
                if sigma <= 0.0 {
                    return fail(format!("normal needs sigma > 0, got sigma={sigma}"));
                }
            }
            Domain::Choice(ref options) => {
                if options.is_empty() {
                    return fail("choice needs at least one option, got an empty list".into());
                }
                for (index, option) in options.iter().enumerate() {
                    if option.contains_grid() {
                        return fail(format!(
                            "choice option {index} contains a grid, which is not supported inside a choice"
                        ));
                    }
                    option.validate(&format!("{param}[{index}]"))?;
                }
            }
            Domain::Grid(ref values) => {
                if values.is_empty() {
                    return fail("grid needs at least one value, got an empty list".into());
                }
            }
            Domain::Fixed(_) => {}
            Domain::Nested(ref space) => {
                for (name, domain) in &space.params {
                    domain.validate(&format!("{param}.{name}"))?;
                }
            }
        }
        if let Domain::QUniform { low, high, q } | Domain::QLogUniform { low, high, q } = *self {
            finite("q", q)?;
            if q <= 0.0 {
                return fail(format!("{kind} needs q > 0, got q={q}"));
            }
            if (low / q).ceil() > (high / q).floor() {
                return fail(format!("{kind} has no multiple of q={q} in [{low}, {high}]"));
            }
        }
        if let Domain::QRandInt { low, high, q } = *self
            && low.div_euclid(q) + i64::from(low.rem_euclid(q) != 0) > high.div_euclid(q)
        {
            return fail(format!("qrandint has no multiple of q={q} in [{low}, {high}]"));
        }
        Ok(())
    }

    fn contains_grid(&self) -> bool {
        match self {
            Domain::Grid(_) => true,
            Domain::Choice(options) => options.iter().any(Domain::contains_grid),
            Domain::Nested(space) => space.params.values().any(Domain::contains_grid),
            _ => false,
        }
    }

    /// Whether `value` is one this domain can produce (used by tests and by callers that check
    /// configs handed in from outside).
    pub fn contains(&self, value: &Value) -> bool {
        let float = value.as_f64();
        let int = value.as_i64();
        match *self {
            Domain::Uniform { low, high } => float.is_some_and(|v| v >= low && v < high),
            Domain::LogUniform { low, high } => float.is_some_and(|v| v >= low && v <= high),
            Domain::QUniform { low, high, q } | Domain::QLogUniform { low, high, q } => float.is_some_and(|v| {
                let k = (v / q).round();
                v >= low - 1e-9 * q.abs().max(1.0)
                    && v <= high + 1e-9 * q.abs().max(1.0)
                    && (v - k * q).abs() <= 1e-9 * q.abs().max(v.abs())
            }),
            Domain::RandInt { low, high } | Domain::LogRandInt { low, high } => {
                int.is_some_and(|v| v >= low && v < high)
            }
            Domain::QRandInt { low, high, q } => int.is_some_and(|v| v >= low && v <= high && v % q == 0),
            Domain::Normal { .. } => float.is_some_and(f64::is_finite),
            Domain::Choice(ref options) => options.iter().any(|option| option.contains(value)),
            Domain::Grid(ref values) => values.contains(value),
            Domain::Fixed(ref fixed) => fixed == value,
            Domain::Nested(ref space) => value.as_object().is_some_and(|map| {
                map.len() == space.params.len()
                    && space
                        .params
                        .iter()
                        .all(|(name, domain)| map.get(name).is_some_and(|v| domain.contains(v)))
            }),
        }
    }

    /// Draws one value. Grid parameters take their value from `grid` by dotted name (a grid not
    /// named there draws uniformly from its values).
    fn sample_at(&self, name: &str, rng: &mut impl Rng, grid: &BTreeMap<String, Value>) -> Value {
        match *self {
            Domain::Uniform { low, high } => float_value(low + (high - low) * rng.random::<f64>()),
            Domain::QUniform { low, high, q } => {
                float_value(quantize(low + (high - low) * rng.random::<f64>(), low, high, q))
            }
            Domain::LogUniform { low, high } => float_value(log_uniform(rng, low, high).clamp(low, high)),
            Domain::QLogUniform { low, high, q } => float_value(quantize(log_uniform(rng, low, high), low, high, q)),
            Domain::RandInt { low, high } => Value::from(rng.random_range(low..high)),
            Domain::QRandInt { low, high, q } => {
                let first = low.div_euclid(q) + i64::from(low.rem_euclid(q) != 0);
                let last = high.div_euclid(q);
                Value::from(rng.random_range(first..=last) * q)
            }
            Domain::LogRandInt { low, high } => {
                let drawn = log_uniform(rng, low as f64, high as f64).floor() as i64;
                Value::from(drawn.clamp(low, high - 1))
            }
            Domain::Normal { mu, sigma } => {
                let z: f64 = StandardNormal.sample(rng);
                float_value(mu + sigma * z)
            }
            Domain::Choice(ref options) => {
                let index = rng.random_range(0..options.len());
                options[index].sample_at(name, rng, grid)
            }
            Domain::Grid(ref values) => match grid.get(name) {
                Some(value) => value.clone(),
                None => values[rng.random_range(0..values.len())].clone(),
            },
            Domain::Fixed(ref value) => value.clone(),
            Domain::Nested(ref space) => Value::Object(space.sample_map(name, rng, grid)),
        }
    }
}

fn float_value(value: f64) -> Value {
    serde_json::Number::from_f64(value)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn log_uniform(rng: &mut impl Rng, low: f64, high: f64) -> f64 {
    let (log_low, log_high) = (low.ln(), high.ln());
    (log_low + (log_high - log_low) * rng.random::<f64>()).exp()
}

/// Rounds `value` to the nearest multiple of `q` that lies in `[low, high]`.
fn quantize(value: f64, low: f64, high: f64, q: f64) -> f64 {
    let first = (low / q).ceil();
    let last = (high / q).floor();
    (value / q).round().clamp(first, last) * q
}

impl Space {
    /// An empty space.
    pub fn new() -> Self {
        Space::default()
    }

    /// Adds a parameter, validating its domain; a builder for Rust callers.
    pub fn with(mut self, name: &str, domain: Domain) -> Result<Self> {
        self.insert(name, domain)?;
        Ok(self)
    }

    /// Adds or replaces a parameter, validating its domain.
    pub fn insert(&mut self, name: &str, domain: Domain) -> Result<()> {
        check_name(name)?;
        domain.validate(name)?;
        self.params.insert(name.to_owned(), domain);
        Ok(())
    }

    /// The parameters in name order.
    pub fn params(&self) -> impl Iterator<Item = (&str, &Domain)> {
        self.params.iter().map(|(name, domain)| (name.as_str(), domain))
    }

    /// Whether the space has no parameter.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Every dotted name a config of this space can contain (through any choice option).
    pub fn parameter_names(&self) -> Vec<String> {
        fn walk(prefix: &str, domain: &Domain, out: &mut Vec<String>) {
            match domain {
                Domain::Nested(space) => {
                    for (name, inner) in &space.params {
                        walk(&format!("{prefix}.{name}"), inner, out);
                    }
                }
                Domain::Choice(options) => {
                    let mut leaf = false;
                    for option in options {
                        match option {
                            Domain::Nested(_) | Domain::Choice(_) => walk(prefix, option, out),
                            _ => leaf = true,
                        }
                    }
                    if leaf {
                        out.push(prefix.to_owned());
                    }
                }
                _ => out.push(prefix.to_owned()),
            }
        }
        let mut out = Vec::new();
        for (name, domain) in &self.params {
            walk(name, domain, &mut out);
        }
        out.sort();
        out.dedup();
        out
    }

    /// The grid parameters, in name order. Their cartesian product is what a grid sweep enumerates.
    pub fn grid_axes(&self) -> Vec<GridAxis> {
        fn walk(prefix: &str, space: &Space, out: &mut Vec<GridAxis>) {
            for (name, domain) in &space.params {
                let dotted = dotted(prefix, name);
                match domain {
                    Domain::Grid(values) => out.push(GridAxis {
                        name: dotted,
                        values: values.clone(),
                    }),
                    Domain::Nested(inner) => walk(&dotted, inner, out),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk("", self, &mut out);
        out
    }

    /// Number of points in the grid (1 when the space has no grid parameter).
    pub fn grid_size(&self) -> u64 {
        self.grid_axes().iter().map(|axis| axis.values.len() as u64).product()
    }

    /// The `index`-th grid point (indices wrap), the last axis varying fastest.
    pub fn grid_point(&self, index: u64) -> BTreeMap<String, Value> {
        let axes = self.grid_axes();
        let mut rest = index % self.grid_size().max(1);
        let mut point = BTreeMap::new();
        for axis in axes.iter().rev() {
            let len = axis.values.len() as u64;
            point.insert(axis.name.clone(), axis.values[(rest % len) as usize].clone());
            rest /= len;
        }
        point
    }

    /// Draws a configuration; grid parameters take the values of `grid` (see [`Space::grid_point`]).
    pub fn sample(&self, rng: &mut impl Rng, grid: &BTreeMap<String, Value>) -> Config {
        Config(self.sample_map("", rng, grid))
    }

    fn sample_map(
        &self,
        prefix: &str,
        rng: &mut impl Rng,
        grid: &BTreeMap<String, Value>,
    ) -> serde_json::Map<String, Value> {
        self.params
            .iter()
            .map(|(name, domain)| {
                let dotted = dotted(prefix, name);
                (name.clone(), domain.sample_at(&dotted, rng, grid))
            })
            .collect()
    }

    /// Whether every value of `config` could have been drawn from this space.
    pub fn contains(&self, config: &Config) -> bool {
        Domain::Nested(self.clone()).contains(&Value::Object(config.0.clone()))
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('.') || name.contains(['{', '}']) {
        return Err(Error::param(
            name,
            "a parameter name must be non-empty and contain no '.', '{' or '}'",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Spec-file form. Spaces are parsed through `Raw`, which keeps NaN and infinities (serde_json's
// Value would turn them into null) so that errors can name the bad value.

/// A value as written in a spec file.
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Raw>),
    Table(Vec<(String, Raw)>),
}

impl Raw {
    fn to_value(&self) -> Value {
        match self {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(*b),
            Raw::Int(i) => Value::from(*i),
            Raw::Float(f) => float_value(*f),
            Raw::Str(s) => Value::String(s.clone()),
            Raw::List(items) => Value::Array(items.iter().map(Raw::to_value).collect()),
            Raw::Table(entries) => Value::Object(entries.iter().map(|(k, v)| (k.clone(), v.to_value())).collect()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Raw::Float(f) => f.to_string(),
            other => other.to_value().to_string(),
        }
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;
        impl<'de> Visitor<'de> for RawVisitor {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
                Raw::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
                i64::try_from(v)
                    .map(Raw::Int)
                    .map_err(|_| E::custom(format!("integer {v} is too large")))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
                Ok(Raw::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Raw, E> {
                Ok(Raw::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Raw::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Raw>()? {
                    entries.push((key, value));
                }
                Ok(Raw::Table(entries))
            }
        }
        deserializer.deserialize_any(RawVisitor)
    }
}

fn parse_domain(param: &str, raw: &Raw) -> Result<Domain> {
    let Raw::Table(entries) = raw else {
        return Ok(Domain::Fixed(raw.to_value()));
    };
    if let [(key, args)] = entries.as_slice() {
        if DOMAIN_NAMES.contains(&key.as_str()) {
            return parse_named_domain(param, key, args);
        }
        if let Some(close) = DOMAIN_NAMES.iter().find(|known| edit_distance(known, key) <= 2)
            && matches!(args, Raw::List(_))
        {
            return Err(Error::param(
                param,
                format!("unknown domain \"{key}\" (did you mean \"{close}\"?)"),
            ));
        }
    }
    let mut space = Space::new();
    for (name, value) in entries {
        let dotted = format!("{param}.{name}");
        check_name(name).map_err(|_| {
            Error::param(
                &dotted,
                "a parameter name must be non-empty and contain no '.', '{' or '}'",
            )
        })?;
        space.params.insert(name.clone(), parse_domain(&dotted, value)?);
    }
    Ok(Domain::Nested(space))
}

fn parse_named_domain(param: &str, kind: &str, args: &Raw) -> Result<Domain> {
    let list = |expected: &str, len: usize| -> Result<&Vec<Raw>> {
        match args {
            Raw::List(items) if items.len() == len => Ok(items),
            Raw::List(items) => Err(Error::param(
                param,
                format!("{kind} takes {expected}, got {} values", items.len()),
            )),
            other => Err(Error::param(
                param,
                format!("{kind} takes {expected}, got {}", other.describe()),
            )),
        }
    };
    let float = |raw: &Raw, what: &str| -> Result<f64> {
        match raw {
            Raw::Int(i) => Ok(*i as f64),
            Raw::Float(f) => Ok(*f),
            other => Err(Error::param(
                param,
                format!("{kind} needs a number for {what}, got {}", other.describe()),
            )),
        }
    };
    let int = |raw: &Raw, what: &str| -> Result<i64> {
        match raw {
            Raw::Int(i) => Ok(*i),
            Raw::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(*f as i64),
            other => Err(Error::param(
                param,
                format!("{kind} needs an integer for {what}, got {}", other.describe()),
            )),
        }
    };
    let domain = match kind {
        "uniform" | "loguniform" | "normal" => {
            let items = list(if kind == "normal" { "[mu, sigma]" } else { "[low, high]" }, 2)?;
            let (a, b) = if kind == "normal" {
                ("mu", "sigma")
            } else {
                ("low", "high")
            };
            let (x, y) = (float(&items[0], a)?, float(&items[1], b)?);
            match kind {
                "uniform" => Domain::Uniform { low: x, high: y },
                "loguniform" => Domain::LogUniform { low: x, high: y },
                _ => Domain::Normal { mu: x, sigma: y },
            }
        }
        "quniform" | "qloguniform" => {
            let items = list("[low, high, q]", 3)?;
            let (low, high, q) = (
                float(&items[0], "low")?,
                float(&items[1], "high")?,
                float(&items[2], "q")?,
            );
            if kind == "quniform" {
                Domain::QUniform { low, high, q }
            } else {
                Domain::QLogUniform { low, high, q }
            }
        }
        "randint" | "lograndint" => {
            let items = list("[low, high]", 2)?;
            let (low, high) = (int(&items[0], "low")?, int(&items[1], "high")?);
            if kind == "randint" {
                Domain::RandInt { low, high }
            } else {
                Domain::LogRandInt { low, high }
            }
        }
        "qrandint" => {
            let items = list("[low, high, q]", 3)?;
            Domain::QRandInt {
                low: int(&items[0], "low")?,
                high: int(&items[1], "high")?,
                q: int(&items[2], "q")?,
            }
        }
        "choice" => {
            let Raw::List(items) = args else {
                return Err(Error::param(
                    param,
                    format!("choice takes a list of options, got {}", args.describe()),
                ));
            };
            let options = items
                .iter()
                .enumerate()
                .map(|(index, item)| parse_domain(&format!("{param}[{index}]"), item))
                .collect::<Result<Vec<_>>>()?;
            Domain::Choice(options)
        }
        "grid" => {
            let Raw::List(items) = args else {
                return Err(Error::param(
                    param,
                    format!("grid takes a list of values, got {}", args.describe()),
                ));
            };
            Domain::Grid(items.iter().map(Raw::to_value).collect())
        }
        "fixed" => Domain::Fixed(args.to_value()),
        _ => match parse_domain(param, args)? {
            nested @ Domain::Nested(_) => nested,
            other => {
                return Err(Error::param(
                    param,
                    format!("nested takes a table, got {}", other.kind()),
                ));
            }
        },
    };
    domain.validated(param)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

impl Space {
    /// Parses a space from its spec-file form given as JSON.
    pub fn from_json(value: &Value) -> Result<Self> {
        let raw: Raw =
            serde_json::from_value(value.clone()).map_err(|error| Error::setting("space", error.to_string()))?;
        Space::from_raw(&raw)
    }

    fn from_raw(raw: &Raw) -> Result<Self> {
        let Raw::Table(entries) = raw else {
            return Err(Error::setting(
                "space",
                format!("must be a table of parameters, got {}", raw.describe()),
            ));
        };
        let mut space = Space::new();
        for (name, value) in entries {
            check_name(name)?;
            space.params.insert(name.clone(), parse_domain(name, value)?);
        }
        Ok(space)
    }

    /// The spec-file form of the space, as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a space always serializes")
    }
}

impl<'de> Deserialize<'de> for Space {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Raw::deserialize(deserializer)?;
        Space::from_raw(&raw).map_err(de::Error::custom)
    }
}

impl Serialize for Domain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let args: Value = match self {
            Domain::Uniform { low, high } | Domain::LogUniform { low, high } => serde_json::json!([low, high]),
            Domain::QUniform { low, high, q } | Domain::QLogUniform { low, high, q } => {
                serde_json::json!([low, high, q])
            }
            Domain::RandInt { low, high } | Domain::LogRandInt { low, high } => serde_json::json!([low, high]),
            Domain::QRandInt { low, high, q } => serde_json::json!([low, high, q]),
            Domain::Normal { mu, sigma } => serde_json::json!([mu, sigma]),
            Domain::Choice(options) => serde_json::to_value(options).map_err(serde::ser::Error::custom)?,
            Domain::Grid(values) => Value::Array(values.clone()),
            Domain::Fixed(value) => {
                // A table fixed value must be escaped so it is not read back as a nested space.
                if !value.is_object() {
                    return value.serialize(serializer);
                }
                value.clone()
            }
            Domain::Nested(space) => return space.serialize(serializer),
        };
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.kind(), &args)?;
        map.end()
    }
}

impl Serialize for Space {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.params.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use serde_json::json;
    use statrs::distribution::{ChiSquared, ContinuousCDF};

    fn parse(value: Value) -> Result<Space> {
        Space::from_json(&value)
    }

    fn err(value: Value) -> String {
        parse(value).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_domain_and_round_trips() {
        let space = parse(json!({
            "a": {"uniform": [0, 1]}, "b": {"quniform": [0, 10, 0.5]}, "c": {"loguniform": [1e-5, 1e-1]},
            "d": {"qloguniform": [1, 1000, 1]}, "e": {"randint": [1, 8]}, "f": {"qrandint": [0, 100, 5]},
            "g": {"lograndint": [1, 1024]}, "h": {"normal": [0, 2]}, "i": {"choice": [16, "x", true]},
            "j": {"grid": [1, 2, 3]}, "k": "relu", "l": {"width": {"randint": [1, 4]}, "act": "tanh"},
            "m": {"fixed": {"uniform": [1, 2]}}
        }))
        .unwrap();
        assert_eq!(space.params.len(), 13);
        assert_eq!(space.params["e"], Domain::RandInt { low: 1, high: 8 });
        assert!(matches!(space.params["l"], Domain::Nested(_)));
        assert_eq!(Space::from_json(&space.to_json()).unwrap(), space);
    }

    #[test]
    fn invalid_domains_name_parameter_and_value() {
        let cases = [
            (
                json!({"lr": {"loguniform": [0, 0.1]}}),
                "parameter \"lr\": loguniform needs 0 < low < high, got low=0, high=0.1",
            ),
            (
                json!({"x": {"uniform": [2, 1]}}),
                "parameter \"x\": uniform needs low < high, got low=2, high=1",
            ),
            (
                json!({"x": {"quniform": [0, 1, 0]}}),
                "parameter \"x\": quniform needs q > 0, got q=0",
            ),
            (
                json!({"x": {"choice": []}}),
                "parameter \"x\": choice needs at least one option, got an empty list",
            ),
            (
                json!({"x": {"normal": [0, 0]}}),
                "parameter \"x\": normal needs sigma > 0, got sigma=0",
            ),
            (
                json!({"x": {"randint": [3, 3]}}),
                "parameter \"x\": randint needs low < high (high is exclusive), got low=3, high=3",
            ),
            (
                json!({"x": {"logunifrom": [1, 2]}}),
                "parameter \"x\": unknown domain \"logunifrom\" (did you mean \"loguniform\"?)",
            ),
            (
                json!({"x": {"uniform": [1]}}),
                "parameter \"x\": uniform takes [low, high], got 1 values",
            ),
            (
                json!({"x": {"randint": [1.5, 3]}}),
                "parameter \"x\": randint needs an integer for low, got 1.5",
            ),
            (
                json!({"opt": {"choice": [{"name": "sgd", "m": {"uniform": [1, 0]}}]}}),
                "parameter \"opt[0].m\": uniform needs low < high, got low=1, high=0",
            ),
            (
                json!({"x": {"qrandint": [1, 4, 5]}}),
                "parameter \"x\": qrandint has no multiple of q=5 in [1, 4]",
            ),
        ];
        for (spec, message) in cases {
            assert_eq!(err(spec), message);
        }
    }

    #[test]
    fn non_finite_bounds_are_named() {
        let toml_like: Raw = Raw::Table(vec![(
            "x".into(),
            Raw::Table(vec![(
                "uniform".into(),
                Raw::List(vec![Raw::Float(f64::NAN), Raw::Int(1)]),
            )]),
        )]);
        assert_eq!(
            Space::from_raw(&toml_like).unwrap_err().to_string(),
            "parameter \"x\": uniform needs finite low, got low=NaN"
        );
        assert_eq!(
            Domain::normal(0.0, f64::INFINITY).unwrap_err().to_string(),
            "parameter \"<unnamed>\": normal needs finite sigma, got sigma=inf"
        );
    }

    #[test]
    fn nested_conditional_choice_samples_branch_parameters() {
        let space = parse(json!({
            "optimizer": {"choice": [
                {"name": "sgd", "momentum": {"uniform": [0.0, 0.99]}},
                {"name": "adam", "beta1": {"uniform": [0.8, 0.99]}}
            ]}
        }))
        .unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut seen = (0, 0);
        for _ in 0..200 {
            let config = space.sample(&mut rng, &BTreeMap::new());
            match config.get("optimizer.name").and_then(Value::as_str) {
                Some("sgd") => {
                    seen.0 += 1;
                    assert!(config.get("optimizer.momentum").is_some() && config.get("optimizer.beta1").is_none());
                }
                Some("adam") => {
                    seen.1 += 1;
                    assert!(config.get("optimizer.beta1").is_some());
                }
                other => panic!("unexpected {other:?}"),
            }
            assert!(space.contains(&config));
        }
        assert!(seen.0 > 60 && seen.1 > 60, "{seen:?}");
        assert_eq!(
            space.parameter_names(),
            ["optimizer.beta1", "optimizer.momentum", "optimizer.name"]
        );
    }

    #[test]
    fn grid_points_enumerate_the_cartesian_product() {
        let space =
            parse(json!({"a": {"grid": [1, 2]}, "b": {"grid": ["x", "y", "z"]}, "c": {"uniform": [0, 1]}})).unwrap();
        assert_eq!(space.grid_size(), 6);
        let points: Vec<_> = (0..6)
            .map(|i| (space.grid_point(i)["a"].clone(), space.grid_point(i)["b"].clone()))
            .collect();
        assert_eq!(points[0], (json!(1), json!("x")));
        assert_eq!(points[1], (json!(1), json!("y")));
        assert_eq!(points[5], (json!(2), json!("z")));
        assert_eq!(space.grid_point(6), space.grid_point(0));
        assert!(err(json!({"o": {"choice": [{"k": {"grid": [1, 2]}}]}})).contains("contains a grid"));
    }

    proptest! {
        #[test]
        fn every_sample_lies_in_its_domain(domain in crate::testing::numeric_domain(), seed in any::<u64>()) {
            prop_assert!(domain.validate("p").is_ok(), "{domain:?}");
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            for _ in 0..32 {
                let value = domain.sample_at("p", &mut rng, &BTreeMap::new());
                prop_assert!(domain.contains(&value), "{value} not in {domain:?}");
            }
        }
    }

    /// Chi-square goodness of fit of `counts` against equal expected counts; returns the p-value.
    fn uniformity_p_value(counts: &[u64]) -> f64 {
        let total: u64 = counts.iter().sum();
        let expected = total as f64 / counts.len() as f64;
        let statistic: f64 = counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
        1.0 - ChiSquared::new((counts.len() - 1) as f64).unwrap().cdf(statistic)
    }

    #[test]
    fn loguniform_is_uniform_in_log_space() {
        let domain = Domain::loguniform(1e-5, 1e-1).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut counts = [0u64; 20];
        for _ in 0..40_000 {
            let value = domain.sample_at("lr", &mut rng, &BTreeMap::new()).as_f64().unwrap();
            let position = (value.log10() + 5.0) / 4.0;
            counts[((position * 20.0) as usize).min(19)] += 1;
        }
        let p = uniformity_p_value(&counts);
        assert!(
            p > 0.001,
            "log10 of loguniform samples is not uniform: p={p}, counts={counts:?}"
        );
        // The same samples are far from uniform on the linear scale: most fall in the top decade.
        assert!(counts[15..].iter().sum::<u64>() < 12_000);
    }

    #[test]
    fn randint_is_uniform_over_its_integers() {
        let domain = Domain::randint(1, 8).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let mut counts = [0u64; 7];
        for _ in 0..35_000 {
            let value = domain.sample_at("layers", &mut rng, &BTreeMap::new()).as_i64().unwrap();
            counts[(value - 1) as usize] += 1;
        }
        assert!(uniformity_p_value(&counts) > 0.001, "{counts:?}");
    }

    #[test]
    fn normal_has_its_mean_and_sigma() {
        let domain = Domain::normal(3.0, 0.5).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        let n = 50_000;
        let samples: Vec<f64> = (0..n)
            .map(|_| domain.sample_at("x", &mut rng, &BTreeMap::new()).as_f64().unwrap())
            .collect();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let sd = (samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
        // Standard error of the mean is 0.5/sqrt(50000) = 0.0022; allow 5 of them.
        assert!((mean - 3.0).abs() < 0.012, "mean {mean}");
        assert!((sd - 0.5).abs() < 0.01, "sd {sd}");
    }

    #[test]
    fn same_seed_same_configs() {
        let space = parse(json!({"lr": {"loguniform": [1e-5, 1e-1]}, "b": {"choice": [16, 32]}})).unwrap();
        let draw = |seed| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            (0..5)
                .map(|_| space.sample(&mut rng, &BTreeMap::new()))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }
}
