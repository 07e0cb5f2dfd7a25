//! What a trial asks for: one or more [`Bundle`]s in a [`ResourceRequest`], laid out over agents
//! by a [`Placement`], and [`Need`], a bundle in the exact integer units that sums and placement
//! compare.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::sizes::{format_size, parse_size};

/// Thousandths per unit: amounts of cpu, gpu and custom resources are kept as integer thousandths.
pub const MILLI: u64 = 1000;

/// The largest amount of cpu, gpu or a custom resource a bundle may ask for.
const LARGEST_AMOUNT: f64 = 1e12;

/// What one part of a trial needs on one agent: CPUs, GPUs (whole devices or a fraction of one),
/// memory and custom resources.
///
/// In a spec: `{ cpu = 2, gpu = 0.5, memory = "8GiB", custom = { nvme = 1 } }`; every key is
/// optional (`cpu` defaults to 1, the rest to 0) and unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// CPUs (may be fractional; 0 allowed).
    #[serde(default = "default_cpu")]
    pub cpu: f64,
    /// GPUs: a fraction of one device in (0, 1), or a whole number of devices.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gpu: f64,
    /// Memory in bytes; written as a size with a unit (`"8GiB"`) or a number of bytes.
    #[serde(default, with = "memory_text", skip_serializing_if = "is_zero_bytes")]
    pub memory: u64,
    /// Custom resources an agent advertises (`nvme = 1`), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, f64>,
}

fn default_cpu() -> f64 {
    1.0
}

fn is_zero(amount: &f64) -> bool {
    *amount == 0.0
}

fn is_zero_bytes(bytes: &u64) -> bool {
    *bytes == 0
}

impl Default for Bundle {
    fn default() -> Self {
        Bundle {
            cpu: default_cpu(),
            gpu: 0.0,
            memory: 0,
            custom: BTreeMap::new(),
        }
    }
}

impl Bundle {
    /// Checks that the bundle can be placed at all: every amount finite and at least 0, and
    /// `gpu` either a fraction below 1 or a whole number (both rounded to thousandths).
    pub fn validate(&self) -> Result<(), BundleError> {
        check_amount("cpu", self.cpu)?;
        check_amount("gpu", self.gpu)?;
        let gpu = to_milli(self.gpu);
        if self.gpu > 0.0 && gpu == 0 {
            return Err(BundleError::GpuTooSmall(self.gpu));
        }
        if gpu > MILLI && !gpu.is_multiple_of(MILLI) {
            return Err(BundleError::GpuNotWhole(self.gpu));
        }
        for (name, amount) in &self.custom {
            if name.trim().is_empty() {
                return Err(BundleError::EmptyCustomName);
            }
            if matches!(name.as_str(), "cpu" | "gpu" | "memory") {
                return Err(BundleError::CustomClashes(name.clone()));
            }
            check_amount(name, *amount)?;
        }
        Ok(())
    }

    /// A one-line summary such as `cpu=2, gpu=0.5, memory=8GiB, nvme=1` (zero gpu, memory and
    /// custom amounts are left out; cpu is always there).
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("cpu={}", self.cpu)];
        if self.gpu != 0.0 {
            parts.push(format!("gpu={}", self.gpu));
        }
        if self.memory != 0 {
            parts.push(format!("memory={}", format_size(self.memory)));
        }
        for (name, amount) in &self.custom {
            if *amount != 0.0 {
                parts.push(format!("{name}={amount}"));
            }
        }
        parts.join(", ")
    }
}

impl fmt::Display for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

fn check_amount(name: &str, amount: f64) -> Result<(), BundleError> {
    if !amount.is_finite() || amount < 0.0 {
        return Err(BundleError::NotAnAmount {
            name: name.to_owned(),
            amount,
        });
    }
    if amount > LARGEST_AMOUNT {
        return Err(BundleError::TooLarge {
            name: name.to_owned(),
            amount,
        });
    }
    Ok(())
}

/// Why a bundle or a resource request cannot be placed anywhere, whatever the agents hold.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BundleError {
    /// An amount is negative, NaN or infinite.
    #[error("{name} = {amount}: must be a finite number, at least 0")]
    NotAnAmount {
        /// The resource.
        name: String,
        /// The amount given.
        amount: f64,
    },
    /// An amount is beyond any machine.
    #[error("{name} = {amount}: is too large (at most 1e12)")]
    TooLarge {
        /// The resource.
        name: String,
        /// The amount given.
        amount: f64,
    },
    /// A GPU share rounds to nothing.
    #[error("gpu = {0}: a fraction of a GPU must be at least 0.001")]
    GpuTooSmall(f64),
    /// More than one GPU, but not a whole number of them.
    #[error("gpu = {0}: a fraction of a GPU must be below 1, and more than one GPU must be a whole number")]
    GpuNotWhole(f64),
    /// A custom resource without a name.
    #[error("custom resource names must not be empty")]
    EmptyCustomName,
    /// A custom resource named like a built-in one.
    #[error("custom resource \"{0}\" clashes with the built-in {0}: set {0} directly")]
    CustomClashes(String),
    /// A request without bundles.
    #[error("a resource request needs at least one bundle")]
    NoBundles,
    /// One bundle of several is invalid.
    #[error("bundle {position}: {error}")]
    InBundle {
        /// The bundle's index in the request.
        position: usize,
        /// What is wrong with it.
        error: Box<BundleError>,
    },
}

