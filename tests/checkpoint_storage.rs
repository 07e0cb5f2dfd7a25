//! Checkpoints on an S3-compatible object store: a real S3 server (`s3s-fs`, objects kept as
//! files under a temporary folder) that each test starts on 127.0.0.1, and real `rung run`,
//! `rung serve` and `rung agent` processes that reach it through the usual `AWS_*` variables.
//!
//! The trials are `tests/fixtures/checkpoint_trial.py`: each checkpoint is several files whose
//! bytes depend on (trial, step), and a trial that restores checks it got every byte back.

mod common;
#[path = "common/s3.rs"]
mod s3;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, stderr, stdout};
use s3::{BUCKET, KEY, S3Server, SECRET};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint_trial.py")
}

fn rung() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rung"))
}

/// A FIFO spec of `samples` trials of the checkpoint fixture, checkpoints under
/// `s3://ckpt/sweeps`; `extra` goes into `[trial]`.
fn spec(dir: &Path, name: &str, samples: u32, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"name = "{name}"
metric = "loss"
mode = "min"
num_samples = {samples}
max_concurrent = 2
seed = 5

[space]
lr = {{ uniform = [0.0, 1.0] }}

[trial]
command = ["python3", "{script}"]
checkpoint_storage = "s3://{BUCKET}/sweeps"
stop_grace_s = 2
{extra}
"#,
            script = fixture().display()
        ),
    )
    .unwrap();
    path
}

fn run(dir: &Path, server: &S3Server, args: &[&str], env: &[(&str, &str)]) -> Output {
    rung()
        .args(args)
        .envs(server.env())
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .expect("rung runs")
}

