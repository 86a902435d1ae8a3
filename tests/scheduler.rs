//! The scheduler (apalis-cron ticks, each claimed once in Redis): replicas
//! sharing one Redis queue every tick's polls exactly once, and a
//! scheduler stops cleanly on SIGTERM.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{eventually, terminate, Options, TestApp};
use reqwest::Method;
use serde_json::Value;

/// Seconds between ticks.
const STEP_SECS: i64 = 2;
/// Ticks to wait for before stopping the schedulers.
const TICKS: usize = 4;

/// The jobs of the provider-poll queue in `state`, as the api lists them.
async fn polls(app: &TestApp, state: &str) -> Vec<Value> {
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/api/queues/provider-poll/jobs?state={state}&limit=500"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().expect("a list of jobs")
}

/// Tick numbers of the queued polls, per provider, in queueing order. A
/// tick's polls are queued just after its instant, so the tick is the
/// nearest multiple of the step to the job's creation time.
fn ticks_by_provider(jobs: &[Value]) -> BTreeMap<String, Vec<i64>> {
    let step_ms = STEP_SECS * 1000;
    let mut by: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for j in jobs {
        let provider = j["payload"]["provider"].as_str().expect("provider");
        let created = j["createdMs"].as_i64().expect("createdMs");
        by.entry(provider.to_owned())
            .or_default()
            .push((created + step_ms / 2) / step_ms);
    }
    for ticks in by.values_mut() {
        ticks.sort_unstable();
    }
    by
}

