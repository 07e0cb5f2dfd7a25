//! What an agent's machine has to offer: its CPUs, memory, GPUs (with their MIG instances) and
//! custom resources, as an [`Inventory`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sizes::human_size;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Bundle;
    use crate::testing::{GIB, gpus, machine};

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
}
