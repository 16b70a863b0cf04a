//! Sizes of files as people write and read them: `--max-file-size 4GiB` parsed, and `2.3 MiB`,
//! `850 KiB`, `12 B` shown in offers, progress and `/transfers`. Binary units (KiB, MiB, …)
//! when shown, as `ls -lh` and most file managers on Linux do.

use std::fmt;

/// Units a size may be written with: the name (compared without regard to case) and bytes.
/// `K`, `M`, `G`, `T` alone are binary, as in `dd`, `sort -S` and `du`; `KB`, `MB`, … decimal.
const UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("k", 1 << 10),
    ("kib", 1 << 10),
    ("kb", 1_000),
    ("m", 1 << 20),
    ("mib", 1 << 20),
    ("mb", 1_000_000),
    ("g", 1 << 30),
    ("gib", 1 << 30),
    ("gb", 1_000_000_000),
    ("t", 1 << 40),
    ("tib", 1 << 40),
    ("tb", 1_000_000_000_000),
];

/// A size that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a size: expected bytes or a number with a unit (500MiB, 4GiB, 1.5GB), or 0 or none for no limit"
)]
pub struct NotASize(pub String);

/// The largest file this client accepts (`--max-file-size`); `None`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSizeLimit(pub Option<u64>);

impl FileSizeLimit {
    /// Whether a file of `size` bytes is within the limit.
    pub fn allows(&self, size: u64) -> bool {
        self.0.is_none_or(|max| size <= max)
    }
}

impl fmt::Display for FileSizeLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(max) => write!(f, "{}", Bytes(max)),
            None => f.write_str("none"),
        }
    }
}

/// Parses `--max-file-size`: `0` or `none` for no limit, else a size ([`parse_size`]).
///
/// # Errors
/// [`NotASize`], quoting the text.
pub fn parse_limit(text: &str) -> Result<FileSizeLimit, NotASize> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(FileSizeLimit(None));
    }
    match parse_size(text)? {
        0 => Ok(FileSizeLimit(None)),
        max => Ok(FileSizeLimit(Some(max))),
    }
}

/// Parses a size: a number (decimals allowed with a unit) and an optional unit of [`UNITS`].
///
/// # Errors
/// [`NotASize`], quoting the text.
pub fn parse_size(text: &str) -> Result<u64, NotASize> {
    let wrong = || NotASize(text.to_string());
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim();
    let multiplier = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
            .map(|(_, bytes)| *bytes)
            .ok_or_else(wrong)?
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier).ok_or_else(wrong);
    }
    let value: f64 = number.parse().map_err(|_| wrong())?;
    let bytes = (value * multiplier as f64).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(wrong());
    }
    Ok(bytes as u64)
}

/// A number of bytes as a person reads it: `12 B`, `850 KiB`, `2.3 MiB`, `4.0 GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit < NAMES.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        if value >= 100.0 {
            write!(f, "{value:.0} {}", NAMES[unit])
        } else {
            write!(f, "{value:.1} {}", NAMES[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("500 MiB"), Ok(500 << 20));
        assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
        assert!(parse_size("four").is_err());
        assert!(parse_size("4 GiBs").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn zero_or_none_is_no_limit() {
        assert_eq!(parse_limit("0"), Ok(FileSizeLimit(None)));
        assert_eq!(parse_limit("None"), Ok(FileSizeLimit(None)));
        assert!(FileSizeLimit(None).allows(u64::MAX));
        let four = parse_limit("4GiB").unwrap();
        assert!(four.allows(4 << 30));
        assert!(!four.allows((4 << 30) + 1));
        assert_eq!(four.to_string(), "4.0 GiB");
    }

    #[test]
    fn bytes_show_in_binary_units() {
        assert_eq!(Bytes(12).to_string(), "12 B");
        assert_eq!(Bytes(2_411_724).to_string(), "2.3 MiB");
        assert_eq!(Bytes(850 * 1024).to_string(), "850 KiB");
        assert_eq!(Bytes(1_000_000_000_000).to_string(), "931 GiB");
    }
}
