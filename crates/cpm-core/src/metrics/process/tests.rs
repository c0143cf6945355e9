//! Tests of the `/proc` parsing and of the encoded process and build metrics.

use prometheus_client::registry::Registry;

use super::*;

const STAT: &str = "4242 (cpm (x) 1) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 7 0 1234 \
                    20000000 3000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
const STATUS: &str = "Name:\tcpm\nVmSize:\t   20480 kB\nVmRSS:\t    6144 kB\nThreads:\t7\n";
const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
const BOOT: &str = "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n";

#[test]
fn parses_the_proc_files_of_a_command_with_spaces_and_parentheses() {
    let s = parse(STAT, STATUS, LIMITS, BOOT, 9, 100).unwrap();
    assert_eq!(
        s,
        Sample {
            cpu_seconds: 3.0,
            resident_bytes: 6144 * 1024,
            virtual_bytes: 20480 * 1024,
            open_fds: 9,
            max_fds: Some(1024),
            start_time_seconds: 1_700_000_012.34,
            threads: 7,
        }
    );
    let unlimited = LIMITS.replace("1024   ", "unlimited");
    assert_eq!(
        parse(STAT, STATUS, &unlimited, BOOT, 9, 100)
            .unwrap()
            .max_fds,
        None
    );
    assert_eq!(parse("garbage", STATUS, LIMITS, BOOT, 9, 100), None);
    assert_eq!(parse(STAT, "Name:\tcpm\n", LIMITS, BOOT, 9, 100), None);
}

#[test]
fn the_registry_exports_this_process_and_the_build() {
    let mut registry = Registry::default();
    register(&mut registry);
    let text = crate::metrics::encode(&registry);
    for name in [
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
        "process_threads ",
    ] {
        assert!(text.contains(&format!("\n{name}")), "{name}: {text}");
    }
    let build = format!(
        "cpm_build_info{{version=\"{}\",revision=\"{}\"}} 1",
        crate::build::VERSION,
        crate::build::GIT_SHA
    );
    assert!(text.contains(&build), "{text}");
    let rss: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss > 0.0, "{text}");
}
