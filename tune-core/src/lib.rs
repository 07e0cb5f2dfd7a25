//! tune-core: rung's pure core, with no I/O and no async runtime.
//!
//! Search spaces and sampling ([`space`]), configurations ([`value`]), trials and their
//! lifecycle ([`trial`]), resource requests ([`resources`]), duration settings ([`duration`]), the
//! [`Searcher`](searcher::Searcher) and [`Scheduler`](scheduler::Scheduler) traits, report-line
//! parsing ([`protocol`]) and the sans-IO [`controller`]. The crate never opens a file, a socket
//! or a database and never awaits: `tune-runtime` does the I/O around it, and the compiler keeps
//! it that way, since none of SQLite, tokio or an HTTP client is a dependency here.

pub mod controller;
pub mod duration;
pub mod error;
pub mod protocol;
pub mod resources;
pub mod rng;
pub mod scheduler;
pub mod searcher;
pub mod space;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod trial;
pub mod value;

pub use error::{Error, Result};
