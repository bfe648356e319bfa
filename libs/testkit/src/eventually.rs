//! Waiting for something another task or process does: one poll loop instead of one per test.
//!
//! A test that waits for an effect it cannot await (a row a background task writes, an SMS at a
//! simulator, a health status that flips) polls: every 25 ms, for at most a limit that fails the
//! test with the last value seen, so a failure says what the test was waiting for and what it got
//! instead of hanging until nextest's slow-test timeout.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// How often [`eventually`] looks again. Short enough that a test waits little longer than the
/// effect takes; long enough that 200 polls of a database cost nothing.
pub const POLL_EVERY: Duration = Duration::from_millis(25);

/// The limit most waits use: ten times the slowest effect seen on a loaded 2-core CI machine
/// (a background task's batch under a parallel test run, about 1 s).
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(10);

/// Polls `probe` until `done` holds for its value, and returns that value; panics after `limit`
/// with `what` and the last value seen.
pub async fn eventually_within<T, P, Fut, D>(
    what: &str,
    limit: Duration,
    mut probe: P,
    done: D,
) -> T
where
    T: Debug,
    P: FnMut() -> Fut,
    Fut: Future<Output = T>,
    D: Fn(&T) -> bool,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let value = probe().await;
        if done(&value) {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("waited {limit:?} for {what}; the last value seen was {value:?}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// [`eventually_within`] with [`DEFAULT_LIMIT`].
pub async fn eventually<T, P, Fut, D>(what: &str, probe: P, done: D) -> T
where
    T: Debug,
    P: FnMut() -> Fut,
    Fut: Future<Output = T>,
    D: Fn(&T) -> bool,
{
    eventually_within(what, DEFAULT_LIMIT, probe, done).await
}

/// Polls `probe` until it returns `Some`, and returns what it holds.
pub async fn eventually_some<T, P, Fut>(what: &str, limit: Duration, mut probe: P) -> T
where
    P: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("waited {limit:?} for {what}, and it never came");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_first_value_that_is_done() {
        let polls = AtomicU32::new(0);
        let seen = eventually(
            "the third poll",
            || async { polls.fetch_add(1, Ordering::SeqCst) + 1 },
            |n| *n == 3,
        )
        .await;
        assert_eq!(seen, 3);
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waited 1s for a value that never comes; the last value seen was 0")]
    async fn fails_with_what_it_waited_for_and_the_last_value() {
        eventually_within(
            "a value that never comes",
            Duration::from_secs(1),
            || async { 0 },
            |n| *n == 1,
        )
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn some_returns_what_the_probe_found() {
        let polls = AtomicU32::new(0);
        let found = eventually_some("a row", Duration::from_secs(1), || async {
            (polls.fetch_add(1, Ordering::SeqCst) == 2).then_some("row")
        })
        .await;
        assert_eq!(found, "row");
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waited 1s for a row, and it never came")]
    async fn some_fails_with_what_it_waited_for() {
        eventually_some::<(), _, _>("a row", Duration::from_secs(1), || async { None }).await;
    }
}
