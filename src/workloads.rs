//! The shared workloads of `shared/workloads/README.md`, for examples, tests and benchmarks.

use crate::Space;
use crate::tune_core::space::Domain;
use crate::tune_core::value::Config;

/// The `learning-curve` search space: lr, batch, layers, dropout.
pub fn learning_curve_space() -> Space {
    Space::new()
        .with("lr", Domain::loguniform(1e-5, 1e-1).expect("valid"))
        .and_then(|s| s.with("batch", Domain::choice([16, 32, 64, 128, 256]).expect("valid")))
        .and_then(|s| s.with("layers", Domain::randint(1, 8).expect("valid")))
        .and_then(|s| s.with("dropout", Domain::uniform(0.0, 0.5).expect("valid")))
        .expect("valid names")
}

/// The parameters of one `learning-curve` configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearningCurve {
    /// Learning rate.
    pub lr: f64,
    /// Batch size.
    pub batch: u64,
    /// Number of layers.
    pub layers: u64,
    /// Dropout.
    pub dropout: f64,
}

impl LearningCurve {
    /// Reads the parameters from a sampled config.
    pub fn from_config(config: &Config) -> Option<Self> {
        Some(LearningCurve {
            lr: config.get("lr")?.as_f64()?,
            batch: config.get("batch")?.as_u64()?,
            layers: config.get("layers")?.as_u64()?,
            dropout: config.get("dropout")?.as_f64()?,
        })
    }

    /// The loss reported at step `t` (from 1).
    pub fn loss(&self, t: u64) -> f64 {
        let z = self.lr.log10();
        let g = (self.batch as f64).log2();
        let layers = self.layers as f64;
        let d = self.dropout;
        let base = 0.05
            + 0.30 * ((z + 3.5) / 1.5).powi(2)
            + 0.03 * (g - 5.0).powi(2)
            + 0.20 / layers
            + 0.40 * (d - 0.3).powi(2);
        let a = 0.3 + 0.2 * layers + 1.5 * d;
        let b = 0.8 + 1.0 / (1.0 + (-2.0 * (z + 3.0)).exp()) - 0.06 * layers;
        let seed =
            self.lr.to_bits() ^ self.dropout.to_bits().rotate_left(17) ^ (self.batch << 32) ^ (self.layers << 48) ^ t;
        let u = splitmix64(seed) as f64 / 2f64.powi(64);
        base + a * (t as f64).powf(-b) + 0.004 * (u - 0.5)
    }

    /// Virtual seconds one step costs.
    pub fn step_cost_s(&self) -> f64 {
        0.5 + 0.1 * self.layers as f64
    }
}

/// The splitmix64 mixing function.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_python_trial_of_the_quickstart() {
        // Values printed by examples/trials/learning_curve.py's loss() for the same arguments.
        for (lr, batch, layers, dropout, t, expected) in [
            (0.001, 32, 7, 0.3, 81, 0.15763263480873868),
            (0.05, 256, 1, 0.0, 3, 1.278765930544136),
            (1e-5, 16, 4, 0.45, 1, 2.2131169534679533),
        ] {
            let loss = LearningCurve {
                lr,
                batch,
                layers,
                dropout,
            }
            .loss(t);
            assert!((loss - expected).abs() < 1e-12, "{loss} != {expected}");
        }
    }

    #[test]
    fn deep_regularised_configs_win_in_the_end_but_start_slowly() {
        let deep = LearningCurve {
            lr: 10f64.powf(-3.5),
            batch: 32,
            layers: 7,
            dropout: 0.3,
        };
        let fast = LearningCurve {
            lr: 0.05,
            batch: 32,
            layers: 1,
            dropout: 0.0,
        };
        assert!(deep.loss(81) < fast.loss(81), "the deep config has the lower asymptote");
        assert!(deep.loss(1) > fast.loss(1), "the curves cross");
        let noise_free =
            0.05 + 0.20 / 7.0 + (0.3 + 1.4 + 0.45) * 81f64.powf(-(0.8 + 1.0 / (1.0 + 1.0f64.exp()) - 0.42));
        assert!((deep.loss(81) - noise_free).abs() <= 0.002 + 1e-12);
    }
}
