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

    /// The longest the whole schedule can take, requests included (an attempt still running
    /// when it ends is cut off): the bound the agent promises the boot. Tries times the
    /// interval at the top of its jitter, so 50 x 30 s is about 25 minutes and at most 30.
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
    /// The tries or the window ran out.
    #[error("{what}: gave up after {used} of {tries} tries ({:.1}s window){}{}", window.as_secs_f64(), if *cut_off { "; the window closed before the last try was answered" } else { "" }, last.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    GaveUp {
        what: String,
        /// Tries spent by the whole schedule (waiting or failed ones).
        used: u32,
        /// The schedule's budget.
        tries: u32,
        window: Duration,
        /// The last transient fault, if the last tries failed rather than found nothing yet.
        last: Option<E>,
        /// The last try was still waiting for its answer when the window closed: the peer is
        /// too slow (or drips its answer), which is a failure like `last`.
        cut_off: bool,
    },
}

/// The tries of one boot step, shared by its sub-steps (check the PIN, wait for
/// `master_ready`, fetch each key) so that together they never exceed the policy's window.
/// A try that finishes its sub-step is free: the budget counts the tries that waited or
/// failed, each of which takes at most one slot. The window is also a deadline from the
/// schedule's creation: no try starts after it and no try outlives it, whatever the peer
/// does (drips its answer, says `Retry-After: 0`).
#[derive(Debug, Clone)]
pub struct Schedule {
    policy: RetryPolicy,
    used: u32,
    deadline: Instant,
}

impl Schedule {
    pub fn new(policy: RetryPolicy) -> Self {
        let policy = RetryPolicy {
            tries: policy.tries.max(1),
            ..policy
        };
        Schedule {
            policy,
            used: 0,
            deadline: Instant::now() + policy.window(),
        }
    }

    /// Tries spent so far (waiting or failed ones).
    pub fn used(&self) -> u32 {
        self.used
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// When the window closes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    fn gave_up<E: Retryable>(&self, what: &str, last: Option<E>, cut_off: bool) -> RetryError<E> {
        RetryError::GaveUp {
            what: what.to_string(),
            used: self.used,
            tries: self.policy.tries,
            window: self.policy.window(),
            last,
            cut_off,
        }
    }
}

/// What a retried step is, for its log lines: the sentence, and the same as structured
/// fields (`key`, `url`) so that a journal can be filtered without parsing sentences.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// `waiting for master_ready`, `publishing master_ip`, ...
    pub what: &'a str,
    /// The key the step reads or writes, if any.
    pub key: Option<&'a str>,
    /// The service it talks to.
    pub url: &'a str,
}

/// How much of what is left of the window a slot that reaches its end leaves for the answer.
/// A long-poll offered exactly the time left is answered "not yet" just after the deadline, and
/// the run would end as cut off (unreachable) instead of as a wait that found nothing.
fn answer_margin(left: Duration) -> Duration {
    (left / 4).min(Duration::from_millis(500))
}

