//! What happens on a node that watchers may need to hear about: facts projected, deadline breaches and
//! multi-agency signals. (Access notifications come from the AUDIT stream itself: `crate::watch`.) A bounded broadcast: a watcher that falls too far behind is told so and must
//! re-read.

use std::sync::Arc;

use halcyon_schema::ChildId;
use tokio::sync::broadcast;

/// Events kept for slow watchers before they are told they fell behind.
pub const EVENTS_BUFFERED_MAX: usize = 4096;

#[derive(Debug, Clone)]
pub enum NodeEvent {
    /// Facts a batch projected: (child, event id).
    Facts(Arc<Vec<(ChildId, String)>>),
    /// A breach of a statutory deadline recorded (the clock passed it) or closed late, noticed at `at_ms`
    /// on the node's clock (`crate::deadlines`).
    Breach {
        notice: Arc<halcyon_projector::BreachNotice>,
        at_ms: i64,
    },
    /// A multi-agency signal fired, or its outcome was recorded (`crate::signals`).
    Signal {
        notice: Arc<halcyon_projector::SignalNotice>,
    },
}

pub type Events = broadcast::Sender<NodeEvent>;

pub fn channel() -> Events {
    broadcast::channel(EVENTS_BUFFERED_MAX).0
}
