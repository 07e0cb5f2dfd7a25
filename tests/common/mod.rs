//! Helpers shared by the integration tests: a sandbox folder with the quickstart trial script,
//! spec files, and runs of the `rung` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rung::tune_core::store::{ExperimentInfo, Store, StoredTrial};

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
