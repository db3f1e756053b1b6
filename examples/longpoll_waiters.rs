//! Load tool: parks N long-poll waiters on one key of a running `clusterctx serve`, writes the
//! key once, and measures how long until the last waiter has its answer. With `--server-pid`
//! it also reports the service's memory (VmRSS and peak VmHWM from /proc/<pid>/status).
//!
//! ```text
//! clusterctx serve --listen 127.0.0.1:8080 --db /tmp/pins.sqlite3 &
//! cargo run --release --example longpoll_waiters -- \
//!     --url http://127.0.0.1:8080 --waiters 10000 --server-pid $!
//! ```
//!
//! With `--other-writes N` it first writes N other keys of the same PIN while the waiters are
//! parked, and reports what they cost the service in CPU time (with `--server-pid`): writes
//! of other keys should not wake the waiters (the herd).
//!
//! With `--park-url` (repeatable) the waiters are spread round-robin over those URLs instead
//! (replicas of one service on PostgreSQL), while the cluster is created and the key written
//! on `--url`: the cross-replica wake. The last line is then a JSON summary (`WAKE_JSON`).
//!
//! Plain HTTP only; each waiter is its own TCP connection with a hand-written HTTP/1.1
//! request, so that the tool itself stays small next to 10,000 sockets.

#[path = "common/metrics.rs"]
mod metrics;
use metrics::{process_cpu_ms, waiters_parked};

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::Parser;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{Notify, Semaphore},
};

#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the service (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// How many waiters to park.
    #[arg(long, default_value_t = 10_000)]
    waiters: usize,
    /// Key to wait for.
    #[arg(long, default_value = "master_ip")]
    key: String,
    /// Long-poll wait, seconds (at most 60).
    #[arg(long, default_value_t = 60)]
    wait: u64,
    /// Connections opened at the same time while parking (keeps the listen backlog short).
    #[arg(long, default_value_t = 256)]
    connect_parallel: usize,
    /// PID of the service, to report its memory (and the CPU time of --other-writes).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Writes of other keys of the same PIN to make while the waiters are parked, one after
    /// the other, before the write they wait for.
    #[arg(long, default_value_t = 0)]
    other_writes: usize,
    /// Park the waiters round-robin on these URLs (replicas) instead of on `--url`.
    #[arg(long)]
    park_url: Vec<String>,
}

/// What one waiter saw, and which of the park URLs it waited on.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    status: u16,
    answered: Option<Instant>,
    target: usize,
}

async fn resolve(base: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(
        base.strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("--url must be http://HOST:PORT"))?,
    )
    .await?
    .next()
    .ok_or_else(|| anyhow::anyhow!("cannot resolve {base}"))
}