fn checkpoint_rows(db: &Path) -> Vec<(String, u64, String, bool)> {
    let connection = rusqlite::Connection::open(db).unwrap();
    let mut statement = connection
        .prepare("SELECT trial_id, step, path, deleted FROM checkpoints ORDER BY trial_id, step")
        .unwrap();
    statement
        .query_map([], |row| {
            Ok((
                format!("t{}", row.get::<_, i64>(0)?),
                row.get::<_, i64>(1)? as u64,
                row.get(2)?,
                row.get(3)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn trial_log(trials_root: &Path, trial: &str) -> String {
    std::fs::read_to_string(trials_root.join(trial).join("trial.log")).unwrap_or_default()
}

#[test]
fn a_local_sweep_uploads_keeps_the_newest_and_restores_from_the_store() {
    let _deadline = common::deadline(Duration::from_secs(300));
    let _group = common::light();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("s3").join(BUCKET)).unwrap();
    let server = S3Server::start(&dir.path().join("s3"), 0, None);
    let spec = spec(dir.path(), "upload", 2, "checkpoint_keep = 1\nmax_failures = 1");
    let output = run(
        dir.path(),
        &server,
        &["run", spec.to_str().unwrap(), "--db", "upload.db", "--quiet"],
        &[("FAIL_AT", "3"), ("CKPT_BYTES", "20000")],
    );
    assert!(output.status.success(), "{}\n{}", stdout(&output), stderr(&output));

    let rows = checkpoint_rows(&dir.path().join("upload.db"));
    for trial in ["t1", "t2"] {
        // Every step checkpointed; the store points into the bucket, never at a trial folder.
        let steps: Vec<u64> = rows.iter().filter(|r| r.0 == trial).map(|r| r.1).collect();
        assert_eq!(steps, [1, 2, 3, 4, 5], "{rows:?}");
        for (_, step, path, _) in rows.iter().filter(|r| r.0 == trial) {
            assert_eq!(path, &format!("s3://{BUCKET}/sweeps/upload/{trial}/{step}/"));
        }
        // keep = 1: the best (also the newest, loss falls) is all that is left in the bucket.
        assert_eq!(
            server.complete_steps("upload", trial),
            [5],
            "{:?}",
            server.keys("sweeps")
        );
        let kept: BTreeSet<String> = server.keys(&format!("sweeps/upload/{trial}/"));
        assert_eq!(
            kept,
            [
                ".rung-complete",
                "state.json",
                "weights/layer0.bin",
                "weights/layer1.bin"
            ]
            .iter()
            .map(|f| format!("sweeps/upload/{trial}/5/{f}"))
            .collect::<BTreeSet<_>>()
        );
        let live: Vec<u64> = rows.iter().filter(|r| r.0 == trial && !r.3).map(|r| r.1).collect();
        assert_eq!(live, [5], "the store marks the rest deleted: {rows:?}");

        // The failure at step 3 relaunched the trial from step 2, downloaded from the bucket.
        let log = trial_log(&dir.path().join("upload_trials/upload"), trial);
        assert!(
            log.contains(&format!("downloaded s3://{BUCKET}/sweeps/upload/{trial}/2/ into")),
            "{log}"
        );
        assert!(log.contains("restored step 2 on local: all files intact"), "{log}");
        // Uploaded checkpoints do not stay in the trial's folder.
        let local = dir.path().join(format!("upload_trials/upload/{trial}/checkpoints"));
        assert_eq!(std::fs::read_dir(&local).unwrap().count(), 0, "{local:?}");
    }
}

#[test]
fn an_upload_cut_by_a_dying_server_is_retried_and_recorded_only_once_whole() {
    let _deadline = common::deadline(Duration::from_secs(300));
    // Its S3 server dies and (maybe) comes back on the same port: nothing else may bind a port
    // meanwhile, or another test's server could take that one.
    let _group = common::heavy();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("s3").join(BUCKET)).unwrap();
    // Writes: step 1's three files and marker, then the server dies on step 2's second file.
    let mut server = S3Server::start(&dir.path().join("s3"), 0, Some(6));
    let port = server.addr.port();
    let spec = spec(dir.path(), "flaky", 1, "");
    let mut child = rung()
        .args(["run", spec.to_str().unwrap(), "--db", "flaky.db", "--quiet"])
        .envs(server.env())
        .env("STEPS", "3")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    server.kill_when_dead(Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1500));
    // The server comes back on the same port with the same folder, as a restarted MinIO would.
    let server = S3Server::start(&dir.path().join("s3"), port, None);
    let status = wait_with_timeout(&mut child, Duration::from_secs(90));
    let mut err = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .for_each(|l| err.push_str(&l));
    assert!(status.success(), "{err}");

    let rows = checkpoint_rows(&dir.path().join("flaky.db"));
    let steps: Vec<u64> = rows.iter().map(|r| r.1).collect();
    assert_eq!(steps, [1, 2, 3], "{rows:?}");
    assert_eq!(server.complete_steps("flaky", "t1"), [1, 2, 3]);
    assert_eq!(
        server.keys("sweeps/flaky/t1/2/").len(),
        4,
        "{:?}",
        server.keys("sweeps")
    );
    let log = trial_log(&dir.path().join("flaky_trials/flaky"), "t1");
    assert!(
        log.contains("upload of the checkpoint of step 2 to s3://ckpt/sweeps/flaky/t1/2/ failed (attempt 1 of 6)"),
        "{log}"
    );
    assert!(!log.contains("could not upload"), "{log}");
}

#[test]
fn a_checkpoint_that_cannot_be_uploaded_is_left_out_and_the_report_kept() {
    let _deadline = common::deadline(Duration::from_secs(300));
    // Its S3 server dies and (maybe) comes back on the same port: nothing else may bind a port
    // meanwhile, or another test's server could take that one.
    let _group = common::heavy();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("s3").join(BUCKET)).unwrap();
    let mut server = S3Server::start(&dir.path().join("s3"), 0, Some(5));
    let spec = spec(dir.path(), "down", 1, "");
    let mut child = rung()
        .args(["run", spec.to_str().unwrap(), "--db", "down.db", "--quiet"])
        .envs(server.env())
        .env("STEPS", "3")
        .env("RUNG_STORAGE_ATTEMPTS", "2")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    server.kill_when_dead(Duration::from_secs(60));
    let status = wait_with_timeout(&mut child, Duration::from_secs(90));
    assert!(status.success());

    // Step 1 is stored; steps 2 and 3 could not be uploaded: reported, but no checkpoint.
    let rows = checkpoint_rows(&dir.path().join("down.db"));
    assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), [1], "{rows:?}");
    let store = rung::tune_runtime::store::Store::open(&dir.path().join("down.db")).unwrap();
    let info = store.experiment(None).unwrap();
    let trials = store.trials(info.id).unwrap();
    assert_eq!(trials[0].last.as_ref().map(|r| r.step), Some(3));
    let log = trial_log(&dir.path().join("down_trials/down"), "t1");
    assert!(
        log.contains(
            "step 2: could not upload the checkpoint of step 2 to s3://ckpt/sweeps/down/t1/2/ after 2 attempts"
        ),
        "{log}"
    );
}

