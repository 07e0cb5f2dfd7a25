//! The space as the model sees it: the configuration's shape as a template tree, with a node
//! wherever the model decides something — a numeric axis (in model coordinates: the log axis
//! for log domains, a lattice for integer and quantized ones) or a categorical (a choice's or a
//! grid's option index) — and the grouping of the nodes into sets modelled jointly.
//!
//! A choice whose options hold further parameters makes conditional nodes: each records the
//! choice node and option under which it exists, which is what lets the model use only the
//! observations where a parameter is present.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use tune_core::space::{Domain, Space};
use tune_core::value::Config;

/// The compiled space: the template of a configuration, its nodes and their groups.
#[derive(Debug, Clone)]
pub(super) struct ModelSpace {
    /// The configuration's top-level table.
    pub(super) root: Vec<(String, Template)>,
    /// Every node; a choice's node comes before the nodes of its options.
    pub(super) nodes: Vec<Node>,
    /// The sets of nodes modelled jointly.
    pub(super) groups: Vec<Group>,
    /// The group of each node.
    pub(super) group_of: Vec<usize>,
}

impl ModelSpace {
    /// Compiles `space`, one group per node or, `multivariate`, one per condition.
    pub(super) fn new(space: &Space, multivariate: bool) -> ModelSpace {
        let mut nodes = Vec::new();
        let root = compile_space(space, None, &mut nodes);
        let (groups, group_of) = make_groups(&nodes, multivariate);
        ModelSpace {
            root,
            nodes,
            groups,
            group_of,
        }
    }

    /// Per node: `Some(options)` for a categorical, `None` for a numeric node.
    pub(super) fn options(&self) -> Vec<Option<usize>> {
        self.nodes
            .iter()
            .map(|node| match node.kind {
                NodeKind::Numeric(_) => None,
                NodeKind::Categorical(options) => Some(options),
            })
            .collect()
    }

    /// Encodes a configuration: per node its model coordinate (NaN where absent).
    pub(super) fn encode(&self, config: &Config) -> Vec<f64> {
        let mut row = vec![f64::NAN; self.nodes.len()];
        encode_table(&self.root, Some(&config.0), &self.nodes, &mut row);
        row
    }

    /// The configuration whose nodes take `values` (model coordinates and option indices).
    pub(super) fn build(&self, values: &[f64]) -> Config {
        Config(build_table(&self.root, &self.nodes, values))
    }
}

/// A numeric parameter's axis in model coordinates.
#[derive(Debug, Clone)]
pub(super) struct Axis {
    /// Modelled on ln(value).
    pub(super) log: bool,
    /// Discrete values `k · step` for `k` in `first..=last`.
    pub(super) lattice: Option<Lattice>,
    /// Truncation bounds (infinite for `normal`).
    pub(super) low: f64,
    /// The upper truncation bound.
    pub(super) high: f64,
    /// Prior centre and width; the width is also the bandwidth clip's scale.
    pub(super) prior_mu: f64,
    /// The prior's width.
    pub(super) prior_sigma: f64,
    domain: Domain,
}

/// The values of a discrete axis: `k · step` for `k` in `first..=last`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lattice {
    step: f64,
    first: f64,
    last: f64,
}

impl Axis {
    /// The axis of a numeric domain (`None` for any other).
    pub(super) fn new(domain: &Domain) -> Option<Axis> {
        let lattice = |step: f64, first: f64, last: f64| Some(Lattice { step, first, last });
        let (log, lattice) = match *domain {
            Domain::Uniform { .. } => (false, None),
            Domain::LogUniform { .. } => (true, None),
            Domain::QUniform { low, high, q } => (false, lattice(q, (low / q).ceil(), (high / q).floor())),
            Domain::QLogUniform { low, high, q } => (true, lattice(q, (low / q).ceil(), (high / q).floor())),
            Domain::RandInt { low, high } => (false, lattice(1.0, low as f64, (high - 1) as f64)),
            Domain::LogRandInt { low, high } => (true, lattice(1.0, low as f64, (high - 1) as f64)),
            Domain::QRandInt { low, high, q } => {
                let first = low.div_euclid(q) + i64::from(low.rem_euclid(q) != 0);
                (false, lattice(q as f64, first as f64, high.div_euclid(q) as f64))
            }
            Domain::Normal { mu, sigma } => {
                return Some(Axis {
                    log: false,
                    lattice: None,
                    low: f64::NEG_INFINITY,
                    high: f64::INFINITY,
                    prior_mu: mu,
                    prior_sigma: sigma,
                    domain: domain.clone(),
                });
            }
            _ => return None,
        };
        let warp = |value: f64| if log { value.ln() } else { value };
        let (low, high) = match (lattice, domain) {
            (Some(l), _) => (warp((l.first - 0.5) * l.step), warp((l.last + 0.5) * l.step)),
            (None, Domain::Uniform { low, high } | Domain::LogUniform { low, high }) => (warp(*low), warp(*high)),
            _ => unreachable!("every bounded continuous domain is uniform or log-uniform"),
        };
        Some(Axis {
            log,
            lattice,
            low,
            high,
            prior_mu: 0.5 * (low + high),
            prior_sigma: high - low,
            domain: domain.clone(),
        })
    }

