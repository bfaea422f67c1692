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
