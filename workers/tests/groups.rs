//! Fair groups: jobs of different groups are claimed in turns, so one
//! group's backlog never holds back another group's job; they are counted,
//! listed and discarded like any pending job.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config, handler, queue, start, Q};
use workers::{JobState, PushOptions, RedisBackend};

fn in_group(group: &str) -> PushOptions {
    PushOptions {
        group: Some(group.to_owned()),
        ..PushOptions::default()
    }
}

#[tokio::test]
async fn a_groups_backlog_does_not_hold_back_another_groups_job() {
    let q = queue().await;
    // 2,000 jobs of group "a" queued first, then one of "b" and one ungrouped
    let backlog: Vec<String> = (0..2000)
        .map(|i| format!("{{\"g\":\"a\",\"i\":{i}}}"))
        .collect();
    q.push_many_raw(Q, &backlog, in_group("a")).await.unwrap();
    q.push(Q, &serde_json::json!({ "g": "b" }), in_group("b"))
        .await
        .unwrap();
    q.push(Q, &serde_json::json!({ "g": "-" }), PushOptions::default())
        .await
        .unwrap();
    let counts = q.counts(Q).await.unwrap();
    assert_eq!(
        counts.pending, 2002,
        "grouped jobs count as pending: {counts:?}"
    );
    let listed = q.list(Q, JobState::Pending, 0, 3).await.unwrap();
    assert_eq!(listed.len(), 3, "grouped jobs are listed too");
    let page = q.list(Q, JobState::Pending, 1990, 100).await.unwrap();
    assert_eq!(page.len(), 12, "the last page of all 2,002");

    // one job at a time, slowly: the order of the turns shows
    let order = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = order.clone();
    let mut cfg = config();
    cfg.concurrency = 4;
    let backend = RedisBackend::<serde_json::Value>::new(q.clone(), cfg);
    let worker = start(
        &backend,
        "w1",
        handler(move |v: serde_json::Value, _| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(v["g"].as_str().unwrap_or("?").to_owned());
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok(())
            }
        }),
    );
    common::eventually(
        "b's and the ungrouped job ran",
        Duration::from_secs(20),
        || {
            let order = order.clone();
            async move {
                let o = order.lock().unwrap();
                o.iter().any(|g| g == "b") && o.iter().any(|g| g == "-")
            }
        },
    )
    .await;
    let at = |g: &str| order.lock().unwrap().iter().position(|x| x == g).unwrap();
    assert!(
        at("b") < 10,
        "b's job ran among the first ten, at {}",
        at("b")
    );
    assert!(at("-") < 10, "the ungrouped job too, at {}", at("-"));
    let counts = q
        .wait_idle(Q, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("drained");
    worker.stop().await;
    assert_eq!(counts.completed_total, 2002, "{counts:?}");
    assert_eq!(q.counts(Q).await.unwrap().pending, 0);
}

#[tokio::test]
async fn a_grouped_job_is_discarded_scheduled_and_given_back_in_its_group() {
    let q = queue().await;
    let a = q
        .push(Q, &serde_json::json!({ "n": 1 }), in_group("a"))
        .await
        .unwrap();
    q.push(Q, &serde_json::json!({ "n": 2 }), in_group("a"))
        .await
        .unwrap();
    let later = PushOptions {
        delay: Duration::from_millis(50),
        ..in_group("b")
    };
    q.push(Q, &serde_json::json!({ "n": 3 }), later)
        .await
        .unwrap();
    assert!(q.discard(&a).await.unwrap());
    let counts = q.counts(Q).await.unwrap();
    assert_eq!((counts.pending, counts.scheduled), (1, 1), "{counts:?}");
    let ran = Arc::new(Mutex::new(Vec::<i64>::new()));
    let seen = ran.clone();
    let backend = RedisBackend::<serde_json::Value>::new(q.clone(), config());
    let worker = start(
        &backend,
        "w1",
        handler(move |v: serde_json::Value, _| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(v["n"].as_i64().unwrap());
                Ok(())
            }
        }),
    );
    let counts = q
        .wait_idle(Q, Duration::from_secs(20))
        .await
        .unwrap()
        .expect("drained");
    worker.stop().await;
    let mut ran = ran.lock().unwrap().clone();
    ran.sort_unstable();
    assert_eq!(
        ran,
        [2, 3],
        "the discarded job never ran; the scheduled one did"
    );
    assert_eq!(counts.pending, 0, "{counts:?}");
}
