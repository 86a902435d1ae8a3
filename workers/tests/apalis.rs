//! What the backend adds as an apalis backend: typed pushes through
//! `TaskSink`, attempts as apalis reports them, payloads that do not decode,
//! a graceful drain, and the listings dashboards read.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis::prelude::*;
use common::{config, handler, queue, start, Q};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use workers::{DeadLetter, Job, JobError, JobState, PushOptions, RedisBackend};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Email {
    to: String,
}

fn email(to: &str) -> Email {
    Email { to: to.into() }
}

#[tokio::test]
async fn task_sink_pushes_keep_the_id_attempts_and_run_time_of_each_task() {
    let q = queue().await;
    let mut backend = RedisBackend::<Email>::new(q.clone(), config());

    backend
        .push_bulk(vec![email("a"), email("b"), email("c")])
        .await
        .unwrap();
    let counts = q.counts(Q).await.unwrap();
    assert_eq!(counts.pending, 3);
    let pending = q.list(Q, JobState::Pending, 0, 10).await.unwrap();
    assert_eq!(pending[0].payload, serde_json::json!({"to": "a"}), "FIFO");
    assert!(
        pending.iter().all(|j| j.max_attempts == 3),
        "default attempts"
    );

    let task = TaskBuilder::new(email("later"))
        .task_id(TaskId::from_string("welcome-42"))
        .max_attempts(7)
        .run_after(Duration::from_secs(60))
        .build();
    backend.push_task(task).await.unwrap();
    let job = q.job("welcome-42").await.unwrap().expect("pushed");
    assert_eq!(
        (job.state, job.max_attempts),
        (JobState::Scheduled, 7),
        "{job:?}"
    );

    // the same id again: nothing changes
    let again = TaskBuilder::new(email("other"))
        .task_id(TaskId::from_string("welcome-42"))
        .build();
    backend.push_task(again).await.unwrap();
    let job = q.job("welcome-42").await.unwrap().unwrap();
    assert_eq!(job.payload, serde_json::json!({"to": "later"}));
    assert_eq!(q.counts(Q).await.unwrap().scheduled, 1);
}

#[tokio::test]
async fn the_handler_sees_the_attempt_number_kept_in_redis() {
    let q = queue().await;
    let mut cfg = config();
    // the second retry waits in Redis, not in place
    cfg.backoff.base = Duration::from_millis(40);
    cfg.max_inline_wait = Duration::from_millis(60);
    let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
    let s = seen.clone();
    let h = handler(move |_: Email, attempt| {
        s.lock().unwrap().push(attempt);
        async move {
            if attempt < 3 {
                Err(JobError::transient("flaky"))
            } else {
                Ok(())
            }
        }
    });
    let mut backend = RedisBackend::new(q.clone(), cfg);
    backend.push(email("x")).await.unwrap();
    let worker = start(&backend, "w", h);
    let counts = q
        .wait_idle(Q, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("done");
    worker.stop().await;
    assert_eq!(counts.completed_total, 1);
    assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
    let done = q.list(Q, JobState::Done, 0, 1).await.unwrap();
    assert_eq!(done[0].attempts, 3);
}

struct Parked(Arc<Mutex<Vec<(String, String)>>>);

impl DeadLetter for Parked {
    fn on_dead<'a>(&'a self, job: &'a Job, e: &'a JobError) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let raw = job.payload.to_string();
            self.0.lock().unwrap().push((raw, e.to_string()));
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_payload_that_does_not_decode_is_dead_lettered_and_the_worker_goes_on() {
    let q = queue().await;
    let bad = q
        .push(Q, &serde_json::json!({"too": 1}), PushOptions::default())
        .await
        .unwrap();
    let parked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let h = handler(move |_: Email, _| {
        r.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    });
    let mut backend =
        RedisBackend::new(q.clone(), config()).on_dead(Arc::new(Parked(parked.clone())));
    let worker = start(&backend, "w", h);
    q.wait_idle(Q, Duration::from_secs(10)).await.unwrap();
    backend.push(email("fine")).await.unwrap();
    let counts = q
        .wait_idle(Q, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("done");
    worker.stop().await;
    assert_eq!((counts.completed_total, counts.dead), (1, 1));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "only the good job ran");
    let parked = parked.lock().unwrap().clone();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].0, r#"{"too":1}"#, "the hook gets the raw payload");
    assert!(parked[0].1.contains("does not decode"), "{parked:?}");
    let job = q.job(&bad).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Dead, 1));
}

