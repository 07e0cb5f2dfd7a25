//! Sampling speed: configs per second from a 10-parameter space with every kind of domain.
#![allow(missing_docs)] // criterion_group! generates undocumented functions

use std::collections::BTreeMap;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rung::Space;
use rung::tune_core::rng;

fn ten_parameter_space() -> Space {
    Space::from_json(&serde_json::json!({
        "lr": {"loguniform": [1e-5, 1e-1]},
        "weight_decay": {"qloguniform": [1e-6, 1e-2, 1e-6]},
        "momentum": {"uniform": [0.0, 0.99]},
        "warmup": {"quniform": [0, 1000, 50]},
        "layers": {"randint": [1, 8]},
        "width": {"qrandint": [32, 1024, 32]},
        "heads": {"lograndint": [1, 64]},
        "init_scale": {"normal": [1.0, 0.1]},
        "batch": {"choice": [16, 32, 64, 128, 256]},
        "optimizer": {"choice": [{"name": "sgd", "nesterov": {"choice": [true, false]}}, {"name": "adam", "beta1": {"uniform": [0.8, 0.99]}}]}
    }))
    .expect("a valid space")
}

fn sampling(c: &mut Criterion) {
    let space = ten_parameter_space();
    let mut rng = rng::stream(42, "bench");
    let grid = BTreeMap::new();
    let mut group = c.benchmark_group("sampling");
    group.throughput(Throughput::Elements(1));
    group.bench_function("10-parameter config", |b| b.iter(|| space.sample(&mut rng, &grid)));
    group.finish();
}

criterion_group!(benches, sampling);
criterion_main!(benches);
