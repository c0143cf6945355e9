//! Idle checks for daemons under test: an idle daemon does no work (PRODUCT.md §6.9).
//!
//! A daemon's passes (or reloads) are counted by a metric on its admin server. [`assert_idle`]
//! reads every input file the way a pass does, repeatedly, waits well past the file-watch
//! debounce, and asserts that the counter did not move: reading inputs must never start work.
//! The observation window is a bound on how long an event takes to arrive, not a measurement.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a read event, had it triggered anything, would have taken to show: the 200 ms
/// debounce of `cpm_core::watch` and a pass, with a wide margin for a loaded machine.
pub const SETTLE: Duration = Duration::from_secs(3);

/// `GET http://<admin><path>`; the status and the body, or `None` when it cannot be reached.
pub fn http_get(admin: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

/// `/metrics` of the admin server at `admin` (panics when it cannot be scraped).
pub fn scrape(admin: &str) -> String {
    match http_get(admin, "/metrics") {
        Some((200, body)) => body,
        other => panic!("cannot scrape http://{admin}/metrics: {other:?}"),
    }
}

/// The sum of every sample in `metrics` whose name and labels start with `series` (for example
/// `cpm_reconcile_total{agent="cpm-certs"` sums every result); 0 when there is none.
pub fn sum(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Opens and reads every file under each of `paths` (a file, or a directory walked
/// recursively, following no symlinked directories), as an agent's pass does.
pub fn read_inputs(paths: &[PathBuf]) {
    for p in paths {
        read_tree(p);
    }
}

fn read_tree(p: &Path) {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return;
    };
    if md.is_dir() {
        if let Ok(entries) = std::fs::read_dir(p) {
            for e in entries.flatten() {
                read_tree(&e.path());
            }
        }
    } else {
        let _ = std::fs::read(p);
    }
}

/// Waits until the `series` counter on `admin` holds still for [`SETTLE`] (a daemon's first
/// pass may write files that start one more pass, which then plans nothing); panics when it
/// keeps moving for ten windows: the daemon never goes idle.
pub fn settle(admin: &str, series: &str) -> f64 {
    let mut last = sum(&scrape(admin), series);
    for _ in 0..10 {
        std::thread::sleep(SETTLE);
        let now = sum(&scrape(admin), series);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("{series} never held still on {admin}: the daemon never goes idle (at {last})");
}

/// Asserts that the daemon settles ([`settle`]), and that reading `inputs` (ten times over,
/// then [`SETTLE`]) leaves the `series` counter where it was; returns its value. Also checks
/// that the process metrics and `cpm_build_info` are exported.
pub fn assert_idle(admin: &str, series: &str, inputs: &[PathBuf]) -> f64 {
    let before = settle(admin, series);
    for _ in 0..10 {
        read_inputs(inputs);
    }
    std::thread::sleep(SETTLE);
    let metrics = scrape(admin);
    let after = sum(&metrics, series);
    assert_eq!(
        before, after,
        "reading the inputs started work ({series}: {before} -> {after}):\n{metrics}"
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "cpm_build_info{",
    ] {
        assert!(metrics.contains(name), "{name} is not exported:\n{metrics}");
    }
    after
}

/// [`assert_idle`] for a daemon that talks to `api`: once its counter has settled, reading its
/// inputs must start neither a pass nor any request to the API server (its watches stay open
/// and quiet). Returns the counter's value.
pub fn assert_idle_against(
    api: &crate::apiserver::ApiServer,
    admin: &str,
    series: &str,
    inputs: &[PathBuf],
) -> f64 {
    settle(admin, series);
    let seen = api.requests().len();
    let passes = assert_idle(admin, series, inputs);
    let during: Vec<String> = api.requests()[seen..]
        .iter()
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.code))
        .collect();
    assert!(during.is_empty(), "API requests while idle: {during:#?}");
    passes
}
