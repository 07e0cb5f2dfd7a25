//! What this machine offers to trials: CPUs, memory, GPUs and custom resources, as an
//! [`Inventory`] the agent registers with the controller.
//!
//! [`detect`] fills in what the operator did not give (`--cpus`, `--memory`) from the machine,
//! [`parse_custom`] reads one `--resource name=amount`, and [`describe`] renders the summary an
//! agent prints at start.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tune_core::resources::{GpuInfo, Inventory, human_size};

/// Where [`detect`] reads the machine's memory from.
const MEMINFO_PATH: &str = "/proc/meminfo";

/// Resource names that are built into every bundle, and the flag that sets each instead.
const BUILT_IN_RESOURCES: [(&str, &str); 3] = [("cpu", "--cpus"), ("gpu", "--gpus"), ("memory", "--memory")];

/// Why an agent's inventory cannot be built from what the operator gave; every message names the
/// flag and the text given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InventoryError {
    /// `--cpus` is not a finite number above 0.
    #[error("--cpus {cpus}: must be a finite number above 0")]
    Cpus {
        /// The value given.
        cpus: f64,
    },
    /// A `--resource` is not of the form `name=amount`.
    #[error("--resource {text:?}: expected name=amount, like nvme=1")]
    NotNameAmount {
        /// The text given.
        text: String,
    },
    /// A `--resource` text names an invalid custom resource.
    #[error("--resource {text:?}: {reason}")]
    Resource {
        /// The text given.
        text: String,
        /// What is wrong with it.
        reason: CustomResourceError,
    },
    /// A custom resource handed to [`detect`] is invalid.
    #[error("--resource {name}={amount}: {reason}")]
    Custom {
        /// Its name.
        name: String,
        /// Its amount.
        amount: f64,
        /// What is wrong with it.
        reason: CustomResourceError,
    },
}

/// What is wrong with a custom resource's name or amount.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CustomResourceError {
    /// The name is one of the built-in resources, which have flags of their own.
    #[error("{name} is built in, set it with {flag}")]
    BuiltIn {
        /// The built-in name.
        name: String,
        /// The flag that sets it.
        flag: &'static str,
    },
    /// The name is not a lowercase letter followed by lowercase letters, digits or `_`.
    #[error("the name {name:?} must be a lowercase letter followed by lowercase letters, digits or _")]
    BadName {
        /// The name given.
        name: String,
    },
    /// The amount is not a number.
    #[error("{rule}, got {amount:?}", rule = AMOUNT_RULE)]
    NotANumber {
        /// The amount as written.
        amount: String,
    },
    /// The amount is negative or not finite.
    #[error("{rule}, got {amount}", rule = AMOUNT_RULE)]
    BadAmount {
        /// The amount given.
        amount: f64,
    },
}

/// Builds the inventory an agent offers.
///
/// `cpus` defaults to [`std::thread::available_parallelism`] (which honours CPU affinity and
/// cgroup quotas) and must be finite and positive; more than the machine has is allowed, with
/// a warning. `memory` (bytes) defaults to `MemTotal` from `/proc/meminfo`, or 0 with a warning
/// when that cannot be read. `gpus` come from [`discover`](crate::gpu::discover) and `custom`
/// from [`parse_custom`]; custom entries are checked again here.
pub fn detect(
    cpus: Option<f64>,
    memory: Option<u64>,
    gpus: Vec<GpuInfo>,
    custom: BTreeMap<String, f64>,
) -> Result<Inventory, InventoryError> {
    let detected_cpus = match std::thread::available_parallelism() {
        Ok(count) => count.get() as f64,
        Err(error) => {
            tracing::warn!(%error, "cannot count this machine's CPUs; assuming 1");
            1.0
        }
    };
    let cpus = match cpus {
        None => detected_cpus,
        Some(cpus) if !cpus.is_finite() || cpus <= 0.0 => {
            return Err(InventoryError::Cpus { cpus });
        }
        Some(cpus) => {
            if cpus > detected_cpus {
                tracing::warn!(
                    cpus,
                    detected = detected_cpus,
                    "--cpus offers more CPUs than this machine has"
                );
            }
            cpus
        }
    };

    let memory = match memory {
        Some(memory) => {
            if let Some(detected) = read_memory_total().filter(|detected| memory > *detected) {
                tracing::warn!(
                    memory = %human_size(memory),
                    detected = %human_size(detected),
                    "--memory offers more memory than this machine has"
                );
            }
            memory
        }
        None => read_memory_total().unwrap_or_else(|| {
            tracing::warn!("cannot read MemTotal from {MEMINFO_PATH}; offering 0 bytes of memory (set --memory)");
            0
        }),
    };

    for (name, amount) in &custom {
        check_custom(name, *amount).map_err(|reason| InventoryError::Custom {
            name: name.clone(),
            amount: *amount,
            reason,
        })?;
    }
    Ok(Inventory {
        cpus,
        memory,
        gpus,
        custom,
    })
}

