//! Spec files: a sweep described in TOML (or the same structure in JSON).
//!
//! ```toml
//! name = "quickstart"
//! metric = "loss"
//! mode = "min"
//! num_samples = 20
//! max_concurrent = 4
//! seed = 42
//!
//! [space]
//! lr = { loguniform = [1e-5, 1e-1] }
//! batch = { choice = [16, 32, 64, 128] }
//!
//! [searcher]
//! kind = "random"
//!
//! [scheduler]
//! kind = "fifo"
//!
//! [trial]
//! command = ["python3", "train.py", "--lr", "{lr}"]
//! resources = { cpu = 2, gpu = 0.5, memory = "8GiB" }   # or a list of bundles, with placement
//! ```
//!
//! Unknown keys are errors (with line and column); every setting is validated when the spec is
//! read, so a sweep never starts with a setting that cannot work.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tune_core::controller::ControllerConfig;
use tune_core::duration::{Lower, seconds};
use tune_core::resources::{Bundle, Placement, ResourceRequest};
use tune_core::space::Space;
use tune_core::trial::Mode;
use tune_runtime::runner::{placeholders, resolve_program};
pub use tune_runtime::store::Durability;
use tune_schedulers::SchedulerConfig;
use tune_search::{SearcherConfig, SearcherSpec};

use crate::error::{Error, Result};
pub use tune_tracking::{MLFLOW_TRACKING_URI, SweepFacts, Tracking};

/// A sweep: what to optimise, over which space, with which searcher and scheduler, and how to
/// run a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The experiment's name (made unique within a store by a `-2`, `-3`, ... suffix).
    #[serde(default = "default_name")]
    pub name: String,
    /// The metric to optimise.
    pub metric: String,
    /// `min` or `max`.
    pub mode: Mode,
    /// How many trials (times the grid size when the space has grid parameters); -1 = until
    /// another stop condition ends the sweep.
    #[serde(default = "default_num_samples")]
    pub num_samples: i64,
    /// Trials run at once; defaults to the number of CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
    /// The seed all randomness flows from; drawn at random (and stored) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// End the sweep after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_budget_s: Option<f64>,
    /// End the sweep once a trial's metric reaches this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// End the sweep once this many trials have errored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_trials: Option<u64>,
    /// What the store survives before a report is answered: `"process"` (rung dying at any
    /// instant; the default) or `"power"` (also a power loss: an fsync per commit).
    #[serde(default, skip_serializing_if = "is_default")]
    pub durability: Durability,
    /// The search space.
    #[serde(default)]
    pub space: Space,
    /// The searcher.
    #[serde(default)]
    pub searcher: SearcherSpec,
    /// The scheduler.
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// How a trial runs.
    #[serde(default)]
    pub trial: TrialSpec,
    /// Where the sweep is mirrored for experiment tracking (MLflow); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<Tracking>,
}

/// The `[trial]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialSpec {
    /// The command of a trial process, with `{name}` placeholders. Empty for in-process trials.
    #[serde(default)]
    pub command: Vec<String>,
    /// Retries per trial after a failure, each from its last checkpoint.
    #[serde(default)]
    pub max_failures: u32,
    /// Launches of a trial lost in a row (its agent gone) before it ends as errored; at least 1.
    #[serde(default = "default_max_lost")]
    pub max_lost: u32,
    /// Keep the N best checkpoints of each trial (and its most recent); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_keep: Option<usize>,
    /// Where checkpoints go: `s3://bucket/prefix` or `file:///path`; each trial's folder when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_storage: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when a trial is stopped.
    #[serde(default = "default_stop_grace")]
    pub stop_grace_s: f64,
    /// Extra environment variables for trial processes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The working directory of trial processes; relative paths are relative to the spec file.
    /// Defaults to the spec file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    /// A built-in workload to run in virtual time with `rung simulate` (`learning-curve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulate: Option<String>,
    /// What each trial needs: one bundle (`{ cpu = 2, gpu = 0.5, memory = "8GiB" }`) or a list
    /// of them; `{ cpu = 1 }` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// How a trial's bundles are laid out over agents: `pack` (one agent, the default) or
    /// `spread` (one agent per bundle).
    #[serde(default, skip_serializing_if = "is_pack")]
    pub placement: Placement,
}

