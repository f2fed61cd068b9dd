//! The read side's cache of decoded facts: a child's facts, the sharing state derived from them and the
//! policy's view of each fact, decoded once and shared by the queries that read the child until the
//! projector applies anything new.
//!
//! Every entry is tagged with the projector's positions read *before* its facts were read from sled, and is
//! used only while the positions are still exactly those. The projector publishes a batch's positions only
//! after the batch is in sled, so a query that waited for a position never reads an entry older than it, and
//! any applied batch retires every entry (a batch can move facts between children when it links
//! identifiers, so a per-child key would need the projector to report every child a batch touched).
//! Decisions are never cached: callers decide every fact at query time against `sharing`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use halcyon_policy::{Fact as PolicyFact, Principal};
use halcyon_schema::{AgencyId, Category, ChildId};
use tokio::sync::watch;

use crate::error::ProjectorError;
use crate::fact::Fact;
use crate::state::SharingState;
use crate::store::{Identifier, Projector};

/// Children whose decoded facts are kept at most (about 15 KB each for a child with two dozen facts).
pub const CACHED_CHILDREN_MAX: usize = 1024;

/// One child's facts, decoded, with what every query of the child derives from them.
#[derive(Debug)]
pub struct ChildFacts {
    /// In (occurred at, agency, sequence) order, as [`Projector::facts`] returns them.
    pub facts: Vec<Fact>,
    /// The sharing state derived from all of `facts`.
    pub sharing: SharingState,
    /// Per fact, the policy's view of it without originator approval (`None`: not decidable, skipped).
    policy_facts: Vec<Option<PolicyFact>>,
}

impl ChildFacts {
    /// Derives the sharing state and each fact's policy view once.
    pub fn new(facts: Vec<Fact>) -> Self {
        // Every answer reads the facts as their recording agencies corrected them.
        let facts = match crate::corrections::effective(&facts) {
            std::borrow::Cow::Borrowed(_) => facts,
            std::borrow::Cow::Owned(corrected) => corrected,
        };
        let sharing = SharingState::derive(&facts);
        let policy_facts = facts.iter().map(unapproved_policy_fact).collect();
        Self {
            facts,
            sharing,
            policy_facts,
        }
    }

    /// The policy's view of fact `i` for `principal`: [`crate::view::policy_fact`], without rebuilding it.
    pub fn policy_fact(&self, i: usize, principal: &Principal) -> Option<std::borrow::Cow<'_, PolicyFact>> {
        let base = self.policy_facts.get(i)?.as_ref()?;
        if !self.sharing.approvals.is_empty()
            && self
                .sharing
                .approved(&self.facts[i].envelope.event_id, &principal.agency)
        {
            let mut approved = base.clone();
            approved.originator_approved = true;
            return Some(std::borrow::Cow::Owned(approved));
        }
        Some(std::borrow::Cow::Borrowed(base))
    }
}

/// [`crate::view::policy_fact`] with `originator_approved` false.
fn unapproved_policy_fact(fact: &Fact) -> Option<PolicyFact> {
    let category = Category::from_wire(fact.envelope.category)?;
    let originator: AgencyId = fact.envelope.agency_id.parse().ok()?;
    let handling_code = fact
        .kind()
        .and_then(halcyon_schema::catalogue::handling_code)
        .map(str::to_owned);
    Some(PolicyFact {
        category,
        originator,
        originator_approved: false,
        handling_code,
    })
}

/// Decoded facts of recently read children, valid for one set of projector positions.
#[derive(Debug)]
pub struct FactCache {
    positions: watch::Receiver<BTreeMap<String, u64>>,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// The positions every entry was read at or after.
    at: BTreeMap<String, u64>,
    children: HashMap<ChildId, Arc<ChildFacts>>,
    /// Identifiers resolved at those positions (a batch can link identifiers, so it retires them too).
    resolved: HashMap<String, ChildId>,
}

impl FactCache {
    pub fn new(projector: &Projector) -> Self {
        let positions = projector.subscribe_positions();
        let at = positions.borrow().clone();
        Self {
            positions,
            entries: Mutex::new(Entries {
                at,
                children: HashMap::new(),
                resolved: HashMap::new(),
            }),
        }
    }

    /// The cache of `projector`, one per projector in the process.
    pub fn of(projector: &Arc<Projector>) -> Arc<Self> {
        type Registry = Mutex<Vec<(Weak<Projector>, Arc<FactCache>)>>;
        static CACHES: OnceLock<Registry> = OnceLock::new();
        let mut caches = CACHES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((_, cache)) = caches
            .iter()
            .find(|(p, _)| std::ptr::eq(p.as_ptr(), Arc::as_ptr(projector)) && p.strong_count() > 0)
        {
            return cache.clone();
        }
        caches.retain(|(p, _)| p.strong_count() > 0);
        let cache = Arc::new(Self::new(projector));
        caches.push((Arc::downgrade(projector), cache.clone()));
        cache
    }

