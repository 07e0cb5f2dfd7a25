//! tune-runtime: everything around rung's sans-IO controller that touches the world.
//!
//! The [`driver`] thread owns the controller and the durable [`store`] (SQLite); the
//! [`runner`]s start trials (local processes, in-process closures) and feed their reports back;
//! [`storage`] keeps checkpoints on object storage; [`files`] is where a trial's files live.
//! `tune-core` decides, this crate does the I/O.

pub mod driver;
pub mod error;
pub mod files;
pub mod runner;
pub mod storage;
pub mod store;
mod sys;

pub use error::{Error, Result};
