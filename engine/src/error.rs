//! Typed errors. Library code never flattens an error into a string: the
//! binary maps [`ErrorKind`] to an exit code and a report for a person.

use crate::spec::SpecError;

/// A boxed error from a driver or library, kept so callers can inspect it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whose fault an error is; the CLI turns this into its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The job spec or command line is invalid (exit code 2).
    Spec,
    /// The input data is bad: a malformed row under `policy = "fail"`, or
    /// more dirty rows than the error limit allows (exit code 3).
    Data,
    /// A storage system or service failed or could not be reached (exit 4).
    Io,
    /// The run was interrupted on request; its state is resumable (exit 5).
    Cancelled,
    /// A bug in tidex (exit code 1).
    Internal,
}

/// Where in the input a data error was found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    /// File or object the row came from.
    pub file: String,
    /// 1-based row number within the file, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// Byte offset of the record within the file, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub byte_offset: Option<u64>,
    /// Column name, when the fault is in one column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(row) = self.row {
            write!(f, ", row {row}")?;
        }
        if let Some(off) = self.byte_offset {
            write!(f, ", byte offset {off}")?;
        }
        if let Some(col) = &self.column {
            write!(f, ", column `{col}`")?;
        }
        Ok(())
    }
}

/// Every failure the engine reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Invalid arguments or configuration found after the spec parsed
    /// (a URL that names no file, a schema that does not fit the data…).
    #[error("{0}")]
    Config(String),
    /// A row or file could not be read as declared.
    #[error("{location}: {reason}")]
    BadData {
        /// Where.
        location: Location,
        /// What is wrong with it.
        reason: String,
    },
    /// The run rejected more rows than the error limit allows.
    #[error(
        "error limit exceeded: {dirty} dirty rows ({limit}); rejected rows are in {dead_letter}"
    )]
    ErrorLimit {
        /// Rows rejected so far.
        dirty: u64,
        /// The limit, as the spec states it.
        limit: String,
        /// Where the rejected rows were written.
        dead_letter: String,
    },
    /// Reading or writing storage failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file or service.
        context: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The state store failed.
    #[error("state store {path}: {source}")]
    State {
        /// Path of the state database.
        path: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The run was cancelled; committed partitions stay committed.
    #[error("run cancelled")]
    Cancelled,
    /// A bug: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whose fault the error is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Spec(_) | Error::Config(_) => ErrorKind::Spec,
            Error::BadData { .. } | Error::ErrorLimit { .. } => ErrorKind::Data,
            Error::Io { .. } | Error::State { .. } => ErrorKind::Io,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Wraps a storage or driver error with what was being done.
    pub fn io(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    /// A data error at `location`.
    pub fn bad_data(location: Location, reason: impl Into<String>) -> Self {
        Error::BadData {
            location,
            reason: reason.into(),
        }
    }
}
