//! tune-proto: rung's wire contract.
//!
//! The services of package `rung.v1` (see `proto/rung/v1/rung.proto`): `Trials` for trial
//! processes and external workers, `Agents` for worker agents, `Experiments` for the CLI. This
//! crate holds only the generated code and a few conversions; the server lives in `rung`, the
//! agent in `tune-worker-agent`.

#![allow(missing_docs)] // generated code

/// Package `rung.v1`.
pub mod v1 {
    tonic::include_proto!("rung.v1");
}

/// The bearer-token metadata key every call carries when the server has a token.
pub const AUTHORIZATION: &str = "authorization";