#[tokio::test]
async fn a_graceful_stop_finishes_running_jobs_and_gives_back_the_rest() {
    let q = queue().await;
    let mut cfg = config();
    cfg.concurrency = 4;
    let runs = Arc::new(AtomicU32::new(0));
    let started = Arc::new(tokio::sync::Notify::new());
    let (r, s) = (runs.clone(), started.clone());
    let h = handler(move |_: Email, _| {
        r.fetch_add(1, Ordering::SeqCst);
        s.notify_one();
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(())
        }
    });
    let mut backend = RedisBackend::new(q.clone(), cfg);
    backend
        .push_bulk((0..20).map(|i| email(&i.to_string())).collect())
        .await
        .unwrap();
    let worker = start(&backend, "w", h);
    started.notified().await;
    worker.stop().await;

    let ran = runs.load(Ordering::SeqCst);
    let counts = q.counts(Q).await.unwrap();
    assert!((1..=4).contains(&ran), "one batch of slots ran: {ran}");
    assert_eq!(
        counts.completed_total,
        u64::from(ran),
        "all finished and acked"
    );
    assert_eq!((counts.running, counts.pending), (0, 20 - u64::from(ran)));
    let pending = q.list(Q, JobState::Pending, 0, 20).await.unwrap();
    assert!(
        pending.iter().all(|j| j.attempts == 0),
        "attempts given back"
    );
    assert!(q.workers(Q).await.unwrap().is_empty(), "left the pool");
}

#[tokio::test]
async fn dashboards_see_queues_workers_and_tasks_by_status() {
    let q = queue().await;
    let mut backend = RedisBackend::<Email>::new(q.clone(), config());
    backend
        .push_bulk(vec![email("a"), email("b")])
        .await
        .unwrap();
    let later = TaskBuilder::new(email("later"))
        .task_id(TaskId::from_string("later-1"))
        .run_after(Duration::from_secs(3600))
        .build();
    backend.push_task(later).await.unwrap();

    let by = |status: Option<Status>| Filter {
        status,
        page: 1,
        page_size: Some(10),
    };
    let pending = backend
        .list_tasks(&by(Some(Status::Pending)))
        .await
        .unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].args, r#"{"to":"a"}"#);
    let queued = backend.list_tasks(&by(Some(Status::Queued))).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].task_id().unwrap().to_string(), "later-1");
    let all = backend.list_all_tasks(&by(None)).await.unwrap();
    assert_eq!(all.len(), 3);
    let second_page = backend
        .list_tasks(&Filter {
            status: None,
            page: 2,
            page_size: Some(2),
        })
        .await
        .unwrap();
    assert_eq!(second_page.len(), 1);
    assert!(backend
        .list_tasks(&by(Some(Status::Killed)))
        .await
        .unwrap()
        .is_empty());

    let fetched = backend
        .fetch_by_id(&TaskId::from_string("later-1"))
        .await
        .unwrap()
        .expect("found");
    assert_eq!(fetched.status(), Status::Queued);
    assert_eq!(fetched.max_attempts(), Some(3));

    let queues = backend.list_queues().await.unwrap();
    assert_eq!(queues.len(), 1);
    assert_eq!(queues[0].name, Q);
    let pending_stat = |stats: &[Statistic]| {
        stats
            .iter()
            .find(|s| s.title == "PENDING_JOBS")
            .map(|s| s.value.clone())
    };
    let stats = backend.fetch_by_queue().await.unwrap();
    assert_eq!(pending_stat(&stats).as_deref(), Some("2"));

    let started = Arc::new(tokio::sync::Notify::new());
    let worker = start(
        &backend,
        "dash",
        common::hang(Arc::default(), started.clone()),
    );
    started.notified().await;
    let workers = backend.list_workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(
        (workers[0].id.as_str(), workers[0].queue.as_str()),
        ("dash", Q)
    );
    assert_eq!(backend.list_all_workers().await.unwrap().len(), 1);
    let running = backend
        .list_tasks(&by(Some(Status::Running)))
        .await
        .unwrap();
    assert_eq!(running.len(), 2);
    worker.crash().await;
    backend.leave("dash").await.unwrap();
    assert_eq!(q.counts(Q).await.unwrap().pending, 2);
}
