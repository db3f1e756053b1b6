//! The long-poll waiter registry: who is parked on which key, woken by the store's change
//! reports (see [`super::store::ChangeSink`]), wherever the write came from.
//!
//! Waiters of one (PIN, key) share one [`Notify`]; a change of that key wakes only them, and a
//! change of the whole cluster (deleted, expired) wakes every waiter of the PIN. Waiters on
//! the member list of a PIN share the slot [`MEMBERS`], woken by every registration. A slot lives
//! as long as someone waits on it. `notify_waiters` reaches every `Notified` created before
//! it, polled or not, so a waiter that creates its future before checking the store cannot
//! miss a write that lands between the check and the wait.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use tokio::sync::{futures::Notified, Notify};

use super::store::{Change, Changed};

/// The slot of the waiters on a member list: no key is named so, as a key name never holds a
/// `/` (it is one path segment).
pub(crate) const MEMBERS: &str = "/members";

/// See the module documentation.
#[derive(Default)]
pub(crate) struct Waiters {
    /// PIN → key → the slot its waiters share.
    slots: Mutex<HashMap<String, HashMap<String, Slot>>>,
    /// Waiters woken by a change (each re-checks its key), for `/metrics` and the herd test.
    wakeups: AtomicU64,
}

struct Slot {
    notify: Arc<Notify>,
    waiters: u64,
}

impl Waiters {
    fn slots(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks a waiter on `key` of `pin` until the returned guard is dropped.
    pub(crate) fn register<'a>(&'a self, pin: &'a str, key: &'a str) -> Parked<'a> {
        let mut slots = self.slots();
        let slot = slots
            .entry(pin.to_string())
            .or_default()
            .entry(key.to_string())
            .or_insert_with(|| Slot {
                notify: Arc::new(Notify::new()),
                waiters: 0,
            });
        slot.waiters += 1;
        Parked {
            waiters: self,
            pin,
            key,
            notify: Arc::clone(&slot.notify),
        }
    }

    /// Wakes the waiters a committed change concerns.
    pub(crate) fn changed(&self, change: Change<'_>) {
        let slots = self.slots();
        let mut woken = 0;
        let mut wake = |slot: &Slot| {
            slot.notify.notify_waiters();
            woken += slot.waiters;
        };
        if change.what == Changed::Everything {
            slots.values().flat_map(|keys| keys.values()).for_each(wake);
            self.wakeups.fetch_add(woken, Ordering::Relaxed);
            return;
        }
        let Some(keys) = slots.get(change.pin) else {
            return;
        };
        match change.what {
            Changed::Key(key) => keys.get(key).into_iter().for_each(&mut wake),
            Changed::Members => keys.get(MEMBERS).into_iter().for_each(&mut wake),
            Changed::Cluster | Changed::Everything => keys.values().for_each(&mut wake),
        }
        self.wakeups.fetch_add(woken, Ordering::Relaxed);
    }

    pub(crate) fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

/// One parked waiter; dropping it takes it off the registry.
pub(crate) struct Parked<'a> {
    waiters: &'a Waiters,
    pin: &'a str,
    key: &'a str,
    notify: Arc<Notify>,
}

impl Parked<'_> {
    /// A future that resolves at the next change of this waiter's key or cluster. Create it
    /// before checking the store.
    pub(crate) fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        let mut slots = self.waiters.slots();
        let Some(keys) = slots.get_mut(self.pin) else {
            return;
        };
        if let Some(slot) = keys.get_mut(self.key) {
            slot.waiters -= 1;
            if slot.waiters == 0 {
                keys.remove(self.key);
            }
        }
        if keys.is_empty() {
            slots.remove(self.pin);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::future::Future;

    /// Polling by hand: whether a future is ready is all these tests ask.
    struct NoWake;

    impl std::task::Wake for NoWake {
        fn wake(self: Arc<Self>) {}
    }

    fn change<'a>(pin: &'a str, key: Option<&'a str>) -> Change<'a> {
        let what = match key {
            Some(MEMBERS) => Changed::Members,
            Some(key) => Changed::Key(key),
            None => Changed::Cluster,
        };
        Change { pin, what }
    }

    #[test]
    fn a_change_wakes_the_waiters_of_its_key_only() {
        let waiters = Waiters::default();
        let a = waiters.register("aaaaaaaaaaaa", "a");
        let a_again = waiters.register("aaaaaaaaaaaa", "a");
        let b = waiters.register("aaaaaaaaaaaa", "b");
        let members = waiters.register("aaaaaaaaaaaa", MEMBERS);
        let other_pin = waiters.register("bbbbbbbbbbbb", "a");
        let (mut on_a, mut on_b, mut on_other, mut on_members) = (
            Box::pin(a.notified()),
            Box::pin(b.notified()),
            Box::pin(other_pin.notified()),
            Box::pin(members.notified()),
        );
        for future in [&mut on_a, &mut on_b, &mut on_other, &mut on_members] {
            future.as_mut().enable();
        }
        waiters.changed(change("aaaaaaaaaaaa", Some("c")));
        assert_eq!(waiters.wakeups(), 0, "nobody waits for c");
        waiters.changed(change("aaaaaaaaaaaa", Some("a")));
        assert_eq!(waiters.wakeups(), 2);
        let waker = std::task::Waker::from(Arc::new(NoWake));
        let woken = |future: &mut std::pin::Pin<Box<Notified<'_>>>| {
            future
                .as_mut()
                .poll(&mut std::task::Context::from_waker(&waker))
                .is_ready()
        };
        assert!(woken(&mut on_a));
        assert!(!woken(&mut on_b));
        assert!(!woken(&mut on_other));
        assert!(!woken(&mut on_members), "a key is not a registration");
        // A registration: the waiters on the member list only.
        waiters.changed(change("aaaaaaaaaaaa", Some(MEMBERS)));
        assert_eq!(waiters.wakeups(), 3);
        assert!(woken(&mut on_members));
        assert!(!woken(&mut on_b));
        // The whole cluster: every waiter of the PIN, and no other.
        waiters.changed(change("aaaaaaaaaaaa", None));
        assert_eq!(waiters.wakeups(), 7);
        assert!(woken(&mut on_b));
        assert!(!woken(&mut on_other));
        drop((on_a, on_b, on_other, on_members));
        drop((a, a_again, b, other_pin, members));
        assert!(waiters.slots().is_empty(), "slots go with their waiters");
    }
}
