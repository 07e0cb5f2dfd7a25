//! Proptest strategies shared by the crates' tests (feature `testing`; always on in tune-core's
//! own tests).

use proptest::prelude::*;

use crate::space::Domain;

/// Any valid numeric domain: every float and integer kind, with bounds from tiny to huge.
pub fn numeric_domain() -> impl Strategy<Value = Domain> {
    let finite = -1e6f64..1e6;
    prop_oneof![
        (finite.clone(), 1e-6f64..1e6).prop_map(|(low, width)| Domain::Uniform { low, high: low + width }),
        (finite.clone(), 1e-3f64..1e6, 1e-3f64..10.0).prop_map(|(low, width, q)| Domain::QUniform {
            low,
            high: low + width.max(q),
            q
        }),
        (1e-12f64..1e3, 1.0001f64..1e6).prop_map(|(low, ratio)| Domain::LogUniform { low, high: low * ratio }),
        (1e-3f64..1e3, 2.0f64..1e3, 1e-3f64..1.0).prop_map(|(low, ratio, q)| Domain::QLogUniform {
            low,
            high: low * ratio + q,
            q
        }),
        (-1_000_000i64..1_000_000, 1i64..1_000_000).prop_map(|(low, width)| Domain::RandInt { low, high: low + width }),
        (-1_000i64..1_000, 1i64..50, 1i64..5).prop_map(|(low, q, n)| Domain::QRandInt {
            low,
            high: low + n * q,
            q
        }),
        (1i64..1_000, 1i64..100_000).prop_map(|(low, width)| Domain::LogRandInt { low, high: low + width }),
        (finite, 1e-6f64..1e3).prop_map(|(mu, sigma)| Domain::Normal { mu, sigma }),
    ]
}
