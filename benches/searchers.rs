//! Searcher speed (criterion): TPE suggestions with 1,000 and 10,000 completed trials in a
//! 10-parameter space, GP suggestions with 100 and 500 observations in 6 dimensions, and Sobol
//! points per second.
#![allow(missing_docs)] // criterion_group! generates undocumented functions

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rung::SearcherConfig;
use rung::Space;
use rung::tune_core::trial::Mode;
use rung::tune_search::AskTell;
use rung::tune_search::tpe::ten_parameter_space;
use rung::workloads::Synthetic;

/// A searcher that has been told `n` results of a cheap objective.
fn primed(config: &SearcherConfig, space: &Space, n: usize, objective: impl Fn(&rung::Config) -> f64) -> AskTell {
    let mut search = AskTell::new(config, space, Mode::Min, 1).unwrap();
    for _ in 0..n {
        let (trial, c) = search.ask().unwrap().unwrap();
        search.tell(trial, objective(&c));
    }
    search
}

fn searchers(c: &mut Criterion) {
    let space = ten_parameter_space();
    let objective = |config: &rung::Config| -> f64 {
        (0..4)
            .map(|i| config.get(&format!("u{i}")).unwrap().as_f64().unwrap().powi(2))
            .sum()
    };
    let mut group = c.benchmark_group("searchers");
    for n in [1_000, 10_000] {
        // The first n suggestions are the random start-up ones; the measured ones use the model.
        let tpe: SearcherConfig =
            serde_json::from_str(&format!(r#"{{"kind": "tpe", "n_startup_trials": {n}}}"#)).unwrap();
        let mut search = primed(&tpe, &space, n, objective);
        group.bench_function(format!("tpe suggest, {n} trials, 10 parameters"), |b| {
            b.iter(|| {
                let (trial, config) = search.ask().unwrap().unwrap();
                search.tell(trial, objective(&config));
            })
        });
    }
    group.sample_size(10);
    let hartmann = Synthetic::Hartmann6;
    for n in [100, 500] {
        let gp: SearcherConfig =
            serde_json::from_str(&format!(r#"{{"kind": "gp", "n_startup_trials": {n}}}"#)).unwrap();
        let mut search = primed(&gp, &hartmann.space(), n, |config| hartmann.value(config));
        group.bench_function(format!("gp suggest, {n} observations, 6 dimensions"), |b| {
            b.iter(|| {
                let (trial, config) = search.ask().unwrap().unwrap();
                search.tell(trial, hartmann.value(&config));
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("sobol");
    group.throughput(Throughput::Elements(1));
    let sobol: SearcherConfig = serde_json::from_str(r#"{"kind": "sobol"}"#).unwrap();
    let mut search = AskTell::new(&sobol, &space, Mode::Min, 1).unwrap();
    group.bench_function("sobol config, 10 parameters (through AskTell)", |b| {
        b.iter(|| search.ask().unwrap().unwrap())
    });
    let sequence = rung::tune_search::sobol::SobolSequence::scrambled(1);
    let mut index = 0u64;
    group.bench_function("sobol point, 10 dimensions (unit cube)", |b| {
        b.iter(|| {
            index += 1;
            sequence.point(index, 10)
        })
    });
    group.finish();
}

criterion_group!(benches, searchers);
criterion_main!(benches);
