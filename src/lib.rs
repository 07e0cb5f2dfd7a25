//! rung: a hyperparameter-tuning engine.
//!
//! This crate is the facade and the CLI. It re-exports the engine's crates so that one
//! dependency reaches all of it: [`tune_core`] (search spaces, the sans-IO controller),
//! [`tune_runtime`] (the driver, runners, the store), [`tune_search`] (searchers),
//! [`tune_schedulers`] (early-stopping schedulers), [`tune_sweep`] (spec files, the [`Tuner`],
//! the simulator), [`tune_server`] (`rung serve`), [`tune_client`] (reaching a server) and
//! [`tune_tracking`] (MLflow).

pub use tune_client as remote;
pub use tune_server as server;
pub use tune_sweep::{Error, Result, Spec, error, progress, simulate, spec, tuner, workloads};
pub use tune_tracking as tracking;

pub use tune_core::space::{Domain, Space};
pub use tune_core::trial::{Decision, Mode, TrialId, TrialStatus};
pub use tune_core::value::Config;
/// The engine's error: a bad space or setting, the store, the file system (what a trial closure's
/// `?` meets).
pub use tune_runtime::Error as CoreError;
pub use tune_runtime::driver::DriverHandle as SweepHandle;
pub use tune_runtime::runner::TrialContext;
pub use tune_schedulers::SchedulerConfig;
pub use tune_search::{SearcherConfig, SearcherSpec};
pub use tune_sweep::tuner::{Observer, SweepResult, SweepStatus, Tuner, TunerBuilder};
pub use {
    tune_client, tune_core, tune_proto, tune_runtime, tune_schedulers, tune_search, tune_server, tune_sweep,
    tune_tracking, tune_worker_agent,
};
