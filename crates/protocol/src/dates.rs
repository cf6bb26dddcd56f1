//! Calendar dates as the APIs write them (`YYYY-MM-DD`, UTC) and day numbers (days since
//! 1970-01-01), converted by arithmetic over the proleptic Gregorian calendar's 400-year
//! cycles of 146,097 days.

pub const DAY_MS: i64 = 86_400_000;

/// Days from 1970-01-01 to a date (`month` 1 to 12, `day` 1 to 31).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number, as `YYYY-MM-DD`.
pub fn format_date(days: i64) -> String {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `YYYY-MM-DD` as a day number; `None` for anything else, a date that does not exist
/// (2023-02-29) included.
pub fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, '-');
    let mut next = |range: std::ops::RangeInclusive<i64>| {
        parts
            .next()
            .and_then(|p| p.parse::<i64>().ok())
            .filter(|n| range.contains(n))
    };
    let (year, month, day) = (next(1970..=9999)?, next(1..=12)?, next(1..=31)?);
    let days = days_from_civil(year, month, day);
    (format_date(days) == format!("{year:04}-{month:02}-{day:02}")).then_some(days)
}

/// A time in milliseconds since the epoch as `YYYY-MM-DD HH:MM` (UTC).
pub fn format_datetime(ms: i64) -> String {
    let minute_of_day = ms.rem_euclid(DAY_MS) / 60_000;
    format!(
        "{} {:02}:{:02}",
        format_date(day_of(ms)),
        minute_of_day / 60,
        minute_of_day % 60
    )
}

/// The day number of a time in milliseconds since the epoch (UTC).
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_utc() {
        assert_eq!(format_datetime(0), "1970-01-01 00:00");
        assert_eq!(format_datetime(1_700_000_000_000), "2023-11-14 22:13");
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(19_722), "2023-12-31");
        assert_eq!(format_date(20_419), "2025-11-27");
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        for day in (0..40_000).step_by(7) {
            assert_eq!(parse_date(&format_date(day)), Some(day));
        }
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("27.11.2026"), None);
        assert_eq!(day_of(-1), -1);
    }
}