    /// The child's facts if they are cached and nothing was applied since they were read.
    pub fn cached(&self, child: &ChildId) -> Option<Arc<ChildFacts>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.positions.borrow();
        if *now != entries.at {
            entries.at = now.clone();
            entries.children.clear();
            entries.resolved.clear();
            return None;
        }
        entries.children.get(child).cloned()
    }

    /// The child `id` names, if resolved since anything was last applied.
    pub fn resolved(&self, id: &Identifier) -> Option<ChildId> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if *self.positions.borrow() != entries.at {
            return None;
        }
        entries.resolved.get(&id.key()).copied()
    }

    /// Resolves `id` in sled (blocking) and keeps the answer while the positions it was read at hold.
    pub fn resolve(&self, projector: &Projector, id: &Identifier) -> Result<ChildId, ProjectorError> {
        if let Some(hit) = self.resolved(id) {
            return Ok(hit);
        }
        let read_at = self.positions.borrow().clone();
        let child = projector.resolve(id)?;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if *self.positions.borrow() == read_at {
            if entries.at != read_at {
                entries.at = read_at;
                entries.children.clear();
                entries.resolved.clear();
            }
            if entries.resolved.len() >= CACHED_CHILDREN_MAX {
                entries.resolved.clear();
            }
            entries.resolved.insert(id.key(), child);
        }
        Ok(child)
    }

    /// Reads the child's facts from sled (blocking) and keeps them while the positions they were read at
    /// hold.
    pub fn load(&self, projector: &Projector, child: &ChildId) -> Result<Arc<ChildFacts>, ProjectorError> {
        if let Some(hit) = self.cached(child) {
            return Ok(hit);
        }
        let read_at = self.positions.borrow().clone();
        let facts = Arc::new(ChildFacts::new(projector.facts(child)?));
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.positions.borrow();
        if *now == read_at {
            if entries.at != read_at {
                entries.at = read_at;
                entries.children.clear();
                entries.resolved.clear();
            }
            if entries.children.len() >= CACHED_CHILDREN_MAX
                && let Some(evicted) = entries.children.keys().next().copied()
            {
                entries.children.remove(&evicted);
            }
            entries.children.insert(*child, facts.clone());
        }
        Ok(facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Incoming;
    use bytes::Bytes;
    use halcyon_policy::{AgencyKind, Role};
    use halcyon_testkit::{Scenario, ScenarioAgencies, ScenarioConfig};
    use prost::Message;

    fn scenario() -> Scenario {
        Scenario::generate(
            &ScenarioConfig {
                children: 12,
                ..Default::default()
            },
            &ScenarioAgencies::deploy(),
        )
    }

    /// Applies the scenario's envelopes for `agencies` (all when empty), one batch per stream.
    fn apply(p: &Projector, s: &Scenario, upto: usize) {
        let mut streams: BTreeMap<String, Vec<Incoming>> = BTreeMap::new();
        for e in &s.envelopes[..upto] {
            let stream = halcyon_schema::StreamName::for_agency(&e.agency_id.parse().unwrap()).to_string();
            let list = streams.entry(stream).or_default();
            let sequence = p.checkpoint(&stream_name(e)) + list.len() as u64 + 1;
            list.push(Incoming {
                sequence,
                subject: Scenario::subject(e),
                payload: Bytes::from(e.encode_to_vec()),
                stored_at_ms: e
                    .recorded_at
                    .as_ref()
                    .map_or(0, halcyon_schema::convert::timestamp_millis),
            });
        }
        for (stream, msgs) in streams {
            p.apply(&stream, &msgs).unwrap();
        }
    }

    fn stream_name(e: &halcyon_schema::pb::Envelope) -> String {
        halcyon_schema::StreamName::for_agency(&e.agency_id.parse().unwrap()).to_string()
    }

    #[test]
    fn policy_facts_are_the_views_policy_facts_for_every_agency() {
        let s = scenario();
        let p = Projector::temporary().unwrap();
        apply(&p, &s, s.envelopes.len());
        let agencies: Vec<AgencyId> = s
            .envelopes
            .iter()
            .map(|e| e.agency_id.parse().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for child in &s.children {
            let id = p.resolve(&crate::Identifier::Nhs(child.nhs.clone())).unwrap();
            let cached = ChildFacts::new(p.facts(&id).unwrap());
            assert_eq!(cached.sharing, SharingState::derive(&cached.facts));
            for agency in &agencies {
                let principal = Principal {
                    agency: agency.clone(),
                    kind: AgencyKind::Police,
                    role: Role::Practitioner,
                };
                for (i, fact) in cached.facts.iter().enumerate() {
                    assert_eq!(
                        cached.policy_fact(i, &principal).map(|f| f.into_owned()),
                        crate::view::policy_fact(fact, &cached.sharing, &principal)
                    );
                }
            }
        }
    }

    #[test]
    fn an_applied_batch_retires_cached_facts() {
        let s = scenario();
        let p = Projector::temporary().unwrap();
        let half = s.envelopes.len() / 2;
        apply(&p, &s, half);
        let cache = FactCache::new(&p);
        let child = s.envelopes[half]
            .child
            .as_ref()
            .unwrap()
            .nhs_number
            .parse()
            .unwrap();
        let id = p.resolve(&crate::Identifier::Nhs(child)).unwrap();
        let before = cache.load(&p, &id).unwrap();
        assert!(Arc::ptr_eq(&before, &cache.cached(&id).unwrap()));
        // The rest of the scenario, on top of what is there.
        let rest: Vec<_> = s.envelopes[half..].to_vec();
        let more = Scenario {
            envelopes: rest,
            children: Vec::new(),
        };
        apply(&p, &more, more.envelopes.len());
        assert!(cache.cached(&id).is_none(), "an apply retires every entry");
        let after = cache.load(&p, &id).unwrap();
        assert_eq!(after.facts, p.facts(&id).unwrap());
        assert!(after.facts.len() > before.facts.len());
    }
}
