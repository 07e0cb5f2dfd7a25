//! Server mode over loopback: `rung serve` and `rung agent` processes, ports chosen by the OS.
//!
//! Trials are `tests/fixtures/agent_trial.py`, which appends one line per step to a ledger
//! (time, experiment, trial, launch, agent, CUDA_VISIBLE_DEVICES, step): the tests read it to
//! prove what ran where and when, independently of what the controller believes.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Proc;
use rung::remote::Remote;
use rung::tune_proto::v1;
use rung::tune_proto::v1::trials_client::TrialsClient;
use rung::tune_runtime::store::Store;

fn rung() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rung"))
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent_trial.py")
}

/// Starts `rung serve` on `listen` (port 0: any) and returns it with its URL.
fn serve(dir: &Path, listen: &str, extra: &[&str]) -> (Proc, String) {
    let mut command = rung();
    command
        .args(["-v", "serve", "--db"])
        .arg(dir.join("server.db"))
        .args(["--listen", listen, "--lease-s", "2", "--heartbeat-s", "0.4"])
        .args(extra)
        .current_dir(dir);
    let server = Proc::spawn("server", command);
    let line = server.wait_for_line("serving", Duration::from_secs(30));
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .expect("the URL is printed")
        .to_owned();
    (server, url)
}

fn agent(dir: &Path, url: &str, name: &str, gpus: u32, extra: &[&str]) -> Proc {
    let mut command = rung();
    command
        .args(["-v", "agent", "--controller", url, "--name", name, "--cpus", "8"])
        .args([
            "--gpus",
            &if gpus == 0 {
                "none".to_owned()
            } else {
                format!("fake:{gpus}")
            },
        ])
        .arg("--work-dir")
        .arg(dir.join("work"))
        .args(extra)
        .env("TRIAL_LEDGER", dir.join("ledger.txt"))
        .env("TRIAL_SLEEP", "0.02")
        .current_dir(dir);
    Proc::spawn(name, command)
}

fn asha_spec(dir: &Path, name: &str, samples: u32, resources: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"name = "{name}"
metric = "loss"
mode = "min"
num_samples = {samples}
max_concurrent = 16
seed = 11

[space]
lr = {{ uniform = [0.0, 1.0] }}

[scheduler]
kind = "asha"
max_t = 9
grace_period = 1
reduction_factor = 3

[trial]
command = ["python3", "{script}"]
resources = {resources}
stop_grace_s = 2
"#,
            script = fixture().display()
        ),
    )
    .unwrap();
    path
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A spec named "ask" without a command: its trials go to workers that call `Trials.Ask`.
fn ask_spec(dir: &Path, samples: u32) -> PathBuf {
    let path = dir.join("ask.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"ask\"\nmetric = \"loss\"\nmode = \"min\"\nnum_samples = {samples}\nmax_concurrent = 1\nseed = 3\n\n[space]\nlr = {{ uniform = [0.0, 1.0] }}\n"
        ),
    )
    .unwrap();
    path
}

/// A client of `url` without token or CA.
fn plain(url: &str) -> Remote {
    Remote {
        url: url.to_owned(),
        token: None,
        ca_cert: None,
    }
}

fn status(remote: &Remote, name: &str) -> v1::ExperimentStatus {
    runtime().block_on(async {
        let mut client = remote.experiments().await.unwrap();
        client
            .get(remote.request(v1::GetRequest { name: name.to_owned() }))
            .await
            .unwrap()
            .into_inner()
    })
}

fn wait_until_finished(remote: &Remote, name: &str, timeout: Duration, procs: &[&Proc]) -> v1::ExperimentStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let status = status(remote, name);
        if status.state != "running" {
            return status;
        }
        if Instant::now() > deadline {
            for proc in procs {
                eprintln!("---- {} ----\n{}", proc.name, proc.dump());
            }
            panic!("{name} did not finish in {timeout:?}: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One ledger line.
#[derive(Debug, Clone)]
struct Step {
    time: u64,
    experiment: String,
    trial: String,
    attempt: u32,
    agent: String,
    devices: String,
    /// The step; 0 for the line a process writes when it starts, and for its last line.
    step: u64,
}

fn ledger(dir: &Path) -> Vec<Step> {
    let text = std::fs::read_to_string(dir.join("ledger.txt")).unwrap_or_default();
    let mut steps: Vec<Step> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            (f.len() == 7).then(|| Step {
                time: f[0].parse().unwrap(),
                experiment: f[1].into(),
                trial: f[2].into(),
                attempt: f[3].parse().unwrap(),
                agent: f[4].into(),
                devices: f[5].into(),
                step: f[6].parse().unwrap_or(0),
            })
        })
        .collect();
    steps.sort_by_key(|s| s.time);
    steps
}

