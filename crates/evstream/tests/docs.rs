//! Every alert rule of the ops loop has a runbook entry and a Prometheus rule, so the three
//! cannot drift apart.

use evstream::ops::ALERTS;

fn read(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_alert_has_a_runbook_entry_and_a_prometheus_rule() {
    let runbook = read("docs/operations.md");
    let rules = read("deploy/prometheus/alerts.yml");
    for (alert, _) in ALERTS {
        assert!(
            runbook.lines().any(|l| l.trim() == format!("### {alert}")),
            "docs/operations.md has no `### {alert}` runbook entry"
        );
        assert!(
            rules
                .lines()
                .any(|l| l.trim() == format!("- alert: {alert}")),
            "deploy/prometheus/alerts.yml has no rule for {alert}"
        );
    }
}
