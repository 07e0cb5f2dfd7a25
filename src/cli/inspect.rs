//! `rung status`, `rung best` and `rung export`: reading a sweep back, from a store or a server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use rung::remote::{Remote, read_token};
use rung::tune_core::trial::{Metrics, metrics_serde};
use rung::tune_runtime::store::{ExperimentInfo, Store, StoredTrial};
use rung::tuner::best_trial;
use rung::{Error, Spec};
use serde_json::{Value, json};

use super::block_on;

/// Which experiment of which store (or server) a read command looks at.
#[derive(Args)]
pub struct Target {
    /// The store.
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    db: Option<PathBuf>,
    /// The experiment [default: the newest].
    #[arg(long)]
    experiment: Option<String>,
    /// Read from a running server instead of a store.
    #[arg(long)]
    server: Option<String>,
    /// With --server: a file whose first line is the server's token.
    #[arg(long, requires = "server")]
    token_file: Option<PathBuf>,
    /// With an https --server: a PEM CA certificate to trust.
    #[arg(long, requires = "server")]
    ca_cert: Option<PathBuf>,
}
impl Target {
    fn remote(&self) -> Result<Option<Remote>, Error> {
        let Some(url) = &self.server else { return Ok(None) };
        Ok(Some(Remote {
            url: url.clone(),
            token: self.token_file.as_deref().map(read_token).transpose()?,
            ca_cert: self.ca_cert.clone(),
        }))
    }
}
/// A read command's view of an experiment, from a store or a server.
pub struct View {
    /// Where it was read from, for the resume hint.
    source: String,
    info: ExperimentInfo,
    spec: Spec,
    trials: Vec<StoredTrial>,
    /// Metrics at each trial's best step (servers send them; stores are asked when needed).
    best_metrics: Option<Vec<(rung::TrialId, Metrics)>>,
    store: Option<Store>,
    /// A server's status (waiting trials, agents).
    remote: Option<rung::tune_proto::v1::ExperimentStatus>,
}
fn view(target: &Target) -> Result<View, Error> {
    if let Some(remote) = target.remote()? {
        let fetched = block_on(rung::remote::fetch(&remote, target.experiment.as_deref()))?;
        return Ok(View {
            source: remote.url,
            info: fetched.info,
            spec: fetched.spec,
            trials: fetched.trials,
            best_metrics: Some(fetched.best_metrics),
            store: None,
            remote: Some(fetched.status),
        });
    }
    let db = target.db.clone().expect("clap requires --db without --server");
    let (store, info, spec) = open(&db, target.experiment.as_deref())?;
    let trials = store.trials(info.id)?;
    Ok(View {
        source: db.display().to_string(),
        info,
        spec,
        trials,
        best_metrics: None,
        store: Some(store),
        remote: None,
    })
}
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Csv,
    Json,
}
fn open(db: &Path, experiment: Option<&str>) -> Result<(Store, ExperimentInfo, Spec), Error> {
    let store = Store::open(db)?;
    let info = store.experiment(experiment)?;
    let spec: Spec = serde_json::from_str(&info.spec).map_err(rung::tune_runtime::Error::from)?;
    Ok((store, info, spec))
}
/// The arguments of `rung status` and `rung best`: which experiment, and whether as JSON.
#[derive(Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Show a sweep's state: trial counts by status, elapsed time, best so far.
pub fn status(args: ReadArgs) -> Result<ExitCode, Error> {
    let ReadArgs { target, json } = args;
    let view = view(&target)?;
    print_status(&view, json);
    Ok(ExitCode::SUCCESS)
}

/// Show the best trial: its config and its metrics at its best step.
pub fn best(args: ReadArgs) -> Result<ExitCode, Error> {
    let ReadArgs { target, json } = args;
    let view = view(&target)?;
    let (info, spec, trials) = (&view.info, &view.spec, &view.trials);
    let Some(best) = best_trial(trials, spec.mode) else {
        eprintln!("experiment \"{}\" has no result for \"{}\" yet", info.name, spec.metric);
        return Ok(ExitCode::FAILURE);
    };
    let (_, step) = best.best.expect("the best trial has a value");
    let metrics = metrics_at_best(&view, best.id, step)?;
    if json {
        print_best_json(&view, best, &metrics);
    } else {
        print_best_text(&view, best, &metrics);
    }
    Ok(ExitCode::SUCCESS)
}

