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
            if link.would_drive() && on_multi_thread_runtime() {
                // Alone: the exit is handled, and the next trial launched, on this thread.
                tokio::task::block_in_place(|| link.exited_blocking(outcome));
            } else {
                link.exited(outcome);
            }
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
                if let Some(file) = &mut log {
                    let _ = file.flush().await;
                }
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
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (log_sender, mut log_receiver) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Set once the trial's own process has exited: from then on the pipes are only drained.
    let (main_exited, exit_seen) = tokio::sync::watch::channel(false);
    let stderr_sender = log_sender.clone();
    tokio::spawn(async move {
        let mut lines = PipeLines::new(stderr);
        let mut exit_seen = exit_seen;
        loop {
            let line = tokio::select! {
                line = lines.next() => line,
                _ = exit_seen.wait_for(|exited| *exited) => break,
            };
            match line {
                Ok(Some(line)) => send_log_line(&stderr_sender, &line),
                Ok(None) | Err(_) => return,
            }
        }
        let until = tokio::time::Instant::now() + DRAIN_LIMIT;
        while let Some(line) = next_after_exit(&mut lines, until).await {
            send_log_line(&stderr_sender, &line);
        }
    });
    let log_task = tokio::spawn(async move {
        while let Some(line) = log_receiver.recv().await {
            log_line(&mut log, &line).await;
        }
        // A tokio file hands each write to a blocking thread and may return before it is done:
        // flush, so that the whole log is on disk when the trial's outcome is reported.
        if let Some(file) = &mut log {
            let _ = file.flush().await;
        }
    });

    let mut lines = PipeLines::new(stdout);
    let mut step = launch.restore.as_ref().map_or(0, |r| r.step);
    let mut stopped = false;
    // The main process's exit status once it has exited on its own, and until when its pipes
    // are drained after that.
    let mut exited: Option<(std::io::Result<ExitStatus>, tokio::time::Instant)> = None;
    loop {
        let line = match &exited {
            None => tokio::select! {
                line = lines.next() => line,
                () = link.stop_requested() => {
                    stopped = true;
                    break;
                }
                status = child.wait() => {
                    // The trial ends with its own process: what it left behind in its group
                    // goes, and its pipes are read only for what is already in them.
                    let _ = main_exited.send(true);
                    end_group(pid, config.stop_grace);
                    exited = Some((status, tokio::time::Instant::now() + DRAIN_LIMIT));
                    continue;
                }
            },
            Some((_, until)) => match next_after_exit(&mut lines, *until).await {
                Some(line) => Ok(Some(line)),
                None => break,
            },
        };
        let line = match line {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(error) => {
                let _ = log_sender.send(format!("== rung: cannot read stdout: {error}"));
                break;
            }
        };
        let Some(line) = report_candidate(trial, line, &log_sender) else {
            continue;
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
            if exited.is_some() {
                // The process is gone already; nothing is left to stop.
                break;
            }
            stopped = true;
            let _ = log_sender.send(format!("== rung: {decision} after step {step}"));
            break;
        }
    }
    let status = match exited {
        Some((status, _)) => status,
        None if stopped => terminate(&mut child, config.stop_grace).await,
        // Its stdout closed (or failed) while the process runs on: wait for it to end.
        None => tokio::select! {
            status = child.wait() => {
                end_group(pid, config.stop_grace);
                status
            }
            () = link.stop_requested() => terminate(&mut child, config.stop_grace).await,
        },
    };
    let _ = main_exited.send(true);
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

/// The longest line read from a trial's stdout or stderr: longer ones are cut for the log, and
/// a `rung:report` line that long is not parsed.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// After a trial's own process has exited, its pipes are read on only while data keeps coming:
/// reading stops once they stay quiet this long (a process it left behind may hold them open).
const DRAIN_IDLE: Duration = Duration::from_millis(200);

/// ...and in any case this long after the exit, should a leftover process keep writing.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// One line of a trial's output, as bytes: at most [`MAX_LINE_BYTES`] of them, without the
/// line end.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PipeLine {
    bytes: Vec<u8>,
    /// Whether the line was longer and has been cut.
    cut: bool,
}

impl PipeLine {
    /// The line for the log, invalid UTF-8 replaced.
    fn lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }

    /// Whether the line starts like a report.
    fn looks_like_report(&self) -> bool {
        self.bytes.starts_with(tune_core::protocol::REPORT_PREFIX.as_bytes())
    }
}

