//! What the bench reads besides latencies, as deltas over the measured window: CPU time
//! from `/proc` (the server process, this process — the load generator — and the whole
//! machine, to show how much went to other work on a shared machine), the bytes the
//! server process sent to storage (`/proc/PID/io`), and the server's Prometheus
//! metrics.

use std::collections::BTreeMap;

/// Linux reports process CPU times in clock ticks of 1/100 s (`USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far by process `pid` (user + system, all threads).
fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces);
    // utime and stime are fields 14 and 15 of the line, i.e. 11 and 12 after ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / TICKS_PER_SECOND)
}

/// Busy CPU seconds of the whole machine (all cores), from `/proc/stat`.
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = values
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy as f64 / TICKS_PER_SECOND)
}

/// Bytes process `pid` has caused to be written to storage (`write_bytes`).
fn process_storage_writes(pid: &str) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Counters at one instant.
#[derive(Clone, Copy, Default)]
pub struct Sample {
    server_cpu: f64,
    client_cpu: f64,
    machine_cpu: f64,
    server_writes: u64,
}

impl Sample {
    pub fn take(server_pid: u32) -> Self {
        let pid = server_pid.to_string();
        Self {
            server_cpu: process_cpu_seconds(&pid).unwrap_or(0.0),
            client_cpu: process_cpu_seconds("self").unwrap_or(0.0),
            machine_cpu: machine_busy_seconds().unwrap_or(0.0),
            server_writes: process_storage_writes(&pid).unwrap_or(0),
        }
    }
}

/// What was spent between two samples.
#[derive(Clone, Copy, Default)]
pub struct Usage {
    /// CPU seconds of the server process.
    pub server: f64,
    /// CPU seconds of this process (the load generator).
    pub client: f64,
    /// CPU seconds of everything else on the machine (other builds, ...).
    pub other: f64,
    /// Bytes the server wrote to storage.
    pub server_writes: u64,
}

impl Usage {
    pub fn between(before: Sample, after: Sample) -> Self {
        let server = after.server_cpu - before.server_cpu;
        let client = after.client_cpu - before.client_cpu;
        let machine = after.machine_cpu - before.machine_cpu;
        Self {
            server,
            client,
            other: (machine - server - client).max(0.0),
            server_writes: after.server_writes.saturating_sub(before.server_writes),
        }
    }
}

/// Prometheus text: `name{labels}` -> value (comments skipped).
pub fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// `after - before` for every series of `after`.
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}

/// The SQLite group-commit batch sizes of a window: how many writes shared a commit.
pub struct Batches {
    pub commits: f64,
    pub writes: f64,
    /// (upper bound, commits in that bucket), non-cumulative, empty buckets left out.
    pub buckets: Vec<(String, f64)>,
}

impl Batches {
    pub fn from_delta(d: &BTreeMap<String, f64>) -> Self {
        let name = "fleetauth_store_batch_size";
        let mut cumulative: Vec<(f64, String, f64)> = d
            .iter()
            .filter_map(|(k, v)| {
                let le = k
                    .strip_prefix(name)?
                    .strip_prefix("_bucket{le=\"")?
                    .strip_suffix("\"}")?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, le.to_string(), *v))
            })
            .collect();
        cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut previous = 0.0;
        let mut buckets = Vec::new();
        for (_, le, count) in cumulative {
            if count - previous > 0.0 {
                buckets.push((le, count - previous));
            }
            previous = count;
        }
        Self {
            commits: d.get(&format!("{name}_count")).copied().unwrap_or(0.0),
            writes: d.get(&format!("{name}_sum")).copied().unwrap_or(0.0),
            buckets,
        }
    }

    pub fn describe(&self, seconds: f64) -> String {
        if self.commits <= 0.0 {
            return "no commits".into();
        }
        let shares: Vec<String> = self
            .buckets
            .iter()
            .map(|(le, n)| format!("≤{le}: {:.0}%", 100.0 * n / self.commits))
            .collect();
        format!(
            "{:.0} commits/s, {:.1} writes per commit on average; commits by batch size: {}",
            self.commits / seconds,
            self.writes / self.commits,
            shares.join(", ")
        )
    }
}

/// Mean of a histogram's observations in a window (`_sum` / `_count`), if any.
pub fn histogram_mean(d: &BTreeMap<String, f64>, name: &str, labels: &str) -> Option<f64> {
    let count = d.get(&format!("{name}_count{labels}")).copied()?;
    let sum = d.get(&format!("{name}_sum{labels}")).copied()?;
    (count > 0.0).then(|| sum / count)
}

/// Resident and peak resident memory of process `pid`, in MiB (`VmRSS`, `VmHWM`).
pub fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |name: &str| -> Option<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    };
    Some((kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
}