/// One process of a launch: experiment, trial, attempt, agent.
type ProcessKey = (String, String, u32, String);
/// When it ran (its first and last ledger lines) and on which devices.
type Span = (u64, u64, String);

/// Each process's span in the ledger.
fn spans(steps: &[Step]) -> BTreeMap<ProcessKey, Span> {
    let mut spans = BTreeMap::new();
    for s in steps {
        let key = (s.experiment.clone(), s.trial.clone(), s.attempt, s.agent.clone());
        let entry = spans.entry(key).or_insert((s.time, s.time, s.devices.clone()));
        entry.0 = entry.0.min(s.time);
        entry.1 = entry.1.max(s.time);
    }
    spans
}

/// The most processes that ever ran at once on one device of one agent.
fn max_sharing(steps: &[Step]) -> HashMap<(String, String), usize> {
    let mut events: Vec<(u64, i64, (String, String))> = Vec::new();
    for ((_, _, _, agent), (first, last, devices)) in spans(steps) {
        for device in devices.split(',').filter(|d| *d != "-") {
            events.push((first, 1, (agent.clone(), device.to_owned())));
            events.push((last, -1, (agent.clone(), device.to_owned())));
        }
    }
    // At equal times, starts before ends: touching processes count as overlapping.
    events.sort_by_key(|(time, delta, _)| (*time, -*delta));
    let mut now: HashMap<(String, String), i64> = HashMap::new();
    let mut most: HashMap<(String, String), usize> = HashMap::new();
    for (_, delta, key) in events {
        let count = now.entry(key.clone()).or_default();
        *count += delta;
        let peak = most.entry(key).or_default();
        *peak = (*peak).max(*count as usize);
    }
    most
}

/// For every trial, its launches never overlap in time: every process of one launch ends
/// before any process of the next starts.
fn assert_no_trial_ran_twice_at_once(steps: &[Step]) {
    let mut launches: BTreeMap<(String, String), BTreeMap<u32, (u64, u64)>> = BTreeMap::new();
    for ((experiment, trial, attempt, _), (first, last, _)) in spans(steps) {
        let span = launches
            .entry((experiment, trial))
            .or_default()
            .entry(attempt)
            .or_insert((first, last));
        span.0 = span.0.min(first);
        span.1 = span.1.max(last);
    }
    for (trial, attempts) in launches {
        let mut attempts: Vec<(u64, u64, u32)> = attempts.into_iter().map(|(a, (f, l))| (f, l, a)).collect();
        attempts.sort();
        for pair in attempts.windows(2) {
            assert!(
                pair[0].1 < pair[1].0,
                "{trial:?}: launch {} (until {}) overlaps launch {} (from {})",
                pair[0].2,
                pair[0].1,
                pair[1].2,
                pair[1].0
            );
        }
    }
}

/// Every trial's stored reports are steps 1, 2, ... n with no gap (nothing lost).
fn assert_reports_complete(db: &Path, experiment: &str) -> usize {
    let store = Store::open(db).unwrap();
    let info = store.experiment(Some(experiment)).unwrap();
    let trials = store.trials(info.id).unwrap();
    let reports = store.reports(info.id, None).unwrap();
    let mut steps: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (trial, report) in &reports {
        steps.entry(trial.0).or_default().push(report.step);
    }
    for trial in &trials {
        let got = steps.get(&trial.id.0).cloned().unwrap_or_default();
        let expected: Vec<u64> = (1..=got.len() as u64).collect();
        assert_eq!(got, expected, "{} reports", trial.id);
        assert!(trial.status.is_final(), "{} is {:?}", trial.id, trial.status);
    }
    trials.len()
}

