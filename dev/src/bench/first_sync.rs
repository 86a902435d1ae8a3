//! `bench-first-sync`: a customer's first sync at the CRMs' rate-limit
//! floor. The app holds `n` contacts, the customer's HubSpot portal `n` and
//! its Pipedrive account `n`, half of each overlapping by email (every
//! fourth overlapping record with a first name of its own and a job title
//! the app lacks); the simulator enforces HubSpot's 100 requests per 10 s
//! and Pipedrive's 20 per 2 s. Prints the time until every link is
//! `synced` and all three sides hold every contact once, the CRM calls
//! per contact, and the *floor*: the fewest calls each CRM's API allows
//! for that work, divided by its rate.
//!
//! The first sync measured is `POST /api/customers/{id}/connections/{p}/
//! initial-sync` of each CRM; with `--per-contact`, the way it was done
//! before: every app contact's push queued (a find and a create or an
//! update per CRM) and a backfill of each CRM (its list, each record
//! applied and pushed on to the other).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use super::{isolate, wait_ready};
use crate::stack::{DevConfig, Stack};
use contact_sync::domain::{ContactId, CustomerId, Provider, SyncStatus};
use contact_sync::jobs::{Enqueuer, OutboundUpsert};
use contact_sync::store::{Contact, Store};

/// The customer whose first sync is measured.
const CUSTOMER: &str = "first";

/// HubSpot's published floor: 100 requests per 10 s (private app, Free
/// and Starter); Pipedrive's: a burst limit of 20 per 2 s (API token,
/// Lite). `docs/EXTERNAL-APIS.md`.
const HUBSPOT_LIMIT: (u32, u64) = (100, 10_000);
const PIPEDRIVE_LIMIT: (u32, u64) = (20, 2_000);

/// Records a call of each CRM's API can carry: HubSpot lists 100 a page
/// and writes 100 a batch; Pipedrive lists 500 a page and writes one
/// person a call.
const HUBSPOT_PAGE: usize = 100;
const HUBSPOT_BATCH: usize = 100;
const PIPEDRIVE_PAGE: usize = 500;

/// What the run is given.
#[derive(Debug, Clone, Copy)]
pub struct FirstSync {
    /// Contacts on each of the three sides.
    pub contacts: usize,
    /// Longest the run may take, in seconds.
    pub max_secs: u64,
    /// Run the older first sync instead: every contact's push queued (a
    /// find and a create or an update per CRM), and a backfill of each
    /// CRM.
    pub per_contact: bool,
    /// With `per_contact`: the waiting pushes to HubSpot gathered into
    /// batch writes (a bulk import's way).
    pub gathered: bool,
}

/// The emails of each side: the app's `e{i}`; HubSpot's the first half of
/// the app's and as many of its own; Pipedrive's the middle half of the
/// app's and as many of its own. Returns how many distinct ones there are.
fn distinct(n: usize) -> usize {
    2 * n
}

/// A side's CRM records, in its own shape.
fn crm_records(provider: Provider, n: usize) -> Vec<Value> {
    let half = n / 2;
    let shared: Vec<usize> = match provider {
        Provider::Hubspot => (0..half).collect(),
        Provider::Pipedrive => (n / 4..n / 4 + half).collect(),
    };
    let own = (0..n - half).map(|i| (format!("{}{i}", provider.as_str()), None));
    let shared = shared.into_iter().map(|i| (format!("e{i}"), Some(i)));
    shared
        .chain(own)
        .map(|(local, shared)| {
            let email = format!("{local}@example.com");
            // every fourth shared record differs from the app's contact
            let (first, title) = match shared {
                Some(i) if i % 4 == 0 => (format!("Crm{i}"), Some("Buyer")),
                Some(i) => (format!("App{i}"), None),
                None => (format!("Crm-{local}"), None),
            };
            match provider {
                Provider::Hubspot => {
                    let mut props = json!({ "email": email, "firstname": first });
                    if let Some(t) = title {
                        props["jobtitle"] = json!(t);
                    }
                    json!({ "properties": props })
                }
                Provider::Pipedrive => json!({
                    "name": first, "first_name": first,
                    "emails": [{ "value": email, "primary": true, "label": "work" }],
                }),
            }
        })
        .collect()
}

