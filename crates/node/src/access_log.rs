//! The audit service: the access log (D13) for the people entitled to it. Each access record is a D13
//! fact made by the agency whose call it records, decided by the policy (`decide_access_record`: the D13
//! cells, not the own rule): the
//! category's cells say who sees which records (an agency the records of its own calls, the owning local
//! authority every record about its child, a MASH's privacy officer those of children whose referral the
//! MASH handled; youth justice and the voluntary sector nothing). A record shown is cut to what its reader
//! may know of the child: no category (nor rule naming one) outside the reader's own view of the child.
//! Reading the log is itself audited.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use halcyon_grpc::pb::{self, audit_service_server::AuditService};
use halcyon_policy::{
    ChildState, Decision, Fact as PolicyFact, Policy, Principal, Purpose, Request, Role, decide_access_record,
};
use halcyon_projector::access_index::{AccessCursor, AccessRow, AccessSelection};
use halcyon_projector::read::ChildFacts;
use halcyon_schema::convert::timestamp_millis;
use halcyon_schema::subject::AUDIT_STREAM;
use halcyon_schema::{AgencyId, AgencyKind, Category, ChildId};
use tonic::{Request as GrpcRequest, Response, Status};

use crate::error::ApiError;
use crate::query::Query;
use halcyon_projector::disclose::{Asker, Disclosure, view_of};
use halcyon_schema::clock::now_ms;

/// Records returned at most per call.
pub const ACCESS_PAGE_MAX: u32 = 1000;
const ACCESS_PAGE_DEFAULT: u32 = 100;

/// Rules the node itself writes into access records (not the policy's): the categories they speak of.
const NODE_RULES: &[(&str, &[Category])] = &[
    ("access-notification.owner", &[Category::ACCESS_LOG]),
    (crate::child::RECENT_ACCESSES_RULE, &[Category::ACCESS_LOG]),
];

#[derive(Debug, Clone)]
pub struct AccessLog {
    pub query: Query,
    pub js: jetstream::Context,
}

/// Records one call looks at, at most: a reader denied most of what a selection holds gets a shorter page
/// and a token, not a call that walks the whole log.
const ACCESS_SCAN_MAX: usize = 10_000;
/// Records read from the index at a time.
const ACCESS_CHUNK: usize = 256;
/// How long a listing waits for the index to hold every record AUDIT held when the call came.
const INDEX_WAIT: Duration = Duration::from_secs(10);

impl AccessLog {
    /// Waits until the node's access index holds every record the AUDIT stream held when asked, so that a
    /// listing includes every call answered before it (the caller's own among them).
    async fn index_current(&self) -> Result<Arc<halcyon_projector::Projector>, ApiError> {
        let unavailable =
            |e: &dyn std::fmt::Display| ApiError::AuditUnavailable(format!("reading the access log: {e}"));
        let mut stream = self
            .js
            .get_stream(AUDIT_STREAM)
            .await
            .map_err(|e| unavailable(&e))?;
        let last = stream
            .info()
            .await
            .map_err(|e| unavailable(&e))?
            .state
            .last_sequence;
        let projector = self.query.projector.get();
        let mut indexed = projector.subscribe_access_position();
        let caught_up = tokio::time::timeout(INDEX_WAIT, indexed.wait_for(|p| *p >= last))
            .await
            .is_ok_and(|r| r.is_ok());
        if caught_up {
            return Ok(projector);
        }
        let at = *indexed.borrow();
        Err(unavailable(&format_args!(
            "the node's index of AUDIT is at {at} of {last}"
        )))
    }
}

/// What one reader may know of each child the listing touches, memoised per call.
struct Readers<'a> {
    query: &'a Query,
    reader: &'a Principal,
    /// The reader's agency as its standing principal (a practitioner; a MASH member for a MASH): what the
    /// categories in a record are measured against, whatever the reader's own role.
    standing: Principal,
    facts: HashMap<ChildId, Option<Arc<ChildFacts>>>,
    visible: HashMap<(ChildId, i32), Arc<Known>>,
}

/// What a reader's agency may know of one child for one purpose: the categories its view shows, and those
/// it is told are withheld.
#[derive(Debug, Default)]
struct Known {
    shown: BTreeSet<Category>,
    told: BTreeSet<Category>,
}