    /// The lattice index nearest to model coordinate `x`.
    fn index(&self, lattice: Lattice, x: f64) -> f64 {
        let value = if self.log { x.exp() } else { x };
        (value / lattice.step).round().clamp(lattice.first, lattice.last)
    }

    fn coordinate(&self, lattice: Lattice, index: f64) -> f64 {
        let value = index * lattice.step;
        if self.log { value.ln() } else { value }
    }

    /// The nearest value the parameter can take, in model coordinates.
    pub(super) fn snap(&self, x: f64) -> f64 {
        match self.lattice {
            Some(lattice) => self.coordinate(lattice, self.index(lattice, x)),
            None => x.clamp(self.low, self.high),
        }
    }

    /// The bin of lattice point `x` in model coordinates.
    pub(super) fn bin(&self, lattice: Lattice, x: f64) -> (f64, f64) {
        let value = self.index(lattice, x) * lattice.step;
        let half = 0.5 * lattice.step;
        if self.log {
            ((value - half).ln(), (value + half).ln())
        } else {
            (value - half, value + half)
        }
    }

    /// A configuration value in model coordinates (NaN when it is not a usable number).
    fn encode(&self, value: &Value) -> f64 {
        let Some(value) = value.as_f64().filter(|value| value.is_finite()) else {
            return f64::NAN;
        };
        match self.lattice {
            Some(lattice) => {
                let index = (value / lattice.step).round().clamp(lattice.first, lattice.last);
                self.coordinate(lattice, index)
            }
            None if self.log => {
                if value > 0.0 {
                    value.ln().clamp(self.low, self.high)
                } else {
                    f64::NAN
                }
            }
            None => value.clamp(self.low, self.high),
        }
    }

    /// The configuration value at model coordinate `x`.
    fn value(&self, x: f64) -> Value {
        let index = |lattice: Option<Lattice>| self.index(lattice.expect("a discrete domain has a lattice"), x);
        match self.domain {
            Domain::Uniform { low, high } => {
                let value = x.clamp(low, high);
                Value::from(if value >= high { high.next_down() } else { value })
            }
            Domain::LogUniform { low, high } => Value::from(x.exp().clamp(low, high)),
            Domain::Normal { .. } => Value::from(x),
            Domain::QUniform { q, .. } | Domain::QLogUniform { q, .. } => Value::from(index(self.lattice) * q),
            Domain::RandInt { low, high } | Domain::LogRandInt { low, high } => {
                Value::from((index(self.lattice) as i64).clamp(low, high - 1))
            }
            Domain::QRandInt { q, .. } => Value::from(index(self.lattice) as i64 * q),
            _ => unreachable!("axes are built from numeric domains only"),
        }
    }
}

/// What a node models.
#[derive(Debug, Clone)]
pub(super) enum NodeKind {
    /// A number, on its axis.
    Numeric(Axis),
    /// A choice or grid: the option index.
    Categorical(usize),
}

/// A decision of the model: a numeric value or an option.
#[derive(Debug, Clone)]
pub(super) struct Node {
    /// What the node models.
    pub(super) kind: NodeKind,
    /// The choice node and option under which this node exists (`None` at the top).
    pub(super) condition: Option<(usize, usize)>,
}

impl Node {
    /// The axis of a numeric node.
    pub(super) fn axis(&self) -> Option<&Axis> {
        match &self.kind {
            NodeKind::Numeric(axis) => Some(axis),
            NodeKind::Categorical(_) => None,
        }
    }
}

