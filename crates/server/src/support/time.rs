//! The clock, read in one place: the protocol crate takes the time as an argument, and the
//! server reads it here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    vouchmail_proto::time::unix_seconds(SystemTime::now())
}

/// Seconds since the Unix epoch as a `SystemTime` (for Date fields); before 1970 is 1970.
pub fn unix_time(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}