/// The fewest calls the CRM's API allows for this first sync, and how long
/// they take at its rate: list every record, create what it lacks, update
/// the shared records (the app's last name is new to each of them).
fn floor(provider: Provider, n: usize) -> (usize, Duration) {
    let (held, missing, shared) = (n, distinct(n) - n, n / 2);
    let (calls, (per, window_ms)) = match provider {
        Provider::Hubspot => (
            held.div_ceil(HUBSPOT_PAGE)
                + missing.div_ceil(HUBSPOT_BATCH)
                + shared.div_ceil(HUBSPOT_BATCH),
            HUBSPOT_LIMIT,
        ),
        Provider::Pipedrive => (
            held.div_ceil(PIPEDRIVE_PAGE) + missing + shared,
            PIPEDRIVE_LIMIT,
        ),
    };
    let secs = calls as f64 * window_ms as f64 / 1000.0 / f64::from(per);
    (calls, Duration::from_secs_f64(secs))
}

/// Runs the benchmark.
///
/// # Errors
/// When the stack does not start, or the sides do not agree in time.
pub async fn bench_first_sync(mut cfg: DevConfig, run: FirstSync) -> anyhow::Result<()> {
    let n = run.contacts.max(4);
    configure(&mut cfg);
    if run.per_contact && !run.gathered {
        // the way before: every push singly, none gathered into batches
        cfg.worker.gather_backlog = 0;
    }
    let stack = Stack::start(cfg.clone()).await?;
    let sides = Sides {
        http: reqwest::Client::new(),
        base: format!("http://{}", stack.api_addr),
        sim: format!("http://{}/_sim", stack.sim_addr),
        token: stack.token.clone(),
    };
    wait_ready(&sides.http, &sides.base).await?;
    let ids = seed(&sides, &cfg, n).await?;
    let store = Store::connect(&cfg.mongo.mongodb_uri, &cfg.mongo.mongodb_db).await?;
    let started = Instant::now();
    start(&sides, &cfg, &run, &ids).await?;
    let done = wait_until_synced(&sides, &store, n, started, run.max_secs).await?;
    let took = started.elapsed();
    let customer = CustomerId::parse(CUSTOMER).map_err(anyhow::Error::msg)?;
    agree(&sides.http, &sides.sim, &store, &customer).await?;
    let how = match (run.per_contact, run.gathered) {
        (true, false) => "per-contact pushes and a backfill of each CRM",
        (true, true) => "per-contact pushes (HubSpot's gathered) and a backfill of each CRM",
        (false, _) => "initial-sync of each connection",
    };
    println!("{how}:");
    report(&sides.http, &sides.sim, n, took, done).await
}

/// Where the run talks to: the api (with the operators' token) and the
/// simulator's admin api.
struct Sides {
    http: reqwest::Client,
    base: String,
    sim: String,
    token: String,
}

/// The stack's settings for the run: isolated, our budget at each CRM's
/// average rate, first syncs started by the run, no webhooks for records
/// that were there before the connection.
fn configure(cfg: &mut DevConfig) {
    isolate(cfg);
    cfg.jobs.first_sync_on_connect = false;
    cfg.api.api_addr = ([127, 0, 0, 1], 0).into();
    cfg.sim.simulator_addr = ([127, 0, 0, 1], 0).into();
    cfg.rate_limits.rate_limit_hubspot = HUBSPOT_LIMIT.0 * 1000 / HUBSPOT_LIMIT.1 as u32;
    cfg.rate_limits.rate_limit_pipedrive = PIPEDRIVE_LIMIT.0 * 1000 / PIPEDRIVE_LIMIT.1 as u32;
    cfg.sim.simulator_webhook_url = Some(String::new());
    cfg.sim.simulator_events_url = Some(String::new());
}

/// The three sides before the customer's first sync: the customer with
/// both connections, `n` records in each CRM, `n` contacts in the app,
/// and the CRMs' published rate limits in force. The app contacts' ids.
async fn seed(sides: &Sides, cfg: &DevConfig, n: usize) -> anyhow::Result<Vec<ContactId>> {
    let Sides {
        http,
        base,
        sim,
        token,
    } = sides;
    let r = http
        .post(format!("{base}/api/customers"))
        .bearer_auth(token)
        .json(&json!({ "id": CUSTOMER, "name": "First sync",
            "connections": { "hubspot": {}, "pipedrive": {} } }))
        .send()
        .await?;
    anyhow::ensure!(
        r.status().as_u16() == 201,
        "creating the customer: {}",
        r.status()
    );
    for p in Provider::ALL {
        let r = http
            .post(format!("{sim}/{}/records?customer={CUSTOMER}", p.as_str()))
            .json(&crm_records(p, n))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "seeding {p}: {}", r.status());
    }
    let ids = seed_app(cfg, n).await?;
    let limits = json!({ "rateLimits": {
        "hubspot": { "calls": HUBSPOT_LIMIT.0, "windowMs": HUBSPOT_LIMIT.1 },
        "pipedrive": { "calls": PIPEDRIVE_LIMIT.0, "windowMs": PIPEDRIVE_LIMIT.1 },
    }});
    let r = http
        .put(format!("{sim}/faults"))
        .json(&limits)
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "setting the rate limits: {}",
        r.status()
    );
    Ok(ids)
}