#[test]
fn three_agents_run_a_gpu_sweep_without_overcommitting_a_device() {
    let _deadline = common::deadline(Duration::from_secs(420));
    let _group = common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let spec = asha_spec(dir, "gpu-asha", 200, "{ cpu = 0.5, gpu = 0.25 }");
    let (server, url) = serve(dir, "127.0.0.1:0", &[spec.to_str().unwrap()]);
    let a = agent(dir, &url, "two-gpus", 2, &[]);
    let b = agent(dir, &url, "one-gpu", 1, &[]);
    let c = agent(dir, &url, "no-gpu", 0, &[]);

    // A second experiment asks for more than any agent has: it waits, with the reason.
    let big = asha_spec(dir, "too-big", 2, "{ gpu = 4 }");
    let submitted = rung()
        .args(["submit", big.to_str().unwrap(), "--server", &url])
        .output()
        .unwrap();
    assert!(submitted.status.success(), "{submitted:?}");
    assert_eq!(String::from_utf8_lossy(&submitted.stdout).trim(), "too-big");

    let done = wait_until_finished(
        &plain(&url),
        "gpu-asha",
        Duration::from_secs(240),
        &[&server, &a, &b, &c],
    );
    assert_eq!(done.state, "finished", "{done:?}");
    assert_eq!(done.created, 200);
    assert_eq!(done.completed + done.stopped, 200, "{done:?}");
    assert_eq!(assert_reports_complete(&dir.join("server.db"), "gpu-asha"), 200);

    let steps: Vec<Step> = ledger(dir).into_iter().filter(|s| s.experiment == "gpu-asha").collect();
    // No device ever held more than four 0.25 trials, and the GPU-less agent ran none.
    let sharing = max_sharing(&steps);
    assert!(!sharing.is_empty());
    for ((agent, device), most) in &sharing {
        assert!(*most <= 4, "{agent} device {device} ran {most} trials at once");
    }
    // Every trial asks for a quarter of a GPU, so the agent without one ran no step of any.
    let on_gpu_less: Vec<&Step> = steps.iter().filter(|s| s.agent == "no-gpu").collect();
    assert!(
        on_gpu_less.is_empty(),
        "the GPU-less agent ran {} steps",
        on_gpu_less.len()
    );
    assert!(
        steps.iter().any(|s| s.agent == "two-gpus") && steps.iter().any(|s| s.agent == "one-gpu"),
        "both GPU agents ran trials"
    );
    assert!(
        sharing.values().any(|&most| most >= 2),
        "fractional trials shared a device: {sharing:?}"
    );
    let devices: std::collections::BTreeSet<_> = sharing.keys().cloned().collect();
    assert!(devices.contains(&("two-gpus".into(), "1".into())), "{devices:?}");
    assert!(devices.contains(&("one-gpu".into(), "0".into())), "{devices:?}");
    assert_no_trial_ran_twice_at_once(&steps);

    let waiting = status(&plain(&url), "too-big");
    assert_eq!(waiting.state, "running");
    assert!(
        waiting
            .waiting
            .iter()
            .any(|w| w.reason.contains("needs gpu=4 on one agent; largest agent has 2")),
        "{waiting:?}"
    );
    // The CLI shows the same, read from the server.
    let shown = rung()
        .args(["status", "--server", &url, "--experiment", "too-big"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("needs gpu=4 on one agent; largest agent has 2"),
        "{shown}"
    );
    assert!(shown.contains("two-gpus"), "{shown}");
}

#[test]
fn a_killed_agent_s_trials_resume_elsewhere_and_a_restarted_controller_loses_nothing() {
    let _deadline = common::deadline(Duration::from_secs(420));
    // It restarts the server on the port it had, for its agents to reconnect to: nothing else
    // may bind a port meanwhile, or another test's server could take that one.
    let _group = common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let spec = asha_spec(dir, "survive", 40, "{ cpu = 1, gpu = 0.5 }");
    let (mut server, url) = serve(dir, "127.0.0.1:0", &[spec.to_str().unwrap()]);
    let port = url.rsplit(':').next().unwrap().to_owned();
    let mut doomed = agent(dir, &url, "doomed", 2, &[]);
    let keeper = agent(dir, &url, "keeper", 2, &[]);

    // Kill one agent once a trial it runs has a checkpoint in the store (on the ledger alone,
    // the checkpoint of a step may still be on its way: synced, reported, committed).
    let deadline = Instant::now() + Duration::from_secs(60);
    let checkpointed_on_doomed = || {
        let Ok(store) = Store::open(&dir.join("server.db")) else {
            return false;
        };
        let Ok(info) = store.experiment(Some("survive")) else {
            return false;
        };
        let running: Vec<String> = store
            .trials(info.id)
            .unwrap_or_default()
            .iter()
            .filter(|t| t.status.label() == "running")
            .map(|t| t.id.to_string())
            .collect();
        let on_doomed: Vec<String> = ledger(dir)
            .into_iter()
            .filter(|s| s.agent == "doomed" && running.contains(&s.trial))
            .map(|s| s.trial)
            .collect();
        store
            .checkpoints(info.id)
            .unwrap_or_default()
            .iter()
            .any(|c| !c.deleted && on_doomed.contains(&c.trial.to_string()))
    };
    while !checkpointed_on_doomed() {
        assert!(Instant::now() < deadline, "no trial of the doomed agent checkpointed");
        std::thread::sleep(Duration::from_millis(20));
    }
    doomed.kill();

    // Then kill the controller (SIGKILL) and start it again on the same port.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ledger(dir).iter().any(|s| s.agent == "keeper" && s.attempt >= 1) {
        assert!(
            Instant::now() < deadline,
            "no trial of the killed agent was relaunched:\n{}",
            server.dump()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    std::thread::sleep(Duration::from_millis(300));
    let (server, url2) = serve(dir, &format!("127.0.0.1:{port}"), &[spec.to_str().unwrap()]);
    assert_eq!(url, url2);

    let done = wait_until_finished(&plain(&url), "survive", Duration::from_secs(240), &[&server, &keeper]);
    assert_eq!(done.state, "finished", "{done:?}");
    assert_eq!(done.completed + done.stopped, 40, "{done:?}");
    assert_eq!(assert_reports_complete(&dir.join("server.db"), "survive"), 40);
    let steps = ledger(dir);
    assert_no_trial_ran_twice_at_once(&steps);
    // A relaunched trial started from its checkpoint (step 3, 6, ...), not from scratch.
    let spans = spans(&steps);
    let mut first_steps: BTreeMap<ProcessKey, u64> = BTreeMap::new();
    for s in steps.iter().filter(|s| s.step > 0) {
        first_steps
            .entry((s.experiment.clone(), s.trial.clone(), s.attempt, s.agent.clone()))
            .or_insert(s.step);
    }
    let resumed_from_checkpoint = spans
        .keys()
        .filter(|(_, _, attempt, agent)| *attempt >= 1 && agent == "keeper")
        .any(|key| first_steps.get(key).is_some_and(|&step| step > 1));
    assert!(resumed_from_checkpoint, "no relaunch restored a checkpoint");
    assert!(server.dump().contains("agent registered"), "{}", server.dump());
}

#[test]
fn tokens_are_required_and_garbage_does_not_take_the_server_down() {
    let _deadline = common::deadline(Duration::from_secs(420));
    let _group = common::light();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("token"), "s3cret-token\n").unwrap();
    let spec = asha_spec(dir, "guarded", 4, "{ cpu = 1 }");
    let (server, url) = serve(dir, "127.0.0.1:0", &["--token-file", "token", spec.to_str().unwrap()]);

    // No token, a wrong token: UNAUTHENTICATED, and the CLI says what to do.
    for token in [None, Some("wrong")] {
        let remote = Remote {
            url: url.clone(),
            token: token.map(str::to_owned),
            ca_cert: None,
        };
        let error = runtime().block_on(async {
            let mut client = remote.experiments().await.unwrap();
            client.get(remote.request(v1::GetRequest::default())).await.unwrap_err()
        });
        assert_eq!(error.code(), tonic::Code::Unauthenticated, "{error:?}");
    }
    let refused = rung().args(["status", "--server", &url]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--token-file"),
        "{refused:?}"
    );
    // The server's stderr is read by a thread: wait for the line rather than look once.
    server.wait_for_line("rejected a call with no token", Duration::from_secs(30));

    // Garbage on the port, a half-open HTTP/2 preface, an oversized gRPC frame.
    let address = url.trim_start_matches("http://").to_owned();
    for junk in [
        b"\x00\xff garbage \r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xAB; 1 << 16],
    ] {
        let mut socket = std::net::TcpStream::connect(&address).unwrap();
        let _ = socket.write_all(&junk);
        drop(socket);
    }

    // The server still answers, and an agent with the token runs the sweep to its end.
    let keeper = agent(dir, &url, "with-token", 0, &["--token-file", "token"]);
    let remote = Remote {
        token: Some("s3cret-token".into()),
        ..plain(&url)
    };
    let done = wait_until_finished(&remote, "guarded", Duration::from_secs(120), &[&server, &keeper]);
    assert_eq!(done.state, "finished", "{done:?}\n{}", keeper.dump());
    assert_eq!(done.completed + done.stopped, 4);
}

/// The store's write lock, held by the test: the server's commits wait until it is released.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn hold(db: &Path) -> Self {
        let connection = rusqlite::Connection::open(db).unwrap();
        connection.execute_batch("BEGIN IMMEDIATE").unwrap();
        WriteLock(connection)
    }

    fn release(self) {
        self.0.execute_batch("COMMIT").unwrap();
    }
}

