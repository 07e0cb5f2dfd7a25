//! GPU discovery: which NVIDIA GPUs (and MIG instances) this machine offers to trials.
//!
//! `rung agent --gpus` picks the source ([`GpuSelection`]): `auto` asks the NVIDIA driver
//! through NVML, `0,2` does the same and keeps only the listed devices, `none` offers no GPUs,
//! and `fake:N` invents `N` GPUs so placement and `CUDA_VISIBLE_DEVICES` can be exercised on a
//! machine without any. [`discover`] turns the selection into a [`Discovery`].
//!
//! NVML is loaded at run time (`libnvidia-ml.so.1`), so the agent builds and runs on machines
//! without the driver: there `auto` finds no GPUs and says so in [`Discovery::note`]. All NVML
//! calls live in `query_nvml` and `query_mig`.
//!
//! An index here is NVML's index, which follows PCI bus order; CUDA's default order may differ,
//! so whoever sets `CUDA_VISIBLE_DEVICES` should prefer the device's UUID.

use std::fmt;
use std::str::FromStr;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use tune_core::resources::{GpuInfo, MigInfo};

/// The shared library NVML is loaded from (the name `nvml-wrapper` uses on Linux).
pub const NVML_LIBRARY: &str = "libnvidia-ml.so.1";

/// The most GPUs `fake:N` may invent.
pub const MAX_FAKE_GPUS: u32 = 64;

/// Memory of each fake GPU: 80 GiB, like an H100.
pub const FAKE_GPU_MEMORY: u64 = 80 << 30;

/// Model name of each fake GPU.
pub const FAKE_GPU_MODEL: &str = "fake GPU";

/// NVML's value for "MIG mode enabled" (`NVML_DEVICE_MIG_ENABLE`, not re-exported by
/// `nvml-wrapper`).
const NVML_MIG_ENABLED: u32 = 1;

/// The accepted forms of `--gpus`, quoted in parse errors.
const ACCEPTED_FORMS: &str = "expected auto, none, a list of GPU indices like 0,2, or fake:N";

/// Which GPUs an agent offers: the value of `rung agent --gpus`.
///
/// Parses from and displays as `auto`, `none`, `0,2` or `fake:N`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GpuSelection {
    /// Every GPU the NVIDIA driver reports; none (with a note) when there is no driver.
    #[default]
    Auto,
    /// No GPUs; NVML is not touched.
    None,
    /// Only these NVML indices; each must exist.
    Indices(Vec<u32>),
    /// This many GPUs that do not exist, for placement and `CUDA_VISIBLE_DEVICES` only.
    Fake(u32),
}

impl FromStr for GpuSelection {
    type Err = GpuError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| GpuError::InvalidSelection {
            value: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        match trimmed {
            "auto" => return Ok(GpuSelection::Auto),
            "none" => return Ok(GpuSelection::None),
            _ => {}
        }
        if let Some(count) = trimmed.strip_prefix("fake:") {
            let count = parse_digits(count.trim())
                .filter(|count| (1..=MAX_FAKE_GPUS).contains(count))
                .ok_or_else(|| invalid(format!("fake:N needs a whole number N from 1 to {MAX_FAKE_GPUS}")))?;
            return Ok(GpuSelection::Fake(count));
        }
        let mut indices = Vec::new();
        for item in trimmed.split(',') {
            let index = parse_digits(item.trim()).ok_or_else(|| invalid(ACCEPTED_FORMS.to_owned()))?;
            if indices.contains(&index) {
                return Err(invalid(format!("GPU {index} is listed twice")));
            }
            indices.push(index);
        }
        Ok(GpuSelection::Indices(indices))
    }
}

impl fmt::Display for GpuSelection {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuSelection::Auto => formatter.write_str("auto"),
            GpuSelection::None => formatter.write_str("none"),
            GpuSelection::Indices(indices) => formatter.write_str(&join_indices(indices, ",")),
            GpuSelection::Fake(count) => write!(formatter, "fake:{count}"),
        }
    }
}

/// A non-empty run of ASCII digits as a `u32` (`str::parse` alone would also take `+1`).
fn parse_digits(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `[0, 1]` as `"0, 1"` (with `separator` = `", "`).
fn join_indices(indices: &[u32], separator: &str) -> String {
    indices.iter().map(u32::to_string).collect::<Vec<_>>().join(separator)
}

/// What [`discover`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Discovery {
    /// The GPUs this agent offers, in NVML index order.
    pub gpus: Vec<GpuInfo>,
    /// The NVIDIA driver version, when NVML was loaded and reported it.
    pub driver: Option<String>,
    /// Something the operator should read at start, e.g. that no driver was found.
    pub note: Option<String>,
}

