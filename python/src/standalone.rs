//! Schedulers and searchers without a sweep, for users who keep their own training loop
//! (ask/tell): the Python classes in `rung.schedulers` and `rung.search` call these.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tune_core::scheduler::{Scheduler, TrialReport};
use tune_core::searcher::{Searcher, Suggestion, TrialResult};
use tune_core::space::Space;
use tune_core::trial::{Decision, Mode, Report, TrialId};
use tune_core::value::Config;
use tune_schedulers::SchedulerConfig;
use tune_search::SearcherSpec;

use crate::convert::{map_to_py, parse_json};
use crate::{core_to_py_err, lock};

fn parse_mode(mode: &str) -> PyResult<Mode> {
    match mode {
        "min" => Ok(Mode::Min),
        "max" => Ok(Mode::Max),
        other => Err(PyValueError::new_err(format!(
            "setting \"mode\": must be \"min\" or \"max\", got {other:?}"
        ))),
    }
}

fn parse_space(space_json: Option<&str>) -> PyResult<Space> {
    match space_json {
        None => Ok(Space::new()),
        Some(json) => Space::from_json(&parse_json("space", json)?).map_err(core_to_py_err),
    }
}

fn parse_config(config_json: Option<&str>) -> PyResult<Config> {
    match config_json {
        None => Ok(Config::default()),
        Some(json) => serde_json::from_value(parse_json("config", json)?)
            .map_err(|e| PyValueError::new_err(format!("config: {e}"))),
    }
}

fn decision_name(decision: Decision) -> &'static str {
    match decision {
        Decision::Continue => "CONTINUE",
        Decision::Stop => "STOP",
        Decision::Pause => "PAUSE",
    }
}

/// Maps the caller's trial names (any string) to the engine's sequential trial ids.
#[derive(Default)]
struct Names {
    ids: HashMap<String, TrialId>,
    names: Vec<String>,
}

impl Names {
    fn get(&self, name: &str) -> Option<TrialId> {
        self.ids.get(name).copied()
    }

    fn add(&mut self, name: &str) -> TrialId {
        let id = TrialId(self.names.len() as u64 + 1);
        self.ids.insert(name.to_owned(), id);
        self.names.push(name.to_owned());
        id
    }

    fn name(&self, id: TrialId) -> &str {
        &self.names[id.0 as usize - 1]
    }
}

struct SchedulerState {
    scheduler: Box<dyn Scheduler>,
    names: Names,
    checkpointed: BTreeSet<TrialId>,
}

/// A scheduler driven by hand: results in, decisions out.
#[pyclass(frozen, module = "rung._rung")]
pub struct NativeScheduler {
    state: Mutex<SchedulerState>,
}

impl SchedulerState {
    fn trial(&mut self, name: &str, config: Option<Config>) -> TrialId {
        match self.names.get(name) {
            Some(id) => id,
            None => {
                let id = self.names.add(name);
                self.scheduler.on_trial_add(id, &config.unwrap_or_default());
                id
            }
        }
    }

    fn known(&self, name: &str) -> PyResult<TrialId> {
        self.names
            .get(name)
            .ok_or_else(|| PyKeyError::new_err(format!("unknown trial {name:?}")))
    }
}

#[pymethods]
impl NativeScheduler {
    /// A scheduler of `config_json` (the `[scheduler]` table as JSON) for a metric optimised in
    /// `mode`; `space_json` is needed by PBT, which mutates configs.
    #[new]
    #[pyo3(signature = (config_json, mode, seed = 0, space_json = None))]
    fn new(config_json: &str, mode: &str, seed: u64, space_json: Option<&str>) -> PyResult<Self> {
        let config: SchedulerConfig =
            serde_json::from_str(config_json).map_err(|e| PyValueError::new_err(format!("scheduler: {e}")))?;
        let space = parse_space(space_json)?;
        let scheduler = config.build(parse_mode(mode)?, seed, &space).map_err(core_to_py_err)?;
        Ok(NativeScheduler {
            state: Mutex::new(SchedulerState {
                scheduler,
                names: Names::default(),
                checkpointed: BTreeSet::new(),
            }),
        })
    }

    /// Declares a trial and its config (optional: `on_result` declares unknown trials itself).
    #[pyo3(signature = (trial, config_json = None))]
    fn add(&self, trial: &str, config_json: Option<&str>) -> PyResult<()> {
        let config = parse_config(config_json)?;
        let mut state = lock(&self.state);
        if state.names.get(trial).is_some() {
            return Err(PyValueError::new_err(format!("trial {trial:?} was already added")));
        }
        state.trial(trial, Some(config));
        Ok(())
    }

