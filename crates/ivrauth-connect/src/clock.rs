//! The production clock.

use std::time::{SystemTime, UNIX_EPOCH};

use ivrauth_core::time::{Clock, UnixMillis};

/// The system wall clock. The one production [`Clock`]; tests use fakes.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(system_time_to_millis(SystemTime::now()))
    }
}

/// Milliseconds since the Unix epoch (negative before it), saturating at the `i64` range.
pub(crate) fn system_time_to_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn converts_around_the_epoch() {
        assert_eq!(system_time_to_millis(UNIX_EPOCH), 0);
        assert_eq!(
            system_time_to_millis(UNIX_EPOCH + Duration::from_millis(1_234)),
            1_234
        );
        assert_eq!(
            system_time_to_millis(UNIX_EPOCH - Duration::from_millis(5)),
            -5
        );
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now().0 > 1_577_836_800_000);
    }
}
