//! `usage --since`: a date or RFC 3339 date-time, into unix seconds.

use super::CliError;

/// Parses `--since`: `YYYY-MM-DD` (midnight UTC) or an RFC 3339 date-time
/// (`2024-05-01T10:00:00Z`, `2024-05-01T12:00:00.5+02:00`), into unix seconds.
pub fn parse_since(value: &str) -> Result<i64, CliError> {
    let fail = |reason| CliError::InvalidSince {
        value: value.to_owned(),
        reason,
    };
    let bytes = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = bytes.get(range)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    if bytes.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return Err(fail("expected a date first"));
    }
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return Err(fail("expected a date first"));
    };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(fail("no such date"));
    }
    let midnight = days_from_civil(year, month, day) * 86_400;
    if bytes.len() == 10 {
        return Ok(midnight);
    }
    if !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes.len() < 20
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return Err(fail("expected a time after the date (THH:MM:SS)"));
    }
    let (Some(hour), Some(minute), Some(second)) = (digits(11..13), digits(14..16), digits(17..19))
    else {
        return Err(fail("expected a time after the date (THH:MM:SS)"));
    };
    // 60 is a leap second; like most parsers, count it as the next second.
    if hour > 23 || minute > 59 || second > 60 {
        return Err(fail("no such time"));
    }
    let mut rest = &value[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if end == 0 {
            return Err(fail("expected digits after '.'"));
        }
        // Sub-second precision does not matter for hourly buckets.
        rest = &fraction[end..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let (Some(h), Some(m)) = (two(*h1, *h2), two(*m1, *m2)) else {
                return Err(fail("bad UTC offset"));
            };
            if h > 23 || m > 59 {
                return Err(fail("bad UTC offset"));
            }
            let seconds = h * 3600 + m * 60;
            if *sign == b'+' {
                seconds
            } else {
                -seconds
            }
        }
        _ => return Err(fail("expected Z or a UTC offset (+02:00) after the time")),
    };
    Ok(midnight + hour * 3600 + minute * 60 + second - offset)
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_dates_and_rfc3339() {
        assert_eq!(parse_since("1970-01-01").unwrap(), 0);
        assert_eq!(parse_since("2024-05-01").unwrap(), 1_714_521_600);
        assert_eq!(parse_since("2024-02-29").unwrap(), 1_709_164_800);
        assert_eq!(parse_since("2024-05-01T10:30:00Z").unwrap(), 1_714_559_400);
        assert_eq!(
            parse_since("2024-05-01t10:30:00.123z").unwrap(),
            1_714_559_400
        );
        assert_eq!(
            parse_since("2024-05-01T12:30:00+02:00").unwrap(),
            1_714_559_400
        );
        assert_eq!(
            parse_since("2024-05-01T05:00:00-05:30").unwrap(),
            1_714_559_400
        );
        assert_eq!(parse_since("1969-12-31T23:00:00Z").unwrap(), -3600);
        for bad in [
            "",
            "2024-5-1",
            "2023-02-29",
            "2024-13-01",
            "2024-05-01T10:30",
            "2024-05-01T10:30:00",
            "2024-05-01T24:00:00Z",
            "2024-05-01T10:30:00+2",
            "2024-05-01T10:30:00.Z",
            "２０２４-05-01",
        ] {
            assert!(parse_since(bad).is_err(), "{bad:?} accepted");
        }
    }
}
