//! What a dashboard reads through apalis' listing traits (`ListQueues`,
//! `ListWorkers`, `ListTasks`, `ListAllTasks`, `Metrics`, `FetchById`) on
//! `workers::RedisBackend` is what the operator api shows: the same jobs in
//! each state, the same counts, the same workers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use apalis_core::backend::{
    FetchById, Filter, ListAllTasks, ListQueues, ListTasks, ListWorkers, Metrics,
};
use apalis_core::task::status::Status;
use apalis_core::task::task_id::TaskId;
use apalis_core::task::Task;
use common::{terminate, Options, TestApp};
use contact_sync::domain::Provider;
use contact_sync::jobs::{InboundChange, Kind, OutboundUpsert, ProviderPoll, QUEUES};
use reqwest::Method;
use serde_json::{json, Value};
use workers::{PushOptions, Queue, RedisBackend, WorkerConfig};

const WORKERS: [&str; 2] = ["lister-a", "lister-b"];

/// The api's job states and the apalis status each one is listed as.
fn states() -> [(&'static str, Status); 5] {
    [
        ("pending", Status::Pending),
        ("scheduled", Status::Queued),
        ("running", Status::Running),
        ("done", Status::Done),
        ("dead", Status::Failed),
    ]
}

fn filter(status: Option<Status>, page: u32, page_size: u32) -> Filter {
    Filter {
        status,
        page,
        page_size: Some(page_size),
    }
}

fn backend<K: Kind>(q: &Queue) -> RedisBackend<K> {
    RedisBackend::new(q.clone(), WorkerConfig::new(K::QUEUE))
}

fn id_of(task: &Task<String>) -> String {
    task.ctx()
        .task_id()
        .map(ToString::to_string)
        .expect("a listed task has an id")
}

fn ids(tasks: &[Task<String>]) -> Vec<String> {
    tasks.iter().map(id_of).collect()
}

/// Runs `check` until it passes; panics with its last complaint after
/// `within` (a webhook the simulator sends late may still add a job).
async fn agree<F, Fut>(within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let until = Instant::now() + within;
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if Instant::now() >= until => panic!("listings disagree: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn same<T: PartialEq + std::fmt::Debug>(what: &str, apalis: T, api: T) -> Result<(), String> {
    if apalis == api {
        Ok(())
    } else {
        Err(format!("{what}: apalis {apalis:?}, api {api:?}"))
    }
}

async fn get(app: &TestApp, path: &str) -> Value {
    let (status, body) = app.call(Method::GET, path, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// Job ids of `GET /api/queues/{queue}/jobs?state=…`, one page.
async fn api_page(app: &TestApp, queue: &str, state: &str, offset: u64, limit: u64) -> Vec<String> {
    get(
        app,
        &format!("/api/queues/{queue}/jobs?state={state}&offset={offset}&limit={limit}"),
    )
    .await
    .as_array()
    .expect("a list of jobs")
    .iter()
    .map(|j| j["id"].as_str().expect("job id").to_owned())
    .collect()
}

async fn api_jobs(app: &TestApp, queue: &str, state: &str) -> Vec<String> {
    api_page(app, queue, state, 0, 500).await
}

/// `(name, queue)` of every worker `GET /api/workers` lists.
async fn api_workers(app: &TestApp) -> BTreeSet<(String, String)> {
    get(app, "/api/workers")
        .await
        .as_array()
        .expect("a list of workers")
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_owned(),
                w["queue"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every task `list_tasks` gives for `status`, `page_size` at a time.
async fn list_paged<K: Kind>(
    b: &RedisBackend<K>,
    status: &Status,
    page_size: u32,
) -> Vec<Task<String>> {
    let mut all = Vec::new();
    for page in 1.. {
        let tasks = b
            .list_tasks(&filter(Some(status.clone()), page, page_size))
            .await
            .expect("list_tasks");
        let last = tasks.len() < page_size as usize;
        all.extend(tasks);
        if last {
            return all;
        }
    }
    unreachable!()
}

/// Every task `list_all_tasks` gives for `status`, `page_size` at a time.
async fn list_all_paged<K: Kind>(
    b: &RedisBackend<K>,
    status: Option<Status>,
    page_size: u32,
) -> Vec<Task<String>> {
    let mut all = Vec::new();
    for page in 1.. {
        let tasks = b
            .list_all_tasks(&filter(status.clone(), page, page_size))
            .await
            .expect("list_all_tasks");
        let last = tasks.len() < page_size as usize;
        all.extend(tasks);
        if last {
            return all;
        }
    }
    unreachable!()
}

/// One kind's queue seen through its backend and through the api.
async fn kind_agrees<K: Kind>(app: &TestApp, q: &Queue) -> Result<(), String> {
    let b = backend::<K>(q);
    let queue = K::QUEUE;
    let mut every_state = Vec::new();
    for (state, status) in states() {
        let api = api_jobs(app, queue, state).await;
        // small pages, so paging is exercised on both sides
        let listed = list_paged(&b, &status, 2).await;
        same(&format!("{queue} {state} ids"), ids(&listed), api.clone())?;
        let mut api_paged = Vec::new();
        for offset in (0..).step_by(2) {
            let page = api_page(app, queue, state, offset, 2).await;
            let last = page.len() < 2;
            api_paged.extend(page);
            if last {
                break;
            }
        }
        same(
            &format!("{queue} {state} ids, api pages"),
            api_paged,
            api.clone(),
        )?;
        for t in &listed {
            assert_eq!(
                t.ctx().status(),
                status,
                "{queue} {state}: status of {}",
                id_of(t)
            );
            assert_eq!(
                t.ctx().queue().map(ToString::to_string).as_deref(),
                Some(queue),
                "queue of {}",
                id_of(t)
            );
            serde_json::from_str::<K>(&t.args).unwrap_or_else(|e| {
                panic!(
                    "{queue}: args of {} are not a {queue} payload ({e}): {}",
                    id_of(t),
                    t.args
                )
            });
        }
        every_state.extend(api);
    }
    // no status: every state, in the order above
    let all = b
        .list_tasks(&filter(None, 1, 1000))
        .await
        .map_err(|e| e.to_string())?;
    same(
        &format!("{queue} ids of every state"),
        ids(&all),
        every_state,
    )?;

    // Metrics::fetch_by_queue and the api's counts
    let stats: BTreeMap<String, String> = b
        .fetch_by_queue()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|s| (s.title, s.value))
        .collect();
    let api = get(app, &format!("/api/queues/{queue}/stats")).await;
    for (title, field) in [
        ("PENDING_JOBS", "pending"),
        ("QUEUED_JOBS", "scheduled"),
        ("RUNNING_JOBS", "running"),
        ("DONE_JOBS", "done"),
        ("FAILED_JOBS", "dead"),
        ("COMPLETED_TOTAL", "completedTotal"),
        ("FAILED_ATTEMPTS_TOTAL", "failedTotal"),
    ] {
        same(
            &format!("{queue} {title}"),
            stats.get(title).cloned(),
            Some(api[field].to_string()),
        )?;
    }
    let total: u64 = ["pending", "scheduled", "running", "done", "dead"]
        .iter()
        .map(|f| api[*f].as_u64().unwrap())
        .sum();
    same(
        &format!("{queue} TOTAL_JOBS"),
        stats.get("TOTAL_JOBS").cloned(),
        Some(total.to_string()),
    )?;
    let api_workers: BTreeSet<_> = api_workers(app)
        .await
        .into_iter()
        .filter(|(_, q)| q == queue)
        .collect();
    same(
        &format!("{queue} workers count"),
        stats.get("WORKERS").cloned(),
        Some(api_workers.len().to_string()),
    )?;

    // ListWorkers::list_workers: this queue's workers
    let workers: BTreeSet<_> = b
        .list_workers()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|w| (w.id, w.queue))
        .collect();
    same(&format!("{queue} workers"), workers, api_workers)
}

/// Every queue and worker seen through apalis and through the api.
async fn all_agree(app: &TestApp, q: &Queue) -> Result<(), String> {
    kind_agrees::<OutboundUpsert>(app, q).await?;
    kind_agrees::<InboundChange>(app, q).await?;
    kind_agrees::<ProviderPoll>(app, q).await?;

    // any kind's backend lists every queue
    let b = backend::<ProviderPoll>(q);
    let api_workers = api_workers(app).await;
    let all_workers: BTreeSet<_> = b
        .list_all_workers()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|w| (w.id, w.queue))
        .collect();
    same("every worker", all_workers, api_workers.clone())?;

    let queues = b.list_queues().await.map_err(|e| e.to_string())?;
    let mut names: Vec<&str> = QUEUES.to_vec();
    names.sort_unstable();
    same(
        "queue names",
        queues.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        names,
    )?;
    for info in &queues {
        let listed: BTreeSet<&str> = info.workers.iter().map(String::as_str).collect();
        let api: BTreeSet<&str> = api_workers
            .iter()
            .filter(|(_, q)| *q == info.name)
            .map(|(n, _)| n.as_str())
            .collect();
        same(
            &format!("{} workers in list_queues", info.name),
            listed,
            api,
        )?;
        let api = get(app, &format!("/api/queues/{}/stats", info.name)).await;
        let stat = |title: &str| {
            info.stats
                .iter()
                .find(|s| s.title == title)
                .map(|s| s.value.clone())
        };
        same(
            &format!("{} dead in list_queues", info.name),
            stat("FAILED_JOBS"),
            Some(api["dead"].to_string()),
        )?;
        same(
            &format!("{} done in list_queues", info.name),
            stat("DONE_JOBS"),
            Some(api["done"].to_string()),
        )?;
    }

    // ListAllTasks: each state over every queue, in pages that cross queues
    let mut everything = BTreeSet::new();
    for (state, status) in states() {
        let mut api = BTreeSet::new();
        for queue in QUEUES {
            api.extend(api_jobs(app, queue, state).await);
        }
        let listed = list_all_paged(&b, Some(status), 3).await;
        let listed_ids = ids(&listed);
        let unique: BTreeSet<String> = listed_ids.iter().cloned().collect();
        same(
            &format!("{state} listed once each"),
            unique.len(),
            listed_ids.len(),
        )?;
        same(&format!("{state} over every queue"), unique, api.clone())?;
        everything.extend(api);
    }
    let listed: BTreeSet<String> = ids(&list_all_paged(&b, None, 4).await)
        .into_iter()
        .collect();
    same("every job of every queue", listed, everything)
}

#[tokio::test]
async fn apalis_listings_show_what_the_api_shows() {
    let mut app = TestApp::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let logs = std::env::temp_dir().join(format!("contact-sync-listings-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&logs).unwrap();
    for name in WORKERS {
        app.add_worker_logging(&[("WORKER_NAME", name)], &logs.join(format!("{name}.log")));
    }
    let q = app.queue().await;

    // jobs that finish, and jobs that run out of attempts
    let doomed = ["doomed-0@example.com", "doomed-1@example.com"];
    app.set_faults(json!({ "failRecords": doomed })).await;
    let synced = app.create_many("listed-", 4).await;
    let mut failed = Vec::new();
    let mut dead_jobs = Vec::new();
    for email in doomed {
        let (status, body) = app.create(json!({ "email": email })).await;
        assert_eq!(status, 202, "{body}");
        failed.push(body["contact"]["id"].as_str().unwrap().to_owned());
        for j in body["jobs"].as_array().unwrap() {
            dead_jobs.push((
                j["jobId"].as_str().unwrap().to_owned(),
                j["provider"].clone(),
            ));
        }
    }
    let synced_refs: Vec<&str> = synced.iter().map(String::as_str).collect();
    let failed_refs: Vec<&str> = failed.iter().map(String::as_str).collect();
    app.wait_links(&synced_refs, "synced", Duration::from_secs(20))
        .await;
    app.wait_links(&failed_refs, "error", Duration::from_secs(20))
        .await;
    app.settle(Duration::from_secs(20)).await;

    // both workers serve every queue, and both sides say so
    let expected: BTreeSet<(String, String)> = WORKERS
        .iter()
        .flat_map(|w| QUEUES.iter().map(|q| ((*w).to_owned(), (*q).to_owned())))
        .collect();
    agree(Duration::from_secs(10), || async {
        same(
            "workers of the api",
            api_workers(&app).await,
            expected.clone(),
        )?;
        all_agree(&app, &q).await
    })
    .await;
    let counts = q.counts(OutboundUpsert::QUEUE).await.unwrap();
    assert_eq!((counts.done, counts.dead), (8, 4), "{counts:?}");

    // FAILED_ATTEMPTS_TOTAL counts every failed attempt, those retried in
    // place included, as the jobs' attempt logs show them
    let mut failed_attempts = 0;
    for (id, _) in &dead_jobs {
        let job = get(&app, &format!("/api/jobs/{id}")).await;
        failed_attempts += job["failedAttempts"].as_array().unwrap().len() as u64;
    }
    assert_eq!(failed_attempts, 4 * 3, "three attempts per dead job");
    let stat = backend::<OutboundUpsert>(&q)
        .fetch_by_queue()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.title == "FAILED_ATTEMPTS_TOTAL")
        .expect("FAILED_ATTEMPTS_TOTAL");
    assert_eq!(
        stat.value,
        failed_attempts.to_string(),
        "Metrics::fetch_by_queue"
    );
    let overview = get(&app, "/api/queues").await;
    let upserts = overview
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["queue"] == OutboundUpsert::QUEUE)
        .unwrap();
    assert_eq!(upserts["failedTotal"], failed_attempts, "{upserts}");
    assert_eq!(upserts["failed5m"], failed_attempts, "{upserts}");

    // the workers leave the pool; then jobs wait: pending, and scheduled
    for i in 0..app.workers.len() {
        let status = terminate(&mut app.workers[i], Duration::from_secs(30)).await;
        assert!(status.success(), "worker {i} exited with {status}");
    }
    let waiting = app.create_many("waiting-", 3).await;
    let (status, body) = app
        .call(Method::POST, "/api/providers/pipedrive/poll", None)
        .await;
    assert_eq!(status, 202, "{body}");
    let pending_poll = body["jobId"].as_str().unwrap().to_owned();
    let later = PushOptions {
        max_attempts: 3,
        delay: Duration::from_secs(3600),
        id: None,
        group: None,
    };
    let scheduled_poll = q
        .push(
            ProviderPoll::QUEUE,
            &ProviderPoll {
                customer: Default::default(),
                provider: Provider::Hubspot,
                backfill: true,
                first_sync: false,
                continued: false,
            },
            later,
        )
        .await
        .unwrap();
    agree(Duration::from_secs(10), || async {
        same(
            "workers of the api",
            api_workers(&app).await,
            BTreeSet::new(),
        )?;
        all_agree(&app, &q).await
    })
    .await;
    assert_eq!(
        api_jobs(&app, OutboundUpsert::QUEUE, "pending").await.len(),
        2 * waiting.len(),
        "a push per provider of each waiting contact"
    );

    // FetchById: the job with its typed args, as the api shows it
    let mut b = backend::<OutboundUpsert>(&q);
    for (id, provider) in &dead_jobs {
        let task = b
            .fetch_by_id(&TaskId::from_string(id.clone()))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("dead job {id} fetched"));
        let api = get(&app, &format!("/api/jobs/{id}")).await;
        assert_eq!(api["state"], "dead", "{api}");
        assert_eq!(id_of(&task), *id);
        assert_eq!(task.ctx().status(), Status::Failed);
        assert_eq!(
            task.ctx().attempt() as u64,
            api["attempts"].as_u64().unwrap()
        );
        assert_eq!(
            task.ctx().max_attempts().map(|n| n as u64),
            api["maxAttempts"].as_u64()
        );
        assert_eq!(task.ctx().lock_by(), api["worker"].as_str());
        let args: OutboundUpsert = serde_json::from_str(&task.args).unwrap();
        assert_eq!(json!(args.provider), *provider);
        assert!(
            failed.contains(&args.contact_id.to_string()),
            "dead job {id} is for a doomed contact: {args:?}"
        );
        assert_eq!(serde_json::to_value(&args).unwrap(), api["payload"]);
    }
    let done = api_jobs(&app, OutboundUpsert::QUEUE, "done").await;
    for id in &done {
        let task = b
            .fetch_by_id(&TaskId::from_string(id.clone()))
            .await
            .unwrap()
            .expect("done job fetched");
        assert_eq!(task.ctx().status(), Status::Done);
        let args: OutboundUpsert = serde_json::from_str(&task.args).unwrap();
        assert!(synced.contains(&args.contact_id.to_string()), "{args:?}");
    }
    let mut polls_backend = backend::<ProviderPoll>(&q);
    let polls = [
        (pending_poll, Status::Pending, Provider::Pipedrive, false),
        (scheduled_poll, Status::Queued, Provider::Hubspot, true),
    ];
    for (id, status, provider, backfill) in polls {
        let task = polls_backend
            .fetch_by_id(&TaskId::from_string(id.clone()))
            .await
            .unwrap()
            .expect("poll fetched");
        assert_eq!(task.ctx().status(), status, "{id}");
        let args: ProviderPoll = serde_json::from_str(&task.args).unwrap();
        assert_eq!((args.provider, args.backfill), (provider, backfill));
    }
    let unknown = TaskId::from_string(workers::new_job_id());
    assert!(b.fetch_by_id(&unknown).await.unwrap().is_none());

    let _ = std::fs::remove_dir_all(&logs);
}
