//! The CRM accounts: one per (customer, connection), each with its own
//! records, ids, throttle counts and rate-limit window, made on first use.
//!
//! An account has an id — HubSpot's `portalId`, Pipedrive's `companyId` —
//! unique per connection. The default customer's accounts take the home
//! ids (the configured portal id, `HOME_COMPANY_ID`) unless another account
//! holds them; every other account gets the next id above the home one
//! that is free.
//!
//! A call looks its account up under a read lock and clones an `Arc`; the
//! write lock is only taken to make or change an account.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::Serialize;

use crate::changes::ChangeListener;
use crate::clock::Clock;
use crate::config::Config;
use crate::connection::Connection;
use crate::faults::Counters;
use crate::owner::Owner;
use crate::store::{Sequence, Store};

/// The `companyId` of the default customer's Pipedrive account.
pub(crate) const HOME_COMPANY_ID: u64 = 7_001;

/// One customer's account on one connection.
pub(crate) struct Account {
    owner: Arc<Owner>,
    pub(crate) store: Store,
    pub(crate) counters: Counters,
}

impl Account {
    pub(crate) fn owner(&self) -> &Owner {
        &self.owner
    }

    /// The account as `/_sim/accounts` shows it.
    pub(crate) fn view(&self) -> AccountView {
        AccountView {
            customer: self.owner.customer().to_owned(),
            connection: self.owner.connection().key(),
            account_id: self.owner.account_id(),
            connected: self.owner.connected(),
            defunct: self.owner.defunct(),
            records: self.store.live_count(),
        }
    }
}

/// `{customer, connection, accountId, connected, defunct, records}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccountView {
    customer: String,
    connection: &'static str,
    account_id: u64,
    connected: bool,
    defunct: bool,
    /// Live (not deleted) records.
    records: usize,
}

/// What an admin PUT may change; absent fields are kept (or, for a new
/// account, chosen as on first use).
#[derive(Debug, Default)]
pub(crate) struct AccountChange {
    pub(crate) account_id: Option<u64>,
    pub(crate) connected: Option<bool>,
    pub(crate) defunct: Option<bool>,
}

/// Why an account cannot be changed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AccountError {
    #[error("{connection} account id {id} is already used by customer {holder:?}")]
    IdTaken {
        connection: &'static str,
        id: u64,
        holder: String,
    },
}

/// What a new store needs.
struct Factory {
    config: Arc<Config>,
    clock: Clock,
    listeners: Vec<Arc<dyn ChangeListener>>,
    default_customer: String,
    home_portal_id: u64,
}

impl Factory {
    fn home_id(&self, conn: Connection) -> u64 {
        match conn {
            Connection::HubSpot => self.home_portal_id,
            Connection::Pipedrive => HOME_COMPANY_ID,
        }
    }
}

/// Everything behind the lock.
#[derive(Default)]
struct Registry {
    /// By customer, then connection: looked up by `&str` without
    /// allocating.
    accounts: HashMap<String, HashMap<Connection, Arc<Account>>>,
    /// (connection, account id) of every account, for uniqueness.
    taken: HashSet<(Connection, u64)>,
    /// Where the search for a fresh id resumes, per connection.
    next_fresh: HashMap<Connection, u64>,
    /// Where the stores of forgotten accounts left off, so that the
    /// account's next store does not reuse their ids.
    sequences: HashMap<(String, Connection), Sequence>,
}

impl Registry {
    fn get(&self, customer: &str, conn: Connection) -> Option<Arc<Account>> {
        self.accounts.get(customer)?.get(&conn).cloned()
    }

    fn holder(&self, conn: Connection, id: u64) -> Option<&str> {
        self.accounts
            .values()
            .filter_map(|by_conn| by_conn.get(&conn))
            .find(|a| a.owner.account_id() == id)
            .map(|a| a.owner.customer())
    }

    /// The home id for the default customer when free, else the next free
    /// id above it.
    fn pick_id(&mut self, factory: &Factory, customer: &str, conn: Connection) -> u64 {
        let home = factory.home_id(conn);
        if customer == factory.default_customer && !self.taken.contains(&(conn, home)) {
            return home;
        }
        let next = self.next_fresh.entry(conn).or_insert(home + 1);
        while *next == home || self.taken.contains(&(conn, *next)) {
            *next += 1;
        }
        let id = *next;
        *next += 1;
        id
    }

