//! Sampled configurations: nested JSON-like values with dotted names.

use serde::{Deserialize, Serialize};
pub use serde_json::Value;

/// The dotted name of `name` inside the table at `prefix`: `optimizer.lr`, or just `name` at
/// the top level (an empty `prefix`).
pub fn dotted(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A sampled configuration: a table of parameter names to values, possibly nested
/// (a `choice` whose options are tables yields a nested table).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Config(pub serde_json::Map<String, Value>);

impl Config {
    /// The value at a dotted path (`optimizer.lr`), if present.
    pub fn get(&self, dotted: &str) -> Option<&Value> {
        let mut parts = dotted.split('.');
        let mut current = self.0.get(parts.next()?)?;
        for part in parts {
            current = current.as_object()?.get(part)?;
        }
        Some(current)
    }

    /// Every leaf value with its dotted name, in name order.
    pub fn flatten(&self) -> Vec<(String, &Value)> {
        fn walk<'a>(prefix: &str, map: &'a serde_json::Map<String, Value>, out: &mut Vec<(String, &'a Value)>) {
            for (key, value) in map {
                let name = dotted(prefix, key);
                match value {
                    Value::Object(inner) => walk(&name, inner, out),
                    leaf => out.push((name, leaf)),
                }
            }
        }
        let mut out = Vec::new();
        walk("", &self.0, &mut out);
        out
    }

    /// The configuration as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("a config always serializes")
    }
}

/// How a value is written into a command-line placeholder: strings bare, numbers in their
/// shortest exact form, anything else as JSON.
pub fn value_to_arg(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_access_and_flatten() {
        let config: Config = serde_json::from_value(json!({
            "lr": 0.01, "optimizer": {"name": "sgd", "momentum": 0.9}
        }))
        .unwrap();
        assert_eq!(config.get("optimizer.momentum"), Some(&json!(0.9)));
        assert_eq!(config.get("optimizer.beta"), None);
        let names: Vec<String> = config.flatten().into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["lr", "optimizer.momentum", "optimizer.name"]);
        assert_eq!(value_to_arg(&json!(1e-5)), "0.00001");
        assert_eq!(value_to_arg(&json!("adam")), "adam");
    }
}
