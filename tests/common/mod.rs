//! Helpers shared by the integration tests: a sandbox folder with the quickstart trial script,
//! spec files, and runs of the `rung` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rung::tune_runtime::store::{ExperimentInfo, Store, StoredTrial};

/// A temporary folder with `trials/learning_curve.py` copied in.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir_all(dir.path().join("trials")).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/trials/learning_curve.py");
        std::fs::copy(script, dir.path().join("trials/learning_curve.py")).unwrap();
        Sandbox { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `rung` with `args` in the sandbox folder.
    pub fn rung(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rung"))
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("rung runs")
    }

    pub fn store(&self, db: &str) -> (Store, ExperimentInfo) {
        let store = Store::open(&self.path(db)).expect("a store");
        let info = store.experiment(None).expect("an experiment");
        (store, info)
    }

    pub fn trials(&self, db: &str) -> Vec<StoredTrial> {
        let (store, info) = self.store(db);
        store.trials(info.id).unwrap()
    }
}

/// A spec of the learning-curve workload; `extra_top` goes before the tables, `args` are extra
/// arguments of the trial script, `extra_trial` extra lines of `[trial]`.
pub fn learning_curve_spec(extra_top: &str, args: &[&str], extra_trial: &str) -> String {
    let args: String = args.iter().map(|a| format!(", \"{a}\"")).collect();
    format!(
        r#"name = "lc"
metric = "loss"
mode = "min"
seed = 7
{extra_top}

[space]
lr = {{ loguniform = [1e-5, 1e-1] }}
batch = {{ choice = [16, 32, 64, 128, 256] }}
layers = {{ randint = [1, 8] }}
dropout = {{ uniform = [0.0, 0.5] }}

[trial]
command = ["python3", "trials/learning_curve.py", "--lr", "{{lr}}", "--batch", "{{batch}}", "--layers", "{{layers}}", "--dropout", "{{dropout}}"{args}]
stop_grace_s = 2
{extra_trial}
"#
    )
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

/// A child process killed when dropped, whose stderr is kept (and echoed on failure).
pub struct Proc {
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, mut command: Command) -> Proc {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rung starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Proc {
            child,
            log,
            name: name.to_owned(),
        }
    }

    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} never printed {needle:?}; it printed:\n{}", self.name, self.dump());
    }

    pub fn dump(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        self.child.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}", self.name, self.dump());
        }
    }
}

/// A test's deadline: dropped when the test ends. If the test is still running when the time is
/// up (a process that never exits, a line never printed), the test binary says which test hung
/// and exits with a failure, rather than stalling the suite until CI's own limit.
pub struct Deadline {
    _ended: std::sync::mpsc::Sender<()>,
}

/// Starts the deadline of the calling test (its thread carries the test's name).
pub fn deadline(limit: Duration) -> Deadline {
    let name = std::thread::current().name().unwrap_or("a test").to_owned();
    let (ended, wait) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
            eprintln!("test {name} is still running after its deadline of {limit:?}: it hangs; failing the run");
            std::process::exit(124);
        }
    });
    Deadline { _ended: ended }
}

static PROCESS_TESTS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// For a test that must run alone among the process-starting tests of its binary: one that
/// starts many processes at once (a 200-trial sweep on three agents), whose load would starve
/// the others on a two-core machine, or one that restarts a server on the port it had, which a
/// server of another test could otherwise take in between.
pub fn heavy() -> std::sync::RwLockWriteGuard<'static, ()> {
    PROCESS_TESTS.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// For a test that starts a few processes: it runs beside others like it, never beside a
/// [`heavy`] one.
pub fn light() -> std::sync::RwLockReadGuard<'static, ()> {
    PROCESS_TESTS.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a sweep's store (`rung.db` in the sandbox) holds at one moment.
pub struct Snapshot {
    /// Each report's loss, by trial and step.
    pub reports: std::collections::BTreeMap<(rung::TrialId, u64), f64>,
    /// Launch counts of the trials that had ended.
    pub ended: std::collections::BTreeMap<rung::TrialId, u32>,
    /// Trials that were running, with their newest checkpoint step.
    pub running_with_checkpoint: std::collections::BTreeMap<rung::TrialId, u64>,
    /// Trials not ended yet (pending, running or paused).
    pub unfinished: usize,
}

/// The store's state now.
pub fn snapshot(sandbox: &Sandbox) -> Snapshot {
    try_snapshot(sandbox).expect("a store with an experiment")
}

/// The store's state now; `None` while the sweep has not created its store or experiment yet.
/// Reading while the sweep writes is safe: the store is in WAL mode.
pub fn try_snapshot(sandbox: &Sandbox) -> Option<Snapshot> {
    let store = Store::open(&sandbox.path("rung.db")).ok()?;
    let info = store.experiment(None).ok()?;
    let reports = store
        .reports(info.id, None)
        .ok()?
        .into_iter()
        .map(|(trial, report)| ((trial, report.step), report.metrics["loss"]))
        .collect();
    let trials = store.trials(info.id).ok()?;
    let ended = trials
        .iter()
        .filter(|t| t.status.is_final())
        .map(|t| (t.id, t.launches))
        .collect();
    let checkpoints = store.checkpoints(info.id).ok()?;
    let running_with_checkpoint = trials
        .iter()
        .filter(|t| t.status == rung::TrialStatus::Running)
        .filter_map(|t| {
            checkpoints
                .iter()
                .filter(|c| c.trial == t.id)
                .map(|c| c.step)
                .max()
                .map(|step| (t.id, step))
        })
        .collect();
    Some(Snapshot {
        reports,
        ended,
        running_with_checkpoint,
        unfinished: trials.iter().filter(|t| !t.status.is_final()).count(),
    })
}

/// Waits, up to a minute, until the store of the running sweep shows what `ready` looks for:
/// kills and interrupts land on an event, not after a guessed sleep. Fails if the sweep ends
/// first.
pub fn wait_for_store(
    sandbox: &Sandbox,
    child: &mut std::process::Child,
    what: &str,
    ready: impl Fn(&Snapshot) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if try_snapshot(sandbox).is_some_and(|snapshot| ready(&snapshot)) {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended before {what}");
        assert!(Instant::now() < deadline, "no {what} within a minute");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `rung run spec.toml -q` in the sandbox, sends `signal` (`"INT"`, `"TERM"`) once a trial
/// of `steps` steps runs with a committed checkpoint and at least six steps to go, and checks
/// that the sweep stopped for now: exit code 130 and the "resume with" line. Returns its output.
pub fn interrupt_mid_sweep(sandbox: &Sandbox, signal: &str, steps: u64) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rung"))
        .args(["run", "spec.toml", "-q"])
        .current_dir(sandbox.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_store(sandbox, &mut child, "checkpointed trial mid-run", |s| {
        s.running_with_checkpoint.values().any(|&step| step + 6 <= steps)
    });
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("interrupted") && stdout(&output).contains("resume with: rung resume --db"),
        "{}",
        stdout(&output)
    );
    output
}