#[test]
fn bad_storage_settings_are_refused_naming_the_setting() {
    let _deadline = common::deadline(Duration::from_secs(300));
    let _group = common::light();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("s3").join(BUCKET)).unwrap();
    let server = S3Server::start(&dir.path().join("s3"), 0, None);
    type Case = (&'static str, &'static [(&'static str, &'static str)], &'static str);
    let cases: [Case; 5] = [
        (
            "s3:///sweeps",
            &[],
            "setting \"trial.checkpoint_storage\": \"s3:///sweeps\": the URI names no bucket (write s3://bucket/prefix)",
        ),
        ("gs://b/p", &[], "unsupported scheme \"gs\""),
        (
            "s3://ckpt/sweeps",
            &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")],
            "no credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY not set",
        ),
        (
            "s3://ckpt/sweeps",
            &[("AWS_ENDPOINT_URL", "http://127.0.0.1:9")],
            "\"s3://ckpt/sweeps\": cannot reach the store",
        ),
        (
            "s3://ckpt/sweeps",
            &[("AWS_ENDPOINT_URL", "127.0.0.1:9")],
            "is not an http:// or https:// URL",
        ),
    ];
    for (index, (uri, env, expected)) in cases.iter().enumerate() {
        let name = format!("bad{index}");
        let path = spec(dir.path(), &name, 1, "");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(&format!("s3://{BUCKET}/sweeps"), uri);
        std::fs::write(&path, text).unwrap();
        let output = run(
            dir.path(),
            &server,
            &["run", path.to_str().unwrap(), "--db", "bad.db", "--quiet"],
            env,
        );
        assert_eq!(output.status.code(), Some(2), "{uri}: {}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{uri}: {}", stderr(&output));
        assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    }
    // Nothing was created for the refused specs.
    assert!(!dir.path().join("bad.db").exists() || checkpoint_rows(&dir.path().join("bad.db")).is_empty());
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rung did not finish in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_trial_moves_to_another_agent_that_shares_no_disk_and_restores_from_the_store() {
    let _deadline = common::deadline(Duration::from_secs(300));
    let _group = common::light();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("s3").join(BUCKET)).unwrap();
    let server = S3Server::start(&dir.path().join("s3"), 0, None);
    let spec = spec(dir.path(), "moving", 1, "");

    let mut serve = rung();
    serve
        .args(["-v", "serve", "--db"])
        .arg(dir.path().join("server.db"))
        .args(["--listen", "127.0.0.1:0", "--lease-s", "2", "--heartbeat-s", "0.4"])
        .envs(server.env())
        .current_dir(dir.path());
    let controller = Proc::spawn("server", serve);
    let line = controller.wait_for_line("serving", Duration::from_secs(30));
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap()
        .to_owned();

    // Each agent has a work dir of its own: nothing on disk is shared between them.
    let agent = |name: &str| {
        let mut command = rung();
        command
            .args([
                "-v",
                "agent",
                "--controller",
                &url,
                "--name",
                name,
                "--gpus",
                "none",
                "--cpus",
                "2",
            ])
            .arg("--work-dir")
            .arg(dir.path().join(name))
            .envs(server.env())
            .env("HANG_AT_AGENT", "agent-a")
            .env("HANG_AT", "3")
            .env("STEPS", "5")
            .current_dir(dir.path());
        Proc::spawn(name, command)
    };
    let mut first = agent("agent-a");
    first.wait_for_line("session open", Duration::from_secs(30));
    let submit = rung()
        .args(["submit", spec.to_str().unwrap(), "--server", &url])
        .output()
        .unwrap();
    assert!(submit.status.success(), "{}", stderr(&submit));

    // Agent A runs the trial to step 2 (uploaded), then hangs at 3; the machine is lost.
    let log_a = dir.path().join("agent-a/moving/t1/trial.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log_a)
        .unwrap_or_default()
        .contains("hanging at step 3")
    {
        assert!(Instant::now() < deadline, "agent-a never reached step 3");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Step 2's upload, and then its report, may still be on the way while the trial hangs at 3:
    // the machine is lost once the controller has recorded the checkpoint of step 2 (it records
    // one only after its upload is whole), not merely once the bucket holds it.
    let db = dir.path().join("server.db");
    while !checkpoint_rows(&db).iter().any(|row| row.0 == "t1" && row.1 == 2) {
        assert!(Instant::now() < deadline, "the checkpoint of step 2 was never recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.complete_steps("moving", "t1"), [1, 2]);
    let _ = first.child.kill();
    let _ = first.child.wait();

    let _second = agent("agent-b");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let rows = checkpoint_rows(&db);
        if rows.iter().any(|r| r.1 == 5) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the trial never finished on agent-b: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log_b = std::fs::read_to_string(dir.path().join("agent-b/moving/t1/trial.log")).unwrap();
    assert!(
        log_b.contains(&format!("downloaded s3://{BUCKET}/sweeps/moving/t1/2/ into")),
        "{log_b}"
    );
    assert!(
        log_b.contains("restored step 2 on agent-b: all files intact"),
        "{log_b}"
    );
    assert_eq!(server.complete_steps("moving", "t1"), [1, 2, 3, 4, 5]);
}

#[test]
fn a_server_refuses_an_experiment_whose_store_it_cannot_reach() {
    let _deadline = common::deadline(Duration::from_secs(300));
    let _group = common::light();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), "unreachable", 1, "");
    let mut serve = rung();
    serve
        .args(["serve", "--db"])
        .arg(dir.path().join("server.db"))
        .args(["--listen", "127.0.0.1:0"])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .current_dir(dir.path());
    let controller = Proc::spawn("server", serve);
    let line = controller.wait_for_line("serving", Duration::from_secs(30));
    let url = line.split_whitespace().find(|w| w.starts_with("http")).unwrap();
    let submit = rung()
        .args(["submit", spec.to_str().unwrap(), "--server", url])
        .output()
        .unwrap();
    assert_eq!(submit.status.code(), Some(2), "{}", stderr(&submit));
    assert!(
        stderr(&submit).contains(
            "the server says: setting \"trial.checkpoint_storage\": \"s3://ckpt/sweeps\": cannot reach the store"
        ),
        "{}",
        stderr(&submit)
    );
    assert!(stderr(&submit).contains("Connection refused"), "{}", stderr(&submit));
    // The server lives on and takes the next request.
    let status = rung().args(["status", "--server", url]).output().unwrap();
    assert!(stderr(&status).contains("no experiment yet"), "{}", stderr(&status));
}