/// Rounds an amount to integer thousandths (negative and non-finite amounts count as 0).
pub fn to_milli(amount: f64) -> u64 {
    if amount.is_finite() && amount > 0.0 {
        (amount * MILLI as f64).round() as u64
    } else {
        0
    }
}

/// `memory` as a size string (`"8GiB"`), read from a string with a unit or a number of bytes.
mod memory_text {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_size(*bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(SizeVisitor)
    }

    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a size such as \"8GiB\" or a whole number of bytes")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
            super::parse_size(text).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<u64, E> {
            Ok(bytes)
        }

        fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<u64, E> {
            u64::try_from(bytes).map_err(|_| E::custom(format!("memory = {bytes}: must be at least 0 bytes")))
        }

        fn visit_f64<E: de::Error>(self, bytes: f64) -> Result<u64, E> {
            if bytes.is_finite() && bytes >= 0.0 && bytes.fract() == 0.0 && bytes < u64::MAX as f64 {
                return Ok(bytes as u64);
            }
            Err(E::custom(format!(
                "memory = {bytes}: a number of bytes must be a whole number, at least 0 (give a unit for fractions, such as \"1.5GiB\")"
            )))
        }
    }
}

/// How the bundles of one request are laid out over agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// All bundles on one agent.
    #[default]
    Pack,
    /// Each bundle on a different agent.
    Spread,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Placement::Pack => "pack",
            Placement::Spread => "spread",
        })
    }
}

/// What one trial asks for: its bundles and how they are laid out over agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRequest {
    /// The bundles, at least one.
    pub bundles: Vec<Bundle>,
    /// Pack (one agent) or spread (one agent per bundle).
    #[serde(default)]
    pub placement: Placement,
}

impl Default for ResourceRequest {
    /// One default bundle (`cpu = 1`), packed.
    fn default() -> Self {
        ResourceRequest {
            bundles: vec![Bundle::default()],
            placement: Placement::Pack,
        }
    }
}

impl ResourceRequest {
    /// The sum of all bundles (amounts summed in thousandths, so `0.1 + 0.2` is `0.3`).
    pub fn total(&self) -> Bundle {
        let needs: Vec<Need> = self.bundles.iter().map(Need::of).collect();
        Need::sum(&needs).to_bundle()
    }

    /// Checks that there is at least one bundle and that each is valid; a bundle's message is
    /// prefixed with its index (`bundle 1: ...`) when there are several.
    pub fn validate(&self) -> Result<(), BundleError> {
        if self.bundles.is_empty() {
            return Err(BundleError::NoBundles);
        }
        for (position, bundle) in self.bundles.iter().enumerate() {
            bundle.validate().map_err(|error| {
                if self.bundles.len() > 1 {
                    BundleError::InBundle {
                        position,
                        error: Box::new(error),
                    }
                } else {
                    error
                }
            })?;
        }
        Ok(())
    }
}

/// A bundle in integer units: thousandths of cpu, gpu and custom amounts, bytes of memory.
///
/// Sums and comparisons of amounts are done in these units, so that four 0.25 GPU shares fill a
/// device exactly and `0.1 + 0.2` is `0.3`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Need {
    /// CPUs, in thousandths.
    pub cpu: u64,
    /// GPUs, in thousandths (1000 = one whole device).
    pub gpu: u64,
    /// Memory in bytes.
    pub memory: u64,
    /// Custom resources by name, in thousandths; zero amounts are left out.
    pub custom: BTreeMap<String, u64>,
}

impl Need {
    /// A bundle's amounts, rounded to thousandths.
    pub fn of(bundle: &Bundle) -> Need {
        Need {
            cpu: to_milli(bundle.cpu),
            gpu: to_milli(bundle.gpu),
            memory: bundle.memory,
            custom: bundle
                .custom
                .iter()
                .map(|(name, amount)| (name.clone(), to_milli(*amount)))
                .filter(|(_, amount)| *amount > 0)
                .collect(),
        }
    }

    /// The sum of several needs (saturating, never wrapping).
    pub fn sum(needs: &[Need]) -> Need {
        let mut total = Need::default();
        for need in needs {
            total.cpu = total.cpu.saturating_add(need.cpu);
            total.gpu = total.gpu.saturating_add(need.gpu);
            total.memory = total.memory.saturating_add(need.memory);
            for (name, amount) in &need.custom {
                let entry = total.custom.entry(name.clone()).or_default();
                *entry = entry.saturating_add(*amount);
            }
        }
        total
    }

