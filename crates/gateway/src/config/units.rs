//! The human-friendly units of the config file: durations ("500ms", "2s", "1m", "1h")
//! and byte sizes ("64MiB", "512KiB", "1GB", or a plain integer of bytes).
//!
//! Written by hand because each is a dozen lines and the error messages can say exactly
//! which units are accepted.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// Parses a duration: a non-negative integer followed by `ms`, `s`, `m` or `h`.
///
/// A unit is required: a bare `30` could mean seconds or milliseconds depending on who
/// wrote the file, and guessing wrong by a factor of 1000 is worse than an error.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = split_number(text);
    if number.is_empty() {
        return Err(format!(
            "invalid duration {text:?}: expected a number and a unit (ms, s, m, h), like \"2s\""
        ));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
    let millis_per_unit: u64 = match unit.trim_start() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => {
            return Err(format!(
                "invalid duration {text:?}: a unit is required (ms, s, m, h), like \"{text}s\""
            ))
        }
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?} (expected ms, s, m or h)"
            ))
        }
    };
    value
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid duration {text:?}: too large"))
}

/// Parses a byte size: a non-negative integer, optionally followed by `B`, `KB`, `MB`,
/// `GB` (powers of 1000) or `KiB`, `MiB`, `GiB` (powers of 1024). Units are matched
/// without regard to case, since "64mb" has only one sensible reading.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = split_number(text);
    if number.is_empty() {
        return Err(format!(
            "invalid size {text:?}: expected a number of bytes, optionally with a unit (KiB, MiB, GiB, KB, MB, GB), like \"64MiB\""
        ));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: number too large"))?;
    let unit = unit.trim_start();
    let multiplier: u64 = if unit.is_empty() || unit.eq_ignore_ascii_case("b") {
        1
    } else if unit.eq_ignore_ascii_case("kb") {
        1_000
    } else if unit.eq_ignore_ascii_case("mb") {
        1_000_000
    } else if unit.eq_ignore_ascii_case("gb") {
        1_000_000_000
    } else if unit.eq_ignore_ascii_case("kib") {
        1 << 10
    } else if unit.eq_ignore_ascii_case("mib") {
        1 << 20
    } else if unit.eq_ignore_ascii_case("gib") {
        1 << 30
    } else {
        return Err(format!(
            "invalid size {text:?}: unknown unit {unit:?} (expected B, KB, MB, GB, KiB, MiB or GiB)"
        ));
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("invalid size {text:?}: too large"))
}

/// Splits leading ASCII digits from the rest.
fn split_number(text: &str) -> (&str, &str) {
    let end = text
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(end)
}

/// A duration as written in the config file; see [`parse_duration`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string like \"500ms\", \"2s\", \"1m\" or \"1h\"")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(HumanDuration).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(DurationVisitor)
    }
}

/// A byte size as written in the config file; see [`parse_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"64MiB\" or an integer number of bytes")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_size(v).map(ByteSize).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_each_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 75 s "), Ok(Duration::from_secs(75)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_require_a_known_unit() {
        assert!(parse_duration("30")
            .unwrap_err()
            .contains("unit is required"));
        assert!(parse_duration("3d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("2S").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1.5s").is_err());
    }

    #[test]
    fn durations_reject_overflow_instead_of_wrapping() {
        assert!(parse_duration("18446744073709551615h").is_err());
        assert!(parse_duration("99999999999999999999999s").is_err());
    }

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("2kb"), Ok(2_000));
        assert_eq!(parse_size("10 MB"), Ok(10_000_000));
        assert_eq!(parse_size("100B"), Ok(100));
    }

    #[test]
    fn sizes_without_unit_are_bytes() {
        assert_eq!(parse_size("4096"), Ok(4096));
    }

    #[test]
    fn sizes_reject_unknown_units_and_overflow() {
        assert!(parse_size("64 furlongs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[derive(serde::Deserialize)]
    struct Units {
        size: ByteSize,
        wait: HumanDuration,
    }

    #[test]
    fn units_deserialize_from_toml_strings_and_integers() {
        let parsed: Units = toml::from_str("size = 1024\nwait = \"2s\"").unwrap();
        assert_eq!(parsed.size, ByteSize(1024));
        assert_eq!(parsed.wait, HumanDuration(Duration::from_secs(2)));
        let parsed: Units = toml::from_str("size = \"1KiB\"\nwait = \"5ms\"").unwrap();
        assert_eq!(parsed.size, ByteSize(1024));
    }

    #[test]
    fn unit_errors_point_at_the_value() {
        let text = "size = -5\nwait = \"2s\"";
        let err = toml::from_str::<Units>(text).err().unwrap();
        assert_eq!(&text[err.span().unwrap()], "-5");
        let text = "size = 5\nwait = 30";
        let err = toml::from_str::<Units>(text).err().unwrap();
        assert_eq!(&text[err.span().unwrap()], "30");
    }
}
