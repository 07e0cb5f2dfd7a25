//! Where a trial's files live: its folder, the staging folder it writes checkpoints into, the
//! committed checkpoints and its log. The runners, the driver and checkpoint storage share it.

use std::path::{Path, PathBuf};

use tune_core::trial::TrialId;

/// Where a trial's files live under a sweep's trials folder.
#[derive(Debug, Clone)]
pub struct TrialFiles {
    /// The trial's folder.
    pub dir: PathBuf,
}

impl TrialFiles {
    /// The files of `trial` under `root`.
    pub fn new(root: &Path, trial: TrialId) -> Self {
        TrialFiles {
            dir: root.join(trial.to_string()),
        }
    }

    /// Where the trial writes a new checkpoint (`RUNG_CHECKPOINT_DIR`).
    pub fn staging(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }

    /// Where committed checkpoints are kept, one folder per step.
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }

    /// The trial's log: stdout lines that are not reports, and stderr.
    pub fn log(&self) -> PathBuf {
        self.dir.join("trial.log")
    }

    /// Creates the folders; the staging folder is emptied.
    pub fn prepare(&self) -> std::io::Result<()> {
        let staging = self.staging();
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::create_dir_all(&staging)?;
        std::fs::create_dir_all(self.checkpoints())
    }

    /// Moves what the trial wrote into the staging folder to the checkpoint folder of `step`,
    /// leaving the staging folder empty. `None` when nothing was written.
    pub fn commit_checkpoint(&self, step: u64) -> std::io::Result<Option<PathBuf>> {
        let staging = self.staging();
        let entries: Vec<_> = std::fs::read_dir(&staging)?.collect::<std::io::Result<_>>()?;
        if entries.is_empty() {
            return Ok(None);
        }
        let target = self.checkpoints().join(format!("step_{step:08}"));
        if target.exists() {
            std::fs::remove_dir_all(&target)?;
        }
        std::fs::create_dir_all(&target)?;
        for entry in entries {
            std::fs::rename(entry.path(), target.join(entry.file_name()))?;
        }
        Ok(Some(target))
    }
}
