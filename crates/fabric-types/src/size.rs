//! Human sizes (`64KiB`, `16MiB`) and durations (`1500ms`, `2s`, `1m`) as the CLI and the
//! configuration accept them.

use std::time::Duration;

/// Why a size or a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {text:?}: expected {expected}")]
pub struct ParseSizeError {
    what: &'static str,
    text: String,
    expected: &'static str,
}

const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("KB", 1000),
    ("MB", 1000 * 1000),
    ("GB", 1000 * 1000 * 1000),
];

const DURATION_UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)];

fn split_number(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number = text[..end].parse().ok()?;
    Some((number, text[end..].trim()))
}

/// Reads a byte size: `65536`, `64KiB`, `16MiB`, `1GiB` (also `KB`, `MB`, `GB`).
pub fn parse_size(text: &str) -> Result<u64, ParseSizeError> {
    let err = || ParseSizeError {
        what: "size",
        text: text.to_string(),
        expected: "a whole number of bytes, optionally with B, KiB, MiB, GiB, KB, MB or GB",
    };
    let (number, unit) = split_number(text).ok_or_else(err)?;
    let (_, factor) = SIZE_UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .ok_or_else(err)?;
    number.checked_mul(*factor).ok_or_else(err)
}

/// Reads a duration: `1500ms`, `2s`, `1m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, ParseSizeError> {
    let err = || ParseSizeError {
        what: "duration",
        text: text.to_string(),
        expected: "a whole number followed by ms, s, m or h",
    };
    let (number, unit) = split_number(text).ok_or_else(err)?;
    let (_, factor) = DURATION_UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .ok_or_else(err)?;
    Ok(Duration::from_millis(
        number.checked_mul(*factor).ok_or_else(err)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
