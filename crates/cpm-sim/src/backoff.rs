//! The kubelet's restart back-off (`CrashLoopBackOff`): the first restart is immediate, then
//! 10 s doubling to 5 minutes; a container that ran for 10 minutes starts over.

use std::time::Duration;

/// The first delay.
pub const INITIAL: Duration = Duration::from_secs(10);
/// The cap.
pub const MAX: Duration = Duration::from_secs(300);
/// A run this long resets the back-off.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// A container's back-off state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    last: Option<Duration>,
}

impl Backoff {
    /// How long to wait before restarting a container that exited after running for
    /// `ran_for`.
    pub fn after_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= RESET_AFTER {
            self.last = None;
        }
        let delay = match self.last {
            None => Duration::ZERO,
            Some(d) if d.is_zero() => INITIAL,
            Some(d) => (d * 2).min(MAX),
        };
        self.last = Some(delay);
        delay
    }
}

#[cfg(test)]
mod tests;
