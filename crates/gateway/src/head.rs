//! A client's request head as the gateway reads it: the bytes of the request line and header
//! fields as they came off the socket, and where each part sits in them.
//!
//! The phases look fields up by name and the proxy phase copies them to the instance; neither
//! needs a header map. Building one (hashing every name, one shared value per field) was a
//! large part of the gateway's own cost per request, so the head is parsed once with
//! `httparse` into ranges over its bytes, names lower-cased in place, and read from there.
//! A request has a few dozen fields at most, so a lookup is a scan.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::{Method, Version};

/// Field slots parsed without allocating; a connection allowed more uses the heap.
const STACK_FIELDS: usize = 256;

/// A request head, parsed.
#[derive(Debug)]
pub(crate) struct RequestHead {
    /// The head as received (field values are read from here).
    bytes: Bytes,
    /// The request target followed by every field name, checked as text once: the phases ask
    /// for names, the path and the query as `&str` many times per request.
    text: String,
    method: Method,
    version: Version,
    /// The path and query in the target (at the start of `text`): all of it in origin form,
    /// the part after the authority in absolute form (`http://host/path?query`).
    path_and_query: Range<usize>,
    /// Where the query starts (after its `?`), if there is one.
    query: Option<usize>,
    /// The authority of an absolute-form target.
    authority: Option<Range<usize>>,
    fields: Vec<Field>,
    /// How the request body is framed.
    pub(crate) body: BodyFraming,
    /// The client asked to keep the connection open after this request (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for an interim answer before its body.
    pub(crate) expect_continue: bool,
    /// An HTTP/1.1 request with `Upgrade` that `Connection` names (a WebSocket handshake).
    pub(crate) upgrade: bool,
}

#[derive(Debug, Clone)]
struct Field {
    /// In `text`.
    name: Range<usize>,
    /// In `bytes`.
    value: Range<usize>,
}

/// How the end of a request body is known (RFC 9112, section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// `Content-Length`; no field (or zero) means no body.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Why a request head was refused before any phase ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    /// Not HTTP/1.x as RFC 9112 allows it, or framed ambiguously (a request smuggling
    /// attempt looks like this); answered 400.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// More fields than the connection allows; answered 431.
    #[error("too many header fields")]
    TooManyFields,
    /// No complete head within the bytes the connection buffers; answered 431.
    #[error("request head too large")]
    TooLarge,
}

