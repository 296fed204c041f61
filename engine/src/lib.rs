//! tidex-engine: the core every connector and stage plugs into.
//!
//! It owns the job spec ([`spec`]), the Source/Sink traits connectors
//! implement ([`connector`]), the streaming runtime with its work-stealing
//! partition pool ([`runtime`]), dirty-row handling ([`dirty`]) and the
//! embedded state store that makes runs resumable ([`state`]). It contains
//! no driver code: connectors live in `tidex-connectors`.

#![warn(missing_docs)]

pub mod connector;
pub mod dirty;
pub mod error;
pub mod runtime;
pub mod scheduler;
pub mod spec;
pub mod stage;
pub mod stages;
pub mod state;

pub use connector::{
    BuildContext, CommittedPart, ConnectorConfig, PartitionInfo, PartitionWriter, PublishJournal,
    Registry, RunInfo, Sink, SinkFactory, Source, SourceFactory, SourceReader, SourceState,
    Splitter,
};
pub use error::{Error, ErrorKind, Result};
pub use spec::{JobSpec, SpecError};
