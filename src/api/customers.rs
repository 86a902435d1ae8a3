//! `/api/customers`: the app's customers and their CRM connections. Each
//! customer connects its own HubSpot portal or Pipedrive company through
//! Integration.app; its contacts sync only with the connections it has
//! enabled. Viewers read; operators create and change.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{Object, OpenApi};

use super::auth::{ApiAuth, ViewerAuth};
use super::errors::{
    ApiError, ApiResult, Created, NoContent, BAD_REQUEST, CONFLICT, NOT_FOUND, UNAVAILABLE,
};
use super::first_sync::FirstSyncView;
use super::text::Text;
use super::ApiState;
use crate::domain::{CustomerId, Provider};
use crate::store::{Connection, Customer};

/// A new customer.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCustomer {
    /// The id: the `id` claim of its Integration.app tokens (1-64 letters,
    /// digits or `-_.:@`).
    #[oai(validator(max_length = 64))]
    pub id: String,
    /// What operators call it.
    #[oai(validator(max_length = 200))]
    pub name: Text,
    /// Its CRM connections, by provider (`hubspot`, `pipedrive`).
    #[oai(default)]
    pub connections: BTreeMap<String, SetConnection>,
}

/// A connection as recorded or changed.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetConnection {
    /// The CRM account: HubSpot's `portalId`, Pipedrive's company id;
    /// webhooks are routed by it. `null` forgets it; absent keeps it.
    #[oai(validator(max_length = 64))]
    pub account_id: MaybeUndefined<String>,
    /// Whether contacts sync with it (default true).
    pub enabled: Option<bool>,
    /// Calls per second the account allows, shared by the worker pool
    /// (1-10000); `null` goes back to the provider's default; absent keeps
    /// it.
    #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
    pub rate_limit: MaybeUndefined<u32>,
}

/// One CRM connection of a customer.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct CustomerConnectionView {
    /// The CRM.
    pub provider: String,
    /// The CRM account (portal / company id), once recorded.
    pub account_id: Option<String>,
    /// Whether contacts sync with it.
    pub enabled: bool,
    /// Its own calls per second, when it overrides the provider's default.
    pub rate_limit: Option<u32>,
    /// When the connection was last changed.
    pub updated_at: DateTime<Utc>,
    /// When its last poll finished.
    pub last_poll_at: Option<DateTime<Utc>>,
    /// The customer's contacts waiting for a push to this CRM.
    pub links_pending: u64,
    /// The customer's contacts up to date in this CRM.
    pub links_synced: u64,
    /// The customer's contacts whose push failed for good.
    pub links_error: u64,
    /// When a sync with it last succeeded (either way).
    pub last_success_at: Option<DateTime<Utc>>,
    /// Syncs with it over the last hour.
    pub syncs_1h: u64,
    /// Share of those that failed, 0 to 1.
    pub error_rate_1h: f64,
    /// Calls per second it may make (its own `rateLimit`, else the
    /// provider's default).
    pub rate_limit_in_effect: u32,
    /// Calls granted over the last second.
    pub rate_limit_used: u64,
    /// Set when the customer has to reconnect it: Integration.app does not
    /// know the connection (or an action the app runs on it), or it is
    /// defunct. Its jobs wait, and it is tried again now and then.
    pub needs_reconnect: Option<NeedsReconnectView>,
    /// Its last first sync (`…/initial-sync`): where it stands, what it
    /// did, and the time left.
    pub first_sync: Option<super::first_sync::FirstSyncView>,
    /// At a glance: `disabled`; `needs_reconnect`; `failing` (half or more
    /// of the last hour's syncs failed); `degraded` (some failed, or
    /// contacts in error); else `ok`.
    pub health: ConnectionHealth,
}

/// Why, and since when, a connection needs reconnecting.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct NeedsReconnectView {
    /// When a call first found it unusable.
    pub since: DateTime<Utc>,
    /// What Integration.app said.
    pub error: String,
}

