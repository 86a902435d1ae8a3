//! What the queues keep, and for how long: nothing grows without bound.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{config, handler, namespace, raw, redis_url, start, Q};
use workers::{JobError, JobState, PushOptions, Queue, RedisBackend, WorkerConfig};

/// Runs a worker with `cfg` over the queue with a handler failing by its
/// payload ("transient" or "permanent"; anything else succeeds) until idle.
async fn drain(q: &Queue, cfg: WorkerConfig) {
    let h = handler(|payload: String, _| async move {
        match payload.as_str() {
            "transient" => Err(JobError::transient("flaky")),
            "permanent" => Err(JobError::permanent("refused")),
            _ => Ok(()),
        }
    });
    let worker = start(&RedisBackend::new(q.clone(), cfg), "w", h);
    q.wait_idle(Q, Duration::from_secs(20))
        .await
        .unwrap()
        .expect("drained");
    worker.stop().await;
}

#[tokio::test]
async fn dead_jobs_are_kept_within_count_and_age_and_attempt_logs_are_capped() {
    let ns = namespace();
    let q = Queue::connect(&redis_url(), &ns).await.unwrap();
    let mut conn = raw(&redis_url()).await;

    // by count: the oldest dead jobs go, records and logs with them
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            q.push(Q, &"permanent", PushOptions::default())
                .await
                .unwrap(),
        );
        let mut cfg = config();
        cfg.dead_keep = 2;
        cfg.dead_retention = Duration::from_secs(3600);
        drain(&q, cfg).await;
    }
    let dead: Vec<String> = q
        .dead(Q, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(
        dead,
        [ids[4].clone(), ids[3].clone()],
        "the newest two, newest first"
    );
    for id in &ids[..3] {
        assert!(
            q.job(id).await.unwrap().is_none(),
            "trimmed job {id} is gone"
        );
        let log: i64 = redis::cmd("EXISTS")
            .arg(format!("{ns}:q:{{{Q}}}:job:{id}:log"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(log, 0);
    }
    // a kept dead job expires with the retention
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{ns}:q:{{{Q}}}:job:{}", ids[4]))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "{ttl}");
    // ...and a revived one no longer does
    assert_eq!(q.retry_dead(Q, &[ids[4].clone()]).await.unwrap(), 1);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{ns}:q:{{{Q}}}:job:{}", ids[4]))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ttl, -1);
    q.discard(&ids[4]).await.unwrap();

    // by age: a job dead longer than the retention leaves the dead set when
    // the next one dies
    let mut cfg = config();
    cfg.dead_retention = Duration::from_millis(300);
    let old = q
        .push(Q, &"permanent", PushOptions::default())
        .await
        .unwrap();
    drain(&q, cfg.clone()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new = q
        .push(Q, &"permanent", PushOptions::default())
        .await
        .unwrap();
    drain(&q, cfg).await;
    let dead: Vec<String> = q
        .dead(Q, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert!(!dead.contains(&old) && dead.contains(&new), "{dead:?}");

    // attempt logs keep the last 25 entries
    let opts = PushOptions {
        max_attempts: 40,
        ..PushOptions::default()
    };
    let long = q.push(Q, &"transient", opts).await.unwrap();
    let mut cfg = config();
    cfg.backoff.base = Duration::from_millis(1);
    cfg.backoff.max = Duration::from_millis(2);
    drain(&q, cfg).await;
    let log = q.attempts(&long).await.unwrap();
    assert_eq!(log.len(), 25);
    assert_eq!(log.last().unwrap().attempt, 40, "the newest are kept");
}

#[tokio::test]
async fn throughput_is_counted_in_a_bounded_ring_of_minutes() {
    let ns = namespace();
    let q = Queue::connect(&redis_url(), &ns).await.unwrap();
    for body in ["ok", "ok", "ok", "permanent"] {
        q.push(Q, &body, PushOptions::default()).await.unwrap();
    }
    drain(&q, config()).await;
    let t = q.throughput(Q, 5).await.unwrap();
    assert_eq!((t.minutes, t.completed, t.failed), (5, 3, 1));
    assert_eq!(
        q.throughput(Q, 10_000).await.unwrap().minutes,
        60,
        "the ring holds an hour"
    );

    let mut conn = raw(&redis_url()).await;
    let stats: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{ns}:q:{{{Q}}}:stats"))
        .query_async(&mut conn)
        .await
        .unwrap();
    // totals, plus minute / completed / failed per slot of the ring
    assert!(stats.len() <= 3 + 3 * 60, "{stats:?}");
    assert!(
        stats
            .keys()
            .all(|k| !k.starts_with("completed:") && !k.starts_with("failed:")),
        "no field per minute: {stats:?}"
    );
}

#[tokio::test]
async fn done_jobs_are_kept_for_inspection_within_count_and_age_then_deleted_with_their_logs() {
    let ns = namespace();
    let q = Queue::connect(&redis_url(), &ns).await.unwrap();
    let mut conn = raw(&redis_url()).await;
    let exists = |key: String| {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(key);
        cmd
    };

    // by count: one at a time, so "newest" is well defined; the first
    // fails once, so it has an attempt log
    let h = || {
        handler(|payload: String, attempt| async move {
            if payload == "flaky" && attempt == 1 {
                Err(JobError::transient("flaky"))
            } else {
                Ok(())
            }
        })
    };
    let mut cfg = config();
    cfg.done_keep = 2;
    cfg.done_retention = Duration::from_secs(3600);
    let mut ids = Vec::new();
    for body in ["flaky", "ok", "flaky", "ok"] {
        ids.push(q.push(Q, &body, PushOptions::default()).await.unwrap());
        let worker = start(&RedisBackend::new(q.clone(), cfg.clone()), "w", h());
        q.wait_idle(Q, Duration::from_secs(20))
            .await
            .unwrap()
            .expect("drained");
        worker.stop().await;
    }
    let done = q.list(Q, JobState::Done, 0, 10).await.unwrap();
    let listed: Vec<&str> = done.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(listed, [&ids[3], &ids[2]], "the newest two, newest first");
    // what inspection shows of a kept done job, though ack wrote no hash
    let kept = q.job(&ids[2]).await.unwrap().expect("kept");
    assert_eq!(kept.state, JobState::Done);
    assert_eq!(kept.attempts, 2);
    assert_eq!(kept.worker.as_deref(), Some("w"));
    assert!(kept.updated_ms >= kept.created_ms);
    assert_eq!(
        done[1].updated_ms, kept.updated_ms,
        "listing and lookup agree"
    );
    assert_eq!(q.attempts(&ids[2]).await.unwrap().len(), 1);
    assert_eq!(q.counts(Q).await.unwrap().done, 2);
    for id in &ids[..2] {
        assert!(
            q.job(id).await.unwrap().is_none(),
            "trimmed job {id} is gone"
        );
        let left: i64 = exists(format!("{ns}:q:{{{Q}}}:job:{id}:log"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(left, 0, "its attempt log went with it");
    }

    // by age: trimmed by the worker's upkeep while the queue is idle
    let mut cfg = config();
    cfg.done_retention = Duration::from_millis(300);
    let worker = start(&RedisBackend::new(q.clone(), cfg), "w", h());
    let id = q.push(Q, &"flaky", PushOptions::default()).await.unwrap();
    q.wait_idle(Q, Duration::from_secs(20))
        .await
        .unwrap()
        .expect("drained");
    assert_eq!(
        q.job(&id).await.unwrap().map(|j| j.state),
        Some(JobState::Done)
    );
    common::eventually(
        "done jobs past retention trimmed",
        Duration::from_secs(5),
        || async { q.counts(Q).await.unwrap().done == 0 },
    )
    .await;
    worker.stop().await;
    assert!(q.job(&id).await.unwrap().is_none());
    let left: i64 = exists(format!("{ns}:q:{{{Q}}}:job:{id}:log"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
