//! Resources: what a trial asks for ([`Bundle`], [`ResourceRequest`]), what an agent's machine
//! has ([`Inventory`], [`GpuInfo`]), and the bin packing that places the one on the other
//! ([`Cluster`]).
//!
//! A bundle is `{cpu, gpu, memory, custom}`. `gpu` may be fractional: 0.25 means four trials
//! share one physical GPU. A fraction is never split across devices, and a whole number above
//! one gets that many distinct devices of one agent. A GPU split into MIG instances offers each
//! instance as a device (named by its MIG uuid) and not the GPU itself.
//!
//! A request holds one or more bundles and a [`Placement`]: `pack` puts them all on one agent,
//! `spread` each on a different agent. Placement is pure: the cluster keeps what every agent has
//! and what is allocated on it, and answers where a request fits now, or why it never can
//! ([`Unplaceable`]). Amounts are kept in integer thousandths, so four 0.25 shares fill a device
//! exactly and three 0.333 shares fit on one.
//!
//! ```
//! use tune_core::resources::{Bundle, Cluster, GpuInfo, Inventory, ResourceRequest};
//!
//! let mut cluster = Cluster::default();
//! let gpu = GpuInfo { index: 0, uuid: "GPU-0".into(), model: "H100".into(), ..GpuInfo::default() };
//! let inventory = Inventory { cpus: 16.0, memory: 64 << 30, gpus: vec![gpu], ..Inventory::default() };
//! cluster.add_agent("node-1", inventory);
//! let half = Bundle { gpu: 0.5, ..Bundle::default() };
//! let request = ResourceRequest { bundles: vec![half], ..ResourceRequest::default() };
//! let allocation = cluster.allocate(&request).unwrap();
//! assert_eq!(allocation.agents(), ["node-1"]);
//! assert_eq!(allocation.cuda_visible_devices(0), "0");
//! cluster.release(&allocation);
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Thousandths per unit: amounts of cpu, gpu and custom resources are kept as integer thousandths.
const MILLI: u64 = 1000;

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
    pub fn validate(&self) -> Result<(), String> {
        check_amount("cpu", self.cpu)?;
        check_amount("gpu", self.gpu)?;
        let gpu = to_milli(self.gpu);
        if self.gpu > 0.0 && gpu == 0 {
            return Err(format!(
                "gpu = {}: a fraction of a GPU must be at least 0.001",
                self.gpu
            ));
        }
        if gpu > MILLI && !gpu.is_multiple_of(MILLI) {
            return Err(format!(
                "gpu = {}: a fraction of a GPU must be below 1, and more than one GPU must be a whole number",
                self.gpu
            ));
        }
        for (name, amount) in &self.custom {
            if name.trim().is_empty() {
                return Err("custom resource names must not be empty".into());
            }
            if matches!(name.as_str(), "cpu" | "gpu" | "memory") {
                return Err(format!(
                    "custom resource \"{name}\" clashes with the built-in {name}: set {name} directly"
                ));
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

fn check_amount(name: &str, amount: f64) -> Result<(), String> {
    if !amount.is_finite() || amount < 0.0 {
        return Err(format!("{name} = {amount}: must be a finite number, at least 0"));
    }
    if amount > LARGEST_AMOUNT {
        return Err(format!("{name} = {amount}: is too large (at most 1e12)"));
    }
    Ok(())
}

/// Rounds an amount to integer thousandths (negative and non-finite amounts count as 0).
fn to_milli(amount: f64) -> u64 {
    if amount.is_finite() && amount > 0.0 {
        (amount * MILLI as f64).round() as u64
    } else {
        0
    }
}

/// Integer thousandths as a number: 2000 → `2`, 500 → `0.5`.
fn milli_text(milli: u64) -> String {
    format!("{}", milli as f64 / MILLI as f64)
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
    pub fn validate(&self) -> Result<(), String> {
        if self.bundles.is_empty() {
            return Err("a resource request needs at least one bundle".into());
        }
        for (position, bundle) in self.bundles.iter().enumerate() {
            bundle.validate().map_err(|message| {
                if self.bundles.len() > 1 {
                    format!("bundle {position}: {message}")
                } else {
                    message
                }
            })?;
        }
        Ok(())
    }
}

/// Sizes units accepted by [`parse_size`]: the SI ones are powers of 1000, the `i` ones of 1024.
const SIZE_UNITS: [(&str, u64); 25] = [
    ("B", 1),
    ("K", 1000),
    ("KB", 1000),
    ("Ki", 1 << 10),
    ("KiB", 1 << 10),
    ("M", 1_000_000),
    ("MB", 1_000_000),
    ("Mi", 1 << 20),
    ("MiB", 1 << 20),
    ("G", 1_000_000_000),
    ("GB", 1_000_000_000),
    ("Gi", 1 << 30),
    ("GiB", 1 << 30),
    ("T", 1_000_000_000_000),
    ("TB", 1_000_000_000_000),
    ("Ti", 1 << 40),
    ("TiB", 1 << 40),
    ("P", 1_000_000_000_000_000),
    ("PB", 1_000_000_000_000_000),
    ("Pi", 1 << 50),
    ("PiB", 1 << 50),
    ("E", 1_000_000_000_000_000_000),
    ("EB", 1_000_000_000_000_000_000),
    ("Ei", 1 << 60),
    ("EiB", 1 << 60),
];

/// Parses a size in bytes: a number with an optional unit, such as `"64GiB"`, `"512MiB"`,
/// `"1.5GiB"`, `"8GB"` or `"4096"`.
///
/// As in Kubernetes, `K`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB` (and `P`, `E`) are powers of 1000
/// and `Ki`/`KiB`, `Mi`/`MiB`, `Gi`/`GiB`, `Ti`/`TiB` (and `Pi`, `Ei`) powers of 1024; `B` or no
/// unit means bytes. Units are case-insensitive and may follow a space. A fraction is rounded to
/// the nearest byte; a bare number must be whole.
///
/// ```
/// use tune_core::resources::parse_size;
///
/// assert_eq!(parse_size("1.5GiB"), Ok(1_610_612_736));
/// assert_eq!(parse_size("8GB"), Ok(8_000_000_000));
/// assert!(parse_size("8 gigs").unwrap_err().contains("unknown unit \"gigs\""));
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("invalid size {text:?}: it is empty"));
    }
    let number_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(format!(
            "invalid size {text:?}: expected a number of bytes with an optional unit, such as \"512MiB\" or \"8GB\""
        ));
    }
    let unit = unit.trim_start();
    let multiplier = if unit.is_empty() {
        1
    } else {
        SIZE_UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
            .map(|(_, multiplier)| *multiplier)
            .ok_or_else(|| {
                format!(
                    "invalid size {text:?}: unknown unit {unit:?} (known: B, KB, KiB, MB, MiB, GB, GiB, TB, TiB, PB, PiB, EB, EiB)"
                )
            })?
    };
    let too_large = || format!("invalid size {text:?}: too large (at most {} bytes)", u64::MAX);
    let whole_bytes = if whole.is_empty() {
        0
    } else {
        whole
            .parse::<u128>()
            .map_err(|_| too_large())?
            .checked_mul(u128::from(multiplier))
            .ok_or_else(too_large)?
    };
    // Beyond 18 digits a fraction changes nothing once rounded to bytes (units are below 2^61).
    let fraction = &fraction[..fraction.len().min(18)];
    let fraction_bytes = if fraction.trim_end_matches('0').is_empty() {
        0
    } else {
        if multiplier == 1 {
            return Err(format!(
                "invalid size {text:?}: a number of bytes must be whole (give a unit for fractions, such as \"1.5GiB\")"
            ));
        }
        let scale = 10u128.pow(fraction.len() as u32);
        let numerator: u128 = fraction.parse().expect("at most 18 ASCII digits");
        (numerator * u128::from(multiplier) + scale / 2) / scale
    };
    u64::try_from(whole_bytes + fraction_bytes).map_err(|_| too_large())
}

