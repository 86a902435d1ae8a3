//! Field-by-field three-way merge of a contact with its CRM record.
//!
//! A sync tool must never destroy data it does not own. So nothing is
//! compared record against record: each field is settled on its own, against
//! the *base* — the value both sides held when they last agreed (the link's
//! snapshot of the CRM record). A field only one side changed goes to the
//! other side; a field both sides changed differently is a conflict, settled
//! by the policy. With no base (a first link to a record that already
//! existed) a value one side lacks is filled from the other — the CRM's
//! phone, company or name enrich the app's contact and are never cleared —
//! and only values both sides hold differently are conflicts.

use serde_json::{Map, Value};

use crate::domain::Email;
use crate::domain::UniversalContact;
use crate::store::ContactPatch;

/// One universal contact field the app syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `firstName`.
    FirstName,
    /// `lastName`.
    LastName,
    /// `primaryEmail` (never cleared: the app requires it).
    Email,
    /// `primaryPhone`.
    Phone,
    /// `companyName`.
    Company,
    /// `jobTitle`.
    JobTitle,
}

impl Field {
    /// Every synced field.
    pub const ALL: [Field; 6] = [
        Field::FirstName,
        Field::LastName,
        Field::Email,
        Field::Phone,
        Field::Company,
        Field::JobTitle,
    ];

    /// The universal field name.
    pub fn key(self) -> &'static str {
        match self {
            Field::FirstName => "firstName",
            Field::LastName => "lastName",
            Field::Email => "primaryEmail",
            Field::Phone => "primaryPhone",
            Field::Company => "companyName",
            Field::JobTitle => "jobTitle",
        }
    }

    fn get(self, c: &UniversalContact) -> &Option<String> {
        match self {
            Field::FirstName => &c.first_name,
            Field::LastName => &c.last_name,
            Field::Email => &c.primary_email,
            Field::Phone => &c.primary_phone,
            Field::Company => &c.company_name,
            Field::JobTitle => &c.job_title,
        }
    }

    fn slot(self, c: &mut UniversalContact) -> &mut Option<String> {
        match self {
            Field::FirstName => &mut c.first_name,
            Field::LastName => &mut c.last_name,
            Field::Email => &mut c.primary_email,
            Field::Phone => &mut c.primary_phone,
            Field::Company => &mut c.company_name,
            Field::JobTitle => &mut c.job_title,
        }
    }

    /// The field's value, trimmed; blank is absent.
    pub fn value(self, c: &UniversalContact) -> Option<String> {
        self.get(c)
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// Whether two values are the same (emails compare case-insensitively).
    fn same(self, a: &Option<String>, b: &Option<String>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) if self == Field::Email => a.eq_ignore_ascii_case(b),
            _ => a == b,
        }
    }
}

/// Which side's value a field both sides changed keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winner {
    /// The app's value goes to the CRM.
    App,
    /// The CRM's value comes to the app.
    Crm,
}

/// Values to write on one side: `None` clears the field.
pub type Changes = Vec<(Field, Option<String>)>;

/// What merging a contact with its CRM record asks of each side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merge {
    /// Values the app's contact takes from the CRM.
    pub to_app: Changes,
    /// Values the CRM record takes from the app.
    pub to_crm: Changes,
    /// Fields both sides changed (or, on a first link, both held) with
    /// different values; settled by the policy.
    pub conflicts: Vec<Field>,
    /// Fields the app lacked and took from the CRM on a first link.
    pub enriched: Vec<Field>,
    /// What both sides hold once both sets of changes are written.
    pub result: UniversalContact,
}

impl Merge {
    /// Whether the two sides already agree.
    pub fn agreed(&self) -> bool {
        self.to_app.is_empty() && self.to_crm.is_empty()
    }

