//! rollgate's API credentials as text: the canonical request that HMAC-SHA256 request
//! signatures cover, the `X-Signature` header, and the `rg_<id>_<secret>` API key form.
//!
//! This is the one definition that the gateway's verifier and `rollgate sign` share, so that
//! what the client signs and what the gateway checks cannot drift apart. It is pure: no clock,
//! no I/O. The user documentation (with Python and openssl versions) is `docs/edge.md`.
//!
//! The canonical request is five lines joined by `\n`, without a trailing newline:
//!
//! ```text
//! METHOD          as sent, e.g. POST
//! PATH            the request path, percent-encoding normalized (see below); "/" if empty
//! QUERY           the query's name=value pairs, each normalized, sorted, joined with '&'
//! TIMESTAMP       the X-Timestamp header: unix seconds, decimal digits
//! BODY_SHA256     lowercase hex SHA-256 of the exact body bytes (of "" when there is none)
//! ```
//!
//! Normalizing a path segment, query name or value: decode every `%XX`, then encode every
//! byte except the unreserved `A-Z a-z 0-9 - . _ ~` as `%XX` with uppercase hex. A literal
//! `+` stays `+` (it means a space to form decoders, while `%2B` means a plus, so the two must
//! not sign alike); a `%` not followed by two hex digits is a literal `%` (`%25`). In the path
//! a literal `/` stays `/` and separates segments (`%2F` stays encoded). A query parameter
//! without `=` counts as `name=`; empty parameters (`&&`) are dropped.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Header carrying an API key, `rg_<id>_<secret>`.
pub const API_KEY_HEADER: &str = "x-api-key";
/// Header carrying a request signature: `keyId=<id>,signature=<64 hex digits>`.
pub const SIGNATURE_HEADER: &str = "x-signature";
/// Header carrying the unix time (seconds) that a signature covers.
pub const TIMESTAMP_HEADER: &str = "x-timestamp";
/// Header the gateway sets on requests it authenticated: the key id. A client's own copy is
/// always removed.
pub const KEY_ID_HEADER: &str = "x-rollgate-key-id";
/// Prefix of every API key.
pub const API_KEY_PREFIX: &str = "rg_";
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// True for a usable key id: 1 to 64 of `A-Z a-z 0-9 -`. No `_`, so that the id of an API
/// key `rg_<id>_<secret>` ends at the first `_` after the prefix.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The API key of key `id` with `secret`: `rg_<id>_<secret>`.
pub fn api_key(id: &str, secret: &str) -> String {
    format!("{API_KEY_PREFIX}{id}_{secret}")
}

/// The key id of an API key, or `None` when the key does not have the `rg_<id>_<secret>`
/// form (with a valid id and a non-empty secret).
pub fn api_key_id(key: &str) -> Option<&str> {
    let (id, secret) = key.strip_prefix(API_KEY_PREFIX)?.split_once('_')?;
    (valid_key_id(id) && !secret.is_empty()).then_some(id)
}

/// SHA-256 of an API key, the form in which keys are stored and compared.
pub fn api_key_sha256(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Lowercase hex SHA-256 of a body.
pub fn body_sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The canonical request (module docs) of one request. `query` is the raw query string
/// without `?`; `timestamp` the `X-Timestamp` value as sent. Built in one string: the gateway
/// makes one for every signed request.
pub fn canonical_request(
    method: &str,
    path: &str,
    query: Option<&str>,
    timestamp: &str,
    body: &[u8],
) -> String {
    let query = query.unwrap_or("");
    let mut out =
        String::with_capacity(method.len() + path.len() + query.len() + timestamp.len() + 64 + 16);
    out.push_str(method);
    out.push('\n');
    push_canonical_path(&mut out, path);
    out.push('\n');
    push_canonical_query(&mut out, query);
    out.push('\n');
    out.push_str(timestamp);
    out.push('\n');
    if body.is_empty() {
        out.push_str(EMPTY_BODY_SHA256);
    } else {
        out.push_str(&body_sha256_hex(body));
    }
    out
}

/// The BODY_SHA256 line of a request without a body: the SHA-256 of no bytes, the same for
/// every GET.
const EMPTY_BODY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The PATH line: each `/`-separated segment normalized; `/` for an empty path.
pub fn canonical_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    push_canonical_path(&mut out, path);
    out
}

