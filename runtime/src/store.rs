//! The durable store: SQLite in WAL mode, an append-only event log and tables derived from it.
//!
//! The `events` table is the truth: every event the controller handled, in order, with the
//! time it was handled at. The `trials`, `reports` and `checkpoints` tables are derived from it
//! (the controller's `Persist` records) and written in the same transaction, so they never
//! disagree with the log. Many events share one transaction (group commit); a report is
//! answered only after its transaction committed.
//!
//! How far a commit goes before it returns is the sweep's [`Durability`]. A commit in WAL mode
//! is atomic and, once `COMMIT` returns, in the operating system's hands: the process can die
//! at any instant after that and the transaction is still there when the store is opened again.
//! Only a machine that loses power (or a kernel that crashes) can lose the transactions the OS
//! had not written out yet, which is what an fsync per commit ([`Flush::Disk`]) guards against.
//!
//! Schema changes are numbered migrations; a store written by a newer rung is refused, and a
//! file that is not a rung store is refused before anything is written to it.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::error::{Error, Result};
use tune_core::controller::{Event, Record};
use tune_core::trial::{Report, TrialId, TrialStatus, metrics_serde};

/// How long a group commit keeps trying while another process holds the store's write lock.
pub const MAX_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// `PRAGMA application_id` of rung stores ("RUNG").
pub const APPLICATION_ID: i32 = 0x5255_4E47;

/// The migrations, in order; the schema version is the number applied.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE experiments (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    spec        TEXT NOT NULL,
    seed        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    status      TEXT NOT NULL,
    end_cause   TEXT,
    elapsed_ms  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE events (
    experiment_id INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    at_ms         INTEGER NOT NULL,
    payload       TEXT NOT NULL,
    PRIMARY KEY (experiment_id, seq)
) WITHOUT ROWID;
CREATE TABLE trials (
    experiment_id INTEGER NOT NULL,
    trial_id      INTEGER NOT NULL,
    status        TEXT NOT NULL,
    config        TEXT NOT NULL,
    failures      INTEGER NOT NULL,
    launches      INTEGER NOT NULL,
    last_report   TEXT,
    best_value    TEXT,
    best_step     INTEGER,
    error         TEXT,
    PRIMARY KEY (experiment_id, trial_id)
) WITHOUT ROWID;
CREATE TABLE reports (
    experiment_id INTEGER NOT NULL,
    trial_id      INTEGER NOT NULL,
    step          INTEGER NOT NULL,
    metrics       TEXT NOT NULL,
    PRIMARY KEY (experiment_id, trial_id, step)
) WITHOUT ROWID;
CREATE TABLE checkpoints (
    experiment_id INTEGER NOT NULL,
    trial_id      INTEGER NOT NULL,
    step          INTEGER NOT NULL,
    path          TEXT NOT NULL,
    value         TEXT,
    deleted       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment_id, trial_id, step)
) WITHOUT ROWID;
"#];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// An experiment as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentInfo {
    /// Row id.
    pub id: i64,
    /// Unique name within the store.
    pub name: String,
    /// The spec it runs, as JSON (opaque to the store).
    pub spec: String,
    /// Its seed.
    pub seed: u64,
    /// Seconds since the Unix epoch when it was created.
    pub created_at: i64,
    /// `running` or `finished`.
    pub status: String,
    /// Why it finished.
    pub end_cause: Option<String>,
    /// Time the sweep has run, over all its sessions.
    pub elapsed_ms: u64,
}

impl ExperimentInfo {
    /// Whether the sweep is over.
    pub fn is_finished(&self) -> bool {
        self.status == "finished"
    }
}

/// One logged event.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// Position in the log (from 1).
    pub seq: u64,
    /// When it was handled, in ms since the sweep first started.
    pub at_ms: u64,
    /// The event.
    pub event: Event,
}

/// A trial as the store holds it: the same row the controller persists.
pub use tune_core::controller::TrialRow as StoredTrial;