/// `MemTotal` of this machine in bytes, or `None` when `/proc/meminfo` is unreadable.
fn read_memory_total() -> Option<u64> {
    let text = std::fs::read_to_string(MEMINFO_PATH)
        .inspect_err(|error| tracing::debug!(%error, "cannot read {MEMINFO_PATH}"))
        .ok()?;
    parse_meminfo_total(&text)
}

/// `MemTotal` in bytes from the text of `/proc/meminfo` (a line like `MemTotal: 16384 kB`).
fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|line| line.strip_prefix("MemTotal:"))?;
    let mut words = line.split_whitespace();
    let amount: u64 = words.next()?.parse().ok()?;
    let multiplier = match words.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    amount.checked_mul(multiplier)
}

/// Reads one `--resource name=amount`, e.g. `nvme=1`.
///
/// The name is a lowercase letter followed by lowercase letters, digits or `_`, and not one of
/// the built-in `cpu`, `gpu`, `memory`; the amount is a finite number `>= 0`.
pub fn parse_custom(text: &str) -> Result<(String, f64), InventoryError> {
    let Some((name, amount)) = text.split_once('=') else {
        return Err(InventoryError::NotNameAmount { text: text.to_owned() });
    };
    let invalid = |reason| InventoryError::Resource {
        text: text.to_owned(),
        reason,
    };
    let (name, amount) = (name.trim(), amount.trim());
    let amount: f64 = amount.parse().map_err(|_| {
        invalid(CustomResourceError::NotANumber {
            amount: amount.to_owned(),
        })
    })?;
    check_custom(name, amount).map_err(invalid)?;
    Ok((name.to_owned(), amount))
}

/// What a custom amount must be, quoted in errors.
const AMOUNT_RULE: &str = "the amount must be a finite number >= 0";

/// Checks a custom resource's name and amount; `Err` says what is wrong.
fn check_custom(name: &str, amount: f64) -> Result<(), CustomResourceError> {
    if let Some((_, flag)) = BUILT_IN_RESOURCES.iter().find(|(built_in, _)| *built_in == name) {
        return Err(CustomResourceError::BuiltIn {
            name: name.to_owned(),
            flag,
        });
    }
    let mut characters = name.chars();
    let starts_with_letter = characters.next().is_some_and(|first| first.is_ascii_lowercase());
    if !starts_with_letter || !characters.all(|rest| rest.is_ascii_lowercase() || rest.is_ascii_digit() || rest == '_')
    {
        return Err(CustomResourceError::BadName { name: name.to_owned() });
    }
    if !amount.is_finite() || amount < 0.0 {
        return Err(CustomResourceError::BadAmount { amount });
    }
    Ok(())
}

