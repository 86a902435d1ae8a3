//! `contact-sync bench-sync`: outbound sync throughput, from the api call to
//! both links `synced`, through the whole stack in one process (simulator
//! with no latency and no limit). Prints contacts/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Semaphore;

use crate::stack::DevConfig;
use crate::stack::Stack;
use contact_sync::domain::SyncStatus;
use contact_sync::store::Store;

mod fair;
mod first_sync;
mod inbound;
mod soak;
pub use fair::{bench_fair, Fair};
pub use first_sync::{bench_first_sync, FirstSync};
pub use inbound::bench_inbound;
pub use soak::{bench_soak, Soak};

/// A contact as stored at version 1 with no outbox, to write straight to
/// MongoDB: what an app held before a sync began.
fn stored_contact(
    customer: &contact_sync::domain::CustomerId,
    email: &str,
    first: String,
    last: String,
) -> contact_sync::store::Contact {
    let email = contact_sync::domain::Email::parse(email).expect("a valid email");
    let now = bson::DateTime::now();
    contact_sync::store::Contact {
        id: contact_sync::domain::ContactId::new(),
        customer_id: customer.clone(),
        first_name: Some(first),
        last_name: Some(last),
        active_email: Some(email.as_str().to_owned()),
        email,
        phone: None,
        company_name: None,
        job_title: None,
        version: 1,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        outbox: None,
    }
}

/// A fresh Redis namespace and database, so a run starts empty and leaves
/// the others alone.
fn isolate(cfg: &mut DevConfig) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    cfg.redis.redis_namespace = format!("bench-{tag}");
    cfg.mongo.mongodb_db = format!("bench_{tag}");
}

/// Free ports for the api and simulator, and no CRM rate limit.
fn unthrottled_stack(cfg: &mut DevConfig) -> anyhow::Result<()> {
    cfg.api.api_addr = "127.0.0.1:0".parse()?;
    cfg.sim.simulator_addr = "127.0.0.1:0".parse()?;
    cfg.rate_limits.rate_limit_hubspot = 1_000_000;
    cfg.rate_limits.rate_limit_pipedrive = 1_000_000;
    Ok(())
}

