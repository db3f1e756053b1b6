//! Counters and gauges, rendered in the Prometheus text format at `/metrics`.
//!
//! Requests are counted by route template (`/api/v1/clusters/{pin}/keys/{key}`), never by
//! path: a path holds a PIN, and one series per PIN would be both a leak and a memory sink.

use std::{
    collections::HashMap,
    fmt::Write,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Mutex,
    },
};

use axum::http::Method;

use super::store::{Cap, Inventory, Swept};

/// Label for requests that matched no route.
pub const UNMATCHED: &str = "unmatched";

#[derive(Default)]
pub struct Metrics {
    /// (route template, method, status) → count.
    requests: Mutex<HashMap<(&'static str, &'static str, u16), u64>>,
    /// Long-poll requests parked right now.
    waiters: AtomicI64,
    /// Long-polls on a member list parked right now.
    member_waiters: AtomicI64,
    /// Member registrations that added a member (not the ones that updated one).
    members_registered: AtomicU64,
    /// Requests refused with 429 by the miss limit.
    rate_limited: AtomicU64,
    /// PIN creations refused with 429 by the creation limit.
    creations_limited: AtomicU64,
    /// Writes refused with 507 by the cluster cap and by the byte cap.
    cap_refused_clusters: AtomicU64,
    cap_refused_bytes: AtomicU64,
    /// Expired PINs whose keys the sweep deleted, and expired PINs it forgot.
    swept_emptied: AtomicU64,
    swept_forgotten: AtomicU64,
}