/// The multi-line summary an agent prints at start (no trailing newline):
///
/// ```text
/// cpus: 16
/// memory: 125.8GiB
/// gpus: 1 (NVIDIA driver 580.65)
///   0  NVIDIA H100 80GB HBM3  GPU-1b2c3d4e-...  79.6GiB
///      MIG 1g.10gb  MIG-5f6a7b8c-...  9.8GiB
/// custom: nvme=1
/// ```
///
/// MIG lines appear under a GPU only when it has MIG instances, the `custom` line only when
/// there are custom resources; with no GPUs the line reads `gpus: none`.
pub fn describe(inventory: &Inventory, driver: Option<&str>) -> String {
    let mut text = format!("cpus: {}\nmemory: {}\n", inventory.cpus, human_size(inventory.memory));
    let driver = driver
        .map(|driver| format!(" (NVIDIA driver {driver})"))
        .unwrap_or_default();
    if inventory.gpus.is_empty() {
        let _ = write!(text, "gpus: none{driver}");
    } else {
        let _ = write!(text, "gpus: {}{driver}", inventory.gpus.len());
    }
    let index_width = inventory
        .gpus
        .iter()
        .map(|gpu| gpu.index.to_string().len())
        .max()
        .unwrap_or(1);
    let model_width = inventory.gpus.iter().map(|gpu| gpu.model.len()).max().unwrap_or(0);
    for gpu in &inventory.gpus {
        let (index, model, uuid, memory) = (gpu.index, &gpu.model, &gpu.uuid, human_size(gpu.memory));
        let _ = write!(
            text,
            "\n  {index:>index_width$}  {model:<model_width$}  {uuid}  {memory}"
        );
        for mig in &gpu.mig {
            let (name, uuid, memory) = (&mig.name, &mig.uuid, human_size(mig.memory));
            let _ = write!(text, "\n  {:index_width$}  MIG {name}  {uuid}  {memory}", "");
        }
    }
    if !inventory.custom.is_empty() {
        let entries: Vec<String> = inventory
            .custom
            .iter()
            .map(|(name, amount)| format!("{name}={amount}"))
            .collect();
        let _ = write!(text, "\ncustom: {}", entries.join(", "));
    }
    text
}

#[cfg(test)]
mod tests {
    use tune_core::resources::MigInfo;

    use super::*;

