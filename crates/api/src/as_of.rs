//! As-of reconstruction: what an agency could see about a child at a past moment — the question every case
//! review asks. The agency streams are projected into a throwaway store up to the messages the server had
//! stored by then (`Until::StoredAt`), so the child's facts, identity links and sharing state are the ones a
//! node held at that moment; each fact is then decided exactly as a query at that moment would decide it
//! (`view::child_view`), with the policy in force then and the moment as the request time.

use std::sync::Arc;

use async_nats::jetstream;
use halcyon_policy::{ChildState, Policy, Principal, Purpose};
use halcyon_projector::{Fact, Identifier, Projector, ProjectorError, SharingState};
use halcyon_schema::{ChildId, pb};

use crate::rebuild::{RebuildError, Until, project_streams};
use crate::view::{Disclosure, child_view};

/// The read models as they stood at a moment, in a temporary store dropped with this value.
#[derive(Debug)]
pub struct Reconstruction {
    projector: Arc<Projector>,
    /// The moment (Unix ms): messages stored at or before it are in, later ones are not.
    pub at_ms: i64,
    /// Messages applied from all agency streams.
    pub messages: u64,
}

/// What one principal could see of one child at the moment.
#[derive(Debug, Clone)]
pub struct AsOfView {
    pub child: ChildId,
    /// Facts about the child the node held then, seen or not.
    pub facts_held: usize,
    /// The view a query at that moment would have answered (facts, withheld counts by rule, policy version).
    pub view: pb::ChildView,
    pub disclosure: Disclosure,
    /// The child's sharing state then, as it concerned the principal's agency.
    pub state: ChildState,
}

/// Projects every agency stream up to the messages stored at or before `at_ms`.
pub async fn reconstruct(js: &jetstream::Context, at_ms: i64) -> Result<Reconstruction, RebuildError> {
    let projector = Arc::new(Projector::temporary()?);
    let messages = project_streams(js, &projector, &Until::StoredAt(at_ms), &|_, _| {}).await?;
    Ok(Reconstruction {
        projector,
        at_ms,
        messages,
    })
}

impl Reconstruction {
    /// The child an identifier denoted then, if any fact about it had been stored.
    pub fn child(&self, id: &Identifier) -> Result<Option<ChildId>, ProjectorError> {
        let child = self.projector.resolve(id)?;
        Ok((!self.projector.facts(&child)?.is_empty()).then_some(child))
    }

    /// A child's facts as held then, in (occurred at, agency, sequence) order.
    pub fn facts(&self, child: &ChildId) -> Result<Vec<Fact>, ProjectorError> {
        self.projector.facts(child)
    }

    /// What `principal` could have seen of `child` for `purpose` at the moment, under `policy` (the one in
    /// force then). `None` if nothing about the child had been stored by then.
    pub fn could_see(
        &self,
        policy: &Policy,
        principal: &Principal,
        purpose: Purpose,
        child: ChildId,
    ) -> Result<Option<AsOfView>, ProjectorError> {
        let facts = self.projector.facts(&child)?;
        if facts.is_empty() {
            return Ok(None);
        }
        let (view, disclosure) = child_view(policy, principal, purpose, None, child, &facts, self.at_ms);
        let state = SharingState::derive(&facts).for_agency(&principal.agency);
        Ok(Some(AsOfView {
            child,
            facts_held: facts.len(),
            view,
            disclosure,
            state,
        }))
    }
}