fn push_canonical_path(out: &mut String, path: &str) {
    if path.is_empty() {
        out.push('/');
        return;
    }
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        push_normalized(out, segment);
    }
}

/// The QUERY line: pairs normalized, sorted by name then value, joined with `&`.
pub fn canonical_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    push_canonical_query(&mut out, query);
    out
}

fn push_canonical_query(out: &mut String, query: &str) {
    let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (normalized(name), normalized(value))
        })
        .collect();
    pairs.sort();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
}

/// Decodes `%XX`, re-encodes all but unreserved bytes; a literal `+` stays `+`. A part of
/// unreserved bytes alone (most names and values) is its own normal form and is not copied.
fn normalized(part: &str) -> Cow<'_, str> {
    if part.bytes().all(is_unreserved) {
        return Cow::Borrowed(part);
    }
    let mut out = String::with_capacity(part.len());
    push_normalized(&mut out, part);
    Cow::Owned(out)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn push_normalized(out: &mut String, part: &str) {
    let bytes = part.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex_val(h).zip(hex_val(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match escaped {
            Some(decoded) => {
                push_encoded(out, decoded);
                i += 3;
            }
            None => {
                if b == b'+' {
                    out.push('+');
                } else {
                    push_encoded(out, b);
                }
                i += 1;
            }
        }
    }
}

fn hex_val(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn push_encoded(out: &mut String, b: u8) {
    if is_unreserved(b) {
        out.push(char::from(b));
    } else {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        out.push('%');
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// HMAC-SHA256 of the canonical request under `secret` (the secret's bytes as written).
pub fn sign(secret: &[u8], canonical: &str) -> [u8; 32] {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    match HmacSha256::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(canonical.as_bytes());
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; 32],
    }
}

/// True when `signature` is the HMAC-SHA256 of `canonical` under `secret`; compared in
/// constant time.
pub fn verify(secret: &[u8], canonical: &str, signature: &[u8]) -> bool {
    match HmacSha256::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(canonical.as_bytes());
            mac.verify_slice(signature).is_ok()
        }
        Err(_) => false,
    }
}

/// The `X-Signature` value a client sends with `X-Timestamp: <timestamp>`: [`signature_header`]
/// of the HMAC ([`sign`]) under `secret` of the request's [`canonical_request`].
pub fn signature_for(
    key_id: &str,
    secret: &[u8],
    method: &str,
    path: &str,
    query: Option<&str>,
    timestamp: &str,
    body: &[u8],
) -> String {
    let canonical = canonical_request(method, path, query, timestamp, body);
    signature_header(key_id, &sign(secret, &canonical))
}

/// The `X-Signature` value: `keyId=<id>,signature=<lowercase hex>`.
pub fn signature_header(key_id: &str, signature: &[u8; 32]) -> String {
    format!("keyId={key_id},signature={}", hex::encode(signature))
}

/// Parses an `X-Signature` value: exactly the parameters `keyId` (a valid key id) and
/// `signature` (64 hex digits), in any order, separated by `,`, spaces around them ignored.
pub fn parse_signature_header(value: &str) -> Option<(&str, [u8; 32])> {
    let mut key_id = None;
    let mut signature = None;
    for param in value.split(',') {
        let (name, val) = param.trim().split_once('=')?;
        let slot = match name.trim() {
            "keyId" => &mut key_id,
            "signature" => &mut signature,
            _ => return None,
        };
        if slot.replace(val.trim()).is_some() {
            return None;
        }
    }
    let key_id = key_id.filter(|id| valid_key_id(id))?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(signature?, &mut bytes).ok()?;
    Some((key_id, bytes))
}