/// A connection's health at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum ConnectionHealth {
    /// Syncing without failures.
    Ok,
    /// Some syncs failed in the last hour, or some contacts are in error.
    Degraded,
    /// Half or more of the last hour's syncs failed.
    Failing,
    /// Switched off: its customer's contacts do not sync with it.
    Disabled,
    /// Integration.app cannot use it: the customer has to reconnect it.
    #[oai(rename = "needs_reconnect")]
    NeedsReconnect,
}

impl ConnectionHealth {
    fn of(conn: &Connection, h: &crate::store::SyncHealth, links_error: u64) -> Self {
        if !conn.enabled {
            Self::Disabled
        } else if conn.needs_reconnect.is_some() {
            Self::NeedsReconnect
        } else if h.recent_failed > 0 && h.recent_failed * 2 >= h.recent {
            Self::Failing
        } else if h.recent_failed > 0 || links_error > 0 {
            Self::Degraded
        } else {
            Self::Ok
        }
    }
}

/// A customer.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct CustomerView {
    /// The id.
    pub id: String,
    /// The name.
    pub name: String,
    /// Whether it is the default customer (data from before there were
    /// customers belongs to it).
    pub default: bool,
    /// Its connections.
    pub connections: Vec<CustomerConnectionView>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A customer api token, shown this once.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct MintedToken {
    /// The customer.
    pub customer_id: String,
    /// The bearer token: it reads and changes this customer's contacts
    /// (`/api/contacts`) and nothing else. Only its digest is stored.
    pub token: String,
}

fn parse_customer(id: &str) -> Result<CustomerId, ApiError> {
    CustomerId::parse(id).map_err(|m| ApiError::bad_request("invalid_customer", m))
}

fn parse_provider(p: &str) -> Result<Provider, ApiError> {
    p.parse::<Provider>().map_err(ApiError::not_found)
}

/// An account id: what the CRM shows, trimmed; never blank.
fn account(id: &str) -> Result<String, ApiError> {
    let id = id.trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ApiError::bad_request(
            "invalid_account",
            format!("accountId {id:?}: letters, digits and - only"),
        ));
    }
    Ok(id.to_owned())
}

/// What `set` makes of `current`.
fn apply(current: Option<&Connection>, set: &SetConnection) -> Result<Connection, ApiError> {
    let account_id = match &set.account_id {
        MaybeUndefined::Undefined => current.and_then(|c| c.account_id.clone()),
        MaybeUndefined::Null => None,
        MaybeUndefined::Value(v) => Some(account(v)?),
    };
    let rate_limit = match &set.rate_limit {
        MaybeUndefined::Undefined => current.and_then(|c| c.rate_limit),
        MaybeUndefined::Null => None,
        MaybeUndefined::Value(v) => Some(*v),
    };
    Ok(Connection {
        account_id,
        needs_reconnect: current.and_then(|c| c.needs_reconnect.clone()),
        enabled: set
            .enabled
            .unwrap_or_else(|| current.is_none_or(|c| c.enabled)),
        rate_limit,
        updated_at: bson::DateTime::now(),
    })
}