impl RequestHead {
    /// Parses a complete head off the front of `buf` (and takes it off), or returns `None`
    /// when more bytes are needed. At most `max_fields` fields are accepted.
    pub(crate) fn parse(
        buf: &mut BytesMut,
        max_fields: usize,
    ) -> Result<Option<RequestHead>, HeadError> {
        let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_FIELDS];
        let mut heap = Vec::new();
        let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if max_fields <= STACK_FIELDS {
            &mut stack[..max_fields]
        } else {
            heap.resize_with(max_fields, MaybeUninit::uninit);
            &mut heap
        };
        let mut parsed = httparse::Request::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut parsed,
            buf,
            slots,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
            Err(_) => return Err(HeadError::Malformed("request line or header field")),
        };
        let base = buf.as_ptr() as usize;
        let at = |part: &[u8]| place(base, part);
        let method = parsed
            .method
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .ok_or(HeadError::Malformed("method"))?;
        let version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        let target = parsed
            .path
            .map(|p| at(p.as_bytes()))
            .ok_or(HeadError::Malformed("request target"))?;
        let names: usize = parsed.headers.iter().map(|h| h.name.len()).sum();
        let mut text = Vec::with_capacity(target.len() + names);
        text.extend_from_slice(&buf[target.clone()]);
        let fields: Vec<Field> = parsed
            .headers
            .iter()
            .map(|h| {
                let start = text.len();
                text.extend_from_slice(h.name.as_bytes());
                text[start..].make_ascii_lowercase();
                Field {
                    name: start..text.len(),
                    value: at(h.value),
                }
            })
            .collect();
        let bytes = buf.split_to(len).freeze();
        let (path_and_query, authority) = split_target(&text[..target.len()], &method)?;
        // The target was checked to be visible ASCII and names are tokens: this cannot fail.
        let text = String::from_utf8(text).map_err(|_| HeadError::Malformed("field name"))?;
        let query = text[path_and_query.clone()]
            .find('?')
            .map(|i| path_and_query.start + i + 1);
        let mut head = RequestHead {
            bytes,
            text,
            method,
            version,
            path_and_query,
            query,
            authority,
            fields,
            body: BodyFraming::Length(0),
            keep_alive: version == Version::HTTP_11,
            expect_continue: false,
            upgrade: false,
        };
        head.read_connection_fields()?;
        Ok(Some(head))
    }

    /// Framing, keep-alive and `Expect` from the fields, refusing what RFC 9112 says a server
    /// must not guess at: a body framed by both `Transfer-Encoding` and `Content-Length`,
    /// conflicting or malformed lengths, a transfer coding other than chunked last.
    fn read_connection_fields(&mut self) -> Result<(), HeadError> {
        let mut chunked = None;
        let mut length: Option<u64> = None;
        let (mut connection_upgrade, mut upgrade_field) = (false, false);
        let mut hosts = 0;
        for field in &self.fields {
            let value = &self.bytes[field.value.clone()];
            match self.text[field.name.clone()].as_bytes() {
                b"connection" => {
                    for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                        if token.eq_ignore_ascii_case(b"close") {
                            self.keep_alive = false;
                        } else if token.eq_ignore_ascii_case(b"upgrade") {
                            connection_upgrade = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive")
                            && self.version == Version::HTTP_10
                        {
                            self.keep_alive = true;
                        }
                    }
                }
                b"transfer-encoding" => {
                    if self.version == Version::HTTP_10 {
                        return Err(HeadError::Malformed("Transfer-Encoding in HTTP/1.0"));
                    }
                    chunked = Some(chunked_last(value));
                }
                b"content-length" => {
                    content_length(value, &mut length).map_err(|err| match err {
                        LengthError::Malformed => HeadError::Malformed("Content-Length"),
                        LengthError::Conflicting => {
                            HeadError::Malformed("conflicting Content-Length")
                        }
                    })?;
                }
                b"upgrade" => upgrade_field = !value.trim_ascii().is_empty(),
                // Routing reads the first, an app may read the last (RFC 9112 §3.2).
                b"host" => {
                    hosts += 1;
                    if hosts > 1 {
                        return Err(HeadError::Malformed("more than one Host"));
                    }
                }
                b"expect" => {
                    self.expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue")
                        && self.version == Version::HTTP_11;
                }
                _ => {}
            }
        }
        self.upgrade = connection_upgrade && upgrade_field && self.version == Version::HTTP_11;
        self.body = match (chunked, length) {
            (Some(_), Some(_)) => {
                return Err(HeadError::Malformed(
                    "both Transfer-Encoding and Content-Length",
                ));
            }
            (Some(true), None) => BodyFraming::Chunked,
            (Some(false), None) => {
                return Err(HeadError::Malformed("transfer coding other than chunked"));
            }
            (None, length) => BodyFraming::Length(length.unwrap_or(0)),
        };
        Ok(())
    }

    pub(crate) fn method(&self) -> &Method {
        &self.method
    }

    pub(crate) fn version(&self) -> Version {
        self.version
    }

    /// The path, without the query (`/` for an absolute-form target with none).
    pub(crate) fn path(&self) -> &str {
        let end = self.query.map_or(self.path_and_query.end, |q| q - 1);
        match self.text(self.path_and_query.start..end) {
            "" => "/",
            path => path,
        }
    }

    /// The query, without its `?`; `Some("")` for a bare `?`.
    pub(crate) fn query(&self) -> Option<&str> {
        self.query.map(|q| self.text(q..self.path_and_query.end))
    }

    /// The target in origin form, as the instance gets it: `/path?query`.
    pub(crate) fn path_and_query(&self) -> Cow<'_, str> {
        let pq = self.text(self.path_and_query.clone());
        if pq.starts_with('/') || pq == "*" {
            Cow::Borrowed(pq)
        } else {
            Cow::Owned(format!("/{pq}"))
        }
    }

    /// The host of an absolute-form target (`http://host:port/...`), without the port.
    pub(crate) fn target_host(&self) -> Option<&str> {
        let authority = self.text(self.authority.clone()?);
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        Some(match host.strip_prefix('[') {
            Some(v6) => v6.split_once(']').map_or(v6, |(ip, _)| ip),
            None => host.split_once(':').map_or(host, |(h, _)| h),
        })
    }

    /// The bytes of the request line and header fields as received.
    pub(crate) fn wire_len(&self) -> usize {
        self.bytes.len()
    }

    /// Header fields received.
    pub(crate) fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// Every field as (lower-case name, value), in the order received.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields
            .iter()
            .map(|f| (&self.text[f.name.clone()], &self.bytes[f.value.clone()]))
    }

    /// The values of the fields named `name` (lower case), in order.
    pub(crate) fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |f| &self.text[f.name.clone()] == name)
            .map(|f| &self.bytes[f.value.clone()])
    }

    /// The first field named `name` (lower case).
    pub(crate) fn first<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.values(name).next()
    }

    /// The first field named `name` as text: visible ASCII, spaces and tabs only (what
    /// `HeaderValue::to_str` accepts); `None` when absent or not text.
    pub(crate) fn first_text<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.first(name).and_then(field_text)
    }

    /// A part of the target.
    fn text(&self, range: Range<usize>) -> &str {
        &self.text[range]
    }
}

