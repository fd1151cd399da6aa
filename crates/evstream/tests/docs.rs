//! Every alert rule of the ops loop has a runbook entry and a Prometheus rule at each of its
//! levels, so the three cannot drift apart.

use evstream::ops::alerts::Alert;

fn read(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_alert_has_a_runbook_entry_and_a_prometheus_rule() {
    let runbook = read("docs/operations.md");
    let rules = read("deploy/prometheus/alerts.yml");
    for alert in Alert::ALL {
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

/// Each Prometheus rule's `severity` label is the one the next `severity:` line after its
/// `- alert:` line gives. Rules Prometheus alone has (`OpsLoopAbsent`) are not the ops loop's.
#[test]
fn every_alert_level_has_a_prometheus_rule_and_no_other() {
    let rules = read("deploy/prometheus/alerts.yml");
    let mut levels = Vec::new();
    let mut current = None;
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            current = Alert::ALL
                .iter()
                .any(|alert| alert.name() == name)
                .then(|| name.to_owned());
        } else if let Some(severity) = line.strip_prefix("severity: ") {
            if let Some(name) = current.take() {
                levels.push((name, severity.to_owned()));
            }
        }
    }
    let mut expected: Vec<(String, String)> = Alert::ALL
        .iter()
        .flat_map(|alert| {
            alert
                .severities()
                .iter()
                .map(|severity| (alert.name().to_owned(), severity.as_str().to_owned()))
        })
        .collect();
    expected.sort();
    levels.sort();
    assert_eq!(levels, expected, "deploy/prometheus/alerts.yml");
}

/// Issue 23: every metric of the tables in `docs/operations.md`'s IntelliSense section is
/// charted by a panel of the shipped Grafana dashboard.
#[test]
fn every_intellisense_metric_has_a_dashboard_panel() {
    let operations = read("docs/operations.md");
    let section = operations
        .split("### IntelliSense (")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("docs/operations.md has an IntelliSense metrics section");
    let metrics: Vec<&str> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `evstream_"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    assert!(metrics.len() >= 6, "{metrics:?}");
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/evstream.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    for metric in metrics {
        let name = format!("evstream_{metric}");
        let charted = panels.iter().any(|panel| {
            panel["targets"].as_array().is_some_and(|targets| {
                targets
                    .iter()
                    .any(|t| t["expr"].as_str().is_some_and(|e| e.contains(&name)))
            })
        });
        assert!(
            charted,
            "no panel of deploy/grafana/evstream.json charts {name}"
        );
    }
}
