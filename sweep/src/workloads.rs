//! The shared workloads of `shared/workloads/README.md`, for examples, tests and benchmarks.

use tune_core::space::Domain;
use tune_core::space::Space;
use tune_core::value::Config;

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

/// The `q`-quantile of `sorted` (ascending, non-empty) with linear interpolation between order
/// statistics (numpy's default), as the benchmarks report medians and IQRs.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (position.floor() as usize, position.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (position - lo as f64)
}

/// The splitmix64 mixing function.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A single-fidelity test function of `shared/workloads/README.md`: its space, the function of
/// a config, and its known minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synthetic {
    /// Branin on x1 ∈ [−5, 10], x2 ∈ [0, 15].
    Branin,
    /// Hartmann6 on [0, 1]^6.
    Hartmann6,
    /// Rosenbrock in 4 dimensions on [−2.048, 2.048]^4.
    Rosenbrock4,
    /// Branin with a categorical `shift` and an integer `n`.
    MixedBranin,
}

impl Synthetic {
    /// Every function, in the order the README reports them.
    pub const ALL: [Synthetic; 4] = [
        Synthetic::Branin,
        Synthetic::Hartmann6,
        Synthetic::Rosenbrock4,
        Synthetic::MixedBranin,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Synthetic::Branin => "branin",
            Synthetic::Hartmann6 => "hartmann6",
            Synthetic::Rosenbrock4 => "rosenbrock4",
            Synthetic::MixedBranin => "mixed-branin",
        }
    }

    /// The search space.
    pub fn space(self) -> Space {
        let json = match self {
            Synthetic::Branin => serde_json::json!({"x1": {"uniform": [-5.0, 10.0]}, "x2": {"uniform": [0.0, 15.0]}}),
            Synthetic::Hartmann6 => serde_json::json!({
                "x1": {"uniform": [0.0, 1.0]}, "x2": {"uniform": [0.0, 1.0]}, "x3": {"uniform": [0.0, 1.0]},
                "x4": {"uniform": [0.0, 1.0]}, "x5": {"uniform": [0.0, 1.0]}, "x6": {"uniform": [0.0, 1.0]}
            }),
            Synthetic::Rosenbrock4 => serde_json::json!({
                "x1": {"uniform": [-2.048, 2.048]}, "x2": {"uniform": [-2.048, 2.048]},
                "x3": {"uniform": [-2.048, 2.048]}, "x4": {"uniform": [-2.048, 2.048]}
            }),
            Synthetic::MixedBranin => serde_json::json!({
                "x1": {"uniform": [-5.0, 10.0]}, "x2": {"uniform": [0.0, 15.0]},
                "shift": {"choice": ["none", "left", "right"]}, "n": {"randint": [1, 5]}
            }),
        };
        Space::from_json(&json).expect("a valid space")
    }

    /// The known minimum.
    pub fn minimum(self) -> f64 {
        match self {
            Synthetic::Branin | Synthetic::MixedBranin => 0.397887,
            Synthetic::Hartmann6 => -3.32237,
            Synthetic::Rosenbrock4 => 0.0,
        }
    }

    /// The function at `config` (NaN when a parameter is missing).
    pub fn value(self, config: &Config) -> f64 {
        let x = |name: &str| config.get(name).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        match self {
            Synthetic::Branin => branin(x("x1"), x("x2")),
            Synthetic::Hartmann6 => hartmann6(&[x("x1"), x("x2"), x("x3"), x("x4"), x("x5"), x("x6")]),
            Synthetic::Rosenbrock4 => {
                let v = [x("x1"), x("x2"), x("x3"), x("x4")];
                v.windows(2)
                    .map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2))
                    .sum()
            }
            Synthetic::MixedBranin => {
                let shift = match config.get("shift").and_then(|v| v.as_str()) {
                    Some("none") => 0.0,
                    Some("left") => 2.0,
                    Some("right") => 5.0,
                    _ => f64::NAN,
                };
                branin(x("x1"), x("x2")) + shift + 0.1 * (x("n") - 1.0)
            }
        }
    }
}

