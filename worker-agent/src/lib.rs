//! tune-worker-agent: the `rung agent` daemon.
//!
//! An agent runs on each machine that runs trials. It finds what the machine has
//! ([`inventory`], [`gpu`]), registers it with the controller, and runs the trials the
//! controller places on it as local processes pinned to their devices.

pub mod agent;
pub mod gpu;
pub mod inventory;