/// Nearest-rank percentile of sorted durations, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: usize) -> Option<f64> {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).map(|d| d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nofile = clusterctx::sys::raise_fd_limit()?;
    println!("open files limit: {nofile}");
    anyhow::ensure!(
        (args.waiters as u64) + 64 <= nofile,
        "{} waiters need more open files than the limit of {nofile}",
        args.waiters
    );
    let base = args.url.trim_end_matches('/').to_string();
    let park: Vec<String> = if args.park_url.is_empty() {
        vec![base.clone()]
    } else {
        args.park_url
            .iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect()
    };
    let mut addrs = Vec::with_capacity(park.len());
    for url in &park {
        addrs.push(resolve(url).await?);
    }

    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{base}/api/v1/clusters"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let pin = created["pin"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no pin in {created}"))?
        .to_string();
    if let Some(pid) = args.server_pid {
        println!("service memory before: {}", memory(pid));
    }

    let requests: Vec<Arc<[u8]>> = addrs
        .iter()
        .map(|addr| {
            format!(
                "GET /api/v1/clusters/{pin}/keys/{}?wait={} HTTP/1.1\r\nHost: {addr}\r\n\
                 Connection: close\r\n\r\n",
                args.key, args.wait
            )
            .into_bytes()
            .into()
        })
        .collect();
    let connecting = Arc::new(Semaphore::new(args.connect_parallel));
    let sent = Arc::new(AtomicUsize::new(0));
    let all_sent = Arc::new(Notify::new());
    let park_started = Instant::now();
    let mut tasks = Vec::with_capacity(args.waiters);
    for n in 0..args.waiters {
        let target = n % addrs.len();
        let addr = addrs[target];
        let (request, connecting, sent, all_sent) = (
            Arc::clone(&requests[target]),
            Arc::clone(&connecting),
            Arc::clone(&sent),
            Arc::clone(&all_sent),
        );
        let total = args.waiters;
        tasks.push(tokio::spawn(async move {
            let stream = {
                let _permit = connecting.acquire().await;
                let stream = TcpStream::connect(addr).await;
                match stream {
                    Ok(mut stream) => match stream.write_all(&request).await {
                        Ok(()) => Some(stream),
                        Err(_) => None,
                    },
                    Err(_) => None,
                }
            };
            if sent.fetch_add(1, Ordering::SeqCst) + 1 == total {
                all_sent.notify_one();
            }
            let failed = Outcome {
                target,
                ..Outcome::default()
            };
            let Some(mut stream) = stream else {
                return failed;
            };
            let mut answer = Vec::with_capacity(512);
            if stream.read_to_end(&mut answer).await.is_err() {
                return failed;
            }
            let answered = Instant::now();
            let status = std::str::from_utf8(&answer)
                .ok()
                .and_then(|text| text.split(' ').nth(1))
                .and_then(|code| code.parse().ok())
                .unwrap_or(0);
            Outcome {
                status,
                answered: Some(answered),
                target,
            }
        }));
    }
    if sent.load(Ordering::SeqCst) < args.waiters {
        all_sent.notified().await;
    }
    // Wait until the service reports every waiter parked.
    let parked = loop {
        let mut parked = 0;
        for url in &park {
            parked += waiters_parked(&http, url).await?;
        }
        if parked >= args.waiters as i64 || park_started.elapsed() > Duration::from_secs(30) {
            break parked;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "parked {parked} waiters in {:.2} s",
        park_started.elapsed().as_secs_f64()
    );
    if let Some(pid) = args.server_pid {
        println!("service memory with waiters parked: {}", memory(pid));
    }

    if args.other_writes > 0 {
        let cpu_before = args.server_pid.and_then(process_cpu_ms);
        let started = Instant::now();
        for i in 0..args.other_writes {
            let status = http
                .post(format!("{base}/api/v1/clusters/{pin}/keys"))
                .json(&serde_json::json!({"key": format!("other{i}"), "value": "x"}))
                .send()
                .await?
                .status();
            anyhow::ensure!(status.as_u16() == 201, "other write {i} answered {status}");
        }
        let elapsed = started.elapsed();
        let cpu = args
            .server_pid
            .and_then(process_cpu_ms)
            .zip(cpu_before)
            .map(|(after, before)| format!("{:.3}", (after - before) / 1e3))
            .unwrap_or_else(|| "?".into());
        println!(
            "other writes: {} in {:.2} s, service CPU {cpu} s",
            args.other_writes,
            elapsed.as_secs_f64()
        );
    }

    let written = Instant::now();
    let status = http
        .post(format!("{base}/api/v1/clusters/{pin}/keys"))
        .json(&serde_json::json!({"key": args.key, "value": "10.0.0.1"}))
        .send()
        .await?
        .status();
    let ack = written.elapsed();
    anyhow::ensure!(status.as_u16() == 201, "the write answered {status}");

    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await?);
    }
    let mut latencies: Vec<Duration> = outcomes
        .iter()
        .filter(|o| o.status == 200)
        .filter_map(|o| o.answered.map(|t| t.saturating_duration_since(written)))
        .collect();
    latencies.sort_unstable();
    let failed = outcomes.iter().filter(|o| o.status != 200).count();
    println!("write acknowledged in {:.1} ms", ack.as_secs_f64() * 1e3);
    println!(
        "answers 200: {}, other or failed: {failed}",
        latencies.len()
    );
    if let (Some(first), Some(last)) = (latencies.first(), latencies.last()) {
        let median = latencies[latencies.len() / 2];
        println!(
            "time from the write to the answer: first {:.1} ms, median {:.1} ms, last {:.1} ms",
            first.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3,
            last.as_secs_f64() * 1e3
        );
    }
    if let Some(pid) = args.server_pid {
        println!("service memory after: {}", memory(pid));
    }
    if !args.park_url.is_empty() {
        let per_url: Vec<serde_json::Value> = park
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let mut mine: Vec<Duration> = outcomes
                    .iter()
                    .filter(|o| o.target == i && o.status == 200)
                    .filter_map(|o| o.answered.map(|t| t.saturating_duration_since(written)))
                    .collect();
                mine.sort_unstable();
                serde_json::json!({
                    "url": url, "answered": mine.len(),
                    "p50_ms": percentile_ms(&mine, 50), "p99_ms": percentile_ms(&mine, 99),
                })
            })
            .collect();
        let summary = serde_json::json!({
            "waiters": args.waiters, "parked": parked, "answered": latencies.len(),
            "failed": failed, "ack_ms": ack.as_secs_f64() * 1e3,
            "p50_ms": percentile_ms(&latencies, 50), "p99_ms": percentile_ms(&latencies, 99),
            "max_ms": latencies.last().map(|d| d.as_secs_f64() * 1e3),
            "per_url": per_url,
        });
        println!("WAKE_JSON {summary}");
    }
    Ok(())
}

/// VmRSS and VmHWM (peak) of `pid`.
fn memory(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    format!("VmRSS {}, VmHWM {}", field("VmRSS:"), field("VmHWM:"))
}
