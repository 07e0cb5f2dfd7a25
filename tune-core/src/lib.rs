//! tune-core: rung's domain and controller.
//!
//! Search spaces and sampling ([`space`]), configurations ([`value`]), trials and their
//! lifecycle ([`trial`]), the [`Searcher`](searcher::Searcher) and
//! [`Scheduler`](scheduler::Scheduler) traits, the sans-IO [`controller`], the durable
//! [`store`], and the adapters that run trials around it ([`driver`], [`runner`]).

pub mod controller;
pub mod driver;
pub mod error;
pub mod protocol;
pub mod resources;
pub mod rng;
pub mod runner;
pub mod scheduler;
pub mod searcher;
pub mod space;
pub mod storage;
pub mod store;
mod sys;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod trial;
pub mod value;

pub use error::{Error, Result};
