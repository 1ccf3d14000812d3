//! Splitting a request into the named fields that attackers fill: query and form pairs (keys
//! too), JSON string values and keys, XML text and attribute values, multipart field values and
//! file names, and cookies.
//!
//! Parsers borrow from the request wherever they can, never fail on malformed input (they take
//! what they can read), and leave decoding to [`crate::decode`].

use std::borrow::Cow;

use serde_json::Value;

use crate::decode::{self, Plus};
use crate::finding::field_name_for_log;

/// Where a field came from; the prefix of [`crate::Finding::field`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Path,
    Body,
    Query,
    QueryKey,
    Form,
    FormKey,
    Json,
    JsonKey,
    Xml,
    /// An XML body's document type declaration.
    XmlDoctype,
    Multipart,
    MultipartFilename,
    Cookie,
    CookieName,
    Header,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Path => "path",
            Kind::Body => "body",
            Kind::Query => "query",
            Kind::QueryKey => "query-key",
            Kind::Form => "form",
            Kind::FormKey => "form-key",
            Kind::Json => "json",
            Kind::JsonKey => "json-key",
            Kind::Xml | Kind::XmlDoctype => "xml",
            Kind::Multipart => "multipart",
            Kind::MultipartFilename => "multipart-filename",
            Kind::Cookie => "cookie",
            Kind::CookieName => "cookie-name",
            Kind::Header => "header",
        }
    }

    /// How `+` reads in this field's value.
    pub fn plus(self) -> Plus {
        match self {
            Kind::Query | Kind::QueryKey | Kind::Form | Kind::FormKey => Plus::Space,
            _ => Plus::Literal,
        }
    }
}

/// One named value of a request, still encoded as it came.
#[derive(Debug)]
pub(crate) struct Field<'a> {
    pub kind: Kind,
    /// The raw name (query key, JSON path, header name, …); empty for path and body.
    pub name: Cow<'a, [u8]>,
    pub value: Cow<'a, [u8]>,
}

impl Field<'_> {
    /// The label used in findings and exclusions, e.g. `query:id`. Names of query and form
    /// pairs are decoded once, as the application would see them.
    pub fn label(&self) -> String {
        if matches!(self.kind, Kind::Path | Kind::Body) {
            return self.kind.prefix().to_owned();
        }
        let name = match self.kind {
            Kind::Query | Kind::QueryKey | Kind::Form | Kind::FormKey => {
                decode::percent_decode_once(&self.name, Plus::Space)
                    .map(Cow::Owned)
                    .unwrap_or(Cow::Borrowed(&*self.name))
            }
            // Header names are case-insensitive; logs and exclusions use lower case.
            Kind::Header => Cow::Owned(self.name.to_ascii_lowercase()),
            _ => Cow::Borrowed(&*self.name),
        };
        let name = field_name_for_log(&String::from_utf8_lossy(&name));
        format!("{}:{name}", self.kind.prefix())
    }
}

/// Splits `a=1&b=2` into a value field per pair and a key field per key. Empty pairs are
/// skipped; a key without `=` has an empty value.
pub(crate) fn pairs<'a>(
    input: &'a [u8],
    value_kind: Kind,
    key_kind: Kind,
    out: &mut Vec<Field<'a>>,
) {
    for pair in input.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        out.push(Field {
            kind: key_kind,
            name: Cow::Borrowed(key),
            value: Cow::Borrowed(key),
        });
        if !value.is_empty() {
            out.push(Field {
                kind: value_kind,
                name: Cow::Borrowed(key),
                value: Cow::Borrowed(value),
            });
        }
    }
}

/// Splits a `Cookie` header (`a=1; b=2`) into value and name fields.
pub(crate) fn cookies<'a>(header: &'a [u8], out: &mut Vec<Field<'a>>) {
    for pair in header.split(|&b| b == b';') {
        let pair = pair.trim_ascii();
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()),
            None => (pair, &pair[pair.len()..]),
        };
        out.push(Field {
            kind: Kind::CookieName,
            name: Cow::Borrowed(name),
            value: Cow::Borrowed(name),
        });
        if !value.is_empty() {
            out.push(Field {
                kind: Kind::Cookie,
                name: Cow::Borrowed(name),
                value: Cow::Borrowed(value),
            });
        }
    }
}