    const MEMINFO: &str = "\
MemTotal:       131891524 kB
MemFree:        98765432 kB
MemAvailable:   120000000 kB
Buffers:          123456 kB
";

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        assert_eq!(parse_meminfo_total(MEMINFO), Some(131_891_524 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\nMemTotal: 2 kB\n"), Some(2048));
    }

    #[test]
    fn meminfo_without_a_readable_total_is_none() {
        assert_eq!(parse_meminfo_total(""), None);
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: lots kB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: 12 MB\n"), None);
        assert_eq!(parse_meminfo_total("MemTotal: 18446744073709551615 kB\n"), None);
    }

    #[test]
    fn human_sizes_round_to_one_decimal() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(100), "100B");
        assert_eq!(human_size(1536), "1.5KiB");
        assert_eq!(human_size(512 << 20), "512MiB");
        assert_eq!(human_size(131_891_524 * 1024), "125.8GiB");
        assert_eq!(human_size(85_520_809_984), "79.6GiB");
        assert_eq!(human_size((1 << 30) - 1), "1GiB");
        assert_eq!(human_size(u64::MAX), "16EiB");
    }

    #[test]
    fn detect_fills_in_the_machine() {
        let inventory = detect(None, None, Vec::new(), BTreeMap::new()).unwrap();
        let parallelism = std::thread::available_parallelism().unwrap().get() as f64;
        assert_eq!(inventory.cpus, parallelism);
        if std::path::Path::new(MEMINFO_PATH).exists() {
            assert!(inventory.memory > 0);
        }
    }

    #[test]
    fn detect_keeps_what_it_is_given() {
        let custom = BTreeMap::from([("nvme".to_owned(), 1.0)]);
        let gpus = crate::gpu::discover(&crate::gpu::GpuSelection::Fake(2)).unwrap().gpus;
        let inventory = detect(Some(1000.0), Some(1 << 30), gpus.clone(), custom.clone()).unwrap();
        assert_eq!(
            inventory,
            Inventory {
                cpus: 1000.0,
                memory: 1 << 30,
                gpus,
                custom
            }
        );
    }

    #[test]
    fn detect_rejects_cpus_that_are_not_positive() {
        for cpus in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let error = detect(Some(cpus), None, Vec::new(), BTreeMap::new()).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("--cpus {cpus}: must be a finite number above 0")
            );
        }
    }

    #[test]
    fn detect_rejects_invalid_custom_entries() {
        let custom = BTreeMap::from([("gpu".to_owned(), 1.0)]);
        let error = detect(None, None, Vec::new(), custom).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--resource gpu=1: gpu is built in, set it with --gpus"
        );
    }

    #[test]
    fn parses_custom_resources() {
        assert_eq!(parse_custom("nvme=1"), Ok(("nvme".to_owned(), 1.0)));
        assert_eq!(parse_custom("scratch_ssd2 = 0.5"), Ok(("scratch_ssd2".to_owned(), 0.5)));
        assert_eq!(parse_custom("licence=0"), Ok(("licence".to_owned(), 0.0)));
    }

    #[test]
    fn rejects_malformed_custom_resources_naming_the_text() {
        let cases = [
            ("nvme", r#"--resource "nvme": expected name=amount, like nvme=1"#),
            (
                "nvme=",
                r#"--resource "nvme=": the amount must be a finite number >= 0, got """#,
            ),
            (
                "nvme=x",
                r#"--resource "nvme=x": the amount must be a finite number >= 0, got "x""#,
            ),
            (
                "nvme=-1",
                r#"--resource "nvme=-1": the amount must be a finite number >= 0, got -1"#,
            ),
            (
                "nvme=inf",
                r#"--resource "nvme=inf": the amount must be a finite number >= 0, got inf"#,
            ),
            (
                "nvme=NaN",
                r#"--resource "nvme=NaN": the amount must be a finite number >= 0, got NaN"#,
            ),
            (
                "NVMe=1",
                r#"--resource "NVMe=1": the name "NVMe" must be a lowercase letter followed by lowercase letters, digits or _"#,
            ),
            (
                "2x=1",
                r#"--resource "2x=1": the name "2x" must be a lowercase letter followed by lowercase letters, digits or _"#,
            ),
            (
                "=1",
                r#"--resource "=1": the name "" must be a lowercase letter followed by lowercase letters, digits or _"#,
            ),
            (
                "fast-disk=1",
                r#"--resource "fast-disk=1": the name "fast-disk" must be a lowercase letter followed by lowercase letters, digits or _"#,
            ),
            ("cpu=2", r#"--resource "cpu=2": cpu is built in, set it with --cpus"#),
            ("gpu=1", r#"--resource "gpu=1": gpu is built in, set it with --gpus"#),
            (
                "memory=8",
                r#"--resource "memory=8": memory is built in, set it with --memory"#,
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_custom(text).map_err(|error| error.to_string()),
                Err(expected.to_owned()),
                "{text}"
            );
        }
    }

    #[test]
    fn describes_an_inventory_with_gpus_mig_and_custom_resources() {
        let gib = 1u64 << 30;
        let mut gpus = crate::gpu::discover(&crate::gpu::GpuSelection::Fake(2)).unwrap().gpus;
        gpus[0].uuid = "GPU-0000".to_owned();
        gpus[1].uuid = "GPU-1111".to_owned();
        gpus[1].model = "NVIDIA H100".to_owned();
        gpus[1].mig = vec![MigInfo {
            uuid: "MIG-aaaa".to_owned(),
            name: "1g.10gb".to_owned(),
            memory: 10 * gib,
        }];
        let inventory = Inventory {
            cpus: 16.0,
            memory: 64 * gib,
            gpus,
            custom: BTreeMap::from([("nvme".to_owned(), 1.0), ("licence".to_owned(), 0.5)]),
        };
        let expected = "\
cpus: 16
memory: 64GiB
gpus: 2 (NVIDIA driver 580.65)
  0  fake GPU     GPU-0000  80GiB
  1  NVIDIA H100  GPU-1111  80GiB
     MIG 1g.10gb  MIG-aaaa  10GiB
custom: licence=0.5, nvme=1";
        assert_eq!(describe(&inventory, Some("580.65")), expected);
    }

    #[test]
    fn describes_a_machine_without_gpus() {
        let inventory = Inventory {
            cpus: 2.5,
            memory: 0,
            gpus: Vec::new(),
            custom: BTreeMap::new(),
        };
        assert_eq!(describe(&inventory, None), "cpus: 2.5\nmemory: 0B\ngpus: none");
    }
}