    /// One result of `trial`: its step, the metric's value, every metric, and whether a
    /// checkpoint was taken at this step. Returns `CONTINUE`, `STOP` or `PAUSE`.
    #[pyo3(signature = (trial, step, value, metrics, checkpointed = false))]
    fn on_result(
        &self,
        trial: &str,
        step: u64,
        value: f64,
        metrics: BTreeMap<String, f64>,
        checkpointed: bool,
    ) -> &'static str {
        let mut state = lock(&self.state);
        let id = state.trial(trial, None);
        if checkpointed {
            state.checkpointed.insert(id);
        }
        let has_checkpoint = state.checkpointed.contains(&id);
        let report = Report { step, metrics };
        let decision = state.scheduler.on_result(
            id,
            &TrialReport {
                report: &report,
                value,
                checkpointed,
                has_checkpoint,
            },
        );
        decision_name(decision)
    }

    /// The trial ended for good.
    fn remove(&self, trial: &str) -> PyResult<()> {
        let mut state = lock(&self.state);
        let id = state.known(trial)?;
        state.scheduler.on_trial_remove(id);
        Ok(())
    }

    /// Of the paused trials in `paused`, the one to resume in a free slot, if any.
    fn choose_trial_to_resume(&self, paused: Vec<String>) -> PyResult<Option<String>> {
        let mut state = lock(&self.state);
        let ids = paused
            .iter()
            .map(|name| state.known(name))
            .collect::<PyResult<BTreeSet<_>>>()?;
        let chosen = state.scheduler.choose_trial_to_resume(&ids);
        Ok(chosen.map(|id| state.names.name(id).to_owned()))
    }

    /// Paused trials the scheduler has given up on.
    fn take_trials_to_stop(&self) -> Vec<String> {
        let mut state = lock(&self.state);
        let ids = state.scheduler.take_trials_to_stop();
        ids.into_iter().map(|id| state.names.name(id).to_owned()).collect()
    }

    /// No new trial will come (lets Hyperband work with the brackets it has).
    fn no_more_trials(&self) {
        lock(&self.state).scheduler.on_no_more_trials();
    }

    /// Right after a PAUSE from PBT: `(donor trial, new config)` to continue with, if any.
    fn take_exploit<'py>(&self, py: Python<'py>, trial: &str) -> PyResult<Option<(String, Bound<'py, PyDict>)>> {
        let mut state = lock(&self.state);
        let id = state.known(trial)?;
        match state.scheduler.take_exploit(id) {
            None => Ok(None),
            Some(exploit) => Ok(Some((
                state.names.name(exploit.donor).to_owned(),
                map_to_py(py, &exploit.config.0)?,
            ))),
        }
    }
}

struct SearcherState {
    searcher: Box<dyn Searcher>,
    names: Names,
    configs: HashMap<TrialId, Config>,
    exhausted: bool,
}

/// A searcher driven by hand: `suggest` a config for a trial, tell it the results.
#[pyclass(frozen, module = "rung._rung")]
pub struct NativeSearcher {
    state: Mutex<SearcherState>,
}

#[pymethods]
impl NativeSearcher {
    /// A searcher of `config_json` (the `[searcher]` table as JSON) over `space_json`, for
    /// `metric` optimised in `mode`.
    #[new]
    #[pyo3(signature = (config_json, space_json, metric, mode, seed = 0))]
    fn new(config_json: &str, space_json: &str, metric: &str, mode: &str, seed: u64) -> PyResult<Self> {
        let config: SearcherSpec =
            serde_json::from_str(config_json).map_err(|e| PyValueError::new_err(format!("searcher: {e}")))?;
        if config.warm_start.is_some() {
            return Err(PyValueError::new_err(
                "searcher: warm_start names an experiment of a store, so it needs a sweep (rung.Tuner); a standalone searcher learns from earlier results when you call on_complete with them first",
            ));
        }
        let space = parse_space(Some(space_json))?;
        let searcher = config
            .build(&space, metric, parse_mode(mode)?, seed)
            .map_err(core_to_py_err)?;
        Ok(NativeSearcher {
            state: Mutex::new(SearcherState {
                searcher,
                names: Names::default(),
                configs: HashMap::new(),
                exhausted: false,
            }),
        })
    }

    /// A config for the new trial `trial`, or None when the searcher has nothing now (it waits
    /// for results) or nothing more (see `exhausted`).
    fn suggest<'py>(&self, py: Python<'py>, trial: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let mut state = lock(&self.state);
        if state.names.get(trial).is_some() {
            return Err(PyValueError::new_err(format!("trial {trial:?} already has a config")));
        }
        if state.exhausted {
            return Ok(None);
        }
        let id = TrialId(state.names.names.len() as u64 + 1);
        match state.searcher.suggest(id).map_err(core_to_py_err)? {
            Suggestion::Config(config) => {
                state.names.add(trial);
                let dict = map_to_py(py, &config.0)?;
                state.configs.insert(id, config);
                Ok(Some(dict))
            }
            Suggestion::Wait => Ok(None),
            Suggestion::Exhausted => {
                state.exhausted = true;
                Ok(None)
            }
        }
    }

    /// Whether the searcher has nothing more to propose (a finished grid).
    #[getter]
    fn exhausted(&self) -> bool {
        lock(&self.state).exhausted
    }

    /// An intermediate result of `trial`.
    fn on_result(&self, trial: &str, step: u64, metrics: BTreeMap<String, f64>) -> PyResult<()> {
        let mut state = lock(&self.state);
        let id = state
            .names
            .get(trial)
            .ok_or_else(|| PyKeyError::new_err(format!("unknown trial {trial:?}: suggest() it first")))?;
        state.searcher.on_trial_result(id, &Report { step, metrics });
        Ok(())
    }

    /// `trial` ended, with its last result (`step` and `metrics`), or failed.
    #[pyo3(signature = (trial, step = None, metrics = None, failed = false))]
    fn on_complete(
        &self,
        trial: &str,
        step: Option<u64>,
        metrics: Option<BTreeMap<String, f64>>,
        failed: bool,
    ) -> PyResult<()> {
        let mut state = lock(&self.state);
        let id = state
            .names
            .get(trial)
            .ok_or_else(|| PyKeyError::new_err(format!("unknown trial {trial:?}: suggest() it first")))?;
        let Some(config) = state.configs.remove(&id) else {
            return Err(PyValueError::new_err(format!("trial {trial:?} was already completed")));
        };
        let last = metrics.map(|metrics| Report {
            step: step.unwrap_or(0),
            metrics,
        });
        state.searcher.on_trial_complete(
            id,
            &TrialResult {
                config: &config,
                last: last.as_ref(),
                failed,
            },
        );
        Ok(())
    }
}
