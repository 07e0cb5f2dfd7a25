//! `rung serve`: the controller as a gRPC server for agents, trial processes and the CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use rung::Error;
use rung::remote::read_token;
use rung::tune_core::duration::{Lower, seconds};

use super::{Failure, block_on, read_submitted};

#[derive(Args)]
pub struct ServeArgs {
    /// Specs to run (an experiment already in the store under the same name is resumed,
    /// not started again).
    pub specs: Vec<PathBuf>,
    /// The store.
    #[arg(long, default_value = "rung.db")]
    pub db: PathBuf,
    /// Where to listen (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:7470")]
    pub listen: std::net::SocketAddr,
    /// A file whose first line is the token every rung call must carry (`authorization:
    /// Bearer`); the gRPC health service (for probes) needs none.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain: serve TLS (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds without a message after which an agent is lost and its trials move elsewhere.
    #[arg(long, default_value_t = 10.0)]
    pub lease_s: f64,
    /// Seconds between an agent's heartbeats.
    #[arg(long, default_value_t = 2.0)]
    pub heartbeat_s: f64,
    /// Seconds a worker that took a trial with Trials.Ask may go without a report before
    /// the trial is handed out again.
    #[arg(long, default_value_t = 600.0)]
    pub worker_lease_s: f64,
}

/// Runs the controller as a gRPC server until Ctrl-C or SIGTERM.
pub fn serve(args: ServeArgs) -> Result<ExitCode, Failure> {
    let ServeArgs {
        specs,
        db,
        listen,
        token_file,
        tls_cert,
        tls_key,
        lease_s,
        heartbeat_s,
        worker_lease_s,
    } = args;
    // A flag that names a duration: finite, above 0 and at most ten years, or an exit-2 error
    // that names the flag and the value (a huge one would panic the server's timers).
    let positive = |flag: &str, value: f64| {
        seconds(flag, value, Lower::AboveZero).map_err(|error| Error::Usage(error.to_string()))
    };
    let lease = positive("--lease-s", lease_s)?;
    let heartbeat = positive("--heartbeat-s", heartbeat_s)?;
    let worker_lease = positive("--worker-lease-s", worker_lease_s)?;
    if heartbeat * 2 > lease {
        return Err(Error::Usage(format!(
                "--heartbeat-s {heartbeat_s} must be at most half of --lease-s {lease_s}, or one late heartbeat loses an agent"
            ))
            .into());
    }
    let specs = specs
        .iter()
        .map(|path| read_submitted(path).map(|submitted| submitted.spec))
        .collect::<Result<Vec<_>, Error>>()?;
    let mut config = rung::server::ServeConfig::new(db);
    config.token = token_file.as_deref().map(read_token).transpose()?;
    config.tls = tls_cert.zip(tls_key);
    config.lease = lease;
    config.heartbeat = heartbeat;
    config.worker_lease = worker_lease;
    config.reconnect_grace = lease;
    block_on(rung::server::serve_until_signalled(listen, config, specs))?;
    Ok(ExitCode::SUCCESS)
}
