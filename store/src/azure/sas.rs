//! Account SAS tokens signed from an account key (what the store uses to hand a copy source a
//! readable URL, and what tests and benchmarks sign their own access with).

use std::time::SystemTime;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Signs an account SAS (blob service; service, container and object resources; read, write,
/// delete, list, add, create, update, process) valid until `expiry`, per the Azure Storage
/// "Create an account SAS" rules for signed version 2020-12-06 and later.
pub fn account_sas(
    account: &str,
    key_base64: &str,
    expiry: SystemTime,
) -> std::result::Result<String, String> {
    const VERSION: &str = "2022-11-02";
    const PERMISSIONS: &str = "rwdlacup";
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_base64.trim())
        .map_err(|e| format!("the account key is not base64: {e}"))?;
    let expiry = time::OffsetDateTime::from(expiry)
        .replace_nanosecond(0)
        .map_err(|e| e.to_string())?
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())?;
    let to_sign =
        format!("{account}\n{PERMISSIONS}\nb\nsco\n\n{expiry}\n\nhttps,http\n{VERSION}\n\n");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string();
    Ok(format!(
        "sv={VERSION}&ss=b&srt=sco&sp={PERMISSIONS}&se={}&spr=https,http&sig={}",
        enc(&expiry),
        enc(&sig)
    ))
}

/// Characters escaped in a query value: all but RFC 3986's unreserved ones.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
