//! Runners: trials as local processes ([`ProcessRunner`]) or Rust closures ([`InProcessRunner`]).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;

use crate::driver::{Runner, TrialLink};
use crate::error::{Error, Result};
use crate::files::TrialFiles;
use crate::storage::{self, CheckpointStorage};
use crate::sys;
use tune_core::controller::{Launch, Outcome};
use tune_core::protocol::parse_report_line;
use tune_core::trial::{Decision, Metrics, Report, TrialId};
use tune_core::value::{Config, value_to_arg};

/// Expands `{name}` placeholders in a command: `{lr}`, `{optimizer.lr}` (dotted names),
/// `{config}` (the whole config as JSON) and `{trial_id}`; `{{` and `}}` are literal braces.
/// A parameter absent from this config (the other branch of a choice) expands to nothing.
pub fn expand_placeholders(template: &str, config: &Config, trial: TrialId) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        match (tail.starts_with('{'), tail.find('}')) {
            (true, Some(close)) => {
                let name = &tail[1..close];
                match name {
                    "config" => out.push_str(&config.to_json()),
                    "trial_id" => out.push_str(&trial.to_string()),
                    _ => out.push_str(&config.get(name).map(value_to_arg).unwrap_or_default()),
                }
                rest = &tail[close + 1..];
            }
            _ => {
                out.push_str(&tail[..1]);
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The placeholder names a command uses (for validation when the spec is read).
pub fn placeholders(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let tail = &rest[open..];
        if let Some(after) = tail.strip_prefix("{{") {
            rest = after;
            continue;
        }
        match tail.find('}') {
            Some(close) => {
                names.push(tail[1..close].to_owned());
                rest = &tail[close + 1..];
            }
            None => break,
        }
    }
    names
}

/// Finds `program` the way a shell would: a path with a `/` as is (relative to `workdir`),
/// otherwise on `PATH`.
pub fn resolve_program(program: &str, workdir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = workdir.join(program);
        return executable(&path).then_some(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| executable(path))
}

/// How to run trials as local processes.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// The command, with placeholders.
    pub command: Vec<String>,
    /// The working directory of trials (the spec's folder).
    pub workdir: PathBuf,
    /// Where each trial's folder goes.
    pub trials_root: PathBuf,
    /// Time between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// The experiment's name (`RUNG_EXPERIMENT`).
    pub experiment: String,
    /// Where committed checkpoints go.
    pub checkpoint_storage: CheckpointStorage,
}

/// Runs each trial as a child process speaking the `rung:report` protocol.
///
/// The child gets its config through placeholders in the command and `RUNG_CONFIG`, writes
/// checkpoints into `RUNG_CHECKPOINT_DIR` and restores from `RUNG_RESTORE_DIR`. It runs in a
/// process group of its own, which stop signals go to, and is killed if the controller dies.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    config: Arc<ProcessConfig>,
}

impl ProcessRunner {
    /// A runner for `config`.
    pub fn new(config: ProcessConfig) -> Self {
        ProcessRunner {
            config: Arc::new(config),
        }
    }
}

impl Runner for ProcessRunner {
    fn launch(&self, launch: Launch, link: TrialLink) {
        let config = Arc::clone(&self.config);
        tokio::spawn(async move {
            let mut link = link;
            let outcome = run_process(&config, &launch, &mut link).await;
            link.exited(outcome);
        });
    }
}

/// Where a trial process's reports go: the driver ([`TrialLink`]) for local sweeps, the
/// controller's session for a worker agent.
pub trait TrialSink: Send {
    /// Hands over a report (and the checkpoint committed with it) and returns the decision. A
    /// sink that answers later returns [`Decision::Continue`] and stops the trial through
    /// [`TrialSink::stop_requested`] instead.
    fn report(&mut self, report: Report, checkpoint: Option<String>) -> impl Future<Output = Decision> + Send;

    /// Resolves when the trial must stop.
    fn stop_requested(&mut self) -> impl Future<Output = ()> + Send;

    /// The process started with this id.
    fn started(&mut self, _pid: u32) {}
}

impl TrialSink for TrialLink {
    fn report(&mut self, report: Report, checkpoint: Option<String>) -> impl Future<Output = Decision> + Send {
        TrialLink::report(self, report, checkpoint)
    }

    fn stop_requested(&mut self) -> impl Future<Output = ()> + Send {
        TrialLink::stop_requested(self)
    }
}