/// Reads a pipe line by line as bytes, whatever they are, keeping at most [`MAX_LINE_BYTES`]
/// of a line: a trial that writes invalid UTF-8 or a line without end is still read, so it
/// never blocks on a full pipe nor dies of SIGPIPE.
struct PipeLines<R> {
    reader: BufReader<R>,
    limit: usize,
    /// The line being read; kept across calls, so [`PipeLines::next`] is cancel safe.
    partial: Vec<u8>,
    cut: bool,
}

impl<R: tokio::io::AsyncRead + Unpin> PipeLines<R> {
    fn new(reader: R) -> Self {
        Self::with_limit(reader, MAX_LINE_BYTES)
    }

    fn with_limit(reader: R, limit: usize) -> Self {
        PipeLines {
            reader: BufReader::new(reader),
            limit,
            partial: Vec::new(),
            cut: false,
        }
    }

    /// The next line, `None` at the end of the pipe. Cancel safe: a line half read when the
    /// future is dropped is completed by the next call.
    async fn next(&mut self) -> std::io::Result<Option<PipeLine>> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                if self.partial.is_empty() && !self.cut {
                    return Ok(None);
                }
                return Ok(Some(self.take()));
            }
            let (content, used, complete) = match available.iter().position(|&byte| byte == b'\n') {
                Some(end) => (&available[..end], end + 1, true),
                None => (available, available.len(), false),
            };
            let room = self.limit - self.partial.len();
            if content.len() > room {
                self.cut = true;
            }
            self.partial.extend_from_slice(&content[..content.len().min(room)]);
            self.reader.consume(used);
            if complete {
                return Ok(Some(self.take()));
            }
        }
    }

    fn take(&mut self) -> PipeLine {
        let mut bytes = std::mem::take(&mut self.partial);
        if !self.cut && bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        PipeLine {
            bytes,
            cut: std::mem::take(&mut self.cut),
        }
    }
}

/// The next line of a pipe after the trial's process has exited: one already there or coming
/// within [`DRAIN_IDLE`], and none after `until`.
async fn next_after_exit<R: tokio::io::AsyncRead + Unpin>(
    lines: &mut PipeLines<R>,
    until: tokio::time::Instant,
) -> Option<PipeLine> {
    let now = tokio::time::Instant::now();
    if now >= until {
        return None;
    }
    // A line already in the pipe is read even when the wait is over: the future is polled first.
    match tokio::time::timeout_at((now + DRAIN_IDLE).min(until), lines.next()).await {
        Ok(Ok(line)) => line,
        Ok(Err(_)) | Err(_) => None,
    }
}

/// The note and text a line of stderr (or a non-report line of stdout) leaves in the log.
fn send_log_line(log: &tokio::sync::mpsc::UnboundedSender<String>, line: &PipeLine) {
    if line.cut {
        let _ = log.send(format!(
            "== rung: the next line was longer than {MAX_LINE_BYTES} bytes and is cut there"
        ));
    }
    let _ = log.send(line.lossy().into_owned());
}

/// A stdout line as text to parse as a report, or `None` when it can only go to the log: cut
/// at [`MAX_LINE_BYTES`], or not UTF-8. Such a line that looks like a report is ignored with a
/// warning, in the log and in rung's own output.
fn report_candidate(
    trial: TrialId,
    line: PipeLine,
    log: &tokio::sync::mpsc::UnboundedSender<String>,
) -> Option<String> {
    let why = if line.cut {
        format!("longer than {MAX_LINE_BYTES} bytes")
    } else {
        match String::from_utf8(line.bytes) {
            Ok(text) => return Some(text),
            Err(error) => {
                let line = PipeLine {
                    bytes: error.into_bytes(),
                    cut: false,
                };
                if line.looks_like_report() {
                    tracing::warn!(%trial, "a rung:report line that is not UTF-8 was ignored");
                    let _ = log.send(format!("== rung: report ignored (not UTF-8): {}", line.lossy()));
                } else {
                    let _ = log.send(line.lossy().into_owned());
                }
                return None;
            }
        }
    };
    if line.looks_like_report() {
        tracing::warn!(%trial, limit = MAX_LINE_BYTES, "a rung:report line {why} was cut and ignored");
        let _ = log.send(format!(
            "== rung: report ignored ({why}, cut there for the log): {}",
            line.lossy()
        ));
    } else {
        send_log_line(log, &line);
    }
    None
}

