//! Calendar arithmetic on UTC milliseconds for budget periods, timestamps and the times users
//! write in queries, through `jiff` (which knows the calendar: `2026-02-31` is no date).

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

const DAY_MS: i64 = 86_400_000;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The UTC calendar date containing `ms` (clamped to jiff's range, years -9999 to 9999).
fn date(ms: i64) -> Date {
    let ms = ms.clamp(
        Timestamp::MIN.as_millisecond(),
        Timestamp::MAX.as_millisecond(),
    );
    Timestamp::from_millisecond(ms)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned_datetime(TimeZone::UTC)
        .date()
}

/// Milliseconds at the start of `date`, UTC.
fn start_ms(date: Date) -> i64 {
    date.to_zoned_datetime(TimeZone::UTC)
        .map(|zoned| zoned.timestamp().as_millisecond())
        .unwrap_or(0)
}

/// Start of the UTC day containing `ms`.
pub fn day_start(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

pub fn next_day_start(ms: i64) -> i64 {
    day_start(ms) + DAY_MS
}

/// Start of the UTC calendar month containing `ms`.
pub fn month_start(ms: i64) -> i64 {
    start_ms(date(ms).first_of_month())
}

/// Start of the UTC calendar month after the one containing `ms`.
pub fn next_month_start(ms: i64) -> i64 {
    let first = date(ms).first_of_month();
    start_ms(first.checked_add(1.month()).unwrap_or(first))
}

/// `2026-11-28T23:00:00Z`: ISO 8601 in UTC, to the second.
pub fn iso8601(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    match Timestamp::from_second(seconds) {
        Ok(at) => at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => format!("@{seconds}"),
    }
}

/// Reads a time as users write it in a query: Unix seconds, a date (`2026-11-28`, midnight
/// UTC), or an RFC 3339 timestamp with its offset (`2026-11-28T23:00:00Z`,
/// `2026-11-28T23:00:00+01:00`). A time without an offset is refused: it names no instant.
/// Returns milliseconds since the epoch.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<i64>() {
        return seconds.checked_mul(1000);
    }
    if !text.contains('T') {
        return text.parse::<Date>().ok().map(start_ms);
    }
    text.parse::<Timestamp>().ok().map(|at| at.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_formats_known_instants() {
        let cases: &[(i64, &str)] = &[
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (1_795_906_859_999, "2026-11-28T23:00:59Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00Z"),
        ];
        for &(ms, want) in cases {
            assert_eq!(iso8601(ms), want, "{ms}");
        }
    }

    #[test]
    fn query_times_parse_in_the_forms_users_write() {
        let cases: &[(&str, Option<&str>)] = &[
            ("0", Some("1970-01-01T00:00:00Z")),
            ("1970-01-02", Some("1970-01-02T00:00:00Z")),
            ("1970-01-01T01:02:03Z", Some("1970-01-01T01:02:03Z")),
            ("2026-12-01T01:00:00+01:00", Some("2026-12-01T00:00:00Z")),
            ("2026-11-30T19:00:00-05:00", Some("2026-12-01T00:00:00Z")),
            ("2024-02-29", Some("2024-02-29T00:00:00Z")),
            ("2026-02-31", None),
            ("2026-02-29", None),
            ("2026-13-01", None),
            ("2026-11-28T25:00:00Z", None),
            ("2026-11-28T10:00:00", None),
            ("yesterday", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_time(text).map(iso8601).as_deref(), *want, "{text}");
        }
    }

    #[test]
    fn periods_and_timestamps() {
        let t = parse_time("2026-12-31T05:00:07Z").unwrap();
        assert_eq!(iso8601(month_start(t)), "2026-12-01T00:00:00Z");
        assert_eq!(iso8601(next_month_start(t)), "2027-01-01T00:00:00Z");
        assert_eq!(iso8601(day_start(t)), "2026-12-31T00:00:00Z");
        assert_eq!(iso8601(next_day_start(t)), "2027-01-01T00:00:00Z");
        let leap = parse_time("2024-02-29T23:59:59Z").unwrap();
        assert_eq!(iso8601(next_month_start(leap)), "2024-03-01T00:00:00Z");
        assert_eq!(iso8601(month_start(leap)), "2024-02-01T00:00:00Z");
        assert_eq!(iso8601(month_start(-1)), "1969-12-01T00:00:00Z");
    }
}
