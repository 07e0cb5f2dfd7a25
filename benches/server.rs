//! Server mode over loopback, end to end with the store on:
//!
//! 1. `Trials.Report` throughput and latency: 64 clients, each on its own connection, ask for
//!    a trial and report as fast as the answers come (every answer waits for its group commit).
//! 2. Launch latency through an agent: an in-process `rung agent` runs trials of a command that
//!    stamps the time it started and exits at once, one trial at a time; the bench reports the
//!    time from submitting the experiment to the first trial's start, and from one trial's start
//!    to the next one's (exit, exit acknowledged and committed, the next launch placed, sent,
//!    spawned).
//!
//! `cargo bench --bench server` prints medians over three runs.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rung::Spec;
use rung::server::{ServeConfig, serve};
use rung::tune_core::resources::Inventory;
use rung::tune_proto::v1;
use rung::tune_proto::v1::experiments_client::ExperimentsClient;
use rung::tune_proto::v1::trials_client::TrialsClient;
use rung::tune_worker_agent::agent::{AgentConfig, run as run_agent};
use tokio::sync::oneshot;

const CLIENTS: usize = 64;
const REPORTS_PER_CLIENT: u64 = 300;
const LAUNCHES: usize = 40;
const RUNS: usize = 3;

fn spec(text: &str, dir: &Path) -> Spec {
    Spec::from_submitted(text, false, dir).expect("a valid spec")
}

async fn start(dir: &Path, specs: Vec<Spec>) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let config = ServeConfig::new(dir.join("bench.db"));
    let task = tokio::spawn(async move {
        serve(listener, config, specs, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (url, stop, task)
}

/// Returns (reports per second, p50, p99 of one report's round trip, p50 of Ask).
async fn reports(dir: &Path) -> (f64, Duration, Duration, Duration) {
    let spec = spec(
        &format!(
            "name = \"reports\"\nmetric = \"loss\"\nmode = \"min\"\nnum_samples = {CLIENTS}\nmax_concurrent = {CLIENTS}\nseed = 1\n[space]\nlr = {{ uniform = [0.0, 1.0] }}\n"
        ),
        dir,
    );
    let (url, stop, task) = start(dir, vec![spec]).await;
    let began = Instant::now();
    let mut clients = Vec::new();
    for worker in 0..CLIENTS {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = TrialsClient::new(channel);
            let asked_at = Instant::now();
            let assignment = client
                .ask(v1::AskRequest {
                    experiment: "reports".into(),
                    worker: format!("w{worker}"),
                    wait_ms: 10_000,
                })
                .await
                .unwrap()
                .into_inner()
                .assignment
                .expect("a trial per client");
            let ask = asked_at.elapsed();
            let trial = assignment.trial.unwrap();
            let mut latencies = Vec::with_capacity(REPORTS_PER_CLIENT as usize);
            for step in 1..=REPORTS_PER_CLIENT {
                let sent = Instant::now();
                let answer = client
                    .report(v1::ReportRequest {
                        trial: Some(trial.clone()),
                        step,
                        metrics: [("loss".to_owned(), 1.0 / step as f64)].into(),
                        checkpoint: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                latencies.push(sent.elapsed());
                assert_eq!(answer.decision(), v1::Decision::Continue);
            }
            client
                .finish(v1::FinishRequest {
                    trial: Some(trial),
                    success: true,
                    reason: String::new(),
                })
                .await
                .unwrap();
            (ask, latencies)
        }));
    }
    let mut latencies = Vec::new();
    let mut asks = Vec::new();
    for client in clients {
        let (ask, mut each) = client.await.unwrap();
        asks.push(ask);
        latencies.append(&mut each);
    }
    let wall = began.elapsed();
    let _ = stop.send(());
    task.await.unwrap();
    latencies.sort();
    asks.sort();
    let rps = latencies.len() as f64 / wall.as_secs_f64();
    (
        rps,
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        asks[asks.len() / 2],
    )
}

/// Returns (submit → first trial start, median start → next start).
async fn launches(dir: &Path) -> (Duration, Duration) {
    let stamps = dir.join("starts.txt");
    let (url, stop, task) = start(dir, Vec::new()).await;
    let (agent_stop, agent_stopped) = oneshot::channel::<()>();
    let agent = tokio::spawn(run_agent(
        AgentConfig {
            controller: url.clone(),
            token: None,
            ca_cert: None,
            name: "bench".into(),
            work_dir: dir.join("work"),
            inventory: Inventory {
                cpus: 4.0,
                ..Inventory::default()
            },
        },
        async {
            let _ = agent_stopped.await;
        },
    ));
    let text = format!(
        "name = \"launches\"\nmetric = \"loss\"\nmode = \"min\"\nnum_samples = {LAUNCHES}\nmax_concurrent = 1\nseed = 1\n\
         [space]\nlr = {{ uniform = [0.0, 1.0] }}\n[trial]\n\
         command = [\"sh\", \"-c\", \"date +%s%N >> {}; echo 'rung:report {{{{\\\"step\\\": 1, \\\"loss\\\": 1}}}}'\"]\n",
        stamps.display()
    );
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut experiments = ExperimentsClient::new(channel);
    // Let the agent register first: this measures launches, not the agent's start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let submitted_at = std::time::SystemTime::now();
    experiments
        .create(v1::CreateRequest {
            spec: text,
            json: false,
            spec_dir: dir.display().to_string(),
        })
        .await
        .unwrap();
    loop {
        let status = experiments
            .get(v1::GetRequest {
                name: "launches".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if status.state != "running" {
            assert_eq!(status.completed, LAUNCHES as u64, "{status:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = agent_stop.send(());
    let _ = agent.await;
    let _ = stop.send(());
    task.await.unwrap();
    let starts: Vec<u128> = std::fs::read_to_string(&stamps)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let submitted = submitted_at.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let first = Duration::from_nanos((starts[0] - submitted) as u64);
    let mut gaps: Vec<Duration> = starts
        .windows(2)
        .map(|w| Duration::from_nanos((w[1] - w[0]) as u64))
        .collect();
    gaps.sort();
    (first, gaps[gaps.len() / 2])
}

fn median<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; this one only runs under `cargo bench`
    }
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
    let mut rps = Vec::new();
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut ask = Vec::new();
    let mut first = Vec::new();
    let mut next = Vec::new();
    for run in 0..RUNS {
        let dir = tempfile::tempdir().unwrap();
        let (r, a, b, c) = runtime.block_on(reports(dir.path()));
        let dir = tempfile::tempdir().unwrap();
        let (f, n) = runtime.block_on(launches(dir.path()));
        println!(
            "run {}: {r:.0} reports/s, report p50 {a:?} p99 {b:?}, ask p50 {c:?}; launch: first start {f:?} after submit, start to next start {n:?}",
            run + 1
        );
        rps.push(r);
        p50.push(a);
        p99.push(b);
        ask.push(c);
        first.push(f);
        next.push(n);
    }
    println!(
        "\nTrials.Report, {CLIENTS} clients x {REPORTS_PER_CLIENT} reports, store on (medians of {RUNS} runs):\n  \
         {:.0} reports/s, latency p50 {:?}, p99 {:?}; Ask p50 {:?}",
        median(rps),
        median(p50),
        median(p99),
        median(ask)
    );
    println!(
        "Launch through an agent, {LAUNCHES} trials one at a time:\n  submit -> first trial process started {:?}; \
         one trial's start -> the next's start {:?} (median)",
        median(first),
        median(next)
    );
}
