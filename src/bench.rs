//! `contact-sync bench-sync`: outbound sync throughput, from the api call to
//! both links `synced`, through the whole stack in one process (simulator
//! with no latency and no limit). Prints contacts/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::dev::Stack;
use crate::domain::SyncStatus;
use crate::store::Store;

/// Runs the benchmark with `contacts` creates, `concurrency` at a time.
///
/// # Errors
/// When the stack does not start or the run does not finish in 10 minutes.
pub async fn bench_sync(
    mut cfg: Config,
    contacts: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    cfg.redis_namespace = format!("bench-{tag}");
    cfg.mongodb_db = format!("bench_{tag}");
    cfg.api_addr = "127.0.0.1:0".parse()?;
    cfg.simulator_addr = "127.0.0.1:0".parse()?;
    cfg.rate_limit_hubspot = 1_000_000;
    cfg.rate_limit_pipedrive = 1_000_000;
    let providers = cfg.providers.len();
    let stack = Stack::start(cfg.clone()).await?;
    let store = Store::connect(&cfg.mongodb_uri, &cfg.mongodb_db).await?;
    let http = reqwest::Client::new();
    let base = format!("http://{}", stack.api_addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status().is_success())
        .ok()
        != Some(true)
    {
        anyhow::ensure!(Instant::now() < deadline, "the stack did not get ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..contacts {
        let permit = slots.clone().acquire_owned().await?;
        let (http, base, token) = (http.clone(), base.clone(), stack.token.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let body = serde_json::json!({ "firstName": "Bench", "lastName": format!("{i}"), "email": format!("bench{i}@example.com") });
            let r = http
                .post(format!("{base}/api/contacts"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(r.status().as_u16() == 202, "create returned {}", r.status());
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let accepted = started.elapsed();
    let want = (contacts * providers) as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let synced = store
            .count_links(SyncStatus::Synced)
            .await
            .context("counting links")?;
        if synced >= want {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {synced} of {want} links synced after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = started.elapsed();
    println!("mongodb: {}", cfg.mongodb_uri);
    println!(
        "api:  {contacts} creates accepted in {:.2} s = {:.0} requests/s (concurrency {concurrency})",
        accepted.as_secs_f64(),
        contacts as f64 / accepted.as_secs_f64()
    );
    println!(
        "sync: {contacts} contacts x {providers} CRMs synced in {:.2} s = {:.0} contacts/s ({:.0} CRM pushes/s), worker concurrency {}",
        total.as_secs_f64(),
        contacts as f64 / total.as_secs_f64(),
        want as f64 / total.as_secs_f64(),
        cfg.worker_concurrency
    );
    stack.stop().await;
    Ok(())
}