/// A checkpoint as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCheckpoint {
    /// The trial.
    pub trial: TrialId,
    /// Its step.
    pub step: u64,
    /// Where it lives.
    pub path: String,
    /// The metric at that step.
    pub value: Option<f64>,
    /// Whether the keep policy deleted it.
    pub deleted: bool,
}

/// What one group commit writes.
#[derive(Debug, Default)]
pub struct Batch {
    /// Events, each with its sequence number and time.
    pub events: Vec<LoggedEvent>,
    /// Derived rows.
    pub records: Vec<Record>,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.records.is_empty()
    }
}

/// What a sweep's store survives: the `durability` setting of a spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Survives the rung process dying at any instant (`kill -9`, a panic, the OOM killer):
    /// every report answered is in the store and the sweep resumes exactly. A commit is a WAL
    /// write without an fsync, so a power loss can take the last commits back (never half of
    /// one, never a checkpoint the store still points at).
    #[default]
    Process,
    /// Also survives the machine losing power: an fsync before every answer.
    Power,
}

impl Durability {
    /// How far a routine commit goes at this level.
    pub fn flush(self) -> Flush {
        match self {
            Durability::Process => Flush::Os,
            Durability::Power => Flush::Disk,
        }
    }

    /// The setting's name in a spec.
    pub fn label(self) -> &'static str {
        match self {
            Durability::Process => "process",
            Durability::Power => "power",
        }
    }
}

/// How far one commit goes before [`Store::commit`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Into the WAL, in the operating system's hands: survives the process, not a power loss.
    Os,
    /// Onto the disk (the WAL is fsynced, and with it every commit before this one).
    Disk,
}

impl Flush {
    /// SQLite's `synchronous` setting that makes a WAL commit go this far.
    fn synchronous(self) -> &'static str {
        match self {
            Flush::Os => "NORMAL",
            Flush::Disk => "FULL",
        }
    }
}

/// A rung store. See the module documentation.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The connection's `synchronous` setting, switched only when a commit needs another.
    flush: Flush,
}

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

impl Store {
    /// Opens the store at `path`, creating it if it does not exist.
    pub fn open_or_create(path: &Path) -> Result<Store> {
        Store::open_with(path, true)
    }

