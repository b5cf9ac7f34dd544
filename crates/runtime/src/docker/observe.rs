//! Logs and resource statistics of instance containers.

use super::{map_err, DockerRuntime};
use crate::{LogLine, LogQuery, Result, Stats};
use bollard::container::LogOutput;
use bollard::query_parameters::{LogsOptions, StatsOptions};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

pub(super) fn logs(rt: &DockerRuntime, container: &str, q: LogQuery) -> BoxStream<'static, Result<LogLine>> {
    let opts = LogsOptions {
        follow: q.follow,
        stdout: true,
        stderr: true,
        since: q.since.unwrap_or(0).clamp(0, i32::MAX as i64) as i32,
        until: 0,
        timestamps: true,
        tail: q.tail.map(|n| n.to_string()).unwrap_or_else(|| "all".into()),
    };
    rt.docker
        .logs(container, Some(opts))
        .map(|item| {
            let chunk = item.map_err(map_err)?;
            let (stream, bytes) = match chunk {
                LogOutput::StdErr { message } => ("stderr", message),
                LogOutput::StdOut { message } | LogOutput::Console { message } | LogOutput::StdIn { message } => {
                    ("stdout", message)
                }
            };
            let text = String::from_utf8_lossy(&bytes);
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let (timestamp, message) = text.split_once(' ').unwrap_or(("", text));
            Ok(LogLine { timestamp: timestamp.to_string(), stream, message: message.to_string() })
        })
        .boxed()
}

pub(super) async fn stats(rt: &DockerRuntime, container: &str) -> Result<Stats> {
    // One shot: Docker answers at once instead of sampling for a second (which held an
    // Engine API slot that long per /health). CPU% comes from this sample and the
    // previous one of the same container.
    // No permit: the answer may wait for Docker's next sample (up to a second), and
    // the caller ([`DockerRuntime::stats`]) already makes it one call per container
    // per `STATS_TTL`, so polling cannot multiply these calls.
    let opts = StatsOptions { stream: false, one_shot: true };
    let mut s = rt.docker.stats(container, Some(opts));
    let Some(first) = s.next().await else { return Ok(Stats::default()) };
    let st = first.map_err(map_err)?;
    let cpu = st.cpu_stats.unwrap_or_default();
    let total = cpu.cpu_usage.as_ref().and_then(|u| u.total_usage).unwrap_or(0);
    let system = cpu.system_cpu_usage.unwrap_or(0);
    let previous =
        rt.cpu_samples.lock().unwrap_or_else(|e| e.into_inner()).insert(container.to_string(), (total, system));
    let cpus = cpu.online_cpus.unwrap_or(1).max(1) as f64;
    let cpu_percent = match previous {
        Some((t0, s0)) if system > s0 && total >= t0 => (total - t0) as f64 / (system - s0) as f64 * cpus * 100.0,
        _ => 0.0,
    };
    let mem = st.memory_stats.unwrap_or_default();
    // What `docker stats` shows: usage minus reclaimable page cache.
    let inactive = mem
        .stats
        .as_ref()
        .and_then(|m| m.get("inactive_file").or_else(|| m.get("total_inactive_file")).copied())
        .unwrap_or(0);
    let nets = st.networks.unwrap_or_default();
    let network_rx_bytes = nets.values().map(|n| n.rx_bytes.unwrap_or(0)).sum();
    let network_tx_bytes = nets.values().map(|n| n.tx_bytes.unwrap_or(0)).sum();
    Ok(Stats {
        network_rx_bytes,
        network_tx_bytes,
        cpu_percent: (cpu_percent * 100.0).round() / 100.0,
        memory_bytes: mem.usage.unwrap_or(0).saturating_sub(inactive),
        memory_limit_bytes: mem.limit.unwrap_or(0),
        pids: st.pids_stats.and_then(|p| p.current).unwrap_or(0),
    })
}
