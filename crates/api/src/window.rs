//! Rollout windows (`spec.rollout.windows`): cron schedules, in a time zone, of the moments a
//! window opens, each open for its `duration`. Targets move only while one is open.
//!
//! Schedules are read by croner (five fields, or six with leading seconds; Vixie-cron
//! semantics with its extensions such as `L` and `#`) on jiff's zoned times, so a window at
//! 09:00 Europe/Berlin stays at 09:00 across daylight-saving changes.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};

use crate::duration::parse_duration;
use crate::secretsync::RolloutWindow;

/// A parsed, valid window.
#[derive(Clone, Debug)]
pub struct Window {
    cron: Cron,
    duration: SignedDuration,
    time_zone: TimeZone,
}

/// Where a moment falls among a spec's windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opening {
    /// A window is open until this moment.
    Open { until: Timestamp },
    /// All are closed; the next one opens then (`None`: no schedule ever matches again).
    Closed { opens: Option<Timestamp> },
}

impl Window {
    /// Parses one window; `Err` is a sentence without the field name.
    pub fn parse(window: &RolloutWindow) -> Result<Window, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(&window.schedule)
            .map_err(|e| {
                format!(
                    "schedule {:?} is not a cron schedule (five fields, or six with seconds first): {e}",
                    window.schedule
                )
            })?;
        let duration = match parse_duration(&window.duration) {
            Ok(d) if d.is_zero() => return Err("duration must be greater than 0".into()),
            Ok(d) => SignedDuration::try_from(d)
                .map_err(|_| format!("duration {:?} is too large", window.duration))?,
            Err(e) => return Err(format!("duration: {e}")),
        };
        let time_zone = match window.time_zone.as_deref() {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| {
                format!("timeZone {name:?} is not an IANA time zone (such as Europe/Berlin or UTC)")
            })?,
        };
        // A schedule no date matches (February 30th) would keep every rollout waiting for
        // ever; croner gives up on it within its search limit.
        let reference = jiff::civil::date(2001, 1, 1)
            .to_zoned(time_zone.clone())
            .map_err(|e| format!("timeZone: {e}"))?;
        if cron.find_next_occurrence(&reference, false).is_err() {
            return Err(format!(
                "schedule {:?} never fires: no date matches it",
                window.schedule
            ));
        }
        Ok(Window {
            cron,
            duration,
            time_zone,
        })
    }

    /// When this window is open at `now`, the moment it closes.
    fn open_until(&self, now: &Zoned) -> Option<Timestamp> {
        let start = self.cron.find_previous_occurrence(now, true).ok()?;
        let end = start.timestamp().checked_add(self.duration).ok()?;
        (end > now.timestamp()).then_some(end)
    }

    fn next_start(&self, now: &Zoned) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(now, false)
            .ok()
            .map(|z| z.timestamp())
    }
}

/// Whether any of `windows` is open at `now` (until the latest end among those open), or
/// else when the earliest next one opens. No windows: always open.
pub fn opening(windows: &[Window], now: Timestamp) -> Opening {
    if windows.is_empty() {
        return Opening::Open {
            until: Timestamp::MAX,
        };
    }
    let mut until: Option<Timestamp> = None;
    let mut opens: Option<Timestamp> = None;
    for window in windows {
        let local = now.to_zoned(window.time_zone.clone());
        if let Some(end) = window.open_until(&local) {
            until = until.max(Some(end));
        } else if let Some(start) = window.next_start(&local) {
            opens = Some(opens.map_or(start, |o| o.min(start)));
        }
    }
    match until {
        Some(until) => Opening::Open { until },
        None => Opening::Closed { opens },
    }
}