/// Waits (at most 30 s) until the api at `base` answers `/readyz`.
async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the api at {base} did not get ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the benchmark with `contacts` creates, `concurrency` at a time, or
/// at a steady `rate` per second (open loop: each create is sent when it is
/// due, whatever the answers before it took).
///
/// # Errors
/// When the stack does not start or the run does not finish in 10 minutes.
pub async fn bench_sync(
    mut cfg: DevConfig,
    contacts: usize,
    concurrency: usize,
    rate: Option<f64>,
    profile: bool,
) -> anyhow::Result<()> {
    if profile {
        // before the stack connects: only stores connected after watch
        contact_sync::store::monitor_commands();
    }
    isolate(&mut cfg);
    unthrottled_stack(&mut cfg)?;
    // outbound alone: the simulated CRMs do not report the pushes back
    cfg.sim.simulator_webhook_url = Some(String::new());
    cfg.sim.simulator_events_url = Some(String::new());
    let providers = cfg.sync.providers.len();
    let stack = Stack::start(cfg.clone()).await?;
    let store = Store::connect(&cfg.mongo.mongodb_uri, &cfg.mongo.mongodb_db).await?;
    let http = reqwest::Client::new();
    let base = format!("http://{}", stack.api_addr);
    wait_ready(&http, &base).await?;

    if profile {
        contact_sync::store::profile_commands();
    }
    let commands_before = contact_sync::store::commands_sent();
    let ops_before = store.server_opcounters().await.unwrap_or_default();
    let mut own_commands = 0u64;
    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(match rate {
        Some(_) => Semaphore::MAX_PERMITS,
        None => concurrency.max(1),
    }));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..contacts {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate.max(0.001));
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = slots.clone().acquire_owned().await?;
        let (http, base, token) = (http.clone(), base.clone(), stack.token.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let sent_ms = bson::DateTime::now().timestamp_millis();
            let body = serde_json::json!({ "firstName": "Bench", "lastName": format!("{i}"), "email": format!("bench{i}@example.com") });
            let r = http
                .post(format!("{base}/api/contacts"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(r.status().as_u16() == 202, "create returned {}", r.status());
            let v: serde_json::Value = r.json().await?;
            let id = v["contact"]["id"]
                .as_str()
                .and_then(|s| contact_sync::domain::ContactId::parse(s).ok())
                .context("the answer names no contact id")?;
            Ok::<_, anyhow::Error>((id, sent_ms))
        });
    }
    let mut sent = Vec::with_capacity(contacts);
    while let Some(r) = tasks.join_next().await {
        sent.push(r??);
    }
    let accepted = started.elapsed();
    let want = (contacts * providers) as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    let queue = workers::Queue::connect(&cfg.redis.redis_url, &cfg.redis.redis_namespace).await?;
    let pushes = <contact_sync::jobs::OutboundUpsert as contact_sync::jobs::Kind>::QUEUE;
    loop {
        // Counting the synced links costs the server a scan of that many
        // index entries and documents (on secantusd-rs 60 ms of its CPU for
        // 16,000 links): asked every 100 ms it was a third of the
        // database's work while the pushes drained. So the links are
        // counted only once the queue (a cheap read of Redis) has no push
        // left to run.
        let left = queue.counts(pushes).await?;
        let mut counted = false;
        if left.outstanding() == 0 {
            let synced = store
                .count_links(SyncStatus::Synced)
                .await
                .context("counting links")?;
            own_commands += 1;
            if synced >= want {
                break;
            }
            counted = true;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every one of {want} links synced after 10 minutes"
        );
        let pause = if counted { 100 } else { 10 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    let total = started.elapsed();
    let ops_after = store.server_opcounters().await.unwrap_or_default();
    // what the api and the worker sent, without this loop's own counting
    let commands = (contact_sync::store::commands_sent() - commands_before)
        .saturating_sub(if profile { own_commands } else { 0 });
    println!("mongodb: {}", cfg.mongo.mongodb_uri);
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
        cfg.worker.worker_concurrency
    );
    // The server's counters: documents inserted, update statements, queries
    // (`find`s), getMores, other commands (`aggregate`s among them, this
    // loop's counts too, which are taken off).
    let per_contact: Vec<String> = ops_after
        .iter()
        .filter_map(|(name, after)| {
            let before = ops_before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |b| b.1);
            let mut n = after - before;
            if name == "command" {
                n -= i64::try_from(own_commands).unwrap_or(0) + 1;
            }
            (n > 0).then(|| format!("{name} {:.2}", n as f64 / contacts as f64))
        })
        .collect();
    println!(
        "db:   server opcounters per contact (both CRMs): {}",
        if per_contact.is_empty() {
            "not reported".to_owned()
        } else {
            per_contact.join(", ")
        }
    );
    if profile {
        println!(
            "      {} MongoDB commands from the api and the worker = {:.1} per contact",
            commands,
            commands as f64 / contacts as f64
        );
    }
    for (name, n, us) in contact_sync::store::command_profile() {
        println!(
            "      {name}: {n} commands, {:.2} ms each on average",
            us as f64 / n.max(1) as f64 / 1000.0
        );
    }
    // write -> synced: from sending the create to the later of its links'
    // `lastSyncedAt` (stamped by the worker in this same process)
    let mut latencies_us = Vec::with_capacity(sent.len());
    for chunk in sent.chunks(1000) {
        let ids: Vec<_> = chunk.iter().map(|(id, _)| *id).collect();
        let links = store.links_of(&ids).await?;
        for (id, sent_ms) in chunk {
            let synced_ms = links
                .iter()
                .filter(|l| l.contact_id == *id)
                .filter_map(|l| l.last_synced_at.map(|t| t.timestamp_millis()))
                .max()
                .unwrap_or(*sent_ms);
            latencies_us.push(((synced_ms - sent_ms).max(0) as u64) * 1000);
        }
    }
    latencies_us.sort_unstable();
    println!(
        "write -> both links synced: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms{}",
        percentile(&latencies_us, 0.50),
        percentile(&latencies_us, 0.90),
        percentile(&latencies_us, 0.99),
        latencies_us.last().copied().unwrap_or_default() as f64 / 1000.0,
        rate.map(|r| format!(" (creates sent at {r}/s)"))
            .unwrap_or_default()
    );
    stack.stop().await;
    Ok(())
}

