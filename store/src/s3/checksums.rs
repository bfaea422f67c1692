//! What an S3 object's ETag and stored checksums say about its content, and only that.

use base64::Engine;

/// The content MD5 an ETag is, when S3 guarantees it is one: a single-part object stored
/// without SSE-KMS, DSSE-KMS or SSE-C (`encryption` and `customer_key` as a HEAD reports
/// them). A listing does not say how an object is encrypted, so it never yields an MD5.
pub(super) fn md5_from_etag(
    etag: &str,
    encryption: Option<&str>,
    customer_key: bool,
) -> Option<[u8; 16]> {
    if customer_key || !matches!(encryption, None | Some("AES256")) {
        return None;
    }
    // Multipart ETags carry a `-N` suffix, and so are no 32 hex digits.
    let mut out = [0u8; 16];
    hex::decode_to_slice(etag, &mut out).ok().map(|_| out)
}

/// A stored full-object CRC32C (`x-amz-checksum-crc32c`, base64 of the big-endian value); a
/// composite one (of parts, `...-N`) is not the object's.
pub(super) fn crc32c_from_checksum(value: Option<&str>, kind: Option<&str>) -> Option<u32> {
    if !matches!(kind, None | Some("FULL_OBJECT")) {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value?)
        .ok()?;
    <[u8; 4]>::try_from(bytes.as_slice())
        .ok()
        .map(u32::from_be_bytes)
}

/// The header value of a CRC32C checksum of `data`.
pub(super) fn crc32c_header(data: &[u8]) -> String {
    crc32c_value(crc32c::crc32c(data))
}

/// A CRC32C as S3 writes it: base64 of the big-endian value.
pub(super) fn crc32c_value(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_etag_is_an_md5_only_where_s3_guarantees_it() {
        let etag = "5d41402abc4b2a76b9719d911017c592";
        assert!(md5_from_etag(etag, None, false).is_some());
        assert!(md5_from_etag(etag, Some("AES256"), false).is_some());
        assert_eq!(md5_from_etag(etag, Some("aws:kms"), false), None);
        assert_eq!(md5_from_etag(etag, Some("aws:kms:dsse"), false), None);
        assert_eq!(md5_from_etag(etag, None, true), None, "SSE-C");
        assert_eq!(
            md5_from_etag("5d41402abc4b2a76b9719d911017c592-3", None, false),
            None
        );
    }

    #[test]
    fn full_object_crc32c_checksums_are_read_and_composite_ones_are_not() {
        let header = crc32c_header(b"hello");
        assert_eq!(
            crc32c_from_checksum(Some(&header), None),
            Some(crc32c::crc32c(b"hello"))
        );
        assert_eq!(
            crc32c_from_checksum(Some(&header), Some("FULL_OBJECT")),
            Some(crc32c::crc32c(b"hello"))
        );
        assert_eq!(crc32c_from_checksum(Some(&header), Some("COMPOSITE")), None);
        assert_eq!(crc32c_from_checksum(Some("bm90IGEgY3Jj"), None), None);
        assert_eq!(crc32c_from_checksum(None, None), None);
    }
}
