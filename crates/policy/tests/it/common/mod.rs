//! Given/when/then helpers for policy tests: build a request about one fact from defaults, change what
//! the case needs, and decide.
#![allow(dead_code, reason = "each test file uses a different part of the helpers")]

use std::collections::BTreeSet;

use halcyon_policy::{
    AgencyId, AgencyKind, BreakGlass, Category, ChildState, Decision, Fact, Involvement, Policy, Principal,
    Purpose, Request, Role, Stage, decide, explain,
};

/// Noon, 1 March 2026 UTC.
pub const NOW_MS: i64 = 1_772_366_400_000;
pub const MINUTE_MS: i64 = 60_000;

pub fn agency(id: &str) -> AgencyId {
    id.parse().unwrap()
}

/// A principal's agency of a kind, distinct from the default originator.
pub fn agency_of(kind: AgencyKind) -> AgencyId {
    agency(&format!("{kind}-asking"))
}

/// The agency that recorded the fact, unless a test says otherwise.
pub fn originator() -> AgencyId {
    agency("csc-originating")
}

/// Everything one decision needs, owned, so tests can change one thing at a time.
#[derive(Debug, Clone)]
pub struct Given {
    pub principal: Principal,
    pub purpose: Purpose,
    pub fact: Fact,
    pub state: ChildState,
    pub break_glass: Option<BreakGlass>,
    pub now_ms: i64,
}

/// A practitioner of an agency of `kind` asks, for safeguarding, about a fact of `category` recorded by
/// another agency; the case has nothing on it yet.
pub fn given(kind: AgencyKind, category: Category) -> Given {
    Given {
        principal: Principal {
            agency: agency_of(kind),
            kind,
            role: Role::Practitioner,
        },
        purpose: Purpose::Safeguarding,
        fact: Fact::new(category, originator()),
        state: ChildState::default(),
        break_glass: None,
        now_ms: NOW_MS,
    }
}

impl Given {
    pub fn request(&self) -> Request<'_> {
        Request {
            principal: &self.principal,
            purpose: self.purpose,
            fact: &self.fact,
            state: &self.state,
            break_glass: self.break_glass.as_ref(),
            now_ms: self.now_ms,
        }
    }

    pub fn decide(&self, policy: &Policy) -> Decision {
        decide(policy, &self.request())
    }

    /// As [`Given::decide`], for an access record made by the fact's originator (D13 cells only).
    pub fn decide_access_record(&self, policy: &Policy) -> Decision {
        halcyon_policy::decide_access_record(policy, &self.request())
    }

    pub fn explain(&self, policy: &Policy) -> String {
        explain(policy, &self.request())
    }

    pub fn purpose(mut self, purpose: Purpose) -> Self {
        self.purpose = purpose;
        self
    }

    pub fn role(mut self, role: Role) -> Self {
        self.principal.role = role;
        self
    }

    pub fn involved(mut self, involvement: Involvement) -> Self {
        self.state.involvements.insert(involvement);
        self
    }

    /// The child is in the principal's area (the relationship `area`).
    pub fn in_area(mut self) -> Self {
        self.state.in_area = true;
        self
    }

    pub fn involved_in_everything(mut self) -> Self {
        self.state.involvements = Involvement::ALL.iter().copied().collect();
        self
    }

    /// The principal's agency holds the child's case (the relationship `lead-authority`).
    pub fn lead_authority(mut self) -> Self {
        self.state.lead_authority = true;
        self
    }

    pub fn stage(mut self, change: impl FnOnce(&mut Stage)) -> Self {
        change(&mut self.state.stage);
        self
    }

    pub fn s47_started(self) -> Self {
        self.stage(|s| s.s47_started = true)
    }

    pub fn approved(mut self) -> Self {
        self.fact.originator_approved = true;
        self
    }

    pub fn handling_code(mut self, code: &str) -> Self {
        self.fact.handling_code = Some(code.to_owned());
        self
    }

    pub fn consented(mut self, category: Category) -> Self {
        self.state.consented.insert(category);
        self
    }

    pub fn exempted(mut self, category: Category) -> Self {
        self.state.exempted.insert(category);
        self
    }

    pub fn recorded_by(mut self, originator: AgencyId) -> Self {
        self.fact.originator = originator;
        self
    }

    /// A break-glass invoked `minutes_ago` minutes before the request.
    pub fn break_glass(mut self, reason: &str, minutes_ago: i64) -> Self {
        self.break_glass = Some(BreakGlass {
            reason: reason.to_owned(),
            started_at_ms: NOW_MS - minutes_ago * MINUTE_MS,
        });
        self
    }
}

pub fn categories(list: &[Category]) -> BTreeSet<Category> {
    list.iter().copied().collect()
}

pub fn d(n: u8) -> Category {
    Category::new(n).unwrap()
}
