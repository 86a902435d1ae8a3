//! Who a store's records belong to: a customer's CRM account on one
//! connection. The store hands it to the change listeners, so that a
//! webhook names its portal and a flow event its customer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::connection::Connection;

/// The identity of one account. Its id and its connected flag can change
/// (`PUT /_sim/accounts/…`) while requests use it, hence the atomics.
#[derive(Debug)]
pub(crate) struct Owner {
    customer: String,
    connection: Connection,
    /// HubSpot `portalId` or Pipedrive `companyId`; unique per connection
    /// among the accounts (the registry makes sure of it).
    account_id: AtomicU64,
    /// Whether the customer's Integration.app connection exists: a
    /// disconnected account refuses action runs and runs no flows, but
    /// keeps its records.
    connected: AtomicBool,
    /// Whether the connection is defunct (its credentials no longer work
    /// and cannot be refreshed): it exists, but every run fails until the
    /// customer connects again.
    defunct: AtomicBool,
}

impl Owner {
    pub(crate) fn new(customer: String, connection: Connection, account_id: u64) -> Self {
        Self {
            customer,
            connection,
            account_id: AtomicU64::new(account_id),
            connected: AtomicBool::new(true),
            defunct: AtomicBool::new(false),
        }
    }

    pub(crate) fn customer(&self) -> &str {
        &self.customer
    }

    pub(crate) fn connection(&self) -> Connection {
        self.connection
    }

    pub(crate) fn account_id(&self) -> u64 {
        self.account_id.load(Ordering::SeqCst)
    }

    pub(crate) fn set_account_id(&self, id: u64) {
        self.account_id.store(id, Ordering::SeqCst);
    }

    pub(crate) fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::SeqCst);
    }

    pub(crate) fn defunct(&self) -> bool {
        self.defunct.load(Ordering::SeqCst)
    }

    pub(crate) fn set_defunct(&self, defunct: bool) {
        self.defunct.store(defunct, Ordering::SeqCst);
    }
}