/// The shape of a configuration, with a node wherever the model decides something.
#[derive(Debug, Clone)]
pub(super) enum Template {
    /// A value the model never changes.
    Fixed(Value),
    /// A numeric node.
    Numeric(usize),
    /// A choice node and, per option, the option and what it holds.
    Choice(usize, Vec<(Domain, Template)>),
    /// A grid node and its values.
    Grid(usize, Vec<Value>),
    /// A table of further parameters.
    Nested(Vec<(String, Template)>),
}

fn compile_space(space: &Space, condition: Option<(usize, usize)>, nodes: &mut Vec<Node>) -> Vec<(String, Template)> {
    space
        .params()
        .map(|(name, domain)| (name.to_owned(), compile_domain(domain, condition, nodes)))
        .collect()
}

fn compile_domain(domain: &Domain, condition: Option<(usize, usize)>, nodes: &mut Vec<Node>) -> Template {
    let mut add = |kind| {
        nodes.push(Node { kind, condition });
        nodes.len() - 1
    };
    match domain {
        Domain::Fixed(value) => Template::Fixed(value.clone()),
        Domain::Nested(inner) => Template::Nested(compile_space(inner, condition, nodes)),
        Domain::Choice(options) => {
            let node = add(NodeKind::Categorical(options.len()));
            let options = options
                .iter()
                .enumerate()
                .map(|(index, option)| (option.clone(), compile_domain(option, Some((node, index)), nodes)))
                .collect();
            Template::Choice(node, options)
        }
        Domain::Grid(values) => Template::Grid(add(NodeKind::Categorical(values.len())), values.clone()),
        numeric => {
            let axis = Axis::new(numeric).expect("every other domain is numeric");
            Template::Numeric(add(NodeKind::Numeric(axis)))
        }
    }
}

/// A set of nodes modelled jointly; univariate mode has one per node, multivariate mode one per
/// condition.
#[derive(Debug, Clone)]
pub(super) struct Group {
    /// The nodes, in node order.
    pub(super) nodes: Vec<usize>,
}

fn make_groups(nodes: &[Node], multivariate: bool) -> (Vec<Group>, Vec<usize>) {
    if !multivariate {
        let groups = (0..nodes.len()).map(|node| Group { nodes: vec![node] }).collect();
        return (groups, (0..nodes.len()).collect());
    }
    let mut by_condition: BTreeMap<Option<(usize, usize)>, usize> = BTreeMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut group_of = Vec::with_capacity(nodes.len());
    for (index, node) in nodes.iter().enumerate() {
        let group = *by_condition.entry(node.condition).or_insert_with(|| {
            groups.push(Group { nodes: Vec::new() });
            groups.len() - 1
        });
        groups[group].nodes.push(index);
        group_of.push(group);
    }
    (groups, group_of)
}

fn encode_table(table: &[(String, Template)], map: Option<&Map<String, Value>>, nodes: &[Node], row: &mut [f64]) {
    for (name, template) in table {
        encode_value(template, map.and_then(|map| map.get(name)), nodes, row);
    }
}

fn encode_value(template: &Template, value: Option<&Value>, nodes: &[Node], row: &mut [f64]) {
    match template {
        Template::Fixed(_) => {}
        Template::Nested(table) => encode_table(table, value.and_then(Value::as_object), nodes, row),
        Template::Numeric(node) => {
            if let (Some(value), Some(axis)) = (value, nodes[*node].axis()) {
                row[*node] = axis.encode(value);
            }
        }
        Template::Grid(node, values) => {
            if let Some(index) = value.and_then(|value| values.iter().position(|v| v == value)) {
                row[*node] = index as f64;
            }
        }
        Template::Choice(node, options) => {
            let Some(value) = value else { return };
            if let Some(index) = options.iter().position(|(domain, _)| domain.contains(value)) {
                row[*node] = index as f64;
                encode_value(&options[index].1, Some(value), nodes, row);
            }
        }
    }
}

fn build_table(table: &[(String, Template)], nodes: &[Node], values: &[f64]) -> Map<String, Value> {
    table
        .iter()
        .map(|(name, template)| (name.clone(), build_value(template, nodes, values)))
        .collect()
}

fn build_value(template: &Template, nodes: &[Node], values: &[f64]) -> Value {
    match template {
        Template::Fixed(value) => value.clone(),
        Template::Nested(table) => Value::Object(build_table(table, nodes, values)),
        Template::Numeric(node) => nodes[*node].axis().expect("a numeric node").value(values[*node]),
        Template::Grid(node, options) => options[values[*node] as usize].clone(),
        Template::Choice(node, options) => build_value(&options[values[*node] as usize].1, nodes, values),
    }
}
