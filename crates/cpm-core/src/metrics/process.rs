//! Process metrics read from `/proc/self` on each scrape, and the build-info metric.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `process_cpu_seconds_total` | counter | user + system CPU time |
//! | `process_resident_memory_bytes` | gauge | resident set size (`VmRSS`) |
//! | `process_virtual_memory_bytes` | gauge | virtual memory size (`VmSize`) |
//! | `process_open_fds` | gauge | open file descriptors |
//! | `process_max_fds` | gauge | the soft limit on open file descriptors |
//! | `process_start_time_seconds` | gauge | Unix time the process started |
//! | `process_threads` | gauge | threads of the process |
//! | `cpm_build_info` | info | `version`, `revision` of the binary |
//!
//! The names are those of the Prometheus client libraries' process collectors, so the usual
//! dashboards work unchanged. Off Linux (no `/proc`), the process metrics are left out.

use std::path::Path;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Registers the process metrics and `cpm_build_info` on `registry`. Every binary that serves
/// `/metrics` calls this once.
pub fn register(registry: &mut Registry) {
    registry.register(
        "cpm_build",
        "The version and git revision of this binary",
        Info::new(vec![
            ("version", crate::build::VERSION),
            ("revision", crate::build::GIT_SHA),
        ]),
    );
    registry.register_collector(Box::new(ProcessCollector {
        proc_dir: "/proc".into(),
    }));
}

/// One reading of the process's resources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub resident_bytes: u64,
    /// Virtual memory size in bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors (`None`: unlimited).
    pub max_fds: Option<u64>,
    /// Unix time the process started.
    pub start_time_seconds: f64,
    /// Threads.
    pub threads: u64,
}

/// Reads the [`Sample`] of process `pid` (`self` for the caller) under `proc_dir` (normally
/// `/proc`); `None` when a file is missing or not in the expected format.
pub fn sample(proc_dir: &Path, pid: &str) -> Option<Sample> {
    let me = proc_dir.join(pid);
    let stat = std::fs::read_to_string(me.join("stat")).ok()?;
    let status = std::fs::read_to_string(me.join("status")).ok()?;
    let limits = std::fs::read_to_string(me.join("limits")).ok()?;
    let boot = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    let open_fds = std::fs::read_dir(me.join("fd")).ok()?.count();
    parse(
        &stat,
        &status,
        &limits,
        &boot,
        open_fds,
        rustix::param::clock_ticks_per_second(),
    )
}

/// The pure part of [`sample`]: the texts of `/proc/self/{stat,status,limits}` and `/proc/stat`.
fn parse(
    stat: &str,
    status: &str,
    limits: &str,
    boot: &str,
    open_fds: usize,
    ticks_per_second: u64,
) -> Option<Sample> {
    // The command name (field 2) may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = ticks_per_second.max(1) as f64;
    let cpu_seconds = (field(14)? + field(15)?) as f64 / ticks;
    let threads = field(20)?;
    let start_ticks = field(22)?;
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        line.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
    };
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?;
    Some(Sample {
        cpu_seconds,
        resident_bytes: kib("VmRSS:")? * 1024,
        virtual_bytes: kib("VmSize:")? * 1024,
        open_fds: open_fds as u64,
        max_fds: max_fds.parse().ok(),
        start_time_seconds: btime as f64 + start_ticks as f64 / ticks,
        threads,
    })
}

#[derive(Debug)]
struct ProcessCollector {
    proc_dir: std::path::PathBuf,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = sample(&self.proc_dir, "self") else {
            return Ok(());
        };
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let mut gauge = |name: &str, help: &str, value: f64| -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            s.resident_bytes as f64,
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            s.virtual_bytes as f64,
        )?;
        gauge(
            "process_open_fds",
            "Number of open file descriptors",
            s.open_fds as f64,
        )?;
        if let Some(max) = s.max_fds {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors",
                max as f64,
            )?;
        }
        gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            s.start_time_seconds,
        )?;
        gauge("process_threads", "Number of OS threads", s.threads as f64)
    }
}

#[cfg(test)]
mod tests;
