//! Read models as plug-ins. A read model is derived from one child's facts whenever they change, in the
//! same sled batch as that child's views (so a crash loses none of it), and announces what changed once the
//! batch is durable. Deadlines (`deadlines.rs`) and signals (`signals.rs`) are read models; the store
//! (`store.rs`) knows them only through this trait. A new model declares its key prefixes in `keys.rs` and its records' decoder in `check.rs`.

use std::any::Any;

use halcyon_schema::ChildId;

use crate::error::ProjectorError;
use crate::fact::Fact;

/// What one derivation has to announce once its batch is written (the model's own notices, type-erased).
pub type Derived = Box<dyn Any + Send>;

/// A read model derived from a child's facts.
pub trait ReadModel: Send + Sync + Any + std::fmt::Debug {
    /// The key prefixes it writes (each declared in `keys.rs`).
    fn prefixes(&self) -> &'static [u8];

    /// Re-derives `child`'s records from all of its facts into `batch`, reading the tree as it stood before
    /// the batch; returns what to announce once the batch is durable.
    fn derive(
        &self,
        tree: &sled::Tree,
        batch: &mut sled::Batch,
        child: &ChildId,
        facts: &[Fact],
    ) -> Result<Derived, ProjectorError>;

    /// Announces the derivations of a batch that is now written (in derivation order).
    fn announce(&self, derived: Vec<Derived>);

    /// For [`crate::Projector::model`].
    fn as_any(&self) -> &dyn Any;
}
