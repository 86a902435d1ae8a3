//! Who wins a conflict, and what applying a CRM record did.

use super::merge::Winner;
use crate::store::Contact;

/// Who wins when a contact changed in the app and in a CRM since they last
/// agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConflictPolicy {
    /// The CRM's version is kept (the default).
    CrmWins,
    /// The app's version is kept and pushed to the CRM again.
    AppWins,
    /// The side changed last wins (by timestamp).
    NewestWins,
}

impl ConflictPolicy {
    /// Who keeps a field both sides changed, the CRM record having last
    /// changed at `crm_updated_ms` (the CRM's clock).
    pub fn winner(self, crm_updated_ms: i64, contact: &Contact) -> Winner {
        match self {
            Self::CrmWins => Winner::Crm,
            Self::AppWins => Winner::App,
            Self::NewestWins if crm_updated_ms >= contact.updated_at.timestamp_millis() => {
                Winner::Crm
            }
            Self::NewestWins => Winner::App,
        }
    }

    /// The policy's name, as configured.
    pub fn name(self) -> &'static str {
        match self {
            Self::CrmWins => "crm-wins",
            Self::AppWins => "app-wins",
            Self::NewestWins => "newest-wins",
        }
    }
}

/// What applying a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new local contact.
    Created,
    /// Local values changed.
    Updated,
    /// The local contact was deleted.
    Deleted,
    /// Nothing to do: an echo of our own push, or already applied.
    Unchanged,
    /// Older than what was applied already.
    Stale,
    /// Not applied: the app's version won a conflict.
    Kept,
    /// Not applicable (no email, deleted and never linked).
    Skipped,
}

impl Applied {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
            Self::Unchanged => "unchanged",
            Self::Stale => "stale",
            Self::Kept => "kept",
            Self::Skipped => "skipped",
        }
    }
}
