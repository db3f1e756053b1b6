//! The cost of sealed values (PROTOCOL.md part 4): deriving a cluster's key, sealing and
//! opening one value, and the size of what the service stores.
//!
//! Each measurement is the median of `--runs` runs of `--iterations` operations, in
//! nanoseconds per operation. Prints one JSON object on stdout.
//!
//! ```sh
//! cargo run --release --example bench_seal -- --runs 9 --iterations 20000
//! ```

use std::{hint::black_box, time::Instant};

use clap::Parser;
use clusterctx::{
    seal::{Sealer, MAX_PLAIN_LEN},
    secret::{ClusterSecret, Pin},
};

#[derive(Parser)]
struct Args {
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 9)]
    runs: usize,
    /// Operations per run.
    #[arg(long, default_value_t = 20_000)]
    iterations: u32,
}

/// Median over `runs` of the mean time per call of `op` over `iterations` calls, in ns.
fn median_ns(runs: usize, iterations: u32, mut op: impl FnMut()) -> f64 {
    let mut per_op: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                op();
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    per_op.sort_by(f64::total_cmp);
    per_op[per_op.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.runs > 0 && args.iterations > 0, "nothing to measure");
    let secret = ClusterSecret::generate()?;
    let pin = Pin::new("enico1qq0oey");
    let sealer = Sealer::new(&secret, &pin);

    let values = [
        ("ipv4", "master_ip", "10.10.25.5".to_string()),
        ("ipv4_longest", "master_ip", "255.255.255.255".to_string()),
        ("ipv6", "master_ip", "2001:db8:4006:812::200e".to_string()),
        (
            "ipv6_longest",
            "master_ip",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".to_string(),
        ),
        ("largest", "big", "x".repeat(MAX_PLAIN_LEN)),
    ];
    let mut sizes = serde_json::Map::new();
    let mut costs = serde_json::Map::new();
    for (name, key, value) in &values {
        let sealed = sealer.seal(key, value)?;
        sizes.insert(
            (*name).into(),
            serde_json::json!({"plain": value.len(), "sealed": sealed.len()}),
        );
        let seal_ns = median_ns(args.runs, args.iterations, || {
            black_box(sealer.seal(key, black_box(value)).unwrap());
        });
        let open_ns = median_ns(args.runs, args.iterations, || {
            black_box(sealer.open(key, black_box(&sealed)).unwrap());
        });
        costs.insert(
            (*name).into(),
            serde_json::json!({"seal_ns": seal_ns.round(), "open_ns": open_ns.round()}),
        );
    }
    let derive_ns = median_ns(args.runs, args.iterations, || {
        black_box(Sealer::new(black_box(&secret), &pin));
    });
    println!(
        "{}",
        serde_json::json!({
            "runs": args.runs,
            "iterations": args.iterations,
            "derive_key_ns": derive_ns.round(),
            "per_value": costs,
            "sizes_chars": sizes,
        })
    );
    Ok(())
}
