//! The long-poll waiter registry: who is parked on which key, woken by the store's change
//! reports (see [`super::store::ChangeSink`]), wherever the write came from.
//!
//! Waiters of one (PIN, key) share one [`Notify`]; a change of that key wakes only them, and a
//! change of the whole cluster (deleted, expired) wakes every waiter of the PIN. Waiters on
//! the member list of a PIN share the slot [`MEMBERS`], woken by every registration. A slot lives
//! as long as someone waits on it. `notify_waiters` reaches every `Notified` created before
//! it, polled or not, so a waiter that creates its future before checking the store cannot
//! miss a write that lands between the check and the wait.
//!
//! A wake gives its slot a fresh [`Reread`]: the woken waiters of the slot share one store read,
//! made by the first of them after the wake (so after the commit that woke them), instead of
//! one read each. With 1,000 waiters on a key of a PostgreSQL store that is one query per
//! replica instead of 1,000 through a pool of 16 connections. Each waiter still judges expiry
//! itself, at its own `now`, from the expiry the read returned.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use tokio::sync::{futures::Notified, Notify, OnceCell};

use super::store::{Change, Changed, KeyRead, MembersRead, StoreError};

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
    /// Store reads made for woken waiters (one per slot and wake, shared), for `/metrics`.
    rereads: AtomicU64,
}

struct Slot {
    notify: Arc<Notify>,
    waiters: u64,
    /// The read its waiters share since the latest wake.
    reread: Arc<Reread>,
}

/// The store read that the waiters of one slot share after one wake: made by the first of
/// them that gets there, awaited by the others. A slot holds keys or a member list, so one
/// of the two cells is used.
#[derive(Default)]
pub(crate) struct Reread {
    key: OnceCell<Result<Option<KeyRead>, StoreError>>,
    members: OnceCell<Result<Option<MembersRead>, StoreError>>,
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
                reread: Arc::default(),
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
        let mut slots = self.slots();
        let mut woken = 0;
        let mut wake = |slot: &mut Slot| {
            // A fresh read for this wake, before the wake-up: a waiter woken by it can only
            // find this one (or a later one), never a read made before the change.
            slot.reread = Arc::default();
            slot.notify.notify_waiters();
            woken += slot.waiters;
        };
        if change.what == Changed::Everything {
            slots
                .values_mut()
                .flat_map(|keys| keys.values_mut())
                .for_each(wake);
            self.wakeups.fetch_add(woken, Ordering::Relaxed);
            return;
        }
        let Some(keys) = slots.get_mut(change.pin) else {
            return;
        };
        match change.what {
            Changed::Key(key) => keys.get_mut(key).into_iter().for_each(&mut wake),
            Changed::Members => keys.get_mut(MEMBERS).into_iter().for_each(&mut wake),
            Changed::Cluster | Changed::Everything => keys.values_mut().for_each(&mut wake),
        }
        self.wakeups.fetch_add(woken, Ordering::Relaxed);
    }

    pub(crate) fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }

    pub(crate) fn rereads(&self) -> u64 {
        self.rereads.load(Ordering::Relaxed)
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

    /// The slot's read since its latest wake. Call it only after a wake of this waiter (its
    /// `notified` resolved): then the read was made, or will be, after the change.
    fn reread(&self) -> Arc<Reread> {
        let slots = self.waiters.slots();
        slots
            .get(self.pin)
            .and_then(|keys| keys.get(self.key))
            .map(|slot| Arc::clone(&slot.reread))
            // Unreachable while this waiter is registered; a fresh read is always correct.
            .unwrap_or_default()
    }

    /// The key as read once for every waiter of the slot since the latest wake; `read` runs
    /// for the first of them only.
    pub(crate) async fn shared_key<R, F>(&self, read: R) -> Result<Option<KeyRead>, StoreError>
    where
        R: FnOnce() -> F,
        F: std::future::Future<Output = Result<Option<KeyRead>, StoreError>>,
    {
        let reread = self.reread();
        reread
            .key
            .get_or_init(|| {
                self.waiters.rereads.fetch_add(1, Ordering::Relaxed);
                read()
            })
            .await
            .clone()
    }

    /// [`shared_key`](Parked::shared_key) for the waiters on a member list.
    pub(crate) async fn shared_members<R, F>(
        &self,
        read: R,
    ) -> Result<Option<MembersRead>, StoreError>
    where
        R: FnOnce() -> F,
        F: std::future::Future<Output = Result<Option<MembersRead>, StoreError>>,
    {
        let reread = self.reread();
        reread
            .members
            .get_or_init(|| {
                self.waiters.rereads.fetch_add(1, Ordering::Relaxed);
                read()
            })
            .await
            .clone()
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

    #[tokio::test]
    async fn the_waiters_woken_by_one_change_share_one_read() {
        let waiters = Waiters::default();
        let a = waiters.register("aaaaaaaaaaaa", "a");
        let a_again = waiters.register("aaaaaaaaaaaa", "a");
        let reads = AtomicU64::new(0);
        let read = |value: &str| {
            reads.fetch_add(1, Ordering::Relaxed);
            let read = KeyRead {
                expires_ms: 1,
                value: Some(value.to_string()),
            };
            async move { Ok(Some(read)) }
        };
        let value = |found: Result<Option<KeyRead>, StoreError>| found.unwrap().unwrap().value;
        waiters.changed(change("aaaaaaaaaaaa", Some("a")));
        assert_eq!(
            value(a.shared_key(|| read("1")).await).as_deref(),
            Some("1")
        );
        assert_eq!(
            value(a_again.shared_key(|| read("2")).await).as_deref(),
            Some("1"),
            "the second waiter of the wake gets the first one's read"
        );
        assert_eq!(reads.load(Ordering::Relaxed), 1);
        // A change of another key, or of nothing anyone waits on, leaves the read as it is.
        waiters.changed(change("aaaaaaaaaaaa", Some("b")));
        assert_eq!(
            value(a.shared_key(|| read("3")).await).as_deref(),
            Some("1")
        );
        // The next change of the key: a new read, made after it.
        waiters.changed(change("aaaaaaaaaaaa", Some("a")));
        assert_eq!(
            value(a_again.shared_key(|| read("4")).await).as_deref(),
            Some("4")
        );
        assert_eq!(
            value(a.shared_key(|| read("5")).await).as_deref(),
            Some("4")
        );
        // So does a change of the whole cluster, and a failed read is shared like any other.
        waiters.changed(change("aaaaaaaaaaaa", None));
        let failed = a
            .shared_key(|| async { Err(StoreError::Unavailable("down".into())) })
            .await;
        assert_eq!(failed, Err(StoreError::Unavailable("down".into())));
        assert_eq!(
            a_again.shared_key(|| read("6")).await,
            Err(StoreError::Unavailable("down".into()))
        );
        assert_eq!(reads.load(Ordering::Relaxed), 2);
        assert_eq!(waiters.rereads(), 3);
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
        // Everything (a reconnect to a shared database): every waiter of every PIN.
        let mut on_other_again = Box::pin(other_pin.notified());
        on_other_again.as_mut().enable();
        waiters.changed(Change {
            pin: "",
            what: Changed::Everything,
        });
        assert_eq!(waiters.wakeups(), 12);
        assert!(woken(&mut on_other_again));
        drop(on_other_again);
        drop((on_a, on_b, on_other, on_members));
        drop((a, a_again, b, other_pin, members));
        assert!(waiters.slots().is_empty(), "slots go with their waiters");
    }
}