    /// A line for the sync log saying what the merge did, if anything worth
    /// saying: conflicts and who won them, fields filled from the CRM.
    pub fn note(&self, policy: &str, crm: &str) -> Option<String> {
        let names = |fs: &[Field]| fs.iter().map(|f| f.key()).collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        if !self.conflicts.is_empty() {
            let won_by_crm: Vec<Field> = self
                .conflicts
                .iter()
                .copied()
                .filter(|f| self.to_app.iter().any(|(g, _)| g == f))
                .collect();
            let won_by_app: Vec<Field> = self
                .conflicts
                .iter()
                .copied()
                .filter(|f| !won_by_crm.contains(f))
                .collect();
            if !won_by_crm.is_empty() {
                parts.push(format!(
                    "{policy}: kept {crm}'s version of {}",
                    names(&won_by_crm)
                ));
            }
            if !won_by_app.is_empty() {
                parts.push(format!(
                    "{policy}: kept app's version of {}",
                    names(&won_by_app)
                ));
            }
        }
        if !self.enriched.is_empty() {
            parts.push(format!("enriched from {crm}: {}", names(&self.enriched)));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Merges the app's values with the CRM's, field by field, against `base`
/// (the values both held at the last sync; `None` for a first link).
/// `winner` settles fields both sides changed differently.
pub fn merge(
    base: Option<&UniversalContact>,
    app: &UniversalContact,
    crm: &UniversalContact,
    winner: Winner,
) -> Merge {
    let mut m = Merge {
        result: crm.clone(),
        ..Merge::default()
    };
    m.result.full_name = None;
    for f in Field::ALL {
        let (a, c) = (f.value(app), f.value(crm));
        if f.same(&a, &c) {
            continue;
        }
        let take_app = match base {
            Some(base) => {
                let b = f.value(base);
                let app_changed = !f.same(&a, &b);
                let crm_changed = !f.same(&c, &b);
                if app_changed && crm_changed {
                    m.conflicts.push(f);
                    winner == Winner::App
                } else {
                    app_changed
                }
            }
            None => match (&a, &c) {
                (Some(_), None) => true,
                (None, Some(_)) => {
                    m.enriched.push(f);
                    false
                }
                _ => {
                    m.conflicts.push(f);
                    winner == Winner::App
                }
            },
        };
        // The app's email is required: a CRM without one never clears it.
        if f == Field::Email && !take_app && c.is_none() {
            m.to_crm.push((f, a.clone()));
            *f.slot(&mut m.result) = a;
            continue;
        }
        if take_app {
            m.to_crm.push((f, a.clone()));
            *f.slot(&mut m.result) = a;
        } else {
            m.to_app.push((f, c.clone()));
            *f.slot(&mut m.result) = c;
        }
    }
    m
}

/// The changes the app's contact takes, as a store patch. An email the app
/// would refuse is left out (the app keeps its own).
pub fn patch_of(changes: &Changes) -> ContactPatch {
    let mut p = ContactPatch::default();
    for (f, v) in changes {
        let v = v.clone();
        match f {
            Field::FirstName => p.first_name = Some(v),
            Field::LastName => p.last_name = Some(v),
            Field::Phone => p.phone = Some(v),
            Field::Company => p.company_name = Some(v),
            Field::JobTitle => p.job_title = Some(v),
            Field::Email => p.email = v.and_then(|e| Email::parse(&e).ok()),
        }
    }
    p
}

/// The changes that turn `from` into `to` (for a push with no CRM read:
/// only what the app changed since the base).
pub fn diff(from: &UniversalContact, to: &UniversalContact) -> Changes {
    Field::ALL
        .into_iter()
        .filter_map(|f| {
            let (a, b) = (f.value(from), f.value(to));
            (!f.same(&a, &b)).then_some((f, b))
        })
        .collect()
}

/// `base` with `changes` written over it.
pub fn apply(base: &UniversalContact, changes: &Changes) -> UniversalContact {
    let mut out = base.clone();
    out.full_name = None;
    for (f, v) in changes {
        *f.slot(&mut out) = v.clone();
    }
    out
}

/// What a push that creates the CRM record writes: every field the app
/// holds. The api records it as the new links' push intent, and the push
/// that creates the record writes exactly this.
pub fn created(app: &UniversalContact) -> Merge {
    let to_crm = present(app);
    Merge {
        result: apply(&UniversalContact::default(), &to_crm),
        to_crm,
        ..Merge::default()
    }
}

/// The fields object of an `update-contact`/`upsert-contact` input: given
/// keys are written, `null` clears, absent keys are kept by the CRM.
pub fn fields_json(changes: &Changes) -> Value {
    let mut map = Map::new();
    for (f, v) in changes {
        map.insert(f.key().into(), v.clone().map_or(Value::Null, Value::String));
    }
    Value::Object(map)
}

/// The app's values that are set, as changes (for creating a record: an
/// absent value is simply not sent).
pub fn present(c: &UniversalContact) -> Changes {
    Field::ALL
        .into_iter()
        .filter_map(|f| f.value(c).map(|v| (f, Some(v))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(pairs: &[(Field, &str)]) -> UniversalContact {
        let mut c = UniversalContact::default();
        for (f, v) in pairs {
            *f.slot(&mut c) = Some((*v).to_owned());
        }
        c
    }

    #[test]
    fn a_first_link_fills_gaps_both_ways_and_never_clears() {
        use Field::*;
        let app = contact(&[(Email, "bob@x.io"), (FirstName, "Bob"), (JobTitle, "CTO")]);
        let crm = contact(&[
            (Email, "BOB@x.io"),
            (FirstName, "Robert"),
            (LastName, "Smith"),
            (Phone, "+1 555"),
        ]);
        let m = merge(None, &app, &crm, Winner::Crm);
        assert_eq!(m.conflicts, vec![FirstName], "both hold a first name");
        assert_eq!(m.enriched, vec![LastName, Phone]);
        assert_eq!(
            m.to_app,
            vec![
                (FirstName, Some("Robert".into())),
                (LastName, Some("Smith".into())),
                (Phone, Some("+1 555".into()))
            ]
        );
        assert_eq!(m.to_crm, vec![(JobTitle, Some("CTO".into()))]);
        assert!(m.to_crm.iter().all(|(_, v)| v.is_some()), "nothing cleared");
        assert_eq!(m.result.last_name.as_deref(), Some("Smith"));
        assert_eq!(m.result.job_title.as_deref(), Some("CTO"));

        let m = merge(None, &app, &crm, Winner::App);
        assert!(m.to_crm.contains(&(FirstName, Some("Bob".into()))));
        assert!(
            m.to_app.contains(&(Phone, Some("+1 555".into()))),
            "still enriched"
        );
        assert_eq!(
            m.note("app-wins", "hubspot").as_deref(),
            Some("app-wins: kept app's version of firstName; enriched from hubspot: lastName, primaryPhone")
        );
    }

    #[test]
    fn with_a_base_each_side_keeps_what_only_it_changed() {
        use Field::*;
        let base = contact(&[
            (Email, "a@x.io"),
            (FirstName, "Ann"),
            (Phone, "1"),
            (JobTitle, "Dev"),
        ]);
        // the app cleared the phone and renamed; the CRM changed the title
        let app = contact(&[(Email, "a@x.io"), (FirstName, "Anne"), (JobTitle, "Dev")]);
        let crm = contact(&[
            (Email, "a@x.io"),
            (FirstName, "Ann"),
            (Phone, "1"),
            (JobTitle, "Lead"),
        ]);
        let m = merge(Some(&base), &app, &crm, Winner::Crm);
        assert!(m.conflicts.is_empty());
        assert_eq!(
            m.to_crm,
            vec![(FirstName, Some("Anne".into())), (Phone, None)]
        );
        assert_eq!(m.to_app, vec![(JobTitle, Some("Lead".into()))]);
        assert_eq!(
            m.result,
            contact(&[(Email, "a@x.io"), (FirstName, "Anne"), (JobTitle, "Lead")])
        );
        // both changed the title: the policy decides
        let app2 = contact(&[
            (Email, "a@x.io"),
            (FirstName, "Ann"),
            (Phone, "1"),
            (JobTitle, "CEO"),
        ]);
        let m = merge(Some(&base), &app2, &crm, Winner::Crm);
        assert_eq!(m.conflicts, vec![JobTitle]);
        assert_eq!(m.to_app, vec![(JobTitle, Some("Lead".into()))]);
        assert!(m.to_crm.is_empty());
        // our own push coming back: nothing either way
        assert!(merge(Some(&crm), &crm, &crm, Winner::Crm).agreed());
    }

    #[test]
    fn a_crm_record_without_an_email_never_clears_the_apps() {
        let app = contact(&[(Field::Email, "a@x.io")]);
        let m = merge(None, &app, &UniversalContact::default(), Winner::Crm);
        assert!(m.to_app.is_empty());
        assert_eq!(m.to_crm, vec![(Field::Email, Some("a@x.io".into()))]);
    }

    #[test]
    fn diff_and_fields_json_send_only_changes() {
        let from = contact(&[(Field::Email, "a@x.io"), (Field::Phone, "1")]);
        let to = contact(&[(Field::Email, "a@x.io"), (Field::JobTitle, "Dev")]);
        let d = diff(&from, &to);
        assert_eq!(
            fields_json(&d),
            serde_json::json!({ "primaryPhone": null, "jobTitle": "Dev" })
        );
        assert_eq!(apply(&from, &d), to);
        assert_eq!(present(&to).len(), 2);
    }
}
