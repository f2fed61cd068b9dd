//! `Watch`: a standing subscription. It passes the gate once, for its setup; then each newly projected fact
//! the caller may see, each access notification for the caller's agency as owner, and each breach and signal
//! it receives is recorded through the watch's [`Pass`] before it is sent.

use halcyon_grpc::pb;
use halcyon_projector::disclose::{Asker, Disclosure, view_of};
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
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_QUEUE_LEN_MAX);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let item = match events.recv().await {
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
                    Ok(NodeEvent::Access { owner, notification })
                        if owner == pass.caller.principal.agency =>
                    {
                        vec![this.notification(&pass, notification).await.map_err(Status::from)]
                    }
                    Ok(NodeEvent::Access { .. }) => continue,
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
    /// written before any of them is sent.
    async fn watched_facts(
        &self,
        pass: &Pass,
        child: ChildId,
        event_ids: &[&str],
    ) -> Result<Vec<pb::WatchEvent>, ApiError> {
        let (caller, ctx) = (&pass.caller, &pass.ctx);
        let facts = self.child_facts(child).await?;
        let (view, _) = view_of(
            &Asker {
                break_glass: None,
                ..self.asker(caller, ctx)
            },
            child,
            &facts,
            0..facts.facts.len(),
        );
        let shown: Vec<pb::VisibleFact> = view
            .facts
            .into_iter()
            .filter(|f| event_ids.contains(&f.event_id.as_str()))
            .collect();
        if shown.is_empty() {
            return Ok(Vec::new());
        }
        let disclosure = Disclosure {
            categories_disclosed: shown
                .iter()
                .filter_map(|f| halcyon_schema::Category::from_wire(f.category))
                .collect(),
            rules: shown.iter().map(|f| f.rule.clone()).collect(),
            facts_disclosed: shown.len() as u32,
            ..Default::default()
        };
        self.record(pass, Some(child), &disclosure, pb::AccessOutcome::Permitted)
            .await?;
        Ok(shown
            .into_iter()
            .map(|fact| pb::WatchEvent {
                child_id: child.to_string(),
                kind: Some(pb::watch_event::Kind::Fact(fact)),
            })
            .collect())
    }

    /// An access notification for the owner, itself recorded (it discloses who looked at the child).
    async fn notification(
        &self,
        pass: &Pass,
        notification: pb::AccessNotification,
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
        })
    }
}
