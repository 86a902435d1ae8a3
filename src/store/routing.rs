//! The customers a process works for, read through a short-lived cache
//! ([`Customers`]): which CRMs a customer syncs with, which customer a
//! token or a CRM account's webhook belongs to, which connections a first
//! sync holds.

use super::{Customer, Store};
use crate::domain::{CustomerId, Provider};

/// How long a customer read from the database is used before it is read
/// again: a connection enabled or disabled takes effect within this long.
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// Entries a cache keeps before it drops the expired ones.
const CACHE_SWEEP_AT: usize = 100_000;

/// What was read, and when, by key; shared by clones. (A map under a lock
/// is all this needs: a few reads per key per [`CACHE_TTL`].)
struct TtlCache<K, V>(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<K, (std::time::Instant, V)>>>,
);

impl<K, V> Clone for TtlCache<K, V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> TtlCache<K, V> {
    fn new() -> Self {
        Self(Default::default())
    }

    /// `Ok(value)` while fresh, `Err(Some(value))` once expired, `Err(None)`
    /// when never read.
    fn get(&self, key: &K) -> Result<V, Option<V>> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            Some((at, v)) if at.elapsed() < CACHE_TTL => Ok(v.clone()),
            Some((_, v)) => Err(Some(v.clone())),
            None => Err(None),
        }
    }

    fn put(&self, key: K, value: V) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > CACHE_SWEEP_AT {
            map.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        }
        map.insert(key, (std::time::Instant::now(), value));
    }

    fn forget(&self, key: &K) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// The customers a process works for, read through a short-lived cache:
/// every contact write and every job asks which CRMs its customer syncs
/// with, and a database read each time would double the trips.
#[derive(Clone)]
pub struct Customers {
    store: Store,
    /// The providers this deployment syncs with at all.
    providers: Vec<Provider>,
    /// Customer id → the customer, if there is one.
    by_id: TtlCache<CustomerId, Option<Customer>>,
    /// Token digest → the customer it belongs to, if any.
    tokens: TtlCache<String, Option<CustomerId>>,
    /// (provider, CRM account) → the customer it belongs to, if any.
    accounts: TtlCache<(Provider, String), Option<CustomerId>>,
    /// Customer id → its connections whose pushes a first sync holds.
    held: TtlCache<CustomerId, Vec<Provider>>,
    /// Customer id → its connections whose backlog a live gather writes.
    gathering: TtlCache<CustomerId, Vec<Provider>>,
    /// (customer, provider) → whether pushes enough to gather wait.
    backlog: TtlCache<(CustomerId, Provider), bool>,
}

impl Customers {
    /// Customers of `store`, synced with at most `providers`.
    pub fn new(store: Store, providers: Vec<Provider>) -> Self {
        Self {
            store,
            providers,
            by_id: TtlCache::new(),
            tokens: TtlCache::new(),
            accounts: TtlCache::new(),
            held: TtlCache::new(),
            gathering: TtlCache::new(),
            backlog: TtlCache::new(),
        }
    }

