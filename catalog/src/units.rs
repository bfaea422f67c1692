//! Newtypes for the units the catalog and planner trade in. All decimal: 1 GB = 1e9 bytes,
//! 1 Gbps = 1e9 bits/s (Skyplane's own solver divided by 2^30; we do not).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! unit {
    ($(#[$doc:meta])* $name:ident, $suffix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub f64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match f.precision() {
                    Some(p) => write!(f, "{:.*} {}", p, self.0, $suffix),
                    None => write!(f, "{} {}", self.0, $suffix),
                }
            }
        }
    };
}

unit!(
    /// Throughput in gigabits per second (1e9 bit/s).
    Gbps,
    "Gbps"
);
unit!(
    /// An egress price in US dollars per gigabyte (1e9 bytes) leaving a region.
    UsdPerGb,
    "$/GB"
);
unit!(
    /// A VM price in US dollars per hour.
    UsdPerHour,
    "$/h"
);
unit!(
    /// A round-trip time in milliseconds.
    Millis,
    "ms"
);

/// Parses `100GB`, `1.5TB`, `500MiB`, `10GiB`, `4096` (bytes). Decimal units are powers of
/// 1000 (as clouds bill), binary units powers of 1024.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a size (try 100GB, 1.5TB or 512MiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "pb" | "p" => 1e15,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        other => {
            return Err(format!(
                "'{text}': unknown size unit '{other}' (use B, KB, MB, GB, TB, PB or KiB..TiB)"
            ));
        }
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(bytes.round() as u64)
}

/// Parses `90s`, `30m`, `1h30m`, `2h`, `1d`, or plain seconds.
pub fn parse_duration_s(text: &str) -> Result<f64, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return Ok(secs);
    }
    let mut total = 0.0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let scale = match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => {
                return Err(format!(
                    "'{text}': unknown duration unit '{c}' (use s, m, h or d, e.g. 1h30m)"
                ));
            }
        };
        let v: f64 = num
            .parse()
            .map_err(|_| format!("'{text}' is not a duration (try 30m or 1h30m)"))?;
        total += v * scale;
        num.clear();
    }
    if !num.is_empty() {
        return Err(format!(
            "'{text}': the number '{num}' has no unit (use s, m, h or d)"
        ));
    }
    Ok(total)
}