/// A latency summary of sorted microsecond samples.
fn percentile(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[i] as f64 / 1000.0
}

/// One HubSpot delivery: `events` property changes of distinct contacts,
/// with distinct event ids, so none is a duplicate of another.
fn webhook_batch(seq: usize, events: usize) -> Vec<u8> {
    let now = chrono::Utc::now().timestamp_millis();
    let batch: Vec<serde_json::Value> = (0..events)
        .map(|i| {
            let n = seq * events + i;
            serde_json::json!({
                "eventId": n,
                "subscriptionId": 1,
                "portalId": 62515,
                "appId": 1,
                "occurredAt": now,
                "subscriptionType": "contact.propertyChange",
                "attemptNumber": 0,
                "objectId": 1_000_000 + n,
                "changeSource": "CRM",
                "propertyName": "firstname",
                "propertyValue": "Bench",
            })
        })
        .collect();
    serde_json::to_vec(&batch).expect("a JSON array")
}

/// Sends a `contact.creation` event for each HubSpot record in `ids` to
/// the api, in signed batches of 100, 8 batches at a time.
async fn send_creations(
    http: &reqwest::Client,
    api: std::net::SocketAddr,
    secret: &str,
    ids: &[String],
) -> anyhow::Result<()> {
    use contact_sync::api::hooks::signature::sign_v3;
    let url = format!("http://{api}/api/integration/webhook/hubspot");
    let slots = Arc::new(Semaphore::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for (b, chunk) in ids.chunks(100).enumerate() {
        let now = chrono::Utc::now().timestamp_millis();
        let events: Vec<serde_json::Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| {
                serde_json::json!({
                    "eventId": b * 100 + i + 1,
                    "subscriptionId": 1,
                    "portalId": 62515,
                    "appId": 1,
                    "occurredAt": now,
                    "subscriptionType": "contact.creation",
                    "attemptNumber": 0,
                    "objectId": id.parse::<u64>().unwrap_or_default(),
                    "changeSource": "CRM_UI",
                })
            })
            .collect();
        let body = serde_json::to_vec(&events)?;
        let ts = now.to_string();
        let sig = sign_v3(secret, "POST", &url, &body, &ts);
        let permit = slots.clone().acquire_owned().await?;
        let (http, url) = (http.clone(), url.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let r = http
                .post(url)
                .header("content-type", "application/json")
                .header("x-hubspot-request-timestamp", ts)
                .header("x-hubspot-signature-v3", sig)
                .body(body)
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "webhook answered {}", r.status());
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// `contact-sync bench-webhooks`: the api alone, fed signed 100-event
/// HubSpot batches at a steady rate (open loop: a slow answer does not slow
/// the sender, so latency is measured from when each request was due).
/// With `wrk`, also prints wrk's figures for pre-signed batches.
///
/// # Errors
/// When the api does not start.
pub async fn bench_webhooks(
    mut cfg: DevConfig,
    rate: u32,
    seconds: u64,
    events: usize,
    wrk: bool,
) -> anyhow::Result<()> {
    use contact_sync::api::hooks::signature::sign_v3;

    isolate(&mut cfg);
    let secret = cfg
        .hubspot
        .hubspot_client_secret
        .clone()
        .filter(|s| !s.is_blank())
        .unwrap_or_else(|| "bench-client-secret".into());
    cfg.hubspot.hubspot_client_secret = Some(secret.clone());
    let secret = secret.expose().to_owned();
    cfg.api.public_base_url = None;
    cfg.api
        .api_token
        .get_or_insert_with(|| "bench-token".into());
    let listener = contact_sync::app::bind("127.0.0.1:0".parse()?, "API_ADDR")?;
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let api_cfg = cfg.api_process();
    let api = tokio::spawn(async move {
        let mut rx = stop_rx;
        contact_sync::app::run_api(&api_cfg, listener, async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await
    });
    let base = format!("http://{addr}");
    let url = format!("{base}/api/integration/webhook/hubspot");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    wait_ready(&http, &base).await?;

    let total = (u64::from(rate) * seconds) as usize;
    let signed = |seq: usize| {
        let body = webhook_batch(seq, events);
        let ts = chrono::Utc::now().timestamp_millis().to_string();
        let sig = sign_v3(&secret, "POST", &url, &body, &ts);
        (body, ts, sig)
    };
    let requests: Vec<_> = (0..total).map(signed).collect();
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (body, ts, sig)) in requests.into_iter().enumerate() {
        let due = started + period * i as u32;
        tokio::time::sleep_until(due).await;
        let (http, url) = (http.clone(), url.clone());
        tasks.spawn(async move {
            let r = http
                .post(url)
                .header("content-type", "application/json")
                .header("x-hubspot-request-timestamp", ts)
                .header("x-hubspot-signature-v3", sig)
                .body(body)
                .send()
                .await;
            let status = r.map(|r| r.status().as_u16()).unwrap_or(0);
            (status, due.elapsed().as_micros() as u64)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failed = 0usize;
    while let Some(r) = tasks.join_next().await {
        let (status, us) = r?;
        if status != 200 {
            failed += 1;
        }
        latencies.push(us);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let queue = workers::Queue::connect(&cfg.redis.redis_url, &cfg.redis.redis_namespace).await?;
    let queued = queue
        .counts(<contact_sync::jobs::InboundChange as contact_sync::jobs::Kind>::QUEUE)
        .await?;
    println!("mongodb: {}", cfg.mongo.mongodb_uri);
    println!(
        "webhooks: {total} signed batches of {events} events at {rate}/s for {seconds} s: \
         {:.0} requests/s, {:.0} events/s, {failed} not 200",
        total as f64 / elapsed,
        (total * events) as f64 / elapsed,
    );
    println!(
        "latency (from when each request was due): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    println!("inbound-change jobs queued: {}", queued.pending);

    if wrk {
        let before = queued.pending;
        run_wrk(&url, &secret, seconds, events, total).await?;
        let after = queue
            .counts(<contact_sync::jobs::InboundChange as contact_sync::jobs::Kind>::QUEUE)
            .await?
            .pending;
        println!(
            "inbound-change jobs queued by the wrk run: {} (one per new contact event)",
            after - before
        );
    }
    let _ = stop.send(true);
    let _ = api.await;
    Ok(())
}

/// Runs `wrk` (closed loop, 16 connections) over pre-signed batches that a
/// generated Lua script rotates through.
async fn run_wrk(
    url: &str,
    secret: &str,
    seconds: u64,
    events: usize,
    offset: usize,
) -> anyhow::Result<()> {
    use std::fmt::Write as _;

    use contact_sync::api::hooks::signature::sign_v3;

    // wrk's own Host header leaves the port out, and the signature covers it
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    // Distinct batches (about 24 KB each); past them wrk repeats batches,
    // which the api answers as duplicates (cheaper): see the jobs count.
    let batches: usize = std::env::var("WRK_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000);
    let mut lua = String::from("local reqs = {}\n");
    for i in 0..batches {
        let body = webhook_batch(offset + i, events);
        let ts = chrono::Utc::now().timestamp_millis().to_string();
        let sig = sign_v3(secret, "POST", url, &body, &ts);
        let body = String::from_utf8(body)?;
        writeln!(
            lua,
            "reqs[{}] = wrk.format(\"POST\", nil, {{[\"Host\"]=\"{host}\", [\"Content-Type\"]=\"application/json\", \
             [\"X-HubSpot-Request-Timestamp\"]=\"{ts}\", [\"X-HubSpot-Signature-v3\"]=\"{sig}\"}}, [=[{body}]=])",
            i + 1
        )?;
    }
    lua.push_str(
        "local n = 0\n\
         function setup(thread) thread:set(\"id\", n); n = n + 1 end\n\
         function init(args) i = id end\n\
         request = function() i = i + 2; return reqs[(i % #reqs) + 1] end\n",
    );
    let path = std::env::temp_dir().join(format!("contact-sync-wrk-{}.lua", std::process::id()));
    std::fs::write(&path, lua)?;
    println!(
        "== wrk -t2 -c16 -d{seconds}s --latency ({batches} distinct {events}-event signed batches)"
    );
    let out = tokio::process::Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&path)
        .arg(url)
        .output()
        .await
        .context("running wrk (apt-get install -y wrk)")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if std::env::var_os("KEEP_WRK_SCRIPT").is_none() {
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}
