//! Structured logs: with `LOG_FORMAT=json` every line a job writes is one
//! JSON object carrying the job id, and for a push the contact and the CRM,
//! failed attempts and dead-lettering included.

mod common;

use std::time::Duration;

use common::{eventually, Options, TestApp};
use serde_json::{json, Map, Value};

/// The fields of every span a line was written in, merged.
fn span_fields(line: &Value) -> Map<String, Value> {
    let mut all = Map::new();
    for span in line["spans"].as_array().into_iter().flatten() {
        if let Some(o) = span.as_object() {
            all.extend(o.clone());
        }
    }
    all
}

#[tokio::test]
async fn json_logs_name_the_job_contact_and_provider_on_every_line() {
    let mut app = TestApp::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let dir = std::env::temp_dir().join(format!("contact-sync-logs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("worker.log");
    app.add_worker_logging(
        &[("LOG_FORMAT", "json"), ("RUST_LOG", "info,mongodb=warn")],
        &log,
    );
    // one contact that syncs, one the CRMs always refuse (warning lines)
    app.set_faults(json!({ "failRecords": ["failing@example.com"] }))
        .await;
    let ok = app.create_ok("logged@example.com").await;
    let failing = app.create_ok("failing@example.com").await;
    for p in ["hubspot", "pipedrive"] {
        app.wait_link(&ok, p, "synced", Duration::from_secs(5))
            .await;
        app.wait_link(&failing, p, "error", Duration::from_secs(10))
            .await;
    }
    let lines: Vec<Value> = eventually(Duration::from_secs(3), "the pushes logged", || async {
        let text = std::fs::read_to_string(&log).ok()?;
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let count = |m: &str| lines.iter().filter(|l| l["fields"]["message"] == m).count();
        (count("pushed") >= 2 && count("job is dead") >= 2).then_some(lines)
    })
    .await;

    let job_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| span_fields(l).contains_key("queue"))
        .collect();
    assert!(job_lines.len() >= 4, "{lines:#?}");
    for l in &job_lines {
        let f = span_fields(l);
        assert!(f["job_id"].as_str().is_some_and(|s| !s.is_empty()), "{l}");
        if f["queue"] == "outbound-upsert" {
            let contact = f["contact_id"].as_str().unwrap_or_default();
            assert!(contact == ok || contact == failing, "{l}");
            assert!(
                f["provider"] == "hubspot" || f["provider"] == "pipedrive",
                "{l}"
            );
        }
    }
    for message in ["attempt failed; retrying", "job is dead"] {
        assert!(
            job_lines.iter().any(|l| l["level"] == "WARN"
                && l["fields"]["message"] == message
                && span_fields(l)["contact_id"] == failing.as_str()),
            "{message:?} is logged with its contact: {job_lines:#?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