impl Readers<'_> {
    async fn facts(&mut self, child: ChildId) -> Result<Option<Arc<ChildFacts>>, ApiError> {
        if let Some(facts) = self.facts.get(&child) {
            return Ok(facts.clone());
        }
        let facts = self.query.child_facts(child).await?;
        let facts = (!facts.facts.is_empty()).then_some(facts);
        self.facts.insert(child, facts.clone());
        Ok(facts)
    }

    /// The reader's sharing state for the record's child (nothing known for a record with no child).
    async fn state(&mut self, child: Option<ChildId>) -> Result<ChildState, ApiError> {
        Ok(match child {
            Some(child) => match self.facts(child).await? {
                Some(facts) => facts
                    .sharing
                    .for_agency_in(&self.reader.agency, &self.query.registry),
                None => ChildState::default(),
            },
            None => ChildState::default(),
        })
    }

    /// What the reader's agency may know of `child` for `purpose`: the categories its view of the child
    /// shows, and those it tells it are withheld.
    async fn visible(&mut self, child: Option<ChildId>, purpose: i32) -> Result<Arc<Known>, ApiError> {
        let mut known = Known::default();
        let (Some(child), Some(purpose_term)) = (
            child,
            Purpose::from_pb(pb::Purpose::try_from(purpose).unwrap_or_default()),
        ) else {
            return Ok(Arc::new(known));
        };
        if let Some(known) = self.visible.get(&(child, purpose)) {
            return Ok(known.clone());
        }
        if let Some(facts) = self.facts(child).await? {
            let policy = &self.query.policy;
            let (view, _) = view_of(
                &Asker {
                    policy,
                    registry: &self.query.registry,
                    principal: &self.standing,
                    purpose: purpose_term,
                    break_glass: None,
                    now_ms: now_ms(),
                },
                child,
                &facts,
                0..facts.facts.len(),
            );
            known
                .shown
                .extend(view.facts.iter().filter_map(|f| Category::from_wire(f.category)));
            known.told.extend(
                view.withheld
                    .iter()
                    .filter_map(|w| Category::from_wire(w.category)),
            );
        }
        let known = Arc::new(known);
        self.visible.insert((child, purpose), known.clone());
        Ok(known)
    }
}

/// The standing principal of an agency: what its practitioners (a MASH's members) may see.
fn standing(principal: &Principal) -> Principal {
    Principal {
        agency: principal.agency.clone(),
        kind: principal.kind,
        role: if principal.kind == AgencyKind::Mash {
            Role::MashMember
        } else {
            Role::Practitioner
        },
    }
}

/// Cuts a record to the categories its reader may know of, and returns whether anything was cut.
///
/// A category stays if the reader is told of withheld facts of it, or its view shows facts of it and its
/// kind may see that category from other agencies at all (so an agency that sees a category only as its
/// own records, police D10 say, is not told that another agency was refused such facts); the categories
/// the reader's own call was shown stay in the record of that call; the access log itself stays. A rule
/// stays if every category it speaks of stays and it is not a `never` box (which says only that some kind
/// may never see something). The count of a side that lost a category is zeroed.
fn redact(policy: &Policy, reader: &Principal, record: &mut pb::AccessRecord, known: &Known) -> bool {
    let revealable = |c: Category| {
        c == Category::ACCESS_LOG
            || known.told.contains(&c)
            || (known.shown.contains(&c) && policy.may_ever_see(c, reader.kind))
    };
    let own_call = record.agency_id == reader.agency.as_str();
    let (n_disclosed, n_withheld, n_rules) = (
        record.categories_disclosed.len(),
        record.categories_withheld.len(),
        record.rules.len(),
    );
    record.categories_disclosed.retain(|c| {
        Category::from_wire(*c).is_some_and(|c| revealable(c) || (own_call && known.shown.contains(&c)))
    });
    record
        .categories_withheld
        .retain(|c| Category::from_wire(*c).is_some_and(revealable));
    record.rules.retain(|rule| {
        let categories = policy
            .rule_categories(rule)
            .or_else(|| NODE_RULES.iter().find(|(r, _)| r == rule).map(|(_, c)| *c));
        !policy.rule_is_never(rule) && categories.is_some_and(|cs| cs.iter().all(|&c| revealable(c)))
    });
    let mut cut = false;
    if record.categories_disclosed.len() != n_disclosed {
        record.facts_disclosed = 0;
        cut = true;
    }
    if record.categories_withheld.len() != n_withheld {
        record.facts_withheld = 0;
        cut = true;
    }
    cut |= record.rules.len() != n_rules;
    record.redacted = cut;
    cut
}