    /// The customer's connections whose pushes a first sync holds (see
    /// `Store::held_providers`), read at most every 2 s: a first sync's
    /// write step waits longer than that before its last pass, which
    /// takes what a stale read held.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn held_providers(&self, customer: &CustomerId) -> anyhow::Result<Vec<Provider>> {
        if let Ok(held) = self.held.get(customer) {
            return Ok(held);
        }
        let held = self.store.held_providers(customer).await?;
        self.held.put(customer.clone(), held.clone());
        Ok(held)
    }

    /// The customer's connections whose backlog of pushes a gather
    /// underway writes (see `Store::gathering`), read at most every 2 s.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn gathering(&self, customer: &CustomerId) -> anyhow::Result<Vec<Provider>> {
        if let Ok(found) = self.gathering.get(customer) {
            return Ok(found);
        }
        let found = self.store.gathering(customer).await?;
        self.gathering.put(customer.clone(), found.clone());
        Ok(found)
    }

    /// Whether at least `n` pushes wait on the customer's connection with
    /// `provider` (see `Store::pending_at_least`), read at most every
    /// 2 s: a push asks on its way to the CRM, and a gather starting 2 s
    /// late loses nothing.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn backlog_at_least(
        &self,
        customer: &CustomerId,
        provider: Provider,
        n: u64,
    ) -> anyhow::Result<bool> {
        let key = (customer.clone(), provider);
        if let Ok(found) = self.backlog.get(&key) {
            return Ok(found);
        }
        let found = self.store.pending_at_least(customer, provider, n).await?;
        self.backlog.put(key, found);
        Ok(found)
    }

    /// The customer whose api token has this digest (revocations take
    /// effect within the cache's lifetime, 2 s).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn by_token(&self, hash: &str) -> anyhow::Result<Option<CustomerId>> {
        let key = hash.to_owned();
        if let Ok(c) = self.tokens.get(&key) {
            return Ok(c);
        }
        let found = self.store.customer_by_token(hash).await?;
        self.tokens.put(key, found.clone());
        Ok(found)
    }

    /// The customer a CRM account's webhooks are for: the one whose
    /// connection records that account; else, while the default
    /// customer's connection with the provider has no account recorded
    /// (a deployment from before there were customers), the default
    /// customer; else none (the caller ignores the event). Once a customer
    /// is known, an expired answer is still given at once while one request
    /// reads it afresh in the background, so a webhook never waits on
    /// MongoDB for an account it has routed before (and a slow MongoDB does
    /// not hold every delivery in flight at each expiry). When MongoDB
    /// fails, a customer known before is used.
    ///
    /// # Errors
    /// When the database fails and no customer was known.
    pub async fn route(
        &self,
        provider: Provider,
        account_id: &str,
    ) -> anyhow::Result<Option<CustomerId>> {
        let key = (provider, account_id.to_owned());
        match self.accounts.get(&key) {
            Ok(c) => Ok(c),
            // an account no customer had is read again before answering:
            // its events would be dropped, and it may just have been
            // connected (so when MongoDB fails now, that is the answer: the
            // caller must not drop the events on a guess)
            Err(Some(None)) => self.route_afresh(provider, account_id).await,
            Err(Some(Some(stale))) => {
                // fresh again for the others while this one reads
                self.accounts.put(key, Some(stale.clone()));
                let this = self.clone();
                let account = account_id.to_owned();
                tokio::spawn(async move {
                    if let Err(e) = this.route_afresh(provider, &account).await {
                        tracing::debug!(error = %format!("{e:#}"), "re-reading the customer of an account failed; the known one stays");
                    }
                });
                Ok(Some(stale))
            }
            Err(None) => self.route_afresh(provider, account_id).await,
        }
    }

    /// [`Self::route`] read from the database, and cached.
    async fn route_afresh(
        &self,
        provider: Provider,
        account_id: &str,
    ) -> anyhow::Result<Option<CustomerId>> {
        let found = match self.store.customer_by_account(provider, account_id).await? {
            // a disabled connection's events are not its customer's to apply
            Some(c) => c
                .connection(provider)
                .is_some_and(|conn| conn.enabled)
                .then_some(c.id),
            None => {
                let default = CustomerId::default_customer();
                self.get(&default)
                    .await?
                    .filter(|c| {
                        c.connection(provider)
                            .is_some_and(|conn| conn.enabled && conn.account_id.is_none())
                    })
                    .map(|c| c.id)
            }
        };
        self.accounts
            .put((provider, account_id.to_owned()), found.clone());
        Ok(found)
    }

    /// The customer (`None`: there is no such customer).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn get(&self, id: &CustomerId) -> anyhow::Result<Option<Customer>> {
        if let Ok(c) = self.by_id.get(id) {
            return Ok(c);
        }
        let found = self.store.customer(id).await?;
        self.by_id.put(id.clone(), found.clone());
        Ok(found)
    }

    /// Records whether the customer's connection with `provider` needs
    /// reconnecting (see [`Store::mark_reconnect`]), and forgets the
    /// cached customer so this process sees it at once. Whether this
    /// changed it.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn mark_reconnect(
        &self,
        id: &CustomerId,
        provider: Provider,
        error: Option<&str>,
    ) -> anyhow::Result<bool> {
        let changed = self.store.mark_reconnect(id, provider, error).await?;
        self.forget(id);
        Ok(changed)
    }

    /// Forgets what is cached of `id` (after this process changed it).
    pub fn forget(&self, id: &CustomerId) {
        self.by_id.forget(id);
    }

    /// The CRMs the customer's contacts sync with: its enabled connections
    /// among the deployment's providers (none for an unknown customer).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn providers(&self, id: &CustomerId) -> anyhow::Result<Vec<Provider>> {
        Ok(self
            .get(id)
            .await?
            .map(|c| {
                c.enabled()
                    .into_iter()
                    .filter(|p| self.providers.contains(p))
                    .collect()
            })
            .unwrap_or_default())
    }
}
