//! `Watch`: a standing subscription. It passes the gate once, for its setup; then each newly projected fact
//! the caller may see, each access notification for the caller's agency as owner, and each breach and signal
//! it receives is recorded through the watch's [`Pass`] before it is sent.
//!
//! Access notifications are the access records that name the caller's agency as notified: the watch reads
//! them from the AUDIT stream (an ordered consumer of its own), so a check answered by any node reaches the
//! owner watching on any other, and an owner that was not watching resumes from the `position` of the last
//! notification it received (`resume_after`), receiving each later one once, in AUDIT order.

use halcyon_grpc::pb;
use halcyon_projector::disclose::{Asker, Disclosure, view_of};
use halcyon_projector::read::ChildFacts;
use halcyon_schema::ChildId;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::gate::Pass;
use crate::query::Query;

/// Watch streams carry at most this many events waiting to be read.
const WATCH_QUEUE_LEN_MAX: usize = 256;

pub type WatchStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

impl Query {
    pub(crate) async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        use crate::events::NodeEvent;
        use tokio::sync::broadcast::error::RecvError;
        // A malformed resume position is refused before anything is recorded.
        let resume = NoticePosition::parse(&request.get_ref().resume_after)?;
        let (pass, _req) = self.gate(request).await?;
        // Admitted for its setup; a watch then streams without holding a place in the admission limit.
        let pass = pass.release();
        if pass.ctx.break_glass.is_some() {
            return Err(ApiError::Invalid(
                "break-glass is for a single look-up, not a standing watch".into(),
            )
            .into());
        }
        let mut events = self.events.subscribe();
        let (read_before, notices) = self
            .notices_from(resume, pass.caller.principal.agency.clone())
            .await?;
        let notices = Box::pin(notices);
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_QUEUE_LEN_MAX);
        let this = self.clone();
        let (mut credentials, mut credentials_open) = (self.auth.subscribe_changes(), true);
        tokio::spawn(async move {
            let _watching = this.metrics.watching();
            let mut notices = notices;
            // The last AUDIT message read (before the first, the one before where the read starts): an
            // ordered consumer can stall silently after a server fails.
            let (mut read_to, mut heard) = (read_before, false);
            let mut stall = crate::ingest::Stall::default();
            let mut quiet = tokio::time::interval(crate::ingest::STALL_CHECK);
            quiet.tick().await;
            loop {
                let received = tokio::select! {
                    // The client went away: stop reading AUDIT for it.
                    _ = tx.closed() => return,
                    // Credentials reloaded: a watch whose caller's token was withdrawn or certificate revoked
                    // ends.
                    changed = credentials.changed(), if credentials_open => {
                        if changed.is_err() {
                            credentials_open = false;
                            continue;
                        }
                        if !this.auth.still_valid(&pass.caller) {
                            let _ = tx.send(Err(Status::unauthenticated(
                                "these credentials were withdrawn or revoked; this watch has ended",
                            ))).await;
                            return;
                        }
                        continue;
                    }
                    // The node drains: the watch ends, retryable, for the client to watch again elsewhere.
                    _ = this.draining.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable(
                            "this node is shutting down; watch again on another node from the last position",
                        ))).await;
                        return;
                    }
                    _ = quiet.tick() => {
                        if !heard
                            && let Err(reason) = stall
                                .quiet(&this.js, halcyon_schema::subject::AUDIT_STREAM, read_to)
                                .await
                        {
                            let _ = tx.send(Err(Status::unavailable(format!(
                                "access notifications stalled ({reason}); watch again from the last position"
                            )))).await;
                            return;
                        }
                        heard = false;
                        continue;
                    }
                    event = events.recv() => event,
                    message = futures::StreamExt::next(&mut notices) => {
                        let items = match message {
                            Some(Ok((sequence, found))) => {
                                (read_to, heard) = (sequence, true);
                                stall.heard();
                                let mut items = Vec::new();
                                for (position, notification) in found {
                                    let item = this.notification(&pass, notification, position).await.map_err(Status::from);
                                    let failed = item.is_err();
                                    items.push(item);
                                    if failed {
                                        break;
                                    }
                                }
                                items
                            }
                            Some(Err(e)) => vec![Err(Status::unavailable(format!(
                                "access notifications cannot be read ({e}); watch again from the last position"
                            )))],
                            None => vec![Err(Status::unavailable(
                                "access notifications ended; watch again from the last position",
                            ))],
                        };
                        for item in items {
                            let failed = item.is_err();
                            if tx.send(item).await.is_err() || failed {
                                return;
                            }
                        }
                        continue;
                    }
                };
                let item = match received {
                    Ok(NodeEvent::Facts(facts)) => {
                        // One view per child, however many of its facts the batch carried.
                        let mut by_child: std::collections::BTreeMap<ChildId, Vec<&str>> = Default::default();
                        for (child, event_id) in facts.iter() {
                            by_child.entry(*child).or_default().push(event_id);
                        }
                        let mut out = Vec::new();
                        for (child, event_ids) in &by_child {
                            match this.watched_facts(&pass, *child, event_ids).await {
                                Ok(events) => out.extend(events.into_iter().map(Ok)),
                                Err(e) => {
                                    out.push(Err(Status::from(e)));
                                    break;
                                }
                            }
                        }
                        out
                    }
                    Ok(NodeEvent::Breach { notice, at_ms }) => {
                        match crate::deadlines::watched_breach(&this, &pass, &notice, at_ms).await {
                            Ok(Some(event)) => vec![Ok(event)],
                            Ok(None) => continue,
                            Err(e) => vec![Err(Status::from(e))],
                        }
                    }
                    Ok(NodeEvent::Signal { notice }) => {
                        match crate::signals::watched_signal(&this, &pass, &notice).await {
                            Ok(Some(event)) => vec![Ok(event)],
                            Ok(None) => continue,
                            Err(e) => vec![Err(Status::from(e))],
                        }
                    }
                    Err(RecvError::Lagged(n)) => vec![Err(Status::resource_exhausted(format!(
                        "this watch fell {n} events behind; read the views again and watch anew"
                    )))],
                    Err(RecvError::Closed) => return,
                };
                for item in item {
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    /// The watch events for `caller` of one child's newly projected facts: the child's view is derived
    /// once, the facts the policy withholds are dropped, and one access record covering the rest is
    /// written before any of them is sent. When the new facts changed what the caller is entitled to (a
    /// section 47 enquiry opening the strategy records, an enrolment, a consent, an approval), the earlier
    /// facts it may see only now are sent too, each saying which new facts opened it.
    async fn watched_facts(
        &self,
        pass: &Pass,
        child: ChildId,
        event_ids: &[&str],
    ) -> Result<Vec<pb::WatchEvent>, ApiError> {
        let (caller, ctx) = (&pass.caller, &pass.ctx);
        let facts = self.child_facts(child).await?;
        let asker = Asker {
            break_glass: None,
            ..self.asker(caller, ctx)
        };
        let opened = newly_visible(&asker, child, &facts, event_ids);
        // Only the new facts and those they opened are decided (the child's state comes from all of them),
        // so the record's categories, rules and owners to notify (`notify_owner`) are those of what is sent.
        let window = (0..facts.facts.len()).filter(|&i| {
            let id = facts.facts[i].envelope.event_id.as_str();
            event_ids.contains(&id) || opened.contains(id)
        });
        let (view, disclosure) = view_of(&asker, child, &facts, window);
        let shown = view.facts;
        if shown.is_empty() {
            return Ok(Vec::new());
        }
        self.record(pass, Some(child), &disclosure, pb::AccessOutcome::Permitted)
            .await?;
        let because = became_visible_reason(&shown, event_ids);
        Ok(shown
            .into_iter()
            .map(|fact| pb::WatchEvent {
                child_id: child.to_string(),
                became_visible: if opened.contains(fact.event_id.as_str()) {
                    because.clone()
                } else {
                    String::new()
                },
                kind: Some(pb::watch_event::Kind::Fact(fact)),
                ..Default::default()
            })
            .collect())
    }

    /// Every AUDIT message after `resume` (from now on when `None`), each with the access notifications it
    /// holds for `agency` (most hold none); and the sequence just before the first message read.
    #[allow(clippy::type_complexity)]
    async fn notices_from(
        &self,
        resume: Option<NoticePosition>,
        agency: halcyon_schema::AgencyId,
    ) -> Result<
        (
            u64,
            impl futures::Stream<Item = Result<(u64, Vec<(NoticePosition, pb::AccessNotification)>), String>>
            + Send
            + 'static,
        ),
        ApiError,
    > {
        use futures::StreamExt;
        use halcyon_schema::subject::AUDIT_STREAM;
        let unreadable = |e: halcyon_bus::BusError| {
            ApiError::Unavailable(format!(
                "the AUDIT stream, which holds access notifications, cannot be read: {e}"
            ))
        };
        let start = match resume {
            Some(p) => p.sequence,
            None => halcyon_bus::streams::stream_info(&self.js, AUDIT_STREAM)
                .await
                .map_err(unreadable)?
                .map_or(1, |info| info.state.last_sequence + 1),
        };
        let messages = halcyon_bus::checkpoint::chain_messages(&self.js, AUDIT_STREAM, start, None)
            .await
            .map_err(|e| match e {
                halcyon_bus::checkpoint::CheckpointError::Bus(e) => unreadable(e),
                other => ApiError::Unavailable(other.to_string()),
            })?;
        let registry = self.registry.clone();
        let wanted = agency.to_string();
        Ok((
            start - 1,
            messages.map(move |m| {
                let m = m.map_err(|e| e.to_string())?;
                let found = match <pb::AccessRecords as prost::Message>::decode(m.payload.as_ref()) {
                    // Not an access record message: nothing for anyone.
                    Err(_) => Vec::new(),
                    Ok(records) => records
                        .records
                        .into_iter()
                        .enumerate()
                        .filter(|(_, r)| r.notified_agency_ids.contains(&wanted))
                        .map(|(i, r)| {
                            (
                                NoticePosition {
                                    sequence: m.sequence,
                                    index: i as u32,
                                },
                                r,
                            )
                        })
                        .filter(|(p, _)| resume.is_none_or(|after| *p > after))
                        .map(|(p, r)| (p, notification_of(&registry, r)))
                        .collect(),
                };
                Ok((m.sequence, found))
            }),
        ))
    }

    /// An access notification for the owner, itself recorded (it discloses who looked at the child).
    async fn notification(
        &self,
        pass: &Pass,
        notification: pb::AccessNotification,
        position: NoticePosition,
    ) -> Result<pb::WatchEvent, ApiError> {
        let child: Option<ChildId> = notification.child_id.parse().ok();
        let disclosure = Disclosure {
            categories_disclosed: [halcyon_schema::Category::ACCESS_LOG].into_iter().collect(),
            rules: ["access-notification.owner".to_owned()].into_iter().collect(),
            facts_disclosed: 1,
            ..Default::default()
        };
        self.record(pass, child, &disclosure, pb::AccessOutcome::Permitted)
            .await?;
        Ok(pb::WatchEvent {
            child_id: notification.child_id.clone(),
            kind: Some(pb::watch_event::Kind::Access(notification)),
            position: position.to_string(),
            became_visible: String::new(),
        })
    }
}

