//! Read models as plug-ins. A read model is derived from one child's facts whenever they change: the
//! store reads each changed child's facts once and derives every registered model from them on both cores
//! (a derivation only reads the tree), then writes all the derivations of a chunk of children in one sled
//! batch (so a crash loses none of it), and each model announces what changed once the batch is durable.
//! Views (`view.rs`), deadlines (`deadlines.rs`) and signals (`signals.rs`) are read models; the store
//! (`store.rs`) knows them only through this trait. A new model declares its key prefixes in `keys.rs` and its records' decoder in `check.rs`.

use std::any::Any;

use halcyon_schema::ChildId;

use crate::error::ProjectorError;
use crate::fact::Fact;

/// What one derivation has to announce once its batch is written (the model's own notices, type-erased).
pub type Derived = Box<dyn Any + Send>;

/// The writes of one derivation, in order: added to the store's batch once a chunk of children is derived.
#[derive(Debug, Default)]
pub struct Writes(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Writes {
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.0.push((key.into(), Some(value.into())));
    }

    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.0.push((key.into(), None));
    }

    /// Adds the writes to `batch`, in order.
    pub fn apply_to(self, batch: &mut sled::Batch) {
        for (key, value) in self.0 {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
    }
}

/// A read model derived from a child's facts.
pub trait ReadModel: Send + Sync + Any + std::fmt::Debug {
    /// The key prefixes it writes (each declared in `keys.rs`).
    fn prefixes(&self) -> &'static [u8];

    /// Re-derives `child`'s records from all of its facts into `writes`, reading the tree as it stood before
    /// the batch (and nothing else: derivations of several children run at once); returns what to announce
    /// once the batch is durable.
    fn derive(
        &self,
        tree: &sled::Tree,
        writes: &mut Writes,
        child: &ChildId,
        facts: &[Fact],
    ) -> Result<Derived, ProjectorError>;

    /// Announces the derivations of a batch that is now written (in derivation order).
    fn announce(&self, derived: Vec<Derived>);

    /// For [`crate::Projector::model`].
    fn as_any(&self) -> &dyn Any;
}
