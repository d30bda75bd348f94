//! Go-style durations as used in `refreshInterval` and `rollout.timeout`.

use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("duration must not be empty")]
    Empty,
    #[error(
        "invalid duration {0:?}: expected whole numbers with units h, m, s or ms, such as 1h, 30s or 1h30m (or 0)"
    )]
    Invalid(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses `1h`, `30s`, `1h30m`, `250ms` or `0`. Units may repeat in any order (as Go
/// allows); fractions and negative values are refused because a refresh interval or timeout
/// has no use for them and a typo should not turn into a surprising value.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    if input == "0" {
        return Ok(Duration::ZERO);
    }
    let invalid = || DurationError::Invalid(input.to_owned());
    let overflow = || DurationError::Overflow(input.to_owned());
    let mut total = Duration::ZERO;
    let mut rest = input;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        if digits_end == 0 {
            return Err(invalid());
        }
        let amount: u64 = rest[..digits_end].parse().map_err(|_| overflow())?;
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_millis: u64 = match &rest[..unit_end] {
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1_000,
            "ms" => 1,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_end..];
        let millis = amount.checked_mul(unit_millis).ok_or_else(overflow)?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(overflow)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        let cases = [
            ("0", 0),
            ("1h", 3_600_000),
            ("30s", 30_000),
            ("1h30m", 5_400_000),
            ("90m", 5_400_000),
            ("250ms", 250),
            ("1m30s500ms", 90_500),
            ("0s", 0),
        ];
        for (input, millis) in cases {
            assert_eq!(
                parse_duration(input),
                Ok(Duration::from_millis(millis)),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_malformed_durations() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        for bad in [
            "1", "h", "1d", "1.5h", "-1h", "1h ", " 1h", "1H", "1hm", "ms", "00",
        ] {
            assert!(
                matches!(parse_duration(bad), Err(DurationError::Invalid(_))),
                "{bad:?} -> {:?}",
                parse_duration(bad)
            );
        }
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse_duration("9999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }
}
