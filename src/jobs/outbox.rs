//! The outbox relay. A contact change and the sync it owes are written in
//! one MongoDB operation (the contact's `outbox`); the api then marks the
//! links and queues the jobs at once. Whatever fails in between — Redis down,
//! the api killed — the outbox stays, and this relay, running in every
//! worker process (one at a time, pool-wide), queues those jobs later. A
//! write the api accepted therefore always syncs.

use std::time::Duration;

use bson::DateTime;

use super::Enqueuer;
use crate::store::Store;

/// An outbox younger than this is left to the api that wrote it.
const MIN_AGE: Duration = Duration::from_secs(2);
/// Outboxes relayed per round.
const BATCH: i64 = 500;
/// Time between rounds.
const EVERY: Duration = Duration::from_secs(1);

/// Relays the outboxes written at least `min_age` ago; returns how many.
///
/// # Errors
/// When MongoDB or Redis fails; what was relayed stays relayed, the rest is
/// tried again next round.
pub async fn relay_once(
    store: &Store,
    enqueuer: &Enqueuer,
    min_age: Duration,
) -> anyhow::Result<usize> {
    let cutoff =
        DateTime::from_millis(DateTime::now().timestamp_millis() - min_age.as_millis() as i64);
    let owed = store.owed_outboxes(cutoff, BATCH).await?;
    if owed.is_empty() {
        return Ok(0);
    }
    let ids: Vec<_> = owed.iter().map(|c| c.id).collect();
    let links = store.links_of(&ids).await?;
    let mut done = Vec::with_capacity(owed.len());
    let mut owed_jobs = Vec::with_capacity(owed.len());
    // An update's outbox names every provider (the contact's customer is
    // only known once it is written); only its customer's connected ones
    // are pushed. Read once per customer per round.
    let mut connected = std::collections::HashMap::new();
    for contact in &owed {
        let Some(outbox) = &contact.outbox else {
            continue;
        };
        let customer = &contact.customer_id;
        if !connected.contains_key(customer) {
            let providers = store
                .customer(customer)
                .await?
                .map(|c| c.enabled())
                .unwrap_or_default();
            connected.insert(customer.clone(), providers);
        }
        let providers = &connected[customer];
        let jobs: Vec<_> = outbox
            .pairs()
            .into_iter()
            .filter(|(p, _)| providers.contains(p))
            .collect();
        // Links the api (or a later change) already marked for this version
        // are left as they are: marking a synced link pending again would
        // strand it.
        let unmarked: Vec<_> = jobs
            .iter()
            .filter(|(p, _)| {
                !links.iter().any(|l| {
                    l.contact_id == contact.id
                        && l.provider == *p
                        && l.pending_version >= contact.version
                })
            })
            .cloned()
            .collect();
        if !unmarked.is_empty() {
            store
                .mark_pending(contact.id, &contact.customer_id, &unmarked, contact.version)
                .await?;
        }
        owed_jobs.push((contact.id, &contact.customer_id, jobs, contact.version));
        done.push((contact.id, outbox.clone()));
    }
    // every contact's jobs in one round trip; cleared only once queued
    enqueuer.queue_jobs_of_many(&owed_jobs).await?;
    store.clear_outboxes(&done).await?;
    let relayed = done.len();
    if relayed > 0 {
        tracing::debug!(relayed, "outboxes relayed");
    }
    Ok(relayed)
}

/// Relays outboxes every second until `stop` resolves. One relay runs at a
/// time in the pool (a lease); errors are logged and the next round tries
/// again.
pub async fn run(store: Store, enqueuer: Enqueuer, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        let lease = match enqueuer
            .queue()
            .lease("outbox-relay", Duration::from_secs(10), Duration::ZERO)
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "outbox relay: Redis unavailable");
                continue;
            }
        };
        loop {
            match relay_once(&store, &enqueuer, MIN_AGE).await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "outbox relay round failed; trying again");
                    break;
                }
            }
        }
        if let Err(e) = lease.release().await {
            tracing::debug!(error = %e, "releasing the outbox relay lease failed");
        }
    }
}
