//! Reconstruction for case reviews, from the streams themselves: read models rebuilt from the agency
//! streams (`rebuild`), what each agency could see of a child at a given time (`as_of`), and who asked
//! about a child and what they were given (`access_trail`), and the multi-agency chronology of a child —
//! who could see what, from when (`chronology`). Operators' and auditors' tools; a serving node
//! does not need any of it.
#![forbid(unsafe_code)]

pub mod access_trail;
pub mod as_of;
pub mod chronology;
pub mod rebuild;
pub mod replay;
