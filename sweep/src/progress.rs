//! The progress display: a bar on a terminal, a plain line every few seconds elsewhere.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tune_core::controller::Progress;

/// How often the plain (non-terminal) display prints a line.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// Shows a sweep's progress: done / running / stopped / errored and the best so far.
pub struct Display {
    bar: Option<ProgressBar>,
    metric: String,
    last_plain: Option<Instant>,
    last_line: String,
}

impl Display {
    /// A display for a sweep of `total` trials (`None`: unbounded).
    pub fn new(metric: &str, total: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total {
                Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(8)),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8)),
            };
            let template = if total.is_some() {
                "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}"
            } else {
                "{elapsed_precise} {spinner} {pos} done {msg}"
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Display {
            bar,
            metric: metric.to_owned(),
            last_plain: None,
            last_line: String::new(),
        }
    }

    /// The one-line summary of `progress`.
    pub fn line(&self, progress: &Progress) -> String {
        let best = progress.best.map_or_else(
            || "no result yet".to_owned(),
            |(trial, value, step)| format!("best {}={value:.6} ({trial} step {step})", self.metric),
        );
        format!(
            "{} running · {} completed · {} stopped · {} errored · {best}",
            progress.running,
            progress.completed,
            progress.stopped + progress.sweep_ended,
            progress.errored
        )
    }

    /// Updates the display.
    pub fn update(&mut self, progress: &Progress) {
        let line = self.line(progress);
        match &self.bar {
            Some(bar) => {
                bar.set_position(progress.done());
                if line != self.last_line {
                    bar.set_message(line.clone());
                }
            }
            None => {
                let due = self.last_plain.is_none_or(|at| at.elapsed() >= PLAIN_EVERY);
                if due && line != self.last_line {
                    let total = progress.max_trials.map_or_else(String::new, |t| format!("/{t}"));
                    eprintln!("[rung] {}{total} done · {line}", progress.done());
                    self.last_plain = Some(Instant::now());
                }
            }
        }
        self.last_line = line;
    }

    /// An observer closure for the driver.
    pub fn into_observer(mut self) -> impl FnMut(&Progress) + Send {
        move |progress: &Progress| self.update(progress)
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
