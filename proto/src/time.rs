//! Time is integer seconds since the Unix epoch, always passed in by the caller.

/// Seconds since the Unix epoch.
pub type UnixTime = u64;

/// Tolerated clock skew between peers, in seconds: a licence may be used
/// this long before its `not_before` (a client clock up to 5 minutes behind
/// still accepts a freshly issued licence).
pub const CLOCK_SKEW: u64 = 300;

/// Formats a duration the way people read it: `3h`, `2d 4h`, `45s`.
pub fn human(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let Some(first) = UNITS.iter().position(|(size, _)| secs >= *size) else {
        return "0s".to_owned();
    };
    let mut out = String::new();
    let (size, unit) = UNITS[first];
    out.push_str(&format!("{}{unit}", secs / size));
    if let Some((next, next_unit)) = UNITS.get(first + 1) {
        let n = (secs % size) / next;
        if n > 0 {
            out.push_str(&format!(" {n}{next_unit}"));
        }
    }
    out
}

/// A point in time as people read it, with how far it is from `now`
/// beside it: `2026-12-07 09:46 UTC (in 3h)`, `... (2d 4h ago)`. Every
/// user and operator message that names a time says it this way.
pub fn when(t: UnixTime, now: UnixTime) -> String {
    let relative = if t >= now {
        format!("in {}", human(t - now))
    } else {
        format!("{} ago", human(now - t))
    };
    format!("{} ({relative})", date(t))
}

/// `YYYY-MM-DD HH:MM UTC` (the proleptic Gregorian calendar).
pub fn date(t: UnixTime) -> String {
    let (days, secs) = (t / 86_400, t % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3_600,
        secs % 3_600 / 60
    )
}

/// Year, month, day of the day `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Parses `90`, `90s`, `30m`, `24h` or `7d` into seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().ok()?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(45), "45s");
        assert_eq!(human(3 * 3600 + 5), "3h");
        assert_eq!(human(2 * 86_400 + 4 * 3600 + 7), "2d 4h");
    }

    #[test]
    fn times_are_dates_with_how_far_they_are_beside_them() {
        assert_eq!(date(0), "1970-01-01 00:00 UTC");
        assert_eq!(date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(date(1_796_636_793), "2026-12-07 09:46 UTC");
        assert_eq!(date(4_107_542_400), "2100-03-01 00:00 UTC");
        let now = 1_796_636_793;
        assert_eq!(when(now + 3 * 3600, now), "2026-12-07 12:46 UTC (in 3h)");
        assert_eq!(
            when(now - 2 * 86_400 - 4 * 3600, now),
            "2026-12-05 05:46 UTC (2d 4h ago)"
        );
        assert_eq!(when(now, now), "2026-12-07 09:46 UTC (in 0s)");
    }

    #[test]
    fn parse_durations() {
        assert_eq!(parse_duration("24h"), Some(86_400));
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("5m"), Some(300));
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }
}
