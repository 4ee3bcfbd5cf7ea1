//! The caller's deadline, for every CRM request made within it: a request is given at most the time
//! left (its own timeout otherwise), and none is sent when less than [`MIN_REQUEST_TIME`] is left. A
//! Lambda that answers in 15 seconds is never cut off in the middle of a CRM write that takes 30.
//!
//! The deadline is task-local: `with_deadline(deadline, future)` applies to every CRM call the future
//! makes (including the futures it joins), without threading it through every client method.

use std::future::Future;
use std::time::{Duration, Instant};

/// Less time than this left: a request is not sent at all (it could not finish).
pub const MIN_REQUEST_TIME: Duration = Duration::from_millis(500);

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `fut` with every CRM request it makes bounded by `deadline` (an outer, earlier deadline
/// still applies).
pub async fn with_deadline<F: Future>(deadline: Instant, fut: F) -> F::Output {
    let deadline = DEADLINE
        .try_with(|outer| (*outer).min(deadline))
        .unwrap_or(deadline);
    DEADLINE.scope(deadline, fut).await
}

/// The time left before the current deadline, if one is set.
pub fn left() -> Option<Duration> {
    DEADLINE
        .try_with(|d| d.saturating_duration_since(Instant::now()))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_earliest_deadline_applies_inside_and_none_outside() {
        assert_eq!(left(), None);
        let soon = Instant::now() + Duration::from_secs(5);
        let later = Instant::now() + Duration::from_secs(50);
        with_deadline(soon, async {
            with_deadline(later, async {
                assert!(left().unwrap() <= Duration::from_secs(5));
            })
            .await;
        })
        .await;
    }
}
