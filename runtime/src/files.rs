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

    /// Creates the folders; the staging folder is emptied. A trial process is handed the
    /// staging folder's path, so it must exist before the process starts.
    pub fn prepare(&self) -> std::io::Result<()> {
        self.clear_staging()?;
        std::fs::create_dir_all(self.staging())?;
        std::fs::create_dir_all(self.checkpoints())
    }

    /// Empties what an earlier launch left in the staging folder, creating nothing: an
    /// in-process trial's folders are made when it first writes a checkpoint. Creating three
    /// folders per trial costs more than the rest of a short trial's bookkeeping together
    /// (ext4's inode allocation, measured with perf on a 1,000-trial sweep).
    pub fn clear_staging(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.staging()) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Moves what the trial wrote into the staging folder to the checkpoint folder of `step`,
    /// leaving the staging folder empty, and makes it durable: every file and folder of it is
    /// fsynced, and so is the folder that holds it, before this returns (and so before the
    /// store can record it). `None` when nothing was written.
    pub fn commit_checkpoint(&self, step: u64) -> std::io::Result<Option<PathBuf>> {
        let staging = self.staging();
        let entries: Vec<_> = match std::fs::read_dir(&staging) {
            Ok(entries) => entries.collect::<std::io::Result<_>>()?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
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
        sync_tree(&target)?;
        sync_dir(&self.checkpoints())?;
        Ok(Some(target))
    }
}

/// Fsyncs every file and folder under `path`, and `path` itself. The trial wrote the files
/// without syncing them, and renames are durable only once their folders are synced.
fn sync_tree(path: &Path) -> std::io::Result<()> {
    let kind = std::fs::symlink_metadata(path)?.file_type();
    if kind.is_dir() {
        for entry in std::fs::read_dir(path)? {
            sync_tree(&entry?.path())?;
        }
        sync_dir(path)
    } else if kind.is_file() {
        std::fs::File::open(path)?.sync_all()
    } else {
        Ok(()) // a link's target is not the checkpoint's to sync
    }
}

/// Fsyncs a folder, which makes the names created in or moved into it durable.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_in_process_trial_gets_folders_only_when_it_writes_a_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let files = TrialFiles::new(root.path(), TrialId(3));
        files.clear_staging().unwrap();
        assert!(!files.dir.exists(), "clearing creates nothing");
        assert_eq!(
            files.commit_checkpoint(1).unwrap(),
            None,
            "no staging folder: no checkpoint"
        );

        std::fs::create_dir_all(files.staging().join("shards")).unwrap();
        std::fs::write(files.staging().join("shards/0.bin"), b"weights").unwrap();
        let kept = files.commit_checkpoint(2).unwrap().unwrap();
        assert_eq!(kept, files.checkpoints().join("step_00000002"));
        assert_eq!(std::fs::read(kept.join("shards/0.bin")).unwrap(), b"weights");
        assert_eq!(
            std::fs::read_dir(files.staging()).unwrap().count(),
            0,
            "staging emptied"
        );

        // A new launch starts with an empty staging folder, whatever the last one left there.
        std::fs::write(files.staging().join("half-written"), b"").unwrap();
        files.clear_staging().unwrap();
        assert!(!files.staging().exists());
        assert_eq!(files.commit_checkpoint(3).unwrap(), None);
    }
}
