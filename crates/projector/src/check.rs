//! The integrity check of a store: every record under every prefix of `keys.rs` read back with its own
//! decoder, whichever read models the store was opened with (a rebuild or an export counts the damage of
//! read models it does not derive). A new read model adds its records' decoder here.

use prost::Message;

use crate::deadlines::{ChildDeadlines, StoredDeadline};
use crate::error::ProjectorError;
use crate::keys;
use crate::quarantine::QuarantineRecord;
use crate::signals::ChildSignals;
use crate::store::{Projector, decode_fact, reason_of};
use crate::view::ChildViews;

impl Projector {
    /// Reads every record of the read models, setting aside (and counting) those that cannot be read:
    /// an integrity check for operators and exports.
    pub fn check_records(&self) -> Result<usize, ProjectorError> {
        for kv in self.model.iter() {
            let (k, v) = kv?;
            let text = |e: prost::DecodeError| e.to_string();
            let readable = match k.first().copied() {
                Some(keys::FACT) => decode_fact(&k, &v).map(drop).map_err(reason_of),
                Some(keys::VIEWS) => ChildViews::decode(v.as_ref()).map(drop).map_err(text),
                Some(keys::QUARANTINE) => serde_json::from_slice::<QuarantineRecord>(&v)
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Some(keys::DEADLINES) => ChildDeadlines::decode(v.as_ref()).map(drop).map_err(text),
                Some(keys::BREACHES) => StoredDeadline::decode(v.as_ref()).map(drop).map_err(text),
                Some(keys::SIGNALS) => ChildSignals::decode(v.as_ref()).map(drop).map_err(text),
                _ => Ok(()),
            };
            if let Err(reason) = readable {
                self.damage.set_aside(&k, reason);
            }
        }
        Ok(self.damage.len())
    }
}
