//! Reading the service's Prometheus metrics and its CPU time, shared by the load tools in
//! `examples/`.

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

/// User plus system CPU time of another process, from `/proc/<pid>/stat`, in milliseconds.
pub fn process_cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime and stime are 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a constant.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks * 1e3 / per_sec)
}
