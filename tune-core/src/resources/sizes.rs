//! Sizes in bytes as people write them: [`parse_size`] reads `"64GiB"` or `"8GB"`,
//! [`format_size`] writes the shortest exact text back, and [`human_size`] rounds for display.

/// The units of sizes: binary ones (powers of 1024) first, then SI ones (powers of 1000), each
/// kind largest first, which is the order [`format_size`] prefers them in. [`parse_size`] also
/// reads each prefixed unit without its final `B` (`Gi`, `G`).
const UNITS: [(&str, u64); 13] = [
    ("EiB", 1 << 60),
    ("PiB", 1 << 50),
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("EB", 1_000_000_000_000_000_000),
    ("PB", 1_000_000_000_000_000),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1000),
    ("B", 1),
];

/// Why a size does not parse; every message quotes the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The text is empty (or only whitespace).
    #[error("invalid size {text:?}: it is empty")]
    Empty {
        /// The text as given.
        text: String,
    },
    /// The text does not start with a number.
    #[error("invalid size {text:?}: expected a number of bytes with an optional unit, such as \"512MiB\" or \"8GB\"")]
    NotANumber {
        /// The text as given.
        text: String,
    },
    /// The unit is none of [`UNITS`].
    #[error(
        "invalid size {text:?}: unknown unit {unit:?} (known: B, KB, KiB, MB, MiB, GB, GiB, TB, TiB, PB, PiB, EB, EiB)"
    )]
    UnknownUnit {
        /// The text as given.
        text: String,
        /// The unit that is not known.
        unit: String,
    },
    /// The size is more than `u64::MAX` bytes.
    #[error("invalid size {text:?}: too large (at most {max} bytes)", max = u64::MAX)]
    TooLarge {
        /// The text as given.
        text: String,
    },
    /// A fraction of a byte, written without a unit.
    #[error("invalid size {text:?}: a number of bytes must be whole (give a unit for fractions, such as \"1.5GiB\")")]
    FractionalBytes {
        /// The text as given.
        text: String,
    },
}

/// The multiplier of a unit, compared case-insensitively; `None` for an unknown unit.
fn unit_multiplier(unit: &str) -> Option<u64> {
    UNITS
        .iter()
        .find(|(name, _)| {
            let short = name.strip_suffix('B').filter(|short| !short.is_empty());
            unit.eq_ignore_ascii_case(name) || short.is_some_and(|short| unit.eq_ignore_ascii_case(short))
        })
        .map(|(_, multiplier)| *multiplier)
}

/// Parses a size in bytes: a number with an optional unit, such as `"64GiB"`, `"512MiB"`,
/// `"1.5GiB"`, `"8GB"` or `"4096"`.
///
/// As in Kubernetes, `K`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB` (and `P`, `E`) are powers of 1000
/// and `Ki`/`KiB`, `Mi`/`MiB`, `Gi`/`GiB`, `Ti`/`TiB` (and `Pi`, `Ei`) powers of 1024; `B` or no
/// unit means bytes. Units are case-insensitive and may follow a space. A fraction is rounded to
/// the nearest byte; a bare number must be whole.
///
/// ```
/// use tune_core::resources::parse_size;
///
/// assert_eq!(parse_size("1.5GiB"), Ok(1_610_612_736));
/// assert_eq!(parse_size("8GB"), Ok(8_000_000_000));
/// assert!(parse_size("8 gigs").unwrap_err().to_string().contains("unknown unit \"gigs\""));
/// ```
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(SizeError::Empty { text: text.to_owned() });
    }
    let number_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(SizeError::NotANumber { text: text.to_owned() });
    }
    let unit = unit.trim_start();
    let multiplier = if unit.is_empty() {
        1
    } else {
        unit_multiplier(unit).ok_or_else(|| SizeError::UnknownUnit {
            text: text.to_owned(),
            unit: unit.to_owned(),
        })?
    };
    let too_large = || SizeError::TooLarge { text: text.to_owned() };
    let whole_bytes = if whole.is_empty() {
        0
    } else {
        whole
            .parse::<u128>()
            .map_err(|_| too_large())?
            .checked_mul(u128::from(multiplier))
            .ok_or_else(too_large)?
    };
    // Beyond 18 digits a fraction changes nothing once rounded to bytes (units are below 2^61).
    let fraction = &fraction[..fraction.len().min(18)];
    let fraction_bytes = if fraction.trim_end_matches('0').is_empty() {
        0
    } else {
        if multiplier == 1 {
            return Err(SizeError::FractionalBytes { text: text.to_owned() });
        }
        let scale = 10u128.pow(fraction.len() as u32);
        let numerator: u128 = fraction.parse().expect("at most 18 ASCII digits");
        (numerator * u128::from(multiplier) + scale / 2) / scale
    };
    u64::try_from(whole_bytes + fraction_bytes).map_err(|_| too_large())
}

