//! The sharing policy (being written).
