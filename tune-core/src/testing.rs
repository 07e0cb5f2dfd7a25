//! Proptest strategies and small builders shared by the crates' tests (feature `testing`; always
//! on in tune-core's own tests).

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::resources::{Bundle, GpuInfo, Inventory, Placement, ResourceRequest};
use crate::space::Domain;

/// Any valid numeric domain: every float and integer kind, with bounds from tiny to huge.
pub fn numeric_domain() -> impl Strategy<Value = Domain> {
    let finite = -1e6f64..1e6;
    prop_oneof![
        (finite.clone(), 1e-6f64..1e6).prop_map(|(low, width)| Domain::Uniform { low, high: low + width }),
        (finite.clone(), 1e-3f64..1e6, 1e-3f64..10.0).prop_map(|(low, width, q)| Domain::QUniform {
            low,
            high: low + width.max(q),
            q
        }),
        (1e-12f64..1e3, 1.0001f64..1e6).prop_map(|(low, ratio)| Domain::LogUniform { low, high: low * ratio }),
        (1e-3f64..1e3, 2.0f64..1e3, 1e-3f64..1.0).prop_map(|(low, ratio, q)| Domain::QLogUniform {
            low,
            high: low * ratio + q,
            q
        }),
        (-1_000_000i64..1_000_000, 1i64..1_000_000).prop_map(|(low, width)| Domain::RandInt { low, high: low + width }),
        (-1_000i64..1_000, 1i64..50, 1i64..5).prop_map(|(low, q, n)| Domain::QRandInt {
            low,
            high: low + n * q,
            q
        }),
        (1i64..1_000, 1i64..100_000).prop_map(|(low, width)| Domain::LogRandInt { low, high: low + width }),
        (finite, 1e-6f64..1e3).prop_map(|(mu, sigma)| Domain::Normal { mu, sigma }),
    ]
}

/// One GiB in bytes.
pub const GIB: u64 = 1 << 30;

/// `count` GPUs of one model, indexed from 0, with 80GiB each and no MIG instances.
pub fn gpus(count: u32, model: &str) -> Vec<GpuInfo> {
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

/// A machine with `gpu_count` H100s and no custom resources.
pub fn machine(cpus: f64, memory: u64, gpu_count: u32) -> Inventory {
    Inventory {
        cpus,
        memory,
        gpus: gpus(gpu_count, "H100"),
        custom: BTreeMap::new(),
    }
}

/// A bundle of CPUs and GPUs only.
pub fn bundle(cpu: f64, gpu: f64) -> Bundle {
    Bundle {
        cpu,
        gpu,
        ..Bundle::default()
    }
}

/// A request of `bundles`, laid out by `placement`.
pub fn request(bundles: Vec<Bundle>, placement: Placement) -> ResourceRequest {
    ResourceRequest { bundles, placement }
}
