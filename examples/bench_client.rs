//! Client side of the benchmark suite (`contrib/bench/run`), built on the library's own
//! [`PinClient`] and retry schedule, against a running service:
//!
//! - `formation`: W workers wait for `master_ready`, then fetch `master_ip`, as the agent does;
//!   the master publishes `master_ready`; each worker's latency is the time from the publish
//!   to having both values. Modes:
//!   - `parked`: every worker long-polls (`?wait=60`) and the publish comes once the service
//!     reports all of them parked: the service's fan-out.
//!   - `agent`: the agent's own schedule against our service: a long-poll of about one slot
//!     per try (the library's `retry` and `get_key(.., Some(slot))`), workers starting at
//!     random moments within one interval, the publish at a random phase.
//!   - `legacy`: the same schedule without `?wait=`: one poll per slot, as against a legacy
//!     service (the baseline).
//! - `populate`: creates clusters holding keys, concurrently, and writes their PINs to a file
//!   (the load scripts need them).
//!
//! Each run prints one JSON line on stdout. Every loop is bounded by a count and a time.
//!
//! ```sh
//! cargo run --release --example bench_client -- formation --url http://127.0.0.1:8080 \
//!     --workers 100 --mode parked --runs 5
//! ```

#[path = "common/metrics.rs"]
mod metrics;
use metrics::{process_cpu_ms, waiters_parked};

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, ensure, Context};
use clap::{Parser, Subcommand, ValueEnum};
use clusterctx::{
    client::{
        retry::{retry, Attempt, RetryPolicy, Schedule, Step},
        ClientError, ClientOptions, PinClient,
    },
    protocol::{KEY_MASTER_IP, KEY_MASTER_READY},
    secret::Pin,
};
use rand::Rng;
use serde_json::json;
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};

/// Longest a parked worker waits in one request (the protocol's maximum).
const PARK_WAIT: Duration = Duration::from_secs(60);
/// How long the service may take to report every worker parked.
const PARK_TIMEOUT: Duration = Duration::from_secs(60);
/// The address the master publishes (never contacted).
const MASTER_IP: &str = "10.0.0.1";

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Formation latency of one cluster of W waiting workers, repeated.
    Formation(FormationArgs),
    /// Creates clusters with keys and writes their PINs, one a line.
    Populate(PopulateArgs),
}

#[derive(Debug, clap::Args)]
struct FormationArgs {
    /// Base URL of the service.
    #[arg(long)]
    url: String,
    /// Waiting workers.
    #[arg(long)]
    workers: usize,
    #[arg(long, value_enum)]
    mode: Mode,
    /// The agent's `--interval`, seconds (modes `agent` and `legacy`).
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Runs, each on a fresh PIN.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The service's PID, to report the CPU time it spent between the publish and the last
    /// worker's answer (beside this process's own).
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Parked,
    Agent,
    Legacy,
}

#[derive(Debug, clap::Args)]
struct PopulateArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    clusters: usize,
    /// Keys per cluster: `master_ip`, then `k1`, `k2`, ...
    #[arg(long, default_value_t = 1)]
    keys: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Where the PINs go, one a line.
    #[arg(long)]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A thousand workers are a thousand sockets.
    clusterctx::sys::raise_fd_limit()?;
    // The workers' retries log as the agent's do; off unless asked for (RUST_LOG=warn).
    if std::env::var_os("RUST_LOG").is_some() {
        clusterctx::logging::init(0);
    }
    match Args::parse().command {
        Command::Formation(args) => {
            for run in 0..args.runs {
                let mut outcome = tokio::time::timeout(run_budget(&args), formation(&args))
                    .await
                    .with_context(|| format!("run {run} did not finish in time"))??;
                outcome.run = run;
                println!("{}", serde_json::to_string(&outcome)?);
            }
            Ok(())
        }
        Command::Populate(args) => populate(&args).await,
    }
}

