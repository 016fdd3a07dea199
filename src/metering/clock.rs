//! Calendar arithmetic on UTC milliseconds for budget periods and timestamps, without a date
//! library: days since the epoch convert to and from (year, month, day) with the usual
//! proleptic-Gregorian formulas.

const DAY_MS: i64 = 86_400_000;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// (year, month 1-12, day 1-31) of a day number counted from 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day number (from 1970-01-01) of a civil date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Start of the UTC day containing `ms`.
pub fn day_start(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

/// Start of the UTC calendar month containing `ms`.
pub fn month_start(ms: i64) -> i64 {
    let (year, month, _) = civil_from_days(ms.div_euclid(DAY_MS));
    days_from_civil(year, month, 1) * DAY_MS
}

/// Start of the UTC calendar month after the one containing `ms`.
pub fn next_month_start(ms: i64) -> i64 {
    let (year, month, _) = civil_from_days(ms.div_euclid(DAY_MS));
    let (year, month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    days_from_civil(year, month, 1) * DAY_MS
}

pub fn next_day_start(ms: i64) -> i64 {
    day_start(ms) + DAY_MS
}

/// `2026-11-28T23:00:00Z`: ISO 8601 in UTC, to the second.
pub fn iso8601(ms: i64) -> String {
    let days = ms.div_euclid(DAY_MS);
    let (year, month, day) = civil_from_days(days);
    let seconds = ms.rem_euclid(DAY_MS) / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

/// Reads a time as users write it in a query: Unix seconds, `2026-11-28`, or
/// `2026-11-28T23:00:00Z` (UTC). Returns milliseconds since the epoch.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<i64>() {
        return seconds.checked_mul(1000);
    }
    let (date, time) = match text.split_once('T') {
        Some((date, time)) => (date, Some(time.strip_suffix('Z')?)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || !(1970..=9999).contains(&year) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * DAY_MS;
    if let Some(time) = time {
        let mut fields = time.splitn(3, ':');
        let hours: i64 = fields.next()?.parse().ok()?;
        let minutes: i64 = fields.next().unwrap_or("0").parse().ok()?;
        let seconds: i64 = fields.next().unwrap_or("0").parse().ok()?;
        if hours > 23 || minutes > 59 || seconds > 60 {
            return None;
        }
        ms += ((hours * 60 + minutes) * 60 + seconds) * 1000;
    }
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_conversions_agree_with_known_dates() {
        let cases: &[(i64, (i64, u32, u32))] = &[
            (0, (1970, 1, 1)),
            (11_016, (2000, 2, 29)),
            (20_785, (2026, 11, 28)),
            (-1, (1969, 12, 31)),
        ];
        for &(days, civil) in cases {
            assert_eq!(civil_from_days(days), civil);
            assert_eq!(days_from_civil(civil.0, civil.1, civil.2), days);
        }
    }

    #[test]
    fn civil_dates_round_trip_over_centuries() {
        // Every day from 1600 to 2400: the leap rules for 4, 100 and 400 years all occur.
        let (first, last) = (days_from_civil(1600, 1, 1), days_from_civil(2400, 12, 31));
        let mut previous = civil_from_days(first - 1);
        for days in first..=last {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            if d != 1 {
                assert_eq!((y, m, d - 1), previous, "day {days}");
            }
            previous = (y, m, d);
        }
        assert_eq!(
            civil_from_days(days_from_civil(1900, 3, 1) - 1),
            (1900, 2, 28)
        );
        assert_eq!(
            civil_from_days(days_from_civil(2000, 3, 1) - 1),
            (2000, 2, 29)
        );
    }

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
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time("1970-01-02"), Some(DAY_MS));
        assert_eq!(parse_time("1970-01-01T01:02:03Z"), Some(3_723_000));
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-11-28T25:00:00Z",
            "2026-11-28T10:00:00",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn periods_and_timestamps() {
        let t = days_from_civil(2026, 12, 31) * DAY_MS + 5 * 3_600_000 + 7_000;
        assert_eq!(iso8601(t), "2026-12-31T05:00:07Z");
        assert_eq!(iso8601(month_start(t)), "2026-12-01T00:00:00Z");
        assert_eq!(iso8601(next_month_start(t)), "2027-01-01T00:00:00Z");
        assert_eq!(iso8601(day_start(t)), "2026-12-31T00:00:00Z");
        assert_eq!(iso8601(next_day_start(t)), "2027-01-01T00:00:00Z");
    }
}
