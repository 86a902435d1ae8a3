//! `contact-sync bench-soak`: a steady mixed load for a long while — app
//! edits, CRM edits (HubSpot webhooks, Pipedrive flow events), polls — over
//! the real processes (simulator, api, worker and scheduler, each a process
//! of its own), sampling each minute what must stay flat once warm: Redis
//! memory and keys, MongoDB documents per collection, and the RSS of each
//! of our processes.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use serde_json::json;

use crate::stack::DevConfig;
use contact_sync::store::Store;

/// Settings of one soak.
#[derive(Debug, Clone, Copy)]
pub struct Soak {
    /// How long the load runs.
    pub minutes: u64,
    /// Contacts created at warm-up and edited from then on.
    pub contacts: usize,
    /// App edits per second.
    pub app_rate: f64,
    /// CRM edits per second (HubSpot and Pipedrive alternately).
    pub crm_rate: f64,
}

struct Procs(Vec<(&'static str, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Resident memory of a process, in MB.
fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn redis_memory(url: &str) -> anyhow::Result<(f64, u64)> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    Ok((used / 1_048_576.0, keys))
}

/// Runs the soak and prints one row a minute.
///
/// # Errors
/// When the processes do not start or a dependency fails.
pub async fn bench_soak(mut cfg: DevConfig, soak: Soak) -> anyhow::Result<()> {
    super::isolate(&mut cfg);
    // the product's processes come from the `contact-sync` binary built
    // beside this one; the simulator from this one
    let dev_exe = std::env::current_exe().context("finding this binary")?;
    let product = dev_exe.with_file_name("contact-sync");
    let (api_port, sim_port) = (free_port()?, free_port()?);
    let api = format!("http://127.0.0.1:{api_port}");
    let sim = format!("http://127.0.0.1:{sim_port}");
    let token = "soak-token";
    let env: Vec<(&str, String)> = vec![
        ("REDIS_URL", cfg.redis.redis_url.clone()),
        ("REDIS_NAMESPACE", cfg.redis.redis_namespace.clone()),
        ("MONGODB_URI", cfg.mongo.mongodb_uri.clone()),
        ("MONGODB_DB", cfg.mongo.mongodb_db.clone()),
        ("API_ADDR", format!("127.0.0.1:{api_port}")),
        ("API_TOKEN", token.into()),
        ("SIMULATOR_ADDR", format!("127.0.0.1:{sim_port}")),
        ("INTEGRATION_APP_URL", sim.clone()),
        ("INTEGRATION_APP_WORKSPACE_KEY", "soak-key".into()),
        ("INTEGRATION_APP_WORKSPACE_SECRET", "soak-secret".into()),
        (
            "INTEGRATION_APP_CONFIG_DIR",
            cfg.sim.integration_app_config_dir.display().to_string(),
        ),
        ("HUBSPOT_CLIENT_SECRET", "soak-hubspot-secret".into()),
        (
            "SIMULATOR_WEBHOOK_URL",
            format!("{api}/api/integration/webhook/hubspot"),
        ),
        (
            "SIMULATOR_EVENTS_URL",
            format!("{api}/api/integration/events"),
        ),
        ("RATE_LIMIT_HUBSPOT", "1000".into()),
        ("RATE_LIMIT_PIPEDRIVE", "1000".into()),
        ("POLL_INTERVAL_SECS", "10".into()),
        // bounds short enough to be reached within the soak
        ("WEBHOOK_DEDUP_SECS", "300".into()),
        ("SYNC_LOG_RETENTION_DAYS", "0.004".into()),
        ("JOB_RETENTION_SECS", "300".into()),
        ("RUST_LOG", "error".into()),
    ];
    let spawn = |sub: &str| -> anyhow::Result<Child> {
        let exe = if sub == "simulator" {
            &dev_exe
        } else {
            &product
        };
        Command::new(exe)
            .arg(sub)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting contact-sync {sub}"))
    };
    let mut procs = Procs(Vec::new());
    procs.0.push(("simulator", spawn("simulator")?));
    procs.0.push(("api", spawn("api")?));
    procs.0.push(("worker", spawn("worker")?));
    procs.0.push(("scheduler", spawn("scheduler")?));
    let http = reqwest::Client::new();
    super::wait_ready(&http, &api).await?;
    let store = Store::connect(&cfg.mongo.mongodb_uri, &cfg.mongo.mongodb_db).await?;

    // warm-up: the contacts the load edits, synced to both CRMs
    let mut ids = Vec::with_capacity(soak.contacts);
    for i in 0..soak.contacts {
        let r: serde_json::Value = http
            .post(format!("{api}/api/contacts"))
            .bearer_auth(token)
            .json(&json!({ "email": format!("soak{i}@example.com"), "firstName": "Soak" }))
            .send()
            .await?
            .json()
            .await?;
        ids.push(r["contact"]["id"].as_str().unwrap_or_default().to_owned());
    }
    let want = (soak.contacts * cfg.sync.providers.len()) as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while store
        .count_links(contact_sync::domain::SyncStatus::Synced)
        .await?
        < want
    {
        anyhow::ensure!(Instant::now() < deadline, "warm-up did not sync");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let oids: Vec<_> = ids
        .iter()
        .filter_map(|i| contact_sync::domain::ContactId::parse(i).ok())
        .collect();
    let links = store.links_of(&oids).await?;
    let crm_ids = |p: contact_sync::domain::Provider| -> Vec<String> {
        links
            .iter()
            .filter(|l| l.provider == p)
            .filter_map(|l| l.external_id.clone())
            .collect()
    };
    let hubspot = crm_ids(contact_sync::domain::Provider::Hubspot);
    let pipedrive = crm_ids(contact_sync::domain::Provider::Pipedrive);

    println!(
        "soak: {} min, {} contacts, {} app edits/s, {} CRM edits/s, polls every 10 s; mongodb {}",
        soak.minutes, soak.contacts, soak.app_rate, soak.crm_rate, cfg.mongo.mongodb_uri
    );
    println!(
        "{:>4} {:>9} {:>7} {:>9} {:>6} {:>9} {:>7} {:>7} {:>7} {:>8} {:>7} {:>6}",
        "min",
        "redis MB",
        "keys",
        "contacts",
        "links",
        "sync_logs",
        "api MB",
        "wrk MB",
        "sch MB",
        "requests",
        "non-2xx",
        "queued"
    );
    let started = Instant::now();
    let tick = Duration::from_millis(100);
    let (mut app_due, mut crm_due) = (0.0_f64, 0.0_f64);
    let requests = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut next_sample = Instant::now();
    let mut minute = 0;
    let mut crm_turn = 0usize;
    let mut last = Instant::now();
    while started.elapsed() < Duration::from_secs(soak.minutes * 60 + 1) {
        if Instant::now() >= next_sample {
            let (redis_mb, keys) = redis_memory(&cfg.redis.redis_url).await.unwrap_or((0.0, 0));
            let (contacts, link_docs, logs) = store.collection_counts().await?;
            let rss = |name: &str| {
                procs
                    .0
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0.0, |(_, c)| rss_mb(c.id()))
            };
            let q = contact_sync::jobs::Enqueuer::new(
                workers::Queue::connect(&cfg.redis.redis_url, &cfg.redis.redis_namespace).await?,
                1,
            );
            let mut outstanding = 0;
            for name in ["outbound-upsert", "inbound-change", "provider-poll"] {
                outstanding += q.queue().counts(name).await?.outstanding();
            }
            println!(
                "{minute:>4} {redis_mb:>9.1} {keys:>7} {contacts:>9} {link_docs:>6} {logs:>9} {:>7.1} {:>7.1} {:>7.1} {:>8} {:>7} {outstanding:>6}",
                rss("api"),
                rss("worker"),
                rss("scheduler"),
                requests.load(Ordering::Relaxed),
                failures.load(Ordering::Relaxed),
            );
            minute += 1;
            next_sample += Duration::from_secs(60);
        }
        // due by the time that really passed, however long the sends took
        let dt = last.elapsed().as_secs_f64();
        last = Instant::now();
        app_due += soak.app_rate * dt;
        crm_due += soak.crm_rate * dt;
        let mut sends = Vec::new();
        while app_due >= 1.0 {
            app_due -= 1.0;
            let id = &ids[rand::rng().random_range(0..ids.len())];
            let title: u32 = rand::rng().random_range(0..1_000_000);
            sends.push(
                http.patch(format!("{api}/api/contacts/{id}"))
                    .bearer_auth(token)
                    .json(&json!({ "jobTitle": format!("t{title}") })),
            );
        }
        while crm_due >= 1.0 {
            crm_due -= 1.0;
            crm_turn += 1;
            let n: u32 = rand::rng().random_range(0..1_000_000);
            if crm_turn.is_multiple_of(2) && !hubspot.is_empty() {
                let ext = &hubspot[rand::rng().random_range(0..hubspot.len())];
                sends.push(
                    http.patch(format!("{sim}/_sim/hubspot/records/{ext}"))
                        .json(&json!({ "properties": { "phone": format!("+1 555 {n}") } })),
                );
            } else if !pipedrive.is_empty() {
                let ext = &pipedrive[rand::rng().random_range(0..pipedrive.len())];
                sends.push(
                    http.patch(format!("{sim}/_sim/pipedrive/records/{ext}"))
                        .json(&json!({ "org_name": format!("Org {n}") })),
                );
            }
        }
        // sent in the background, so a slow answer does not slow the load
        for r in sends {
            let (requests, failures) = (requests.clone(), failures.clone());
            tokio::spawn(async move {
                let ok = r.send().await.is_ok_and(|r| r.status().is_success());
                requests.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        tokio::time::sleep(tick).await;
    }
    drop(procs);
    Ok(())
}