/// Starts the first sync: each connection's initial-sync, or (the
/// per-contact way) every contact's push and a backfill of each CRM.
async fn start(
    sides: &Sides,
    cfg: &DevConfig,
    run: &FirstSync,
    ids: &[ContactId],
) -> anyhow::Result<()> {
    if run.per_contact {
        let queue =
            workers::Queue::connect(&cfg.redis.redis_url, &cfg.redis.redis_namespace).await?;
        let enqueuer = Enqueuer::new(queue, cfg.jobs.retry_attempts);
        let customer = CustomerId::parse(CUSTOMER).map_err(anyhow::Error::msg)?;
        let jobs = ids
            .iter()
            .flat_map(|id| {
                Provider::ALL.map(|p| {
                    let push = OutboundUpsert {
                        contact_id: *id,
                        provider: p,
                        version: 1,
                        customer: Some(customer.clone()),
                        singly: false,
                    };
                    (workers::new_job_id(), push)
                })
            })
            .collect::<Vec<_>>();
        if run.gathered {
            // as the api does: each link pending on its push, so a push
            // sees the backlog
            let store = Store::connect(&cfg.mongo.mongodb_uri, &cfg.mongo.mongodb_db).await?;
            for (id, push) in &jobs {
                let job = [(push.provider, id.clone())];
                store
                    .mark_pending(push.contact_id, &customer, &job, 1)
                    .await?;
            }
        }
        enqueuer.push_all(jobs).await?;
    }
    for p in Provider::ALL {
        let path = match run.per_contact {
            true => format!("providers/{}/backfill?customerId={CUSTOMER}", p.as_str()),
            false => format!(
                "customers/{CUSTOMER}/connections/{}/initial-sync",
                p.as_str()
            ),
        };
        let r = sides
            .http
            .post(format!("{}/api/{path}", sides.base))
            .bearer_auth(&sides.token)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "{path}: {}", r.status());
    }
    Ok(())
}