#[tokio::test]
async fn two_schedulers_queue_every_tick_once() {
    let mut app = TestApp::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let logs =
        std::env::temp_dir().join(format!("contact-sync-scheduler-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&logs).unwrap();
    let step = STEP_SECS.to_string();
    let env = [
        ("POLL_INTERVAL_SECS", step.as_str()),
        ("POLL_PROVIDERS", "pipedrive,hubspot"),
        ("RUST_LOG", "info"),
    ];
    let log_of = |i: usize| logs.join(format!("scheduler-{i}.log"));
    for i in 0..2 {
        app.add_scheduler(&env, &log_of(i));
    }

    // no worker runs, so every poll queued stays pending
    eventually(
        Duration::from_secs(10 + 3 * TICKS as u64 * STEP_SECS as u64),
        &format!("{TICKS} ticks of polls queued"),
        || async {
            let by = ticks_by_provider(&polls(&app, "pending").await);
            let enough = ["hubspot", "pipedrive"]
                .iter()
                .all(|p| by.get(*p).is_some_and(|t| t.len() >= TICKS));
            enough.then_some(())
        },
    )
    .await;

    // both replicas ticked all along, and each stops cleanly on SIGTERM
    for (i, s) in app.schedulers.iter_mut().enumerate() {
        assert!(
            s.try_wait().unwrap().is_none(),
            "scheduler {i} exited early; see {}",
            log_of(i).display()
        );
    }
    for i in 0..app.schedulers.len() {
        let status = terminate(&mut app.schedulers[i], Duration::from_secs(10)).await;
        assert!(
            status.success(),
            "scheduler {i} exited with {status}: {}",
            std::fs::read_to_string(log_of(i)).unwrap_or_default()
        );
        let log = std::fs::read_to_string(log_of(i)).unwrap();
        assert!(log.contains("scheduler started"), "scheduler {i}: {log}");
        assert!(log.contains("scheduler stopped"), "scheduler {i}: {log}");
    }

    // each tick queued one poll per provider: none twice, none skipped
    let jobs = polls(&app, "pending").await;
    for j in &jobs {
        assert_eq!(
            j["payload"]["backfill"], false,
            "a scheduled poll is no backfill: {j}"
        );
    }
    let by = ticks_by_provider(&jobs);
    assert_eq!(
        by.keys().map(String::as_str).collect::<Vec<_>>(),
        ["hubspot", "pipedrive"],
        "polls of the providers in POLL_PROVIDERS: {jobs:?}"
    );
    for (provider, ticks) in &by {
        let mut distinct = ticks.clone();
        distinct.dedup();
        assert_eq!(
            &distinct, ticks,
            "{provider}: a tick queued more than one poll (tick numbers {ticks:?})"
        );
        let (first, last) = (ticks[0], ticks[ticks.len() - 1]);
        assert_eq!(
            ticks.len() as i64,
            last - first + 1,
            "{provider}: a tick between the first and the last queued no poll (tick numbers {ticks:?})"
        );
    }
    for state in ["scheduled", "running", "done", "dead"] {
        assert!(polls(&app, state).await.is_empty(), "no poll is {state}");
    }
    let counts = app.queue().await.counts("provider-poll").await.unwrap();
    assert_eq!(counts.pending, jobs.len() as u64, "{counts:?}");

    let _ = std::fs::remove_dir_all(&logs);
}

/// Every job of the provider-poll queue in `state` (all pages).
async fn all_polls(app: &TestApp, state: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let (status, body) = app
            .call(
                Method::GET,
                &format!(
                    "/api/queues/provider-poll/jobs?state={state}&limit=500&offset={}",
                    out.len()
                ),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let page = body.as_array().cloned().expect("a list of jobs");
        let last = page.len() < 500;
        out.extend(page);
        if last {
            return out;
        }
    }
}

#[tokio::test]
async fn polls_of_200_connections_are_spread_over_the_interval_once_each() {
    const CONNECTIONS: usize = 200;
    const INTERVAL_SECS: i64 = 8;
    let mut app = TestApp::spawn().await;
    for i in 0..CONNECTIONS {
        let (status, body) = app
            .call(
                Method::POST,
                "/api/customers",
                Some(serde_json::json!({
                    "id": format!("c{i:03}"), "name": format!("Customer {i}"),
                    "connections": { "pipedrive": {} },
                })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let logs = std::env::temp_dir().join(format!("contact-sync-spread-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&logs).unwrap();
    let interval = INTERVAL_SECS.to_string();
    app.add_scheduler(
        &[
            ("POLL_INTERVAL_SECS", interval.as_str()),
            ("POLL_PROVIDERS", "pipedrive"),
        ],
        &logs.join("scheduler.log"),
    );

    // Three intervals: the queue never holds more than a few polls.
    let q = app.queue().await;
    let mut most = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3 * INTERVAL_SECS as u64 + 1) {
        let c = q.counts("provider-poll").await.unwrap();
        most = most.max(c.pending + c.running);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    terminate(&mut app.schedulers[0], Duration::from_secs(10)).await;
    app.settle(Duration::from_secs(30)).await;
    // Each connection polled once in every interval the run fully covered,
    // 201 connections (the default customer's too) over 8 one-second slots:
    // about 25 queued a second; all at once would be 201.
    let done = all_polls(&app, "done").await;
    let mut per_second: BTreeMap<i64, usize> = BTreeMap::new();
    for j in &done {
        *per_second
            .entry(j["createdMs"].as_i64().unwrap() / 1000)
            .or_default() += 1;
    }
    let burst = per_second.values().max().copied().unwrap_or(0);
    eprintln!(
        "{} polls; at most {burst} queued in one second, {most} waiting at once",
        done.len()
    );
    // What the scheduler controls is how many it queues at once; how many
    // then wait depends on the worker's speed (two polls at a time), which
    // a loaded machine slows: printed above, not asserted.
    assert!(burst <= 60, "at most {burst} polls queued in one second");
    let interval_ms = INTERVAL_SECS * 1000;
    let mut by: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for j in &done {
        let customer = j["payload"]["customer"]
            .as_str()
            .expect("customer")
            .to_owned();
        let created = j["createdMs"].as_i64().expect("createdMs");
        by.entry(customer).or_default().push(created / interval_ms);
    }
    assert_eq!(by.len(), CONNECTIONS + 1, "every connection was polled");
    let first = by.values().flatten().min().copied().unwrap();
    let last = by.values().flatten().max().copied().unwrap();
    assert!(last - first >= 2, "the run covered a whole interval");
    for (customer, intervals) in &by {
        for i in first + 1..last {
            let n = intervals.iter().filter(|x| **x == i).count();
            assert_eq!(
                n, 1,
                "{customer} polled {n} times in interval {i}: {intervals:?}"
            );
        }
    }
    assert!(all_polls(&app, "dead").await.is_empty());
    let _ = std::fs::remove_dir_all(&logs);
}
