//! End to end: reports per second through the whole engine — in-process trials with no
//! compute, the controller, the driver's group commit and the durable SQLite store.
#![allow(missing_docs)] // criterion_group! generates undocumented functions

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rung::spec::Durability;
use rung::workloads::{LearningCurve, learning_curve_space};
use rung::{Decision, Mode, Tuner};

const TRIALS: i64 = 200;
const STEPS: u64 = 50;

fn sweep(runtime: &tokio::runtime::Runtime, concurrency: usize, durability: Durability) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let tuner = Tuner::builder()
        .space(learning_curve_space())
        .metric("loss", Mode::Min)
        .num_samples(TRIALS)
        .max_concurrent(concurrency)
        .durability(durability)
        .seed(1)
        .progress(false)
        .interrupt_on_ctrl_c(false)
        .store(dir.path().join("bench.db"))
        .build()
        .unwrap();
    let start = Instant::now();
    let result = runtime
        .block_on(tuner.run(|mut trial| async move {
            let curve = LearningCurve::from_config(trial.config()).unwrap();
            for step in 1..=STEPS {
                if trial.report(step, [("loss", curve.loss(step))]).await != Decision::Continue {
                    break;
                }
            }
            anyhow::Ok(())
        }))
        .unwrap();
    assert_eq!(result.count("completed"), TRIALS as usize);
    start.elapsed()
}

fn end_to_end(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("sweep");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements(TRIALS as u64 * STEPS));
    for durability in [Durability::Process, Durability::Power] {
        for concurrency in [1, 8, 64] {
            group.bench_function(
                format!(
                    "{TRIALS} trials x {STEPS} reports, {concurrency} at once, durability {}",
                    durability.label()
                ),
                |b| b.iter_custom(|iterations| (0..iterations).map(|_| sweep(&runtime, concurrency, durability)).sum()),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
