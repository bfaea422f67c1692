//! What every write request carries: an object's properties (`with_properties!`) and the
//! store's storage class and encryption (`with_write_options!`), for puts, multipart creates
//! and copies alike (the SDK's builders share the setters, not a trait).

/// Sets an object's properties on a PutObject or CreateMultipartUpload request (the two
/// builders share the setters, not a trait). Expires is sent when it is an HTTP date.
macro_rules! with_properties {
    ($request:expr, $properties:expr) => {{
        let p: &Properties = $properties;
        let metadata = p.ascii_metadata();
        $request
            .set_content_type(p.content_type.clone())
            .set_content_encoding(p.content_encoding.clone())
            .set_content_language(p.content_language.clone())
            .set_content_disposition(p.content_disposition.clone())
            .set_cache_control(p.cache_control.clone())
            .set_expires(p.expires.as_deref().and_then(|e| {
                aws_sdk_s3::primitives::DateTime::from_str(
                    e,
                    aws_sdk_s3::primitives::DateTimeFormat::HttpDate,
                )
                .ok()
            }))
            .set_metadata((!metadata.is_empty()).then(|| metadata.into_iter().collect()))
    }};
}

/// Sets the store's storage class and server-side encryption on a put, a multipart create or
/// a copy request.
macro_rules! with_write_options {
    ($request:expr, $write:expr) => {{
        let w: &crate::WriteOptions = $write;
        let (sse, key) = match &w.encryption {
            Some(crate::Encryption::S3Managed) => {
                (Some(aws_sdk_s3::types::ServerSideEncryption::Aes256), None)
            }
            Some(crate::Encryption::Kms { key }) => (
                Some(aws_sdk_s3::types::ServerSideEncryption::AwsKms),
                key.clone(),
            ),
            _ => (None, None),
        };
        $request
            .set_storage_class(
                w.storage_class
                    .as_deref()
                    .map(aws_sdk_s3::types::StorageClass::from),
            )
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(key)
    }};
}
