//! Operator endpoints on links and sync logs: links by state, a contact
//! or every link in `error` pushed again, the sync log.

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::{LinkStatusParam, ProviderParam};
use crate::api::auth::{ApiAuth, ViewerAuth};
use crate::api::errors::{ApiError, ApiResult, BAD_REQUEST, CONFLICT, NOT_FOUND, UNAVAILABLE};
use crate::api::views::{Count, LinkView, SyncLogView};
use crate::api::ApiState;
use crate::domain::{ContactId, Provider, SyncStatus};
use crate::store::LogFilter;

/// A link with its contact.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct LinkRow {
    /// The contact.
    pub contact_id: String,
    /// The link.
    #[oai(flatten)]
    #[serde(flatten)]
    pub link: LinkView,
}

/// A page of links.
#[derive(Debug, Object, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkPage {
    /// Links, `error` first.
    pub items: Vec<LinkRow>,
    /// Links matching the filter.
    pub total: u64,
}

/// The operator endpoints on links and sync logs.
pub struct LinkOpsApi;

#[OpenApi(tag = "crate::api::Tag::Operators")]
impl LinkOpsApi {
    /// Links, `error` first.
    #[oai(path = "/links", method = "get")]
    #[allow(clippy::too_many_arguments)] // one per query parameter
    async fn links(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
        /// Only this status.
        status: Query<Option<LinkStatusParam>>,
        /// Only this CRM.
        provider: Query<Option<ProviderParam>>,
        /// Links to skip.
        #[oai(validator(maximum(value = "1000000")))]
        offset: Query<Option<u64>>,
        /// Links to return, 1 to 500.
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u64>>,
    ) -> ApiResult<Json<LinkPage>, { BAD_REQUEST | UNAVAILABLE }> {
        let (links, total) = state
            .store
            .list_links(
                status.0.map(Into::into),
                provider.0.map(Into::into),
                offset.0.unwrap_or(0),
                limit.0.unwrap_or(50) as i64,
            )
            .await
            .map_err(ApiError::unavailable)?;
        let items = links
            .iter()
            .map(|l| LinkRow {
                contact_id: l.contact_id.to_string(),
                link: LinkView::from(l),
            })
            .collect();
        Ok(Json(LinkPage { items, total }))
    }

    /// Push a contact to every CRM again.
    #[oai(path = "/contacts/:id/resync", method = "post")]
    async fn resync_contact(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ApiAuth,
        id: Path<String>,
    ) -> ApiResult<Json<Count>, { BAD_REQUEST | NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        let id = ContactId::parse(&id.0).map_err(|m| ApiError::bad_request("invalid_id", m))?;
        let contact = state
            .store
            .contact(id)
            .await
            .map_err(ApiError::unavailable)?
            .ok_or_else(|| ApiError::not_found(format!("no contact {id}")))?;
        let count = state.resync(&contact, &state.providers).await?;
        Ok(Json(Count { count }))
    }

    /// Push every contact whose link with a CRM is in `error` again.
    #[oai(path = "/links/resync", method = "post")]
    async fn resync_errors(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ApiAuth,
        /// The CRM.
        provider: Query<ProviderParam>,
    ) -> ApiResult<Json<Count>, { BAD_REQUEST | NOT_FOUND | CONFLICT | UNAVAILABLE }> {
        let p: Provider = provider.0.into();
        let mut count = 0;
        let (links, _) = state
            .store
            .list_links(Some(SyncStatus::Error), Some(p), 0, 10_000)
            .await
            .map_err(ApiError::unavailable)?;
        for l in links {
            if let Some(c) = state
                .store
                .contact(l.contact_id)
                .await
                .map_err(ApiError::unavailable)?
            {
                count += state.resync(&c, &[p]).await?;
            }
        }
        Ok(Json(Count { count }))
    }

    /// Sync log entries, newest first.
    #[oai(path = "/sync-logs", method = "get")]
    #[allow(clippy::too_many_arguments)] // one per query parameter
    async fn sync_logs(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
        /// Only this contact.
        #[oai(name = "contactId")]
        contact_id: Query<Option<String>>,
        /// Only this CRM.
        provider: Query<Option<ProviderParam>>,
        /// Only this outcome (`upserted`, `updated`, `deleted`, `created`, `failed`, …).
        #[oai(validator(max_length = 32))]
        outcome: Query<Option<String>>,
        /// Entries to skip.
        #[oai(validator(maximum(value = "1000000")))]
        offset: Query<Option<u64>>,
        /// Entries to return, 1 to 500.
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        limit: Query<Option<u64>>,
    ) -> ApiResult<Json<Vec<SyncLogView>>, { BAD_REQUEST | UNAVAILABLE }> {
        let contact = contact_id
            .0
            .as_deref()
            .map(|c| ContactId::parse(c).map_err(|m| ApiError::bad_request("invalid_id", m)))
            .transpose()?;
        let filter = LogFilter {
            contact,
            provider: provider.0.map(Into::into),
            outcome: outcome.0,
        };
        let logs = state
            .store
            .list_logs(&filter, offset.0.unwrap_or(0), limit.0.unwrap_or(50) as i64)
            .await
            .map_err(ApiError::unavailable)?;
        Ok(Json(logs.iter().map(SyncLogView::from).collect()))
    }
}

impl ApiState {
    /// Marks links pending and queues a push per provider the contact's
    /// customer syncs with (its enabled connections); how many.
    async fn resync(
        &self,
        contact: &crate::store::Contact,
        providers: &[Provider],
    ) -> Result<u64, ApiError> {
        let enabled = self
            .customers
            .providers(&contact.customer_id)
            .await
            .map_err(ApiError::unavailable)?;
        let providers: Vec<Provider> = providers
            .iter()
            .copied()
            .filter(|p| enabled.contains(p))
            .collect();
        if providers.is_empty() {
            return Ok(0);
        }
        self.enqueuer
            .push_contact(
                &self.store,
                contact.id,
                &contact.customer_id,
                &providers,
                contact.version,
            )
            .await
            .map_err(ApiError::unavailable)?;
        Ok(providers.len() as u64)
    }
}