/// Runs `attempt` on `schedule`, logging one line per try (`{what} (try 3/50)`, with the
/// fields `try`, `tries`, `key`, `url`). `attempt` receives its slot (a long-poll waits about
/// that long), never more than the time left in the window less a margin for its answer, and
/// is cut off at the window's end. Permanent errors end at once; transient ones and [`Attempt::NotYet`] go on to the
/// next slot while tries and time remain.
pub async fn retry<T, E, F, Fut>(
    schedule: &mut Schedule,
    step: &Step<'_>,
    mut attempt: F,
) -> Result<T, RetryError<E>>
where
    E: Retryable,
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<Attempt<T>, E>>,
{
    let what = step.what;
    let tries = schedule.policy.tries;
    let mut last_error = None;
    while schedule.used < tries {
        let started = Instant::now();
        let left = schedule.deadline.saturating_duration_since(started);
        if left.is_zero() {
            break;
        }
        let slot = schedule
            .policy
            .slot()
            .min(left.saturating_sub(answer_margin(left)));
        let number = schedule.used + 1;
        tracing::info!(
            r#try = number,
            tries,
            key = step.key,
            url = step.url,
            "{what} (try {number}/{tries})"
        );
        let mut next_try = started + slot;
        let Ok(outcome) = tokio::time::timeout_at(schedule.deadline, attempt(slot)).await else {
            schedule.used += 1;
            tracing::warn!(
                r#try = number,
                tries,
                key = step.key,
                url = step.url,
                "{what}: the window closed during try {number}"
            );
            return Err(schedule.gave_up(what, last_error, true));
        };
        // Only tries that did not finish count against the budget: it bounds waiting, and a
        // step that succeeds at once must not shorten the wait for the next one.
        if !matches!(outcome, Ok(Attempt::Done(_))) {
            schedule.used += 1;
        }
        match outcome {
            Ok(Attempt::Done(value)) => return Ok(value),
            Ok(Attempt::NotYet) => last_error = None,
            Err(err) if err.is_transient() => {
                tracing::warn!(
                    r#try = number,
                    tries,
                    key = step.key,
                    url = step.url,
                    "{what}: {err} (will retry)"
                );
                // Later if the peer says so, never sooner than the slot: a busy proxy's
                // `Retry-After: 0` must not burn the whole budget in a moment.
                if let Some(after) = err.retry_after() {
                    next_try = next_try.max(Instant::now() + after);
                }
                last_error = Some(err);
            }
            Err(err) => return Err(RetryError::Permanent(err)),
        }
        if schedule.used < tries {
            if next_try >= schedule.deadline {
                break;
            }
            tokio::time::sleep_until(next_try).await;
        }
    }
    Err(schedule.gave_up(what, last_error, false))
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

    fn step(what: &str) -> Step<'_> {
        Step {
            what,
            key: None,
            url: "http://x",
        }
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
            &step("waiting"),
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
        let result: Result<(), _> = retry(&mut schedule(50), &step("publishing"), |_| {
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
        let result: Result<(), _> = retry(&mut sched, &step("waiting"), |_| async {
            Err(status_error(502))
        })
        .await;
        match result {
            Err(RetryError::GaveUp {
                used, tries, last, ..
            }) => {
                assert_eq!((used, tries), (4, 4));
                assert_eq!(last.unwrap().status(), Some(StatusCode::BAD_GATEWAY));
            }
            other => panic!("unexpected {other:?}"),
        }
        // Three sleeps (none after the last try), never more than the window.
        assert!(started.elapsed() <= sched.policy().window());
        assert!(started.elapsed() >= Duration::from_secs(72));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_zero_never_brings_a_try_forward() {
        // A busy proxy answering 503 with `Retry-After: 0` to every try.
        let started = Instant::now();
        let mut calls = 0;
        let result: Result<(), _> = retry(&mut schedule(5), &step("waiting"), |_| {
            calls += 1;
            async { Err(unavailable(Duration::ZERO)) }
        })
        .await;
        assert!(matches!(result, Err(RetryError::GaveUp { used: 5, .. })));
        assert_eq!(calls, 5);
        // Four gaps of at least the shortest slot (24 s), as without the header.
        assert!(
            started.elapsed() >= Duration::from_secs(96),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_longer_retry_after_is_honoured_within_the_window() {
        let started = Instant::now();
        let result = retry(
            &mut schedule(5),
            &step("waiting"),
            scripted(|n| match n {
                1 => Err(unavailable(Duration::from_secs(50))),
                _ => Ok(Attempt::Done(())),
            }),
        )
        .await;
        assert!(result.is_ok());
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(50), "{elapsed:?}");
        assert!(elapsed <= Duration::from_secs(51), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_beyond_the_window_gives_up_at_once() {
        let started = Instant::now();
        let mut sched = schedule(3);
        let result: Result<(), _> = retry(&mut sched, &step("waiting"), |_| async {
            Err(unavailable(Duration::from_secs(3600)))
        })
        .await;
        assert!(matches!(result, Err(RetryError::GaveUp { used: 1, .. })));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_never_ends_is_cut_at_the_window() {
        // A peer dripping its answer: every try would outlast its slot.
        let started = Instant::now();
        let mut sched = schedule(3);
        let window = sched.policy().window();
        let mut calls = 0;
        let result: Result<(), _> = retry(&mut sched, &step("waiting"), |_| {
            calls += 1;
            async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, ClientError>(Attempt::NotYet)
            }
        })
        .await;
        assert!(matches!(
            result,
            Err(RetryError::GaveUp { cut_off: true, .. })
        ));
        assert_eq!(calls, 1);
        assert_eq!(started.elapsed(), window);
    }

    #[tokio::test(start_paused = true)]
    async fn slots_never_reach_past_the_window() {
        // A long-poll near the end of the window is offered only the time left.
        let mut sched = schedule(2);
        let deadline = sched.deadline();
        tokio::time::sleep(sched.policy().window() - Duration::from_secs(5)).await;
        let mut offered = Vec::new();
        let result: Result<(), _> = retry(&mut sched, &step("waiting"), |slot| {
            offered.push(slot);
            async { Ok::<_, ClientError>(Attempt::NotYet) }
        })
        .await;
        assert!(matches!(result, Err(RetryError::GaveUp { .. })));
        // 5 s left: 4.5 s, leaving a margin for the answer; then a last try in what remains.
        assert_eq!(
            offered,
            [Duration::from_millis(4500), Duration::from_millis(375)]
        );
        assert!(Instant::now() <= deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_poll_answered_after_its_wait_is_not_cut_off_at_the_end() {
        // Each try is a long-poll that waits its whole slot and is answered a moment later,
        // as over a real network: the last one must end as "not yet", inside the window.
        let mut sched = schedule(2);
        let deadline = sched.deadline();
        tokio::time::sleep(sched.policy().window() - Duration::from_secs(5)).await;
        let mut calls = 0;
        let result: Result<(), _> = retry(&mut sched, &step("waiting"), |slot| {
            calls += 1;
            async move {
                tokio::time::sleep(slot + Duration::from_millis(20)).await;
                Ok::<_, ClientError>(Attempt::NotYet)
            }
        })
        .await;
        assert!(
            matches!(
                result,
                Err(RetryError::GaveUp {
                    cut_off: false,
                    used: 2,
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(calls, 2);
        assert!(Instant::now() <= deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn steps_share_one_budget() {
        let mut sched = schedule(3);
        let first: Result<(), RetryError<ClientError>> =
            retry(&mut sched, &step("first"), |_| async {
                Ok(Attempt::NotYet)
            })
            .await;
        assert!(matches!(first, Err(RetryError::GaveUp { tries: 3, .. })));
        assert_eq!(sched.used(), 3);
        let mut calls = 0;
        let second: Result<(), _> = retry(&mut sched, &step("second"), |_| {
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
        for name in ["checking", "finding", "publishing"] {
            let done: Result<(), RetryError<ClientError>> =
                retry(&mut sched, &step(name), |_| async { Ok(Attempt::Done(())) }).await;
            assert!(done.is_ok(), "{name}");
        }
        assert_eq!(sched.used(), 0);
        let mut calls = 0;
        let waited = retry(&mut sched, &step("waiting"), |_| {
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
        let result = retry(&mut schedule(3), &step("waiting"), |slot| {
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