/// Asserts that `request` is still unanswered 300 ms on (it waits for a commit).
async fn assert_unanswered<T>(request: &mut tokio::task::JoinHandle<T>, why: &str) {
    let waited = tokio::time::timeout(Duration::from_millis(300), request).await;
    assert!(waited.is_err(), "{why}");
}

#[test]
fn external_workers_ask_report_idempotently_and_get_precise_errors() {
    let _deadline = common::deadline(Duration::from_secs(420));
    let _group = common::light();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let spec = ask_spec(dir, 2);
    let (server, url) = serve(dir, "127.0.0.1:0", &[spec.to_str().unwrap()]);
    runtime().block_on(async {
        let mut trials = TrialsClient::new(plain(&url).channel().await.unwrap());
        let asked = trials
            .ask(v1::AskRequest {
                experiment: "ask".into(),
                worker: "notebook".into(),
                wait_ms: 5_000,
            })
            .await
            .unwrap()
            .into_inner();
        let assignment = asked.assignment.expect("a trial to run");
        let reference = assignment.trial.clone().unwrap();
        let config: serde_json::Value = serde_json::from_str(&assignment.config_json).unwrap();
        assert!(config["lr"].as_f64().is_some(), "{config}");
        let report = |step: u64, loss: f64| v1::ReportRequest {
            trial: Some(reference.clone()),
            step,
            metrics: [("loss".to_owned(), loss)].into(),
            checkpoint: String::new(),
        };
        let first = trials.report(report(1, 0.5)).await.unwrap().into_inner();
        assert_eq!(first.decision(), v1::Decision::Continue);
        assert!(!first.duplicate);
        // A retried report is acknowledged, not counted twice.
        let again = trials.report(report(1, 0.1)).await.unwrap().into_inner();
        assert!(again.duplicate);
        // A retry sent while the report it repeats is not committed yet waits for that commit:
        // with the store's write lock held here, neither is answered until it is released.
        let lock = WriteLock::hold(&dir.join("server.db"));
        let (mut original, request) = (trials.clone(), report(2, 0.4));
        let sent = tokio::spawn(async move { original.report(request).await });
        tokio::time::sleep(Duration::from_millis(200)).await; // the original is in the driver's batch
        let (mut retry, request) = (trials.clone(), report(2, 0.4));
        let mut retried = tokio::spawn(async move { retry.report(request).await });
        assert_unanswered(
            &mut retried,
            "a retry was acknowledged before the report it repeats was committed",
        )
        .await;
        lock.release();
        let sent = sent.await.unwrap().unwrap().into_inner();
        let retried = retried.await.unwrap().unwrap().into_inner();
        assert!(retried.duplicate && !sent.duplicate);
        assert_eq!(sent.decision, retried.decision);
        // Non-finite metrics, an unknown trial, a missing experiment.
        let error = trials.report(report(3, f64::INFINITY)).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
        assert!(error.message().contains("\"loss\" is inf"), "{error:?}");
        let mut unknown = report(1, 0.5);
        unknown.trial.as_mut().unwrap().trial = 99;
        let error = trials.report(unknown).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::NotFound, "{error:?}");
        let mut nowhere = report(1, 0.5);
        nowhere.trial.as_mut().unwrap().experiment = "nope".into();
        assert_eq!(trials.report(nowhere).await.unwrap_err().code(), tonic::Code::NotFound);
        // A checkpoint must name a reported step.
        let error = trials
            .checkpoint(v1::CheckpointRequest {
                trial: Some(reference.clone()),
                checkpoint: Some(v1::CheckpointLocation {
                    step: 5,
                    path: "/ck/5".into(),
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
        // Finish, too, is answered only once the exit is committed.
        let lock = WriteLock::hold(&dir.join("server.db"));
        let (mut finisher, request) = (
            trials.clone(),
            v1::FinishRequest {
                trial: Some(reference.clone()),
                success: true,
                reason: String::new(),
            },
        );
        let mut finished = tokio::spawn(async move { finisher.finish(request).await });
        assert_unanswered(&mut finished, "Finish was answered before the exit was committed").await;
        lock.release();
        finished.await.unwrap().unwrap();
        let store = Store::open(&dir.join("server.db")).unwrap();
        let info = store.experiment(Some("ask")).unwrap();
        let trial = rung::TrialId(reference.trial);
        let row = store
            .trials(info.id)
            .unwrap()
            .into_iter()
            .find(|t| t.id == trial)
            .unwrap();
        assert_eq!(
            row.status.label(),
            "completed",
            "the exit is in the store when Finish returns"
        );
        // A report for a finished trial.
        let error = trials.report(report(3, 0.4)).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
    });
    let db = dir.join("server.db");
    let store = Store::open(&db).unwrap();
    let info = store.experiment(Some("ask")).unwrap();
    let reports = store.reports(info.id, None).unwrap();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(reports[0].1.metrics["loss"], 0.5, "the first value stands");
    drop(server);
}

#[test]
fn tls_serves_agents_and_the_cli_and_sigterm_shuts_down_cleanly() {
    let _deadline = common::deadline(Duration::from_secs(420));
    let _group = common::light();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    let spec = asha_spec(dir, "secure", 6, "{ cpu = 1, gpu = 0.5 }");
    let (mut server, url) = serve(
        dir,
        "127.0.0.1:0",
        &["--tls-cert", "cert.pem", "--tls-key", "key.pem", spec.to_str().unwrap()],
    );
    assert!(url.starts_with("https://"), "{url}");
    let keeper = agent(dir, &url, "tls-agent", 1, &["--ca-cert", "cert.pem"]);

    let remote = Remote {
        url: url.clone(),
        token: None,
        ca_cert: Some(dir.join("cert.pem")),
    };
    let done = wait_until_finished(&remote, "secure", Duration::from_secs(120), &[&server, &keeper]);
    assert_eq!(done.state, "finished", "{done:?}\n{}", keeper.dump());
    assert_eq!(done.completed + done.stopped, 6);

    // The CLI over TLS; without the CA it cannot verify the server.
    let shown = rung()
        .args(["best", "--server", &url, "--ca-cert"])
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap();
    assert!(shown.status.success(), "{shown:?}");
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("best trial of \"secure\""),
        "{shown:?}"
    );
    let unverified = rung().args(["status", "--server", &url]).output().unwrap();
    assert!(!unverified.status.success(), "{unverified:?}");

    // SIGTERM: a clean exit, and the store opens consistent.
    let status = server.terminate();
    assert!(status.success(), "{status:?}\n{}", server.dump());
    assert!(server.dump().contains("shutting down"), "{}", server.dump());
    assert_eq!(assert_reports_complete(&dir.join("server.db"), "secure"), 6);
}

#[test]
fn spread_runs_one_process_per_bundle_on_distinct_agents() {
    let _deadline = common::deadline(Duration::from_secs(420));
    let _group = common::light();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let spec = asha_spec(dir, "spread", 4, "[{ cpu = 1, gpu = 1 }, { cpu = 1, gpu = 1 }]");
    // FIFO: both processes of every trial run to the end (a trial stopped early may have its
    // second process stopped before it starts, which is right, but leaves nothing to check).
    let text = std::fs::read_to_string(&spec).unwrap().replace(
        "kind = \"asha\"\nmax_t = 9\ngrace_period = 1\nreduction_factor = 3\n",
        "kind = \"fifo\"\n",
    ) + "placement = \"spread\"\n";
    assert!(text.contains("kind = \"fifo\""), "{text}");
    std::fs::write(&spec, text).unwrap();
    let (server, url) = serve(dir, "127.0.0.1:0", &[spec.to_str().unwrap()]);
    let a = agent(dir, &url, "left", 1, &[]);
    let b = agent(dir, &url, "right", 1, &[]);
    let done = wait_until_finished(&plain(&url), "spread", Duration::from_secs(120), &[&server, &a, &b]);
    assert_eq!(done.state, "finished", "{done:?}");
    assert_eq!(done.completed + done.stopped, 4, "{done:?}");
    // The sweep ends when its trials have ended; a process that a STOP answer has not reached
    // yet may still be starting. Read the ledger once the agents run nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&plain(&url), "spread").agents.iter().any(|a| a.trials > 0) {
        assert!(Instant::now() < deadline, "the agents never drained");
        std::thread::sleep(Duration::from_millis(50));
    }
    let steps = ledger(dir);
    let mut agents_of: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for s in &steps {
        agents_of.entry(s.trial.clone()).or_default().insert(s.agent.clone());
    }
    assert_eq!(agents_of.len(), 4);
    for (trial, agents) in &agents_of {
        assert_eq!(agents.len(), 2, "{trial} ran on {agents:?}");
    }
    // Whole GPUs: never two processes on one device.
    for ((agent, device), most) in max_sharing(&steps) {
        assert_eq!(most, 1, "{agent} device {device}");
    }
    assert_no_trial_ran_twice_at_once(&steps);
}

#[test]
fn sigterm_mid_sweep_stops_trials_commits_and_a_restart_finishes_the_sweep() {
    let _deadline = common::deadline(Duration::from_secs(420));
    // It restarts the server on the port it had, for its agents to reconnect to: nothing else
    // may bind a port meanwhile, or another test's server could take that one.
    let _group = common::heavy();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let spec = asha_spec(dir, "paused", 24, "{ cpu = 1, gpu = 0.5 }");
    let (mut server, url) = serve(dir, "127.0.0.1:0", &[spec.to_str().unwrap()]);
    let port = url.rsplit(':').next().unwrap().to_owned();
    let worker = agent(dir, &url, "steady", 2, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ledger(dir).iter().filter(|s| s.step > 0).count() < 20 {
        assert!(Instant::now() < deadline, "no progress:\n{}", worker.dump());
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = server.terminate();
    assert!(status.success(), "{status:?}\n{}", server.dump());
    // The agent was told: its trials stopped (nothing of the first session runs on).
    let lines = ledger(dir).len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ledger(dir).len(), lines, "trials kept running after the server stopped");
    // The store is consistent and unfinished, every committed report in order.
    {
        let store = Store::open(&dir.join("server.db")).unwrap();
        let info = store.experiment(Some("paused")).unwrap();
        assert!(!info.is_finished());
        let reports = store.reports(info.id, None).unwrap();
        assert!(!reports.is_empty());
    }
    let (server, _) = serve(dir, &format!("127.0.0.1:{port}"), &[spec.to_str().unwrap()]);
    let done = wait_until_finished(&plain(&url), "paused", Duration::from_secs(120), &[&server, &worker]);
    assert_eq!(done.state, "finished", "{done:?}");
    assert_eq!(done.completed + done.stopped, 24, "{done:?}");
    assert_eq!(assert_reports_complete(&dir.join("server.db"), "paused"), 24);
    assert_no_trial_ran_twice_at_once(&ledger(dir));
}

#[test]
fn a_silent_worker_s_trial_is_handed_out_again() {
    let _deadline = common::deadline(Duration::from_secs(420));
    let _group = common::light();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let spec = ask_spec(dir, 1);
    let (server, url) = serve(dir, "127.0.0.1:0", &["--worker-lease-s", "1", spec.to_str().unwrap()]);
    runtime().block_on(async {
        let mut trials = TrialsClient::new(plain(&url).channel().await.unwrap());
        let ask = |worker: &str| v1::AskRequest {
            experiment: "ask".into(),
            worker: worker.into(),
            wait_ms: 10_000,
        };
        let first = trials
            .ask(ask("vanishing"))
            .await
            .unwrap()
            .into_inner()
            .assignment
            .unwrap();
        let first_ref = first.trial.clone().unwrap();
        // It says nothing; after its lease the same trial goes to the next worker, relaunched.
        let second = trials
            .ask(ask("steady"))
            .await
            .unwrap()
            .into_inner()
            .assignment
            .unwrap();
        let second_ref = second.trial.clone().unwrap();
        assert_eq!(second_ref.trial, first_ref.trial);
        assert_eq!(second_ref.attempt, first_ref.attempt + 1);
        assert_eq!(second.config_json, first.config_json);
        // The first worker, back, is told its launch was superseded.
        let late = trials
            .report(v1::ReportRequest {
                trial: Some(first_ref),
                step: 1,
                metrics: [("loss".to_owned(), 0.5)].into(),
                checkpoint: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(late.code(), tonic::Code::FailedPrecondition, "{late:?}");
        assert!(late.message().contains("superseded"), "{late:?}");
        trials
            .finish(v1::FinishRequest {
                trial: Some(second_ref),
                success: false,
                reason: "gave up".into(),
            })
            .await
            .unwrap();
    });
    assert!(server.dump().contains("a worker went silent"), "{}", server.dump());
}

/// `GET path` on an HTTP endpoint: the status line of the answer.
fn http_status(address: &str, path: &str) -> String {
    use std::io::Read;
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    write!(socket, "GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n").unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn health_answers_without_a_token_while_rung_services_still_require_one() {
    let _deadline = common::deadline(Duration::from_secs(420));
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = rung::server::ServeConfig::new(dir.path().join("server.db"));
    config.token = Some("s3cret-token".into());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(rung::server::serve(listener, config, Vec::new(), async {
        let _ = stopped.await;
    }));

    // No token: the whole server and each rung.v1 service are SERVING; an unknown one is not found.
    let mut health = HealthClient::new(plain(&url).channel().await.unwrap());
    for service in ["", "rung.v1.Trials", "rung.v1.Agents", "rung.v1.Experiments"] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await;
            if let Ok(answer) = &answer
                && answer.get_ref().status == ServingStatus::Serving as i32
            {
                break;
            }
            assert!(Instant::now() < deadline, "{service:?} never served: {answer:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    // A rung call without the token is still refused; with it, answered.
    let refused = plain(&url)
        .experiments()
        .await
        .unwrap()
        .list(v1::ListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let remote = Remote {
        token: Some("s3cret-token".into()),
        ..plain(&url)
    };
    let mut experiments = remote.experiments().await.unwrap();
    experiments
        .list(remote.request(v1::ListRequest::default()))
        .await
        .unwrap();

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[test]
fn agent_health_endpoint_is_ready_only_while_it_has_a_session() {
    let _deadline = common::deadline(Duration::from_secs(420));
    let _group = common::light();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (mut server, url) = serve(dir, "127.0.0.1:0", &[]);
    let worker = agent(dir, &url, "probed", 0, &["--health-listen", "127.0.0.1:0"]);
    let line = worker.wait_for_line("agent health on", Duration::from_secs(30));
    let address = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .and_then(|w| w.strip_suffix("/ready"))
        .expect("the address is printed")
        .to_owned();
    let wait_for = |path: &str, expected: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = http_status(&address, path);
            if status.contains(expected) {
                return;
            }
            assert!(Instant::now() < deadline, "{path} stayed {status:?}\n{}", worker.dump());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("/ready", "200 OK");
    assert!(http_status(&address, "/live").contains("200 OK"));
    assert!(http_status(&address, "/nothing").contains("404 Not Found"));
    // Without a controller the agent is alive but not ready.
    server.kill();
    wait_for("/ready", "503 Service Unavailable");
    assert!(http_status(&address, "/live").contains("200 OK"));
}

#[test]
fn an_experiment_that_cannot_resume_is_marked_failed_and_the_server_serves_the_rest() {
    let _deadline = common::deadline(Duration::from_secs(120));
    let _group = common::light();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // An unfinished experiment that cannot resume before its driver even starts: another
    // process holds its lock (as a `rung resume` of the same store would).
    {
        let mut store = Store::open_or_create(&dir.join("server.db")).unwrap();
        let spec = r#"{"name": "stuck", "metric": "loss", "mode": "min", "seed": 1, "max_concurrent": 1,
            "space": {"lr": {"uniform": [0.0, 1.0]}}}"#;
        store.create_experiment("stuck", spec, 1).unwrap();
    }
    let _held = rung::tune_runtime::driver::ExperimentLock::acquire(&dir.join("server_trials/stuck"), "stuck").unwrap();
    let spec = ask_spec(dir, 2);
    let (server, url) = serve(dir, "127.0.0.1:0", &[spec.to_str().unwrap()]);
    let stuck = status(&plain(&url), "stuck");
    assert_eq!(stuck.state, "failed", "{stuck:?}");
    assert!(
        stuck.end_cause.contains("could not be resumed")
            && stuck
                .end_cause
                .contains("is being run by another rung process right now"),
        "{stuck:?}"
    );
    // The other experiment was started and is served.
    let ask = status(&plain(&url), "ask");
    assert_eq!(ask.state, "running", "{ask:?}\n{}", server.dump());
    assert!(
        server.dump().contains("experiment \"stuck\" could not be resumed"),
        "{}",
        server.dump()
    );
    // The store still holds it unfinished, to resume once the cause is fixed.
    let store = Store::open(&dir.join("server.db")).unwrap();
    assert!(!store.experiment(Some("stuck")).unwrap().is_finished());
}
