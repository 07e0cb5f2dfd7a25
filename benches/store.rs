//! Store speed: reports appended with group commit at both durability levels (WAL without an
//! fsync, and WAL with an fsync per commit).
//!
//! Each iteration commits one batch of `n` reports — each report is an event in the log, a row
//! in `reports` and an update of its trial's row, as the driver writes them — in one
//! transaction. Throughput is in reports per second.
#![allow(missing_docs)] // criterion_group! generates undocumented functions

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rung::tune_core::controller::{Event, Record, TrialRow};
use rung::tune_core::trial::{Metrics, Report, TrialId, TrialStatus};
use rung::tune_core::value::Config;
use rung::tune_runtime::store::{Batch, Flush, LoggedEvent, Store};

fn batch(first_seq: u64, n: u64, trials: u64) -> Batch {
    let mut batch = Batch::default();
    let config: Config = serde_json::from_str(r#"{"lr": 0.001, "batch": 64, "layers": 3}"#).unwrap();
    for i in 0..n {
        let seq = first_seq + i;
        let trial = TrialId(seq % trials + 1);
        let report = Report {
            step: seq / trials + 1,
            metrics: Metrics::from([("loss".into(), 1.0 / (seq as f64 + 1.0)), ("accuracy".into(), 0.5)]),
        };
        batch.events.push(LoggedEvent {
            seq,
            at_ms: seq,
            event: Event::Reported {
                trial,
                report: report.clone(),
                checkpoint: None,
            },
        });
        batch.records.push(Record::Report {
            trial,
            report: report.clone(),
        });
        batch.records.push(Record::Trial(TrialRow {
            id: trial,
            status: TrialStatus::Running,
            config: config.clone(),
            failures: 0,
            launches: 1,
            last: Some(report),
            best: Some((1.0 / (seq as f64 + 1.0), seq / trials + 1)),
            error: None,
        }));
    }
    batch
}

fn group_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_or_create(&dir.path().join("bench.db")).unwrap();
    let experiment = store.create_experiment("bench", "{}", 0).unwrap();
    let mut next_seq = 1;
    let mut group = c.benchmark_group("store");
    for (flush, level) in [(Flush::Os, "process"), (Flush::Disk, "power")] {
        for n in [1u64, 64, 1024] {
            group.throughput(Throughput::Elements(n));
            group.bench_function(format!("commit {n} reports, durability {level}"), |b| {
                b.iter_batched(
                    || {
                        let prepared = batch(next_seq, n, 256);
                        next_seq += n;
                        prepared
                    },
                    |prepared| store.commit(experiment.id, &prepared, flush).unwrap(),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