/// Walks a JSON document: one field per string value (`json:$.a.b[0]`) and per object key
/// (`json-key:$.a.b`). Numbers, booleans and nulls carry no payload. Depth is bounded by
/// serde_json's parser (128 levels: deeper documents fail to parse); the walk itself uses an
/// explicit stack, so it cannot overflow. Returns `false` when the body is not JSON.
pub(crate) fn json(body: &[u8], out: &mut Vec<Field<'_>>) -> bool {
    let Ok(root) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let mut stack: Vec<(String, Value)> = vec![("$".to_owned(), root)];
    while let Some((path, value)) = stack.pop() {
        match value {
            Value::String(s) => out.push(Field {
                kind: Kind::Json,
                name: Cow::Owned(path.into_bytes()),
                value: Cow::Owned(s.into_bytes()),
            }),
            Value::Array(items) => {
                for (i, item) in items.into_iter().enumerate().rev() {
                    stack.push((format!("{path}[{i}]"), item));
                }
            }
            Value::Object(map) => {
                let mut children = Vec::with_capacity(map.len());
                for (key, item) in map {
                    let child = format!("{path}.{key}");
                    out.push(Field {
                        kind: Kind::JsonKey,
                        name: Cow::Owned(child.clone().into_bytes()),
                        value: Cow::Owned(key.into_bytes()),
                    });
                    children.push((child, item));
                }
                stack.extend(children.into_iter().rev());
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    true
}

/// How deep an XML field's name follows the document (`xml:/a/b/c`), in elements and in bytes;
/// deeper elements are named after their deepest named ancestor. Names are labels for findings
/// and exclusions, copied into every field: a document nested thousands deep would otherwise
/// give every field a name as long as the body (a tag of 5,900 attributes under 32 elements with
/// 64-byte names took 13 ms with 2 KiB names, 1.5 ms with short ones).
const XML_NAME_DEPTH: usize = 32;
const XML_NAME_BYTES: usize = 256;
/// How much of an element or attribute name goes into a field's name.
const XML_NAME_PART: usize = 64;

/// Walks an XML document (SOAP and other XML APIs): one field per run of text and per CDATA
/// section (`xml:/order/item`), and per attribute value (`xml:/order/item/@sku`). Element and
/// attribute names are not fields: XML's name grammar leaves no room for quotes, spaces or
/// markup. The document type declaration is one more field (`xml:!DOCTYPE`), since the entities
/// it declares name what a backend's parser would fetch (XXE). References are resolved as the
/// application's parser would (`&apos;`, `&#60;`: the five predefined entities and character
/// references; then [`crate::decode`] decodes the value like every other, as JSON escapes are
/// resolved before it); the parser never reads the DTD, so entities a document declares are
/// neither expanded nor fetched and stay as written. Comments and processing instructions are
/// not fields. The parser keeps no recursion (depth costs memory only for the names, which stop
/// at [`XML_NAME_DEPTH`] elements or [`XML_NAME_BYTES`]). Returns `false` when the body is not
/// well-formed XML with a root element (malformed, cut at the inspection limit, or not UTF-8).
pub(crate) fn xml(body: &[u8], out: &mut Vec<Field<'_>>) -> bool {
    use quick_xml::events::Event;

    let mut reader = quick_xml::Reader::from_reader(body);
    let config = reader.config_mut();
    config.trim_text(false);
    config.check_end_names = true;
    let mut path = String::new();
    // The length of `path` before each open element named in it, and how many open elements
    // are deeper than the names go.
    let mut marks: Vec<usize> = Vec::new();
    let mut unnamed_depth = 0usize;
    let mut text = String::new();
    let mut root_seen = false;
    let flush = |text: &mut String, path: &str, out: &mut Vec<Field<'_>>| {
        if !text.trim_ascii().is_empty() {
            out.push(Field {
                kind: Kind::Xml,
                name: Cow::Owned(path.as_bytes().to_vec()),
                value: Cow::Owned(std::mem::take(text).into_bytes()),
            });
        }
        text.clear();
    };
    loop {
        let Ok(event) = reader.read_event() else {
            return false;
        };
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(element) | Event::Empty(element) => {
                let outside_root = marks.is_empty() && unnamed_depth == 0;
                if outside_root && (root_seen || !text.trim_ascii().is_empty()) {
                    return false; // a second root element, or text before the first
                }
                flush(&mut text, &path, out);
                root_seen = true;
                let name = truncate_name(element.name().0);
                let opened = if marks.len() < XML_NAME_DEPTH
                    && unnamed_depth == 0
                    && path.len() + 1 + name.len() <= XML_NAME_BYTES
                {
                    marks.push(path.len());
                    path.push('/');
                    path.push_str(name);
                    true
                } else {
                    unnamed_depth += 1;
                    false
                };
                for attribute in element.attributes() {
                    let Ok(attribute) = attribute else {
                        return false;
                    };
                    let name = format!("{path}/@{}", truncate_name(attribute.key.0));
                    out.push(Field {
                        kind: Kind::Xml,
                        name: Cow::Owned(name.into_bytes()),
                        value: Cow::Owned(xml_unescaped(&attribute.value).into_bytes()),
                    });
                }
                if empty {
                    close_xml_element(opened, &mut path, &mut marks, &mut unnamed_depth);
                }
            }
            Event::End(_) => {
                flush(&mut text, &path, out);
                let opened = unnamed_depth == 0;
                close_xml_element(opened, &mut path, &mut marks, &mut unnamed_depth);
            }
            Event::Text(t) => text.push_str(&t),
            Event::GeneralRef(r) => push_xml_reference(&mut text, &r),
            Event::CData(c) => {
                flush(&mut text, &path, out);
                let mut content = c.to_string();
                flush(&mut content, &path, out);
            }
            // The DTD is never read, but a backend's parser may: its declarations are where an
            // XXE attack names what to fetch (`<!ENTITY x SYSTEM "file:///etc/passwd">`).
            Event::DocType(dtd) => out.push(Field {
                kind: Kind::XmlDoctype,
                name: Cow::Borrowed(b"!DOCTYPE"),
                value: Cow::Owned(dtd.to_string().into_bytes()),
            }),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => {
                // Unclosed elements at the end: the document was cut (or never finished). Text
                // after the root element is not XML either, and would otherwise go unread.
                return root_seen
                    && marks.is_empty()
                    && unnamed_depth == 0
                    && text.trim_ascii().is_empty();
            }
        }
    }
}

fn close_xml_element(
    opened: bool,
    path: &mut String,
    marks: &mut Vec<usize>,
    unnamed_depth: &mut usize,
) {
    if opened {
        if let Some(mark) = marks.pop() {
            path.truncate(mark);
        }
    } else {
        *unnamed_depth = unnamed_depth.saturating_sub(1);
    }
}

/// Appends what the reference `&name;` stands for: a predefined entity or a character reference;
/// any other entity (one a DTD would declare) as written.
fn push_xml_reference(text: &mut String, name: &str) {
    let resolved = match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => name.strip_prefix('#').and_then(|number| {
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }),
    };
    match resolved {
        Some(c) => text.push(c),
        None => {
            text.push('&');
            text.push_str(name);
            text.push(';');
        }
    }
}

