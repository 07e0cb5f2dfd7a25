//! `rung agent`: offer this machine's CPUs, memory and GPUs to a controller and run the trials
//! it places here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use rung::Error;
use rung::remote::read_token;
use rung::tune_core::resources::Inventory;
use rung::tune_worker_agent::{agent, gpu, inventory};

use super::block_on;

#[derive(Args)]
pub struct AgentArgs {
    /// The controller (`http://host:7470`, `https://...` with TLS).
    #[arg(long)]
    pub controller: String,
    /// A file whose first line is the controller's token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// A PEM CA certificate to trust for an https controller.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// GPUs to offer: auto (all NVML finds), none, a list of indices (0,2), or fake:N
    /// (N GPUs that do not exist, for testing placement without hardware).
    #[arg(long, default_value = "auto")]
    pub gpus: String,
    /// CPUs to offer [default: this machine's].
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory to offer, e.g. 64GiB [default: this machine's].
    #[arg(long)]
    pub memory: Option<String>,
    /// A custom resource, name=amount (repeatable), e.g. --resource nvme=1.
    #[arg(long = "resource")]
    pub resources: Vec<String>,
    /// The name shown in `rung status` [default: the host name].
    #[arg(long)]
    pub name: Option<String>,
    /// Where trial folders (logs, checkpoints) go: <work-dir>/<experiment>/<trial>/.
    /// Trials resumed on another agent read checkpoints from here, so agents that share
    /// trials share this folder (NFS, a volume).
    #[arg(long, default_value = "rung-agent")]
    pub work_dir: PathBuf,
    /// Answer health checks over HTTP on ADDR (e.g. 0.0.0.0:7471): `GET /ready` is 200 while
    /// the agent has a session with the controller and 503 otherwise, `GET /live` is 200.
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<std::net::SocketAddr>,
    /// Print what the machine offers and exit.
    #[arg(long)]
    pub dry_run: bool,
}

/// Run a worker agent: register this machine with a controller and run the trials it
pub fn agent(args: AgentArgs) -> Result<ExitCode, Error> {
    let AgentArgs {
        controller,
        token_file,
        ca_cert,
        gpus,
        cpus,
        memory,
        resources,
        name,
        work_dir,
        health_listen,
        dry_run,
    } = args;
    let (offered, described) = offer(&gpus, cpus, memory, &resources)?;
    let name = name.unwrap_or_else(host_name);
    eprintln!("[rung] agent {name} offers:\n{described}");
    if dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    let work_dir =
        std::path::absolute(&work_dir).map_err(|e| Error::Usage(format!("--work-dir {}: {e}", work_dir.display())))?;
    let config = agent::AgentConfig {
        controller,
        token: token_file.as_deref().map(read_token).transpose()?,
        ca_cert,
        name,
        work_dir,
        inventory: offered,
    };
    block_on(async {
        let health = match health_listen {
            Some(address) => Some(health_listener(address).await?),
            None => None,
        };
        agent::run_with_health(config, health, async {
            rung::server::shutdown_signal().await;
            eprintln!("[rung] agent stopping: stopping its trials");
        })
        .await
        .map_err(|e| Error::Usage(e.to_string()))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// What this machine offers, from the flags and what NVML finds, with its description for
/// people. A note from GPU discovery (no driver, say) is printed on the way.
fn offer(
    gpus: &str,
    cpus: Option<f64>,
    memory: Option<String>,
    resources: &[String],
) -> Result<(Inventory, String), Error> {
    let selection: gpu::GpuSelection = gpus.parse().map_err(|e: gpu::GpuError| Error::Usage(e.to_string()))?;
    let discovery = gpu::discover(&selection).map_err(|e| Error::Usage(e.to_string()))?;
    let memory = memory
        .map(|m| rung::tune_core::resources::parse_size(&m).map_err(|e| Error::Usage(format!("--memory {m}: {e}"))))
        .transpose()?;
    let mut custom = std::collections::BTreeMap::new();
    for text in resources {
        let (name, amount) = inventory::parse_custom(text).map_err(|e| Error::Usage(e.to_string()))?;
        if custom.insert(name.clone(), amount).is_some() {
            return Err(Error::Usage(format!("--resource {name} is given twice")));
        }
    }
    let offered = inventory::detect(cpus, memory, discovery.gpus, custom).map_err(|e| Error::Usage(e.to_string()))?;
    if let Some(note) = &discovery.note {
        eprintln!("[rung] {note}");
    }
    let described = inventory::describe(&offered, discovery.driver.as_deref());
    Ok((offered, described))
}

/// Binds the health endpoint's listener and says where it is.
async fn health_listener(address: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Error::Usage(format!("--health-listen {address}: {e}")))?;
    let bound = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    eprintln!("[rung] agent health on http://{bound}/ready");
    Ok(listener)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "agent".into())
}
