//! Reading a sweep back from its store: experiments, trials, reports, checkpoints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use tune_core::trial::TrialId;
use tune_runtime::store::Store;
use tune_sweep::Spec;

use crate::convert::{map_to_py, metrics_to_py};
use crate::core_to_py_err;

/// Parses a trial id as Python code writes it: `t3` (or `3`).
pub fn parse_trial_id(text: &str) -> PyResult<TrialId> {
    text.strip_prefix('t')
        .unwrap_or(text)
        .parse()
        .map(TrialId)
        .map_err(|_| PyValueError::new_err(format!("{text:?} is not a trial id (t1, t2, ...)")))
}

/// The experiment (the newest when `experiment` is None) with every trial, as a dict:
/// `experiment`, `store`, `metric`, `mode`, `seed`, `status` (`finished`, or `interrupted`
/// when it can be resumed), `end_cause`, `elapsed_s`, `spec`, `best_trial`, `trials_root` (the
/// folder of the trial folders) and `trials`, each trial a tuple of [`TRIAL_FIELDS`]: `trial_id`,
/// `status`, `config`, `step`, `metrics` (its last report), `best` (`(value, step)`), `error`,
/// `launches`, `failures` and `checkpoints` (`[(step, path, value)]`, oldest first).
///
/// Tuples rather than dicts, and status labels and dict keys shared among the trials: a
/// 100,000-trial sweep's results are in memory twice while Python builds its `Result`s, and a
/// dict per trial with its own key strings tripled their size.
pub fn results_dict<'py>(py: Python<'py>, store_path: &Path, experiment: Option<&str>) -> PyResult<Bound<'py, PyDict>> {
    let store = Store::open(store_path).map_err(core_to_py_err)?;
    let info = store.experiment(experiment).map_err(core_to_py_err)?;
    let spec: Spec = serde_json::from_str(&info.spec).map_err(core_to_py_err)?;
    let trials = store.trials(info.id).map_err(core_to_py_err)?;
    let mut checkpoints: BTreeMap<TrialId, Vec<(u64, String, Option<f64>)>> = BTreeMap::new();
    for checkpoint in store.checkpoints(info.id).map_err(core_to_py_err)? {
        if !checkpoint.deleted {
            checkpoints
                .entry(checkpoint.trial)
                .or_default()
                .push((checkpoint.step, checkpoint.path, checkpoint.value));
        }
    }
    let trials_root = tune_sweep::tuner::trials_root(store_path, &info.name);
    // An experiment that is not finished was interrupted (or is running elsewhere): resumable.
    let status = if info.is_finished() { "finished" } else { "interrupted" };
    let out = PyDict::new(py);
    out.set_item("experiment", &info.name)?;
    out.set_item("store", store_path.display().to_string())?;
    out.set_item("metric", &spec.metric)?;
    out.set_item("mode", spec.mode.to_string())?;
    out.set_item("seed", info.seed)?;
    out.set_item("status", status)?;
    out.set_item("end_cause", info.end_cause.as_deref())?;
    out.set_item("elapsed_s", info.elapsed_ms as f64 / 1000.0)?;
    out.set_item("spec", &info.spec)?;
    out.set_item(
        "best_trial",
        tune_sweep::tuner::best_trial(&trials, spec.mode).map(|t| t.id.to_string()),
    )?;
    out.set_item("trials_root", trials_root.display().to_string())?;
    let list = PyList::empty(py);
    // Each trial's Rust copy is freed as soon as its Python one exists.
    for trial in trials {
        let metrics = match &trial.last {
            Some(report) => metrics_to_py(py, &report.metrics)?,
            None => PyDict::new(py),
        };
        let row = (
            trial.id.to_string(),
            PyString::intern(py, trial.status.label()),
            map_to_py(py, &trial.config.0)?,
            trial.last.as_ref().map(|r| r.step),
            metrics,
            trial.best,
            trial.error.as_deref(),
            trial.launches,
            trial.failures,
            checkpoints.remove(&trial.id).unwrap_or_default(),
        );
        list.append(row)?;
    }
    out.set_item("trials", list)?;
    Ok(out)
}

/// [`results_dict`] of a store on disk.
#[pyfunction]
#[pyo3(signature = (store, experiment = None))]
pub fn load_results<'py>(py: Python<'py>, store: PathBuf, experiment: Option<&str>) -> PyResult<Bound<'py, PyDict>> {
    results_dict(py, &store, experiment)
}

/// Every report of the experiment (or of one trial) in order: `[(trial_id, step, metrics)]`.
#[pyfunction]
#[pyo3(signature = (store, experiment = None, trial = None))]
pub fn load_reports<'py>(
    py: Python<'py>,
    store: PathBuf,
    experiment: Option<&str>,
    trial: Option<&str>,
) -> PyResult<Bound<'py, PyList>> {
    let trial = trial.map(parse_trial_id).transpose()?;
    let store = Store::open(&store).map_err(core_to_py_err)?;
    let info = store.experiment(experiment).map_err(core_to_py_err)?;
    let list = PyList::empty(py);
    for (id, report) in store.reports(info.id, trial).map_err(core_to_py_err)? {
        list.append((id.to_string(), report.step, metrics_to_py(py, &report.metrics)?))?;
    }
    Ok(list)
}

/// The experiments of a store, oldest first: `[{name, status, end_cause, created_at}]`.
#[pyfunction]
pub fn experiments<'py>(py: Python<'py>, store: PathBuf) -> PyResult<Bound<'py, PyList>> {
    let store = Store::open(&store).map_err(core_to_py_err)?;
    let list = PyList::empty(py);
    for info in store.experiments().map_err(core_to_py_err)? {
        let row = PyDict::new(py);
        row.set_item("name", &info.name)?;
        row.set_item("status", &info.status)?;
        row.set_item("end_cause", info.end_cause.as_deref())?;
        row.set_item("created_at", info.created_at)?;
        list.append(row)?;
    }
    Ok(list)
}