/// The longest reference name looked for (`#x10FFFF` is 8 bytes; entity names are free-form).
const XML_REFERENCE_MAX: usize = 64;

/// An attribute value with its references resolved ([`push_xml_reference`]).
fn xml_unescaped(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        // A reference is short; looking further for its `;` would make a value of many bare
        // `&` quadratic.
        let window = &after.as_bytes()[..after.len().min(XML_REFERENCE_MAX)];
        match window.iter().position(|&b| b == b';') {
            Some(end) if end > 0 => {
                push_xml_reference(&mut out, &after[..end]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// At most [`XML_NAME_PART`] bytes of a name, cut at a character boundary.
fn truncate_name(name: &str) -> &str {
    let mut end = name.len().min(XML_NAME_PART);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// The `boundary` parameter of a `multipart/form-data` content type.
pub(crate) fn multipart_boundary(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        (!v.is_empty()).then_some(v)
    })
}

/// Splits a multipart body into a field per part: the value of plain fields
/// (`multipart:name`) and the file name of file parts (`multipart-filename:name`). File contents
/// are not inspected: they are data, not parameters, and scanning them costs the most and
/// blocks the most legitimate uploads. A truncated body yields the parts that are complete
/// enough to read.
pub(crate) fn multipart<'a>(body: &'a [u8], boundary: &str, out: &mut Vec<Field<'a>>) {
    let delimiter = [b"--", boundary.as_bytes()].concat();
    let mut rest = match find(body, &delimiter) {
        Some(i) => &body[i + delimiter.len()..],
        None => return,
    };
    loop {
        if rest.starts_with(b"--") {
            return; // closing delimiter
        }
        let part_end = find(rest, &delimiter);
        let part = match part_end {
            Some(end) => &rest[..end],
            None => rest,
        };
        read_part(part, out);
        match part_end {
            Some(end) => rest = &rest[end + delimiter.len()..],
            None => return,
        }
    }
}

fn read_part<'a>(part: &'a [u8], out: &mut Vec<Field<'a>>) {
    let part = part
        .strip_prefix(b"\r\n")
        .or_else(|| part.strip_prefix(b"\n"))
        .unwrap_or(part);
    let (head, content) = match find(part, b"\r\n\r\n") {
        Some(i) => (&part[..i], &part[i + 4..]),
        None => match find(part, b"\n\n") {
            Some(i) => (&part[..i], &part[i + 2..]),
            None => (part, &part[part.len()..]),
        },
    };
    // The delimiter is preceded by CRLF, which belongs to the delimiter, not the content.
    let content = content
        .strip_suffix(b"\r\n")
        .or_else(|| content.strip_suffix(b"\n"))
        .unwrap_or(content);
    let mut name: &[u8] = b"";
    let mut filename: Option<&[u8]> = None;
    for line in head.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon].eq_ignore_ascii_case(b"content-disposition") {
            continue;
        }
        for param in split_params(&line[colon + 1..]) {
            let Some(eq) = param.iter().position(|&b| b == b'=') else {
                continue;
            };
            let key = param[..eq].trim_ascii();
            let value = unquote(param[eq + 1..].trim_ascii());
            if key.eq_ignore_ascii_case(b"name") {
                name = value;
            } else if key.eq_ignore_ascii_case(b"filename")
                || key.eq_ignore_ascii_case(b"filename*")
            {
                filename = Some(value);
            }
        }
    }
    match filename {
        Some(f) => out.push(Field {
            kind: Kind::MultipartFilename,
            name: Cow::Borrowed(name),
            value: Cow::Borrowed(f),
        }),
        None => out.push(Field {
            kind: Kind::Multipart,
            name: Cow::Borrowed(name),
            value: Cow::Borrowed(content),
        }),
    }
}

