//! `/api/contacts`: create, read, list, update and delete contacts. A write
//! stores the contact, marks its links `pending` and queues one
//! `outbound-upsert` job per enabled provider; it never calls a CRM.

mod accept;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{Enum, Object, OpenApi};

use super::auth::{ContactsAuth, Scope};
use super::errors::{
    self, customer_param, ApiError, ApiResult, BAD_REQUEST, CONFLICT, FORBIDDEN, NOT_FOUND,
    UNAVAILABLE,
};
use super::text::Text;
use super::views::{ContactView, SyncLogView};
use super::ApiState;
use crate::domain::{ContactId, CustomerId, Email, SyncStatus};
use crate::jobs::plan_jobs;
use crate::store::{Contact, ContactPatch, NewContact, Outbox};

/// A new contact.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateContact {
    /// The customer it belongs to (default: the default customer). Its
    /// enabled connections say which CRMs the contact syncs with.
    #[oai(validator(max_length = 64))]
    pub customer_id: Option<String>,
    /// Given name.
    #[oai(validator(max_length = 200))]
    pub first_name: Option<Text>,
    /// Family name.
    #[oai(validator(max_length = 200))]
    pub last_name: Option<Text>,
    /// Primary email (required; CRMs match records on it).
    #[oai(validator(max_length = 254))]
    pub email: Text,
    /// Primary phone.
    #[oai(validator(max_length = 64))]
    pub phone: Option<Text>,
    /// Employer.
    #[oai(validator(max_length = 200))]
    pub company_name: Option<Text>,
    /// Role.
    #[oai(validator(max_length = 200))]
    pub job_title: Option<Text>,
}

/// A partial update: absent fields are kept, `null` clears a field.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateContact {
    /// Given name.
    #[oai(validator(max_length = 200))]
    pub first_name: MaybeUndefined<Text>,
    /// Family name.
    #[oai(validator(max_length = 200))]
    pub last_name: MaybeUndefined<Text>,
    /// Primary email (cannot be cleared).
    #[oai(validator(max_length = 254))]
    pub email: Option<Text>,
    /// Primary phone.
    #[oai(validator(max_length = 64))]
    pub phone: MaybeUndefined<Text>,
    /// Employer.
    #[oai(validator(max_length = 200))]
    pub company_name: MaybeUndefined<Text>,
    /// Role.
    #[oai(validator(max_length = 200))]
    pub job_title: MaybeUndefined<Text>,
}

/// One queued sync job.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct QueuedJob {
    /// The CRM.
    pub provider: String,
    /// The job id (see `/api/jobs/{id}`).
    pub job_id: String,
}

/// A write was stored and its sync queued.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct Accepted {
    /// The contact as stored.
    pub contact: ContactView,
    /// One job per enabled provider.
    pub jobs: Vec<QueuedJob>,
    /// Whether the jobs are on the queue already; `false` when Redis was
    /// unavailable: the change is stored with its jobs and they are queued
    /// as soon as Redis answers again.
    pub queued: bool,
}

/// A page of contacts.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ContactPage {
    /// The contacts, newest first.
    pub items: Vec<ContactView>,
    /// Page number, from 1.
    pub page: u32,
    /// Page size.
    pub per_page: u32,
    /// Contacts matching the filter.
    pub total: u64,
}

/// Filter on link status.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum StatusFilter {
    /// At least one link waits for a push.
    Pending,
    /// At least one link is synced.
    Synced,
    /// At least one link failed.
    Error,
}

fn parse_id(id: &str) -> Result<ContactId, ApiError> {
    ContactId::parse(id).map_err(|m| ApiError::bad_request("invalid_id", m))
}

fn parse_email(email: &str) -> Result<Email, ApiError> {
    Email::parse(email).map_err(|m| ApiError::bad_request("invalid_email", format!("email: {m}")))
}

/// Trims an optional text field; blank means absent.
fn clean(v: Option<Text>) -> Option<String> {
    v.map(|s| s.0.trim().to_owned()).filter(|s| !s.is_empty())
}

fn clean_patch(v: MaybeUndefined<Text>) -> Option<Option<String>> {
    match v {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(s) => Some(clean(Some(s))),
    }
}

/// Refuses a viewer token on a write.
fn writable(scope: &Scope) -> Result<(), ApiError> {
    match scope {
        Scope::All { write: false } => Err(ApiError::forbidden(
            "a viewer token may only read; this needs an operator token",
        )),
        _ => Ok(()),
    }
}

/// The contact, if the token may see it (a customer token sees its
/// customer's only; another's is "not found", not "forbidden", so ids of
/// other customers' contacts cannot be probed).
fn visible(scope: &Scope, contact: Option<Contact>) -> Option<Contact> {
    contact.filter(|c| scope.customer().is_none_or(|own| *own == c.customer_id))
}

