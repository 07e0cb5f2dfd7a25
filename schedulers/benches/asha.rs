//! ASHA decision cost: one stop-variant `on_result` that is checked at a rung already holding
//! 10³, 10⁵ or 10⁶ scores.
//!
//! Each measured call is a fresh trial's first result at the grace period, so it computes the
//! rung's cutoff and records one more score. The rung is filled outside the timed part; once
//! the measured calls have grown it by a tenth it is put back to its pre-filled state (outside
//! the timed part too), so the rung holds between N and about 1.2·N scores throughout.
#![allow(missing_docs)] // criterion_group! generates undocumented functions

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::Rng;
use tune_core::rng;
use tune_core::scheduler::{Scheduler, TrialReport};
use tune_core::trial::{Mode, Report, TrialId};
use tune_core::value::Config;
use tune_schedulers::asha::Asha;
use tune_schedulers::{AshaConfig, AshaType};

const GRACE_PERIOD: u64 = 1;

fn settings() -> AshaConfig {
    AshaConfig {
        kind: AshaType::Stop,
        time_attr: "step".into(),
        max_t: 81.0,
        grace_period: GRACE_PERIOD as f64,
        reduction_factor: 3.0,
        brackets: 1,
        stop_last_trials: true,
    }
}

fn result(report: &Report, loss: f64) -> TrialReport<'_> {
    TrialReport {
        report,
        value: loss,
        checkpointed: false,
        has_checkpoint: false,
    }
}

/// A scheduler whose first rung holds `recorded` scores (trials 1 to `recorded`).
fn prefilled(recorded: u64, report: &Report) -> Asha {
    let mut asha = Asha::new(&settings(), Mode::Min, 42);
    let mut losses = rng::stream(1, "bench-prefill");
    for trial in 1..=recorded {
        asha.on_trial_add(TrialId(trial), &Config::default());
        asha.on_result(TrialId(trial), &result(report, losses.random::<f64>()));
    }
    assert_eq!(asha.recorded(0, 0), recorded as usize);
    asha
}

fn decision_cost(c: &mut Criterion) {
    let report = Report {
        step: GRACE_PERIOD,
        metrics: BTreeMap::new(),
    };
    let mut group = c.benchmark_group("asha_stop_on_result");
    group.throughput(Throughput::Elements(1));
    for recorded in [1_000u64, 100_000, 1_000_000] {
        let template = prefilled(recorded, &report);
        let limit = (recorded + recorded / 10) as usize;
        let working = RefCell::new(template.clone());
        // Trials added in setup but not yet measured: the rung is reset only when there are none,
        // that is at the start of a batch, so no added trial is lost.
        let pending = Cell::new(0usize);
        let mut next_trial = recorded;
        let mut losses = rng::stream(2, "bench-measure");
        group.bench_with_input(BenchmarkId::from_parameter(recorded), &recorded, |b, _| {
            b.iter_batched(
                || {
                    let mut asha = working.borrow_mut();
                    if pending.get() == 0 && asha.recorded(0, 0) >= limit {
                        *asha = template.clone();
                    }
                    next_trial += 1;
                    let trial = TrialId(next_trial);
                    asha.on_trial_add(trial, &Config::default());
                    pending.set(pending.get() + 1);
                    (trial, losses.random::<f64>())
                },
                |(trial, loss)| {
                    pending.set(pending.get() - 1);
                    working
                        .borrow_mut()
                        .on_result(black_box(trial), &result(&report, black_box(loss)))
                },
                BatchSize::NumIterations((recorded / 10).clamp(1, 10_000)),
            )
        });
    }
    group.finish();
}

criterion_group!(benches, decision_cost);
criterion_main!(benches);