#[tonic::async_trait]
impl AuditService for AccessLog {
    async fn list_access(
        &self,
        request: GrpcRequest<pb::ListAccessRequest>,
    ) -> Result<Response<pb::ListAccessResponse>, Status> {
        let (pass, req) = self.query.gate(request).await?;
        let (caller, ctx) = (&pass.caller, &pass.ctx);
        let policy = self.query.policy.clone();
        if let Some(d13) = policy.category(Category::ACCESS_LOG)
            && !d13.allows_purpose(ctx.purpose)
        {
            let allowed: Vec<String> = d13.purposes().iter().map(ToString::to_string).collect();
            return Err(ApiError::Invalid(format!(
                "the access log (D13) is read only for: {}",
                allowed.join(", ")
            ))
            .into());
        }
        let page = match req.page_size {
            0 => ACCESS_PAGE_DEFAULT,
            n if n > ACCESS_PAGE_MAX => {
                return Err(
                    ApiError::Invalid(format!("page_size {n} is over the cap of {ACCESS_PAGE_MAX}")).into(),
                );
            }
            n => n,
        } as usize;
        let (from, to) = (
            req.from.as_ref().map(timestamp_millis),
            req.to.as_ref().map(timestamp_millis),
        );
        let mut readers = Readers {
            query: &self.query,
            reader: &caller.principal,
            standing: standing(&caller.principal),
            facts: HashMap::new(),
            visible: HashMap::new(),
        };
        let mut disclosure = Disclosure::default();
        // A child id no record can name selects nothing.
        let unnamed_child = !req.child_id.is_empty() && req.child_id.parse::<ChildId>().is_err();
        let selection = AccessSelection {
            child: req.child_id.parse().ok(),
            agency: (!req.agency_id.is_empty()).then(|| req.agency_id.clone()),
            principal: (!req.principal_id.is_empty()).then(|| req.principal_id.clone()),
            from_ms: from,
            to_ms: to,
        };
        let mut before = match req.page_token.as_str() {
            "" => None,
            token => Some(
                AccessCursor::parse_token(token)
                    .ok_or_else(|| ApiError::Invalid("page_token is not one this node issued".into()))?,
            ),
        };
        let projector = self.index_current().await?;
        // The page, newest first while it is gathered.
        let mut shown: Vec<pb::AccessRecord> = Vec::new();
        let (mut looked_at, mut exhausted) = (0, unnamed_child);
        'pages: while !exhausted && shown.len() < page && looked_at < ACCESS_SCAN_MAX {
            let p = projector.clone();
            let s = selection.clone();
            let chunk = tokio::task::spawn_blocking(move || p.access_before(&s, before, ACCESS_CHUNK))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(ApiError::from)?;
            if chunk.len() < ACCESS_CHUNK {
                exhausted = true;
            }
            for AccessRow { cursor, mut record } in chunk {
                looked_at += 1;
                before = Some(cursor);
                let Ok(maker) = record.agency_id.parse::<AgencyId>() else {
                    continue;
                };
                let child: Option<ChildId> = record.child_id.parse().ok();
                let state = readers.state(child).await?;
                let fact = PolicyFact::new(Category::ACCESS_LOG, maker);
                let decision = decide_access_record(
                    &policy,
                    &Request {
                        principal: &caller.principal,
                        purpose: ctx.purpose,
                        fact: &fact,
                        state: &state,
                        break_glass: None,
                        now_ms: now_ms(),
                    },
                );
                match decision {
                    Decision::Permit(permit) => {
                        disclosure.rules.insert(permit.rule.to_string());
                        let known = readers.visible(child, record.purpose).await?;
                        redact(&policy, &caller.principal, &mut record, &known);
                        shown.push(record);
                    }
                    Decision::Deny(deny) => {
                        disclosure.rules.insert(deny.rule.to_string());
                        disclosure.facts_withheld += 1;
                    }
                }
                if shown.len() == page || looked_at == ACCESS_SCAN_MAX {
                    exhausted = false;
                    break 'pages;
                }
            }
            if exhausted {
                break;
            }
        }
        shown.reverse();
        let next_page_token = match before {
            Some(cursor) if !exhausted => cursor.token(),
            _ => String::new(),
        };
        disclosure.facts_disclosed = shown.len() as u32;
        if shown.is_empty() {
            disclosure.categories_withheld.insert(Category::ACCESS_LOG);
        } else {
            disclosure.categories_disclosed.insert(Category::ACCESS_LOG);
        }
        let child = req.child_id.parse::<ChildId>().ok();
        let outcome = if shown.is_empty() {
            pb::AccessOutcome::Denied
        } else {
            pb::AccessOutcome::Permitted
        };
        self.query.record(&pass, child, &disclosure, outcome).await?;
        pass.answer(
            &self.query,
            child,
            pb::ListAccessResponse {
                records: shown,
                next_page_token,
            },
        )
        .await
    }
}