/// What one formation run measured.
#[derive(serde::Serialize)]
struct Outcome {
    run: usize,
    /// Milliseconds from the publish to each worker having both values, in worker order.
    latencies_ms: Vec<f64>,
    /// How long the master's POST of `master_ready` took to be acknowledged.
    publish_ms: f64,
    /// Long-polls parked at the service when the master published.
    parked_at_publish: i64,
    /// Requests the workers sent in all.
    requests: usize,
    /// CPU time of this process (all the workers) from the publish to the last answer.
    client_cpu_ms: f64,
    /// CPU time of the service over the same span, with `--server-pid`.
    server_cpu_ms: Option<f64>,
}

/// A run that takes longer than this is broken, not slow.
fn run_budget(args: &FormationArgs) -> Duration {
    Duration::from_secs_f64(args.interval * 10.0) + PARK_TIMEOUT + Duration::from_secs(30)
}

async fn formation(args: &FormationArgs) -> anyhow::Result<Outcome> {
    let options = ClientOptions::default();
    let master = PinClient::new(&args.url, &options)?;
    let pin = Pin::new(master.create_cluster().await?.pin);
    master.create_key(&pin, KEY_MASTER_IP, MASTER_IP).await?;

    let interval = Duration::from_secs_f64(args.interval);
    let requests = Arc::new(AtomicUsize::new(0));
    // One client (one connection pool) per worker: each is its own machine. Built before the
    // clock starts: building one takes milliseconds, a thousand take seconds.
    let clients = (0..args.workers)
        .map(|_| PinClient::new(&args.url, &options))
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        let (pin, requests, mode) = (pin.clone(), Arc::clone(&requests), args.mode);
        // Machines boot at different moments, so their polls are out of phase.
        let delay = match mode {
            Mode::Parked => Duration::ZERO,
            Mode::Agent | Mode::Legacy => interval.mul_f64(rand::rng().random_range(0.0..1.0)),
        };
        workers.spawn(async move {
            tokio::time::sleep(delay).await;
            let done = worker(&client, &pin, mode, interval, &requests).await;
            (index, done)
        });
    }

    let metrics = reqwest::Client::new();
    match args.mode {
        Mode::Parked => loop {
            let parked = waiters_parked(&metrics, &args.url).await?;
            if parked >= args.workers as i64 {
                break;
            }
            ensure!(
                started.elapsed() < PARK_TIMEOUT,
                "only {parked} of {} workers parked after {PARK_TIMEOUT:?}",
                args.workers
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        },
        // Every worker has started after one interval; the publish then falls at a random
        // point of their schedules.
        Mode::Agent | Mode::Legacy => {
            let phase = rand::rng().random_range(0.0..1.0);
            tokio::time::sleep_until(started + interval.mul_f64(1.5 + phase)).await;
        }
    }
    let parked_at_publish = waiters_parked(&metrics, &args.url).await?;

    let cpu_before = (own_cpu_ms(), args.server_pid.and_then(process_cpu_ms));
    let published = Instant::now();
    master.create_key(&pin, KEY_MASTER_READY, "yes").await?;
    let publish_ms = ms(published.elapsed());

    let mut latencies_ms = vec![0.0; args.workers];
    while let Some(joined) = workers.join_next().await {
        let (index, done) = joined?;
        let done = done.with_context(|| format!("worker {index} failed"))?;
        ensure!(
            done >= published,
            "worker {index} had master_ready before it was published"
        );
        latencies_ms[index] = ms(done - published);
    }
    let client_cpu_ms = own_cpu_ms() - cpu_before.0;
    let server_cpu_ms = args
        .server_pid
        .and_then(process_cpu_ms)
        .zip(cpu_before.1)
        .map(|(after, before)| after - before);
    Ok(Outcome {
        run: 0,
        latencies_ms,
        publish_ms,
        parked_at_publish,
        requests: requests.load(Ordering::Relaxed),
        client_cpu_ms,
        server_cpu_ms,
    })
}