/// Parses an `X-Timestamp` value: unix seconds, 1 to 12 decimal digits.
pub fn parse_timestamp(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > 12 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_is_borrowed_only_when_it_is_its_own_normal_form() {
        let pieces = [
            "a", "Z", "0", "-", ".", "_", "~", "+", "%41", "%2B", "%zz", "%", " ", "é", "/",
        ];
        // xorshift64, fixed seed: the same parts on every run.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut part = String::new();
            for _ in 0..next() % 6 {
                part.push_str(pieces[(next() % pieces.len() as u64) as usize]);
            }
            let mut slow = String::new();
            push_normalized(&mut slow, &part);
            let fast = normalized(&part);
            assert_eq!(fast, slow, "{part:?}");
            assert_eq!(
                matches!(fast, Cow::Borrowed(_)),
                part.bytes().all(is_unreserved)
            );
        }
    }

    #[test]
    fn the_empty_body_line_is_the_sha256_of_no_bytes() {
        assert_eq!(EMPTY_BODY_SHA256, body_sha256_hex(b""));
    }

    #[test]
    fn the_canonical_request_is_five_lines() {
        let c = canonical_request("POST", "/api/users", Some("b=2&a=1"), "1700000000", b"{}");
        assert_eq!(
            c,
            "POST\n/api/users\na=1&b=2\n1700000000\n\
             44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let empty = canonical_request("GET", "", None, "1", b"");
        assert!(empty.starts_with("GET\n/\n\n1\ne3b0c442"), "{empty}");
    }

    #[test]
    fn percent_encoding_is_normalized() {
        assert_eq!(canonical_path("/a%7eb/c%2fd/%41"), "/a~b/c%2Fd/A");
        assert_eq!(canonical_path("/x y/%zz"), "/x%20y/%25zz");
        assert_eq!(
            canonical_query("q=caf%c3%a9&b=&a&z=1+2&y=1%2B2&a=%3d"),
            "a=&a=%3D&b=&q=caf%C3%A9&y=1%2B2&z=1+2"
        );
        assert_eq!(canonical_query("&&"), "");
        // Equivalent spellings sign alike; a plus and an encoded plus do not.
        assert_eq!(canonical_query("n=%61"), canonical_query("n=a"));
        assert_ne!(canonical_query("n=+"), canonical_query("n=%2B"));
    }

    #[test]
    fn signatures_verify_and_headers_round_trip() {
        let canonical = canonical_request("GET", "/", None, "5", b"");
        let sig = sign(b"s3cret", &canonical);
        assert!(verify(b"s3cret", &canonical, &sig));
        assert!(!verify(b"other", &canonical, &sig));
        assert!(!verify(b"s3cret", &canonical, &sig[..31]));
        let header = signature_header("ci-1", &sig);
        assert_eq!(parse_signature_header(&header), Some(("ci-1", sig)));
        let spaced = format!(" signature={} , keyId=ci-1", hex::encode(sig));
        assert_eq!(parse_signature_header(&spaced), Some(("ci-1", sig)));
        for bad in [
            "keyId=ci",
            "signature=00",
            "keyId=ci,keyId=ci,signature=00",
            "keyId=c_i,signature=0000000000000000000000000000000000000000000000000000000000000000",
            "keyId=ci,signature=0000000000000000000000000000000000000000000000000000000000000000,x=1",
        ] {
            assert_eq!(parse_signature_header(bad), None, "{bad}");
        }
    }

    #[test]
    fn api_keys_name_their_id() {
        let key = api_key("ci", "abc_def");
        assert_eq!(key, "rg_ci_abc_def");
        assert_eq!(api_key_id(&key), Some("ci"));
        assert_eq!(api_key_id("rg_ci_"), None);
        assert_eq!(api_key_id("ci_abc"), None);
        assert_eq!(api_key_id("rg__abc"), None);
        assert_eq!(api_key_sha256(&key), api_key_sha256("rg_ci_abc_def"));
        assert!(valid_key_id("deploy-bot-2") && !valid_key_id("a b"));
    }

    #[test]
    fn timestamps_are_plain_digits() {
        assert_eq!(parse_timestamp("1700000000"), Some(1_700_000_000));
        for bad in ["", "-5", "1.5", " 1", "1234567890123"] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
