//! The alert rules in deploy/prometheus/alerts.yaml name only metrics some binary (ingest,
//! dispatch, verification) really exports, and
//! each points at a runbook heading that exists in docs/operations.md: a renamed metric or heading
//! fails here instead of leaving an alert that can never fire or a link that leads nowhere.
//! (promtool checks the rules' syntax and unit-tests them in scripts/check-deploy.)

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use email2sms_ingest::smtp::Reply;

fn repository_file(path: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Every `email2sms_…` name in the rules' expressions, with the sample suffixes Prometheus adds
/// (`_total`, `_bucket`, `_count`, `_sum`) taken off, so it can be compared with the families.
fn metric_families_in_rules(rules: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in rules.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with("summary:") || line.starts_with("runbook_url:")
        {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("email2sms_") {
            let tail = &rest[start..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let family = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.insert(family.to_owned());
            rest = &tail[end..];
        }
    }
    names
}

#[test]
fn every_metric_an_alert_names_is_exported() {
    // A family with no samples yet is still described (# TYPE); one observation each makes sure
    // the labelled ones are too.
    let m = email2sms_ingest::metrics::metrics();
    m.message_answered(
        &Reply::new(250, "2.0.0", "queued"),
        Duration::from_millis(1),
    );
    m.spf_result("pass");
    m.lookup_answered_by(email2sms_ingest::policy::Source::Redis);
    use email2sms_dispatch::metrics::{self as dispatch, Announced, JobQueue, ReceiptMatch};
    dispatch::metrics().receipt(ReceiptMatch::Matched, "smpp");
    Announced(vec![(
        email2sms_dispatch::jobs::JobState::Delivered,
        dispatch::connector_label(Some("smpp")),
    )])
    .committed();
    dispatch::metrics().set_depth(JobQueue::Jobs, String::new(), 0);
    email2sms_verification::metrics::metrics()
        .dns_check(&email2sms_verification::dns::TxtAnswer::NxDomain);
    let registries = [
        email2sms_metrics::encode(&m.registry),
        email2sms_metrics::encode(&email2sms_dispatch::metrics::metrics().registry),
        email2sms_metrics::encode(&email2sms_verification::metrics::metrics().registry),
    ];
    let exported: BTreeSet<String> = registries
        .iter()
        .flat_map(|text| text.lines())
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next())
        .map(str::to_owned)
        .collect();
    let named = metric_families_in_rules(&repository_file("deploy/prometheus/alerts.yaml"));
    assert!(!named.is_empty(), "the rules name no metric");
    let missing: Vec<&String> = named.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "alerts name metrics nobody exports: {missing:?}; exported: {exported:?}"
    );
}

#[test]
fn every_runbook_link_is_a_heading_of_the_operations_guide() {
    let rules = repository_file("deploy/prometheus/alerts.yaml");
    let guide = repository_file("docs/operations.md");
    // GitHub's anchors: the heading lower-cased, spaces to hyphens, punctuation dropped.
    let anchors: BTreeSet<String> = guide
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| {
            heading
                .trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let links: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("runbook_url: docs/operations.md#"))
        .collect();
    let alerts = rules
        .lines()
        .filter(|line| line.trim().starts_with("- alert:"))
        .count();
    assert_eq!(
        links.len(),
        alerts,
        "every alert has a runbook_url into docs/operations.md"
    );
    for link in links {
        assert!(
            anchors.contains(link),
            "no heading for #{link} in docs/operations.md: {anchors:?}"
        );
    }
}