/// A size for people, rounded to one decimal in the largest binary unit it reaches: `79.6GiB`,
/// `64GiB`, `512MiB`, `100B`. ([`format_size`] is exact and so can be long.)
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 7] = [
        ("EiB", 1 << 60),
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ];
    let Some(position) = UNITS.iter().position(|(_, size)| bytes >= *size) else {
        return "0B".to_owned();
    };
    let tenths = |(_, size): (&str, u64)| (bytes as f64 / size as f64 * 10.0).round();
    // 1023.96MiB rounds to 1024MiB: say 1GiB instead.
    let position = if position > 0 && tenths(UNITS[position]) >= 10240.0 {
        position - 1
    } else {
        position
    };
    let (unit, _) = UNITS[position];
    let tenths = tenths(UNITS[position]) as u64;
    match tenths % 10 {
        0 => format!("{}{unit}", tenths / 10),
        decimal => format!("{}.{decimal}{unit}", tenths / 10),
    }
}

/// Writes a size with the unit that gives the shortest exact text: `"8GiB"`, `"1.5GiB"`,
/// `"512MiB"`, `"8GB"`, `"100B"`. Binary units win ties; [`parse_size`] reads every output
/// back to the same number of bytes.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 12] = [
        ("EiB", 1 << 60),
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("EB", 1_000_000_000_000_000_000),
        ("PB", 1_000_000_000_000_000),
        ("TB", 1_000_000_000_000),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1000),
    ];
    let mut best = format!("{bytes}B");
    for (unit, size) in UNITS {
        if bytes < size {
            continue;
        }
        // Exact to three decimals, so the text reads back to the same bytes.
        let thousandths = u128::from(bytes) * 1000;
        if thousandths % u128::from(size) != 0 {
            continue;
        }
        let thousandths = thousandths / u128::from(size);
        let text = format!("{}{}{unit}", thousandths / 1000, decimals(thousandths % 1000));
        if text.len() < best.len() {
            best = text;
        }
    }
    best
}

/// `.5`, `.25`, `.125` for thousandths 500, 250, 125; empty for 0.
fn decimals(thousandths: u128) -> String {
    if thousandths == 0 {
        return String::new();
    }
    format!(".{thousandths:03}").trim_end_matches('0').to_owned()
}

/// One MIG instance of a GPU: a schedulable device of its own.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MigInfo {
    /// The MIG uuid (`MIG-...`), which is what `CUDA_VISIBLE_DEVICES` names.
    pub uuid: String,
    /// The profile, such as `1g.10gb`.
    pub name: String,
    /// Memory in bytes.
    pub memory: u64,
}

/// One physical GPU of an agent's machine.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuInfo {
    /// The device index (as `nvidia-smi` numbers it).
    pub index: u32,
    /// The GPU uuid (`GPU-...`).
    pub uuid: String,
    /// The model name, such as `NVIDIA H100 80GB HBM3`.
    pub model: String,
    /// Memory in bytes.
    pub memory: u64,
    /// Its MIG instances; when there are any, they are the devices trials get, not the GPU.
    pub mig: Vec<MigInfo>,
}

/// What an agent's machine has to offer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Inventory {
    /// CPUs.
    pub cpus: f64,
    /// Memory in bytes.
    pub memory: u64,
    /// GPUs.
    pub gpus: Vec<GpuInfo>,
    /// Custom resources by name (`nvme = 2`).
    pub custom: BTreeMap<String, f64>,
}

impl Inventory {
    /// A one-line summary such as `16 CPUs, 128GiB, 2 GPUs (H100 80GB HBM3 x2)`.
    pub fn describe(&self) -> String {
        let plural = |count: f64| if count == 1.0 { "" } else { "s" };
        let mut parts = vec![
            format!("{} CPU{}", self.cpus, plural(self.cpus)),
            human_size(self.memory),
        ];
        if !self.gpus.is_empty() {
            let mut models: Vec<(&str, usize)> = Vec::new();
            for gpu in &self.gpus {
                let model = if gpu.model.is_empty() {
                    "unknown model"
                } else {
                    &gpu.model
                };
                match models.iter_mut().find(|(name, _)| *name == model) {
                    Some((_, count)) => *count += 1,
                    None => models.push((model, 1)),
                }
            }
            let models: Vec<String> = models
                .into_iter()
                .map(|(model, count)| {
                    if count > 1 {
                        format!("{model} x{count}")
                    } else {
                        model.to_owned()
                    }
                })
                .collect();
            let mig: usize = self.gpus.iter().map(|gpu| gpu.mig.len()).sum();
            let mig = match mig {
                0 => String::new(),
                1 => "; 1 MIG instance".into(),
                _ => format!("; {mig} MIG instances"),
            };
            let count = self.gpus.len();
            parts.push(format!(
                "{count} GPU{} ({}{mig})",
                plural(count as f64),
                models.join(", ")
            ));
        }
        for (name, amount) in &self.custom {
            parts.push(format!("{name}={amount}"));
        }
        parts.join(", ")
    }
}

/// A share of one device given to a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuShare {
    /// What goes in `CUDA_VISIBLE_DEVICES`: the GPU index as a decimal string, or a MIG uuid.
    pub device: String,
    /// The index of the (parent) GPU.
    pub index: u32,
    /// The share of the device: 1 for a whole device, or the bundle's fraction.
    pub share: f64,
}

/// Where one bundle of a request was placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundlePlacement {
    /// The agent that runs it.
    pub agent: String,
    /// The bundle placed (what [`Cluster::release`] gives back).
    pub bundle: Bundle,
    /// The devices it gets (none when the bundle asks for no GPU).
    pub gpus: Vec<GpuShare>,
}

/// Where every bundle of a request was placed, in request order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Allocation {
    /// One placement per bundle, in request order.
    pub bundles: Vec<BundlePlacement>,
}

impl Allocation {
    /// The agents used, each once, in order of first use.
    pub fn agents(&self) -> Vec<&str> {
        let mut agents: Vec<&str> = Vec::new();
        for placement in &self.bundles {
            if !agents.contains(&placement.agent.as_str()) {
                agents.push(&placement.agent);
            }
        }
        agents
    }

    /// The `CUDA_VISIBLE_DEVICES` value for a bundle: its device ids joined by commas; empty
    /// when it has no GPU (or there is no such bundle).
    pub fn cuda_visible_devices(&self, bundle: usize) -> String {
        let Some(placement) = self.bundles.get(bundle) else {
            return String::new();
        };
        let devices: Vec<&str> = placement.gpus.iter().map(|share| share.device.as_str()).collect();
        devices.join(",")
    }
}

/// Why a request cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unplaceable {
    /// No agent is registered at all.
    #[error("no agent is registered")]
    NoAgents,
    /// It fits the registered agents, but not beside what is allocated now.
    #[error("waiting for free resources")]
    NotNow,
    /// No registered agent could ever hold it, even with nothing allocated; the reason says why.
    #[error("{0}")]
    Never(String),
}

/// A bundle in integer units: thousandths of cpu, gpu and custom amounts, bytes of memory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Need {
    cpu: u64,
    gpu: u64,
    memory: u64,
    custom: BTreeMap<String, u64>,
}