/// When each CRM's side was complete (every link to it synced, and it
/// holds every person once), counted from `started`.
async fn wait_until_synced(
    sides: &Sides,
    store: &Store,
    n: usize,
    started: Instant,
    max_secs: u64,
) -> anyhow::Result<[Duration; 2]> {
    let want = distinct(n);
    let deadline = started + Duration::from_secs(max_secs);
    let customer = CustomerId::parse(CUSTOMER).map_err(anyhow::Error::msg)?;
    let mut done: [Option<Duration>; 2] = [None, None];
    // looked at every 0.5 s to 5 s as N grows: reading every CRM record
    // each time would cost the stack it measures a core
    let every = Duration::from_millis((n as u64 / 4).clamp(500, 5000));
    while done.iter().any(Option::is_none) {
        let counts = store.customer_link_counts(&customer).await?;
        for (i, p) in Provider::ALL.into_iter().enumerate() {
            let synced: u64 = counts
                .iter()
                .filter(|(cp, cs, _)| *cp == p && *cs == SyncStatus::Synced)
                .map(|(_, _, n)| n)
                .sum();
            // the CRM's records are read only once its links are all synced
            if done[i].is_none()
                && synced >= want as u64
                && crm_count(&sides.http, &sides.sim, p).await? == want
            {
                done[i] = Some(started.elapsed());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every side agrees after {max_secs} s: {counts:?}"
        );
        tokio::time::sleep(every).await;
    }
    Ok(done.map(Option::unwrap_or_default))
}

/// The app's `n` contacts, written straight to MongoDB with no link: what
/// the app held before the customer connected its CRMs.
async fn seed_app(cfg: &DevConfig, n: usize) -> anyhow::Result<Vec<ContactId>> {
    let customer = CustomerId::parse(CUSTOMER).map_err(anyhow::Error::msg)?;
    let client = mongodb::Client::with_uri_str(&cfg.mongo.mongodb_uri).await?;
    let raw = client
        .database(&cfg.mongo.mongodb_db)
        .collection::<Contact>("contacts");
    let contacts: Vec<Contact> = (0..n)
        .map(|i| {
            let email = format!("e{i}@example.com");
            super::stored_contact(&customer, &email, format!("App{i}"), format!("Person{i}"))
        })
        .collect();
    for chunk in contacts.chunks(1000) {
        raw.insert_many(chunk)
            .await
            .context("inserting the app's contacts")?;
    }
    Ok(contacts.iter().map(|c| c.id).collect())
}

/// Checks that the three sides hold the same names for every person: the
/// app's last name filled into each CRM that lacked it, each CRM's own
/// first name of a shared person kept where the app's policy says.
async fn agree(
    http: &reqwest::Client,
    sim: &str,
    store: &Store,
    customer: &CustomerId,
) -> anyhow::Result<()> {
    let mut app = BTreeMap::new();
    let mut skip = 0;
    loop {
        let (page, _) = store
            .list_contacts(Some(customer), None, skip, 1000)
            .await?;
        if page.is_empty() {
            break;
        }
        skip += page.len() as u64;
        for c in page {
            app.insert(c.email.as_str().to_owned(), (c.first_name, c.last_name));
        }
    }
    for p in Provider::ALL {
        let records = live_records(http, sim, p).await?;
        let mut differ = Vec::new();
        for r in &records {
            let (email, first, last) = match p {
                Provider::Hubspot => {
                    let props = &r["properties"];
                    (&props["email"], &props["firstname"], &props["lastname"])
                }
                Provider::Pipedrive => {
                    (&r["emails"][0]["value"], &r["first_name"], &r["last_name"])
                }
            };
            let email = email.as_str().unwrap_or_default().to_lowercase();
            let want = app.get(&email);
            let got = (
                first.as_str().map(str::to_owned),
                last.as_str().map(str::to_owned),
            );
            if want != Some(&got) {
                differ.push(format!("{email}: app {want:?}, {p} {got:?}"));
            }
        }
        anyhow::ensure!(
            differ.is_empty(),
            "{} {p} records differ from the app, e.g. {:?}",
            differ.len(),
            &differ[..differ.len().min(3)]
        );
    }
    Ok(())
}

/// Live records of the customer in one CRM, in its own shape.
async fn live_records(
    http: &reqwest::Client,
    sim: &str,
    p: Provider,
) -> anyhow::Result<Vec<Value>> {
    Ok(http
        .get(format!("{sim}/{}/records?customer={CUSTOMER}", p.as_str()))
        .send()
        .await?
        .json()
        .await?)
}

/// How many live records of the customer one CRM holds.
async fn crm_count(http: &reqwest::Client, sim: &str, p: Provider) -> anyhow::Result<usize> {
    Ok(live_records(http, sim, p).await?.len())
}

/// Prints the time, the calls per contact and action, and the floor.
async fn report(
    http: &reqwest::Client,
    sim: &str,
    n: usize,
    took: Duration,
    done: [Duration; 2],
) -> anyhow::Result<()> {
    let want = distinct(n);
    println!(
        "first sync of {n} app contacts, {n} HubSpot and {n} Pipedrive records ({want} people): every link synced, all three sides agree after {:.1} s",
        took.as_secs_f64()
    );
    for (i, p) in Provider::ALL.into_iter().enumerate() {
        let calls: Vec<Value> = http
            .get(format!(
                "{sim}/calls?connection={}&customer={CUSTOMER}",
                p.as_str()
            ))
            .send()
            .await?
            .json()
            .await?;
        let mut by_action: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for c in &calls {
            let e = by_action
                .entry(c["action"].as_str().unwrap_or_default().to_owned())
                .or_default();
            match c["status"].as_u64() {
                Some(429) => e.1 += 1,
                _ => e.0 += 1,
            }
        }
        let made: usize = by_action.values().map(|v| v.0).sum();
        let refused: usize = by_action.values().map(|v| v.1).sum();
        let (floor_calls, floor_time) = floor(p, n);
        println!(
            "  {p}: complete after {:.1} s; {made} calls = {:.3} per person ({refused} more refused with 429); floor {floor_calls} calls = {:.1} s at {}/{} s; {:.2}x the floor in time, {:.2}x in calls",
            done[i].as_secs_f64(),
            made as f64 / want as f64,
            floor_time.as_secs_f64(),
            if p == Provider::Hubspot { HUBSPOT_LIMIT.0 } else { PIPEDRIVE_LIMIT.0 },
            if p == Provider::Hubspot { HUBSPOT_LIMIT.1 } else { PIPEDRIVE_LIMIT.1 } / 1000,
            done[i].as_secs_f64() / floor_time.as_secs_f64().max(0.001),
            made as f64 / floor_calls.max(1) as f64,
        );
        let detail: Vec<String> = by_action
            .iter()
            .map(|(a, (ok, _))| format!("{a} {ok}"))
            .collect();
        println!("    {}", detail.join(", "));
    }
    Ok(())
}