impl ApiState {
    async fn customer_view(&self, c: &Customer) -> Result<CustomerView, ApiError> {
        let counts = self
            .store
            .customer_link_counts(&c.id)
            .await
            .map_err(ApiError::unavailable)?;
        let count = |p: Provider, s: crate::domain::SyncStatus| {
            counts
                .iter()
                .filter(|(cp, cs, _)| *cp == p && *cs == s)
                .map(|(_, _, n)| n)
                .sum::<u64>()
        };
        let mut connections = Vec::with_capacity(c.connections.len());
        for p in Provider::ALL {
            let Some(conn) = c.connection(p) else {
                continue;
            };
            let cursor = self
                .store
                .cursor(&c.id, p)
                .await
                .map_err(ApiError::unavailable)?;
            let health = self
                .store
                .customer_sync_health(&c.id, p)
                .await
                .map_err(ApiError::unavailable)?;
            let rate_limit_used = self
                .enqueuer
                .queue()
                .rate_limit_use(
                    &format!("crm:{}:{p}", c.id),
                    std::time::Duration::from_millis(1100),
                )
                .await
                .map_err(ApiError::unavailable)?;
            let links_error = count(p, crate::domain::SyncStatus::Error);
            let in_effect = conn
                .rate_limit
                .unwrap_or_else(|| self.rate_limits.get(&p).copied().unwrap_or(0));
            connections.push(CustomerConnectionView {
                provider: p.to_string(),
                account_id: conn.account_id.clone(),
                enabled: conn.enabled,
                rate_limit: conn.rate_limit,
                updated_at: conn.updated_at.to_chrono(),
                last_poll_at: cursor.last_poll_at.map(|t| t.to_chrono()),
                first_sync: cursor
                    .first_sync
                    .as_ref()
                    .map(|f| FirstSyncView::new(f, p, in_effect)),
                links_pending: count(p, crate::domain::SyncStatus::Pending),
                links_synced: count(p, crate::domain::SyncStatus::Synced),
                links_error,
                last_success_at: health.last_success.map(|t| t.to_chrono()),
                syncs_1h: health.recent,
                error_rate_1h: if health.recent == 0 {
                    0.0
                } else {
                    health.recent_failed as f64 / health.recent as f64
                },
                rate_limit_in_effect: in_effect,
                rate_limit_used,
                needs_reconnect: conn.needs_reconnect.as_ref().map(|r| NeedsReconnectView {
                    since: r.since.to_chrono(),
                    error: r.error.clone(),
                }),
                health: ConnectionHealth::of(conn, &health, links_error),
            });
        }
        Ok(CustomerView {
            id: c.id.to_string(),
            name: c.name.clone(),
            default: c.id == CustomerId::default_customer(),
            connections,
            created_at: c.created_at.to_chrono(),
        })
    }
}

/// The customers endpoints.
pub struct CustomersApi;

#[OpenApi(prefix_path = "/customers", tag = "super::Tag::Customers")]
impl CustomersApi {
    /// Create a customer with its CRM connections; each enabled one
    /// starts its first sync (unless `FIRST_SYNC_ON_CONNECT` is off).
    #[oai(path = "/", method = "post")]
    async fn create(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ApiAuth,
        body: Json<CreateCustomer>,
    ) -> ApiResult<Created<CustomerView>, { BAD_REQUEST | NOT_FOUND | CONFLICT | UNAVAILABLE }>
    {
        let b = body.0;
        let id = parse_customer(&b.id)?;
        let name = b.name.0.trim().to_owned();
        if name.is_empty() {
            return Err(ApiError::bad_request("invalid_name", "name: must not be blank").into());
        }
        let mut customer = Customer::new(id, &name, &[]);
        for (p, set) in &b.connections {
            let provider = p.parse::<Provider>().map_err(|m| {
                ApiError::bad_request("invalid_provider", format!("connections: {m}"))
            })?;
            customer
                .connections
                .insert(provider.as_str().to_owned(), apply(None, set)?);
        }
        state
            .store
            .create_customer(&customer)
            .await
            .map_err(ApiError::from)?;
        state.customers.forget(&customer.id);
        let connected: Vec<Provider> = Provider::ALL
            .into_iter()
            .filter(|p| customer.connection(*p).is_some_and(|c| c.enabled))
            .collect();
        state.first_sync_on_connect(&customer.id, &connected).await;
        Ok(Created::Created(Json(
            state.customer_view(&customer).await?,
        )))
    }