/// Parses every window of a spec, or says what is wrong with each bad one.
pub fn parse_all(windows: &[RolloutWindow]) -> Result<Vec<Window>, Vec<String>> {
    let mut parsed = Vec::new();
    let mut problems = Vec::new();
    for (i, window) in windows.iter().enumerate() {
        match Window::parse(window) {
            Ok(w) => parsed.push(w),
            Err(e) => problems.push(format!("spec.rollout.windows[{i}]: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(schedule: &str, duration: &str, time_zone: Option<&str>) -> RolloutWindow {
        RolloutWindow {
            schedule: schedule.into(),
            duration: duration.into(),
            time_zone: time_zone.map(Into::into),
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn weekday_office_hours_in_berlin() {
        let w = parse_all(&[window("0 9 * * 1-5", "8h", Some("Europe/Berlin"))]).unwrap();
        // Monday 2026-11-23, 09:00 CET is 08:00 UTC.
        let table = [
            (
                "2026-11-23T07:59:59Z",
                Opening::Closed {
                    opens: Some(at("2026-11-23T08:00:00Z")),
                },
            ),
            (
                "2026-11-23T08:00:00Z",
                Opening::Open {
                    until: at("2026-11-23T16:00:00Z"),
                },
            ),
            (
                "2026-11-23T15:59:59Z",
                Opening::Open {
                    until: at("2026-11-23T16:00:00Z"),
                },
            ),
            (
                // Friday evening: closed until Monday.
                "2026-11-27T16:00:00Z",
                Opening::Closed {
                    opens: Some(at("2026-11-30T08:00:00Z")),
                },
            ),
            (
                // Summer time: 09:00 CEST is 07:00 UTC.
                "2026-07-01T07:30:00Z",
                Opening::Open {
                    until: at("2026-07-01T15:00:00Z"),
                },
            ),
        ];
        for (now, expected) in table {
            assert_eq!(opening(&w, at(now)), expected, "{now}");
        }
    }

    #[test]
    fn overlapping_windows_and_seconds() {
        let w = parse_all(&[
            window("0 0 * * *", "1h", None),
            window("30 30 0 * * *", "2h", Some("UTC")),
        ])
        .unwrap();
        assert_eq!(
            opening(&w, at("2026-11-23T00:45:00Z")),
            Opening::Open {
                until: at("2026-11-23T02:30:30Z")
            }
        );
        assert_eq!(
            opening(&w, at("2026-11-23T03:00:00Z")),
            Opening::Closed {
                opens: Some(at("2026-11-24T00:00:00Z"))
            }
        );
        assert!(matches!(
            opening(&[], at("2026-11-23T03:00:00Z")),
            Opening::Open { .. }
        ));
    }

    #[test]
    fn bad_windows_are_explained() {
        let problems = parse_all(&[
            window("0 9 * * 1-5", "8h", Some("Europe/Berlin")),
            window("61 * * * *", "1h", None),
            window("0 9 * * *", "0", None),
            window("0 9 * * *", "1h", Some("Mars/Olympus")),
            window("0 9 * * * * 2030", "1h", None),
        ])
        .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("spec.rollout.windows[1]: schedule \"61 * * * *\""));
        assert_eq!(
            problems[1],
            "spec.rollout.windows[2]: duration must be greater than 0"
        );
        assert!(problems[2].contains("timeZone \"Mars/Olympus\" is not an IANA time zone"));
        assert!(problems[3].starts_with("spec.rollout.windows[4]: schedule"));
    }

    #[test]
    fn a_schedule_no_date_matches_is_refused() {
        for schedule in ["0 0 30 2 *", "0 0 31 4 *", "0 0 0 31 11 *"] {
            let problems = parse_all(&[window(schedule, "1h", None)]).unwrap_err();
            assert_eq!(
                problems,
                [format!(
                    "spec.rollout.windows[0]: schedule {schedule:?} never fires: no date matches it"
                )]
            );
        }
        // Rare is not never: February 29th, and the 5th Friday of a month.
        parse_all(&[
            window("0 0 29 2 *", "1h", None),
            window("0 0 * * 5#5", "1h", Some("Europe/Berlin")),
        ])
        .unwrap();
    }
}
