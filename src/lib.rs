//! rung: a hyperparameter-tuning engine.
//!
//! This crate is the facade and the CLI. It re-exports the engine's crates:
//! [`tune_core`] (search spaces, the controller, the store, runners), [`tune_search`]
//! (searchers) and [`tune_schedulers`] (early-stopping schedulers), and adds spec files
//! ([`spec`]) and the [`Tuner`] API.

pub mod error;
pub mod progress;
pub mod remote;
pub mod server;
pub mod simulate;
pub mod spec;
pub mod tracking;
pub mod tuner;
pub mod workloads;

pub use error::{Error, Result};
pub use spec::Spec;
pub use tune_core::Error as CoreError;
pub use tune_core::driver::DriverHandle as SweepHandle;
pub use tune_core::runner::TrialContext;
pub use tune_core::space::{Domain, Space};
pub use tune_core::trial::{Decision, Mode, TrialId, TrialStatus};
pub use tune_core::value::Config;
pub use tune_schedulers::SchedulerConfig;
pub use tune_search::SearcherConfig;
pub use tuner::{Observer, SweepResult, SweepStatus, Tuner, TunerBuilder};
pub use {tune_core, tune_proto, tune_schedulers, tune_search, tune_worker_agent};
