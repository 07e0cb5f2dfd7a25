//! Where checkpoints live: in the trial's folder (the default), or in an object store
//! (`s3://bucket/prefix` on S3, MinIO or any S3-compatible server; `file:///path` on a shared
//! file system).
//!
//! With an object store, a checkpoint the trial wrote is first committed into its folder as
//! usual, then uploaded under `<prefix>/<experiment>/<trial>/<step>/`, and only then handed to
//! the controller, so the store never records a checkpoint that is not wholly there. Restores
//! download it into a fresh folder on whichever machine runs the trial next; the keep policy
//! deletes it there. Transient failures are retried with backoff; a checkpoint that still cannot
//! be uploaded is reported to the trial's log and left out of the report (the report itself is
//! never lost).
//!
//! Credentials and endpoint come from the standard variables: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL` (for MinIO and
//! other S3-compatible servers; `http://` endpoints are allowed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use tokio::io::AsyncWriteExt;

use crate::files::TrialFiles;
use tune_core::controller::CheckpointRef;
use tune_core::trial::TrialId;

/// The spec setting this module's errors name.
pub const SETTING: &str = "trial.checkpoint_storage";

/// The file written last into an uploaded checkpoint: its presence says the upload completed.
const COMPLETE_MARKER: &str = ".rung-complete";

/// The end of the error of a download that finds no complete checkpoint.
const INCOMPLETE: &str = "holds no complete checkpoint";

/// Where a sweep's checkpoints go.
#[derive(Clone, Default)]
pub enum CheckpointStorage {
    /// In each trial's folder (`<trial>/checkpoints/step_N`), on the machine that ran it.
    #[default]
    Local,
    /// Under a prefix of an object store.
    Remote(Remote),
}

impl std::fmt::Debug for CheckpointStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointStorage::Local => f.write_str("Local"),
            CheckpointStorage::Remote(remote) => write!(f, "Remote({})", remote.url),
        }
    }
}

/// An object-store location for checkpoints.
#[derive(Clone)]
pub struct Remote {
    /// The URI as configured, without a trailing slash (`s3://bucket/prefix`).
    url: String,
    store: Arc<dyn ObjectStore>,
    /// The key prefix inside the store.
    prefix: ObjectPath,
    retry: Retry,
}

/// How whole transfers are retried (each request is also retried inside the object-store client).
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The wait before the second attempt; it doubles after each failure.
    pub first_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 6,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
        }
    }
}

impl Retry {
    /// The retry policy, with `RUNG_STORAGE_ATTEMPTS` overriding the number of attempts.
    fn from_env() -> Self {
        let mut retry = Retry::default();
        if let Some(attempts) = std::env::var("RUNG_STORAGE_ATTEMPTS")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
        {
            retry.attempts = attempts.max(1);
        }
        retry
    }

    fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.first_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// A bad or unusable storage setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{SETTING} = \"{uri}\": {reason}")]
pub struct StorageError {
    /// The URI as configured.
    pub uri: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Why moving a checkpoint to or from storage (or deleting it) failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The location is not a usable storage URI.
    #[error(transparent)]
    Setting(#[from] StorageError),
    /// A local file or folder could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The object store failed; the text carries its innermost cause (connection refused, ...).
    #[error("{0}")]
    Store(String),
    /// The prefix holds no completion marker: the checkpoint was deleted or never completed.
    #[error("{key} {INCOMPLETE}")]
    Incomplete {
        /// The prefix.
        key: String,
    },
    /// A file name that cannot be part of an object key.
    #[error("{} is not a UTF-8 file name", .0.display())]
    NotUtf8(PathBuf),
    /// A listed object lies outside the prefix that was listed.
    #[error("{location} is not under {key}")]
    OutsidePrefix {
        /// The object.
        location: String,
        /// The prefix.
        key: String,
    },
    /// A blocking task died.
    #[error("checkpoint task failed: {0}")]
    Task(String),
    /// Every attempt failed; the last failure says why.
    #[error("could not {action} after {attempts} attempts: {last}")]
    GaveUp {
        /// What was tried, e.g. `upload the checkpoint of step 3 to s3://...`.
        action: String,
        /// How many times.
        attempts: u32,
        /// The last attempt's failure.
        last: Box<TransferError>,
    },
    /// The checkpoint cannot be restored, and retrying would not help.
    #[error("cannot restore the checkpoint {location}: {error}")]
    Unrestorable {
        /// The checkpoint's location.
        location: String,
        /// Why.
        error: Box<TransferError>,
    },
}

impl TransferError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TransferError::Io {
            context: context.into(),
            source,
        }
    }

