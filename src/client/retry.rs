//! When to try again: one small policy value instead of loops scattered through the agent.
//!
//! Every attempt owns a time slot of about `interval`. If the attempt ends early (a legacy
//! server answered 404 at once, a connection was refused) we sleep out the rest of the slot;
//! if it was a long-poll, the slot was already spent waiting at the server. So `tries` slots
//! cover the same window against a legacy or our service, and against ours a worker still
//! learns a value the moment it is published.

use std::{future::Future, time::Duration};

use rand::Rng;
use tokio::time::Instant;

use super::ClientError;

/// How many attempts, how far apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub tries: u32,
    pub interval: Duration,
}

/// Each slot is the interval scaled by a random factor in this range, so that a cluster booted
/// at once does not hit the service in lockstep. Proportional, so `--interval 1` stays about a
/// second (the legacy 25 s + 0-9 s was the same idea at a fixed scale).
const JITTER: std::ops::RangeInclusive<f64> = 0.8..=1.2;

impl RetryPolicy {
    /// The legacy schedule: 50 tries about 30 s apart, some 25 minutes in all.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        tries: 50,
        interval: Duration::from_secs(30),
    };

    /// One attempt's slot: the interval with jitter.
    pub fn slot(&self) -> Duration {
        self.interval.mul_f64(rand::rng().random_range(JITTER))
    }

    /// The longest the whole schedule can take, not counting the last attempt's own request
    /// time: the bound the agent promises the boot.
    pub fn window(&self) -> Duration {
        self.interval.mul_f64(*JITTER.end()) * self.tries
    }
}

/// What one attempt found, when it did not fail.
#[derive(Debug)]
pub enum Attempt<T> {
    /// Finished with a result.
    Done(T),
    /// Nothing wrong, just not there yet (the key is not published): try again.
    NotYet,
}

/// Errors a retried step can meet: each knows whether trying again can help.
pub trait Retryable: std::error::Error {
    fn is_transient(&self) -> bool;

    /// When the peer asked to be tried again sooner than the next slot (a restarting service
    /// answers 503 with `Retry-After: 1`).
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

impl Retryable for ClientError {
    fn is_transient(&self) -> bool {
        ClientError::is_transient(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        ClientError::retry_after(self)
    }
}

/// Why a retried step ended without a result.
#[derive(Debug, thiserror::Error)]
pub enum RetryError<E: Retryable> {
    /// A permanent fault: retrying cannot help.
    #[error(transparent)]
    Permanent(E),
    /// The schedule ran out.
    #[error("{what}: gave up after {tries} tries{}", last.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    GaveUp {
        what: String,
        tries: u32,
        last: Option<E>,
    },
}

/// The tries of one boot step, shared by its sub-steps (check the PIN, wait for
/// `master_ready`, fetch each key) so that together they never exceed the policy's window.
/// A try that finishes its sub-step is free: the budget counts the tries that waited or
/// failed, each of which takes at most one slot.
#[derive(Debug, Clone)]
pub struct Schedule {
    policy: RetryPolicy,
    used: u32,
}

impl Schedule {
    pub fn new(policy: RetryPolicy) -> Self {
        Schedule {
            policy: RetryPolicy {
                tries: policy.tries.max(1),
                ..policy
            },
            used: 0,
        }
    }