impl Need {
    fn of(bundle: &Bundle) -> Need {
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

    fn sum(needs: &[Need]) -> Need {
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

    fn to_bundle(&self) -> Bundle {
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
    fn whole_devices(&self) -> u64 {
        if self.gpu >= MILLI { self.gpu / MILLI } else { 0 }
    }
}

/// A schedulable device: a GPU without MIG, or one MIG instance.
#[derive(Debug, Clone, PartialEq)]
struct Device {
    id: String,
    index: u32,
    /// Free share in thousandths (1000 = the whole device).
    free: u64,
}

/// An agent's amounts in integer units: its totals, or what is free of them.
#[derive(Debug, Clone, PartialEq)]
struct Capacity {
    cpu: u64,
    memory: u64,
    custom: BTreeMap<String, u64>,
    devices: Vec<Device>,
}

/// Device positions (in [`Capacity::devices`]) and the thousandths taken of each.
type Shares = Vec<(usize, u64)>;

impl Capacity {
    fn of(inventory: &Inventory) -> Capacity {
        let mut gpus: Vec<&GpuInfo> = inventory.gpus.iter().collect();
        gpus.sort_by_key(|gpu| gpu.index);
        let mut devices = Vec::new();
        for gpu in gpus {
            if gpu.mig.is_empty() {
                devices.push(Device {
                    id: gpu.index.to_string(),
                    index: gpu.index,
                    free: MILLI,
                });
            } else {
                devices.extend(gpu.mig.iter().map(|mig| Device {
                    id: mig.uuid.clone(),
                    index: gpu.index,
                    free: MILLI,
                }));
            }
        }
        Capacity {
            cpu: to_milli(inventory.cpus),
            memory: inventory.memory,
            custom: inventory
                .custom
                .iter()
                .map(|(name, amount)| (name.clone(), to_milli(*amount)))
                .collect(),
            devices,
        }
    }

    fn gpu_free(&self) -> u64 {
        self.devices.iter().map(|device| device.free).sum()
    }

    fn custom(&self, name: &str) -> u64 {
        self.custom.get(name).copied().unwrap_or(0)
    }

    /// Places one bundle, taking what it uses; `None` (and nothing taken) when it does not fit.
    /// A fraction goes to the device with the least free share that still holds it (lowest
    /// position on a tie); a whole number n to the first n completely free devices.
    fn take(&mut self, need: &Need) -> Option<Shares> {
        if need.cpu > self.cpu || need.memory > self.memory {
            return None;
        }
        if need.custom.iter().any(|(name, amount)| *amount > self.custom(name)) {
            return None;
        }
        let shares: Shares = if need.gpu == 0 {
            Vec::new()
        } else if need.gpu < MILLI {
            let (position, _) = self
                .devices
                .iter()
                .enumerate()
                .filter(|(_, device)| device.free >= need.gpu)
                .min_by_key(|(position, device)| (device.free, *position))?;
            vec![(position, need.gpu)]
        } else {
            let count = usize::try_from(need.whole_devices()).unwrap_or(usize::MAX);
            let free: Shares = self
                .devices
                .iter()
                .enumerate()
                .filter(|(_, device)| device.free == MILLI)
                .map(|(position, _)| (position, MILLI))
                .take(count)
                .collect();
            if free.len() < count {
                return None;
            }
            free
        };
        self.withdraw(need, &shares);
        Some(shares)
    }

    /// Takes a placed bundle's amounts.
    fn withdraw(&mut self, need: &Need, shares: &[(usize, u64)]) {
        debug_assert!(
            need.cpu <= self.cpu && need.memory <= self.memory,
            "withdrawing more than is free"
        );
        self.cpu = self.cpu.saturating_sub(need.cpu);
        self.memory = self.memory.saturating_sub(need.memory);
        for (name, amount) in &need.custom {
            let free = self.custom.entry(name.clone()).or_default();
            debug_assert!(*amount <= *free, "withdrawing more {name} than is free");
            *free = free.saturating_sub(*amount);
        }
        for (position, share) in shares {
            let device = &mut self.devices[*position];
            debug_assert!(
                *share <= device.free,
                "withdrawing more of device {} than is free",
                device.id
            );
            device.free = device.free.saturating_sub(*share);
        }
    }

    /// Gives back a placed bundle's amounts, never above `total`.
    fn deposit(&mut self, need: &Need, shares: &[(usize, u64)], total: &Capacity) {
        self.cpu = self.cpu.saturating_add(need.cpu);
        debug_assert!(self.cpu <= total.cpu, "released more cpu than the agent has");
        self.cpu = self.cpu.min(total.cpu);
        self.memory = self.memory.saturating_add(need.memory);
        debug_assert!(self.memory <= total.memory, "released more memory than the agent has");
        self.memory = self.memory.min(total.memory);
        for (name, amount) in &need.custom {
            let limit = total.custom(name);
            let free = self.custom.entry(name.clone()).or_default();
            *free = free.saturating_add(*amount);
            debug_assert!(*free <= limit, "released more {name} than the agent has");
            *free = (*free).min(limit);
        }
        for (position, share) in shares {
            let device = &mut self.devices[*position];
            device.free = device.free.saturating_add(*share);
            debug_assert!(
                device.free <= MILLI,
                "released more of device {} than it has",
                device.id
            );
            device.free = device.free.min(MILLI);
        }
    }
}

/// One bundle held on an agent, as committed.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    need: Need,
    shares: Shares,
}

/// An agent as the cluster keeps it.
#[derive(Debug, Clone)]
struct AgentState {
    inventory: Inventory,
    total: Capacity,
    free: Capacity,
    held: Vec<Held>,
}

impl AgentState {
    fn capacity(&self, view: View) -> &Capacity {
        match view {
            View::Free => &self.free,
            View::Total => &self.total,
        }
    }

    /// The device positions of a placement's shares; `None` when one names no device here.
    fn shares_of(&self, placement: &BundlePlacement) -> Option<Shares> {
        placement
            .gpus
            .iter()
            .map(|share| {
                let position = self.total.devices.iter().position(|device| device.id == share.device)?;
                Some((position, to_milli(share.share)))
            })
            .collect()
    }
}

/// Whether to place against what is free now or against an agent's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Free,
    Total,
}

/// The registered agents, what each has, and what is allocated on each: the bin packer.
///
/// [`place`](Cluster::place) answers where a request fits without taking anything,
/// [`allocate`](Cluster::allocate) also takes it, and [`release`](Cluster::release) gives it
/// back.
///
/// Pack puts the whole request on the agent that fits it with the least free capacity left
/// (best fit, compared by free GPU share, then CPUs, then memory; ties by name), so trials
/// pack tightly and CPU-only trials keep off GPU machines. Spread puts each bundle on a
/// different agent, preferring the agents with the most free capacity (by GPU, CPUs and
/// memory for a bundle that asks for a GPU; by CPUs and memory otherwise; ties by name).
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    agents: BTreeMap<String, AgentState>,
}

impl Cluster {
    /// Registers an agent; re-adding a name replaces it, with nothing allocated.
    pub fn add_agent(&mut self, name: &str, inventory: Inventory) {
        let total = Capacity::of(&inventory);
        self.agents.insert(
            name.to_owned(),
            AgentState {
                inventory,
                free: total.clone(),
                total,
                held: Vec::new(),
            },
        );
    }

    /// Unregisters an agent; whether it was registered.
    pub fn remove_agent(&mut self, name: &str) -> bool {
        self.agents.remove(name).is_some()
    }

    /// The registered agents and their inventories, by name.
    pub fn agents(&self) -> impl Iterator<Item = (&str, &Inventory)> {
        self.agents
            .iter()
            .map(|(name, agent)| (name.as_str(), &agent.inventory))
    }

    /// Whether no agent is registered.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// How many agents are registered.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// An agent's inventory.
    pub fn inventory(&self, agent: &str) -> Option<&Inventory> {
        self.agents.get(agent).map(|state| &state.inventory)
    }

    /// What is free on an agent now, as a bundle (`gpu` is the sum of free device shares).
    pub fn free(&self, agent: &str) -> Option<Bundle> {
        let free = &self.agents.get(agent)?.free;
        Some(Bundle {
            cpu: free.cpu as f64 / MILLI as f64,
            gpu: free.gpu_free() as f64 / MILLI as f64,
            memory: free.memory,
            custom: free
                .custom
                .iter()
                .map(|(name, amount)| (name.clone(), *amount as f64 / MILLI as f64))
                .collect(),
        })
    }

    /// Each device of an agent (id as in `CUDA_VISIBLE_DEVICES`) and the share allocated on it,
    /// in device order; empty for an unknown agent.
    pub fn device_use(&self, agent: &str) -> Vec<(String, f64)> {
        let Some(state) = self.agents.get(agent) else {
            return Vec::new();
        };
        state
            .free
            .devices
            .iter()
            .map(|device| (device.id.clone(), (MILLI - device.free) as f64 / MILLI as f64))
            .collect()
    }