/// One worker: `master_ready`, then `master_ip`, as the agent fetches them. Returns when it
/// has both.
async fn worker(
    client: &PinClient,
    pin: &Pin,
    mode: Mode,
    interval: Duration,
    requests: &AtomicUsize,
) -> anyhow::Result<Instant> {
    match mode {
        Mode::Parked => {
            for _ in 0..3 {
                requests.fetch_add(1, Ordering::Relaxed);
                if client
                    .get_key(pin, KEY_MASTER_READY, Some(PARK_WAIT))
                    .await?
                    .is_some()
                {
                    requests.fetch_add(1, Ordering::Relaxed);
                    let ip = client.get_key(pin, KEY_MASTER_IP, None).await?;
                    ensure!(ip.as_deref() == Some(MASTER_IP), "master_ip is {ip:?}");
                    return Ok(Instant::now());
                }
            }
            bail!("no master_ready after 3 long-polls")
        }
        Mode::Agent | Mode::Legacy => {
            // As `contextualize` does: one schedule for the whole step, and a long-poll of
            // about one slot per try when the service offers it.
            let mut schedule = Schedule::new(RetryPolicy {
                tries: 50,
                interval,
            });
            let long_poll = mode == Mode::Agent;
            for key in [KEY_MASTER_READY, KEY_MASTER_IP] {
                let step = Step {
                    what: key,
                    key: Some(key),
                    url: client.base_url(),
                };
                retry(&mut schedule, &step, |slot| async move {
                    requests.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, ClientError>(
                        match client.get_key(pin, key, long_poll.then_some(slot)).await? {
                            Some(_) => Attempt::Done(()),
                            None => Attempt::NotYet,
                        },
                    )
                })
                .await?;
            }
            Ok(Instant::now())
        }
    }
}

async fn populate(args: &PopulateArgs) -> anyhow::Result<()> {
    let client = Arc::new(PinClient::new(&args.url, &ClientOptions::default())?);
    let in_flight = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();

    let mut creates = JoinSet::new();
    for _ in 0..args.clusters {
        let (client, in_flight) = (Arc::clone(&client), Arc::clone(&in_flight));
        creates.spawn(async move {
            let _permit = in_flight.acquire_owned().await?;
            anyhow::Ok(client.create_cluster().await?.pin)
        });
    }
    let mut pins = Vec::with_capacity(args.clusters);
    while let Some(pin) = creates.join_next().await {
        pins.push(pin??);
    }
    let clusters_done = started.elapsed();

    let mut writes = JoinSet::new();
    for pin in &pins {
        for k in 0..args.keys {
            let (client, in_flight) = (Arc::clone(&client), Arc::clone(&in_flight));
            let pin = Pin::new(pin.clone());
            writes.spawn(async move {
                let _permit = in_flight.acquire_owned().await?;
                let (key, value) = match k {
                    0 => (KEY_MASTER_IP.to_string(), MASTER_IP.to_string()),
                    k => (format!("k{k}"), format!("value-{k}")),
                };
                client.create_key(&pin, &key, &value).await?;
                anyhow::Ok(())
            });
        }
    }
    while let Some(written) = writes.join_next().await {
        written??;
    }
    let keys_done = started.elapsed() - clusters_done;

    std::fs::write(&args.out, pins.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let keys = args.clusters * args.keys;
    println!(
        "{}",
        json!({
            "clusters": args.clusters,
            "keys": keys,
            "clusters_per_s": args.clusters as f64 / clusters_done.as_secs_f64(),
            "keys_per_s": if keys > 0 { keys as f64 / keys_done.as_secs_f64() } else { 0.0 },
        })
    );
    Ok(())
}

/// User plus system CPU time of this process, in milliseconds.
fn own_cpu_ms() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct we pass and touches nothing else.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