/// The earlier facts of `child` that `asker` may see with the facts `new` and could not see without them:
/// none unless the new facts changed its entitlement (its sharing state or the approvals), and only then
/// is its view of the child decided, before and after.
fn newly_visible(
    asker: &Asker<'_>,
    child: ChildId,
    facts: &ChildFacts,
    new: &[&str],
) -> std::collections::BTreeSet<String> {
    let agency = &asker.principal.agency;
    let earlier: Vec<halcyon_projector::Fact> = facts
        .facts
        .iter()
        .filter(|f| !new.contains(&f.envelope.event_id.as_str()))
        .cloned()
        .collect();
    if earlier.is_empty() {
        return Default::default();
    }
    // The state alone first: decoding the earlier facts for the policy is only worth it when it changed.
    let sharing = halcyon_projector::SharingState::derive(&earlier);
    let unchanged = sharing.for_agency_in(agency, asker.registry)
        == facts.sharing.for_agency_in(agency, asker.registry)
        && sharing.approvals == facts.sharing.approvals;
    if unchanged {
        return Default::default();
    }
    let before = ChildFacts::new(earlier);
    let seen_before: std::collections::BTreeSet<String> =
        view_of(asker, child, &before, 0..before.facts.len())
            .0
            .facts
            .into_iter()
            .map(|f| f.event_id)
            .collect();
    view_of(asker, child, facts, 0..facts.facts.len())
        .0
        .facts
        .into_iter()
        .map(|f| f.event_id)
        .filter(|id| !new.contains(&id.as_str()) && !seen_before.contains(id))
        .collect()
}