/// After a trial's own process has exited: SIGTERM to whatever it left in its process group,
/// SIGKILL after `grace` to what is still there, so no descendant outlives the trial.
fn end_group(pid: Option<u32>, grace: Duration) {
    let Some(pid) = pid else {
        return;
    };
    sys::signal_group(pid, sys::SIGTERM);
    if sys::group_exists(pid) {
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            sys::signal_group(pid, sys::SIGKILL);
        });
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

    /// The folder to write a new checkpoint into before [`TrialContext::report_checkpoint`],
    /// created when it is first asked for.
    pub fn checkpoint_dir(&self) -> std::io::Result<PathBuf> {
        let staging = self.files.staging();
        std::fs::create_dir_all(&staging)?;
        Ok(staging)
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
        let report = Report { step, metrics };
        // A trial that runs alone commits its own report (see `driver`), on a thread that may
        // block: no hand-off to the driver thread and back.
        let decision = if self.link.would_drive() && on_multi_thread_runtime() {
            tokio::task::block_in_place(|| self.link.report_blocking(report, checkpoint))
        } else {
            self.link.report(report, checkpoint).await
        };
        if decision != Decision::Continue {
            self.stopped = true;
        }
        decision
    }
}

/// Whether this task may block its thread with `block_in_place` (not on a current-thread
/// runtime, where that would stall every other task).
fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
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
/// tune-py): what an earlier launch left in the staging folder is cleared (the folders
/// themselves are made when a checkpoint is first written), and the checkpoint it restores from, if any, is made
/// available on this machine (downloaded from object storage when it lives there). Returns the
/// restored step and folder.
pub async fn prepare_in_process(
    launch: &Launch,
    files: &TrialFiles,
    note: &(dyn Fn(String) + Send + Sync),
) -> std::result::Result<Option<(u64, PathBuf)>, LaunchError> {
    files.clear_staging().map_err(|source| LaunchError::Prepare {
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
            if link.would_drive() && on_multi_thread_runtime() {
                // Alone: the exit is handled, and the next trial launched, on this thread.
                tokio::task::block_in_place(|| link.exited_blocking(outcome));
            } else {
                link.exited(outcome);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pipe_lines_are_bytes_bounded_and_cut() {
        let input: &[u8] = b"plain\r\n\xff\xfe not utf-8\nrung:report 0123456789\nlast without end";
        let mut lines = PipeLines::with_limit(input, 16);
        let mut read = Vec::new();
        while let Some(line) = lines.next().await.unwrap() {
            read.push(line);
        }
        let expect = |bytes: &[u8], cut: bool| PipeLine {
            bytes: bytes.to_vec(),
            cut,
        };
        assert_eq!(
            read,
            [
                expect(b"plain", false),
                expect(b"\xff\xfe not utf-8", false),
                expect(b"rung:report 0123", true),
                expect(b"last without end", false),
            ]
        );
    }

    #[tokio::test]
    async fn a_half_read_line_survives_a_cancelled_read() {
        let (mut writer, reader) = tokio::io::duplex(64);
        let mut lines = PipeLines::new(reader);
        writer.write_all(b"rung:rep").await.unwrap();
        let pending = tokio::time::timeout(Duration::from_millis(10), lines.next()).await;
        assert!(pending.is_err(), "no line end yet");
        writer.write_all(b"ort {}\n").await.unwrap();
        let line = lines.next().await.unwrap().unwrap();
        assert_eq!(line.bytes, b"rung:report {}");
    }

    /// A sink that records reports and answers Continue; it never asks for a stop.
    #[derive(Default)]
    struct Recorder {
        reports: Vec<Report>,
    }

    impl TrialSink for Recorder {
        fn report(&mut self, report: Report, _checkpoint: Option<String>) -> impl Future<Output = Decision> + Send {
            self.reports.push(report);
            std::future::ready(Decision::Continue)
        }

        fn stop_requested(&mut self) -> impl Future<Output = ()> + Send {
            std::future::pending()
        }
    }

    /// Runs `script` with `sh` as trial t1 in a fresh folder: its outcome, reports and log.
    async fn run_shell(script: &str) -> (Outcome, Vec<Report>, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        // In a file: the command's arguments would read its braces as placeholders.
        std::fs::write(dir.path().join("trial.sh"), script).unwrap();
        let config = ProcessConfig {
            command: vec!["sh".into(), "trial.sh".into()],
            workdir: dir.path().to_owned(),
            trials_root: dir.path().join("trials"),
            stop_grace: Duration::from_secs(5),
            env: BTreeMap::new(),
            experiment: "e".into(),
            checkpoint_storage: CheckpointStorage::Local,
        };
        let launch = Launch {
            trial: TrialId(1),
            config: Config::default(),
            restore: None,
            attempt: 0,
        };
        let mut sink = Recorder::default();
        // A deadline, not a timing: a trial that hangs (on a full pipe, on a child's pipe) fails.
        let outcome = tokio::time::timeout(Duration::from_secs(60), run_process(&config, &launch, &mut sink))
            .await
            .expect("the trial ends within a minute");
        let log = std::fs::read(TrialFiles::new(&config.trials_root, TrialId(1)).log()).unwrap();
        (outcome, sink.reports, String::from_utf8_lossy(&log).into_owned(), dir)
    }

    fn losses(reports: &[Report]) -> Vec<(u64, f64)> {
        reports.iter().map(|r| (r.step, r.metrics["loss"])).collect()
    }

    #[tokio::test]
    async fn invalid_utf8_on_stdout_and_stderr_neither_hangs_nor_kills_the_trial() {
        // Far more output after the bad bytes than a pipe holds (64 KiB): a reader that gave up
        // would leave the trial blocked on a full pipe, or dead of SIGPIPE on stderr.
        let script = r#"
            printf 'rung:report {"loss": 1}\n'
            printf 'bad \377\376 bytes\n'
            printf 'rung:report {"loss": \377}\n'
            printf 'err \377 bytes\n' >&2
            i=0; while [ $i -lt 3000 ]; do
                echo "filler line $i ......................................................"
                echo "stderr filler $i ...................................................." >&2
                i=$((i+1))
            done
            printf 'rung:report {"loss": 2}\n'
        "#;
        let (outcome, reports, log, _dir) = run_shell(script).await;
        assert_eq!(outcome, Outcome::Success, "{log}");
        assert_eq!(losses(&reports), [(1, 1.0), (2, 2.0)]);
        assert!(log.contains("bad \u{fffd}\u{fffd} bytes"), "{log}");
        assert!(
            log.contains("== rung: report ignored (not UTF-8): rung:report {\"loss\": \u{fffd}}"),
            "{log}"
        );
        assert!(
            log.contains("err \u{fffd} bytes") && log.contains("stderr filler 2999"),
            "{log}"
        );
    }

    #[tokio::test]
    async fn an_overlong_line_is_cut_and_not_parsed() {
        // A report of 2 MiB (a valid one, but over the limit), then a normal one.
        let script = r#"
            head -c 2097152 /dev/zero | tr '\0' 'x' > big
            { printf 'rung:report {"loss": 5, "pad": "'; cat big; printf '"}\n'; } 
            { cat big; printf '\n'; } >&2
            printf 'rung:report {"loss": 3}\n'
        "#;
        let (outcome, reports, log, _dir) = run_shell(script).await;
        assert_eq!(outcome, Outcome::Success, "{}", &log[..log.len().min(2000)]);
        assert_eq!(losses(&reports), [(1, 3.0)], "the cut report is not parsed");
        assert!(
            log.contains(&format!(
                "== rung: report ignored (longer than {MAX_LINE_BYTES} bytes, cut there for the log)"
            )),
            "{}",
            &log[..log.len().min(2000)]
        );
        assert!(log.contains(&format!(
            "== rung: the next line was longer than {MAX_LINE_BYTES} bytes"
        )));
        assert!(
            log.len() < 3 * MAX_LINE_BYTES,
            "lines are cut in the log too: {} bytes",
            log.len()
        );
    }

    #[tokio::test]
    async fn the_trial_ends_with_its_process_and_takes_its_group_along() {
        // The background child keeps stdout and stderr open for 300 s; the trial's own process
        // reports and exits at once.
        let script = r#"
            sleep 300 &
            echo $! > child.pid
            printf 'rung:report {"loss": 0.5}\n'
        "#;
        let (outcome, reports, log, dir) = run_shell(script).await;
        assert_eq!(outcome, Outcome::Success, "{log}");
        assert_eq!(losses(&reports), [(1, 0.5)], "what it printed before exiting counts");
        let child: i32 = std::fs::read_to_string(dir.path().join("child.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The child got SIGTERM when the trial ended; wait (with a deadline) until it is gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while process_alive(child) {
            assert!(
                std::time::Instant::now() < deadline,
                "the background child {child} survived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether `pid` is a live process (a zombie counts as gone).
    fn process_alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
    }
}
