//! The `Date` header value (RFC 9110 5.6.7, IMF-fixdate), computed from a
//! unix time without libc or a calendar crate: the worker formats it once a
//! second and copies the bytes into every response.

/// The last second with a four-digit year (9999-12-31T23:59:59Z). Later times
/// are clamped to it: the format has no room for a fifth digit, and a clock
/// that far off is wrong anyway.
const MAX_SECS: u64 = 253_402_300_799;

const WEEKDAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// IMF-fixdate `"Sun, 06 Nov 1994 08:49:37 GMT"` for a unix time in seconds.
pub fn http_date(unix_secs: u64) -> [u8; 29] {
    let secs = unix_secs.min(MAX_SECS);
    let days = secs / 86_400;
    let secs_of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = (days + 4) % 7;

    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    // Indices are in range: weekday < 7 and 1 <= month <= 12 by construction.
    out[0..3].copy_from_slice(WEEKDAYS[weekday as usize]);
    put2(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    put2(&mut out[12..14], year / 100);
    put2(&mut out[14..16], year % 100);
    put2(&mut out[17..19], secs_of_day / 3600);
    put2(&mut out[20..22], secs_of_day / 60 % 60);
    put2(&mut out[23..25], secs_of_day % 60);
    out
}

fn put2(out: &mut [u8], n: u64) {
    // n < 100 at every call site, so both digits are in 0..=9.
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// (year, month 1-12, day 1-31) for days since 1970-01-01, using Howard
/// Hinnant's `civil_from_days` (eras of 400 years starting in March, so leap
/// days fall at the end of the year and need no special case).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        // Reference values from Python's email.utils.formatdate(t, usegmt=True).
        let cases: &[(u64, &str)] = &[
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (68_169_600, "Tue, 29 Feb 1972 00:00:00 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (951_868_799, "Tue, 29 Feb 2000 23:59:59 GMT"),
            (1_234_567_890, "Fri, 13 Feb 2009 23:31:30 GMT"),
            (1_709_164_800, "Thu, 29 Feb 2024 00:00:00 GMT"),
            (2_147_483_647, "Tue, 19 Jan 2038 03:14:07 GMT"),
            (4_102_444_800, "Fri, 01 Jan 2100 00:00:00 GMT"),
            (MAX_SECS, "Fri, 31 Dec 9999 23:59:59 GMT"),
            (u64::MAX, "Fri, 31 Dec 9999 23:59:59 GMT"),
        ];
        for &(secs, expected) in cases {
            assert_eq!(std::str::from_utf8(&http_date(secs)).unwrap(), expected, "{secs}");
        }
    }

    /// Walks day by day from 1970 with a naive calendar and compares.
    #[test]
    fn every_day_until_2500() {
        let mut year = 1970;
        let mut month = 1;
        let mut day = 1;
        let mut days = 0u64;
        while year < 2500 {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let month_len = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let expected = format!(
                "{}, {day:02} {} {year} 12:34:56 GMT",
                std::str::from_utf8(WEEKDAYS[((days + 4) % 7) as usize]).unwrap(),
                std::str::from_utf8(MONTHS[month - 1]).unwrap(),
            );
            let got = http_date(days * 86_400 + 12 * 3600 + 34 * 60 + 56);
            assert_eq!(std::str::from_utf8(&got).unwrap(), expected);
            days += 1;
            day += 1;
            if day > month_len {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }
}