    fn store(error: object_store::Error) -> Self {
        TransferError::Store(describe(&error))
    }
}

fn bad(uri: &str, why: impl std::fmt::Display) -> StorageError {
    StorageError {
        uri: uri.to_owned(),
        reason: why.to_string(),
    }
}

/// Checks a `checkpoint_storage` URI's form (scheme, bucket, absolute path) without opening it.
pub fn validate_uri(uri: &str) -> Result<(), StorageError> {
    parse_uri(uri.trim()).map(|_| ())
}

/// A checkpoint URI split into the store's root (`s3://bucket`, `file://`) and the key in it.
struct Parsed {
    root: String,
    key: ObjectPath,
}

fn parse_uri(uri: &str) -> Result<Parsed, StorageError> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(bad(uri, "not a URI: write s3://bucket/prefix or file:///absolute/path"));
    };
    match scheme {
        "s3" | "s3a" => {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad(uri, "the URI names no bucket (write s3://bucket/prefix)"));
            }
            if !bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            {
                return Err(bad(
                    uri,
                    format!("\"{bucket}\" is not a valid bucket name (lowercase letters, digits, '-' and '.')"),
                ));
            }
            Ok(Parsed {
                root: format!("s3://{bucket}"),
                key: key_path(uri, key)?,
            })
        }
        "file" => {
            if !rest.starts_with('/') {
                return Err(bad(
                    uri,
                    "a file:// URI needs an absolute path (file:///data/checkpoints)",
                ));
            }
            Ok(Parsed {
                root: "file://".into(),
                key: key_path(uri, rest)?,
            })
        }
        other => Err(bad(
            uri,
            format!("unsupported scheme \"{other}\": use s3://bucket/prefix or file:///absolute/path"),
        )),
    }
}

fn key_path(uri: &str, key: &str) -> Result<ObjectPath, StorageError> {
    ObjectPath::parse(key.trim_matches('/')).map_err(|e| bad(uri, format!("bad key prefix: {e}")))
}

/// The stores opened so far, by root, shared by every checkpoint under them.
fn stores() -> &'static Mutex<HashMap<String, Arc<dyn ObjectStore>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

fn store_for(uri: &str, root: &str) -> Result<Arc<dyn ObjectStore>, StorageError> {
    let mut stores = stores().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(store) = stores.get(root) {
        return Ok(Arc::clone(store));
    }
    let store: Arc<dyn ObjectStore> = if root == "file://" {
        Arc::new(LocalFileSystem::new())
    } else {
        Arc::new(open_s3(uri, root)?)
    };
    stores.insert(root.to_owned(), Arc::clone(&store));
    Ok(store)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn open_s3(uri: &str, root: &str) -> Result<object_store::aws::AmazonS3, StorageError> {
    // reqwest is built without a default TLS provider; rustls uses ring, as tonic does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let has_keys = env("AWS_ACCESS_KEY_ID").is_some() && env("AWS_SECRET_ACCESS_KEY").is_some();
    let has_role = [
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ]
    .iter()
    .any(|name| env(name).is_some());
    if !has_keys && !has_role {
        let missing: Vec<&str> = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
            .into_iter()
            .filter(|name| env(name).is_none())
            .collect();
        return Err(bad(
            uri,
            format!(
                "no credentials: {} not set (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and AWS_ENDPOINT_URL for MinIO or another S3-compatible server)",
                missing.join(" and ")
            ),
        ));
    }
    let mut builder = AmazonS3Builder::from_env().with_url(root);
    let mut client = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(300));
    if let Some(endpoint) = env("AWS_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT_URL_S3")) {
        let scheme = endpoint.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some("http") => client = client.with_allow_http(true),
            Some("https") => {}
            _ => {
                return Err(bad(
                    uri,
                    format!("AWS_ENDPOINT_URL = \"{endpoint}\" is not an http:// or https:// URL"),
                ));
            }
        }
    }
    if env("AWS_REGION").is_none() && env("AWS_DEFAULT_REGION").is_none() {
        builder = builder.with_region("us-east-1");
    }
    builder
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
        })
        .with_client_options(client)
        .build()
        .map_err(|e| bad(uri, e))
}

