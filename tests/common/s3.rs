//! An S3 server for tests and benches: `s3s-fs` (objects kept as files under a folder) on
//! 127.0.0.1, on a runtime of its own so that it can be killed at once, connections and all.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "ckpt";
pub const KEY: &str = "rung-test-key";
pub const SECRET: &str = "rung-test-secret";

/// An S3 server on 127.0.0.1 serving the folder `root` (a bucket is a folder in it), running on a
/// runtime of its own so that the test can kill it at once, connections and all.
pub struct S3Server {
    root: PathBuf,
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    /// Set when the server played dead (see [`S3Server::start`]).
    dead: Arc<AtomicBool>,
}

impl S3Server {
    /// Starts a server on `port` (0: any). With `die_at_write = Some(n)`, the n-th write request
    /// (PUT or POST, counting from 1) is never answered: the server marks itself dead, and
    /// [`S3Server::kill_when_dead`] then kills it mid-upload.
    pub fn start(root: &Path, port: u16, die_at_write: Option<usize>) -> S3Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let writes = Arc::new(AtomicUsize::new(0));
        let dead = Arc::new(AtomicBool::new(false));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .expect("the S3 port is free");
        let addr = listener.local_addr().unwrap();
        let service = {
            let mut builder = s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(root).unwrap());
            builder.set_auth(s3s::auth::SimpleAuth::from_single(KEY, SECRET));
            builder.build()
        };
        let (counter, flag) = (Arc::clone(&writes), Arc::clone(&dead));
        runtime.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                let (counter, flag) = (Arc::clone(&counter), Arc::clone(&flag));
                let handler = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let service = service.clone();
                    let (counter, flag) = (Arc::clone(&counter), Arc::clone(&flag));
                    async move {
                        if request.method() == http::Method::PUT || request.method() == http::Method::POST {
                            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                            if die_at_write == Some(n) {
                                flag.store(true, Ordering::SeqCst);
                            }
                        }
                        if flag.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        hyper::service::Service::call(&service, request).await
                    }
                });
                tokio::spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), handler)
                        .await;
                });
            }
        });
        S3Server {
            root: root.to_owned(),
            addr,
            runtime: Some(runtime),
            dead,
        }
    }

    /// The variables that point rung at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", format!("http://{}", self.addr)),
            ("AWS_ACCESS_KEY_ID", KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }

    /// Kills the server: every connection is dropped and the port closes.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Waits until the server played dead (at most `timeout`), then kills it.
    pub fn kill_when_dead(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.dead.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "no upload reached the S3 server in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }

    /// The object keys under `prefix` in the bucket (s3s-fs keeps each object as a file under
    /// the bucket's folder, and its metadata outside it).
    pub fn keys(&self, prefix: &str) -> BTreeSet<String> {
        let base = self.root.join(BUCKET);
        let mut found = BTreeSet::new();
        let mut pending = vec![base.join(prefix)];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    found.insert(path.strip_prefix(&base).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        found
    }

    /// The steps whose checkpoint of `trial` is in the bucket, complete (with its marker).
    pub fn complete_steps(&self, experiment: &str, trial: &str) -> Vec<u64> {
        let prefix = format!("sweeps/{experiment}/{trial}/");
        let mut steps: Vec<u64> = self
            .keys(&prefix)
            .iter()
            .filter(|key| key.ends_with("/.rung-complete"))
            .filter_map(|key| key.strip_prefix(&prefix)?.split('/').next()?.parse().ok())
            .collect();
        steps.sort_unstable();
        steps
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
