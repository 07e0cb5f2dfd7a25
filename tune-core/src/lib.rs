//! tune-core: rung's domain and controller.
//!
//! Search spaces and sampling ([`space`]), configurations ([`value`]), trials and their
//! lifecycle ([`trial`]), the [`Searcher`](searcher::Searcher) and
//! [`Scheduler`](scheduler::Scheduler) traits, the sans-IO [`controller`], the durable
//! [`store`], and the adapters that run trials around it ([`driver`], [`runner`]).

pub mod controller;
pub mod error;
pub mod rng;
pub mod scheduler;
pub mod searcher;
pub mod space;
pub mod store;
pub mod trial;
pub mod value;

pub use error::{Error, Result};