    /// Opens an existing store; a missing file is an error.
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_with(path, false)
    }

    fn open_with(path: &Path, create: bool) -> Result<Store> {
        let not_a_store = |reason: &str| Error::NotAStore {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let existing_len = match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => return Err(not_a_store("it is a directory")),
            Ok(meta) => Some(meta.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        match existing_len {
            None if !create => return Err(Error::NoStore(path.to_owned())),
            Some(0) if !create => return Err(not_a_store("the file is empty")),
            Some(len) if len > 0 => {
                use std::io::Read;
                let mut header = [0u8; 16];
                let mut file =
                    std::fs::File::open(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                if len < 16 || file.read_exact(&mut header).is_err() || &header != SQLITE_HEADER {
                    return Err(not_a_store("not an SQLite database"));
                }
            }
            _ => {}
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Read-only checks first: nothing is written to a file that is not ours.
        let application_id: i32 = conn.query_row("PRAGMA application_id", [], |row| row.get(0))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))?;
        if application_id != APPLICATION_ID {
            if tables > 0 || application_id != 0 {
                return Err(not_a_store("an SQLite database of another application"));
            }
            if !create {
                return Err(not_a_store("an empty SQLite database"));
            }
        }
        if version > SCHEMA_VERSION {
            return Err(Error::NewerSchema {
                path: path.to_owned(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Writes outside a sweep's group commits (the schema, a new experiment) are not
        // fsynced: at `durability = "power"` the first commit that answers a report fsyncs the
        // WAL, and with it everything written before.
        conn.pragma_update(None, "synchronous", Flush::Os.synchronous())?;
        let mut store = Store {
            conn,
            path: path.to_owned(),
            flush: Flush::Os,
        };
        store.migrate(version)?;
        Ok(store)
    }

    fn migrate(&mut self, from: i64) -> Result<()> {
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(migration)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates an experiment. If `name` is taken, `name-2`, `name-3`, ... is used instead.
    pub fn create_experiment(&mut self, name: &str, spec: &str, seed: u64) -> Result<ExperimentInfo> {
        let mut candidate = name.to_owned();
        let mut suffix = 1;
        while self.find_experiment(&candidate)?.is_some() {
            suffix += 1;
            candidate = format!("{name}-{suffix}");
        }
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.conn.execute(
            "INSERT INTO experiments (name, spec, seed, created_at, status) VALUES (?1, ?2, ?3, ?4, 'running')",
            params![candidate, spec, seed as i64, created_at],
        )?;
        Ok(self.find_experiment(&candidate)?.expect("just inserted"))
    }

    fn find_experiment(&self, name: &str) -> Result<Option<ExperimentInfo>> {
        Ok(self
            .conn
            .query_row(
                &format!("{EXPERIMENT_COLUMNS} WHERE name = ?1"),
                [name],
                experiment_from_row,
            )
            .optional()?)
    }

    /// Every experiment, oldest first.
    pub fn experiments(&self) -> Result<Vec<ExperimentInfo>> {
        let mut statement = self.conn.prepare(&format!("{EXPERIMENT_COLUMNS} ORDER BY id"))?;
        let rows = statement.query_map([], experiment_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The experiment named `name`, or the newest one when `name` is `None`.
    pub fn experiment(&self, name: Option<&str>) -> Result<ExperimentInfo> {
        match name {
            Some(name) => self
                .find_experiment(name)?
                .ok_or_else(|| Error::UnknownExperiment(name.to_owned())),
            None => self
                .conn
                .query_row(
                    &format!("{EXPERIMENT_COLUMNS} ORDER BY id DESC LIMIT 1"),
                    [],
                    experiment_from_row,
                )
                .optional()?
                .ok_or_else(|| Error::NotAStore {
                    path: self.path.clone(),
                    reason: "it holds no experiment yet".into(),
                }),
        }
    }

    /// The event log of an experiment, in order.
    pub fn events(&self, experiment: i64) -> Result<Vec<LoggedEvent>> {
        let mut statement = self
            .conn
            .prepare("SELECT seq, at_ms, payload FROM events WHERE experiment_id = ?1 ORDER BY seq")?;
        let rows = statement.query_map([experiment], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?))
        })?;
        rows.map(|row| {
            let (seq, at_ms, payload) = row?;
            Ok(LoggedEvent {
                seq: seq as u64,
                at_ms: at_ms as u64,
                event: serde_json::from_str(&payload)?,
            })
        })
        .collect()
    }

    /// Writes a batch in one transaction, which has gone as far as `flush` says when this
    /// returns (at most one fsync for all of it).
    ///
    /// Another process writing to the same store (a second sweep sharing it) can hold the write
    /// lock past SQLite's busy timeout: the batch is then written again, with a warning, for up
    /// to [`MAX_BUSY_WAIT`], rather than failing the sweep over a lock that is about to go.
    pub fn commit(&mut self, experiment: i64, batch: &Batch, flush: Flush) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        loop {
            match self.write(experiment, batch, flush) {
                Err(Error::Sqlite(error)) if error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                    if started.elapsed() >= MAX_BUSY_WAIT {
                        return Err(Error::Sqlite(error));
                    }
                    tracing::warn!(
                        store = %self.path.display(),
                        waited_s = started.elapsed().as_secs(),
                        "the store is locked by another writer; writing the batch again"
                    );
                }
                other => return other,
            }
        }
    }

    /// Sets how long one write waits for another writer's lock before it is retried.
    pub fn set_busy_timeout(&self, timeout: std::time::Duration) -> Result<()> {
        Ok(self.conn.busy_timeout(timeout)?)
    }

    fn write(&mut self, experiment: i64, batch: &Batch, flush: Flush) -> Result<()> {
        if self.flush != flush {
            self.conn.pragma_update(None, "synchronous", flush.synchronous())?;
            self.flush = flush;
        }
        let tx = self.conn.transaction()?;
        {
            let mut insert_event =
                tx.prepare_cached("INSERT INTO events (experiment_id, seq, at_ms, payload) VALUES (?1, ?2, ?3, ?4)")?;
            for logged in &batch.events {
                insert_event.execute(params![
                    experiment,
                    logged.seq as i64,
                    logged.at_ms as i64,
                    serde_json::to_string(&logged.event)?
                ])?;
            }
            // A trial's row is a snapshot: only its newest one in the batch needs writing.
            let mut newest_row = std::collections::HashMap::new();
            for (index, record) in batch.records.iter().enumerate() {
                if let Record::Trial(row) = record {
                    newest_row.insert(row.id, index);
                }
            }
            for (index, record) in batch.records.iter().enumerate() {
                if let Record::Trial(row) = record
                    && newest_row[&row.id] != index
                {
                    continue;
                }
                write_record(&tx, experiment, record)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The trials of an experiment, by id.
    pub fn trials(&self, experiment: i64) -> Result<Vec<StoredTrial>> {
        let mut statement = self.conn.prepare(
            "SELECT trial_id, status, config, failures, launches, last_report, best_value, best_step, error
             FROM trials WHERE experiment_id = ?1 ORDER BY trial_id",
        )?;
        let rows = statement.query_map([experiment], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, u32>(3)?,
                row.get::<_, u32>(4)?,
                row.get::<_, Option<String>>(5)?,
                row.get::<_, Option<String>>(6)?,
                row.get::<_, Option<i64>>(7)?,
                row.get::<_, Option<String>>(8)?,
            ))
        })?;
        rows.map(|row| {
            let (id, status, config, failures, launches, last, best_value, best_step, error) = row?;
            let status = TrialStatus::from_label(&status)
                .ok_or_else(|| Error::ReplayDiverged(format!("unknown trial status {status:?}")))?;
            let last = last.map(|json| serde_json::from_str(&json)).transpose()?;
            let best = match (best_value, best_step) {
                (Some(value), Some(step)) => {
                    metrics_serde::decode(&serde_json::from_str(&value)?).map(|v| (v, step as u64))
                }
                _ => None,
            };
            Ok(StoredTrial {
                id: TrialId(id as u64),
                status,
                config: serde_json::from_str(&config)?,
                failures,
                launches,
                last,
                best,
                error,
            })
        })
        .collect()
    }

    /// The reports of an experiment (of one trial when `trial` is given), by trial then step.
    pub fn reports(&self, experiment: i64, trial: Option<TrialId>) -> Result<Vec<(TrialId, Report)>> {
        let mut statement = self.conn.prepare(
            "SELECT trial_id, step, metrics FROM reports WHERE experiment_id = ?1 AND (?2 IS NULL OR trial_id = ?2)
             ORDER BY trial_id, step",
        )?;
        let rows = statement.query_map(params![experiment, trial.map(|t| t.0 as i64)], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?))
        })?;
        rows.map(|row| {
            let (trial, step, metrics) = row?;
            let metrics: serde_json::Value = serde_json::from_str(&metrics)?;
            let metrics = metrics_serde::deserialize(metrics)?;
            Ok((
                TrialId(trial as u64),
                Report {
                    step: step as u64,
                    metrics,
                },
            ))
        })
        .collect()
    }

    /// The checkpoints of an experiment, deleted ones included, by trial then step.
    pub fn checkpoints(&self, experiment: i64) -> Result<Vec<StoredCheckpoint>> {
        let mut statement = self.conn.prepare(
            "SELECT trial_id, step, path, value, deleted FROM checkpoints WHERE experiment_id = ?1 ORDER BY trial_id, step",
        )?;
        let rows = statement.query_map([experiment], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, bool>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (trial, step, path, value, deleted) = row?;
            let value = value
                .map(|v| serde_json::from_str(&v))
                .transpose()?
                .and_then(|v: serde_json::Value| metrics_serde::decode(&v));
            Ok(StoredCheckpoint {
                trial: TrialId(trial as u64),
                step: step as u64,
                path,
                value,
                deleted,
            })
        })
        .collect()
    }
}

