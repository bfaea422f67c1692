//! What S3's error answers mean: a region redirect, a status without a code, an object S3
//! will not serve as things stand, and the whole chain of an SDK error for messages.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;

use crate::error::{ErrorKind, kind_from_http_status};

/// Why S3 cannot serve an object, said as what to do, for the answers that mean it never
/// will as things stand: an archived object not restored, an object encrypted with a customer
/// key (SSE-C) we were not given.
pub(super) fn unservable(code: &str, message: &str) -> Option<&'static str> {
    match code {
        "InvalidObjectState" => Some(
            "the object is archived (S3 Glacier Flexible Retrieval or Deep Archive) and not \
             restored: restore it first (aws s3api restore-object), then copy it",
        ),
        "InvalidRequest" if message.contains("Server Side Encryption") => Some(
            "the object is encrypted with a customer-provided key (SSE-C), which skyx cannot \
             supply: copy it with a tool given the key",
        ),
        _ => None,
    }
}

/// The region S3 says the bucket is in, when it refused a request for being signed for another
/// (301 PermanentRedirect, 307 TemporaryRedirect, 400 AuthorizationHeaderMalformed, all with
/// `x-amz-bucket-region`).
pub(super) fn redirect_region<E>(e: &SdkError<E, HttpResponse>) -> Option<String> {
    let response = e.raw_response()?;
    if !matches!(response.status().as_u16(), 301 | 307 | 400) {
        return None;
    }
    response
        .headers()
        .get("x-amz-bucket-region")
        .map(str::to_string)
}

pub(super) fn status_kind<E>(e: &SdkError<E, HttpResponse>) -> Option<ErrorKind> {
    e.raw_response()
        .map(|r| kind_from_http_status(r.status().as_u16()))
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