/// Where `part`, a slice httparse gave out of the buffer starting at address `base`, sits in
/// that buffer. An empty slice may not point into it, and needs no place.
pub(crate) fn place(base: usize, part: &[u8]) -> Range<usize> {
    if part.is_empty() {
        return 0..0;
    }
    let start = part.as_ptr() as usize - base;
    start..start + part.len()
}

/// The fields of a message that describe one connection rather than the message (RFC 9110,
/// section 7.6.1), which a proxy does not pass on: `Connection` and every field it names,
/// `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
pub(crate) struct HopByHop<'a> {
    /// The names the message's `Connection` fields list.
    named: Vec<&'a [u8]>,
    /// `Upgrade` is passed on: the message is a protocol upgrade (a WebSocket handshake or
    /// its `101`), the one hop-by-hop exchange the other side must see as such.
    upgrade: bool,
}

impl<'a> HopByHop<'a> {
    /// From the values of the message's `Connection` fields.
    pub(crate) fn new(connection: impl Iterator<Item = &'a [u8]>) -> Self {
        HopByHop {
            named: connection
                .flat_map(|v| v.split(|b| *b == b','))
                .map(<[u8]>::trim_ascii)
                .filter(|token| !token.is_empty())
                .collect(),
            upgrade: false,
        }
    }

    /// Passes `Upgrade` on when `upgrade` is true: for a protocol upgrade (a WebSocket
    /// handshake, or the instance's `101` to it).
    pub(crate) fn passing_upgrade(mut self, upgrade: bool) -> Self {
        self.upgrade = upgrade;
        self
    }

    /// True when the field `name` (lower case) is not passed on.
    pub(crate) fn drops(&self, name: &[u8]) -> bool {
        if self.upgrade && name == b"upgrade" {
            return false;
        }
        matches!(
            name,
            b"connection" | b"keep-alive" | b"te" | b"trailer" | b"transfer-encoding" | b"upgrade"
        ) || name.starts_with(b"proxy-")
            || self.named.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// A field value as text, when it is visible ASCII, spaces and tabs.
pub(crate) fn field_text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Why a `Content-Length` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LengthError {
    /// Not a list of plain decimal numbers.
    Malformed,
    /// A number other than one already given (in this field or an earlier one).
    Conflicting,
}

/// Reads one `Content-Length` value, a comma-separated list of equal numbers (RFC 9110
/// §8.6), into `length`, which holds what the message's earlier fields said. Requests and the
/// instances' responses are framed by the same rule.
pub(crate) fn content_length(value: &[u8], length: &mut Option<u64>) -> Result<(), LengthError> {
    for part in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
        let n = parse_decimal(part).ok_or(LengthError::Malformed)?;
        if length.is_some_and(|l| l != n) {
            return Err(LengthError::Conflicting);
        }
        *length = Some(n);
    }
    Ok(())
}

/// True when the last coding of a `Transfer-Encoding` value is chunked: only then does
/// chunked framing end the body.
pub(crate) fn chunked_last(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A non-empty run of ASCII digits as a number.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Splits the request target into the path-and-query to forward and, for an absolute-form
/// target, its authority. Only origin form (`/path`), absolute form (`http://host/path`) and
/// `*` (for OPTIONS) are served; every byte must be visible ASCII.
fn split_target(
    target: &[u8],
    method: &Method,
) -> Result<(Range<usize>, Option<Range<usize>>), HeadError> {
    let whole = 0..target.len();
    if !target.iter().all(|b| (0x21..0x7f).contains(b)) {
        return Err(HeadError::Malformed("request target"));
    }
    if target.first() == Some(&b'/') || (target == b"*" && *method == Method::OPTIONS) {
        return Ok((whole, None));
    }
    let scheme = ["http://", "https://"]
        .iter()
        .find(|s| target.len() >= s.len() && target[..s.len()].eq_ignore_ascii_case(s.as_bytes()))
        .ok_or(HeadError::Malformed("request target"))?;
    let start = scheme.len();
    let end = target[start..]
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .map_or(target.len(), |i| start + i);
    if end == start {
        return Err(HeadError::Malformed("request target"));
    }
    Ok((end..target.len(), Some(start..end)))
}

#[cfg(test)]
pub(crate) fn parse_for_test(head: &str) -> RequestHead {
    let mut buf = BytesMut::from(head.as_bytes());
    RequestHead::parse(&mut buf, 100)
        .expect("valid head")
        .expect("complete head")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Result<Option<RequestHead>, HeadError> {
        RequestHead::parse(&mut BytesMut::from(head.as_bytes()), 100)
    }

    #[test]
    fn an_origin_form_head_is_read_in_place() {
        let mut buf = BytesMut::from(
            "POST /api/users?id=4&x HTTP/1.1\r\nHost: api\r\nX-Forwarded-For: 1.2.3.4\r\nCookie: a=1\r\nx-forwarded-for: 5.6.7.8\r\ncontent-length: 3\r\n\r\nabcGET",
        );
        let head = RequestHead::parse(&mut buf, 100).unwrap().unwrap();
        assert_eq!(&buf[..], b"abcGET", "only the head is taken");
        assert_eq!(head.method(), Method::POST);
        assert_eq!(head.path(), "/api/users");
        assert_eq!(head.query(), Some("id=4&x"));
        assert_eq!(head.path_and_query(), "/api/users?id=4&x");
        assert_eq!(head.first_text("host"), Some("api"));
        let xff: Vec<&[u8]> = head.values("x-forwarded-for").collect();
        assert_eq!(xff, [&b"1.2.3.4"[..], b"5.6.7.8"]);
        assert_eq!(head.field_count(), 5);
        assert_eq!(head.body, BodyFraming::Length(3));
        assert!(head.keep_alive);
        let names: Vec<&str> = head.fields().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "host",
                "x-forwarded-for",
                "cookie",
                "x-forwarded-for",
                "content-length"
            ]
        );
    }