/// A size for people, rounded to one decimal in the largest binary unit it reaches: `79.6GiB`,
/// `64GiB`, `512MiB`, `100B`. ([`format_size`] is exact and so can be long.)
pub fn human_size(bytes: u64) -> String {
    let units: Vec<(&str, u64)> = UNITS
        .into_iter()
        .filter(|(unit, _)| unit.ends_with("iB") || *unit == "B")
        .collect();
    let Some(position) = units.iter().position(|(_, size)| bytes >= *size) else {
        return "0B".to_owned();
    };
    let tenths = |(_, size): (&str, u64)| (bytes as f64 / size as f64 * 10.0).round();
    // 1023.96MiB rounds to 1024MiB: say 1GiB instead.
    let position = if position > 0 && tenths(units[position]) >= 10240.0 {
        position - 1
    } else {
        position
    };
    let (unit, _) = units[position];
    let tenths = tenths(units[position]) as u64;
    match tenths % 10 {
        0 => format!("{}{unit}", tenths / 10),
        decimal => format!("{}.{decimal}{unit}", tenths / 10),
    }
}

/// Writes a size with the unit that gives the shortest exact text: `"8GiB"`, `"1.5GiB"`,
/// `"512MiB"`, `"8GB"`, `"100B"`. Binary units win ties; [`parse_size`] reads every output
/// back to the same number of bytes.
pub fn format_size(bytes: u64) -> String {
    let mut best = format!("{bytes}B");
    // `B` itself never beats the plain number of bytes it starts from.
    for (unit, size) in UNITS.into_iter().filter(|(unit, _)| *unit != "B") {
        if bytes < size {
            continue;
        }
        // Exact to three decimals, so the text reads back to the same bytes.
        let thousandths = u128::from(bytes) * 1000;
        if thousandths % u128::from(size) != 0 {
            continue;
        }
        let thousandths = thousandths / u128::from(size);
        let text = format!("{}{}{unit}", thousandths / 1000, decimals(thousandths % 1000));
        if text.len() < best.len() {
            best = text;
        }
    }
    best
}

/// `.5`, `.25`, `.125` for thousandths 500, 250, 125; empty for 0.
fn decimals(thousandths: u128) -> String {
    if thousandths == 0 {
        return String::new();
    }
    format!(".{thousandths:03}").trim_end_matches('0').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::GIB;
    use proptest::prelude::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("64GiB"), Ok(64 * GIB));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(1_610_612_736));
        assert_eq!(parse_size("8GB"), Ok(8_000_000_000));
        assert_eq!(parse_size("8G"), Ok(8_000_000_000));
        assert_eq!(parse_size("8Gi"), Ok(8 * GIB));
        assert_eq!(parse_size("8 gib"), Ok(8 * GIB));
        assert_eq!(parse_size("1K"), Ok(1000));
        assert_eq!(parse_size("1kib"), Ok(1024));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size(".5KiB"), Ok(512));
        assert_eq!(parse_size("1.0"), Ok(1));
        assert_eq!(parse_size("0.3KiB"), Ok(307));
        assert_eq!(
            error("16EiB"),
            "invalid size \"16EiB\": too large (at most 18446744073709551615 bytes)"
        );
    }

    /// The message `parse_size` fails with.
    fn error(text: &str) -> String {
        parse_size(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_sizes_are_named() {
        assert_eq!(error(""), "invalid size \"\": it is empty");
        assert_eq!(
            error("abc"),
            "invalid size \"abc\": expected a number of bytes with an optional unit, such as \"512MiB\" or \"8GB\""
        );
        assert_eq!(
            error("-1GiB"),
            "invalid size \"-1GiB\": expected a number of bytes with an optional unit, such as \"512MiB\" or \"8GB\""
        );
        assert!(error("1.2.3GiB").starts_with("invalid size \"1.2.3GiB\": expected a number"));
        assert_eq!(
            error("8XB"),
            "invalid size \"8XB\": unknown unit \"XB\" (known: B, KB, KiB, MB, MiB, GB, GiB, TB, TiB, PB, PiB, EB, EiB)"
        );
        assert_eq!(
            error("1.5"),
            "invalid size \"1.5\": a number of bytes must be whole (give a unit for fractions, such as \"1.5GiB\")"
        );
        assert!(error("99999999999999999999999999999999999999999").contains("too large"));
    }

    #[test]
    fn sizes_format_with_the_shortest_exact_unit() {
        assert_eq!(format_size(8 * GIB), "8GiB");
        assert_eq!(format_size(1_610_612_736), "1.5GiB");
        assert_eq!(format_size(512 << 20), "512MiB");
        assert_eq!(format_size(100), "100B");
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(8_000_000_000), "8GB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(3 << 19), "1.5MiB");
        assert_eq!(format_size(1000), "1KB");
        assert_eq!(format_size(1023), "1023B");
        assert_eq!(format_size(u64::MAX), "18446744073709551615B");
    }

    proptest! {
        #[test]
        fn sizes_round_trip(bytes in any::<u64>(), gib in 0u64..1 << 20, half in any::<bool>()) {
            prop_assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
            let exact = gib * GIB + if half { GIB / 2 } else { 0 };
            prop_assert_eq!(parse_size(&format_size(exact)), Ok(exact));
            let plain = format!("{exact}B");
            prop_assert!(format_size(exact).len() <= plain.len());
        }
    }
}
