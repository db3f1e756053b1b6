//! Long-poll: `GET .../keys/<key>?wait=<seconds>` parks until the key is written, the cluster
//! goes away or expires, the wait is over, or the server shuts down, whichever comes first.
//!
//! A waiter costs one task and one `Notified` future on its cluster's [`Notify`]; every write
//! to the cluster wakes all of them and each re-checks its own key (clusters hold a handful of
//! keys, so the herd is small). `notify_waiters` reaches every `Notified` created before it,
//! polled or not, so creating the future before the check closes the lost-wakeup window.

use std::{sync::Arc, time::Duration};

use tokio::{sync::Notify, time::Instant};

use super::{
    error::ApiError,
    state::{now_ms, shut_down, AppState, KeyState},
};

/// Waits up to `wait` for `key` of `pin` to appear. `changed` and `expires_ms` come from the
/// lookup that found the key absent.
pub(crate) async fn wait_for_key(
    state: &AppState,
    pin: &str,
    key: &str,
    wait: Duration,
    changed: Arc<Notify>,
    expires_ms: i64,
) -> Result<String, ApiError> {
    let _counted = state.metrics.waiter();
    let mut shutdown = state.shutdown_signal();
    let until_expiry = u64::try_from(expires_ms.saturating_sub(now_ms())).unwrap_or(0);
    // An expiring PIN answers 410 the moment it expires, not at the end of the wait.
    let deadline = Instant::now() + wait.min(Duration::from_millis(until_expiry));
    loop {
        let notified = changed.notified();
        if let KeyState::Found(value) = state.lookup_key(pin, key)? {
            return Ok(value);
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(deadline) => {
                // A last look: the key may have come at the final instant, or the PIN expired.
                return match state.lookup_key(pin, key)? {
                    KeyState::Found(value) => Ok(value),
                    KeyState::Absent { .. } => Err(ApiError::KeyNotFound),
                };
            }
            _ = shut_down(&mut shutdown) => return Err(ApiError::ShuttingDown),
        }
    }
}