/// Runs one launch of a trial as a process of `config` to its end, sending its reports to `sink`:
/// what [`ProcessRunner`] does for each trial, for runners that live elsewhere (a worker agent).
pub async fn run_process<S: TrialSink>(config: &ProcessConfig, launch: &Launch, sink: &mut S) -> Outcome {
    run_process_inner(config, launch, sink).await
}

async fn open_log(path: &Path) -> Option<tokio::fs::File> {
    match tokio::fs::OpenOptions::new().create(true).append(true).open(path).await {
        Ok(file) => Some(file),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot open the trial log");
            None
        }
    }
}

async fn log_line(log: &mut Option<tokio::fs::File>, line: &str) {
    if let Some(file) = log {
        let _ = file.write_all(format!("{line}\n").as_bytes()).await;
    }
}

async fn run_process_inner<S: TrialSink>(config: &ProcessConfig, launch: &Launch, link: &mut S) -> Outcome {
    let trial = launch.trial;
    let files = TrialFiles::new(&config.trials_root, trial);
    if let Err(error) = files.prepare() {
        return Outcome::Failed {
            reason: format!("cannot prepare {}: {error}", files.dir.display()),
        };
    }
    let mut log = open_log(&files.log()).await;
    let args: Vec<String> = config
        .command
        .iter()
        .map(|arg| expand_placeholders(arg, &launch.config, trial))
        .collect();
    let restore = launch.restore.as_ref().map_or(String::new(), |r| {
        format!(", restoring step {} from {}", r.step, r.path)
    });
    log_line(
        &mut log,
        &format!(
            "== rung: launch {} of {trial}: {}{restore}",
            launch.attempt + 1,
            args.join(" ")
        ),
    )
    .await;

    let Some(program) = args.first() else {
        return Outcome::Failed {
            reason: "the trial command is empty".into(),
        };
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(&args[1..])
        .current_dir(&config.workdir)
        .envs(&config.env)
        .env("RUNG_TRIAL_ID", trial.to_string())
        .env("RUNG_EXPERIMENT", &config.experiment)
        .env("RUNG_CONFIG", launch.config.to_json())
        .env("RUNG_TRIAL_DIR", &files.dir)
        .env("RUNG_CHECKPOINT_DIR", files.staging())
        .env_remove("RUNG_RESTORE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(restore) = &launch.restore {
        let note = |line: String| {
            tracing::warn!(%trial, "{line}");
        };
        match storage::fetch(&restore.path, &files, &note).await {
            Ok(folder) => {
                if storage::is_remote(&restore.path) {
                    log_line(
                        &mut log,
                        &format!("== rung: downloaded {} into {}", restore.path, folder.display()),
                    )
                    .await;
                }
                command.env("RUNG_RESTORE_DIR", folder);
            }
            Err(reason) => {
                log_line(&mut log, &format!("== rung: {reason}")).await;
                return Outcome::Failed {
                    reason: reason.to_string(),
                };
            }
        }
    }
    sys::set_die_with_parent(&mut command);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return Outcome::Failed {
                reason: format!("could not start \"{program}\": {error}"),
            };
        }
    };
    if let Some(pid) = child.id() {
        link.started(pid);
    }
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (log_sender, mut log_receiver) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stderr_sender = log_sender.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = stderr_sender.send(line);
        }
    });
    let log_task = tokio::spawn(async move {
        while let Some(line) = log_receiver.recv().await {
            log_line(&mut log, &line).await;
        }
    });

    let mut lines = BufReader::new(stdout).lines();
    let mut step = launch.restore.as_ref().map_or(0, |r| r.step);
    let mut stopped = false;
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            () = link.stop_requested() => {
                stopped = true;
                break;
            }
        };
        let line = match line {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(error) => {
                let _ = log_sender.send(format!("== rung: cannot read stdout: {error}"));
                break;
            }
        };
        let parsed = match parse_report_line(&line) {
            None => {
                let _ = log_sender.send(line);
                continue;
            }
            Some(Err(why)) => {
                tracing::warn!(%trial, %why, "malformed rung:report line ignored");
                let _ = log_sender.send(format!("== rung: malformed report ignored ({why}): {line}"));
                continue;
            }
            Some(Ok(parsed)) => parsed,
        };
        if !parsed.ignored.is_empty() {
            let _ = log_sender.send(format!(
                "== rung: non-numeric values ignored: {}",
                parsed.ignored.join(", ")
            ));
        }
        step = parsed.step.unwrap_or(step + 1);
        let checkpoint = if parsed.checkpoint {
            let notes = log_sender.clone();
            let note = move |line: String| {
                tracing::warn!(%trial, "{line}");
                let _ = notes.send(format!("== rung: {line}"));
            };
            match config
                .checkpoint_storage
                .commit(&files, &config.experiment, trial, step, &note)
                .await
            {
                Ok(Some(location)) => Some(location),
                Ok(None) => {
                    let _ = log_sender.send(format!(
                        "== rung: step {step} declared a checkpoint but {} is empty",
                        files.staging().display()
                    ));
                    None
                }
                Err(error) => {
                    // The report still goes to the controller, without the checkpoint.
                    tracing::warn!(%trial, step, "{error}");
                    let _ = log_sender.send(format!("== rung: step {step}: {error}"));
                    None
                }
            }
        } else {
            None
        };
        let decision = link
            .report(
                Report {
                    step,
                    metrics: parsed.metrics,
                },
                checkpoint,
            )
            .await;
        if decision != Decision::Continue {
            stopped = true;
            let _ = log_sender.send(format!("== rung: {decision} after step {step}"));
            break;
        }
    }
    let status = if stopped {
        terminate(&mut child, config.stop_grace).await
    } else {
        tokio::select! {
            status = child.wait() => status,
            () = link.stop_requested() => terminate(&mut child, config.stop_grace).await,
        }
    };
    drop(lines);
    drop(log_sender);
    let _ = log_task.await;
    match status {
        Ok(status) if status.success() => Outcome::Success,
        Ok(status) => Outcome::Failed {
            reason: describe_exit(status),
        },
        Err(error) => Outcome::Failed {
            reason: format!("could not wait for the trial: {error}"),
        },
    }
}

