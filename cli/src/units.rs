//! Parsing and printing of the human units the CLI accepts: sizes, durations, money.

use anyhow::Result;

/// Parses `100GB`, `1.5TB`, `500MiB`, `10GiB`, `4096` (bytes); see
/// [`skyx_catalog::units::parse_bytes`].
pub fn parse_bytes(text: &str) -> Result<u64> {
    skyx_catalog::units::parse_bytes(text).map_err(anyhow::Error::msg)
}

/// Parses `90s`, `30m`, `1h30m`, `2h`, `1d`, or plain seconds.
pub fn parse_duration_s(text: &str) -> Result<f64> {
    skyx_catalog::units::parse_duration_s(text).map_err(anyhow::Error::msg)
}

pub fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut v = bytes;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.2} {}", UNITS[i])
    }
}

pub fn format_duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "∞".into();
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{secs:.1}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {:02}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("100GB").unwrap(), 100_000_000_000);
        assert_eq!(parse_bytes("1.5TB").unwrap(), 1_500_000_000_000);
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 * 1024 * 1024 * 1024);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(
            parse_bytes("12 parsecs")
                .unwrap_err()
                .to_string()
                .contains("unknown size unit")
        );
        assert!(parse_bytes("GB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_s("30m").unwrap(), 1800.0);
        assert_eq!(parse_duration_s("1h30m").unwrap(), 5400.0);
        assert_eq!(parse_duration_s("45").unwrap(), 45.0);
        assert!(parse_duration_s("10x").is_err());
        assert!(
            parse_duration_s("1h30")
                .unwrap_err()
                .to_string()
                .contains("no unit")
        );
    }

    #[test]
    fn printing() {
        assert_eq!(format_bytes(1.5e9), "1.50 GB");
        assert_eq!(format_duration(89.4), "1m 29s");
        assert_eq!(format_duration(7260.0), "2h 01m");
    }
}
