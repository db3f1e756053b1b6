//! Reading the service's Prometheus metrics, shared by the load tools in `examples/`.

/// `clusterctx_longpoll_waiters` from the service's metrics: how many long-polls are parked.
pub async fn waiters_parked(http: &reqwest::Client, base: &str) -> anyhow::Result<i64> {
    let metrics = http
        .get(format!("{}/metrics", base.trim_end_matches('/')))
        .send()
        .await?
        .text()
        .await?;
    Ok(metrics
        .lines()
        .find_map(|line| line.strip_prefix("clusterctx_longpoll_waiters "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0))
}