/// Kills a trial's whole process group at once (SIGKILL), for a launch that must not run on.
pub fn kill_process_group(pid: u32) {
    sys::signal_group(pid, sys::SIGKILL);
}

/// SIGTERM to the trial's process group, SIGKILL after `grace`.
async fn terminate(child: &mut Child, grace: Duration) -> std::io::Result<ExitStatus> {
    if let Some(pid) = child.id() {
        sys::signal_group(pid, sys::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
            sys::signal_group(pid, sys::SIGKILL); // whatever the trial left behind in its group
            return status;
        }
        sys::signal_group(pid, sys::SIGKILL);
    }
    child.wait().await
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "ended abnormally".into(),
    }
}

// ---------------------------------------------------------------------------------------------

/// What an in-process trial gets: its config, its checkpoint folders and a way to report.
#[derive(Debug)]
pub struct TrialContext {
    link: TrialLink,
    config: Config,
    files: TrialFiles,
    restore: Option<(u64, PathBuf)>,
    stopped: bool,
    storage: CheckpointStorage,
    experiment: String,
}

impl TrialContext {
    /// The trial.
    pub fn id(&self) -> TrialId {
        self.link.trial()
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The value of a (dotted) parameter, converted to `T`.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let value = self
            .config
            .get(name)
            .ok_or_else(|| Error::param(name, "not in this trial's config"))?;
        serde_json::from_value(value.clone())
            .map_err(|e| Error::param(name, format!("cannot be read as the requested type: {e}")))
    }

    /// The checkpoint to restore from (its step and folder), when the trial resumes.
    pub fn restore(&self) -> Option<(u64, &Path)> {
        self.restore.as_ref().map(|(step, path)| (*step, path.as_path()))
    }

    /// The folder to write a new checkpoint into before [`TrialContext::report_checkpoint`].
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.files.staging()
    }

    /// Reports metrics at `step` and returns the scheduler's decision. After a decision other
    /// than `Continue`, every further report returns `Stop` at once: return from the trial.
    pub async fn report<K: Into<String>>(
        &mut self,
        step: u64,
        metrics: impl IntoIterator<Item = (K, f64)>,
    ) -> Decision {
        self.send(step, metrics, false).await
    }

    /// Like [`TrialContext::report`], declaring the files now in
    /// [`TrialContext::checkpoint_dir`] a checkpoint at `step`.
    pub async fn report_checkpoint<K: Into<String>>(
        &mut self,
        step: u64,
        metrics: impl IntoIterator<Item = (K, f64)>,
    ) -> Decision {
        self.send(step, metrics, true).await
    }

    async fn send<K: Into<String>>(
        &mut self,
        step: u64,
        metrics: impl IntoIterator<Item = (K, f64)>,
        checkpoint: bool,
    ) -> Decision {
        if self.stopped {
            return Decision::Stop;
        }
        let metrics: Metrics = metrics.into_iter().map(|(name, value)| (name.into(), value)).collect();
        let checkpoint = if checkpoint {
            let trial = self.id();
            let note = move |line: String| tracing::warn!(%trial, "{line}");
            match self
                .storage
                .commit(&self.files, &self.experiment, trial, step, &note)
                .await
            {
                Ok(location) => location,
                Err(error) => {
                    tracing::warn!(%trial, step, %error, "could not keep a checkpoint");
                    None
                }
            }
        } else {
            None
        };
        let decision = self.link.report(Report { step, metrics }, checkpoint).await;
        if decision != Decision::Continue {
            self.stopped = true;
        }
        decision
    }
}

