//! Tests of the standard metric names and labels.

use super::*;

#[test]
fn standard_set_is_exported_with_agent_label() {
    let mut reg = Registry::default();
    let m = ReconcileMetrics::register(&mut reg, "cpm-test");
    m.observe_pass(true, 0.01, 1_700_000_000.0);
    m.observe_pass(false, 0.02, 1_700_000_001.0);
    m.observe_plan(&[("create", 2), ("delete", 0)]);
    let text = encode(&reg);
    for want in [
        "cpm_reconcile_total{agent=\"cpm-test\",result=\"success\"} 1",
        "cpm_reconcile_total{agent=\"cpm-test\",result=\"error\"} 1",
        "cpm_reconcile_duration_seconds_count{agent=\"cpm-test\"} 2",
        "cpm_last_success_timestamp_seconds{agent=\"cpm-test\"} 1700000000.0",
        "cpm_planned_changes{agent=\"cpm-test\",op=\"create\"} 2",
        "# EOF",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}