fn is_pack(placement: &Placement) -> bool {
    *placement == Placement::Pack
}

/// The `resources` of a trial: one bundle or a list of bundles.
///
/// Written as `resources = { cpu = 2, gpu = 0.5 }` or `resources = [{ gpu = 1 }, { gpu = 1 }]`.
/// Reading it looks at the shape (table or list) first, so a wrong key inside a bundle is
/// reported by name rather than as a mismatch of both forms.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Resources {
    /// One bundle.
    One(Bundle),
    /// Several bundles.
    Many(Vec<Bundle>),
}

impl Resources {
    /// The bundles, in order.
    pub fn bundles(&self) -> &[Bundle] {
        match self {
            Resources::One(bundle) => std::slice::from_ref(bundle),
            Resources::Many(bundles) => bundles,
        }
    }
}

impl<'de> Deserialize<'de> for Resources {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct ResourcesVisitor;

        impl<'de> serde::de::Visitor<'de> for ResourcesVisitor {
            type Value = Resources;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a bundle such as { cpu = 2, gpu = 0.5 } or a list of bundles")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> std::result::Result<Resources, A::Error> {
                Bundle::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Resources::One)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> std::result::Result<Resources, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(Resources::Many)
            }
        }

        deserializer.deserialize_any(ResourcesVisitor)
    }
}

impl TrialSpec {
    /// What a trial asks of the agents: the `resources` bundles (one `{ cpu = 1 }` bundle when
    /// absent) and the `placement`.
    pub fn resource_request(&self) -> ResourceRequest {
        ResourceRequest {
            bundles: self
                .resources
                .as_ref()
                .map_or_else(|| vec![Bundle::default()], |resources| resources.bundles().to_vec()),
            placement: self.placement,
        }
    }
}

impl Default for TrialSpec {
    fn default() -> Self {
        TrialSpec {
            command: Vec::new(),
            max_failures: 0,
            max_lost: default_max_lost(),
            checkpoint_keep: None,
            checkpoint_storage: None,
            stop_grace_s: default_stop_grace(),
            env: BTreeMap::new(),
            workdir: None,
            simulate: None,
            resources: None,
            placement: Placement::Pack,
        }
    }
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
fn default_name() -> String {
    "experiment".into()
}
fn default_num_samples() -> i64 {
    1
}
fn default_max_lost() -> u32 {
    3
}
fn default_stop_grace() -> f64 {
    10.0
}

impl Spec {
    /// A spec with defaults for everything but the metric and mode (for the Rust API).
    pub fn new(metric: &str, mode: Mode) -> Self {
        Spec {
            name: default_name(),
            metric: metric.into(),
            mode,
            num_samples: default_num_samples(),
            max_concurrent: None,
            seed: None,
            time_budget_s: None,
            target: None,
            max_failed_trials: None,
            durability: Durability::default(),
            space: Space::new(),
            searcher: SearcherSpec::default(),
            scheduler: SchedulerConfig::default(),
            trial: TrialSpec::default(),
            tracking: None,
        }
    }

    /// Reads a spec file (`.json` as JSON, anything else as TOML), fills in the defaults that
    /// depend on the machine (seed, concurrency, working directory) and validates it.
    pub fn load(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Spec {
            path: path.to_owned(),
            message: format!("cannot read: {e}"),
        })?;
        let is_json = path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        let mut spec = if is_json {
            Spec::from_json_str(&text)
        } else {
            Spec::from_toml_str(&text)
        }
        .map_err(|message| Error::Spec {
            path: path.to_owned(),
            message,
        })?;
        let folder = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let folder = folder.canonicalize().map_err(|e| Error::Spec {
            path: path.to_owned(),
            message: format!("cannot resolve its folder: {e}"),
        })?;
        spec.trial.workdir = Some(match &spec.trial.workdir {
            Some(dir) => folder.join(dir),
            None => folder,
        });
        spec.resolve_defaults();
        spec.validate()?;
        if spec.trial.command.is_empty() && spec.trial.simulate.is_none() {
            return Err(Error::setting(
                "trial.command",
                "is missing: a spec run from the command line needs the trial's command (or `simulate` for rung simulate)",
            ));
        }
        if !spec.trial.command.is_empty() {
            spec.validate_command()?;
        }
        Ok(spec)
    }