    /// Customers, by id (at most `limit`, after the id `after`).
    #[oai(path = "/", method = "get")]
    async fn list(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
        /// Only customers whose id sorts after this one (the last of the
        /// previous page).
        #[oai(validator(max_length = 64))]
        after: Query<Option<String>>,
        /// Customers to return, 1 to 500.
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<Vec<CustomerView>>, { BAD_REQUEST | UNAVAILABLE }> {
        let after = after.0.as_deref().map(parse_customer).transpose()?;
        let page = state
            .store
            .customers(after.as_ref(), i64::from(limit.0.unwrap_or(100)))
            .await
            .map_err(ApiError::unavailable)?;
        let mut out = Vec::with_capacity(page.len());
        for c in &page {
            out.push(state.customer_view(c).await?);
        }
        Ok(Json(out))
    }

    /// One customer with its connections.
    #[oai(path = "/:id", method = "get")]
    async fn get(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
        id: Path<String>,
    ) -> ApiResult<Json<CustomerView>, { BAD_REQUEST | NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        let id = parse_customer(&id.0)?;
        let c = state
            .store
            .customer(&id)
            .await
            .map_err(ApiError::unavailable)?
            .ok_or_else(|| ApiError::not_found(format!("no customer {id}")))?;
        Ok(Json(state.customer_view(&c).await?))
    }

    /// Record, enable or disable a customer's connection with a CRM. A
    /// disabled connection gets no new jobs and is not polled. A new
    /// connection starts its first sync (unless `FIRST_SYNC_ON_CONNECT`
    /// is off).
    #[oai(path = "/:id/connections/:provider", method = "put")]
    async fn set_connection(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ApiAuth,
        id: Path<String>,
        provider: Path<String>,
        body: Json<SetConnection>,
    ) -> ApiResult<Json<CustomerView>, { BAD_REQUEST | NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        let id = parse_customer(&id.0)?;
        let provider = parse_provider(&provider.0)?;
        let current = state
            .store
            .customer(&id)
            .await
            .map_err(ApiError::unavailable)?
            .ok_or_else(|| ApiError::not_found(format!("no customer {id}")))?;
        let conn = apply(current.connection(provider), &body.0)?;
        let new = current.connection(provider).is_none() && conn.enabled;
        let updated = state
            .store
            .set_connection(&id, provider, &conn)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found(format!("no customer {id}")))?;
        state.customers.forget(&id);
        if new {
            state.first_sync_on_connect(&id, &[provider]).await;
        }
        Ok(Json(state.customer_view(&updated).await?))
    }

    /// Mint an api token for the customer's own backend: it reads and
    /// changes this customer's contacts only. Shown once.
    #[oai(path = "/:id/tokens", method = "post")]
    async fn mint_token(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ApiAuth,
        id: Path<String>,
    ) -> ApiResult<Created<MintedToken>, { BAD_REQUEST | NOT_FOUND | UNAVAILABLE }> {
        let id = parse_customer(&id.0)?;
        let (token, digest) = super::auth::mint_customer_token();
        if !state
            .store
            .add_customer_token(&id, &digest)
            .await
            .map_err(ApiError::unavailable)?
        {
            return Err(ApiError::not_found(format!("no customer {id}")).into());
        }
        Ok(Created::Created(Json(MintedToken {
            customer_id: id.to_string(),
            token,
        })))
    }

    /// Revoke every api token of the customer (within 2 s on every api
    /// process).
    #[oai(path = "/:id/tokens", method = "delete")]
    async fn revoke_tokens(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ApiAuth,
        id: Path<String>,
    ) -> ApiResult<NoContent, { BAD_REQUEST | NOT_FOUND | UNAVAILABLE }> {
        let id = parse_customer(&id.0)?;
        if !state
            .store
            .revoke_customer_tokens(&id)
            .await
            .map_err(ApiError::unavailable)?
        {
            return Err(ApiError::not_found(format!("no customer {id}")).into());
        }
        Ok(NoContent::NoContent)
    }
}
