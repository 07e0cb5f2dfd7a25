//! Checkpoint storage: what a checkpoint costs to keep, in the trial's folder (a rename) and in
//! an S3-compatible store (an upload to an `s3s-fs` server on 127.0.0.1, the same one the tests
//! use), and what it costs to restore from there (a download).
//!
//! Each run commits a checkpoint of 4 files of 16 MiB (64 MiB) through
//! `CheckpointStorage::commit`, then fetches it back into another trial folder.
//! `cargo bench --bench checkpoint_storage` prints medians over five runs.

#[path = "../tests/common/s3.rs"]
mod s3;

use std::time::{Duration, Instant};

use rung::tune_core::trial::TrialId;
use rung::tune_runtime::files::TrialFiles;
use rung::tune_runtime::storage::{self, CheckpointStorage};

const FILES: usize = 4;
const FILE_BYTES: usize = 16 << 20;
const RUNS: usize = 5;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn write_checkpoint(files: &TrialFiles) {
    let bytes: Vec<u8> = (0..FILE_BYTES).map(|i| (i * 31 % 251) as u8).collect();
    for index in 0..FILES {
        std::fs::write(files.staging().join(format!("shard{index}.bin")), &bytes).unwrap();
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        // The storage reads its endpoint and credentials from the environment, as rung does:
        // serve S3 here and measure in a child process that has them.
        std::fs::create_dir_all(dir.path().join("s3").join(s3::BUCKET)).unwrap();
        let server = s3::S3Server::start(&dir.path().join("s3"), 0, None);
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .envs(server.env())
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let remote = CheckpointStorage::parse(&format!("s3://{}/bench", s3::BUCKET)).unwrap();
    let megabytes = (FILES * FILE_BYTES) as f64 / (1 << 20) as f64;
    let mut local = Vec::new();
    let mut upload = Vec::new();
    let mut download = Vec::new();
    for run in 0..RUNS {
        let files = TrialFiles::new(&dir.path().join("trials"), TrialId(run as u64));
        files.prepare().unwrap();
        write_checkpoint(&files);
        let began = Instant::now();
        let kept = runtime
            .block_on(CheckpointStorage::Local.commit(&files, "bench", TrialId(run as u64), 1, &|_| {}))
            .unwrap()
            .unwrap();
        local.push(began.elapsed());
        std::fs::remove_dir_all(kept).unwrap();

        write_checkpoint(&files);
        let began = Instant::now();
        let location = runtime
            .block_on(remote.commit(&files, "bench", TrialId(run as u64), 1, &|line| eprintln!("{line}")))
            .unwrap()
            .unwrap();
        upload.push(began.elapsed());

        let elsewhere = TrialFiles::new(&dir.path().join("elsewhere"), TrialId(run as u64));
        elsewhere.prepare().unwrap();
        let began = Instant::now();
        runtime
            .block_on(storage::fetch(&location, &elsewhere, &|line| eprintln!("{line}")))
            .unwrap();
        download.push(began.elapsed());
    }
    let report = |what: &str, samples: Vec<Duration>| {
        let m = median(samples);
        println!(
            "{what:<34} median {:>9.1} ms  ({:.0} MiB/s)",
            m.as_secs_f64() * 1e3,
            megabytes / m.as_secs_f64()
        );
    };
    println!("checkpoint of {FILES} files, {megabytes:.0} MiB; medians of {RUNS} runs");
    report("commit into the trial folder", local);
    report("commit + upload to s3 (loopback)", upload);
    report("download from s3 (loopback)", download);
}