    /// Where the request fits now, without allocating it.
    ///
    /// [`Unplaceable::NotNow`] when it fits the registered agents but not beside what is
    /// allocated; [`Unplaceable::Never`] when it cannot fit even with nothing allocated (or the
    /// request is invalid); [`Unplaceable::NoAgents`] when no agent is registered.
    pub fn place(&self, request: &ResourceRequest) -> Result<Allocation, Unplaceable> {
        if let Err(message) = request.validate() {
            return Err(Unplaceable::Never(message));
        }
        if self.agents.is_empty() {
            return Err(Unplaceable::NoAgents);
        }
        if let Some(allocation) = self.try_place(request, View::Free) {
            return Ok(allocation);
        }
        Err(match self.never_fits(request) {
            Some(reason) => Unplaceable::Never(reason),
            None => Unplaceable::NotNow,
        })
    }

    /// Places the request (see [`place`](Cluster::place)) and takes what it uses.
    pub fn allocate(&mut self, request: &ResourceRequest) -> Result<Allocation, Unplaceable> {
        let allocation = self.place(request)?;
        for placement in &allocation.bundles {
            let agent = self
                .agents
                .get_mut(&placement.agent)
                .expect("placed on a registered agent");
            let shares = agent.shares_of(placement).expect("placed on the agent's devices");
            let held = Held {
                need: Need::of(&placement.bundle),
                shares,
            };
            agent.free.withdraw(&held.need, &held.shares);
            agent.held.push(held);
        }
        Ok(allocation)
    }

    /// Takes again what an allocation the cluster does not hold uses, such as the allocations of
    /// trials still running on an agent that was re-added (which empties it) or that a restarted
    /// server recovers. All or nothing: when a placement's agent is not registered, names a
    /// device the agent lacks, or needs more than is free, nothing is taken and the error says
    /// which. Reserving an allocation that is already held takes its amounts twice.
    pub fn reserve(&mut self, allocation: &Allocation) -> Result<(), String> {
        let mut free: BTreeMap<&str, Capacity> = BTreeMap::new();
        let mut held: Vec<(&str, Held)> = Vec::new();
        for placement in &allocation.bundles {
            let name = placement.agent.as_str();
            let Some(agent) = self.agents.get(name) else {
                return Err(format!("agent \"{name}\" is not registered"));
            };
            let Some(shares) = agent.shares_of(placement) else {
                let missing = placement
                    .gpus
                    .iter()
                    .find(|share| agent.total.devices.iter().all(|device| device.id != share.device))
                    .map_or("?", |share| share.device.as_str());
                return Err(format!(
                    "agent \"{name}\" has no device {missing} (it has {})",
                    agent.inventory.describe()
                ));
            };
            let need = Need::of(&placement.bundle);
            let left = free.entry(name).or_insert_with(|| agent.free.clone());
            let mut used = vec![0; left.devices.len()];
            for (position, share) in &shares {
                used[*position] += share;
            }
            let fits = need.cpu <= left.cpu
                && need.memory <= left.memory
                && need
                    .custom
                    .iter()
                    .all(|(resource, amount)| *amount <= left.custom(resource))
                && used
                    .iter()
                    .zip(&left.devices)
                    .all(|(share, device)| *share <= device.free);
            if !fits {
                return Err(format!(
                    "agent \"{name}\" does not have {} free on devices [{}]",
                    placement.bundle.describe(),
                    placement
                        .gpus
                        .iter()
                        .map(|share| share.device.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ));
            }
            left.withdraw(&need, &shares);
            held.push((name, Held { need, shares }));
        }
        for (name, left) in free {
            self.agents.get_mut(name).expect("checked above").free = left;
        }
        for (name, held) in held {
            self.agents.get_mut(name).expect("checked above").held.push(held);
        }
        Ok(())
    }

    /// Gives back what an allocation took. A placement that is not held (already released, on
    /// an agent that was removed, or from before the agent was re-added) is skipped.
    pub fn release(&mut self, allocation: &Allocation) {
        for placement in &allocation.bundles {
            let Some(agent) = self.agents.get_mut(&placement.agent) else {
                continue;
            };
            let Some(shares) = agent.shares_of(placement) else {
                continue;
            };
            let held = Held {
                need: Need::of(&placement.bundle),
                shares,
            };
            let Some(position) = agent.held.iter().position(|other| *other == held) else {
                continue;
            };
            agent.held.swap_remove(position);
            agent.free.deposit(&held.need, &held.shares, &agent.total);
        }
    }

    /// Why no registered agent could ever hold the request, judged on their totals with
    /// nothing allocated; `None` when it fits them (or no agent is registered yet).
    pub fn never_fits(&self, request: &ResourceRequest) -> Option<String> {
        if let Err(message) = request.validate() {
            return Some(message);
        }
        if self.agents.is_empty() || self.try_place(request, View::Total).is_some() {
            return None;
        }
        let needs: Vec<Need> = request.bundles.iter().map(Need::of).collect();
        match request.placement {
            Placement::Pack => Some(self.shortfall(&needs).unwrap_or_else(|| {
                format!(
                    "needs {} on one agent; no agent has all of it",
                    Need::sum(&needs).to_bundle().describe()
                )
            })),
            Placement::Spread => {
                let registered = self.agents.len();
                if needs.len() > registered {
                    let verb = if registered == 1 { "is" } else { "are" };
                    return Some(format!(
                        "spread needs {} agents; {registered} {verb} registered",
                        needs.len()
                    ));
                }
                for (position, need) in needs.iter().enumerate() {
                    if let Some(reason) = self.shortfall(std::slice::from_ref(need)) {
                        return Some(if needs.len() > 1 {
                            format!("bundle {position}: {reason}")
                        } else {
                            reason
                        });
                    }
                }
                let matched = self.spread(&needs, View::Total).iter().flatten().count();
                Some(format!(
                    "spread needs {} agents that each hold one bundle; only {matched} can",
                    needs.len()
                ))
            }
        }
    }

    /// Which single amount of the summed needs exceeds every agent's total, phrased for a user.
    fn shortfall(&self, needs: &[Need]) -> Option<String> {
        let sum = Need::sum(needs);
        let totals = || self.agents.values().map(|agent| &agent.total);
        let largest_cpu = totals().map(|total| total.cpu).max().unwrap_or(0);
        if sum.cpu > largest_cpu {
            return Some(format!(
                "needs cpu={} on one agent; largest agent has {}",
                milli_text(sum.cpu),
                milli_text(largest_cpu)
            ));
        }
        if sum.gpu > 0 {
            let most_devices = totals().map(|total| total.devices.len()).max().unwrap_or(0) as u64;
            let whole: u64 = needs.iter().map(Need::whole_devices).sum();
            let fractions: u64 = needs.iter().filter(|need| need.gpu < MILLI).map(|need| need.gpu).sum();
            let devices = whole + fractions.div_ceil(MILLI);
            if most_devices == 0 {
                return Some(format!(
                    "needs gpu={} on one agent; no agent has a GPU",
                    milli_text(sum.gpu)
                ));
            }
            if devices > most_devices {
                return Some(format!(
                    "needs gpu={} on one agent; largest agent has {most_devices}",
                    milli_text(sum.gpu)
                ));
            }
        }
        let largest_memory = totals().map(|total| total.memory).max().unwrap_or(0);
        if sum.memory > largest_memory {
            return Some(format!(
                "needs memory={} on one agent; largest agent has {}",
                format_size(sum.memory),
                format_size(largest_memory)
            ));
        }
        for (name, amount) in &sum.custom {
            let largest = totals().map(|total| total.custom(name)).max().unwrap_or(0);
            if largest == 0 {
                return Some(format!(
                    "needs {name}={} on one agent; no agent has {name}",
                    milli_text(*amount)
                ));
            }
            if *amount > largest {
                return Some(format!(
                    "needs {name}={} on one agent; largest agent has {}",
                    milli_text(*amount),
                    milli_text(largest)
                ));
            }
        }
        None
    }

    /// Places a valid request against free or total amounts.
    fn try_place(&self, request: &ResourceRequest, view: View) -> Option<Allocation> {
        let needs: Vec<Need> = request.bundles.iter().map(Need::of).collect();
        let placed: Vec<(&str, Shares)> = match request.placement {
            Placement::Pack => {
                let (agent, shares) = self.pack(&needs, view)?;
                shares.into_iter().map(|shares| (agent, shares)).collect()
            }
            Placement::Spread => self.spread(&needs, view).into_iter().collect::<Option<_>>()?,
        };
        let bundles = placed
            .into_iter()
            .zip(&request.bundles)
            .map(|((agent, shares), bundle)| {
                let devices = &self.agents[agent].total.devices;
                BundlePlacement {
                    agent: agent.to_owned(),
                    bundle: bundle.clone(),
                    gpus: shares
                        .into_iter()
                        .map(|(position, share)| GpuShare {
                            device: devices[position].id.clone(),
                            index: devices[position].index,
                            share: share as f64 / MILLI as f64,
                        })
                        .collect(),
                }
            })
            .collect();
        Some(Allocation { bundles })
    }

    /// Best fit: the agent that holds every bundle with the least left over, and the shares
    /// of each bundle (in request order).
    fn pack(&self, needs: &[Need], view: View) -> Option<(&str, Vec<Shares>)> {
        // Whole devices first, then fractions largest first: fewer fractions strand a device.
        let mut order: Vec<usize> = (0..needs.len()).collect();
        order.sort_by_key(|&position| std::cmp::Reverse(needs[position].gpu));
        // (what is left over: gpu, cpu, memory), the agent, the shares of each bundle.
        type Fit<'a> = ((u64, u64, u64), &'a str, Vec<Shares>);
        let mut best: Option<Fit<'_>> = None;
        for (name, agent) in &self.agents {
            let mut left = agent.capacity(view).clone();
            let mut shares = vec![Vec::new(); needs.len()];
            let fits = order.iter().all(|&position| match left.take(&needs[position]) {
                Some(taken) => {
                    shares[position] = taken;
                    true
                }
                None => false,
            });
            if !fits {
                continue;
            }
            let key = (left.gpu_free(), left.cpu, left.memory);
            if best.as_ref().is_none_or(|(best_key, _, _)| key < *best_key) {
                best = Some((key, name, shares));
            }
        }
        best.map(|(_, name, shares)| (name, shares))
    }

