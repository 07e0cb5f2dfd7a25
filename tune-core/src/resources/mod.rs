//! Resources: what a trial asks for ([`Bundle`], [`ResourceRequest`]), sizes in bytes as people
//! write them ([`parse_size`], [`format_size`]), and what an agent's machine has ([`Inventory`],
//! [`GpuInfo`]).
//!
//! A bundle is `{cpu, gpu, memory, custom}`. `gpu` may be fractional: 0.25 means four trials
//! share one physical GPU. A fraction is never split across devices, and a whole number above
//! one gets that many distinct devices of one agent. A GPU split into MIG instances offers each
//! instance as a device (named by its MIG uuid) and not the GPU itself.
//!
//! A request holds one or more bundles and a [`Placement`]: `pack` puts them all on one agent,
//! `spread` each on a different agent. Amounts are compared in integer thousandths ([`Need`]),
//! so four 0.25 shares fill a device exactly and three 0.333 shares fit on one. Placing requests
//! on agents (the bin packing) is the server's: `tune_server::packing`.

mod inventory;
mod requests;
mod sizes;

pub use inventory::{GpuInfo, Inventory, MigInfo};
pub use requests::{Bundle, BundleError, MILLI, Need, Placement, ResourceRequest, to_milli};
pub use sizes::{SizeError, format_size, human_size, parse_size};
