//! The methods that answer about one child's record: `FindChild`, `GetChildView` (as [`ViewReply`] bytes,
//! see `reply.rs`), `GetChronology` and `CheckFlag`. Each decides the child's view under the policy and
//! records the access through its [`Pass`] before answering.

use std::sync::Arc;

use halcyon_grpc::pb::{self, find_child_request::Identifier as WireIdentifier};
use halcyon_projector::Identifier;
use halcyon_projector::disclose::{Disclosure, child_view, learnable, view_of};
use halcyon_schema::ChildId;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::gate::Pass;
use crate::query::Query;
use crate::reply::ViewReply;

/// Chronology pages hold at most this many facts.
pub const PAGE_SIZE_MAX: u32 = 500;
const PAGE_SIZE_DEFAULT: u32 = 100;
/// A flag answer carries this many of the child's last flag accesses (CP-IS shows 25).
pub const RECENT_FLAG_ACCESSES: usize = 25;
/// The rule an access record names when a flag answer carried earlier accesses (D13, the access log).
pub const RECENT_ACCESSES_RULE: &str = "flag.recent-accesses";

impl Query {
    /// FindChild: the child one identifier names, as the caller may see it.
    pub(crate) async fn find_child_reply(
        &self,
        request: Request<pb::FindChildRequest>,
    ) -> Result<Response<ViewReply>, Status> {
        let (pass, req) = self.gate(request).await?;
        let identifier = match req.identifier {
            Some(WireIdentifier::NhsNumber(n)) => Identifier::Nhs(n.parse().map_err(ApiError::from)?),
            Some(WireIdentifier::Upn(u)) => Identifier::Upn(u.parse().map_err(ApiError::from)?),
            Some(WireIdentifier::LocalId(l)) => Identifier::Local {
                agency: l.agency_id.parse().map_err(ApiError::from)?,
                local_id: l.local_id,
            },
            None => {
                return Err(
                    ApiError::Invalid("identifier is required: nhs_number, upn or local_id".into()).into(),
                );
            }
        };
        let child = self.resolve(identifier).await?;
        Ok(Response::new(self.answer(&pass, child).await?))
    }

    /// GetChildView: a child the caller knows the halcyon id of, as the caller may see it.
    pub(crate) async fn get_child_view_reply(
        &self,
        request: Request<pb::GetChildViewRequest>,
    ) -> Result<Response<ViewReply>, Status> {
        let (pass, req) = self.gate(request).await?;
        let child = Self::child_id(&req.child_id)?;
        Ok(Response::new(self.answer(&pass, child).await?))
    }

    /// Builds a view, records the access, and only then returns the view.
    async fn answer(&self, pass: &Pass, child: ChildId) -> Result<ViewReply, ApiError> {
        let (caller, ctx) = (&pass.caller, &pass.ctx);
        // Announced now, so the audit writer can hold its next group open for this call's record.
        let expected = self.audit.expect();
        let facts = self.child_facts(child).await?;
        if facts.facts.is_empty() {
            self.record_expected(
                Some(expected),
                pass,
                None,
                &Disclosure::default(),
                pb::AccessOutcome::NotFound,
            )
            .await?;
            return Err(ApiError::NotFound(
                "no child with that identifier is known to Halcyon".into(),
            ));
        }
        let decided = tracing::debug_span!("policy_decision", facts = facts.facts.len()).entered();
        let decision = match &ctx.break_glass {
            None => self.views.view(&self.asker(caller, ctx), child, &facts),
            Some(_) => {
                let (view, disclosure) =
                    view_of(&self.asker(caller, ctx), child, &facts, 0..facts.facts.len());
                Arc::new((ViewReply::encode_view(&view), disclosure))
            }
        };
        drop(decided);
        let (view, disclosure) = &*decision;
        let outcome = if disclosure.facts_disclosed > 0 {
            pb::AccessOutcome::Permitted
        } else {
            pb::AccessOutcome::Denied
        };
        self.record_expected(Some(expected), pass, Some(child), disclosure, outcome)
            .await?;
        if !disclosure.reveals_child {
            // Nothing shown, nothing told, no identity: the caller may not learn that Halcyon knows the
            // child, so the answer is the one for a child it does not know.
            return Err(ApiError::NotFound(
                "no child with that identifier is known to Halcyon".into(),
            ));
        }
        Ok(ViewReply {
            view: view.clone(),
            positions: self
                .projector
                .get()
                .checkpoints()
                .into_iter()
                .map(|(stream, sequence)| pb::Position { stream, sequence })
                .collect(),
        })
    }