/// What a watcher is told of an earlier fact it may see only now: the new facts that opened it, named only
/// where the watcher is shown them (`shown`); a new fact it may not see is not even named.
fn became_visible_reason(shown: &[pb::VisibleFact], new: &[&str]) -> String {
    let opening: Vec<String> = shown
        .iter()
        .filter(|f| new.contains(&f.event_id.as_str()))
        .map(|f| format!("{} {}", f.event_type, f.event_id))
        .collect();
    if opening.is_empty() {
        "recorded earlier; visible now that the child's record has changed".to_owned()
    } else {
        format!(
            "recorded earlier; visible now that {} was recorded",
            opening.join(", ")
        )
    }
}

/// Where an access notification is: its AUDIT message and its record's index there. The same on every
/// node; as text `audit:<sequence>:<index>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NoticePosition {
    pub sequence: u64,
    pub index: u32,
}

impl NoticePosition {
    /// An empty `resume_after` is `None`; anything else must be a position a node gave.
    pub fn parse(text: &str) -> Result<Option<Self>, ApiError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let bad = || {
            ApiError::Invalid(format!(
                "resume_after {text:?} is not a notification position (audit:<sequence>:<index>, from a WatchEvent)"
            ))
        };
        let rest = text.strip_prefix("audit:").ok_or_else(bad)?;
        let (sequence, index) = rest.split_once(':').ok_or_else(bad)?;
        Ok(Some(Self {
            sequence: sequence.parse().map_err(|_| bad())?,
            index: index.parse().map_err(|_| bad())?,
        }))
    }
}