/// An experiment's elapsed time is its last logged event's: writing it into the experiment's
/// row as well would add a page to every group commit.
const EXPERIMENT_COLUMNS: &str = "SELECT id, name, spec, seed, created_at, status, end_cause,
    max(elapsed_ms, coalesce((SELECT max(at_ms) FROM events WHERE experiment_id = experiments.id), 0))
    FROM experiments";

fn experiment_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ExperimentInfo> {
    Ok(ExperimentInfo {
        id: row.get(0)?,
        name: row.get(1)?,
        spec: row.get(2)?,
        seed: row.get::<_, i64>(3)? as u64,
        created_at: row.get(4)?,
        status: row.get(5)?,
        end_cause: row.get(6)?,
        elapsed_ms: row.get::<_, i64>(7)? as u64,
    })
}

fn encode_value(value: f64) -> String {
    metrics_serde::encode(value).to_string()
}

fn write_record(tx: &rusqlite::Transaction<'_>, experiment: i64, record: &Record) -> Result<()> {
    match record {
        Record::Trial(row) => {
            let last = row.last.as_ref().map(serde_json::to_string).transpose()?;
            let best_value = row.best.map(|(value, _)| encode_value(value));
            let best_step = row.best.map(|(_, step)| step as i64);
            // Most writes update a trial that exists; its config never changes, so it is only
            // serialized when the row is first inserted.
            let updated = tx
                .prepare_cached(
                    "UPDATE trials SET status = ?3, failures = ?4, launches = ?5, last_report = ?6, best_value = ?7,
                       best_step = ?8, error = ?9 WHERE experiment_id = ?1 AND trial_id = ?2",
                )?
                .execute(params![
                    experiment,
                    row.id.0 as i64,
                    row.status.label(),
                    row.failures,
                    row.launches,
                    last,
                    best_value,
                    best_step,
                    row.error
                ])?;
            if updated == 0 {
                tx.prepare_cached(
                    "INSERT INTO trials (experiment_id, trial_id, status, config, failures, launches, last_report, best_value, best_step, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?
                .execute(params![
                    experiment,
                    row.id.0 as i64,
                    row.status.label(),
                    row.config.to_json(),
                    row.failures,
                    row.launches,
                    last,
                    best_value,
                    best_step,
                    row.error,
                ])?;
            }
        }
        Record::Report { trial, report } => {
            let metrics = serde_json::to_string(&serde_json::Value::Object(
                report
                    .metrics
                    .iter()
                    .map(|(name, value)| (name.clone(), metrics_serde::encode(*value)))
                    .collect(),
            ))?;
            tx.prepare_cached(
                "INSERT OR IGNORE INTO reports (experiment_id, trial_id, step, metrics) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![experiment, trial.0 as i64, report.step as i64, metrics])?;
        }
        Record::Checkpoint {
            trial,
            checkpoint,
            value,
        } => {
            tx.prepare_cached(
                "INSERT INTO checkpoints (experiment_id, trial_id, step, path, value) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (experiment_id, trial_id, step) DO UPDATE SET path = ?4, value = ?5, deleted = 0",
            )?
            .execute(params![
                experiment,
                trial.0 as i64,
                checkpoint.step as i64,
                checkpoint.path,
                value.map(encode_value)
            ])?;
        }
        Record::TrialConfig { trial, config } => {
            tx.prepare_cached("UPDATE trials SET config = ?3 WHERE experiment_id = ?1 AND trial_id = ?2")?
                .execute(params![experiment, trial.0 as i64, config.to_json()])?;
        }
        Record::CheckpointDeleted { trial, path } => {
            tx.prepare_cached(
                "UPDATE checkpoints SET deleted = 1 WHERE experiment_id = ?1 AND trial_id = ?2 AND path = ?3",
            )?
            .execute(params![experiment, trial.0 as i64, path])?;
        }
        Record::ExperimentFinished { cause } => {
            tx.prepare_cached("UPDATE experiments SET status = 'finished', end_cause = ?2 WHERE id = ?1")?
                .execute(params![experiment, cause.label()])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tune_core::controller::{CheckpointRef, EndCause, TrialRow};
    use tune_core::trial::Metrics;
    use tune_core::value::Config;

    fn report(step: u64, loss: f64) -> Report {
        Report {
            step,
            metrics: Metrics::from([("loss".into(), loss)]),
        }
    }

    #[test]
    fn round_trips_events_and_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.db");
        let mut store = Store::open_or_create(&path).unwrap();
        let experiment = store.create_experiment("demo", "{}", 7).unwrap();
        assert_eq!(store.create_experiment("demo", "{}", 7).unwrap().name, "demo-2");
        let config: Config = serde_json::from_str(r#"{"lr": 0.1}"#).unwrap();
        let batch = Batch {
            events: vec![
                LoggedEvent {
                    seq: 1,
                    at_ms: 5,
                    event: Event::Start,
                },
                LoggedEvent {
                    seq: 2,
                    at_ms: 9,
                    event: Event::Reported {
                        trial: TrialId(1),
                        report: report(1, f64::NAN),
                        checkpoint: Some("/c/1".into()),
                    },
                },
            ],
            records: vec![
                Record::Trial(TrialRow {
                    id: TrialId(1),
                    status: TrialStatus::Running,
                    config: config.clone(),
                    failures: 0,
                    launches: 1,
                    last: Some(report(1, f64::NAN)),
                    best: Some((f64::NAN, 1)),
                    error: None,
                }),
                Record::Report {
                    trial: TrialId(1),
                    report: report(1, f64::NAN),
                },
                Record::Report {
                    trial: TrialId(1),
                    report: report(1, 0.5),
                },
                Record::Checkpoint {
                    trial: TrialId(1),
                    checkpoint: CheckpointRef {
                        step: 1,
                        path: "/c/1".into(),
                    },
                    value: Some(f64::NAN),
                },
                Record::CheckpointDeleted {
                    trial: TrialId(1),
                    path: "/c/1".into(),
                },
                Record::ExperimentFinished {
                    cause: EndCause::AllTrialsDone,
                },
            ],
        };
        store.commit(experiment.id, &batch, Flush::Os).unwrap();
        drop(store);

        let store = Store::open(&path).unwrap();
        let events = store.events(experiment.id).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0], batch.events[0]);
        assert!(matches!(&events[1].event, Event::Reported { report, .. } if report.metrics["loss"].is_nan()));
        let reports = store.reports(experiment.id, None).unwrap();
        assert_eq!(reports.len(), 1, "a report is stored once per (trial, step)");
        assert!(reports[0].1.metrics["loss"].is_nan());
        let trials = store.trials(experiment.id).unwrap();
        assert_eq!(trials[0].config, config);
        assert!(trials[0].best.unwrap().0.is_nan());
        let checkpoints = store.checkpoints(experiment.id).unwrap();
        assert!(checkpoints[0].deleted && checkpoints[0].value.unwrap().is_nan());
        let info = store.experiment(Some("demo")).unwrap();
        assert!(info.is_finished());
        assert_eq!(info.end_cause.as_deref(), Some("all_trials_done"));
        assert_eq!(info.elapsed_ms, 9);
        assert_eq!(store.experiment(None).unwrap().name, "demo-2");
    }

    #[test]
    fn each_commit_goes_as_far_as_its_flush_says() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open_or_create(&dir.path().join("s.db")).unwrap();
        let experiment = store.create_experiment("x", "{}", 1).unwrap();
        let synchronous = |store: &Store| -> i64 {
            store
                .conn
                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                .unwrap()
        };
        let batch = |seq: u64| Batch {
            events: vec![LoggedEvent {
                seq,
                at_ms: seq,
                event: Event::Tick,
            }],
            records: Vec::new(),
        };
        assert_eq!(synchronous(&store), 1, "opened without an fsync per commit (NORMAL)");
        store.commit(experiment.id, &batch(1), Flush::Disk).unwrap();
        assert_eq!(synchronous(&store), 2, "an fsynced commit runs at FULL");
        store.commit(experiment.id, &batch(2), Flush::Os).unwrap();
        assert_eq!(synchronous(&store), 1);
        assert_eq!(store.events(experiment.id).unwrap().len(), 2);
        assert_eq!(
            store.experiment(Some("x")).unwrap().elapsed_ms,
            2,
            "the last event's time"
        );
    }

    #[test]
    fn a_commit_waits_out_another_writer_s_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = Store::open_or_create(&path).unwrap();
        let experiment = store.create_experiment("x", "{}", 1).unwrap();
        store.set_busy_timeout(std::time::Duration::from_millis(20)).unwrap();
        // Another process's sweep holds the write lock for a while (many busy timeouts).
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            other.execute_batch("COMMIT").unwrap();
        });
        let batch = Batch {
            events: vec![LoggedEvent {
                seq: 1,
                at_ms: 1,
                event: Event::Tick,
            }],
            records: Vec::new(),
        };
        store.commit(experiment.id, &batch, Flush::Os).unwrap();
        holder.join().unwrap();
        assert_eq!(store.events(experiment.id).unwrap(), batch.events);
    }

    #[test]
    fn configs_and_metrics_round_trip_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open_or_create(&dir.path().join("s.db")).unwrap();
        let experiment = store.create_experiment("x", "{}", 1).unwrap();
        // Shortest-representation floats that a non-round-trip parser reads back one ulp off.
        let awkward = [0.000010179960116642381, 0.1 + 0.2, 1e-300, 5e-324, 123456789.12345679];
        let config: Config = serde_json::from_value(
            serde_json::json!({"a": awkward[0], "b": awkward[1], "c": awkward[2], "d": awkward[3], "e": awkward[4]}),
        )
        .unwrap();
        let metrics: tune_core::trial::Metrics =
            awkward.iter().enumerate().map(|(i, v)| (format!("m{i}"), *v)).collect();
        let report = Report {
            step: 1,
            metrics: metrics.clone(),
        };
        let row = TrialRow {
            id: TrialId(1),
            status: TrialStatus::Running,
            config: config.clone(),
            failures: 0,
            launches: 1,
            last: Some(report.clone()),
            best: None,
            error: None,
        };
        let batch = Batch {
            events: vec![],
            records: vec![
                Record::Trial(row),
                Record::Report {
                    trial: TrialId(1),
                    report,
                },
            ],
        };
        store.commit(experiment.id, &batch, Flush::Os).unwrap();
        assert_eq!(store.trials(experiment.id).unwrap()[0].config, config);
        let stored = &store.reports(experiment.id, None).unwrap()[0].1.metrics;
        for (name, value) in &metrics {
            assert_eq!(stored[name].to_bits(), value.to_bits(), "{name}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_rung_store_and_leaves_it_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello, this is not a database at all").unwrap();
        let error = Store::open(&text).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{}: not a rung store (not an SQLite database)", text.display())
        );
        assert!(error.is_bad_input());
        assert_eq!(
            std::fs::read_to_string(&text).unwrap(),
            "hello, this is not a database at all"
        );

        let other = dir.path().join("other.db");
        let conn = Connection::open(&other).unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        drop(conn);
        let before = std::fs::read(&other).unwrap();
        assert!(
            Store::open_or_create(&other)
                .unwrap_err()
                .to_string()
                .contains("another application")
        );
        assert_eq!(std::fs::read(&other).unwrap(), before);

        assert!(matches!(
            Store::open(&dir.path().join("missing.db")),
            Err(Error::NoStore(_))
        ));
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        Store::open_or_create(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        let error = Store::open(&path).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{}: written by a newer rung (store schema {}, this build knows up to {SCHEMA_VERSION}); upgrade rung",
                path.display(),
                SCHEMA_VERSION + 1
            )
        );
    }
}
