//! What a contact write does once the change and its outbox are stored:
//! mark the links pending, queue one push per CRM, clear the outbox, and
//! answer with the contact as it now stands.

use poem_openapi::payload::Json;

use super::{Accepted, QueuedJob, WriteResponse};
use crate::api::views::{ContactView, LinkView};
use crate::api::ApiState;
use crate::domain::Provider;
use crate::store::{Contact, Link};

/// How long a write waits for its jobs to be queued before it answers; the
/// outbox relay queues them later if this runs out.
const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl ApiState {
    /// Marks the links pending and queues one push per provider. The change
    /// and its outbox are stored already, so from here on nothing fails the
    /// request: if MongoDB or Redis fails now, the outbox relay queues the
    /// jobs later and the answer says `queued: false`.
    /// `created`: the contact is new, so its links are known without a read.
    pub(super) async fn accept(
        &self,
        contact: Contact,
        jobs: Vec<(Provider, String)>,
        created: bool,
    ) -> WriteResponse {
        let customer = &contact.customer_id;
        // A change's jobs were planned before its customer was known (an
        // update or delete does not read the contact first): only the CRMs
        // the customer has connected get one.
        let jobs = if created {
            jobs
        } else {
            match self.customers.providers(customer).await {
                Ok(connected) => jobs
                    .into_iter()
                    .filter(|(p, _)| connected.contains(p))
                    .collect(),
                Err(_) => jobs,
            }
        };
        let queued = tokio::time::timeout(QUEUE_WAIT, async {
            if created {
                self.enqueuer
                    .push_new_jobs(&self.store, &contact, &jobs)
                    .await
            } else {
                self.enqueuer
                    .push_jobs(&self.store, contact.id, customer, &jobs, contact.version)
                    .await
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("queueing took longer than {QUEUE_WAIT:?}"))
        .and_then(|r| r);
        match (&queued, &contact.outbox) {
            (Err(e), _) => {
                tracing::warn!(contact_id = %contact.id, error = %format!("{e:#}"), "sync jobs not queued yet; the outbox relay will queue them");
            }
            // Done with the outbox; the answer does not wait for that (if
            // it is not cleared, the relay finds the jobs queued already).
            (Ok(()), Some(outbox)) => {
                let (store, id, outbox) = (self.store.clone(), contact.id, outbox.clone());
                tokio::spawn(async move {
                    if let Err(e) = store.outbox_relayed(id, &outbox).await {
                        tracing::debug!(contact_id = %id, error = %format!("{e:#}"), "outbox not cleared; the relay will");
                    }
                });
            }
            (Ok(()), None) => {}
        }
        let links = match (&queued, created) {
            (Err(_), _) => Vec::new(),
            // exactly what marking them pending made of no links
            (Ok(()), true) => jobs
                .iter()
                .map(|(p, job)| Link::new_pending(contact.id, customer, *p, job, contact.version))
                .collect(),
            (Ok(()), false) => self.store.links_of(&[contact.id]).await.unwrap_or_default(),
        };
        crate::api::errors::Accepted::Accepted(Json(Box::new(Accepted {
            contact: ContactView::new(&contact, &links),
            jobs: jobs
                .into_iter()
                .map(|(provider, job_id)| QueuedJob {
                    provider: provider.to_string(),
                    job_id,
                })
                .collect(),
            queued: queued.is_ok(),
        })))
    }
}

impl ContactView {
    pub(super) fn new(c: &Contact, links: &[crate::store::Link]) -> Self {
        Self {
            id: c.id.to_string(),
            customer_id: c.customer_id.to_string(),
            first_name: c.first_name.clone(),
            last_name: c.last_name.clone(),
            email: c.email.as_str().to_owned(),
            phone: c.phone.clone(),
            company_name: c.company_name.clone(),
            job_title: c.job_title.clone(),
            version: c.version,
            created_at: c.created_at.to_chrono(),
            updated_at: c.updated_at.to_chrono(),
            deleted: c.deleted_at.is_some(),
            links: links
                .iter()
                .filter(|l| l.contact_id == c.id)
                .map(LinkView::from)
                .collect(),
        }
    }
}
