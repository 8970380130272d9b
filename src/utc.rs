//! Calendar dates and times of Unix seconds, in UTC, for logs, pages and messages (no
//! time zone database needed: binfarm shows UTC everywhere).

/// A Unix time broken down into its UTC calendar date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

const MONTH_ABBREVIATIONS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl UtcTime {
    /// The proleptic Gregorian date of `seconds` since 1970-01-01 00:00 UTC (negative:
    /// before), by Howard Hinnant's days-to-civil algorithm.
    pub fn from_unix(seconds: i64) -> UtcTime {
        let days = seconds.div_euclid(86_400);
        let of_day = seconds.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        // Every value below is in range by construction (day 1..=31, month 1..=12, ...).
        UtcTime {
            year: yoe + era * 400 + i64::from(month <= 2),
            month: month as u32,
            day: day as u32,
            hour: (of_day / 3600) as u32,
            minute: (of_day % 3600 / 60) as u32,
            second: (of_day % 60) as u32,
        }
    }

    /// `2026-11-26`
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `2026-11-26 15:57`
    pub fn minutes(&self) -> String {
        format!("{} {:02}:{:02}", self.date(), self.hour, self.minute)
    }

    /// `2026-11-26 15:57:36`
    pub fn seconds(&self) -> String {
        format!("{}:{:02}", self.minutes(), self.second)
    }

    /// Common Log Format: `26/Nov/2026:15:57:36 +0000`.
    pub fn common_log(&self) -> String {
        let month = MONTH_ABBREVIATIONS
            .get(self.month.saturating_sub(1) as usize)
            .copied()
            .unwrap_or("???");
        format!(
            "{:02}/{month}/{}:{:02}:{:02}:{:02} +0000",
            self.day, self.year, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(UtcTime::from_unix(0).seconds(), "1970-01-01 00:00:00");
        assert_eq!(UtcTime::from_unix(-1).seconds(), "1969-12-31 23:59:59");
        assert_eq!(UtcTime::from_unix(951_782_400).date(), "2000-02-29");
        assert_eq!(UtcTime::from_unix(4_107_542_400).date(), "2100-03-01");
        let t = UtcTime::from_unix(1_795_660_200);
        assert_eq!(t.seconds(), "2026-11-26 02:30:00");
        assert_eq!(t.minutes(), "2026-11-26 02:30");
        assert_eq!(t.common_log(), "26/Nov/2026:02:30:00 +0000");
    }
}