    /// One distinct agent per bundle (a maximum bipartite matching, trying the agents with the
    /// most free capacity first); `None` for each bundle left without an agent.
    fn spread(&self, needs: &[Need], view: View) -> Vec<Option<(&str, Shares)>> {
        let agents: Vec<(&str, &Capacity)> = self
            .agents
            .iter()
            .map(|(name, agent)| (name.as_str(), agent.capacity(view)))
            .collect();
        let candidates: Vec<Vec<usize>> = needs
            .iter()
            .map(|need| {
                let mut fitting: Vec<usize> = (0..agents.len())
                    .filter(|&agent| agents[agent].1.clone().take(need).is_some())
                    .collect();
                let key = |agent: usize| {
                    let capacity = agents[agent].1;
                    if need.gpu > 0 {
                        (capacity.gpu_free(), capacity.cpu, capacity.memory)
                    } else {
                        (capacity.cpu, capacity.memory, 0)
                    }
                };
                // Most free first; the stable sort keeps name order on ties.
                fitting.sort_by_key(|&agent| std::cmp::Reverse(key(agent)));
                fitting
            })
            .collect();
        let mut owner: Vec<Option<usize>> = vec![None; agents.len()];
        for bundle in 0..needs.len() {
            let mut visited = vec![false; agents.len()];
            augment(bundle, &candidates, &mut visited, &mut owner);
        }
        let mut placed: Vec<Option<(&str, Shares)>> = vec![None; needs.len()];
        for (agent, bundle) in owner.iter().enumerate() {
            if let Some(bundle) = bundle {
                let shares = agents[agent].1.clone().take(&needs[*bundle]).expect("a candidate fits");
                placed[*bundle] = Some((agents[agent].0, shares));
            }
        }
        placed
    }
}

