//! `rung submit` and `rung stop`: experiments on a running server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use rung::Error;
use rung::remote::{Remote, read_token};

use super::{block_on, read_submitted};

/// How to reach a server.
#[derive(Args)]
pub struct ServerArgs {
    /// The server (`http://host:7470`, `https://...` with TLS).
    #[arg(long)]
    server: String,
    /// A file whose first line is the server's token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// A PEM CA certificate to trust for an https server.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
}
impl ServerArgs {
    fn remote(&self) -> Result<Remote, Error> {
        Ok(Remote {
            url: self.server.clone(),
            token: self.token_file.as_deref().map(read_token).transpose()?,
            ca_cert: self.ca_cert.clone(),
        })
    }
}
#[derive(Args)]
pub struct SubmitArgs {
    /// The spec file.
    pub spec: PathBuf,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Follow the experiment's progress until it ends.
    #[arg(long)]
    pub watch: bool,
}

/// Send a spec to a running server (`rung serve`); prints the experiment's name.
pub fn submit(args: SubmitArgs) -> Result<ExitCode, Error> {
    let SubmitArgs { spec, server, watch } = args;
    let submitted = read_submitted(&spec)?;
    let remote = server.remote()?;
    block_on(async {
        let mut client = remote.experiments().await?;
        let status = client
            .create(remote.request(rung::tune_proto::v1::CreateRequest {
                spec: submitted.text,
                json: submitted.json,
                spec_dir: submitted.folder.display().to_string(),
            }))
            .await
            .map_err(rung::remote::status_error)?
            .into_inner();
        println!("{}", status.name);
        if watch {
            watch_experiment(&remote, &status.name).await?;
        }
        Ok::<_, Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct StopArgs {
    /// The experiment [default: the newest].
    #[arg(long)]
    pub experiment: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// End an experiment running on a server: its running trials end as sweep_ended.
pub fn stop(args: StopArgs) -> Result<ExitCode, Error> {
    let StopArgs { experiment, server } = args;
    let remote = server.remote()?;
    let status = block_on(async {
        let mut client = remote.experiments().await?;
        client
            .stop(remote.request(rung::tune_proto::v1::GetRequest {
                name: experiment.unwrap_or_default(),
            }))
            .await
            .map_err(rung::remote::status_error)
    })?
    .into_inner();
    println!("stopping \"{}\": its running trials end as sweep_ended", status.name);
    Ok(ExitCode::SUCCESS)
}

/// Prints an experiment's progress as the server reports it, until it ends.
async fn watch_experiment(remote: &Remote, name: &str) -> Result<(), Error> {
    let mut client = remote.experiments().await?;
    let mut stream = client
        .watch(remote.request(rung::tune_proto::v1::GetRequest { name: name.to_owned() }))
        .await
        .map_err(rung::remote::status_error)?
        .into_inner();
    let mut last_print: Option<std::time::Instant> = None;
    while let Some(status) = stream.message().await.map_err(rung::remote::status_error)? {
        // A line every two seconds at most, and the last one.
        let running = status.state == "running";
        if running && last_print.is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(2)) {
            continue;
        }
        last_print = Some(std::time::Instant::now());
        let best = status.best.as_ref().map_or_else(
            || "none yet".to_owned(),
            |b| format!("t{} {}={}", b.trial, status.metric, b.value),
        );
        let done = status.completed + status.stopped + status.sweep_ended + status.errored;
        let waiting = status.waiting.len() as u64;
        eprintln!(
            "[rung] {}: {} · {done} done ({} completed, {} stopped, {} errored), {} running, {waiting} waiting for a place · best {best}",
            status.name,
            status.state,
            status.completed,
            status.stopped,
            status.errored,
            status.running.saturating_sub(waiting),
        );
        if status.state != "running" {
            break;
        }
    }
    Ok(())
}
