//! The sharing state of a child (pending the policy crate).