/// Splits `form-data; name="a;b"; filename=x` on `;` outside double quotes.
fn split_params(input: &[u8]) -> Vec<&[u8]> {
    let mut params = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, &b) in input.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b';' if !quoted => {
                params.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    params.push(&input[start..]);
    params
}

fn unquote(v: &[u8]) -> &[u8] {
    v.strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(v)
}

/// Position of `needle` in `haystack`. Scans for the first byte and compares only there:
/// needles here are short (boundaries, file names, tool names), and a `memcmp` call per window
/// was the largest cost of a clean request.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    if needle.len() > haystack.len() {
        return None;
    }
    let last_start = haystack.len() - needle.len();
    haystack[..=last_start]
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == first)
        .find(|&(i, _)| &haystack[i + 1..i + needle.len()] == rest)
        .map(|(i, _)| i)
}

/// Whether `needle` occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(fields: &[Field<'_>]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|f| (f.label(), String::from_utf8_lossy(&f.value).into_owned()))
            .collect()
    }

    fn s(a: &str, b: &str) -> (String, String) {
        (a.to_owned(), b.to_owned())
    }

    #[test]
    fn xml_fields_are_text_runs_cdata_and_attribute_values() {
        let body = br#"<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<r a="1 &amp; 2">
  before<b c='&#60;x'/>after &x; &lt;end&gt;
  <!-- a comment --><?pi data?>
  <d><![CDATA[raw <cdata>]]></d>
  <e>   </e>
</r>"#;
        let mut out = Vec::new();
        assert!(xml(body, &mut out));
        assert_eq!(
            summary(&out),
            vec![
                s(
                    "xml:!DOCTYPE",
                    "r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]"
                ),
                s("xml:/r/@a", "1 & 2"),
                s("xml:/r", "\n  before"),
                s("xml:/r/b/@c", "<x"),
                // References resolved but the DTD's `x`, which is not expanded; a comment or
                // processing instruction does not end a run (an application reading the text
                // sees it joined, so a payload split by `<!-- -->` is joined here too);
                // whitespace-only runs (between elements, in `<e>`) skipped.
                s("xml:/r", "after &x; <end>\n  \n  "),
                s("xml:/r/d", "raw <cdata>"),
            ]
        );
    }

    #[test]
    fn xml_field_names_stay_short_however_deep_and_long_the_names() {
        let name = "n".repeat(100);
        let mut body = String::new();
        for _ in 0..40 {
            body.push_str(&format!("<{name}>"));
        }
        body.push_str(&format!("<short {name}=\"v\">text</short>"));
        for _ in 0..40 {
            body.push_str(&format!("</{name}>"));
        }
        let mut out = Vec::new();
        assert!(xml(body.as_bytes(), &mut out));
        assert_eq!(out.len(), 2);
        // Three 64-byte parts fit in the name's 256 bytes; `short` and everything under the
        // fourth level are named after the third.
        let named = format!("/{0}/{0}/{0}", "n".repeat(64));
        assert_eq!(
            out[0].name,
            format!("{named}/@{}", "n".repeat(64)).as_bytes()
        );
        assert_eq!(out[1].name, named.as_bytes());
        assert_eq!(&*out[1].value, b"text");
    }

    #[test]
    fn xml_pieces_in_any_order_never_panic() {
        let parts: [&[u8]; 24] = [
            b"<a>",
            b"</a>",
            b"<b x='1' y=\"&lt;\">",
            b"</b>",
            b"<c/>",
            b"&lt;",
            b"&#x41;",
            b"&#99999999;",
            b"&",
            b";",
            b"<![CDATA[",
            b"]]>",
            b"<!--",
            b"-->",
            b"<!DOCTYPE r [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>",
            b"text",
            b"'",
            b"\"",
            b"<?pi x?>",
            b"\xff",
            b"=",
            b" ",
            b"<\xc3\xa9>",
            b"</\xc3\xa9>",
        ];
        let mut next = crate::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut well_formed = 0;
        for _ in 0..20_000 {
            let mut body = Vec::new();
            for _ in 0..next() % 24 {
                body.extend_from_slice(parts[(next() % 24) as usize]);
            }
            let mut out = Vec::new();
            well_formed += usize::from(xml(&body, &mut out));
            assert!(
                out.iter()
                    .all(|f| f.name.len() <= XML_NAME_BYTES + 2 + XML_NAME_PART)
            );
        }
        // Both outcomes occur.
        assert!(well_formed > 20, "{well_formed}");
    }

    #[test]
    fn xml_references_resolve_like_a_parser_and_the_rest_stays() {
        for (raw, expected) in [
            ("&lt;&gt;&amp;&apos;&quot;", "<>&'\""),
            ("&#60;&#x3C;&#X3c;", "<<<"),
            (
                "&custom; &#xFFFFFFFF; &#12a;",
                "&custom; &#xFFFFFFFF; &#12a;",
            ),
            ("a & b &; &", "a & b &; &"),
        ] {
            assert_eq!(xml_unescaped(raw), expected, "{raw}");
        }
        // Bare ampersands by the thousand, and a `;` too far away to end a reference.
        let bare = "&".repeat(50_000);
        assert_eq!(xml_unescaped(&bare), bare);
        let far = format!("&{};&lt;", "n".repeat(100));
        assert_eq!(xml_unescaped(&far), format!("&{};<", "n".repeat(100)));
    }

    #[test]
    fn xml_that_is_not_one_well_formed_document_is_refused() {
        for body in [
            &b""[..],
            b"just text",
            b"<a>",
            b"<a></b>",
            b"<a/><b/>",
            b"<a x='1' x='2'/>",
            b"<a/>1' OR '1'='1",
            b"1' OR '1'='1<a/>",
            b"<a x=1/>",
            b"<a>\xff</a>",
        ] {
            let mut out = Vec::new();
            assert!(!xml(body, &mut out), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn query_pairs_include_keys_repeats_and_bare_keys() {
        let mut out = Vec::new();
        pairs(
            b"id=1&id=2&flag&&a%20b=c+d",
            Kind::Query,
            Kind::QueryKey,
            &mut out,
        );
        assert_eq!(
            summary(&out),
            vec![
                s("query-key:id", "id"),
                s("query:id", "1"),
                s("query-key:id", "id"),
                s("query:id", "2"),
                s("query-key:flag", "flag"),
                s("query-key:a b", "a%20b"),
                s("query:a b", "c+d"),
            ]
        );
    }

    #[test]
    fn form_pairs_are_labelled_as_form() {
        let mut out = Vec::new();
        pairs(b"user=bob", Kind::Form, Kind::FormKey, &mut out);
        assert_eq!(
            summary(&out),
            vec![s("form-key:user", "user"), s("form:user", "bob")]
        );
    }

    #[test]
    fn cookies_are_split_and_trimmed() {
        let mut out = Vec::new();
        cookies(b"session=abc123; theme = dark ;flag", &mut out);
        assert_eq!(
            summary(&out),
            vec![
                s("cookie-name:session", "session"),
                s("cookie:session", "abc123"),
                s("cookie-name:theme", "theme"),
                s("cookie:theme", "dark"),
                s("cookie-name:flag", "flag"),
            ]
        );
    }

    #[test]
    fn json_walks_nested_values_and_keys_in_order() {
        let mut out = Vec::new();
        let ok = json(
            br#"{"user": {"name": "O'Brien", "tags": ["a", 1, {"k": "v"}]}, "n": 3, "ok": true}"#,
            &mut out,
        );
        assert!(ok);
        // Key order depends on serde_json's `preserve_order` feature, which another crate in
        // the build may turn on: compare as sets.
        let mut got = summary(&out);
        got.sort();
        let mut want = vec![
            s("json-key:$.n", "n"),
            s("json-key:$.ok", "ok"),
            s("json-key:$.user", "user"),
            s("json-key:$.user.name", "name"),
            s("json-key:$.user.tags", "tags"),
            s("json:$.user.name", "O'Brien"),
            s("json:$.user.tags[0]", "a"),
            s("json-key:$.user.tags[2].k", "k"),
            s("json:$.user.tags[2].k", "v"),
        ];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn json_unescapes_unicode_and_rejects_non_json() {
        let mut out = Vec::new();
        assert!(json(br#"{"q": "\u003cscript\u003e"}"#, &mut out));
        assert_eq!(&*out[1].value, b"<script>");
        assert!(!json(b"{\"truncated\": \"abc", &mut out));
        // Deeper than serde_json's limit: rejected, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(!json(deep.as_bytes(), &mut out));
    }

    #[test]
    fn multipart_yields_values_and_file_names_but_not_file_contents() {
        let body = b"--XyZ\r\n\
Content-Disposition: form-data; name=\"title\"\r\n\r\n\
hello world\r\n\
--XyZ\r\n\
Content-Disposition: form-data; name=\"upload\"; filename=\"../../etc/passwd\"\r\n\
Content-Type: application/octet-stream\r\n\r\n\
<script>not inspected</script>\r\n\
--XyZ--\r\n";
        let mut out = Vec::new();
        multipart(body, "XyZ", &mut out);
        assert_eq!(
            summary(&out),
            vec![
                s("multipart:title", "hello world"),
                s("multipart-filename:upload", "../../etc/passwd"),
            ]
        );
    }

    #[test]
    fn multipart_boundary_is_read_from_the_content_type() {
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=\"a b\""),
            Some("a b")
        );
        assert_eq!(
            multipart_boundary("multipart/form-data; charset=utf-8; BOUNDARY=x1"),
            Some("x1")
        );
        assert_eq!(multipart_boundary("multipart/form-data"), None);
    }

    #[test]
    fn multipart_handles_truncation_and_quoted_semicolons() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"a;b\"\r\n\r\nvalue-cut-off";
        let mut out = Vec::new();
        multipart(body, "b", &mut out);
        assert_eq!(summary(&out), vec![s("multipart:a;b", "value-cut-off")]);
    }
}