impl Metrics {
    pub fn record(&self, route: &'static str, method: &Method, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests
            .entry((route, method_label(method), status))
            .or_insert(0) += 1;
    }

    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub fn creation_limited(&self) {
        self.creations_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cap_refused(&self, cap: Cap) {
        match cap {
            Cap::Clusters(_) => &self.cap_refused_clusters,
            Cap::Bytes(_) => &self.cap_refused_bytes,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn swept(&self, swept: Swept) {
        self.swept_emptied
            .fetch_add(swept.emptied, Ordering::Relaxed);
        self.swept_forgotten
            .fetch_add(swept.forgotten, Ordering::Relaxed);
    }

    /// Counts a parked long-poll until the guard is dropped (answered, or the client left).
    pub fn waiter(&self) -> WaiterGuard<'_> {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        WaiterGuard(&self.waiters)
    }

    pub fn waiters(&self) -> i64 {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Counts a parked long-poll on a member list until the guard is dropped.
    pub fn member_waiter(&self) -> WaiterGuard<'_> {
        self.member_waiters.fetch_add(1, Ordering::Relaxed);
        WaiterGuard(&self.member_waiters)
    }

    pub fn member_joined(&self) {
        self.members_registered.fetch_add(1, Ordering::Relaxed);
    }

    /// The text of `/metrics`: these counters, what the store holds, and how many long-poll
    /// waiters changes have woken so far.
    pub fn render(&self, inventory: Inventory, wakeups: u64, rereads: u64) -> String {
        let mut out = String::with_capacity(2048);
        out.push_str(
            "# HELP clusterctx_http_requests_total HTTP requests answered, by route template, method and status.\n\
             # TYPE clusterctx_http_requests_total counter\n",
        );
        let mut rows: Vec<_> = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(&k, &v)| (k, v))
            .collect();
        rows.sort_unstable();
        for ((route, method, status), count) in rows {
            let _ = writeln!(
                out,
                "clusterctx_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}"
            );
        }
        let gauges: [(&str, &str, i64); 9] = [
            (
                "clusterctx_longpoll_waiters",
                "Long-poll requests waiting for a key right now.",
                self.waiters(),
            ),
            (
                "clusterctx_member_waiters",
                "Long-poll requests waiting for a cluster's member list right now.",
                self.member_waiters.load(Ordering::Relaxed),
            ),
            (
                "clusterctx_members",
                "Members registered in live clusters.",
                saturating_i64(inventory.members),
            ),
            (
                "clusterctx_clusters",
                "Clusters with a live PIN.",
                saturating_i64(inventory.clusters),
            ),
            (
                "clusterctx_expired_clusters",
                "Expired PINs still answered with 410 until the sweep forgets them.",
                saturating_i64(inventory.tombstones),
            ),
            (
                "clusterctx_keys",
                "Keys stored in live clusters.",
                saturating_i64(inventory.keys),
            ),
            (
                "clusterctx_stored_clusters",
                "Clusters the store holds, live and expired, counted against --max-clusters.",
                saturating_i64(inventory.usage.clusters),
            ),
            (
                "clusterctx_stored_bytes",
                "Bytes of PINs, keys and values the store holds, counted against --max-stored-bytes.",
                saturating_i64(inventory.usage.bytes),
            ),
            (
                "clusterctx_store_read_only",
                "1 while the store's disk is full: reads are served, writes answer 507.",
                i64::from(inventory.read_only),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP clusterctx_rate_limited_total Requests refused with 429 after too many misses.\n\
             # TYPE clusterctx_rate_limited_total counter\n\
             clusterctx_rate_limited_total {}",
            self.rate_limited.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP clusterctx_storage_cap_refusals_total Writes refused with 507 by a storage cap, by cap.\n\
             # TYPE clusterctx_storage_cap_refusals_total counter\n\
             clusterctx_storage_cap_refusals_total{{cap=\"clusters\"}} {}\n\
             clusterctx_storage_cap_refusals_total{{cap=\"bytes\"}} {}",
            self.cap_refused_clusters.load(Ordering::Relaxed),
            self.cap_refused_bytes.load(Ordering::Relaxed)
        );
        let counters: [(&str, &str, u64); 6] = [
            (
                "clusterctx_members_registered_total",
                "Member registrations that added a member to its cluster.",
                self.members_registered.load(Ordering::Relaxed),
            ),
            (
                "clusterctx_creations_limited_total",
                "PIN creations refused with 429 by the per-client creation limit.",
                self.creations_limited.load(Ordering::Relaxed),
            ),
            (
                "clusterctx_longpoll_wakeups_total",
                "Long-poll waiters woken by a change of their key or cluster.",
                wakeups,
            ),
            (
                "clusterctx_longpoll_rereads_total",
                "Store reads made for woken long-polls: one per key (or member list) and wake, shared by its waiters.",
                rereads,
            ),
            (
                "clusterctx_sweep_emptied_total",
                "Expired PINs whose keys the sweep deleted.",
                self.swept_emptied.load(Ordering::Relaxed),
            ),
            (
                "clusterctx_sweep_forgotten_total",
                "Expired PINs the sweep forgot (unknown from then on).",
                self.swept_forgotten.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP clusterctx_build_info The running version.\n\
             # TYPE clusterctx_build_info gauge\n\
             clusterctx_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

pub struct WaiterGuard<'a>(&'a AtomicI64);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let metrics = Metrics::default();
        metrics.record("/healthz", &Method::GET, 200);
        metrics.record("/healthz", &Method::GET, 200);
        metrics.record(UNMATCHED, &Method::from_bytes(b"BREW").unwrap(), 404);
        let guard = metrics.waiter();
        let member_guard = metrics.member_waiter();
        metrics.member_joined();
        metrics.creation_limited();
        metrics.cap_refused(Cap::Bytes(10));
        metrics.cap_refused(Cap::Bytes(10));
        let text = metrics.render(
            Inventory {
                clusters: 2,
                tombstones: 1,
                keys: 5,
                members: 4,
                usage: crate::server::store::Usage {
                    clusters: 3,
                    bytes: 300,
                },
                read_only: true,
            },
            7,
            3,
        );
        assert!(text.contains(
            "clusterctx_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 2\n"
        ));
        assert!(text.contains(
            "clusterctx_http_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"} 1\n"
        ));
        assert!(text.contains("\nclusterctx_longpoll_waiters 1\n"));
        assert!(text.contains("\nclusterctx_clusters 2\n"));
        assert!(text.contains("\nclusterctx_keys 5\n"));
        assert!(text.contains("\nclusterctx_members 4\n"));
        assert!(text.contains("\nclusterctx_member_waiters 1\n"));
        assert!(text.contains("\nclusterctx_members_registered_total 1\n"));
        drop(member_guard);
        assert!(text.contains("\nclusterctx_longpoll_wakeups_total 7\n"));
        assert!(text.contains("\nclusterctx_longpoll_rereads_total 3\n"));
        assert!(text.contains("\nclusterctx_stored_clusters 3\n"));
        assert!(text.contains("\nclusterctx_stored_bytes 300\n"));
        assert!(text.contains("\nclusterctx_store_read_only 1\n"));
        assert!(text.contains("\nclusterctx_creations_limited_total 1\n"));
        assert!(text.contains("\nclusterctx_storage_cap_refusals_total{cap=\"clusters\"} 0\n"));
        assert!(text.contains("\nclusterctx_storage_cap_refusals_total{cap=\"bytes\"} 2\n"));
        drop(guard);
        assert_eq!(metrics.waiters(), 0);
    }
}
