//! The operator commands (`jobs`, `links`, `workers`, `stats`), run as the
//! built binary against a running deployment.

mod common;

use std::time::Duration;

use clap::CommandFactory;
use common::{eventually, run_cli, TestApp, TOKEN};
use serde_json::json;

#[test]
fn the_command_line_has_no_clashing_arguments() {
    contact_sync::cli::Cli::command().debug_assert();
}

#[tokio::test]
async fn an_operator_finds_inspects_and_retries_a_dead_job() {
    // Arrange: a hubspot push that dies.
    let app = TestApp::spawn().await;
    app.set_faults(json!({ "failRecords": ["cli@example.com"] }))
        .await;
    let (status, body) = app
        .create(json!({ "firstName": "Cli", "email": "cli@example.com" }))
        .await;
    assert_eq!(status, 202, "{body}");
    let contact = body["contact"]["id"].as_str().unwrap().to_owned();
    let job_id = common::job_id(&body, "hubspot");
    app.wait_link(&contact, "hubspot", "error", Duration::from_secs(10))
        .await;

    // jobs list --json: the dead job is there, as the api sent it (the
    // link is marked just before the job is parked, so poll briefly)
    let job = eventually(Duration::from_secs(5), "job in the dead list", || async {
        let dead = app
            .cli(&[
                "jobs",
                "list",
                "--queue",
                "outbound-upsert",
                "--state",
                "dead",
                "--json",
            ])
            .await
            .json();
        let jobs = dead.as_array().expect("an array of jobs");
        jobs.iter().find(|j| j["id"] == job_id.as_str()).cloned()
    })
    .await;
    assert_eq!(job["state"], "dead", "{job}");

    // jobs show: the error and each failed attempt
    let shown = app.cli(&["jobs", "show", &job_id]).await;
    assert!(shown.success, "{}", shown.stderr);
    let error = job["error"].as_str().expect("a last error");
    assert!(
        shown.stdout.contains(error),
        "error shown: {}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("failed attempts"),
        "attempts shown: {}",
        shown.stdout
    );

    // links list --status error: a table with a header row
    let links = app.cli(&["links", "list", "--status", "error"]).await;
    assert!(links.success, "{}", links.stderr);
    let mut lines = links.stdout.lines();
    let header = lines.next().unwrap_or_default();
    for column in ["CONTACT", "PROVIDER", "STATUS", "LAST ERROR"] {
        assert!(header.contains(column), "{column} in header: {header}");
    }
    assert!(
        lines.any(|l| l.starts_with(&contact) && l.contains("hubspot") && l.contains("error")),
        "a row for the link: {}",
        links.stdout
    );

    // stats --json parses, with both parts
    let stats = app.cli(&["stats", "--json"]).await.json();
    assert!(stats["queues"].is_array(), "{stats}");
    assert!(stats["connections"].is_array(), "{stats}");

    // lift the fault, retry: the link recovers
    app.set_faults(json!({})).await;
    let retried = app.cli(&["jobs", "retry", &job_id]).await;
    assert!(retried.success, "{}", retried.stderr);
    app.wait_link(&contact, "hubspot", "synced", Duration::from_secs(5))
        .await;

    // a second retry is refused with the api's message
    let again = app.cli(&["jobs", "retry", &job_id]).await;
    assert!(!again.success, "a job that is not dead is not retried");
    assert!(again.stderr.contains("not dead"), "{}", again.stderr);
}

#[tokio::test]
async fn a_bad_token_or_url_fails_with_a_message() {
    let app = TestApp::spawn().await;

    let wrong = "not-the-token";
    let run = app
        .cli_env(&["stats"], &[("CONTACT_SYNC_TOKEN", wrong)])
        .await;
    assert!(!run.success, "refused: {}", run.stdout);
    assert!(run.stderr.contains("401"), "status named: {}", run.stderr);
    assert!(
        run.stderr.contains("invalid bearer token"),
        "api's message: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains(wrong) && !run.stdout.contains(wrong),
        "token never printed: {}",
        run.stderr
    );

    let fallback = app.cli_env(&["workers"], &[("API_TOKEN", TOKEN)]).await;
    assert!(
        fallback.success,
        "API_TOKEN is the fallback: {}",
        fallback.stderr
    );

    let nobody = "http://127.0.0.1:9";
    let down = run_cli(&["workers"], nobody, &[("CONTACT_SYNC_TOKEN", TOKEN)]).await;
    assert!(!down.success);
    assert!(
        down.stderr.contains("127.0.0.1:9"),
        "URL named: {}",
        down.stderr
    );
}