    /// Tries spent so far (waiting or failed ones).
    pub fn used(&self) -> u32 {
        self.used
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

/// Runs `attempt` on `schedule`, logging one line per try (`{what} (try 3/50)`). `attempt`
/// receives its slot (a long-poll waits about that long). Permanent errors end at once;
/// transient ones and [`Attempt::NotYet`] go on to the next slot while tries remain.
pub async fn retry<T, E, F, Fut>(
    schedule: &mut Schedule,
    what: &str,
    mut attempt: F,
) -> Result<T, RetryError<E>>
where
    E: Retryable,
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<Attempt<T>, E>>,
{
    let tries = schedule.policy.tries;
    let mut last_error = None;
    while schedule.used < tries {
        let slot = schedule.policy.slot();
        let started = Instant::now();
        tracing::info!("{what} (try {}/{tries})", schedule.used + 1);
        let mut next_try = started + slot;
        let outcome = attempt(slot).await;
        // Only tries that did not finish count against the budget: it bounds waiting, and a
        // step that succeeds at once must not shorten the wait for the next one.
        if !matches!(outcome, Ok(Attempt::Done(_))) {
            schedule.used += 1;
        }
        match outcome {
            Ok(Attempt::Done(value)) => return Ok(value),
            Ok(Attempt::NotYet) => last_error = None,
            Err(err) if err.is_transient() => {
                tracing::warn!("{what}: {err} (will retry)");
                // Sooner if the peer says so, never later than the slot: the window holds.
                if let Some(after) = err.retry_after() {
                    next_try = next_try.min(Instant::now() + after);
                }
                last_error = Some(err);
            }
            Err(err) => return Err(RetryError::Permanent(err)),
        }
        if schedule.used < tries {
            tokio::time::sleep_until(next_try).await;
        }
    }
    Err(RetryError::GaveUp {
        what: what.to_string(),
        tries,
        last: last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::{Method, StatusCode};

    fn schedule(tries: u32) -> Schedule {
        Schedule::new(RetryPolicy {
            tries,
            interval: Duration::from_secs(30),
        })
    }

    fn status_error(code: u16) -> ClientError {
        ClientError::Status {
            method: Method::GET,
            url: "http://x".into(),
            status: StatusCode::from_u16(code).unwrap(),
            detail: None,
            retry_after: None,
        }
    }

    fn unavailable(retry_after: Duration) -> ClientError {
        ClientError::Status {
            method: Method::GET,
            url: "http://x".into(),
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: None,
            retry_after: Some(retry_after),
        }
    }

    /// An attempt that answers `script(n)` on its n-th call, counting from 1.
    fn scripted<T>(
        script: impl Fn(u32) -> Result<Attempt<T>, ClientError>,
    ) -> impl FnMut(Duration) -> std::future::Ready<Result<Attempt<T>, ClientError>> {
        let mut calls = 0;
        move |_| {
            calls += 1;
            std::future::ready(script(calls))
        }
    }

    #[test]
    fn slots_stay_near_the_interval() {
        let p = RetryPolicy {
            tries: 3,
            interval: Duration::from_secs(1),
        };
        for _ in 0..1000 {
            let slot = p.slot();
            assert!(slot >= Duration::from_millis(800) && slot <= Duration::from_millis(1200));
        }
        assert_eq!(p.window(), Duration::from_millis(3600));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_and_not_yet_are_retried_until_done() {
        let started = Instant::now();
        let result = retry(
            &mut schedule(5),
            "waiting",
            scripted(|n| match n {
                1 => Err(status_error(503)),
                2 => Ok(Attempt::NotYet),
                _ => Ok(Attempt::Done(n)),
            }),
        )
        .await;
        assert_eq!(result.unwrap(), 3);
        // Two slots slept out, each 24-36 s.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(48) && elapsed <= Duration::from_secs(72));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_end_at_once() {
        let started = Instant::now();
        let mut calls = 0;
        let result: Result<(), _> = retry(&mut schedule(50), "publishing", |_| {
            calls += 1;
            async { Err(status_error(404)) }
        })
        .await;
        assert!(matches!(result, Err(RetryError::Permanent(_))));
        assert_eq!(calls, 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_window_with_the_last_error() {
        let started = Instant::now();
        let mut sched = schedule(4);
        let result: Result<(), _> =
            retry(&mut sched, "waiting", |_| async { Err(status_error(502)) }).await;
        match result {
            Err(RetryError::GaveUp { tries, last, .. }) => {
                assert_eq!(tries, 4);
                assert_eq!(last.unwrap().status(), Some(StatusCode::BAD_GATEWAY));
            }
            other => panic!("unexpected {other:?}"),
        }
        // Three sleeps (none after the last try), never more than the window.
        assert!(started.elapsed() <= sched.policy().window());
        assert!(started.elapsed() >= Duration::from_secs(72));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_brings_the_next_try_forward_but_never_past_the_slot() {
        let started = Instant::now();
        let result = retry(
            &mut schedule(5),
            "waiting",
            scripted(|n| match n {
                1 => Err(unavailable(Duration::from_secs(1))),
                2 => Err(unavailable(Duration::from_secs(3600))),
                _ => Ok(Attempt::Done(())),
            }),
        )
        .await;
        assert!(result.is_ok());
        // 1 s after the first try, then at most one slot (36 s) after the second.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(25), "{elapsed:?}");
        assert!(elapsed <= Duration::from_secs(37), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn steps_share_one_budget() {
        let mut sched = schedule(3);
        let first: Result<(), RetryError<ClientError>> =
            retry(&mut sched, "first", |_| async { Ok(Attempt::NotYet) }).await;
        assert!(matches!(first, Err(RetryError::GaveUp { tries: 3, .. })));
        assert_eq!(sched.used(), 3);
        let mut calls = 0;
        let second: Result<(), _> = retry(&mut sched, "second", |_| {
            calls += 1;
            async { Ok::<_, ClientError>(Attempt::Done(())) }
        })
        .await;
        assert!(matches!(second, Err(RetryError::GaveUp { .. })));
        assert_eq!(calls, 0, "no tries left for a later step");
    }

    #[tokio::test(start_paused = true)]
    async fn steps_that_finish_at_once_cost_no_tries() {
        // A master with --tries 2: check the PIN, find the address, publish, all at once.
        let mut sched = schedule(2);
        for step in ["checking", "finding", "publishing"] {
            let done: Result<(), RetryError<ClientError>> =
                retry(&mut sched, step, |_| async { Ok(Attempt::Done(())) }).await;
            assert!(done.is_ok(), "{step}");
        }
        assert_eq!(sched.used(), 0);
        let mut calls = 0;
        let waited = retry(&mut sched, "waiting", |_| {
            calls += 1;
            let n = calls;
            async move {
                Ok::<_, ClientError>(if n == 2 {
                    Attempt::Done(())
                } else {
                    Attempt::NotYet
                })
            }
        })
        .await;
        assert!(waited.is_ok());
        assert_eq!(sched.used(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_used_its_slot_is_not_followed_by_a_sleep() {
        // A long-poll that spent its whole slot at the server: the next try starts at once.
        let started = Instant::now();
        let mut calls = 0;
        let result = retry(&mut schedule(3), "waiting", |slot| {
            calls += 1;
            let n = calls;
            async move {
                tokio::time::sleep(slot).await;
                Ok::<_, ClientError>(if n == 2 {
                    Attempt::Done(())
                } else {
                    Attempt::NotYet
                })
            }
        })
        .await;
        assert!(result.is_ok());
        assert!(started.elapsed() <= Duration::from_secs(72));
    }
}