impl ApiState {
    /// For a customer token: fails with 404 unless the contact is its
    /// customer's (one read, only for customer tokens).
    async fn check_owner(&self, scope: &Scope, id: ContactId) -> Result<(), ApiError> {
        if scope.customer().is_none() {
            return Ok(());
        }
        let contact = self
            .store
            .contact(id)
            .await
            .map_err(ApiError::unavailable)?;
        visible(scope, contact)
            .map(|_| ())
            .ok_or_else(|| ApiError::not_found(format!("no contact {id}")))
    }
}

/// What a write answers: 202 with the stored contact and its queued jobs.
type WriteResponse = errors::Accepted<Box<Accepted>>;

/// The contacts endpoints.
pub struct ContactsApi;

#[OpenApi(prefix_path = "/contacts", tag = "super::Tag::Contacts")]
impl ContactsApi {
    /// Create a contact and queue its sync to every enabled CRM.
    #[oai(path = "/", method = "post")]
    async fn create(
        &self,
        state: poem::web::Data<&ApiState>,
        auth: ContactsAuth,
        body: Json<CreateContact>,
    ) -> ApiResult<WriteResponse, { BAD_REQUEST | FORBIDDEN | NOT_FOUND | CONFLICT | UNAVAILABLE }>
    {
        writable(&auth.0)?;
        let b = body.0;
        let asked = customer_param(b.customer_id.as_deref())?;
        let customer = match (auth.0.customer(), asked) {
            (Some(own), Some(asked)) if *own != asked => {
                return Err(ApiError::forbidden(format!(
                    "this token may only create contacts of customer {own}"
                ))
                .into())
            }
            (Some(own), _) => own.clone(),
            (None, Some(asked)) => asked,
            (None, None) => CustomerId::default_customer(),
        };
        let providers = match state.customers.get(&customer).await {
            Ok(Some(c)) => c
                .enabled()
                .into_iter()
                .filter(|p| state.providers.contains(p))
                .collect::<Vec<_>>(),
            Ok(None) => {
                return Err(ApiError::bad_request(
                    "unknown_customer",
                    format!("customerId: no customer {customer}"),
                )
                .into())
            }
            Err(e) => return Err(ApiError::unavailable(e).into()),
        };
        let new = NewContact {
            customer_id: customer,
            email: parse_email(&b.email.0)?,
            first_name: clean(b.first_name),
            last_name: clean(b.last_name),
            phone: clean(b.phone),
            company_name: clean(b.company_name),
            job_title: clean(b.job_title),
            outbox: None,
        };
        let jobs = plan_jobs(&providers);
        let new = NewContact {
            outbox: Outbox::owed(&jobs),
            ..new
        };
        let contact = state
            .store
            .insert_contact(new)
            .await
            .map_err(ApiError::from)?;
        Ok(state.accept(contact, jobs, true).await)
    }

    /// One contact, with its sync status per CRM.
    #[oai(path = "/:id", method = "get")]
    async fn get(
        &self,
        state: poem::web::Data<&ApiState>,
        auth: ContactsAuth,
        id: Path<String>,
    ) -> ApiResult<Json<Box<ContactView>>, { BAD_REQUEST | NOT_FOUND | UNAVAILABLE }> {
        let id = parse_id(&id.0)?;
        let contact = state
            .store
            .contact(id)
            .await
            .map_err(ApiError::unavailable)?;
        let contact = visible(&auth.0, contact)
            .filter(|c| c.deleted_at.is_none())
            .ok_or_else(|| ApiError::not_found(format!("no contact {id}")))?;
        let links = state
            .store
            .links_of(&[id])
            .await
            .map_err(ApiError::unavailable)?;
        Ok(Json(Box::new(ContactView::new(&contact, &links))))
    }

