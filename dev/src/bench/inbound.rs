//! `contact-sync-dev bench-inbound`: inbound apply throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::{isolate, send_creations, unthrottled_stack};
use crate::stack::{DevConfig, Stack};
use contact_sync::domain::{Provider, SyncStatus};
use contact_sync::jobs::{InboundChange, Kind, OutboundUpsert};
use contact_sync::store::Store;

/// `contact-sync bench-inbound`: inbound apply throughput. `changes`
/// contacts are created in simulated HubSpot (its webhooks off), one
/// `inbound-change` job per record is queued at once, and the clock runs
/// until every one is applied locally (link `synced`); the pushes of those
/// contacts on to Pipedrive are timed too.
///
/// # Errors
/// When the stack does not start or the run does not finish in 10 minutes.
pub async fn bench_inbound(
    mut cfg: DevConfig,
    changes: usize,
    webhooks: bool,
) -> anyhow::Result<()> {
    isolate(&mut cfg);
    let secret = cfg
        .hubspot
        .hubspot_client_secret
        .get_or_insert_with(|| "bench-client-secret".into())
        .expose()
        .to_owned();
    // webhooks are signed for the address they are sent to
    cfg.api.public_base_url = None;
    unthrottled_stack(&mut cfg)?;
    // the jobs are queued by the benchmark, not by the simulator's webhooks
    cfg.sim.simulator_webhook_url = Some(String::new());
    cfg.sim.simulator_events_url = Some(String::new());
    cfg.scheduler.poll_providers = Vec::new();
    let stack = Stack::start(cfg.clone()).await?;
    let store = Store::connect(&cfg.mongo.mongodb_uri, &cfg.mongo.mongodb_db).await?;
    let http = reqwest::Client::new();
    let sim = format!("http://{}/_sim/hubspot/records", stack.sim_addr);
    let ids = seed_hubspot(&http, &sim, changes).await?;
    let queue = workers::Queue::connect(&cfg.redis.redis_url, &cfg.redis.redis_namespace).await?;
    let started = Instant::now();
    if webhooks {
        send_creations(&http, stack.api_addr, &secret, &ids).await?;
    } else {
        let jobs: Vec<InboundChange> = ids
            .into_iter()
            .map(|external_id| InboundChange {
                customer: Default::default(),
                provider: Provider::Hubspot,
                external_id,
                occurred_at: chrono::Utc::now().timestamp_millis(),
                event_ids: Vec::new(),
                account_id: None,
                batch: Vec::new(),
                purge: false,
                restore: false,
            })
            .collect();
        let enqueuer = contact_sync::jobs::Enqueuer::new(queue.clone(), cfg.jobs.retry_attempts);
        enqueuer.inbound_many(&jobs).await?;
    }
    let (applied, total) = wait_applied(&queue, &store, changes as u64, started).await?;
    println!("mongodb: {}", cfg.mongo.mongodb_uri);
    println!(
        "inbound: {changes} HubSpot changes {}applied locally in {:.2} s = {:.0} changes/s \
         (get-contact, compare, create contact + link), worker concurrency {}",
        if webhooks {
            "sent in signed webhook batches of 100, "
        } else {
            ""
        },
        applied.as_secs_f64(),
        changes as f64 / applied.as_secs_f64(),
        cfg.worker.worker_concurrency
    );
    println!(
        "        and pushed on to Pipedrive: all {changes} synced there after {:.2} s = {:.0} contacts/s end to end",
        total.as_secs_f64(),
        changes as f64 / total.as_secs_f64(),
    );
    stack.stop().await;
    Ok(())
}

/// Creates `changes` contacts in simulated HubSpot, 32 at a time; their
/// record ids.
async fn seed_hubspot(
    http: &reqwest::Client,
    sim: &str,
    changes: usize,
) -> anyhow::Result<Vec<String>> {
    let slots = Arc::new(Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..changes {
        let permit = slots.clone().acquire_owned().await?;
        let (http, sim) = (http.clone(), sim.to_owned());
        tasks.spawn(async move {
            let _permit = permit;
            let body = serde_json::json!({ "properties": {
                "email": format!("inbound{i}@example.com"),
                "firstname": "Inbound",
                "lastname": format!("{i}"),
            }});
            let r = http.post(sim).json(&body).send().await?;
            anyhow::ensure!(
                r.status().as_u16() == 201,
                "simulator create: {}",
                r.status()
            );
            let rec: serde_json::Value = r.json().await?;
            let id = rec["id"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| rec["id"].to_string());
            Ok::<_, anyhow::Error>(id)
        });
    }
    let mut ids = Vec::with_capacity(changes);
    while let Some(r) = tasks.join_next().await {
        ids.push(r??);
    }
    Ok(ids)
}

/// Waits until every change is applied locally, then until every contact
/// is synced with both CRMs: the time of each, from `started`.
async fn wait_applied(
    queue: &workers::Queue,
    store: &Store,
    want: u64,
    started: Instant,
) -> anyhow::Result<(Duration, Duration)> {
    let deadline = started + Duration::from_secs(600);
    // Each milestone is seen in the queues' counts (a cheap read of Redis)
    // and then confirmed by counting documents once: counting thousands
    // of them every few milliseconds is work enough to slow the server.
    let idle = |name: &'static str| async move {
        let c = queue.counts(name).await?;
        Ok::<_, anyhow::Error>(c.outstanding() == 0)
    };
    let mut applied_at = None;
    loop {
        if applied_at.is_none()
            && idle(InboundChange::QUEUE).await?
            && store.count_contacts().await? >= want
        {
            applied_at = Some(started.elapsed());
        }
        if applied_at.is_some()
            && idle(OutboundUpsert::QUEUE).await?
            && store.count_links(SyncStatus::Synced).await? >= 2 * want
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every one of {} links synced after 10 minutes",
            2 * want
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total = started.elapsed();
    Ok((applied_at.unwrap_or(total), total))
}