/// The Branin function.
pub fn branin(x1: f64, x2: f64) -> f64 {
    let pi = std::f64::consts::PI;
    let (b, c, t) = (5.1 / (4.0 * pi * pi), 5.0 / pi, 1.0 / (8.0 * pi));
    (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
}

/// The Hartmann6 function.
pub fn hartmann6(x: &[f64; 6]) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [1312.0, 1696.0, 5569.0, 124.0, 8283.0, 5886.0],
        [2329.0, 4135.0, 8307.0, 3736.0, 1004.0, 9991.0],
        [2348.0, 1451.0, 3522.0, 2883.0, 3047.0, 6650.0],
        [4047.0, 8828.0, 8732.0, 5743.0, 1091.0, 381.0],
    ];
    -(0..4)
        .map(|i| ALPHA[i] * (-(0..6).map(|j| A[i][j] * (x[j] - P[i][j] * 1e-4).powi(2)).sum::<f64>()).exp())
        .sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_functions_have_their_documented_minima() {
        let pi = std::f64::consts::PI;
        for (x1, x2) in [(-pi, 12.275), (pi, 2.275), (9.42478, 2.475)] {
            assert!((branin(x1, x2) - 0.397887).abs() < 1e-5);
        }
        let h = hartmann6(&[0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]);
        assert!((h - -3.32237).abs() < 1e-4, "{h}");
        let config = |json| serde_json::from_value::<Config>(json).unwrap();
        let ones = config(serde_json::json!({"x1": 1.0, "x2": 1.0, "x3": 1.0, "x4": 1.0}));
        assert_eq!(Synthetic::Rosenbrock4.value(&ones), 0.0);
        let mixed = config(serde_json::json!({"x1": pi, "x2": 2.275, "shift": "right", "n": 3}));
        assert!((Synthetic::MixedBranin.value(&mixed) - (0.397887 + 5.0 + 0.2)).abs() < 1e-5);
        for function in Synthetic::ALL {
            let mut rng = tune_core::rng::stream(1, "test");
            for _ in 0..100 {
                let value = function.value(&function.space().sample(&mut rng, &Default::default()));
                assert!(
                    value >= function.minimum() - 1e-5,
                    "{} below its minimum: {value}",
                    function.name()
                );
            }
        }
    }

    #[test]
    fn matches_the_python_trial_of_the_quickstart() {
        // The oracle is the independent implementation itself: examples/trials/learning_curve.py,
        // run here on configs spread over the whole space and on the ones of the quickstart.
        let mut rng = tune_core::rng::stream(11, "oracle");
        let mut cases: Vec<(f64, u64, u64, f64, u64)> =
            vec![(0.001, 32, 7, 0.3, 81), (0.05, 256, 1, 0.0, 3), (1e-5, 16, 4, 0.45, 1)];
        for _ in 0..200 {
            use rand::Rng;
            let lr = 10f64.powf(rng.random_range(-5.0..-1.0));
            let batch = [16, 32, 64, 128, 256][rng.random_range(0..5)];
            cases.push((
                lr,
                batch,
                rng.random_range(1..=8),
                rng.random_range(0.0..0.5),
                rng.random_range(1..=81),
            ));
        }
        let calls: Vec<String> = cases
            .iter()
            .map(|(lr, batch, layers, dropout, t)| {
                format!("print(repr(lc.loss({lr:?}, {batch}, {layers}, {dropout:?}, {t})))")
            })
            .collect();
        let trials = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/trials");
        let program = format!(
            "import sys\nsys.path.insert(0, {trials:?})\nimport learning_curve as lc\n{}",
            calls.join("\n")
        );
        let output = std::process::Command::new("python3")
            .args(["-c", &program])
            .output()
            .expect("python3 runs (the trial script's interpreter)");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let expected: Vec<f64> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| line.parse().unwrap())
            .collect();
        assert_eq!(expected.len(), cases.len());
        for ((lr, batch, layers, dropout, t), expected) in cases.into_iter().zip(expected) {
            let loss = LearningCurve {
                lr,
                batch,
                layers,
                dropout,
            }
            .loss(t);
            assert!(
                (loss - expected).abs() < 1e-12,
                "lr={lr} batch={batch} layers={layers} dropout={dropout} t={t}: {loss} != {expected}"
            );
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
