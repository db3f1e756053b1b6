//! Shutdown as a small type of its own (mini-redis `shutdown.rs`): one flag that flips once,
//! watched by the accept loop, every connection, every parked long-poll and the sweep.

use tokio::sync::watch;

/// The sending side, held by the state.
pub(crate) struct Shutdown(watch::Sender<bool>);

impl Shutdown {
    pub(crate) fn new() -> Shutdown {
        Shutdown(watch::Sender::new(false))
    }

    /// Flips the flag; every [`signal`](Shutdown::signal) resolves.
    pub(crate) fn begin(&self) {
        self.0.send_replace(true);
    }

    pub(crate) fn has_begun(&self) -> bool {
        *self.0.borrow()
    }

    /// A receiver to pass to [`shut_down`].
    pub(crate) fn signal(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

/// Resolves once `signal` (from [`Shutdown::signal`]) has flipped to true.
pub(crate) async fn shut_down(signal: &mut watch::Receiver<bool>) {
    // The sender lives as long as the state; an error means it is gone, which is shutdown too.
    let _ = signal.wait_for(|&down| down).await;
}
