//! [`FaultyStore`]: another store with faults injected on demand, for tests of what the
//! service answers when its store fails (507 on a full disk, 503 when the database is away)
//! and of what it does while a write is slow. Everything not failed is passed through.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{
    ChangeSink, ClusterRecord, Inventory, KeyRead, KeysRead, MembersRead, NewKey, NewMember, Quota,
    Registered, Store, StoreError, StoreFuture, Swept,
};

/// See the module documentation.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    faults: Mutex<Faults>,
}

#[derive(Default)]
struct Faults {
    /// The next writes fail with this error, as many times as the count says.
    writes: Option<(usize, StoreError)>,
    /// The same for reads.
    reads: Option<(usize, StoreError)>,
    /// Every write waits this long before it reaches the inner store.
    write_delay: Duration,
}

/// Takes one failure from `slot`, if any is left.
fn take(slot: &mut Option<(usize, StoreError)>) -> Option<StoreError> {
    let (left, err) = slot.as_mut()?;
    let err = err.clone();
    *left -= 1;
    if *left == 0 {
        *slot = None;
    }
    Some(err)
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> FaultyStore {
        FaultyStore {
            inner,
            faults: Mutex::new(Faults::default()),
        }
    }

    /// The next `count` writes fail with `err`, leaving the inner store untouched.
    pub fn fail_writes(&self, count: usize, err: StoreError) {
        self.faults().writes = (count > 0).then_some((count, err));
    }

    /// The next `count` reads fail with `err`.
    pub fn fail_reads(&self, count: usize, err: StoreError) {
        self.faults().reads = (count > 0).then_some((count, err));
    }

    /// Every write from now on waits `delay` first (zero: no delay).
    pub fn delay_writes(&self, delay: Duration) {
        self.faults().write_delay = delay;
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write<'a, T: Send + Unpin + 'a>(&'a self, op: StoreFuture<'a, T>) -> StoreFuture<'a, T> {
        let (failure, delay) = {
            let mut faults = self.faults();
            (take(&mut faults.writes), faults.write_delay)
        };
        StoreFuture::pending(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match failure {
                Some(err) => Err(err),
                None => op.await,
            }
        })
    }

    fn read<'a, T>(&'a self, op: StoreFuture<'a, T>) -> StoreFuture<'a, T> {
        match take(&mut self.faults().reads) {
            Some(err) => StoreFuture::ready(Err(err)),
            None => op,
        }
    }
}

impl Store for FaultyStore {
    fn subscribe(&self, sink: ChangeSink) {
        self.inner.subscribe(sink);
    }

    fn create_cluster(&self, cluster: ClusterRecord, quota: Quota) -> StoreFuture<'_, ()> {
        self.write(self.inner.create_cluster(cluster, quota))
    }

    fn cluster<'a>(&'a self, pin: &'a str) -> StoreFuture<'a, Option<ClusterRecord>> {
        self.read(self.inner.cluster(pin))
    }

    fn key<'a>(&'a self, pin: &'a str, key: &'a str) -> StoreFuture<'a, Option<KeyRead>> {
        self.read(self.inner.key(pin, key))
    }

    fn keys<'a>(&'a self, pin: &'a str) -> StoreFuture<'a, Option<KeysRead>> {
        self.read(self.inner.keys(pin))
    }

    fn create_key(&self, new: NewKey) -> StoreFuture<'_, ()> {
        self.write(self.inner.create_key(new))
    }

    fn replace_key(
        &self,
        pin: String,
        key: String,
        value: String,
        quota: Quota,
    ) -> StoreFuture<'_, bool> {
        self.write(self.inner.replace_key(pin, key, value, quota))
    }

    fn delete_key(&self, pin: String, key: String) -> StoreFuture<'_, bool> {
        self.write(self.inner.delete_key(pin, key))
    }

    fn put_member(&self, new: NewMember) -> StoreFuture<'_, Registered> {
        self.write(self.inner.put_member(new))
    }

    fn members<'a>(&'a self, pin: &'a str) -> StoreFuture<'a, Option<MembersRead>> {
        self.read(self.inner.members(pin))
    }

    fn delete_member(&self, pin: String, node: String) -> StoreFuture<'_, bool> {
        self.write(self.inner.delete_member(pin, node))
    }

    fn delete_cluster(&self, pin: String) -> StoreFuture<'_, bool> {
        self.write(self.inner.delete_cluster(pin))
    }

    fn sweep(&self, now_ms: i64, forget_before_ms: i64) -> StoreFuture<'_, Swept> {
        self.write(self.inner.sweep(now_ms, forget_before_ms))
    }

    fn inventory(&self, now_ms: i64) -> StoreFuture<'_, Inventory> {
        self.read(self.inner.inventory(now_ms))
    }

    fn ready(&self) -> StoreFuture<'_, ()> {
        self.read(self.inner.ready())
    }

    fn close(&self) {
        self.inner.close();
    }
}
