//! The Rust API in one file: a sweep of the learning-curve workload with in-process trials.
//!
//! Run: `cargo run --release --example quickstart`
//!
//! Each trial is an async closure. It reads its config, "trains" for up to 27 steps, writes a
//! checkpoint every 9 steps and reports the loss; `report` returns the scheduler's decision.
//! Everything is kept in a SQLite store, so `rung status --db <store>` works on it too.

use std::time::Duration;

use rung::workloads::{LearningCurve, learning_curve_space};
use rung::{Decision, Mode, Tuner};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let store = std::env::temp_dir().join("rung-quickstart-example.db");
    let _ = std::fs::remove_file(&store);

    let tuner = Tuner::builder()
        .name("quickstart-rust")
        .space(learning_curve_space())
        .metric("loss", Mode::Min)
        .num_samples(40)
        .max_concurrent(8)
        .seed(42)
        .checkpoint_keep(1)
        .store(&store)
        .build()?;

    let result = tuner
        .run(|mut trial| async move {
            let curve = LearningCurve::from_config(trial.config())
                .ok_or_else(|| anyhow::anyhow!("config lacks a parameter"))?;
            // A restarted trial continues after the step of its checkpoint.
            let start = match trial.restore() {
                Some((step, _dir)) => step + 1,
                None => 1,
            };
            for step in start..=27 {
                tokio::time::sleep(Duration::from_millis(2)).await; // stands in for training
                let metrics = [("loss", curve.loss(step))];
                let decision = if step % 9 == 0 {
                    std::fs::write(trial.checkpoint_dir()?.join("state.txt"), step.to_string())?;
                    trial.report_checkpoint(step, metrics).await
                } else {
                    trial.report(step, metrics).await
                };
                if decision != Decision::Continue {
                    break;
                }
            }
            anyhow::Ok(())
        })
        .await?;

    let best = result.best().expect("some trial reported");
    let (loss, step) = best.best.expect("the best trial has a value");
    println!(
        "{} trials in {:.2}s; best {} loss={loss:.4} at step {step}",
        result.trials.len(),
        result.elapsed.as_secs_f64(),
        best.id
    );
    println!("config: {}", best.config.to_json());
    println!("store: {}", store.display());
    Ok(())
}