    /// A spec sent to a server (`rung serve SPEC`, `rung submit SPEC`): read like
    /// [`Spec::load`] with `folder` as the spec file's folder, except that the program is not
    /// looked up (it runs on the agents, not on the server) and `max_concurrent` defaults to 64
    /// (the agents' resources bound what runs at once). A spec without a command is served to
    /// workers that call `Trials.Ask`.
    pub fn from_submitted(text: &str, json: bool, folder: &Path) -> Result<Spec> {
        let parsed = if json {
            Spec::from_json_str(text)
        } else {
            Spec::from_toml_str(text)
        };
        let mut spec = parsed.map_err(|message| Error::Spec {
            path: folder.join("(submitted spec)"),
            message,
        })?;
        spec.trial.workdir = Some(match &spec.trial.workdir {
            Some(dir) => folder.join(dir),
            None => folder.to_owned(),
        });
        if spec.max_concurrent.is_none() {
            spec.max_concurrent = Some(64);
        }
        spec.resolve_defaults();
        spec.validate()?;
        if spec.trial.simulate.is_some() {
            return Err(Error::setting(
                "trial.simulate",
                "a simulated workload runs with `rung simulate`, not on a server",
            ));
        }
        if !spec.trial.command.is_empty() {
            spec.validate_placeholders()?;
        }
        Ok(spec)
    }

