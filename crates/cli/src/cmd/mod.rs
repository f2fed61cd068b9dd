//! One module per subcommand.

pub mod audit;
pub mod backup;
pub mod child;
pub mod common;
pub mod deadlines;
pub mod nodes;
pub mod notifications;
pub mod operator_read;
pub mod policy;
pub mod publish;
pub mod quality;
pub mod quarantine;
pub mod reapply;
pub mod rebuild;
pub mod replay;
pub mod serve;
pub mod signals;
pub mod streams;