    #[test]
    fn empty_values_and_an_empty_query_are_read() {
        let head = parse_for_test("GET /a? HTTP/1.1\r\nx-empty:\r\nx-spaces:   \r\nx-b: 1\r\n\r\n");
        assert_eq!(head.first("x-empty"), Some(&b""[..]));
        assert_eq!(head.first("x-spaces"), Some(&b""[..]));
        assert_eq!(head.first("x-b"), Some(&b"1"[..]));
        assert_eq!(head.query(), Some(""));
        assert_eq!(head.path(), "/a");
    }

    #[test]
    fn a_partial_head_asks_for_more() {
        let mut buf = BytesMut::from("GET / HTTP/1.1\r\nhost: a\r\n");
        assert!(RequestHead::parse(&mut buf, 100).unwrap().is_none());
        assert_eq!(buf.len(), 25, "nothing taken");
    }

    #[test]
    fn absolute_form_and_asterisk_targets() {
        let head = parse("GET http://Example.com:8080/a/b?q=1 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.path(), "/a/b");
        assert_eq!(head.query(), Some("q=1"));
        assert_eq!(head.target_host(), Some("Example.com"));
        let head = parse("GET https://[::1]:8443?x HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.path(), "/");
        assert_eq!(head.path_and_query(), "/?x");
        assert_eq!(head.target_host(), Some("::1"));
        let head = parse("OPTIONS * HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.path_and_query(), "*");
        for bad in [
            "GET * HTTP/1.1\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            "GET ftp://x/ HTTP/1.1\r\n\r\n",
            "GET http:/// HTTP/1.1\r\n\r\n",
            "GET /caf\u{e9} HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(parse(bad), Err(HeadError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for bad in [
            "POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: 3, 4\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: -3\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: \r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nfolded: a\r\n b\r\n\r\n",
            "POST / HTTP/1.1\r\nbad name: a\r\n\r\n",
            "POST / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\nHost: b\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(HeadError::Malformed(_))),
                "{bad:?}"
            );
        }
        let same = parse("POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 3, 3\r\n\r\n");
        assert_eq!(same.unwrap().unwrap().body, BodyFraming::Length(3));
        let chunked = parse("POST / HTTP/1.1\r\ntransfer-encoding: gzip, Chunked\r\n\r\n");
        assert_eq!(chunked.unwrap().unwrap().body, BodyFraming::Chunked);
    }

    #[test]
    fn keep_alive_and_expect_follow_the_version() {
        let head = |s: &str| parse(s).unwrap().unwrap();
        assert!(head("GET / HTTP/1.1\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nconnection: upgrade, Close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").keep_alive);
        assert!(head("PUT / HTTP/1.1\r\nexpect: 100-Continue\r\n\r\n").expect_continue);
        let upgrade =
            "GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        assert!(head(upgrade).upgrade);
        assert!(!head("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").upgrade);
        assert!(!head("GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n").upgrade);
        assert!(
            !head("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade
        );
        assert!(!head("PUT / HTTP/1.0\r\nexpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn too_many_fields_is_its_own_error() {
        let mut head = "GET / HTTP/1.1\r\n".to_owned();
        for i in 0..11 {
            head.push_str(&format!("x-{i}: 1\r\n"));
        }
        head.push_str("\r\n");
        let mut buf = BytesMut::from(head.as_bytes());
        assert_eq!(
            RequestHead::parse(&mut buf, 10).unwrap_err(),
            HeadError::TooManyFields
        );
        let mut buf = BytesMut::from(head.as_bytes());
        assert!(RequestHead::parse(&mut buf, 300).unwrap().is_some());
    }

    #[test]
    fn hop_by_hop_fields_are_named_by_the_standard_and_by_connection() {
        let head = parse_for_test(
            "GET / HTTP/1.1\r\nConnection: close, X-Secret\r\nx-secret: 1\r\nkeep-alive: 5\r\nproxy-authorization: b\r\nte: trailers\r\ntrailer: x\r\ntransfer-encoding: chunked\r\nupgrade: h2c\r\nhost: a\r\nx-kept: 1\r\n\r\n",
        );
        let hop = HopByHop::new(head.values("connection"));
        let kept: Vec<&str> = head
            .fields()
            .filter(|(name, _)| !hop.drops(name.as_bytes()))
            .map(|(name, _)| name)
            .collect();
        assert_eq!(kept, ["host", "x-kept"]);
        let hop = HopByHop::new(head.values("connection")).passing_upgrade(true);
        assert!(!hop.drops(b"upgrade"));
        assert!(hop.drops(b"connection") && hop.drops(b"x-secret") && hop.drops(b"te"));
    }

    #[test]
    fn random_heads_never_panic_and_what_parses_is_consistent() {
        const METHODS: [&str; 4] = ["GET", "POST", "OPTIONS", "G\u{e9}T"];
        const TARGETS: [&str; 8] = [
            "/",
            "/a?b=1&c",
            "*",
            "http://h:1/p?q",
            "https://[::1]",
            "HTTP://x?y",
            "/%00?",
            "/a b",
        ];
        const FIELDS: [&str; 12] = [
            "Host: a",
            "Content-Length: 3",
            "content-length: 3, 4",
            "Transfer-Encoding: chunked",
            "Connection: close, X-A",
            "X-A: 1",
            "Expect: 100-continue",
            "x-\u{e9}: v",
            "x: \u{e9}",
            "bad name: 1",
            " folded",
            "Cookie: a=1; b=2",
        ];
        const NOISE: [&str; 6] = ["\r", "\n", ":", " ", "\r\n", "\u{0}"];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (mut complete, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut head = format!(
                "{} {} HTTP/1.{}\r\n",
                METHODS[next(METHODS.len())],
                TARGETS[next(TARGETS.len())],
                next(2)
            );
            for _ in 0..next(6) {
                head.push_str(FIELDS[next(FIELDS.len())]);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            if next(4) == 0 {
                let at = next(head.len());
                if head.is_char_boundary(at) {
                    head.insert_str(at, NOISE[next(NOISE.len())]);
                }
            }
            let mut buf = BytesMut::from(head.as_bytes());
            let before = buf.len();
            match RequestHead::parse(&mut buf, 4) {
                Ok(Some(parsed)) => {
                    complete += 1;
                    assert_eq!(parsed.wire_len() + buf.len(), before, "{head:?}");
                    let path = parsed.path();
                    assert!(path.starts_with('/') || path == "*", "{head:?}");
                    assert!(parsed.path_and_query().starts_with(path), "{head:?}");
                    for (name, _) in parsed.fields() {
                        assert_eq!(name, name.to_ascii_lowercase(), "{head:?}");
                        assert!(parsed.first(name).is_some(), "{head:?}");
                    }
                }
                Ok(None) => assert_eq!(buf.len(), before, "{head:?}"),
                Err(_) => refused += 1,
            }
        }
        // The generator reaches both sides.
        assert!(complete > 2_000 && refused > 2_000, "{complete} {refused}");
    }

    #[test]
    fn field_text_is_what_header_values_accept() {
        assert_eq!(field_text(b"a b\tc"), Some("a b\tc"));
        assert_eq!(field_text(b"caf\xc3\xa9"), None);
        assert_eq!(field_text(b"a\x7f"), None);
    }
}