/// Kuhn's augmenting path: finds `bundle` an agent, moving earlier bundles to other candidates
/// of theirs only when none of its own candidates is free (so preferences hold where they can).
fn augment(bundle: usize, candidates: &[Vec<usize>], visited: &mut [bool], owner: &mut [Option<usize>]) -> bool {
    if let Some(&agent) = candidates[bundle].iter().find(|&&agent| owner[agent].is_none()) {
        visited[agent] = true;
        owner[agent] = Some(bundle);
        return true;
    }
    for &agent in &candidates[bundle] {
        if visited[agent] {
            continue;
        }
        visited[agent] = true;
        if owner[agent].is_none_or(|other| augment(other, candidates, visited, owner)) {
            owner[agent] = Some(bundle);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    fn gpus(count: u32, model: &str) -> Vec<GpuInfo> {
        (0..count)
            .map(|index| GpuInfo {
                index,
                uuid: format!("GPU-{index}"),
                model: model.into(),
                memory: 80 * GIB,
                mig: Vec::new(),
            })
            .collect()
    }

    fn machine(cpus: f64, memory: u64, gpu_count: u32) -> Inventory {
        Inventory {
            cpus,
            memory,
            gpus: gpus(gpu_count, "H100"),
            custom: BTreeMap::new(),
        }
    }

    fn bundle(cpu: f64, gpu: f64) -> Bundle {
        Bundle {
            cpu,
            gpu,
            ..Bundle::default()
        }
    }

    fn request(bundles: Vec<Bundle>, placement: Placement) -> ResourceRequest {
        ResourceRequest { bundles, placement }
    }

    fn one(bundle: Bundle) -> ResourceRequest {
        request(vec![bundle], Placement::Pack)
    }

    fn never(cluster: &Cluster, request: &ResourceRequest) -> String {
        match cluster.place(request) {
            Err(Unplaceable::Never(reason)) => {
                assert_eq!(cluster.never_fits(request).as_deref(), Some(reason.as_str()));
                reason
            }
            other => panic!("expected never, got {other:?}"),
        }
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("64GiB"), Ok(64 * GIB));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(1_610_612_736));
        assert_eq!(parse_size("8GB"), Ok(8_000_000_000));
        assert_eq!(parse_size("8G"), Ok(8_000_000_000));
        assert_eq!(parse_size("8Gi"), Ok(8 * GIB));
        assert_eq!(parse_size("8 gib"), Ok(8 * GIB));
        assert_eq!(parse_size("1K"), Ok(1000));
        assert_eq!(parse_size("1kib"), Ok(1024));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size(".5KiB"), Ok(512));
        assert_eq!(parse_size("1.0"), Ok(1));
        assert_eq!(parse_size("0.3KiB"), Ok(307));
        assert_eq!(
            parse_size("16EiB").unwrap_err(),
            "invalid size \"16EiB\": too large (at most 18446744073709551615 bytes)"
        );
    }

    #[test]
    fn bad_sizes_are_named() {
        assert_eq!(parse_size("").unwrap_err(), "invalid size \"\": it is empty");
        assert_eq!(
            parse_size("abc").unwrap_err(),
            "invalid size \"abc\": expected a number of bytes with an optional unit, such as \"512MiB\" or \"8GB\""
        );
        assert_eq!(
            parse_size("-1GiB").unwrap_err(),
            "invalid size \"-1GiB\": expected a number of bytes with an optional unit, such as \"512MiB\" or \"8GB\""
        );
        assert!(
            parse_size("1.2.3GiB")
                .unwrap_err()
                .starts_with("invalid size \"1.2.3GiB\": expected a number")
        );
        assert_eq!(
            parse_size("8XB").unwrap_err(),
            "invalid size \"8XB\": unknown unit \"XB\" (known: B, KB, KiB, MB, MiB, GB, GiB, TB, TiB, PB, PiB, EB, EiB)"
        );
        assert_eq!(
            parse_size("1.5").unwrap_err(),
            "invalid size \"1.5\": a number of bytes must be whole (give a unit for fractions, such as \"1.5GiB\")"
        );
        assert!(
            parse_size("99999999999999999999999999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn sizes_format_with_the_shortest_exact_unit() {
        assert_eq!(format_size(8 * GIB), "8GiB");
        assert_eq!(format_size(1_610_612_736), "1.5GiB");
        assert_eq!(format_size(512 << 20), "512MiB");
        assert_eq!(format_size(100), "100B");
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(8_000_000_000), "8GB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(3 << 19), "1.5MiB");
        assert_eq!(format_size(1000), "1KB");
        assert_eq!(format_size(1023), "1023B");
        assert_eq!(format_size(u64::MAX), "18446744073709551615B");
    }

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
        let check = |bundle: Bundle| bundle.validate().unwrap_err();
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
            two.validate().unwrap_err(),
            "bundle 1: gpu = 2.5: a fraction of a GPU must be below 1, and more than one GPU must be a whole number"
        );
        assert_eq!(
            request(vec![], Placement::Pack).validate().unwrap_err(),
            "a resource request needs at least one bundle"
        );
    }

    #[test]
    fn descriptions_are_short() {
        let bundle = Bundle {
            cpu: 2.0,
            gpu: 0.5,
            memory: 8 * GIB,
            custom: BTreeMap::from([("nvme".to_owned(), 1.0)]),
        };
        assert_eq!(bundle.describe(), "cpu=2, gpu=0.5, memory=8GiB, nvme=1");
        assert_eq!(Bundle::default().describe(), "cpu=1");
        let mut h100 = machine(16.0, 128 * GIB, 0);
        h100.gpus = gpus(2, "H100 80GB HBM3");
        assert_eq!(h100.describe(), "16 CPUs, 128GiB, 2 GPUs (H100 80GB HBM3 x2)");
        assert_eq!(machine(1.0, 4 * GIB, 0).describe(), "1 CPU, 4GiB");
        let mut mixed = machine(8.0, 64 * GIB, 1);
        mixed.gpus.extend(gpus(1, "A100"));
        mixed.gpus[1].mig = vec![MigInfo::default(), MigInfo::default()];
        mixed.custom.insert("nvme".into(), 2.0);
        assert_eq!(
            mixed.describe(),
            "8 CPUs, 64GiB, 2 GPUs (H100, A100; 2 MIG instances), nvme=2"
        );
    }

    #[test]
    fn quarter_gpus_fill_one_device_before_the_next() {
        let mut cluster = Cluster::default();
        cluster.add_agent("a", machine(16.0, 64 * GIB, 2));
        let quarter = one(bundle(1.0, 0.25));
        for _ in 0..4 {
            let allocation = cluster.allocate(&quarter).unwrap();
            assert_eq!(allocation.cuda_visible_devices(0), "0");
            assert_eq!(
                allocation.bundles[0].gpus,
                [GpuShare {
                    device: "0".into(),
                    index: 0,
                    share: 0.25
                }]
            );
        }
        assert_eq!(cluster.device_use("a"), [("0".to_owned(), 1.0), ("1".to_owned(), 0.0)]);
        assert_eq!(cluster.allocate(&quarter).unwrap().cuda_visible_devices(0), "1");
        let third = one(bundle(0.0, 0.333));
        let mut thirds = Cluster::default();
        thirds.add_agent("a", machine(4.0, 0, 1));
        for _ in 0..3 {
            assert_eq!(thirds.allocate(&third).unwrap().cuda_visible_devices(0), "0");
        }
        assert_eq!(thirds.place(&third), Err(Unplaceable::NotNow));
    }

    #[test]
    fn whole_gpus_get_distinct_free_devices() {
        let mut cluster = Cluster::default();
        cluster.add_agent("a", machine(16.0, 64 * GIB, 2));
        let two = one(bundle(1.0, 2.0));
        let allocation = cluster.place(&two).unwrap();
        assert_eq!(allocation.cuda_visible_devices(0), "0,1");
        assert!(allocation.bundles[0].gpus.iter().all(|share| share.share == 1.0));
        let half = cluster.allocate(&one(bundle(1.0, 0.5))).unwrap();
        assert_eq!(cluster.place(&two), Err(Unplaceable::NotNow));
        assert_eq!(
            cluster
                .allocate(&one(bundle(1.0, 1.0)))
                .unwrap()
                .cuda_visible_devices(0),
            "1"
        );
        cluster.release(&half);
        assert_eq!(
            cluster.place(&one(bundle(1.0, 1.0))).unwrap().cuda_visible_devices(0),
            "0"
        );
        let cpu_only = cluster.allocate(&one(bundle(1.0, 0.0))).unwrap();
        assert!(cpu_only.bundles[0].gpus.is_empty());
        assert_eq!(cpu_only.cuda_visible_devices(0), "");
        assert_eq!(cpu_only.cuda_visible_devices(7), "");
    }

    #[test]
    fn requests_that_can_never_fit_say_why() {
        let mut cluster = Cluster::default();
        assert_eq!(cluster.place(&one(bundle(1.0, 0.0))), Err(Unplaceable::NoAgents));
        assert_eq!(Unplaceable::NoAgents.to_string(), "no agent is registered");
        assert_eq!(Unplaceable::NotNow.to_string(), "waiting for free resources");
        assert_eq!(cluster.never_fits(&one(bundle(1.0, 0.0))), None);
        cluster.add_agent("a", machine(16.0, 4 * GIB, 1));
        cluster.add_agent("b", machine(8.0, 2 * GIB, 0));
        assert_eq!(
            never(&cluster, &one(bundle(1.0, 2.0))),
            "needs gpu=2 on one agent; largest agent has 1"
        );
        assert_eq!(
            never(
                &cluster,
                &request(vec![bundle(1.0, 1.0), bundle(1.0, 1.0)], Placement::Pack)
            ),
            "needs gpu=2 on one agent; largest agent has 1"
        );
        assert_eq!(
            never(
                &cluster,
                &request(vec![bundle(1.0, 0.6), bundle(1.0, 0.6)], Placement::Pack)
            ),
            "needs gpu=1.2 on one agent; largest agent has 1"
        );
        let memory = Bundle {
            memory: 8 * GIB,
            ..Bundle::default()
        };
        assert_eq!(
            never(&cluster, &one(memory)),
            "needs memory=8GiB on one agent; largest agent has 4GiB"
        );
        assert_eq!(
            never(&cluster, &one(bundle(32.0, 0.0))),
            "needs cpu=32 on one agent; largest agent has 16"
        );
        assert_eq!(
            never(&cluster, &request(vec![bundle(10.0, 0.0); 2], Placement::Pack)),
            "needs cpu=20 on one agent; largest agent has 16"
        );
        let mut nvme = Bundle::default();
        nvme.custom.insert("nvme".into(), 1.0);
        assert_eq!(
            never(&cluster, &one(nvme)),
            "needs nvme=1 on one agent; no agent has nvme"
        );
        assert_eq!(
            never(&cluster, &request(vec![Bundle::default(); 3], Placement::Spread)),
            "spread needs 3 agents; 2 are registered"
        );
        assert_eq!(
            never(&cluster, &request(vec![bundle(1.0, 1.0); 2], Placement::Spread)),
            "spread needs 2 agents that each hold one bundle; only 1 can"
        );
        assert_eq!(
            never(
                &cluster,
                &request(vec![bundle(1.0, 0.0), bundle(1.0, 3.0)], Placement::Spread)
            ),
            "bundle 1: needs gpu=3 on one agent; largest agent has 1"
        );
        let mut big = machine(32.0, 0, 0);
        big.custom.insert("nvme".into(), 1.0);
        cluster.add_agent("c", big);
        // cpu and memory each fit some agent, but no agent has both.
        let both = Bundle {
            cpu: 20.0,
            memory: GIB,
            ..Bundle::default()
        };
        assert_eq!(
            never(&cluster, &one(both)),
            "needs cpu=20, memory=1GiB on one agent; no agent has all of it"
        );
        let mut nvme = Bundle::default();
        nvme.custom.insert("nvme".into(), 2.0);
        assert_eq!(
            never(&cluster, &one(nvme)),
            "needs nvme=2 on one agent; largest agent has 1"
        );
        assert_eq!(
            never(&cluster, &one(bundle(1.0, f64::NAN))),
            "gpu = NaN: must be a finite number, at least 0"
        );
        let mut no_gpu = Cluster::default();
        no_gpu.add_agent("a", machine(4.0, GIB, 0));
        assert_eq!(
            never(&no_gpu, &one(bundle(1.0, 0.5))),
            "needs gpu=0.5 on one agent; no agent has a GPU"
        );
    }

    #[test]
    fn pack_chooses_the_tightest_agent_and_spread_the_emptiest() {
        let mut cluster = Cluster::default();
        cluster.add_agent("big", machine(32.0, 64 * GIB, 0));
        cluster.add_agent("small", machine(4.0, 8 * GIB, 0));
        cluster.add_agent("small-2", machine(4.0, 8 * GIB, 0));
        cluster.add_agent("gpu", machine(64.0, 256 * GIB, 1));
        let packed = cluster
            .allocate(&request(vec![bundle(2.0, 0.0); 2], Placement::Pack))
            .unwrap();
        assert_eq!(packed.agents(), ["small"]);
        assert_eq!(cluster.place(&one(bundle(1.0, 0.0))).unwrap().agents(), ["small-2"]);
        assert_eq!(cluster.place(&one(bundle(3.0, 0.0))).unwrap().agents(), ["small-2"]);
        assert_eq!(cluster.place(&one(bundle(1.0, 0.5))).unwrap().agents(), ["gpu"]);
        let spread = cluster
            .allocate(&request(vec![bundle(1.0, 0.0); 3], Placement::Spread))
            .unwrap();
        assert_eq!(spread.agents(), ["gpu", "big", "small-2"]);
        assert_eq!(spread.bundles.len(), 3);
        // A spread bundle that only one agent can hold gets it, though an earlier bundle preferred it.
        let mut cluster = Cluster::default();
        cluster.add_agent("a", machine(32.0, 0, 0));
        cluster.add_agent("b", machine(8.0, 0, 0));
        let spread = cluster
            .place(&request(vec![bundle(1.0, 0.0), bundle(16.0, 0.0)], Placement::Spread))
            .unwrap();
        assert_eq!(spread.agents(), ["b", "a"]);
    }

    #[test]
    fn mig_instances_are_the_devices() {
        let mut inventory = machine(16.0, 64 * GIB, 2);
        inventory.gpus[0].mig = ["MIG-a", "MIG-b"]
            .into_iter()
            .map(|uuid| MigInfo {
                uuid: uuid.into(),
                name: "3g.40gb".into(),
                memory: 40 * GIB,
            })
            .collect();
        let mut cluster = Cluster::default();
        cluster.add_agent("a", inventory);
        let whole = one(bundle(1.0, 1.0));
        let first = cluster.allocate(&whole).unwrap();
        assert_eq!(first.cuda_visible_devices(0), "MIG-a");
        assert_eq!(first.bundles[0].gpus[0].index, 0);
        assert_eq!(cluster.allocate(&whole).unwrap().cuda_visible_devices(0), "MIG-b");
        let third = cluster.allocate(&whole).unwrap();
        assert_eq!(third.cuda_visible_devices(0), "1");
        assert_eq!(third.bundles[0].gpus[0].index, 1);
        assert_eq!(cluster.place(&whole), Err(Unplaceable::NotNow));
        assert_eq!(
            cluster.place(&one(bundle(1.0, 4.0))),
            Err(Unplaceable::Never(
                "needs gpu=4 on one agent; largest agent has 3".into()
            ))
        );
        cluster.release(&first);
        assert_eq!(
            cluster.place(&one(bundle(1.0, 0.5))).unwrap().cuda_visible_devices(0),
            "MIG-a"
        );
    }

    #[test]
    fn release_gives_capacity_back_once() {
        let mut cluster = Cluster::default();
        let mut inventory = machine(8.0, 16 * GIB, 1);
        inventory.custom.insert("nvme".into(), 1.0);
        cluster.add_agent("a", inventory);
        let total = cluster.free("a").unwrap();
        let mut heavy = Bundle {
            cpu: 6.0,
            gpu: 0.5,
            memory: 12 * GIB,
            ..Bundle::default()
        };
        heavy.custom.insert("nvme".into(), 1.0);
        let allocation = cluster.allocate(&one(heavy.clone())).unwrap();
        assert_eq!(
            cluster.free("a").unwrap(),
            Bundle {
                cpu: 2.0,
                gpu: 0.5,
                memory: 4 * GIB,
                custom: BTreeMap::from([("nvme".to_owned(), 0.0)]),
            }
        );
        assert_eq!(cluster.place(&one(heavy.clone())), Err(Unplaceable::NotNow));
        cluster.release(&allocation);
        assert_eq!(cluster.free("a").unwrap(), total);
        cluster.release(&allocation);
        assert_eq!(cluster.free("a").unwrap(), total);
        // Survives a JSON round trip.
        let allocation = cluster.allocate(&one(heavy.clone())).unwrap();
        let copy: Allocation = serde_json::from_str(&serde_json::to_string(&allocation).unwrap()).unwrap();
        cluster.release(&copy);
        assert_eq!(cluster.free("a").unwrap(), total);
        // Re-adding an agent forgets what was on it; removing one makes release a no-op.
        let allocation = cluster.allocate(&one(heavy)).unwrap();
        cluster.add_agent("a", machine(8.0, 16 * GIB, 1));
        let fresh = cluster.free("a").unwrap();
        assert_eq!(fresh.cpu, 8.0);
        cluster.release(&allocation);
        assert_eq!(cluster.free("a").unwrap(), fresh);
        assert!(cluster.remove_agent("a"));
        assert!(!cluster.remove_agent("a"));
        cluster.release(&allocation);
        assert!(cluster.is_empty());
        assert_eq!(cluster.free("a"), None);
        assert!(cluster.device_use("a").is_empty());
    }

    #[test]
    fn reserve_takes_an_allocation_again_after_the_agent_is_re_added() {
        let mut cluster = Cluster::default();
        cluster.add_agent("a", machine(8.0, 16 * GIB, 2));
        let half = one(Bundle {
            cpu: 4.0,
            gpu: 0.5,
            memory: 8 * GIB,
            ..Bundle::default()
        });
        let first = cluster.allocate(&half).unwrap();
        let second = cluster.allocate(&half).unwrap();
        let both_used = cluster.device_use("a");
        cluster.add_agent("a", machine(8.0, 16 * GIB, 2));
        let fresh = cluster.free("a").unwrap();
        assert_eq!(fresh.cpu, 8.0);
        cluster.reserve(&first).unwrap();
        cluster.reserve(&second).unwrap();
        assert_eq!(cluster.device_use("a"), both_used);
        assert_eq!(cluster.free("a").unwrap().cpu, 0.0);
        assert_eq!(
            cluster.reserve(&first).unwrap_err(),
            "agent \"a\" does not have cpu=4, gpu=0.5, memory=8GiB free on devices [0]"
        );
        cluster.release(&first);
        cluster.release(&second);
        assert_eq!(cluster.free("a").unwrap(), fresh);
        cluster.add_agent("a", machine(8.0, 16 * GIB, 0));
        assert_eq!(
            cluster.reserve(&first).unwrap_err(),
            "agent \"a\" has no device 0 (it has 8 CPUs, 16GiB)"
        );
        assert!(cluster.remove_agent("a"));
        assert_eq!(cluster.reserve(&first).unwrap_err(), "agent \"a\" is not registered");
    }

    #[test]
    fn spread_puts_bundles_on_distinct_agents() {
        let mut cluster = Cluster::default();
        for name in ["a", "b", "c"] {
            cluster.add_agent(name, machine(8.0, 16 * GIB, 2));
        }
        let spread = request(vec![bundle(1.0, 1.0); 3], Placement::Spread);
        let allocation = cluster.allocate(&spread).unwrap();
        assert_eq!(allocation.agents(), ["a", "b", "c"]);
        for bundle in 0..3 {
            assert_eq!(allocation.cuda_visible_devices(bundle), "0");
        }
        let again = cluster.allocate(&spread).unwrap();
        assert_eq!(again.agents(), ["a", "b", "c"]);
        assert_eq!(again.cuda_visible_devices(0), "1");
        assert_eq!(cluster.place(&spread), Err(Unplaceable::NotNow));
        assert_eq!(
            cluster.agents().map(|(name, _)| name).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(ResourceRequest),
        Release(prop::sample::Index),
    }

    fn inventory_strategy() -> impl Strategy<Value = Inventory> {
        (1u32..=16, 0u64..=64, prop::collection::vec(0usize..=3, 0..=4), 0u32..=2).prop_map(
            |(cpus, memory, migs, nvme)| Inventory {
                cpus: f64::from(cpus),
                memory: memory * GIB,
                gpus: migs
                    .iter()
                    .enumerate()
                    .map(|(index, migs)| GpuInfo {
                        index: index as u32,
                        uuid: format!("GPU-{index}"),
                        model: "Test".into(),
                        memory: 80 * GIB,
                        mig: (0..*migs)
                            .map(|mig| MigInfo {
                                uuid: format!("MIG-{index}-{mig}"),
                                name: "1g.10gb".into(),
                                memory: 10 * GIB,
                            })
                            .collect(),
                    })
                    .collect(),
                custom: if nvme > 0 {
                    BTreeMap::from([("nvme".to_owned(), f64::from(nvme))])
                } else {
                    BTreeMap::new()
                },
            },
        )
    }

    fn bundle_strategy() -> impl Strategy<Value = Bundle> {
        (
            prop::sample::select(vec![0.0, 0.5, 1.0, 2.0, 4.0]),
            prop::sample::select(vec![0.0, 0.1, 0.25, 0.333, 0.5, 0.75, 1.0, 2.0, 3.0]),
            0u64..=16,
            0u32..=1,
        )
            .prop_map(|(cpu, gpu, memory, nvme)| Bundle {
                cpu,
                gpu,
                memory: memory * GIB,
                custom: if nvme > 0 {
                    BTreeMap::from([("nvme".to_owned(), 1.0)])
                } else {
                    BTreeMap::new()
                },
            })
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let request = (
            prop::collection::vec(bundle_strategy(), 1..=3),
            prop_oneof![Just(Placement::Pack), Just(Placement::Spread)],
        )
            .prop_map(|(bundles, placement)| ResourceRequest { bundles, placement });
        prop_oneof![
            3 => request.prop_map(Op::Allocate),
            1 => any::<prop::sample::Index>().prop_map(Op::Release),
        ]
    }

    /// Checks every held allocation against the inventories, independently of the cluster.
    fn check_invariants(cluster: &Cluster, held: &[Allocation]) -> Result<(), TestCaseError> {
        for (name, inventory) in cluster.agents() {
            let devices = Capacity::of(inventory).devices;
            let mut cpu = 0;
            let mut memory = 0;
            let mut nvme = 0;
            let mut used = vec![0u64; devices.len()];
            for placement in held.iter().flat_map(|allocation| &allocation.bundles) {
                if placement.agent != name {
                    continue;
                }
                let need = Need::of(&placement.bundle);
                cpu += need.cpu;
                memory += need.memory;
                nvme += need.custom.get("nvme").copied().unwrap_or(0);
                for share in &placement.gpus {
                    let position = devices.iter().position(|device| device.id == share.device);
                    prop_assert!(
                        position.is_some(),
                        "device {} is not schedulable on {name}",
                        share.device
                    );
                    let position = position.unwrap();
                    prop_assert_eq!(devices[position].index, share.index);
                    used[position] += to_milli(share.share);
                }
            }
            prop_assert!(
                cpu <= to_milli(inventory.cpus),
                "{name}: cpu {cpu} over {}",
                inventory.cpus
            );
            prop_assert!(memory <= inventory.memory, "{name}: memory over");
            prop_assert!(nvme <= to_milli(inventory.custom.get("nvme").copied().unwrap_or(0.0)));
            prop_assert!(
                used.iter().all(|share| *share <= MILLI),
                "{name}: device over 1: {used:?}"
            );
            let reported: Vec<u64> = cluster
                .device_use(name)
                .iter()
                .map(|(_, share)| to_milli(*share))
                .collect();
            prop_assert_eq!(&reported, &used);
            let free = cluster.free(name).unwrap();
            prop_assert_eq!(to_milli(free.cpu), to_milli(inventory.cpus) - cpu);
            prop_assert_eq!(free.memory, inventory.memory - memory);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn sizes_round_trip(bytes in any::<u64>(), gib in 0u64..1 << 20, half in any::<bool>()) {
            prop_assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
            let exact = gib * GIB + if half { GIB / 2 } else { 0 };
            prop_assert_eq!(parse_size(&format_size(exact)), Ok(exact));
            let plain = format!("{exact}B");
            prop_assert!(format_size(exact).len() <= plain.len());
        }

        #[test]
        fn allocations_never_overcommit(
            inventories in prop::collection::vec(inventory_strategy(), 1..=3),
            ops in prop::collection::vec(op_strategy(), 1..40),
        ) {
            let mut cluster = Cluster::default();
            for (position, inventory) in inventories.iter().enumerate() {
                cluster.add_agent(&format!("agent-{position}"), inventory.clone());
            }
            let mut empty = Cluster::default();
            for (name, inventory) in cluster.agents() {
                empty.add_agent(name, inventory.clone());
            }
            let totals: Vec<Bundle> = cluster.agents().map(|(name, _)| cluster.free(name).unwrap()).collect();
            let mut held: Vec<Allocation> = Vec::new();
            for op in ops {
                match op {
                    Op::Allocate(request) => match cluster.allocate(&request) {
                        Ok(allocation) => {
                            prop_assert_eq!(allocation.bundles.len(), request.bundles.len());
                            let agents = allocation.agents();
                            match request.placement {
                                Placement::Pack => prop_assert_eq!(agents.len(), 1),
                                Placement::Spread => prop_assert_eq!(agents.len(), request.bundles.len()),
                            }
                            for (placement, bundle) in allocation.bundles.iter().zip(&request.bundles) {
                                prop_assert_eq!(&placement.bundle, bundle);
                                let gpu = to_milli(bundle.gpu);
                                if gpu == 0 {
                                    prop_assert!(placement.gpus.is_empty());
                                } else if gpu < MILLI {
                                    prop_assert_eq!(placement.gpus.len(), 1, "a fraction is never split");
                                    prop_assert_eq!(to_milli(placement.gpus[0].share), gpu);
                                } else {
                                    let mut devices: Vec<&str> =
                                        placement.gpus.iter().map(|share| share.device.as_str()).collect();
                                    prop_assert!(placement.gpus.iter().all(|share| share.share == 1.0));
                                    devices.sort_unstable();
                                    devices.dedup();
                                    prop_assert_eq!(devices.len() as u64, gpu / MILLI);
                                }
                            }
                            held.push(allocation);
                        }
                        Err(Unplaceable::NotNow) => prop_assert!(empty.place(&request).is_ok()),
                        Err(Unplaceable::Never(reason)) => {
                            prop_assert!(empty.place(&request).is_err(), "never, yet fits when empty: {}", reason);
                        }
                        Err(Unplaceable::NoAgents) => return Err(TestCaseError::fail("no agents, yet agents are registered")),
                    },
                    Op::Release(index) => {
                        if !held.is_empty() {
                            let allocation = held.swap_remove(index.index(held.len()));
                            cluster.release(&allocation);
                        }
                    }
                }
                check_invariants(&cluster, &held)?;
            }
            for allocation in &held {
                cluster.release(allocation);
            }
            let free: Vec<Bundle> = cluster.agents().map(|(name, _)| cluster.free(name).unwrap()).collect();
            prop_assert_eq!(free, totals);
        }
    }
}