impl std::fmt::Display for NoticePosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "audit:{}:{}", self.sequence, self.index)
    }
}

/// The notification an access record makes for its owner.
fn notification_of(registry: &halcyon_schema::Registry, r: pb::AccessRecord) -> pb::AccessNotification {
    pb::AccessNotification {
        by_agency_name: registry
            .by_text(&r.agency_id)
            .map(|a| a.name.clone())
            .unwrap_or_default(),
        child_id: r.child_id,
        by_agency_id: r.agency_id,
        by_principal_id: r.principal_id,
        role: r.role,
        method: r.method,
        purpose: r.purpose,
        at: r.at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(event_type: &str, event_id: &str) -> pb::VisibleFact {
        pb::VisibleFact {
            event_type: event_type.into(),
            event_id: event_id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_reason_names_only_new_facts_the_watcher_is_shown() {
        // A batch of two new facts, the s47 start (shown) and a share decision the police may not see (not
        // shown); the strategy discussion recorded earlier is what became visible.
        let new = ["s47", "hidden-decision"];
        let pushed = [
            shown("StrategyDiscussionHeld", "strategy"),
            shown("Section47EnquiryStarted", "s47"),
        ];
        assert_eq!(
            became_visible_reason(&pushed, &new),
            "recorded earlier; visible now that Section47EnquiryStarted s47 was recorded"
        );
        // None of the new facts shown: nothing named.
        assert_eq!(
            became_visible_reason(&pushed[..1], &["hidden-decision"]),
            "recorded earlier; visible now that the child's record has changed"
        );
    }
}