    /// Back to a bundle of (fractional) amounts.
    pub fn to_bundle(&self) -> Bundle {
        Bundle {
            cpu: self.cpu as f64 / MILLI as f64,
            gpu: self.gpu as f64 / MILLI as f64,
            memory: self.memory,
            custom: self
                .custom
                .iter()
                .map(|(name, amount)| (name.clone(), *amount as f64 / MILLI as f64))
                .collect(),
        }
    }

    /// Whole devices it needs (0 for a fraction or no GPU).
    pub fn whole_devices(&self) -> u64 {
        if self.gpu >= MILLI { self.gpu / MILLI } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{GIB, bundle, request};

    #[test]
    fn bundles_read_and_write_the_spec_form() {
        let bundle: Bundle =
            serde_json::from_str(r#"{"cpu": 2, "gpu": 0.5, "memory": "8GiB", "custom": {"nvme": 1}}"#).unwrap();
        assert_eq!(
            bundle,
            Bundle {
                cpu: 2.0,
                gpu: 0.5,
                memory: 8 * GIB,
                custom: BTreeMap::from([("nvme".to_owned(), 1.0)]),
            }
        );
        assert_eq!(
            serde_json::to_string(&bundle).unwrap(),
            r#"{"cpu":2.0,"gpu":0.5,"memory":"8GiB","custom":{"nvme":1.0}}"#
        );
        assert_eq!(serde_json::from_str::<Bundle>("{}").unwrap(), Bundle::default());
        assert_eq!(serde_json::to_string(&Bundle::default()).unwrap(), r#"{"cpu":1.0}"#);
        assert_eq!(
            serde_json::from_str::<Bundle>(r#"{"memory": 4096}"#).unwrap().memory,
            4096
        );
        let error = serde_json::from_str::<Bundle>(r#"{"gpus": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `gpus`"), "{error}");
        let error = serde_json::from_str::<Bundle>(r#"{"memory": "8 gigs"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("invalid size \"8 gigs\": unknown unit \"gigs\""),
            "{error}"
        );
        let error = serde_json::from_str::<Bundle>(r#"{"memory": -1}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("memory = -1: must be at least 0 bytes"), "{error}");
        let request: ResourceRequest =
            serde_json::from_str(r#"{"bundles": [{"gpu": 1}, {"gpu": 1}], "placement": "spread"}"#).unwrap();
        assert_eq!(request.placement, Placement::Spread);
        assert_eq!(request.total().gpu, 2.0);
    }

    #[test]
    fn invalid_bundles_are_named() {
        let check = |bundle: Bundle| bundle.validate().unwrap_err().to_string();
        assert_eq!(
            check(bundle(1.0, 1.5)),
            "gpu = 1.5: a fraction of a GPU must be below 1, and more than one GPU must be a whole number"
        );
        assert_eq!(
            check(bundle(1.0, -1.0)),
            "gpu = -1: must be a finite number, at least 0"
        );
        assert_eq!(
            check(bundle(f64::NAN, 0.0)),
            "cpu = NaN: must be a finite number, at least 0"
        );
        assert_eq!(
            check(bundle(f64::INFINITY, 0.0)),
            "cpu = inf: must be a finite number, at least 0"
        );
        assert_eq!(
            check(bundle(1e13, 0.0)),
            "cpu = 10000000000000: is too large (at most 1e12)"
        );
        assert_eq!(
            check(bundle(1.0, 0.0001)),
            "gpu = 0.0001: a fraction of a GPU must be at least 0.001"
        );
        let mut custom = Bundle::default();
        custom.custom.insert("nvme".into(), -2.0);
        assert_eq!(check(custom.clone()), "nvme = -2: must be a finite number, at least 0");
        custom.custom.clear();
        custom.custom.insert("gpu".into(), 1.0);
        assert_eq!(
            check(custom),
            "custom resource \"gpu\" clashes with the built-in gpu: set gpu directly"
        );
        for fine in [0.0, 0.25, 0.333, 0.9996, 1.0, 2.0, 1.0004, 8.0] {
            bundle(0.0, fine).validate().unwrap();
        }
        let two = request(vec![bundle(1.0, 1.0), bundle(1.0, 2.5)], Placement::Pack);
        assert_eq!(
            two.validate().unwrap_err().to_string(),
            "bundle 1: gpu = 2.5: a fraction of a GPU must be below 1, and more than one GPU must be a whole number"
        );
        assert_eq!(
            request(vec![], Placement::Pack).validate().unwrap_err().to_string(),
            "a resource request needs at least one bundle"
        );
    }
}