/// Why an in-process launch could not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The trial's folders could not be made.
    #[error("cannot prepare {}: {source}", dir.display())]
    Prepare {
        /// The trial's folder.
        dir: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The checkpoint it restores from could not be made available here.
    #[error(transparent)]
    Restore(#[from] storage::TransferError),
}

/// The first steps of every in-process launch (Rust closures here, Python callables in
/// tune-py): the trial's folders are made, and the checkpoint it restores from, if any, is made
/// available on this machine (downloaded from object storage when it lives there). Returns the
/// restored step and folder.
pub async fn prepare_in_process(
    launch: &Launch,
    files: &TrialFiles,
    note: &(dyn Fn(String) + Send + Sync),
) -> std::result::Result<Option<(u64, PathBuf)>, LaunchError> {
    files.prepare().map_err(|source| LaunchError::Prepare {
        dir: files.dir.clone(),
        source,
    })?;
    Ok(storage::restore_folder(launch.restore.as_ref(), files, note).await?)
}

/// Runs each trial as an async Rust closure on the runtime, up to `max_concurrent` at once.
pub struct InProcessRunner<F> {
    trainable: Arc<F>,
    trials_root: PathBuf,
    stop_grace: Duration,
    storage: CheckpointStorage,
    experiment: String,
}

impl<F> InProcessRunner<F> {
    /// A runner calling `trainable` for each trial; trial folders go under `trials_root`.
    pub fn new(trainable: F, trials_root: PathBuf, stop_grace: Duration) -> Self {
        InProcessRunner {
            trainable: Arc::new(trainable),
            trials_root,
            stop_grace,
            storage: CheckpointStorage::Local,
            experiment: String::new(),
        }
    }

    /// Keeps checkpoints in `storage`, under the name of `experiment`.
    pub fn with_storage(mut self, storage: CheckpointStorage, experiment: &str) -> Self {
        self.storage = storage;
        self.experiment = experiment.to_owned();
        self
    }
}

impl<F, Fut, E> Runner for InProcessRunner<F>
where
    F: Fn(TrialContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    fn launch(&self, launch: Launch, mut link: TrialLink) {
        let trainable = Arc::clone(&self.trainable);
        let files = TrialFiles::new(&self.trials_root, launch.trial);
        let grace = self.stop_grace;
        let (storage, experiment) = (self.storage.clone(), self.experiment.clone());
        tokio::spawn(async move {
            let trial = launch.trial;
            let note = move |line: String| tracing::warn!(%trial, "{line}");
            let restore = match prepare_in_process(&launch, &files, &note).await {
                Ok(restore) => restore,
                Err(error) => return link.fail(error),
            };
            let context = TrialContext {
                link: link.reporter(),
                config: launch.config,
                files,
                restore,
                stopped: false,
                storage,
                experiment,
            };
            let mut task = tokio::spawn(trainable(context));
            let result = tokio::select! {
                result = &mut task => result,
                () = link.stop_requested() => match tokio::time::timeout(grace, &mut task).await {
                    Ok(result) => result,
                    Err(_) => {
                        task.abort();
                        let _ = (&mut task).await;
                        Ok(Ok(()))
                    }
                },
            };
            let outcome = match result {
                Ok(Ok(())) => Outcome::Success,
                Ok(Err(error)) => Outcome::Failed {
                    reason: error.to_string(),
                },
                Err(join) if join.is_panic() => {
                    let payload = join.into_panic();
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a non-string panic".into());
                    Outcome::Failed {
                        reason: format!("panicked: {message}"),
                    }
                }
                Err(join) => Outcome::Failed {
                    reason: format!("cancelled: {join}"),
                },
            };
            link.exited(outcome);
        });
    }
}