impl CheckpointStorage {
    /// Reads a `checkpoint_storage` setting: `s3://bucket/prefix` or `file:///path`. Checks the
    /// URI and, for S3, that credentials are set; it does not reach the server (see
    /// [`CheckpointStorage::check`]).
    pub fn parse(uri: &str) -> Result<Self, StorageError> {
        let uri = uri.trim();
        let parsed = parse_uri(uri)?;
        let store = store_for(uri, &parsed.root)?;
        Ok(CheckpointStorage::Remote(Remote {
            url: uri.trim_end_matches('/').to_owned(),
            store,
            prefix: parsed.key,
            retry: Retry::from_env(),
        }))
    }

    /// The URI of an object store, `None` for trial folders.
    pub fn url(&self) -> Option<&str> {
        match self {
            CheckpointStorage::Local => None,
            CheckpointStorage::Remote(remote) => Some(&remote.url),
        }
    }

    /// Reaches the store once (a listing under the prefix), so that a wrong endpoint, bucket or
    /// credential is reported before any trial runs.
    pub async fn check(&self) -> Result<(), StorageError> {
        let CheckpointStorage::Remote(remote) = self else {
            return Ok(());
        };
        let mut listing = remote.store.list(Some(&remote.prefix));
        match listing.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(error)) => Err(bad(
                &remote.url,
                format!("cannot reach the store: {}", describe(&error)),
            )),
        }
    }

    /// Commits what the trial wrote into its staging folder as the checkpoint of `step`: into
    /// the trial's folder, then, with an object store, uploaded (with retries) and removed from
    /// the folder. Returns where the checkpoint now lives, `None` when the trial wrote nothing.
    /// An error is a checkpoint that could not be kept; `note` gets each failed attempt.
    pub async fn commit(
        &self,
        files: &TrialFiles,
        experiment: &str,
        trial: TrialId,
        step: u64,
        note: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Option<String>, TransferError> {
        let committer = files.clone();
        let local = tokio::task::spawn_blocking(move || committer.commit_checkpoint(step))
            .await
            .map_err(|e| TransferError::Task(e.to_string()))?
            .map_err(|e| TransferError::io("could not keep the checkpoint", e))?;
        let Some(local) = local else { return Ok(None) };
        let CheckpointStorage::Remote(remote) = self else {
            return Ok(Some(local.display().to_string()));
        };
        let key = remote
            .prefix
            .clone()
            .join(experiment)
            .join(trial.to_string())
            .join(step.to_string());
        let url = format!("{}/{experiment}/{trial}/{step}/", remote.url);
        let mut failures = 0;
        loop {
            match upload(&remote.store, &local, &key).await {
                Ok(()) => break,
                Err(error) => {
                    failures += 1;
                    if failures >= remote.retry.attempts {
                        return Err(TransferError::GaveUp {
                            action: format!("upload the checkpoint of step {step} to {url}"),
                            attempts: failures,
                            last: Box::new(error),
                        });
                    }
                    let wait = remote.retry.backoff(failures);
                    note(format!(
                        "upload of the checkpoint of step {step} to {url} failed (attempt {failures} of {}): {error}; retrying in {:.1} s",
                        remote.retry.attempts,
                        wait.as_secs_f64()
                    ));
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let _ = tokio::fs::remove_dir_all(&local).await;
        Ok(Some(url))
    }
}

/// Whether a checkpoint location is an object-store URI rather than a folder.
pub fn is_remote(location: &str) -> bool {
    location.contains("://")
}

/// The object-store root of a trial's checkpoints: `<storage>/<experiment>/<trial>`, what
/// [`CheckpointStorage::commit`] uploads each of its checkpoints under.
pub fn remote_checkpoint_root(storage: &str, experiment: &str, trial: TrialId) -> String {
    format!("{}/{experiment}/{trial}", storage.trim().trim_end_matches('/'))
}

/// The folder root of a trial's checkpoints: `<trials_root>/<trial>/checkpoints`, where
/// [`CheckpointStorage::commit`] keeps each of its checkpoints in a folder of its own.
pub fn local_checkpoint_root(trials_root: &Path, trial: TrialId) -> String {
    TrialFiles::new(trials_root, trial).checkpoints().display().to_string()
}

/// Whether the checkpoint `location` lies strictly inside `root`: both object-store URIs or
/// both absolute folders, the location below the root by at least one segment, and no `.` or
/// `..` after the root (nothing that could climb out of it).
pub fn is_inside(location: &str, root: &str) -> bool {
    if is_remote(location) != is_remote(root) {
        return false;
    }
    if is_remote(location) {
        let Some(rest) = location
            .strip_prefix(root.trim_end_matches('/'))
            .and_then(|rest| rest.strip_prefix('/'))
        else {
            return false;
        };
        let rest = rest.trim_end_matches('/');
        return !rest.is_empty() && rest.split('/').all(|segment| !matches!(segment, "" | "." | ".."));
    }
    let location = Path::new(location);
    location.is_absolute()
        && location.strip_prefix(root).is_ok_and(|rest| {
            rest.components().next().is_some()
                && rest
                    .components()
                    .all(|component| matches!(component, std::path::Component::Normal(_)))
        })
}

/// Whether `location` has the shape of a checkpoint rung keeps for `trial` of `experiment`:
/// below `<experiment>/<trial>/checkpoints/` for a folder, below `<experiment>/<trial>/` for an
/// object-store URI, with no `.` or `..` anywhere. The driver deletes nothing else, whatever a
/// report claimed.
pub fn is_checkpoint_of(location: &str, experiment: &str, trial: TrialId) -> bool {
    let trial = trial.to_string();
    let (path, owned): (&str, &[&str]) = if is_remote(location) {
        let Some((_, path)) = location.split_once("://") else {
            return false;
        };
        (path, &[experiment, &trial])
    } else {
        if !Path::new(location).is_absolute() {
            return false;
        }
        (location, &[experiment, &trial, "checkpoints"])
    };
    let segments: Vec<&str> = path.split('/').filter(|segment| !segment.is_empty()).collect();
    if segments.iter().any(|segment| matches!(*segment, "." | "..")) {
        return false;
    }
    // The owned segments, then at least one more (the checkpoint itself).
    segments.len() > owned.len()
        && segments
            .windows(owned.len())
            .take(segments.len() - owned.len())
            .any(|window| window == owned)
}

/// Makes the checkpoint at `location` available on this machine for a trial to restore from:
/// a folder is used as it is; an object-store checkpoint is downloaded (with retries) into a
/// fresh `restore` folder of the trial's files.
pub async fn fetch(
    location: &str,
    files: &TrialFiles,
    note: &(dyn Fn(String) + Send + Sync),
) -> Result<PathBuf, TransferError> {
    if !is_remote(location) {
        return Ok(PathBuf::from(location));
    }
    let parsed = parse_uri(location)?;
    let store = store_for(location, &parsed.root)?;
    let target = files.dir.join("restore");
    let retry = Retry::from_env();
    let mut failures = 0;
    loop {
        match download(&*store, &parsed.key, &target).await {
            Ok(()) => return Ok(target),
            // Not there (deleted, or never completed): waiting will not bring it.
            Err(error @ TransferError::Incomplete { .. }) => {
                return Err(TransferError::Unrestorable {
                    location: location.to_owned(),
                    error: Box::new(error),
                });
            }
            Err(error) => {
                failures += 1;
                if failures >= retry.attempts {
                    return Err(TransferError::GaveUp {
                        action: format!("download the checkpoint {location}"),
                        attempts: failures,
                        last: Box::new(error),
                    });
                }
                let wait = retry.backoff(failures);
                note(format!(
                    "download of the checkpoint {location} failed (attempt {failures} of {}): {error}; retrying in {:.1} s",
                    retry.attempts,
                    wait.as_secs_f64()
                ));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The step and folder a launch restores from on this machine ([`fetch`] of its checkpoint),
/// `None` when it starts afresh.
pub async fn restore_folder(
    restore: Option<&CheckpointRef>,
    files: &TrialFiles,
    note: &(dyn Fn(String) + Send + Sync),
) -> Result<Option<(u64, PathBuf)>, TransferError> {
    match restore {
        None => Ok(None),
        Some(checkpoint) => Ok(Some((checkpoint.step, fetch(&checkpoint.path, files, note).await?))),
    }
}

/// Deletes the checkpoint at `location`: a folder, or every object under a URI's prefix.
pub async fn delete(location: &str) -> Result<(), TransferError> {
    if !is_remote(location) {
        return match tokio::fs::remove_dir_all(location).await {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(TransferError::io(format!("deleting {location}"), error))
            }
            _ => Ok(()),
        };
    }
    let parsed = parse_uri(location)?;
    let store = store_for(location, &parsed.root)?;
    let keys: Vec<ObjectPath> = store
        .list(Some(&parsed.key))
        .map(|meta| meta.map(|meta| meta.location))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(TransferError::store)?;
    // The marker goes first: a half-deleted checkpoint is never taken for a whole one.
    let (marker, rest): (Vec<_>, Vec<_>) = keys
        .into_iter()
        .partition(|key| key.filename() == Some(COMPLETE_MARKER));
    for key in marker.into_iter().chain(rest) {
        match store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(TransferError::store(error)),
        }
    }
    Ok(())
}

/// The files under `dir`, as paths relative to it, in a stable order.
fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(dir.join(&relative))? {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn object_key(base: &ObjectPath, relative: &Path) -> Result<ObjectPath, TransferError> {
    let mut key = base.clone();
    for part in relative.components() {
        let part = part
            .as_os_str()
            .to_str()
            .ok_or_else(|| TransferError::NotUtf8(relative.to_owned()))?;
        key = key.join(part);
    }
    Ok(key)
}

async fn upload(store: &Arc<dyn ObjectStore>, dir: &Path, key: &ObjectPath) -> Result<(), TransferError> {
    // Whatever an earlier, interrupted attempt left under the key goes first.
    let stale: Vec<_> = store.list(Some(key)).collect::<Vec<_>>().await;
    for meta in stale.into_iter().flatten() {
        let _ = store.delete(&meta.location).await;
    }
    let walked = {
        let owned = dir.to_owned();
        tokio::task::spawn_blocking(move || walk(&owned))
            .await
            .map_err(|e| TransferError::Task(e.to_string()))?
            .map_err(|e| TransferError::io(format!("reading {}", dir.display()), e))?
    };
    for relative in walked {
        let target = object_key(key, &relative)?;
        let mut file = tokio::fs::File::open(dir.join(&relative))
            .await
            .map_err(|e| TransferError::io(format!("reading {}", dir.join(&relative).display()), e))?;
        let mut writer = BufWriter::new(Arc::clone(store), target.clone());
        if let Err(error) = tokio::io::copy(&mut file, &mut writer).await {
            let _ = writer.abort().await;
            return Err(TransferError::io(format!("uploading {target}"), error));
        }
        writer
            .shutdown()
            .await
            .map_err(|e| TransferError::io(format!("uploading {target}"), e))?;
    }
    store
        .put(&key.clone().join(COMPLETE_MARKER), bytes::Bytes::new().into())
        .await
        .map_err(TransferError::store)?;
    Ok(())
}

async fn download(store: &dyn ObjectStore, key: &ObjectPath, target: &Path) -> Result<(), TransferError> {
    let listed: Vec<_> = store
        .list(Some(key))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(TransferError::store)?;
    if !listed
        .iter()
        .any(|meta| meta.location.filename() == Some(COMPLETE_MARKER))
    {
        return Err(TransferError::Incomplete { key: key.to_string() });
    }
    if tokio::fs::try_exists(target).await.unwrap_or(false) {
        tokio::fs::remove_dir_all(target)
            .await
            .map_err(|e| TransferError::io(format!("clearing {}", target.display()), e))?;
    }
    tokio::fs::create_dir_all(target)
        .await
        .map_err(|e| TransferError::io(format!("creating {}", target.display()), e))?;
    for meta in listed {
        if meta.location.filename() == Some(COMPLETE_MARKER) {
            continue;
        }
        let relative: PathBuf = meta
            .location
            .prefix_match(key)
            .ok_or_else(|| TransferError::OutsidePrefix {
                location: meta.location.to_string(),
                key: key.to_string(),
            })?
            .map(|part| part.as_ref().to_owned())
            .collect();
        let path = target.join(&relative);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| TransferError::io(format!("creating {}", parent.display()), e))?;
        }
        let mut stream = store
            .get(&meta.location)
            .await
            .map_err(TransferError::store)?
            .into_stream();
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| TransferError::io(format!("writing {}", path.display()), e))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(TransferError::store)?;
            file.write_all(&chunk)
                .await
                .map_err(|e| TransferError::io(format!("writing {}", path.display()), e))?;
        }
        file.flush()
            .await
            .map_err(|e| TransferError::io(format!("writing {}", path.display()), e))?;
    }
    Ok(())
}

/// An object-store error in one line: the innermost cause says most (connection refused, ...).
fn describe(error: &object_store::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_inside_its_root_or_refused() {
        let root = "/work/rung_trials/exp/t3/checkpoints";
        assert!(is_inside("/work/rung_trials/exp/t3/checkpoints/step_00000002", root));
        assert!(is_inside("/work/rung_trials/exp/t3/checkpoints/a/b", root));
        for outside in [
            "/some/dir",
            "/work/rung_trials/exp/t3/checkpoints",
            "/work/rung_trials/exp/t3/checkpoints/",
            "/work/rung_trials/exp/t3/checkpoints/../../t4/checkpoints/step_1",
            "/work/rung_trials/exp/t3/checkpoints/..",
            "/work/rung_trials/exp/t3/checkpointsx/step_1",
            "work/rung_trials/exp/t3/checkpoints/step_1",
            "s3://bucket/work/rung_trials/exp/t3/checkpoints/step_1",
            "",
        ] {
            assert!(!is_inside(outside, root), "{outside:?} passed");
        }
        let root = remote_checkpoint_root("s3://bucket/prefix/ ", "exp", TrialId(3));
        assert_eq!(root, "s3://bucket/prefix/exp/t3");
        assert!(is_inside("s3://bucket/prefix/exp/t3/7/", &root));
        for outside in [
            "s3://bucket/prefix/exp/t3",
            "s3://bucket/prefix/exp/t3/",
            "s3://bucket/prefix/exp/t30/7/",
            "s3://bucket/prefix/exp/t3/../t4/7/",
            "s3://bucket/prefix/exp/t3//7",
            "s3://other/prefix/exp/t3/7/",
            "/bucket/prefix/exp/t3/7",
        ] {
            assert!(!is_inside(outside, &root), "{outside:?} passed");
        }
        assert_eq!(
            local_checkpoint_root(Path::new("/w/exp"), TrialId(3)),
            "/w/exp/t3/checkpoints"
        );
    }

    #[test]
    fn only_checkpoints_of_the_trial_have_its_shape() {
        let t3 = TrialId(3);
        assert!(is_checkpoint_of("/w/exp/t3/checkpoints/step_00000002", "exp", t3));
        assert!(is_checkpoint_of("s3://b/p/exp/t3/2/", "exp", t3));
        assert!(is_checkpoint_of("file:///mnt/ck/exp/t3/2/", "exp", t3));
        for other in [
            "/some/dir",
            "/w/exp/t3/checkpoints",
            "/w/exp/t3/checkpoints/",
            "/w/exp/t4/checkpoints/step_1",
            "/w/other/t3/checkpoints/step_1",
            "/w/exp/t3/checkpoints/../../../../etc",
            "w/exp/t3/checkpoints/step_1",
            "s3://b/p/exp/t3",
            "s3://b/p/exp/t3/../../x",
            "",
        ] {
            assert!(!is_checkpoint_of(other, "exp", t3), "{other:?} passed");
        }
    }

    fn error_of(uri: &str) -> String {
        match CheckpointStorage::parse(uri) {
            Ok(storage) => panic!("{uri} was accepted as {storage:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn malformed_uris_are_refused_with_the_setting_named() {
        assert_eq!(
            error_of("s3://"),
            "trial.checkpoint_storage = \"s3://\": the URI names no bucket (write s3://bucket/prefix)"
        );
        assert_eq!(
            error_of("s3:///prefix"),
            "trial.checkpoint_storage = \"s3:///prefix\": the URI names no bucket (write s3://bucket/prefix)"
        );
        assert!(error_of("s3://My_Bucket/p").contains("\"My_Bucket\" is not a valid bucket name"));
        assert!(error_of("/data/ckpt").contains("not a URI"));
        assert!(error_of("file://data/ckpt").contains("needs an absolute path"));
        assert!(error_of("gs://bucket/p").contains("unsupported scheme \"gs\""));
        assert!(validate_uri("s3://bucket/some/prefix/").is_ok());
        assert!(validate_uri("file:///tmp/x").is_ok());
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let retry = Retry::default();
        let waits: Vec<u64> = (1..=6).map(|n| retry.backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 8000]);
    }

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[tokio::test]
    async fn a_checkpoint_goes_to_file_storage_comes_back_whole_and_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = dir.path().join("bucket");
        std::fs::create_dir_all(&bucket).unwrap();
        let storage = CheckpointStorage::parse(&format!("file://{}/sweeps/", bucket.display())).unwrap();
        storage.check().await.unwrap();
        let files = TrialFiles::new(&dir.path().join("trials"), TrialId(3));
        files.prepare().unwrap();
        write(&files.staging().join("state.json"), b"{\"step\": 7}");
        write(&files.staging().join("weights/layer0.bin"), &[7u8; 100_000]);
        let notes = Mutex::new(Vec::new());
        let note = |line: String| notes.lock().unwrap().push(line);
        let location = storage
            .commit(&files, "exp", TrialId(3), 7, &note)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(location, format!("file://{}/sweeps/exp/t3/7/", bucket.display()));
        assert!(notes.lock().unwrap().is_empty());
        assert!(bucket.join("sweeps/exp/t3/7/weights/layer0.bin").is_file());
        assert!(bucket.join("sweeps/exp/t3/7/.rung-complete").is_file());
        // The trial's folder keeps nothing once the upload completed.
        assert_eq!(std::fs::read_dir(files.checkpoints()).unwrap().count(), 0);

        let other = TrialFiles::new(&dir.path().join("elsewhere"), TrialId(3));
        other.prepare().unwrap();
        let restored = fetch(&location, &other, &note).await.unwrap();
        assert_eq!(std::fs::read(restored.join("state.json")).unwrap(), b"{\"step\": 7}");
        assert_eq!(
            std::fs::read(restored.join("weights/layer0.bin")).unwrap(),
            vec![7u8; 100_000]
        );
        assert!(!restored.join(COMPLETE_MARKER).exists());

        delete(&location).await.unwrap();
        assert!(!bucket.join("sweeps/exp/t3/7/weights/layer0.bin").exists());
        let error = fetch(&location, &other, &note).await.unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("sweeps/exp/t3/7 holds no complete checkpoint"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_checkpoint_without_its_marker_is_never_restored() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bucket/sweeps/exp/t1/4");
        write(&root.join("state.json"), b"half");
        let files = TrialFiles::new(&dir.path().join("trials"), TrialId(1));
        files.prepare().unwrap();
        let location = format!("file://{}/", root.display());
        let parsed = parse_uri(&location).unwrap();
        let store = store_for(&location, &parsed.root).unwrap();
        let error = download(&*store, &parsed.key, &files.dir.join("restore"))
            .await
            .unwrap_err();
        assert!(error.to_string().ends_with("holds no complete checkpoint"), "{error}");
    }

    #[tokio::test]
    async fn a_local_storage_keeps_checkpoints_in_the_trial_folder() {
        let dir = tempfile::tempdir().unwrap();
        let files = TrialFiles::new(dir.path(), TrialId(0));
        files.prepare().unwrap();
        write(&files.staging().join("model.pt"), b"weights");
        let location = CheckpointStorage::Local
            .commit(&files, "exp", TrialId(0), 2, &|_| {})
            .await
            .unwrap()
            .unwrap();
        assert_eq!(PathBuf::from(&location), files.checkpoints().join("step_00000002"));
        assert_eq!(
            fetch(&location, &files, &|_| {}).await.unwrap(),
            PathBuf::from(&location)
        );
        assert!(
            CheckpointStorage::Local
                .commit(&files, "exp", TrialId(0), 3, &|_| {})
                .await
                .unwrap()
                .is_none()
        );
    }
}