/// The metrics `trial` reported at `step`: a server sends them, a store is asked.
fn metrics_at_best(view: &View, trial: rung::TrialId, step: u64) -> Result<Metrics, Error> {
    Ok(match (&view.best_metrics, &view.store) {
        (Some(all), _) => all
            .iter()
            .find(|(id, _)| *id == trial)
            .map(|(_, m)| m.clone())
            .unwrap_or_default(),
        (None, Some(store)) => store
            .reports(view.info.id, Some(trial))?
            .into_iter()
            .find(|(_, r)| r.step == step)
            .map(|(_, r)| r.metrics)
            .unwrap_or_default(),
        (None, None) => Default::default(),
    })
}

fn print_best_json(view: &View, best: &StoredTrial, metrics: &Metrics) {
    let (info, spec) = (&view.info, &view.spec);
    let (value, step) = best.best.expect("the best trial has a value");
    let metrics: serde_json::Map<String, Value> = metrics
        .iter()
        .map(|(k, v)| (k.clone(), metrics_serde::encode(*v)))
        .collect();
    let out = json!({
        "experiment": info.name, "trial": best.id.to_string(), "metric": spec.metric, "value": metrics_serde::encode(value),
        "step": step, "status": best.status.label(), "config": best.config.0, "metrics": metrics,
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}

fn print_best_text(view: &View, best: &StoredTrial, metrics: &Metrics) {
    let (value, step) = best.best.expect("the best trial has a value");
    println!(
        "best trial of \"{}\": {} with {}={value} at step {step} ({})",
        view.info.name,
        best.id,
        view.spec.metric,
        best.status.label()
    );
    println!("config:");
    for (name, value) in best.config.flatten() {
        println!("  {name} = {value}");
    }
    println!("metrics at step {step}:");
    for (name, value) in metrics {
        println!("  {name} = {value}");
    }
}

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub target: Target,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Write to this file instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// Export one row per trial: id, status, config, last and best metric, steps.
pub fn export(args: ExportArgs) -> Result<ExitCode, Error> {
    let ExportArgs { target, format, output } = args;
    let view = view(&target)?;
    let text = match format {
        Format::Csv => export_csv(&view.spec, &view.trials),
        Format::Json => export_json(&view.spec, &view.trials),
    };
    match output {
        Some(path) => {
            std::fs::write(&path, text).map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))?
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// What `rung status` shows of an experiment, worked out once for both its forms.
struct StatusSummary {
    counts: std::collections::BTreeMap<&'static str, u64>,
    best: Option<(rung::TrialId, (f64, u64))>,
    state: String,
    waiting: Vec<(String, String)>,
}

fn status_summary(view: &View) -> StatusSummary {
    let (info, spec, trials) = (&view.info, &view.spec, view.trials.as_slice());
    let mut counts = std::collections::BTreeMap::<&'static str, u64>::new();
    for label in [
        "pending",
        "running",
        "paused",
        "completed",
        "stopped",
        "sweep_ended",
        "errored",
    ] {
        counts.insert(label, 0);
    }
    for trial in trials {
        *counts.entry(trial.status.label()).or_default() += 1;
    }
    let best = best_trial(trials, spec.mode).map(|t| (t.id, t.best.expect("has a value")));
    let state = match &view.remote {
        Some(status) => status.state.clone(),
        None if info.is_finished() => "finished".into(),
        None => "unfinished".into(),
    };
    let waiting: Vec<(String, String)> = view
        .remote
        .iter()
        .flat_map(|s| &s.waiting)
        .map(|w| (rung::TrialId(w.trial).to_string(), w.reason.clone()))
        .collect();
    StatusSummary {
        counts,
        best,
        state,
        waiting,
    }
}

fn print_status(view: &View, json: bool) {
    let summary = status_summary(view);
    if json {
        print_status_json(view, &summary);
    } else {
        print_status_text(view, &summary);
    }
}

fn print_status_json(view: &View, summary: &StatusSummary) {
    let (info, spec, trials) = (&view.info, &view.spec, view.trials.as_slice());
    let mut out = json!({
        "experiment": info.name, "state": summary.state, "end_cause": info.end_cause, "seed": info.seed,
        "elapsed_s": info.elapsed_ms as f64 / 1000.0, "metric": spec.metric, "mode": spec.mode,
        "trials": trials.len(), "counts": summary.counts,
        "best": summary.best.map(|(trial, (value, step))| json!({"trial": trial.to_string(), "value": metrics_serde::encode(value), "step": step})),
    });
    if let Some(status) = &view.remote {
        out["waiting"] = summary
            .waiting
            .iter()
            .map(|(t, r)| json!({"trial": t, "reason": r}))
            .collect();
        out["agents"] = status
                .agents
                .iter()
                .map(|a| json!({"id": a.id, "name": a.name, "inventory": a.inventory, "trials": a.trials, "connected": a.connected}))
                .collect();
    }
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}

fn print_status_text(view: &View, summary: &StatusSummary) {
    let (info, spec, trials) = (&view.info, &view.spec, view.trials.as_slice());
    println!("experiment  {} (seed {})", info.name, info.seed);
    match (&info.end_cause, &view.remote) {
        (Some(cause), _) if info.is_finished() => println!("state       finished: {cause}"),
        (_, Some(_)) => println!("state       {} on {}", summary.state, view.source),
        _ => println!("state       unfinished — resume with: rung resume --db {}", view.source),
    }
    println!("elapsed     {:.1}s", info.elapsed_ms as f64 / 1000.0);
    let counts: Vec<String> = summary
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(label, n)| format!("{n} {label}"))
        .collect();
    println!(
        "trials      {}{}{}",
        trials.len(),
        if counts.is_empty() { "" } else { ": " },
        counts.join(", ")
    );
    match summary.best {
        Some((trial, (value, step))) => println!(
            "best        {trial} {}={value} at step {step} ({})",
            spec.metric, spec.mode
        ),
        None => println!("best        none yet"),
    }
    if let Some(status) = &view.remote {
        for agent in &status.agents {
            println!(
                "agent       {} ({}): {} trial(s); {}{}",
                agent.name,
                agent.id,
                agent.trials,
                agent.inventory,
                if agent.connected { "" } else { " — disconnected" }
            );
        }
        if status.agents.is_empty() && status.state == "running" {
            println!(
                "agents      none registered (start one with: rung agent --controller {})",
                view.source
            );
        }
    }
    for (trial, reason) in &summary.waiting {
        println!("waiting     {trial}: {reason}");
    }
}
fn metric_cell(value: Option<f64>) -> String {
    value.map_or_else(String::new, |v| {
        metrics_serde::encode(v).to_string().trim_matches('"').to_owned()
    })
}
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}
fn export_csv(spec: &Spec, trials: &[StoredTrial]) -> String {
    let mut columns: Vec<String> = trials
        .iter()
        .flat_map(|t| t.config.flatten().into_iter().map(|(name, _)| name))
        .collect();
    columns.sort();
    columns.dedup();
    let metric = &spec.metric;
    let mut header = vec!["trial_id".to_owned(), "status".to_owned()];
    header.extend(columns.iter().map(|c| format!("config.{c}")));
    header.extend([
        format!("last_{metric}"),
        format!("best_{metric}"),
        "best_step".into(),
        "steps".into(),
        "failures".into(),
        "error".into(),
    ]);
    let mut out = header.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(",") + "\n";
    for trial in trials {
        let mut row = vec![trial.id.to_string(), trial.status.label().to_owned()];
        for column in &columns {
            row.push(
                trial
                    .config
                    .get(column)
                    .map_or_else(String::new, rung::tune_core::value::value_to_arg),
            );
        }
        let last = trial.last.as_ref().and_then(|r| r.metrics.get(metric).copied());
        row.push(metric_cell(last));
        row.push(metric_cell(trial.best.map(|(v, _)| v)));
        row.push(trial.best.map_or_else(String::new, |(_, s)| s.to_string()));
        row.push(trial.last.as_ref().map_or_else(|| "0".into(), |r| r.step.to_string()));
        row.push(trial.failures.to_string());
        row.push(trial.error.clone().unwrap_or_default());
        out += &(row.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",") + "\n");
    }
    out
}
fn export_json(spec: &Spec, trials: &[StoredTrial]) -> String {
    let metric = &spec.metric;
    let rows: Vec<Value> = trials
        .iter()
        .map(|trial| {
            let last = trial.last.as_ref().and_then(|r| r.metrics.get(metric).copied());
            json!({
                "trial_id": trial.id.to_string(),
                "status": trial.status.label(),
                "config": trial.config.0,
                "metric": metric,
                "last": last.map(metrics_serde::encode),
                "best": trial.best.map(|(v, _)| metrics_serde::encode(v)),
                "best_step": trial.best.map(|(_, s)| s),
                "steps": trial.last.as_ref().map_or(0, |r| r.step),
                "failures": trial.failures,
                "error": trial.error,
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).expect("json") + "\n"
}