    /// Contacts, newest first, optionally only those with a link in `status`.
    #[oai(path = "/", method = "get")]
    async fn list(
        &self,
        state: poem::web::Data<&ApiState>,
        auth: ContactsAuth,
        /// Page number, from 1.
        #[oai(validator(minimum(value = "1"), maximum(value = "100000")))]
        page: Query<Option<u32>>,
        /// Page size, 1 to 200.
        #[oai(
            name = "perPage",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        per_page: Query<Option<u32>>,
        /// Only contacts with a link in this status.
        status: Query<Option<StatusFilter>>,
        /// Only this customer's contacts.
        #[oai(name = "customerId", validator(max_length = 64))]
        customer_id: Query<Option<String>>,
    ) -> ApiResult<Json<ContactPage>, { BAD_REQUEST | FORBIDDEN | UNAVAILABLE }> {
        let customer = customer_param(customer_id.0.as_deref())?;
        let customer = match (auth.0.customer(), customer) {
            (Some(own), Some(asked)) if *own != asked => {
                return Err(ApiError::forbidden(format!(
                    "this token may only list contacts of customer {own}"
                ))
                .into())
            }
            (Some(own), _) => Some(own.clone()),
            (None, asked) => asked,
        };
        let page = page.0.unwrap_or(1);
        let per_page = per_page.0.unwrap_or(50);
        let skip = u64::from(page - 1) * u64::from(per_page);
        let (contacts, total) = match status.0 {
            None => state
                .store
                .list_contacts(customer.as_ref(), None, skip, i64::from(per_page))
                .await
                .map_err(ApiError::unavailable)?,
            // the page is cut from the contacts with such a link, then
            // read (a contact deleted meanwhile is left out of it)
            Some(s) => {
                let s = match s {
                    StatusFilter::Pending => SyncStatus::Pending,
                    StatusFilter::Synced => SyncStatus::Synced,
                    StatusFilter::Error => SyncStatus::Error,
                };
                let (ids, total) = state
                    .store
                    .contacts_with_status(s, customer.as_ref(), skip, i64::from(per_page))
                    .await
                    .map_err(ApiError::unavailable)?;
                let (contacts, _) = state
                    .store
                    .list_contacts(customer.as_ref(), Some(&ids), 0, i64::from(per_page))
                    .await
                    .map_err(ApiError::unavailable)?;
                (contacts, total)
            }
        };
        let ids: Vec<ContactId> = contacts.iter().map(|c| c.id).collect();
        let links = state
            .store
            .links_of(&ids)
            .await
            .map_err(ApiError::unavailable)?;
        let items = contacts
            .iter()
            .map(|c| ContactView::new(c, &links))
            .collect();
        Ok(Json(ContactPage {
            items,
            page,
            per_page,
            total,
        }))
    }

    /// Change some fields of a contact and queue its sync.
    #[oai(path = "/:id", method = "patch")]
    async fn update(
        &self,
        state: poem::web::Data<&ApiState>,
        auth: ContactsAuth,
        id: Path<String>,
        body: Json<UpdateContact>,
    ) -> ApiResult<WriteResponse, { BAD_REQUEST | FORBIDDEN | NOT_FOUND | CONFLICT | UNAVAILABLE }>
    {
        writable(&auth.0)?;
        let id = parse_id(&id.0)?;
        state.check_owner(&auth.0, id).await?;
        let b = body.0;
        let patch = ContactPatch {
            email: b.email.as_ref().map(|e| parse_email(&e.0)).transpose()?,
            first_name: clean_patch(b.first_name),
            last_name: clean_patch(b.last_name),
            phone: clean_patch(b.phone),
            company_name: clean_patch(b.company_name),
            job_title: clean_patch(b.job_title),
            outbox: None,
        };
        let jobs = plan_jobs(&state.providers);
        let patch = ContactPatch {
            outbox: Outbox::owed(&jobs),
            ..patch
        };
        let contact = state
            .store
            .update_contact(id, &patch)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found(format!("no contact {id}")))?;
        Ok(state.accept(contact, jobs, false).await)
    }

    /// The sync log of a contact, newest first (at most 200 entries).
    #[oai(path = "/:id/sync-logs", method = "get")]
    async fn sync_logs(
        &self,
        state: poem::web::Data<&ApiState>,
        auth: ContactsAuth,
        id: Path<String>,
    ) -> ApiResult<Json<Vec<SyncLogView>>, { BAD_REQUEST | NOT_FOUND | UNAVAILABLE }> {
        let id = parse_id(&id.0)?;
        state.check_owner(&auth.0, id).await?;
        let logs = state
            .store
            .sync_logs(id, 200)
            .await
            .map_err(ApiError::unavailable)?;
        Ok(Json(logs.iter().map(SyncLogView::from).collect()))
    }

    /// Delete a contact; the deletion is synced to every CRM.
    #[oai(path = "/:id", method = "delete")]
    async fn delete(
        &self,
        state: poem::web::Data<&ApiState>,
        auth: ContactsAuth,
        id: Path<String>,
    ) -> ApiResult<WriteResponse, { BAD_REQUEST | FORBIDDEN | NOT_FOUND | CONFLICT | UNAVAILABLE }>
    {
        writable(&auth.0)?;
        let id = parse_id(&id.0)?;
        state.check_owner(&auth.0, id).await?;
        let jobs = plan_jobs(&state.providers);
        let contact = state
            .store
            .delete_contact(id, Outbox::owed(&jobs).as_ref())
            .await
            .map_err(ApiError::unavailable)?
            .ok_or_else(|| ApiError::not_found(format!("no contact {id}")))?;
        Ok(state.accept(contact, jobs, false).await)
    }
}
