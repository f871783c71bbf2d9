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
    fn parse_durations() {
        assert_eq!(parse_duration("24h"), Some(86_400));
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("5m"), Some(300));
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }
}