    fn create(
        &mut self,
        factory: &Factory,
        customer: &str,
        conn: Connection,
        account_id: Option<u64>,
    ) -> Arc<Account> {
        let id = account_id.unwrap_or_else(|| self.pick_id(factory, customer, conn));
        let owner = Arc::new(Owner::new(customer.to_owned(), conn, id));
        let sequence = self.sequences.get(&(customer.to_owned(), conn)).copied();
        let store = Store::new(
            owner.clone(),
            factory.config.mapping(conn),
            factory.clock,
            factory.listeners.clone(),
            sequence,
        );
        let account = Arc::new(Account {
            owner,
            store,
            counters: Counters::default(),
        });
        self.taken.insert((conn, id));
        self.accounts
            .entry(customer.to_owned())
            .or_default()
            .insert(conn, account.clone());
        tracing::debug!(
            customer,
            connection = conn.key(),
            account_id = id,
            "account created"
        );
        account
    }
}

/// Every account.
pub(crate) struct Accounts {
    factory: Factory,
    registry: RwLock<Registry>,
}

impl Accounts {
    /// No accounts yet. `home_portal_id` is the default customer's HubSpot
    /// `portalId`.
    pub(crate) fn new(
        config: Arc<Config>,
        clock: Clock,
        listeners: Vec<Arc<dyn ChangeListener>>,
        default_customer: String,
        home_portal_id: u64,
    ) -> Self {
        Self {
            factory: Factory {
                config,
                clock,
                listeners,
                default_customer,
                home_portal_id,
            },
            registry: RwLock::default(),
        }
    }

    /// The customer of admin calls and tokens that name none.
    pub(crate) fn default_customer(&self) -> &str {
        &self.factory.default_customer
    }

    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The account, if it has been made.
    pub(crate) fn get(&self, customer: &str, conn: Connection) -> Option<Arc<Account>> {
        self.read().get(customer, conn)
    }

    /// The account, made (connected, with a chosen id) if it is new.
    pub(crate) fn get_or_create(&self, customer: &str, conn: Connection) -> Arc<Account> {
        if let Some(account) = self.get(customer, conn) {
            return account;
        }
        let mut registry = self.write();
        match registry.get(customer, conn) {
            Some(account) => account,
            None => registry.create(&self.factory, customer, conn, None),
        }
    }

    /// Makes or changes an account.
    ///
    /// # Errors
    /// `IdTaken` when another account of the connection has that id.
    pub(crate) fn put(
        &self,
        customer: &str,
        conn: Connection,
        change: AccountChange,
    ) -> Result<Arc<Account>, AccountError> {
        let mut registry = self.write();
        let existing = registry.get(customer, conn);
        if let Some(id) = change.account_id {
            let mine = existing.as_ref().map(|a| a.owner.account_id());
            if mine != Some(id) && registry.taken.contains(&(conn, id)) {
                let holder = registry.holder(conn, id).unwrap_or_default().to_owned();
                return Err(AccountError::IdTaken {
                    connection: conn.key(),
                    id,
                    holder,
                });
            }
        }
        let account = match existing {
            Some(account) => {
                if let Some(id) = change.account_id {
                    let old = account.owner.account_id();
                    registry.taken.remove(&(conn, old));
                    registry.taken.insert((conn, id));
                    account.owner.set_account_id(id);
                }
                account
            }
            None => registry.create(&self.factory, customer, conn, change.account_id),
        };
        if let Some(connected) = change.connected {
            account.owner.set_connected(connected);
        }
        if let Some(defunct) = change.defunct {
            account.owner.set_defunct(defunct);
        }
        Ok(account)
    }

    /// Every account, by customer then connection.
    pub(crate) fn list(&self) -> Vec<Arc<Account>> {
        let mut all: Vec<Arc<Account>> = self
            .read()
            .accounts
            .values()
            .flat_map(|by_conn| by_conn.values().cloned())
            .collect();
        all.sort_by(|a, b| {
            (a.owner.customer(), a.owner.connection().key())
                .cmp(&(b.owner.customer(), b.owner.connection().key()))
        });
        all
    }

    /// Forgets every account; their ids become free again (the default
    /// customer gets the home ids back), while record ids keep increasing.
    pub(crate) fn reset(&self) {
        let mut registry = self.write();
        let forgotten: Vec<Arc<Account>> = registry
            .accounts
            .drain()
            .flat_map(|(_, by_conn)| by_conn.into_values())
            .collect();
        for account in forgotten {
            let key = (
                account.owner.customer().to_owned(),
                account.owner.connection(),
            );
            registry.sequences.insert(key, account.store.sequence());
        }
        registry.taken.clear();
        registry.next_fresh.clear();
    }
}