    /// The flag check: D1 facts only, each decided by the policy, cut to the flag.
    ///
    /// A caller that may see no flag fact of the child — because Halcyon does not know the NHS number, the
    /// child has no flag, or the policy does not entitle the caller — gets one and the same answer: a
    /// status with no flag and no child id. The access record says which it was.
    pub(crate) async fn flag(&self, pass: &Pass, nhs: &str) -> Result<pb::FlagStatus, ApiError> {
        let (caller, ctx) = (&pass.caller, &pass.ctx);
        let no_flag = pb::FlagStatus {
            policy_version: self.policy.version().to_owned(),
            ..Default::default()
        };
        let child = self.resolve(Self::identifier(nhs)?).await?;
        let facts = self.child_facts(child).await?;
        if facts.facts.is_empty() {
            self.record(pass, None, &Disclosure::default(), pb::AccessOutcome::NotFound)
                .await?;
            return Ok(no_flag);
        }
        let flag_facts: Vec<_> = facts
            .facts
            .iter()
            .filter(|f| {
                halcyon_schema::Category::from_wire(f.envelope.category)
                    == Some(halcyon_schema::Category::STATUS_FLAG)
            })
            .cloned()
            .collect();
        let (view, disclosure) = child_view(&self.asker(caller, ctx), child, &flag_facts);
        let sharing = halcyon_projector::SharingState::derive(&flag_facts);
        let mut status = pb::FlagStatus {
            child_id: child.to_string(),
            policy_version: view.policy_version.clone(),
            ..Default::default()
        };
        use pb::event::Kind;
        for fact in &view.facts {
            let at = fact.occurred_at;
            match fact.event.as_ref().and_then(|e| e.kind.as_ref()) {
                Some(Kind::ChildProtectionPlanStarted(p)) => {
                    status.child_protection_plan = !p.unborn;
                    status.unborn_plan = p.unborn;
                    status.plan_started = at;
                    status.plan_ended = None;
                    let contact = p.contact.clone().unwrap_or_default();
                    status.office_hours_phone = contact.office_hours_phone;
                    status.out_of_hours_phone = contact.out_of_hours_phone;
                    status.owning_agency_id = fact.agency_id.clone();
                }
                Some(Kind::ChildProtectionPlanEnded(_)) => {
                    status.child_protection_plan = false;
                    status.unborn_plan = false;
                    status.plan_ended = at;
                }
                Some(Kind::LookedAfterPeriodStarted(l)) => {
                    status.looked_after = true;
                    status.looked_after_started = at;
                    status.looked_after_ended = None;
                    status.owning_agency_id = fact.agency_id.clone();
                    if status.office_hours_phone.is_empty() {
                        let contact = l.contact.clone().unwrap_or_default();
                        status.office_hours_phone = contact.office_hours_phone;
                        status.out_of_hours_phone = contact.out_of_hours_phone;
                    }
                }
                Some(Kind::LookedAfterPeriodEnded(_)) => {
                    status.looked_after = false;
                    status.looked_after_ended = at;
                }
                Some(
                    Kind::ContactReceived(_)
                    | Kind::ReferralReceived(_)
                    | Kind::ReferralDecisionRecorded(_)
                    | Kind::ReferralAcknowledged(_)
                    | Kind::AgencyCheckRequested(_)
                    | Kind::AgencyCheckResponded(_)
                    | Kind::AssessmentStarted(_)
                    | Kind::AssessmentCompleted(_)
                    | Kind::StrategyDiscussionHeld(_)
                    | Kind::Section47EnquiryStarted(_)
                    | Kind::Section47EnquiryConcluded(_)
                    | Kind::InitialConferenceHeld(_)
                    | Kind::CategoryChanged(_)
                    | Kind::CoreGroupMeetingHeld(_)
                    | Kind::ReviewConferenceHeld(_)
                    | Kind::LookedAfterReviewHeld(_)
                    | Kind::PoliceProtectionStarted(_)
                    | Kind::PoliceProtectionEnded(_)
                    | Kind::EmergencyProtectionOrderMade(_)
                    | Kind::MissingEpisodeReported(_)
                    | Kind::MissingEpisodeClosed(_)
                    | Kind::ReturnHomeInterviewCompleted(_)
                    | Kind::AttendanceConcernRecorded(_)
                    | Kind::ExclusionRecorded(_)
                    | Kind::HealthAttendanceRecorded(_)
                    | Kind::PoliceIntelligenceRecorded(_)
                    | Kind::ExploitationIndicatorRecorded(_)
                    | Kind::ConcernRecorded(_)
                    | Kind::InvolvementStarted(_)
                    | Kind::InvolvementEnded(_)
                    | Kind::ConsentRecorded(_)
                    | Kind::ConsentWithdrawn(_)
                    | Kind::ConsentExemptionRecorded(_)
                    | Kind::ShareDecisionRecorded(_)
                    | Kind::OriginatorApprovalGranted(_)
                    | Kind::IdentifierLinked(_)
                    | Kind::RecordCorrected(_)
                    | Kind::SeriousIncidentNotified(_)
                    | Kind::RapidReviewCompleted(_)
                    | Kind::BreakGlassReviewed(_)
                    | Kind::SignalOutcomeRecorded(_)
                    | Kind::IdentifierUnlinked(_)
                    | Kind::NhsNumberSuperseded(_),
                )
                | None => {}
            }
        }
        if status.owning_agency_id.is_empty()
            && let Some(owner) = &sharing.owner
            && !view.facts.is_empty()
        {
            status.owning_agency_id = owner.to_string();
        }
        if let Some(owner) = self.registry.by_text(&status.owning_agency_id) {
            status.owning_agency_name = owner.name.clone();
            if status.office_hours_phone.is_empty() {
                status.office_hours_phone = owner.office_hours_phone.clone();
                status.out_of_hours_phone = owner.out_of_hours_phone.clone();
            }
        }
        if disclosure.facts_disclosed == 0 {
            self.record(pass, Some(child), &disclosure, pb::AccessOutcome::Denied)
                .await?;
            return Ok(no_flag);
        }
        // The last accesses to this child's flag (agency, role, time), as CP-IS shows them beside the flag.
        let projector = self.projector.get();
        status.recent_accesses =
            tokio::task::spawn_blocking(move || projector.recent_flag_accesses(child, RECENT_FLAG_ACCESSES))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))??;
        for access in &mut status.recent_accesses {
            if let Some(a) = self.registry.by_text(&access.agency_id) {
                access.agency_name = a.name.clone();
            }
        }
        let mut disclosure = disclosure;
        if !status.recent_accesses.is_empty() {
            disclosure
                .categories_disclosed
                .insert(halcyon_schema::Category::ACCESS_LOG);
            disclosure.rules.insert(RECENT_ACCESSES_RULE.to_owned());
        }
        // The notification is the access record itself: acknowledged, it is durable, and every node
        // delivers it to the owner's watchers.
        self.record(pass, Some(child), &disclosure, pb::AccessOutcome::Permitted)
            .await?;
        status.owner_notified = !disclosure.notify.is_empty();
        Ok(status)
    }

    pub(crate) async fn get_chronology(
        &self,
        request: Request<pb::GetChronologyRequest>,
    ) -> Result<Response<pb::ChronologyPage>, Status> {
        let (pass, req) = self.gate(request).await?;
        let (caller, ctx) = (&pass.caller, &pass.ctx);
        let child = Self::child_id(&req.child_id)?;
        let page_size = match req.page_size {
            0 => PAGE_SIZE_DEFAULT,
            n if n > PAGE_SIZE_MAX => {
                return Err(
                    ApiError::Invalid(format!("page_size {n} is over the cap of {PAGE_SIZE_MAX}")).into(),
                );
            }
            n => n,
        } as usize;
        let start: usize = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse()
                .map_err(|_| ApiError::Invalid("page_token is not one this node issued".into()))?
        };
        let child_facts = self.child_facts(child).await?;
        // Pages are windows on the facts the caller may learn of, in time order; the state comes from every
        // fact.
        let learnable = learnable(&self.asker(caller, ctx), &child_facts);
        if learnable.is_empty() {
            // Nothing to show or tell: the answer for a child Halcyon does not know (recorded as it was).
            let outcome = if child_facts.facts.is_empty() {
                pb::AccessOutcome::NotFound
            } else {
                pb::AccessOutcome::Denied
            };
            let child = (!child_facts.facts.is_empty()).then_some(child);
            self.record(&pass, child, &Disclosure::default(), outcome).await?;
            return Err(ApiError::NotFound("no child with that id is known to Halcyon".into()).into());
        }
        // The token is the caller's: near usize::MAX it must not wrap into a reversed slice.
        let next = start.saturating_add(page_size);
        let window = &learnable[start.min(learnable.len())..next.min(learnable.len())];
        let (view, disclosure) =
            tracing::debug_span!("policy_decision", facts = window.len()).in_scope(|| {
                view_of(
                    &self.asker(caller, ctx),
                    child,
                    &child_facts,
                    window.iter().copied(),
                )
            });
        let outcome = if disclosure.facts_disclosed > 0 {
            pb::AccessOutcome::Permitted
        } else {
            pb::AccessOutcome::Denied
        };
        self.record(&pass, Some(child), &disclosure, outcome).await?;
        let page = pb::ChronologyPage {
            child_id: view.child_id,
            facts: view.facts,
            withheld: view.withheld,
            next_page_token: if next < learnable.len() {
                next.to_string()
            } else {
                String::new()
            },
            policy_version: view.policy_version,
        };
        pass.answer(self, Some(child), page).await
    }

    pub(crate) async fn check_flag(
        &self,
        request: Request<pb::CheckFlagRequest>,
    ) -> Result<Response<pb::FlagStatus>, Status> {
        let (pass, req) = self.gate(request).await?;
        let status = self.flag(&pass, &req.nhs_number).await?;
        pass.answer(self, None, status).await
    }
}
