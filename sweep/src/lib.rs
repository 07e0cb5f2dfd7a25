//! tune-sweep: a sweep as a user describes it, and the one way to run it.
//!
//! Spec files ([`spec`]), the [`Tuner`] (the Rust API over the driver and runners), the
//! simulator that replays a workload in virtual time ([`simulate`]) and its [`workloads`], and
//! the progress line ([`progress`]). The CLI, the server and the Python extension all build on
//! this crate, so that a sweep runs the same way whichever door it came in by.

pub mod error;
pub mod progress;
pub mod simulate;
pub mod spec;
pub mod tuner;
pub mod workloads;

pub use error::{Error, Result};
pub use spec::Spec;
pub use tuner::{Observer, SweepResult, SweepStatus, Tuner, TunerBuilder};