    /// Parses TOML; the error message carries the line and column.
    pub fn from_toml_str(text: &str) -> std::result::Result<Spec, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Parses JSON; the error message carries the line and column.
    pub fn from_json_str(text: &str) -> std::result::Result<Spec, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// Fills in a random seed and the machine's CPU count where they are absent.
    pub fn resolve_defaults(&mut self) {
        if self.seed.is_none() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            self.seed = Some((nanos as u64) ^ u64::from(std::process::id()).rotate_left(32));
        }
        if self.max_concurrent.is_none() {
            self.max_concurrent = Some(std::thread::available_parallelism().map_or(1, |n| n.get()));
        }
    }

    /// Checks every setting, naming the first that cannot work.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &str, message: String| Err(Error::setting(setting, message));
        if self.name.trim().is_empty() || self.name.contains(['/', '\\']) {
            return bad(
                "name",
                format!("must be non-empty and contain no '/' or '\\', got {:?}", self.name),
            );
        }
        if self.metric.trim().is_empty() {
            return bad("metric", "must name the metric to optimise".into());
        }
        if self.num_samples == 0 || self.num_samples < -1 {
            return bad(
                "num_samples",
                format!("must be at least 1, or -1 for no limit, got {}", self.num_samples),
            );
        }
        if self.max_concurrent == Some(0) {
            return bad("max_concurrent", "must be at least 1, got 0".into());
        }
        self.time_budget()?;
        if let Some(target) = self.target
            && !target.is_finite()
        {
            return bad("target", format!("must be a finite number, got {target}"));
        }
        if self.num_samples == -1 && self.time_budget_s.is_none() && self.target.is_none() {
            return bad(
                "num_samples",
                "is -1 (no limit) but nothing else ends the sweep: set time_budget_s or target".into(),
            );
        }
        self.stop_grace()?;
        if let Some(uri) = &self.trial.checkpoint_storage
            && let Err(error) = tune_runtime::storage::validate_uri(uri)
        {
            return bad(
                "trial.checkpoint_storage",
                format!("\"{}\": {}", error.uri, error.reason),
            );
        }
        if self.trial.checkpoint_keep == Some(0) {
            return bad(
                "trial.checkpoint_keep",
                "must be at least 1 (leave it out to keep every checkpoint), got 0".into(),
            );
        }
        if let Some(resources) = &self.trial.resources {
            if resources.bundles().is_empty() {
                return bad(
                    "trial.resources",
                    "is an empty list: give at least one bundle, or leave it out for { cpu = 1 }".into(),
                );
            }
            if let Err(error) = self.trial.resource_request().validate() {
                return bad("trial.resources", error.to_string());
            }
        }
        if self.trial.max_lost == 0 {
            return bad("trial.max_lost", "must be at least 1, got 0".into());
        }
        if self.max_failed_trials == Some(0) {
            return bad("max_failed_trials", "must be at least 1, got 0".into());
        }
        if let Some(workload) = &self.trial.simulate
            && !crate::simulate::WORKLOADS.contains(&workload.as_str())
        {
            return bad(
                "trial.simulate",
                format!(
                    "unknown workload \"{workload}\" (known: {})",
                    crate::simulate::WORKLOADS.join(", ")
                ),
            );
        }
        if matches!(self.searcher.config, SearcherConfig::Bohb(_))
            && !matches!(self.scheduler, SchedulerConfig::Hyperband(_) | SchedulerConfig::Asha(_))
        {
            return bad(
                "searcher.kind",
                format!(
                    "\"bohb\" needs a scheduler that chooses the budgets: [scheduler] kind = \"hyperband\" or \"asha\", got \"{}\"",
                    self.scheduler.kind()
                ),
            );
        }
        if let Some(tracking) = &self.tracking {
            tracking.resolve_uri()?;
            if tracking.experiment.as_ref().is_some_and(|name| name.trim().is_empty()) {
                return bad(
                    "tracking.experiment",
                    "must be a non-empty MLflow experiment name".into(),
                );
            }
            if let Some(timeout) = tracking.flush_timeout_s {
                seconds("tracking.flush_timeout_s", timeout, Lower::Zero)?;
            }
        }
        self.searcher.validate(&self.space)?;
        self.scheduler.validate(&self.space)?;
        Ok(())
    }

    /// Checks that the trial command's program exists and its placeholders name parameters.
    pub fn validate_command(&self) -> Result<()> {
        let bad = |message: String| Err(Error::setting("trial.command", message));
        let Some(program) = self.trial.command.first() else {
            return bad("is empty".into());
        };
        let workdir = self.trial.workdir.clone().unwrap_or_else(|| PathBuf::from("."));
        if resolve_program(program, &workdir).is_none() {
            let where_ = if program.contains('/') {
                format!("in {}", workdir.display())
            } else {
                "on PATH".into()
            };
            return bad(format!("program \"{program}\" not found {where_}, or not executable"));
        }
        self.validate_placeholders()
    }

    /// Checks that every `{name}` of the command names a parameter (or `config`, `trial_id`).
    pub fn validate_placeholders(&self) -> Result<()> {
        let bad = |message: String| Err(Error::setting("trial.command", message));
        let known = self.space.parameter_names();
        for arg in &self.trial.command {
            for name in placeholders(arg) {
                if name != "config" && name != "trial_id" && !known.contains(&name) {
                    return bad(format!(
                        "placeholder {{{name}}} names no parameter of the space (known: {}, config, trial_id)",
                        known.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// What MLflow tracking records of this sweep's settings.
    pub fn sweep_facts(&self) -> SweepFacts {
        SweepFacts {
            metric: self.metric.clone(),
            mode: self.mode,
            num_samples: self.num_samples,
            searcher: self.searcher.config.kind().to_owned(),
            scheduler: self.scheduler.kind().to_owned(),
        }
    }

    /// `time_budget_s` as a duration, checked: finite, above 0 and at most ten years.
    pub fn time_budget(&self) -> Result<Option<Duration>> {
        let budget = self
            .time_budget_s
            .map(|budget| seconds("time_budget_s", budget, Lower::AboveZero));
        Ok(budget.transpose()?)
    }

    /// `trial.stop_grace_s` as a duration, checked: finite, at least 0 and at most ten years.
    /// A stored spec is read through this too, so one written before the check cannot panic.
    pub fn stop_grace(&self) -> Result<Duration> {
        Ok(seconds("trial.stop_grace_s", self.trial.stop_grace_s, Lower::Zero)?)
    }

    /// The controller settings this spec describes.
    pub fn controller_config(&self) -> Result<ControllerConfig> {
        let per_sample = self.searcher.config.trials_per_sample(&self.space)?;
        Ok(ControllerConfig {
            metric: self.metric.clone(),
            mode: self.mode,
            max_trials: u64::try_from(self.num_samples)
                .ok()
                .map(|n| n.saturating_mul(per_sample)),
            max_concurrent: self.max_concurrent.unwrap_or(1),
            time_budget: self.time_budget()?,
            target: self.target,
            max_failures: self.trial.max_failures,
            max_lost: self.trial.max_lost,
            max_failed_trials: self.max_failed_trials,
            checkpoint_keep: self.trial.checkpoint_keep,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: &str = r#"
name = "quickstart"
metric = "loss"
mode = "min"
num_samples = 100
max_concurrent = 4
seed = 42
time_budget_s = 600
target = 0.05

[space]
lr = { loguniform = [1e-5, 1e-1] }
batch = { choice = [16, 32, 64, 128] }
layers = { randint = [1, 8] }
optimizer = { choice = [ { name = "sgd", momentum = { uniform = [0.0, 0.99] } },
                         { name = "adam", beta1 = { uniform = [0.8, 0.99] } } ] }

[searcher]
kind = "random"

[scheduler]
kind = "fifo"

[trial]
command = ["python3", "train.py", "--lr", "{lr}", "--batch", "{batch}"]
max_failures = 2
checkpoint_keep = 2
stop_grace_s = 10
"#;

    #[test]
    fn parses_the_issue_example_and_round_trips_through_json() {
        let spec = Spec::from_toml_str(QUICK).unwrap();
        assert_eq!(spec.name, "quickstart");
        assert_eq!(spec.num_samples, 100);
        assert_eq!(spec.trial.checkpoint_keep, Some(2));
        spec.validate().unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(Spec::from_json_str(&json).unwrap(), spec);
        let config = spec.controller_config().unwrap();
        assert_eq!(config.max_trials, Some(100));
        assert_eq!(config.time_budget, Some(Duration::from_secs(600)));
    }

    #[test]
    fn unknown_keys_and_syntax_errors_give_line_and_column() {
        let error = Spec::from_toml_str(&QUICK.replace("seed = 42", "sed = 42")).unwrap_err();
        assert!(
            error.contains("line 7, column 1") && error.contains("unknown field `sed`"),
            "{error}"
        );
        let error = Spec::from_toml_str(&QUICK.replace("stop_grace_s = 10", "stop_grace = 10")).unwrap_err();
        assert!(
            error.contains("line 28, column 1") && error.contains("unknown field `stop_grace`"),
            "{error}"
        );
        let error = Spec::from_toml_str(&QUICK.replace("mode = \"min\"", "mode = min")).unwrap_err();
        assert!(error.contains("line 4, column 8"), "{error}");
        let error = Spec::from_json_str("{\"metric\": \"loss\", \"mode\": \"min\",\n \"colour\": 1}").unwrap_err();
        assert!(
            error.contains("unknown field `colour`") && error.contains("line 2 column"),
            "{error}"
        );
    }

    #[test]
    fn unknown_searcher_or_scheduler_is_named() {
        let error = Spec::from_toml_str(&QUICK.replace("kind = \"fifo\"", "kind = \"hyperbandit\"")).unwrap_err();
        assert!(
            error.contains(
                "unknown variant `hyperbandit`, expected one of `fifo`, `asha`, `hyperband`, `median`, `pbt`"
            ),
            "{error}"
        );
        let error = Spec::from_toml_str(&QUICK.replace("kind = \"random\"", "kind = \"bayes\"")).unwrap_err();
        assert!(error.contains("unknown variant `bayes`"), "{error}");
    }

    #[test]
    fn invalid_domain_is_named_with_its_location() {
        let error = Spec::from_toml_str(&QUICK.replace("[1e-5, 1e-1]", "[0, 1e-1]")).unwrap_err();
        assert!(
            error.contains("parameter \"lr\": loguniform needs 0 < low < high, got low=0, high=0.1"),
            "{error}"
        );
        assert!(error.contains("line "), "{error}");
        let error = Spec::from_toml_str(&QUICK.replace("{ randint = [1, 8] }", "{ uniform = [nan, 8] }")).unwrap_err();
        assert!(
            error.contains("parameter \"layers\": uniform needs finite low, got low=NaN"),
            "{error}"
        );
    }

    #[test]
    fn settings_that_cannot_work_are_rejected_by_name() {
        let check = |from: &str, to: &str| {
            Spec::from_toml_str(&QUICK.replace(from, to))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            check("num_samples = 100", "num_samples = 0"),
            "setting \"num_samples\": must be at least 1, or -1 for no limit, got 0"
        );
        assert_eq!(
            check("max_concurrent = 4", "max_concurrent = 0"),
            "setting \"max_concurrent\": must be at least 1, got 0"
        );
        assert_eq!(
            check("checkpoint_keep = 2", "checkpoint_keep = 2\nmax_lost = 0"),
            "setting \"trial.max_lost\": must be at least 1, got 0"
        );
        assert_eq!(
            check("checkpoint_keep = 2", "checkpoint_keep = 0"),
            "setting \"trial.checkpoint_keep\": must be at least 1 (leave it out to keep every checkpoint), got 0"
        );
        assert_eq!(
            check("time_budget_s = 600", "time_budget_s = -1"),
            "setting \"time_budget_s\": must be a number of seconds above 0 and at most 315576000 (10 years), got -1"
        );
        // Numbers a Duration cannot hold (or an Instant cannot add) are refused here, by name,
        // instead of panicking the controller thread later.
        assert_eq!(
            check("time_budget_s = 600", "time_budget_s = 1e20"),
            "setting \"time_budget_s\": must be a number of seconds above 0 and at most 315576000 (10 years), got 1e20"
        );
        assert_eq!(
            check("stop_grace_s = 10", "stop_grace_s = 1e20"),
            "setting \"trial.stop_grace_s\": must be a number of seconds at least 0 and at most 315576000 (10 years), got 1e20"
        );
        assert_eq!(
            check("stop_grace_s = 10", "stop_grace_s = inf"),
            "setting \"trial.stop_grace_s\": must be a number of seconds at least 0 and at most 315576000 (10 years), got inf"
        );
        let unbounded = QUICK
            .replace("num_samples = 100", "num_samples = -1")
            .replace("time_budget_s = 600\n", "")
            .replace("target = 0.05\n", "");
        assert!(
            Spec::from_toml_str(&unbounded)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
                .contains("nothing else ends the sweep")
        );
        assert_eq!(
            check("kind = \"random\"", "kind = \"grid\""),
            "parameter \"lr\": grid search cannot enumerate a loguniform domain: it is continuous and has no grid values; use grid = [...] or random search"
        );
    }

    #[test]
    fn bohb_needs_a_scheduler_that_chooses_budgets() {
        let spec = QUICK.replace("kind = \"random\"", "kind = \"bohb\"");
        assert_eq!(
            Spec::from_toml_str(&spec).unwrap().validate().unwrap_err().to_string(),
            "setting \"searcher.kind\": \"bohb\" needs a scheduler that chooses the budgets: [scheduler] kind = \"hyperband\" or \"asha\", got \"fifo\""
        );
        let with_hyperband = spec.replace("kind = \"fifo\"", "kind = \"hyperband\"\nmax_t = 81");
        Spec::from_toml_str(&with_hyperband).unwrap().validate().unwrap();
    }

    #[test]
    fn resources_are_one_bundle_or_a_list() {
        let spec = Spec::from_toml_str(QUICK).unwrap();
        assert_eq!(spec.trial.resources, None);
        assert_eq!(spec.trial.resource_request(), ResourceRequest::default());
        let with = |resources: &str| QUICK.replace("stop_grace_s = 10", &format!("stop_grace_s = 10\n{resources}"));
        let spec = Spec::from_toml_str(&with(
            r#"resources = { cpu = 2, gpu = 0.5, memory = "8GiB", custom = { nvme = 1 } }"#,
        ))
        .unwrap();
        spec.validate().unwrap();
        let bundle = Bundle {
            cpu: 2.0,
            gpu: 0.5,
            memory: 8 << 30,
            custom: BTreeMap::from([("nvme".to_owned(), 1.0)]),
        };
        assert_eq!(spec.trial.resources, Some(Resources::One(bundle.clone())));
        assert_eq!(
            spec.trial.resource_request(),
            ResourceRequest {
                bundles: vec![bundle],
                placement: Placement::Pack,
            }
        );
        let json = serde_json::to_string(&spec).unwrap();
        assert!(
            json.contains(r#""resources":{"cpu":2.0,"gpu":0.5,"memory":"8GiB","custom":{"nvme":1.0}}"#),
            "{json}"
        );
        assert!(!json.contains("placement"), "{json}");
        assert_eq!(Spec::from_json_str(&json).unwrap(), spec);

        let spec =
            Spec::from_toml_str(&with("resources = [{ gpu = 1 }, { gpu = 1 }]\nplacement = \"spread\"")).unwrap();
        spec.validate().unwrap();
        let gpu = Bundle {
            gpu: 1.0,
            ..Bundle::default()
        };
        assert_eq!(
            spec.trial.resource_request(),
            ResourceRequest {
                bundles: vec![gpu.clone(), gpu],
                placement: Placement::Spread,
            }
        );
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains(r#""placement":"spread""#), "{json}");
        assert_eq!(Spec::from_json_str(&json).unwrap(), spec);

        let tables = QUICK.replace(
            "stop_grace_s = 10",
            "stop_grace_s = 10\n\n[[trial.resources]]\ncpu = 4\n\n[[trial.resources]]\nmemory = 1024",
        );
        let spec = Spec::from_toml_str(&tables).unwrap();
        assert_eq!(spec.trial.resource_request().bundles.len(), 2);
        assert_eq!(spec.trial.resource_request().bundles[1].memory, 1024);
    }

    #[test]
    fn bad_resources_are_named() {
        let with = |resources: &str| QUICK.replace("stop_grace_s = 10", &format!("stop_grace_s = 10\n{resources}"));
        let error = Spec::from_toml_str(&with("resources = { gpus = 1 }")).unwrap_err();
        assert!(
            error.contains("line 29")
                && error.contains("unknown field `gpus`, expected one of `cpu`, `gpu`, `memory`, `custom`"),
            "{error}"
        );
        let error = Spec::from_toml_str(&with("resources = [{ gpu = 1 }, { gpus = 1 }]")).unwrap_err();
        assert!(error.contains("unknown field `gpus`"), "{error}");
        let error = Spec::from_toml_str(&with("resources = { memory = \"8 gigs\" }")).unwrap_err();
        assert!(
            error.contains("invalid size \"8 gigs\": unknown unit \"gigs\""),
            "{error}"
        );
        let error = Spec::from_toml_str(&with("resources = 2")).unwrap_err();
        assert!(
            error.contains("a bundle such as { cpu = 2, gpu = 0.5 } or a list of bundles"),
            "{error}"
        );
        let error = Spec::from_toml_str(&with("placement = \"scatter\"")).unwrap_err();
        assert!(
            error.contains("unknown variant `scatter`, expected `pack` or `spread`"),
            "{error}"
        );

        let check = |resources: &str| {
            Spec::from_toml_str(&with(resources))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            check("resources = { gpu = 1.5 }"),
            "setting \"trial.resources\": gpu = 1.5: a fraction of a GPU must be below 1, and more than one GPU must be a whole number"
        );
        assert_eq!(
            check("resources = [{ gpu = 1 }, { cpu = -2 }]"),
            "setting \"trial.resources\": bundle 1: cpu = -2: must be a finite number, at least 0"
        );
        assert_eq!(
            check("resources = []"),
            "setting \"trial.resources\": is an empty list: give at least one bundle, or leave it out for { cpu = 1 }"
        );
    }

    #[test]
    fn command_program_and_placeholders_are_checked() {
        let mut spec = Spec::from_toml_str(QUICK).unwrap();
        spec.trial.workdir = Some(std::env::temp_dir());
        spec.trial.command = vec![
            "sh".into(),
            "-c".into(),
            "echo {lr} {optimizer.momentum} {config}".into(),
        ];
        spec.validate_command().unwrap();
        spec.trial.command = vec!["no-such-program-xyz".into()];
        assert_eq!(
            spec.validate_command().unwrap_err().to_string(),
            "setting \"trial.command\": program \"no-such-program-xyz\" not found on PATH, or not executable"
        );
        spec.trial.command = vec!["sh".into(), "{learning_rate}".into()];
        assert!(
            spec.validate_command()
                .unwrap_err()
                .to_string()
                .starts_with("setting \"trial.command\": placeholder {learning_rate} names no parameter")
        );
    }

    #[test]
    fn durability_defaults_to_process_and_is_stored_only_when_set() {
        let base = "metric = \"loss\"\nmode = \"min\"\n";
        let spec = Spec::from_toml_str(base).unwrap();
        assert_eq!(spec.durability, Durability::Process);
        assert!(!serde_json::to_string(&spec).unwrap().contains("durability"));
        let power = Spec::from_toml_str(&format!("{base}durability = \"power\"\n")).unwrap();
        assert_eq!(power.durability, Durability::Power);
        assert_eq!(
            Spec::from_json_str(&serde_json::to_string(&power).unwrap()).unwrap(),
            power
        );
        let error = Spec::from_toml_str(&format!("{base}durability = \"disk\"\n")).unwrap_err();
        assert!(
            error.contains("durability") && error.contains("expected `process` or `power`"),
            "{error}"
        );
    }

    #[test]
    fn the_tracking_table_is_read_and_checked_naming_the_setting() {
        let base = "metric = \"loss\"\nmode = \"min\"\n";
        let spec = Spec::from_toml_str(&format!(
            "{base}[tracking]\nmlflow_uri = \"http://127.0.0.1:5000\"\nexperiment = \"sweeps\"\n"
        ))
        .unwrap();
        spec.validate().unwrap();
        let tracking = spec.tracking.clone().unwrap();
        assert_eq!(tracking.experiment.as_deref(), Some("sweeps"));
        assert_eq!(tracking.resolve_uri_with(None).unwrap(), "http://127.0.0.1:5000");
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(Spec::from_json_str(&json).unwrap(), spec);

        let bad = Spec::from_toml_str(&format!("{base}[tracking]\nmlflow_uri = \"localhost:5000\"\n")).unwrap();
        let error = bad.validate().unwrap_err().to_string();
        assert!(
            error.starts_with("setting \"tracking.mlflow_uri\": \"localhost:5000\" is not an http"),
            "{error}"
        );
        assert!(bad.validate().unwrap_err().is_bad_input());

        let from_env = Tracking::default();
        assert_eq!(
            from_env.resolve_uri_with(Some("http://mlflow:5000/".into())).unwrap(),
            "http://mlflow:5000"
        );
        let error = from_env
            .resolve_uri_with(Some("sqlite:///x.db".into()))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("setting \"MLFLOW_TRACKING_URI\": "), "{error}");
        let error = from_env.resolve_uri_with(None).unwrap_err().to_string();
        assert!(
            error.starts_with("setting \"tracking.mlflow_uri\": is missing") && error.contains("MLFLOW_TRACKING_URI"),
            "{error}"
        );

        let error = Spec::from_toml_str(&format!("{base}[tracking]\nuri = \"http://x\"\n")).unwrap_err();
        assert!(error.contains("unknown field `uri`"), "{error}");
        let timeout = Spec::from_toml_str(&format!(
            "{base}[tracking]\nmlflow_uri = \"http://x:1\"\nflush_timeout_s = -1\n"
        ))
        .unwrap();
        assert_eq!(
            timeout.validate().unwrap_err().to_string(),
            "setting \"tracking.flush_timeout_s\": must be a number of seconds at least 0 and at most 315576000 (10 years), got -1"
        );
    }
}
