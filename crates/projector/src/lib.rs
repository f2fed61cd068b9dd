//! The projector: turns the agency streams into read models in sled. It consumes a stream of
//! (position, bytes) that the caller wires to the bus, so it knows nothing of NATS.
//!
//! Every batch of messages from one stream is applied in one sled batch together with that stream's
//! checkpoint, so a crash anywhere gives exactly-once effect. Invalid events are quarantined with their
//! reasons, never dropped, and never stop the projector.
#![forbid(unsafe_code)]

/// Messages per sled batch when projecting a stream: about 1,000 rows keeps batches fast and memory flat
/// (docs/measured.md).
pub const BATCH_LEN_MAX: usize = 1000;

pub mod access_index;
pub mod check;
pub mod clock;
pub mod corrections;
pub mod damage;
pub mod deadlines;
pub mod disclose;
pub mod error;
pub mod fact;
pub mod history;
pub mod keys;
pub mod location;
pub mod model;
pub mod quarantine;
pub mod read;
pub mod signals;
pub mod state;
pub mod store;
pub mod view;

pub use clock::Clock;
pub use damage::{Damage, DamagedRecord};
pub use deadlines::{BreachNotice, DeadlineSpec, StoredDeadline};
pub use error::ProjectorError;
pub use quarantine::QuarantineRecord;
pub use signals::{SignalNotice, SignalSpec, StoredSignal};
pub use state::SharingState;

pub use fact::Fact;
pub use model::ReadModel;
pub use store::{Acceptance, ApplyOutcome, Identifier, Incoming, Projector, Reapplied};
pub use view::{ChildViews, ViewSpec};
