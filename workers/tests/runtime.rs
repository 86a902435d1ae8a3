//! Jobs run through apalis workers over the backend, against a real Redis
//! (REDIS_URL, as started by scripts/test.sh).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{config, handler, hang, noop, queue, queue_in, start, Q};
use futures::future::BoxFuture;
use workers::{DeadLetter, Job, JobError, PushOptions, RedisBackend};

#[tokio::test]
async fn a_backlog_far_past_8000_due_jobs_drains_and_finished_jobs_are_bounded() {
    let q = queue().await;
    let n = 20_000;
    let payloads: Vec<String> = (0..n).map(|i| format!("{{\"i\":{i}}}")).collect();
    // delayed, so every job sits in the scheduled set and comes due at once
    let opts = PushOptions {
        max_attempts: 3,
        delay: Duration::from_millis(1),
        id: None,
        group: None,
    };
    q.push_many_raw(Q, &payloads, opts).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(q.counts(Q).await.unwrap().scheduled, n as u64);

    let mut cfg = config();
    cfg.done_keep = 500;
    let backend = RedisBackend::<serde_json::Value>::new(q.clone(), cfg);
    let worker = start(&backend, "w1", noop());
    let counts = q
        .wait_idle(Q, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("drained");
    worker.stop().await;
    let counts = q.counts(Q).await.unwrap_or(counts);
    assert_eq!(counts.completed_total, n as u64);
    assert!(
        counts.done <= 500,
        "finished jobs kept within bounds: {counts:?}"
    );
    assert_eq!(counts.dead, 0);
}

struct Recorder(Arc<AtomicU32>);
impl DeadLetter for Recorder {
    fn on_dead<'a>(
        &'a self,
        _job: &'a Job,
        _e: &'a JobError,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_worker_never_runs_more_jobs_than_its_concurrency() {
    // several claims may be out at once: together they claim no more than
    // the free slots
    let q = queue().await;
    let payloads: Vec<String> = (0..200).map(|i| format!("{{\"i\":{i}}}")).collect();
    q.push_many_raw(Q, &payloads, PushOptions::default())
        .await
        .unwrap();
    let (now, most) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (n, m) = (now.clone(), most.clone());
    let h = handler(move |_: serde_json::Value, _| {
        let (n, m) = (n.clone(), m.clone());
        async move {
            let running = n.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(running, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            n.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let mut cfg = config();
    cfg.concurrency = 8;
    cfg.fetch_batch = 8;
    let worker = start(&RedisBackend::new(q.clone(), cfg), "w1", h);
    let counts = q
        .wait_idle(Q, Duration::from_secs(20))
        .await
        .unwrap()
        .expect("drained");
    worker.stop().await;
    assert_eq!(counts.completed_total, 200);
    let most = most.load(Ordering::SeqCst);
    assert!((2..=8).contains(&most), "at most 8 at once: {most}");
}

#[tokio::test]
async fn transient_failures_use_every_attempt_permanent_ones_only_one() {
    let q = queue().await;
    let calls = Arc::new(AtomicU32::new(0));
    let dead_hooks = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let h = handler(move |payload: String, _| {
        c.fetch_add(1, Ordering::SeqCst);
        async move {
            if payload == "permanent" {
                Err(JobError::permanent("refused"))
            } else {
                Err(JobError::transient("flaky"))
            }
        }
    });
    let t = q
        .push(Q, &"transient", PushOptions::default())
        .await
        .unwrap();
    let p = q
        .push(Q, &"permanent", PushOptions::default())
        .await
        .unwrap();
    let backend =
        RedisBackend::new(q.clone(), config()).on_dead(Arc::new(Recorder(dead_hooks.clone())));
    let worker = start(&backend, "w1", h);
    let counts = q
        .wait_idle(Q, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("settled");
    worker.stop().await;
    assert_eq!(counts.dead, 2);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "3 transient attempts + 1 permanent"
    );
    assert_eq!(dead_hooks.load(Ordering::SeqCst), 2);
    let tj = q.job(&t).await.unwrap().unwrap();
    assert_eq!(tj.attempts, 3);
    assert_eq!(q.attempts(&t).await.unwrap().len(), 3);
    assert_eq!(q.job(&p).await.unwrap().unwrap().attempts, 1);

    // revived jobs get fresh attempts
    assert_eq!(q.retry_all_dead(Q).await.unwrap(), 2);
    let revived = q.job(&t).await.unwrap().unwrap();
    assert_eq!(
        (revived.attempts, revived.state),
        (0, workers::JobState::Pending)
    );
    assert!(q.discard(&t).await.unwrap());
    assert!(q.job(&t).await.unwrap().is_none());
}

#[tokio::test]
async fn shutdown_gives_unfinished_jobs_back_and_a_dead_workers_jobs_are_recovered() {
    let q = queue().await;
    let started = Arc::new(tokio::sync::Notify::new());
    let calls = Arc::new(AtomicU32::new(0));
    let id = q.push(Q, &"slow", PushOptions::default()).await.unwrap();

    // graceful: the drain is cut short, and the job goes back with its
    // attempt returned
    let mut cfg = config();
    cfg.shutdown_grace = Duration::from_millis(100);
    let backend = RedisBackend::<String>::new(q.clone(), cfg);
    let worker = start(&backend, "graceful", hang(calls.clone(), started.clone()));
    started.notified().await;
    worker.stop().await;
    let job = q.job(&id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (workers::JobState::Pending, 0));
    assert!(q.workers(Q).await.unwrap().is_empty(), "left the pool");

    // crash: the worker dies without leaving; a peer recovers the job
    let backend = RedisBackend::<String>::new(q.clone(), config());
    let crashed = start(&backend, "crashed", hang(calls.clone(), started.clone()));
    started.notified().await;
    crashed.crash().await;
    assert_eq!(q.counts(Q).await.unwrap().running, 1);
    let peer = start(&backend, "peer", noop());
    let counts = q
        .wait_idle(Q, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("recovered");
    peer.stop().await;
    assert_eq!(counts.completed_total, 1);
}

#[tokio::test]
async fn the_rate_limiter_is_shared_by_every_handle() {
    let q = queue().await;
    let a = workers::RateLimiter::new(&q);
    let b = workers::RateLimiter::new(&q.clone());
    let start = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for l in [a, b] {
        handles.push(tokio::spawn(async move {
            for _ in 0..5 {
                l.acquire("k", 4, Duration::from_millis(500)).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    // 10 grants at 4 per 500 ms need at least two full windows
    assert!(
        start.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_lease_is_exclusive_and_a_lost_holder_frees_it_within_its_ttl() {
    let ns = common::namespace();
    let q = queue_in(&ns).await;
    let ttl = Duration::from_millis(300);
    let first = q
        .lease("r", ttl, Duration::ZERO)
        .await
        .unwrap()
        .expect("free");
    assert!(
        q.lease("r", ttl, Duration::from_millis(100))
            .await
            .unwrap()
            .is_none(),
        "held, and renewed past its ttl"
    );
    first.release().await.unwrap();
    // a holder that vanishes without releasing: its process (here, its own
    // runtime) stops, and with it the renewals
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let q2 = queue_in(&ns).await;
            let lease = q2
                .lease("r", ttl, Duration::ZERO)
                .await
                .unwrap()
                .expect("released");
            std::mem::forget(lease);
        });
        drop(rt);
    })
    .join()
    .unwrap();
    let t = tokio::time::Instant::now();
    let third = q.lease("r", ttl, Duration::from_secs(2)).await.unwrap();
    assert!(third.is_some(), "expired");
    assert!(t.elapsed() <= Duration::from_secs(1));
}