/// Why GPU discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// `--gpus` has a value that is not one of the accepted forms.
    #[error("--gpus {value:?}: {reason}")]
    InvalidSelection {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--gpus` lists indices, but NVML could not be loaded.
    #[error("--gpus {selection}: no NVIDIA driver found ({reason})")]
    NoDriver {
        /// The selection, as `--gpus` would spell it.
        selection: String,
        /// Why NVML could not be loaded.
        reason: String,
    },
    /// `--gpus` lists an index the driver does not report.
    #[error(
        "--gpus {selection}: there is no GPU {index}, this machine has {}",
        describe_found(found)
    )]
    UnknownIndex {
        /// The selection, as `--gpus` would spell it.
        selection: String,
        /// The first listed index that does not exist.
        index: u32,
        /// The indices the driver reports.
        found: Vec<u32>,
    },
    /// NVML was loaded but failed to initialise (no permission, driver/library mismatch, ...).
    #[error("NVML ({NVML_LIBRARY}) failed to initialise: {source} (--gpus none runs without GPUs)")]
    Init {
        /// NVML's error.
        source: NvmlError,
    },
    /// An NVML query about the GPUs failed.
    #[error("NVML: reading {what}: {source}")]
    Query {
        /// What was being read, e.g. `the name of GPU 0`.
        what: String,
        /// NVML's error.
        source: NvmlError,
    },
}

/// `"GPUs 0, 1"`, `"GPU 0"` or `"no GPUs"`, for [`GpuError::UnknownIndex`].
fn describe_found(found: &[u32]) -> String {
    match found {
        [] => "no GPUs".to_owned(),
        [single] => format!("GPU {single}"),
        _ => format!("GPUs {}", join_indices(found, ", ")),
    }
}

/// Finds the GPUs `selection` asks for.
///
/// `Auto` on a machine without the NVIDIA driver is not an error: it returns no GPUs and a
/// [`Discovery::note`] saying so. `Indices` there is an error, and so is an index the driver
/// does not report. `None` and `Fake` never touch NVML.
pub fn discover(selection: &GpuSelection) -> Result<Discovery, GpuError> {
    match selection {
        GpuSelection::None => Ok(Discovery::default()),
        GpuSelection::Fake(count) => Ok(fake_discovery(*count)),
        GpuSelection::Auto => match query_nvml()? {
            NvmlProbe::Found { gpus, driver } => Ok(Discovery {
                gpus,
                driver,
                note: None,
            }),
            NvmlProbe::NoDriver { reason } => {
                tracing::debug!(%reason, "NVML could not be loaded");
                let note = format!("no NVIDIA driver found ({NVML_LIBRARY}): running without GPUs");
                Ok(Discovery {
                    gpus: Vec::new(),
                    driver: None,
                    note: Some(note),
                })
            }
        },
        GpuSelection::Indices(indices) => match query_nvml()? {
            NvmlProbe::Found { gpus, driver } => {
                let gpus = keep_indices(gpus, indices).map_err(|(index, found)| GpuError::UnknownIndex {
                    selection: selection.to_string(),
                    index,
                    found,
                })?;
                Ok(Discovery {
                    gpus,
                    driver,
                    note: None,
                })
            }
            NvmlProbe::NoDriver { reason } => Err(GpuError::NoDriver {
                selection: selection.to_string(),
                reason,
            }),
        },
    }
}

/// Keeps the GPUs whose index is listed, in their own order. `Err` carries the first listed
/// index that is not among them and the indices that are.
fn keep_indices(gpus: Vec<GpuInfo>, indices: &[u32]) -> Result<Vec<GpuInfo>, (u32, Vec<u32>)> {
    let found: Vec<u32> = gpus.iter().map(|gpu| gpu.index).collect();
    if let Some(missing) = indices.iter().find(|index| !found.contains(index)) {
        return Err((*missing, found));
    }
    Ok(gpus.into_iter().filter(|gpu| indices.contains(&gpu.index)).collect())
}

/// `count` GPUs that do not exist, with stable, distinct UUIDs.
fn fake_discovery(count: u32) -> Discovery {
    let gpus = (0..count)
        .map(|index| GpuInfo {
            index,
            uuid: fake_uuid(index),
            model: FAKE_GPU_MODEL.to_owned(),
            memory: FAKE_GPU_MEMORY,
            mig: Vec::new(),
        })
        .collect();
    let plural = if count == 1 { "" } else { "s" };
    let note = format!("{count} fake GPU{plural}: placement and CUDA_VISIBLE_DEVICES only, nothing runs on them");
    Discovery {
        gpus,
        driver: None,
        note: Some(note),
    }
}

/// A UUID shaped like NVML's (`GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`) whose second group
/// reads `fake`; the first group is a hash of the index, the last group the index itself.
fn fake_uuid(index: u32) -> String {
    // splitmix64's finaliser: a fixed, well-mixed function of the index.
    let mut mixed = u64::from(index).wrapping_add(0x9e37_79b9_7f4a_7c15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    mixed ^= mixed >> 31;
    format!("GPU-{:08x}-fake-0000-0000-{index:012x}", mixed >> 32)
}

/// What NVML said, short of an error.
enum NvmlProbe {
    /// NVML could not be loaded: no driver on this machine.
    NoDriver {
        /// NVML's error, as text.
        reason: String,
    },
    /// NVML is up; these are its devices.
    Found {
        /// Every device, in NVML index order.
        gpus: Vec<GpuInfo>,
        /// The driver version, when NVML reports it.
        driver: Option<String>,
    },
}

/// Loads NVML and lists every device with its MIG instances.
///
/// A missing library or driver is [`NvmlProbe::NoDriver`]; any other failure to initialise or
/// to read a device's identity is an error. Failures reading MIG are warned about and read as
/// "no MIG".
fn query_nvml() -> Result<NvmlProbe, GpuError> {
    let nvml = match Nvml::init() {
        Ok(nvml) => nvml,
        // libloading's own text already names the library and the reason.
        Err(NvmlError::LibloadingError(error)) => {
            return Ok(NvmlProbe::NoDriver {
                reason: error.to_string(),
            });
        }
        Err(error @ (NvmlError::LibraryNotFound | NvmlError::FailedToLoadSymbol(_) | NvmlError::DriverNotLoaded)) => {
            return Ok(NvmlProbe::NoDriver {
                reason: error.to_string(),
            });
        }
        Err(source) => return Err(GpuError::Init { source }),
    };
    let query = |what: String| move |source| GpuError::Query { what, source };

    let driver = nvml
        .sys_driver_version()
        .inspect_err(|error| tracing::warn!(%error, "NVML: cannot read the driver version"))
        .ok();
    let count = nvml.device_count().map_err(query("the device count".to_owned()))?;
    let mut gpus = Vec::with_capacity(count as usize);
    for index in 0..count {
        let device = nvml.device_by_index(index).map_err(query(format!("GPU {index}")))?;
        let uuid = device.uuid().map_err(query(format!("the UUID of GPU {index}")))?;
        let model = device.name().map_err(query(format!("the name of GPU {index}")))?;
        let memory = match device.memory_info() {
            Ok(info) => info.total,
            // Unified-memory parts (e.g. GB10) have no framebuffer of their own to report.
            Err(error) => {
                tracing::warn!(gpu = index, %error, "NVML: cannot read the GPU's memory; offering it with 0 bytes");
                0
            }
        };
        let mig = query_mig(&device).unwrap_or_else(|error| {
            tracing::warn!(gpu = index, %error, "NVML: cannot list MIG instances; treating the GPU as without MIG");
            Vec::new()
        });
        gpus.push(GpuInfo {
            index,
            uuid,
            model,
            memory,
            mig,
        });
    }
    Ok(NvmlProbe::Found { gpus, driver })
}

/// The MIG instances of `device`: none when MIG is unsupported or disabled.
fn query_mig(device: &Device<'_>) -> Result<Vec<MigInfo>, NvmlError> {
    let mode = match device.mig_mode() {
        Ok(mode) => mode,
        Err(NvmlError::NotSupported) => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    if mode.current != NVML_MIG_ENABLED {
        return Ok(Vec::new());
    }
    let slots = device.mig_device_count()?;
    let mut instances = Vec::new();
    for slot in 0..slots {
        let instance = match device.mig_device_by_index(slot) {
            Ok(instance) => instance,
            // Slots are sparse: an empty one is not an error.
            Err(NvmlError::NotFound) => continue,
            Err(error) => return Err(error),
        };
        let uuid = instance.uuid()?;
        let name = instance.name().map(|name| mig_profile(&name)).unwrap_or_else(|error| {
            tracing::warn!(%uuid, %error, "NVML: cannot read the MIG instance's name");
            "unknown".to_owned()
        });
        let memory = instance.memory_info()?.total;
        instances.push(MigInfo { uuid, name, memory });
    }
    Ok(instances)
}

/// The profile in a MIG device's name: `"NVIDIA H100 80GB HBM3 MIG 1g.10gb"` → `"1g.10gb"`;
/// a name without `MIG ` is kept whole.
fn mig_profile(name: &str) -> String {
    match name.rsplit_once("MIG ") {
        Some((_, profile)) if !profile.trim().is_empty() => profile.trim().to_owned(),
        _ => name.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(text: &str) -> Result<GpuSelection, String> {
        text.parse::<GpuSelection>().map_err(|error| error.to_string())
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(parse("auto"), Ok(GpuSelection::Auto));
        assert_eq!(parse("none"), Ok(GpuSelection::None));
        assert_eq!(parse("0"), Ok(GpuSelection::Indices(vec![0])));
        assert_eq!(parse("0,2"), Ok(GpuSelection::Indices(vec![0, 2])));
        assert_eq!(parse(" 3, 1 "), Ok(GpuSelection::Indices(vec![3, 1])));
        assert_eq!(parse("fake:1"), Ok(GpuSelection::Fake(1)));
        assert_eq!(parse("fake:64"), Ok(GpuSelection::Fake(64)));
    }

    #[test]
    fn rejects_unknown_forms_naming_the_value_and_the_accepted_forms() {
        let expected =
            |value: &str| format!("--gpus {value:?}: expected auto, none, a list of GPU indices like 0,2, or fake:N");
        for value in [
            "x",
            "",
            "all",
            "Auto",
            "0,",
            ",0",
            "0,,2",
            "-1",
            "+1",
            "1.5",
            "0;2",
            "4294967296",
        ] {
            assert_eq!(parse(value), Err(expected(value)), "{value:?}");
        }
    }

    #[test]
    fn rejects_duplicate_indices() {
        assert_eq!(
            parse("0,2,0"),
            Err(r#"--gpus "0,2,0": GPU 0 is listed twice"#.to_owned())
        );
    }

    #[test]
    fn rejects_fake_counts_out_of_range() {
        for value in ["fake:0", "fake:65", "fake:", "fake:x", "fake:-1"] {
            assert_eq!(
                parse(value),
                Err(format!("--gpus {value:?}: fake:N needs a whole number N from 1 to 64"))
            );
        }
    }

    #[test]
    fn displays_as_it_parses() {
        for text in ["auto", "none", "0", "0,2", "fake:3"] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
    }

    proptest! {
        #[test]
        fn index_lists_round_trip(indices in proptest::collection::btree_set(0u32..1000, 1..8)) {
            let selection = GpuSelection::Indices(indices.into_iter().collect());
            prop_assert_eq!(parse(&selection.to_string()), Ok(selection));
        }
    }

    #[test]
    fn fake_discovery_numbers_gpus_from_zero_with_stable_distinct_uuids() {
        let discovery = discover(&GpuSelection::Fake(4)).unwrap();
        let indices: Vec<u32> = discovery.gpus.iter().map(|gpu| gpu.index).collect();
        assert_eq!(indices, [0, 1, 2, 3]);
        let uuids: std::collections::BTreeSet<&str> = discovery.gpus.iter().map(|gpu| gpu.uuid.as_str()).collect();
        for uuid in &uuids {
            assert!(uuid.starts_with("GPU-"), "{uuid}");
            let groups: Vec<usize> = uuid["GPU-".len()..].split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{uuid}");
        }
        assert_eq!(uuids.len(), 4);
        assert!(
            discovery
                .gpus
                .iter()
                .all(|gpu| gpu.model == "fake GPU" && gpu.memory == 80 << 30)
        );
        assert!(discovery.gpus.iter().all(|gpu| gpu.mig.is_empty()));
        assert_eq!(discovery.driver, None);
        assert_eq!(
            discovery.note.as_deref(),
            Some("4 fake GPUs: placement and CUDA_VISIBLE_DEVICES only, nothing runs on them")
        );
        // Stable: the same index gets the same UUID every time, whatever the count.
        assert_eq!(
            discover(&GpuSelection::Fake(1)).unwrap().gpus[0].uuid,
            discovery.gpus[0].uuid
        );
        assert_eq!(fake_uuid(0), fake_uuid(0));
        assert_ne!(fake_uuid(0), fake_uuid(1));
        assert_eq!(
            discover(&GpuSelection::Fake(1)).unwrap().note.as_deref(),
            Some("1 fake GPU: placement and CUDA_VISIBLE_DEVICES only, nothing runs on them")
        );
    }

    #[test]
    fn fake_uuids_are_distinct_for_every_allowed_index() {
        let uuids: std::collections::BTreeSet<String> = (0..MAX_FAKE_GPUS).map(fake_uuid).collect();
        assert_eq!(uuids.len(), MAX_FAKE_GPUS as usize);
    }

    #[test]
    fn none_offers_no_gpus() {
        assert_eq!(discover(&GpuSelection::None).unwrap(), Discovery::default());
    }

    /// On a machine without the driver `auto` is fine and says why there are no GPUs; on one
    /// with the driver it lists devices with real UUIDs.
    #[test]
    fn auto_discovery_never_fails_for_lack_of_a_driver() {
        let discovery = discover(&GpuSelection::Auto).unwrap();
        if discovery.gpus.is_empty() && discovery.driver.is_none() {
            assert_eq!(
                discovery.note.as_deref(),
                Some("no NVIDIA driver found (libnvidia-ml.so.1): running without GPUs")
            );
        }
        for (position, gpu) in discovery.gpus.iter().enumerate() {
            assert_eq!(gpu.index as usize, position);
            assert!(gpu.uuid.starts_with("GPU-"), "{}", gpu.uuid);
            assert!(gpu.mig.iter().all(|mig| mig.uuid.starts_with("MIG-")), "{:?}", gpu.mig);
        }
    }

    #[test]
    fn indices_need_a_driver_and_existing_gpus() {
        let auto = discover(&GpuSelection::Auto).unwrap();
        let selection = GpuSelection::Indices(vec![0, 2]);
        if auto.driver.is_none() && auto.gpus.is_empty() {
            let message = discover(&selection).unwrap_err().to_string();
            assert!(message.starts_with("--gpus 0,2: no NVIDIA driver found ("), "{message}");
            assert!(message.ends_with(')') && !message.contains("libloading"), "{message}");
            return;
        }
        let beyond = auto.gpus.len() as u32;
        let message = discover(&GpuSelection::Indices(vec![0, beyond]))
            .unwrap_err()
            .to_string();
        let found = describe_found(&auto.gpus.iter().map(|gpu| gpu.index).collect::<Vec<_>>());
        assert_eq!(
            message,
            format!("--gpus 0,{beyond}: there is no GPU {beyond}, this machine has {found}")
        );
    }

    #[test]
    fn keep_indices_filters_in_device_order_and_names_the_missing_index() {
        let gpus = fake_discovery(3).gpus;
        let kept = keep_indices(gpus.clone(), &[2, 0]).unwrap();
        assert_eq!(kept.iter().map(|gpu| gpu.index).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(keep_indices(gpus, &[1, 5, 7]).unwrap_err(), (5, vec![0, 1, 2]));
    }

    #[test]
    fn unknown_index_message_lists_what_exists() {
        let error = |found: Vec<u32>| GpuError::UnknownIndex {
            selection: "3".to_owned(),
            index: 3,
            found,
        };
        assert_eq!(
            error(vec![0, 1]).to_string(),
            "--gpus 3: there is no GPU 3, this machine has GPUs 0, 1"
        );
        assert_eq!(
            error(vec![0]).to_string(),
            "--gpus 3: there is no GPU 3, this machine has GPU 0"
        );
        assert_eq!(
            error(vec![]).to_string(),
            "--gpus 3: there is no GPU 3, this machine has no GPUs"
        );
    }

    #[test]
    fn mig_profile_is_the_part_after_mig() {
        assert_eq!(mig_profile("NVIDIA H100 80GB HBM3 MIG 1g.10gb"), "1g.10gb");
        assert_eq!(mig_profile("NVIDIA A100-SXM4-40GB MIG 3g.20gb"), "3g.20gb");
        assert_eq!(mig_profile("1g.10gb"), "1g.10gb");
    }
}
