//! `bench-fair`: one customer's backlog against another customer's single
//! edits. Customer A has `pushes` outbound pushes queued at once (half as
//! many contacts, each to HubSpot and Pipedrive); meanwhile customer B
//! creates one contact every `every_ms`. Prints how fast A's backlog
//! drains and B's write → both links synced, which fair groups keep short
//! however long A's backlog is.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::{isolate, percentile, unthrottled_stack, wait_ready};
use crate::stack::{DevConfig, Stack};
use contact_sync::domain::{ContactId, CustomerId, Provider};
use contact_sync::jobs::{Enqueuer, Kind, OutboundUpsert};
use contact_sync::store::{Contact, Store};

/// Pushes of B's that may be queued or running at any moment: what is
/// left when A's backlog is done.
const B_IN_FLIGHT: u64 = 4;

/// Contacts written to MongoDB per `insert_many`.
const INSERT_CHUNK: usize = 1000;

/// What the run measures.
#[derive(Debug, Clone, Copy)]
pub struct Fair {
    /// Customer A's queued pushes (two per contact).
    pub pushes: usize,
    /// Milliseconds between customer B's writes.
    pub every_ms: u64,
    /// Longest the run goes on once A's backlog is queued.
    pub max_secs: u64,
}

/// Runs the benchmark.
///
/// # Errors
/// When the stack does not start, or the api refuses a write.
pub async fn bench_fair(mut cfg: DevConfig, fair: Fair) -> anyhow::Result<()> {
    isolate(&mut cfg);
    // the customers' connections start no first sync: the run measures pushes
    cfg.jobs.first_sync_on_connect = false;
    // the queue's fairness is measured: each push is a job of its own
    cfg.worker.gather_backlog = 0;
    unthrottled_stack(&mut cfg)?;
    cfg.sim.simulator_webhook_url = Some(String::new());
    cfg.sim.simulator_events_url = Some(String::new());
    let stack = Stack::start(cfg.clone()).await?;
    let http = reqwest::Client::new();
    let base = format!("http://{}", stack.api_addr);
    wait_ready(&http, &base).await?;
    let token = stack.token.clone();
    for id in ["cust-a", "cust-b"] {
        let r = http
            .post(format!("{base}/api/customers"))
            .bearer_auth(&token)
            .json(
                &json!({ "id": id, "name": id, "connections": { "hubspot": {}, "pipedrive": {} } }),
            )
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 201, "creating {id}: {}", r.status());
    }

    // A's contacts, written straight to MongoDB, and their pushes queued
    // in bulk: the backlog a re-sync of a large account makes.
    let contacts = fair.pushes.div_ceil(2);
    let a = CustomerId::parse("cust-a").map_err(anyhow::Error::msg)?;
    let client = mongodb::Client::with_uri_str(&cfg.mongo.mongodb_uri).await?;
    let raw = client
        .database(&cfg.mongo.mongodb_db)
        .collection::<Contact>("contacts");
    let queue = workers::Queue::connect(&cfg.redis.redis_url, &cfg.redis.redis_namespace).await?;
    let enqueuer = Enqueuer::new(queue.clone(), cfg.jobs.retry_attempts);
    let queued_at = Instant::now();
    let mut ids = Vec::with_capacity(contacts);
    for start in (0..contacts).step_by(INSERT_CHUNK) {
        let chunk: Vec<Contact> = (start..(start + INSERT_CHUNK).min(contacts))
            .map(|i| {
                let email = format!("a{i}@example.com");
                super::stored_contact(&a, &email, "Backlog".into(), format!("{i}"))
            })
            .collect();
        raw.insert_many(&chunk)
            .await
            .context("inserting A's contacts")?;
        let jobs: Vec<(String, OutboundUpsert)> = chunk
            .iter()
            .flat_map(|c| {
                Provider::ALL.into_iter().map(|p| {
                    (
                        workers::new_job_id(),
                        OutboundUpsert {
                            contact_id: c.id,
                            provider: p,
                            version: 1,
                            customer: Some(a.clone()),
                            singly: false,
                        },
                    )
                })
            })
            .collect();
        enqueuer.push_all(jobs).await?;
        ids.extend(chunk.iter().map(|c| c.id));
    }
    println!(
        "customer A: {} pushes ({contacts} contacts) queued in {:.1} s",
        contacts * 2,
        queued_at.elapsed().as_secs_f64()
    );

    // B writes one contact every `every_ms` while A's backlog drains.
    let store = Store::connect(&cfg.mongo.mongodb_uri, &cfg.mongo.mongodb_db).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(fair.max_secs);
    let mut b_sent: Vec<(ContactId, i64)> = Vec::new();
    // writes whose jobs the api could not queue within its 1 s wait (the
    // outbox relay queues them later)
    let mut b_late = 0;
    let mut drained_after = None;
    let mut i = 0u64;
    while Instant::now() < deadline {
        let due = started + Duration::from_millis(fair.every_ms * i);
        tokio::time::sleep_until(due.into()).await;
        let sent_ms = bson::DateTime::now().timestamp_millis();
        let r = http
            .post(format!("{base}/api/contacts"))
            .bearer_auth(&token)
            .json(&json!({ "email": format!("b{i}@example.com"), "customerId": "cust-b" }))
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 202, "B's write: {}", r.status());
        let v: serde_json::Value = r.json().await?;
        let id = v["contact"]["id"]
            .as_str()
            .and_then(|s| ContactId::parse(s).ok())
            .context("no contact id")?;
        if v["queued"] == false {
            b_late += 1;
        }
        b_sent.push((id, sent_ms));
        i += 1;
        if i.is_multiple_of(10) {
            let left = queue
                .counts(<OutboundUpsert as Kind>::QUEUE)
                .await?
                .outstanding();
            // B's own latest pushes may be under way
            if left <= B_IN_FLIGHT {
                drained_after = Some(started.elapsed());
                break;
            }
        }
    }
    let left = queue
        .counts(<OutboundUpsert as Kind>::QUEUE)
        .await?
        .outstanding();
    let elapsed = drained_after.unwrap_or_else(|| started.elapsed());

    // the last of B's writes get their time to sync
    let settle = Instant::now() + Duration::from_secs(30);
    let mut b_us = Vec::with_capacity(b_sent.len());
    loop {
        b_us.clear();
        let b_ids: Vec<ContactId> = b_sent.iter().map(|(id, _)| *id).collect();
        let links = store.links_of(&b_ids).await?;
        let mut all = true;
        for (id, sent_ms) in &b_sent {
            let done: Vec<i64> = links
                .iter()
                .filter(|l| l.contact_id == *id && l.sync_status.as_str() == "synced")
                .filter_map(|l| l.last_synced_at.map(|t| t.timestamp_millis()))
                .collect();
            if done.len() < 2 {
                all = false;
                continue;
            }
            let at = done.into_iter().max().unwrap_or(*sent_ms);
            b_us.push(((at - sent_ms).max(0) as u64) * 1000);
        }
        if all || Instant::now() > settle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b_us.sort_unstable();
    let total = contacts * 2;
    let left = left.saturating_sub(B_IN_FLIGHT);
    let a_done = total - (left as usize).min(total);
    println!("mongodb: {}", cfg.mongo.mongodb_uri);
    println!(
        "customer A: {a_done} of {total} pushes done in {:.1} s = {:.0} pushes/s{}",
        elapsed.as_secs_f64(),
        a_done as f64 / elapsed.as_secs_f64(),
        if drained_after.is_some() {
            " (backlog drained)".to_owned()
        } else {
            format!(" ({left} still queued when the run stopped)")
        }
    );
    println!(
        "customer B: {} writes, one every {} ms ({b_late} left to the outbox relay), {} synced; write -> both links synced: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        b_sent.len(),
        fair.every_ms,
        b_us.len(),
        percentile(&b_us, 0.50),
        percentile(&b_us, 0.90),
        percentile(&b_us, 0.99),
        b_us.last().copied().unwrap_or_default() as f64 / 1000.0,
    );
    let rate = a_done.max(1) as f64 / elapsed.as_secs_f64();
    println!(
        "(in one first-in-first-out line, B's first write would have waited for A's whole backlog: ~{:.0} s at that rate)",
        total as f64 / rate
    );
    stack.stop().await;
    let _ = client.database(&cfg.mongo.mongodb_db).drop().await;
    Ok(())
}
