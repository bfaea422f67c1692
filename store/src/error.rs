//! Store errors say which store, which operation, which key, what kind of failure, and whether a
//! retry can help, so retry decisions are made from data.

use std::fmt;

/// What went wrong, as far as a caller needs to decide what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object does not exist.
    NotFound,
    /// The bucket / container does not exist.
    BucketNotFound,
    /// Credentials missing, wrong, or lacking permission.
    PermissionDenied,
    /// The store asked us to slow down (S3 503 SlowDown, HTTP 429, Azure ServerBusy).
    Throttled,
    /// A network failure or 5xx that may not happen again.
    Transient,
    /// The request was malformed (bad URL, bad range, bad part order).
    InvalidInput,
    /// The object is no longer the version asked for (a conditional request's precondition
    /// failed, HTTP 412): it changed since it was listed.
    Changed,
    /// One entry of a listing that cannot be served (a dangling or looping symbolic link, a
    /// file that cannot be read, a FIFO); the listing goes on past it.
    Unreadable,
    /// Anything else the store reported.
    Other,
}

impl ErrorKind {
    /// Whether repeating the same request may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Throttled | ErrorKind::Transient)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::BucketNotFound => "bucket or container not found",
            ErrorKind::PermissionDenied => "permission denied (check credentials)",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Transient => "transient failure",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Changed => "changed since it was listed",
            ErrorKind::Unreadable => "skipped",
            ErrorKind::Other => "error",
        })
    }
}

/// An error from an object store operation.
#[derive(Debug, thiserror::Error)]
#[error("{store}: {op} '{key}': {kind}: {message}")]
pub struct StoreError {
    pub kind: ErrorKind,
    /// The store, e.g. `s3://bucket` or `file:///data`.
    pub store: String,
    /// The operation: list, head, get, put, create_multipart, ...
    pub op: &'static str,
    pub key: String,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    pub fn new(
        kind: ErrorKind,
        store: impl Into<String>,
        op: &'static str,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        StoreError {
            kind,
            store: store.into(),
            op,
            key: key.into(),
            message: message.into(),
            source: None,
        }
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

/// Maps an HTTP status from any cloud to a kind. `404` is ambiguous (object or bucket); the
/// backends refine it from the error code the store returns.
pub fn kind_from_http_status(status: u16) -> ErrorKind {
    match status {
        400 | 405 | 411 | 413 | 414 | 416 => ErrorKind::InvalidInput,
        401 | 403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        412 => ErrorKind::Changed,
        408 | 500 | 502 | 504 => ErrorKind::Transient,
        429 | 503 => ErrorKind::Throttled,
        _ => ErrorKind::Other,
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
