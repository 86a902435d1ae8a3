//! De-duplicated pushes (webhook deliveries).

mod common;

use std::time::Duration;

use common::{namespace, raw, redis_url, Q};
use workers::{PushOptions, Queue};

#[tokio::test]
async fn push_unique_creates_one_job_per_key_in_one_call() {
    let ns = namespace();
    let q = Queue::connect(&redis_url(), &ns).await.unwrap();
    let item = |k: &str, p: &str| (vec![k.to_owned()], format!("\"{p}\""));
    let ttl = Duration::from_secs(60);
    let first = q
        .push_unique(
            Q,
            &[item("a", "a1"), item("b", "b1"), item("a", "a2")],
            PushOptions::default(),
            ttl,
        )
        .await
        .unwrap();
    assert!(first[0].is_some() && first[1].is_some(), "{first:?}");
    assert_eq!(first[2], None, "a repeat within the call");
    let second = q
        .push_unique(
            Q,
            &[item("a", "a3"), item("c", "c1")],
            PushOptions::default(),
            ttl,
        )
        .await
        .unwrap();
    assert_eq!(second[0], None, "a repeat of an earlier call");
    assert!(second[1].is_some());
    assert_eq!(q.counts(Q).await.unwrap().pending, 3);
    let a = q.job(first[0].as_deref().unwrap()).await.unwrap().unwrap();
    assert_eq!(
        a.payload,
        serde_json::json!("a1"),
        "the first delivery wins"
    );

    let mut conn = raw(&redis_url()).await;
    let (holder, pttl): (String, i64) = redis::pipe()
        .get(format!("{ns}:q:{{{Q}}}:seen:a"))
        .pttl(format!("{ns}:q:{{{Q}}}:seen:a"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(Some(holder), first[0], "the key names its job");
    assert!(pttl > 55_000 && pttl <= 60_000, "{pttl}");
}

#[tokio::test]
async fn an_item_with_several_keys_is_new_while_any_key_is() {
    let q = Queue::connect(&redis_url(), &namespace()).await.unwrap();
    let ttl = Duration::from_secs(60);
    let keys = |ks: &[&str]| ks.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
    let first = q
        .push_unique(
            Q,
            &[(keys(&["e1", "e2"]), "1".into())],
            PushOptions::default(),
            ttl,
        )
        .await
        .unwrap();
    assert!(first[0].is_some());
    let again = q
        .push_unique(
            Q,
            &[
                (keys(&["e2", "e1"]), "2".into()),
                (keys(&["e2", "e3"]), "3".into()),
            ],
            PushOptions::default(),
            ttl,
        )
        .await
        .unwrap();
    assert_eq!(again[0], None, "every key seen");
    assert!(again[1].is_some(), "e3 is new");
    assert!(q
        .push_unique(
            Q,
            &[(keys(&["a\u{1f}b"]), "4".into())],
            PushOptions::default(),
            ttl
        )
        .await
        .is_err());
    assert_eq!(q.counts(Q).await.unwrap().pending, 2);
}

#[tokio::test]
async fn a_gathering_queues_its_new_items_as_one_job() {
    let ns = namespace();
    let q = Queue::connect(&redis_url(), &ns).await.unwrap();
    let ttl = Duration::from_secs(60);
    let gathering = |items: &[(&str, &str)], group: Option<&str>| workers::Gathering {
        items: items
            .iter()
            .map(|(k, p)| (vec![(*k).to_owned()], (*p).to_owned()))
            .collect(),
        head: r#"{"batch":["#.into(),
        tail: "]}".into(),
        group: group.map(str::to_owned),
    };
    let opts = PushOptions::default();
    let first = q
        .push_gathered(
            Q,
            &[
                gathering(&[("a", "1"), ("b", "2"), ("a", "3")], Some("g1")),
                gathering(&[("c", "4")], None),
                gathering(&[], None),
            ],
            &opts,
            ttl,
        )
        .await
        .unwrap();
    assert_eq!(first[0].new, 2, "a repeat within the call: {first:?}");
    assert_eq!(first[1].new, 1);
    assert_eq!(first[2], workers::Gathered { job: None, new: 0 });
    let job = |id: &Option<String>| {
        let q = q.clone();
        let id = id.clone().unwrap();
        async move { q.job(&id).await.unwrap().unwrap() }
    };
    let many = job(&first[0].job).await;
    assert_eq!(many.payload, serde_json::json!({ "batch": [1, 2] }));
    let mut conn = raw(&redis_url()).await;
    let in_group: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{ns}:q:{{{Q}}}:g:g1"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(in_group, vec![many.id.clone()], "waits in its group");
    let one = job(&first[1].job).await;
    assert_eq!(one.payload, serde_json::json!(4), "one new item is itself");
    assert_eq!(q.counts(Q).await.unwrap().pending, 2);

    // a redelivery: only what is new is queued; nothing new, no job
    let again = q
        .push_gathered(
            Q,
            &[
                gathering(&[("b", "5"), ("d", "6")], Some("g1")),
                gathering(&[("c", "7")], None),
            ],
            &opts,
            ttl,
        )
        .await
        .unwrap();
    assert_eq!(job(&again[0].job).await.payload, serde_json::json!(6));
    assert_eq!(again[1], workers::Gathered { job: None, new: 0 });
    assert_eq!(q.counts(Q).await.unwrap().pending, 3);

    let sets: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{ns}:q:{{{Q}}}:seen-in:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(sets.len(), 1, "one set for this window: {sets:?}");
    let mut seen: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&sets[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    seen.sort();
    assert_eq!(seen, ["a", "b", "c", "d"]);
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&sets[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        pttl > 120_000 && pttl <= 180_000,
        "expires as a backstop: {pttl}"
    );
    let refused = q
        .push_gathered(Q, &[gathering(&[("", "8")], None)], &opts, ttl)
        .await;
    assert!(refused.is_err(), "an empty key is refused");
}

#[tokio::test]
async fn a_gathered_key_is_forgotten_two_windows_on() {
    let ns = namespace();
    let q = Queue::connect(&redis_url(), &ns).await.unwrap();
    let window = Duration::from_millis(300);
    let push = || {
        let q = q.clone();
        async move {
            let g = workers::Gathering {
                items: vec![(vec!["k".to_owned()], "1".to_owned())],
                ..workers::Gathering::default()
            };
            q.push_gathered(Q, &[g], &PushOptions::default(), window)
                .await
                .unwrap()[0]
                .new
        }
    };
    assert_eq!(push().await, 1);
    assert_eq!(push().await, 0, "seen within the window");
    let start = std::time::Instant::now();
    loop {
        // a repeat writes nothing, so asking again until it is new is safe
        if push().await == 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never forgotten");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = start.elapsed();
    assert!(
        after >= Duration::from_millis(250),
        "remembered a window at least: {after:?}"
    );
    let mut conn = raw(&redis_url()).await;
    let sets: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{ns}:q:{{{Q}}}:seen-in:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(sets.len() <= 2, "older sets are unlinked: {sets:?}");
}
