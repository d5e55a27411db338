//! Names of archive objects: `events/{yyyy}/{mm}/{dd}/{order_id}/{event_id}.json` (UTC
//! date of the event, `_` for an event of no order). The archiving step writes under
//! these names and the host lists an order's objects by them, so the rule lives here once.

/// The object of one event.
pub fn object_name(order_id: &str, event_id: &str, occurred_at_ms: u64) -> String {
    format!("{}{}.json", order_folder(order_id, occurred_at_ms), segment(event_id))
}

/// The folder of an order's events of the UTC day of `at_ms`, ending in `/`.
pub fn order_folder(order_id: &str, at_ms: u64) -> String {
    let (year, month, day) = civil_from_days(at_ms / 86_400_000);
    format!("events/{year:04}/{month:02}/{day:02}/{}/", segment(order_id))
}

/// One path segment: `_` when empty, and nothing that could climb out of the folder.
/// Ids the host assigns pass through unchanged.
fn segment(id: &str) -> String {
    let clean: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    match clean.as_str() {
        "" | "." | ".." => "_".to_owned(),
        _ => clean,
    }
}

/// Year, month (1..=12) and day (1..=31) of a count of days since 1970-01-01.
///
/// Howard Hinnant's `civil_from_days`, for non-negative day counts; chosen over the
/// `time` crate to keep components free of a dependency for three numbers.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, so leap days fall at the end of a 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_from_days_matches_the_time_crate() {
        // Every day from 1970 to beyond 2400, which covers every leap-year rule.
        for days in 0..160_000u64 {
            let date = time::OffsetDateTime::from_unix_timestamp(days as i64 * 86_400).expect("in range");
            let expected = (date.year() as u64, u8::from(date.month()) as u64, date.day() as u64);
            assert_eq!(civil_from_days(days), expected, "day {days}");
        }
    }

    #[test]
    fn folders_use_the_utc_day_of_the_event() {
        assert_eq!(order_folder("o-1", 0), "events/1970/01/01/o-1/");
        assert_eq!(order_folder("o-1", 1_795_996_799_999), "events/2026/11/29/o-1/");
    }
}
