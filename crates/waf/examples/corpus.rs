//! Measures rollgate-waf on the shared corpora: detection on libinjection's `sqli-*`/`xss-*`
//! data, PayloadsAllTheThings SQL/XSS lists and the CRS regression suite (the rule files of the
//! classes this crate covers), false positives on libinjection's tricky-benign list, on CRS's
//! negative stages and on generated benign API traffic, and the cost per clean GET and per
//! 4 KB form, JSON or XML body. Prints a Markdown report (the source of `bench/waf/RESULTS.md`).
//!
//! `cargo run --release -p rollgate-waf --example corpus -- /work/shared/corpora`

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rollgate_waf::{CrsExclusion, Finding, Paranoia, RequestView, Waf, WafConfig};
use serde_norway::Value;

fn main() {
    let Some(root) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: corpus <corpora dir>");
        std::process::exit(2);
    };
    // `WAF_CORPUS_CRS_EXCLUDE=942540,941160` switches CRS rules off everywhere, to measure
    // what each adds (detections it alone makes, false positives it alone causes).
    let crs_off: Vec<u32> = std::env::var("WAF_CORPUS_CRS_EXCLUDE")
        .unwrap_or_default()
        .split(',')
        .filter_map(|id| id.trim().parse().ok())
        .collect();
    // `WAF_CORPUS_PARANOIA=strict` measures `Paranoia::Strict` (CRS PL2 rules included).
    let paranoia = match std::env::var("WAF_CORPUS_PARANOIA").as_deref() {
        Ok("strict") => Paranoia::Strict,
        _ => Paranoia::Normal,
    };
    let waf = Waf::new(WafConfig {
        paranoia,
        ..WafConfig::default()
    })
    .map_err(|e| e.to_string());
    let waf = waf.and_then(|w| {
        if crs_off.is_empty() {
            return Ok(w);
        }
        w.with_crs_exclusions(&[CrsExclusion {
            path_prefix: "/".to_owned(),
            rules: crs_off.clone(),
            fields: Vec::new(),
        }])
        .map_err(|e| e.to_string())
    });
    let waf = match waf {
        Ok(w) => w,
        Err(e) => {
            eprintln!("config: {e}");
            std::process::exit(1);
        }
    };
    let verbose = std::env::var_os("WAF_CORPUS_VERBOSE").is_some();

    println!("| set | requests | flagged | rate |");
    println!("|---|---|---|---|");
    let data = root.join("libinjection/data");
    let (sqli_n, sqli_hit, _) =
        query_lines(&waf, &files(&data, "sqli-"), true, verbose, "sqli miss");
    row("libinjection `sqli-*.txt` (detected)", sqli_n, sqli_hit);
    let (xss_n, xss_hit, _) = query_lines(&waf, &files(&data, "xss-"), true, verbose, "xss miss");
    row("libinjection `xss-*.txt` (detected)", xss_n, xss_hit);
    let (fp_n, fp_hit, fp_lines) =
        query_lines(&waf, &[data.join("false_positives.txt")], true, false, "");
    row(
        "libinjection `false_positives.txt` (flagged = false positive)",
        fp_n,
        fp_hit,
    );

    let patt = root.join("payloads-all-the-things");
    let (ps_n, ps_hit, _) = query_lines(
        &waf,
        &walk(&patt.join("SQL Injection")),
        false,
        verbose,
        "patt sql miss",
    );
    row(
        "PayloadsAllTheThings SQL Injection (detected)",
        ps_n,
        ps_hit,
    );
    let (px_n, px_hit, _) = query_lines(
        &waf,
        &walk(&patt.join("XSS Injection")),
        false,
        verbose,
        "patt xss miss",
    );
    row(
        "PayloadsAllTheThings XSS Injection (detected)",
        px_n,
        px_hit,
    );

    let (benign_n, benign_hits) = benign(&waf);
    row(
        "generated benign API requests (flagged = false positive)",
        benign_n,
        benign_hits.len(),
    );

    let crs = crs(&waf, &root.join("crs-regression/tests"), verbose);
    println!();
    println!(
        "CRS regression suite (go-ftw stages; detected = any finding when `expect_ids` is set; false positive = any finding when only `no_expect_ids` is set):"
    );
    println!();
    println!("| rule file | positive stages | detected | negative stages | false positives |");
    println!("|---|---|---|---|---|");
    let mut tot = [0usize; 4];
    for (name, c) in &crs {
        println!(
            "| {name} | {} | {} ({}) | {} | {} ({}) |",
            c[0],
            c[1],
            pct(c[1], c[0]),
            c[2],
            c[3],
            pct(c[3], c[2])
        );
        for (t, v) in tot.iter_mut().zip(c) {
            *t += v;
        }
    }
    println!(
        "| all six | {} | {} ({}) | {} | {} ({}) |",
        tot[0],
        tot[1],
        pct(tot[1], tot[0]),
        tot[2],
        tot[3],
        pct(tot[3], tot[2])
    );

    println!();
    println!(
        "False positives on `false_positives.txt` ({}):",
        fp_lines.len()
    );
    for (line, findings) in &fp_lines {
        println!("- `{line}` → {}", describe(findings));
    }
    println!();
    println!(
        "False positives on generated benign traffic ({}):",
        benign_hits.len()
    );
    for (what, findings) in benign_hits.iter().take(20) {
        println!("- `{what}` → {}", describe(findings));
    }

    // `WAF_CORPUS_NO_COST=1` skips the timing section (for quick detection runs).
    if std::env::var_os("WAF_CORPUS_NO_COST").is_none() {
        cost(&waf);
    }
}

fn row(name: &str, n: usize, hit: usize) {
    println!("| {name} | {n} | {hit} | {} |", pct(hit, n));
}

fn pct(a: usize, b: usize) -> String {
    if b == 0 {
        return "–".to_owned();
    }
    format!("{:.1} %", a as f64 * 100.0 / b as f64)
}

fn describe(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| match &f.fingerprint {
            Some(fp) => format!("{} in {} ({fp})", f.rule_name(), f.field),
            None => format!("{} in {}", f.rule_name(), f.field),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".txt"))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Each non-empty, non-comment line as `GET /?q=<line>`; `encoded` lines are URL-encoded query
/// values already (libinjection's data), others are raw payloads and get percent-encoded.
/// Returns (requests, flagged, flagged lines with their findings).
fn query_lines(
    waf: &Waf,
    paths: &[PathBuf],
    encoded: bool,
    verbose: bool,
    tag: &str,
) -> (usize, usize, Vec<(String, Vec<Finding>)>) {
    let (mut n, mut hit) = (0, 0);
    let mut flagged = Vec::new();
    for path in paths {
        let Ok(bytes) = fs::read(path) else {
            eprintln!("cannot read {}", path.display());
            continue;
        };
        for line in bytes.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() || (encoded && line.starts_with(b"#")) {
                continue;
            }
            let value = if encoded {
                // A few lines hold a literal `&` (HTML entities); the value is one parameter,
                // as libinjection's own harness reads it, so it must not split the query.
                String::from_utf8_lossy(line).replace('&', "%26")
            } else {
                percent_encode(line)
            };
            let query = format!("q={value}");
            let findings = waf.inspect(&RequestView {
                method: "GET",
                path: "/",
                query: Some(&query),
                headers: &[],
                content_type: None,
                body: b"",
            });
            n += 1;
            if findings.is_empty() {
                if verbose && !tag.is_empty() {
                    eprintln!("{tag}: {}", String::from_utf8_lossy(line));
                }
            } else {
                hit += 1;
                flagged.push((String::from_utf8_lossy(line).into_owned(), findings));
            }
        }
    }
    (n, hit, flagged)
}

fn percent_encode(raw: &[u8]) -> String {
    let mut s = String::with_capacity(raw.len() * 3);
    for &b in raw {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// CRS regression stages of the rule files whose classes this crate covers.
fn crs(waf: &Waf, dir: &Path, verbose: bool) -> BTreeMap<String, [usize; 4]> {
    const COVERED: &[&str] = &["913", "930", "932", "941", "942", "944"];
    let mut out = BTreeMap::new();
    for file in walk(dir) {
        let Some(folder) = file
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
        else {
            continue;
        };
        if !COVERED
            .iter()
            .any(|c| folder.starts_with(&format!("REQUEST-{c}")))
        {
            continue;
        }
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let Ok(doc) = serde_norway::from_str::<Value>(&text) else {
            eprintln!("unparsable {}", file.display());
            continue;
        };
        let counts = out.entry(folder.to_owned()).or_insert([0usize; 4]);
        let Some(tests) = doc.get("tests").and_then(Value::as_sequence) else {
            continue;
        };
        for test in tests {
            let Some(stages) = test.get("stages").and_then(Value::as_sequence) else {
                continue;
            };
            for stage in stages {
                let (Some(input), Some(log)) = (
                    stage.get("input"),
                    stage.get("output").and_then(|o| o.get("log")),
                ) else {
                    continue;
                };
                if input.get("encoded_request").is_some() {
                    continue; // raw requests are not expressible as a RequestView
                }
                let expect = log
                    .get("expect_ids")
                    .and_then(Value::as_sequence)
                    .is_some_and(|s| !s.is_empty());
                let no_expect = log
                    .get("no_expect_ids")
                    .and_then(Value::as_sequence)
                    .is_some_and(|s| !s.is_empty());
                if !expect && !no_expect {
                    continue;
                }
                let findings = run_stage(waf, input);
                if expect {
                    counts[0] += 1;
                    if !findings.is_empty() {
                        counts[1] += 1;
                    } else if verbose {
                        eprintln!(
                            "crs miss {} test {:?}",
                            file.display(),
                            test.get("test_id").and_then(Value::as_u64)
                        );
                    }
                } else {
                    counts[2] += 1;
                    if !findings.is_empty() {
                        counts[3] += 1;
                        if verbose {
                            eprintln!(
                                "crs fp {} test {:?}: {}",
                                file.display(),
                                test.get("test_id").and_then(Value::as_u64),
                                describe(&findings)
                            );
                        }
                    }
                }
            }
        }
    }
    out
}

fn run_stage(waf: &Waf, input: &Value) -> Vec<Finding> {
    let method = input.get("method").and_then(Value::as_str).unwrap_or("GET");
    let uri = input.get("uri").and_then(Value::as_str).unwrap_or("/");
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    if let Some(map) = input.get("headers").and_then(Value::as_mapping) {
        for (k, v) in map {
            let (Some(k), Some(v)) = (k.as_str(), scalar(v)) else {
                continue;
            };
            headers.push((k.to_owned(), v.into_bytes()));
        }
    }
    let body: Vec<u8> = match input.get("data") {
        Some(Value::Sequence(lines)) => lines
            .iter()
            .filter_map(scalar)
            .collect::<Vec<_>>()
            .join("\r\n")
            .into_bytes(),
        Some(v) => scalar(v).unwrap_or_default().into_bytes(),
        None => Vec::new(),
    };
    let mut content_type = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    // go-ftw completes a missing Content-Type of a request with data as a form.
    if content_type.is_none() && !body.is_empty() {
        content_type = Some("application/x-www-form-urlencoded".to_owned());
    }
    let header_refs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    waf.inspect(&RequestView {
        method,
        path: if path.is_empty() { "/" } else { path },
        query,
        headers: &header_refs,
        content_type: content_type.as_deref(),
        body: &body,
    })
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A fixed-seed generator, so every run measures the same requests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const NAMES: &[&str] = &[
    "Jane Doe",
    "O'Brien",
    "Seán O'Connor",
    "D'Angelo Russell",
    "Mary-Kate Olsen",
    "José Álvarez",
    "Zoë Smith",
    "Robert'); Smith",
    "Li Wei",
    "Anne-Marie d'Arcy",
    "Chloé Dubois",
    "Müller",
];
const TEXTS: &[&str] = &[
    "select a plan",
    "1 OR 2 items",
    "I'd like to upgrade, but it's too expensive",
    "Please drop by the office between 9 and 5",
    "Union Station, Track 4",
    "We've updated the table of contents",
    "Don't forget: the meeting's at 10 o'clock",
    "Order #1234 — 2 × T-shirts (size M) & 1 hoodie",
    "Can't log in since yesterday; error says \"invalid token\"",
    "The café's wifi is 50% faster now!",
    "Insert the card, then select 'Pay'",
    "Delete my account and all data, please",
    "Where is my refund? It's been 2 weeks",
    "5' 11\" tall, 180 lbs",
    "Tom & Jerry's Pizza, 3rd floor",
    "Rock 'n' roll is here to stay",
    "Is 1 = 1? Yes, and 2 > 1.",
    "email me at jane.doe+news@example.com or call +1 (555) 010-9999",
    "See https://example.com/docs/getting-started?lang=en#install",
    "Price: $19.99 (was $24.99) — save 20%",
    "I <3 this product",
    "Ship to: 221B Baker St., London NW1 6XE",
    "Cancel order 42 or 43, whichever is later",
    "Update: the 'from' and 'to' dates were swapped",
    "C:\\Users\\jane\\Documents\\report.docx",
    "path/to/file.txt",
    "Hello ${name}, welcome back",
    "Let's grab lunch at 12:30 -- my treat",
    "Meeting notes (draft) /* internal */",
    "AND/OR logic in filters doesn't work",
];
const EMAILS: &[&str] = &[
    "jane.doe@example.com",
    "o'brien@example.ie",
    "user+tag@mail.example.org",
    "first.last@sub.example.co.uk",
];
const ADDRESSES: &[&str] = &[
    "1600 Amphitheatre Pkwy, Mountain View, CA 94043",
    "10 Downing St, London SW1A 2AA",
    "Apt. #5, 12 O'Connell St., Dublin 1",
    "Rue de l'Église 3, 1000 Bruxelles",
];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "curl/8.5.0",
    "python-requests/2.31.0",
    "okhttp/4.12.0",
    "Go-http-client/1.1",
];

/// Realistic API requests: JSON bodies, forms, search queries, cookies and browser headers.
/// Returns (requests, flagged with findings).
fn benign(waf: &Waf) -> (usize, Vec<(String, Vec<Finding>)>) {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut flagged = Vec::new();
    let n = 5_000;
    for i in 0..n {
        let name = rng.pick(NAMES);
        let text = rng.pick(TEXTS);
        let email = rng.pick(EMAILS);
        let addr = rng.pick(ADDRESSES);
        let ua = rng.pick(USER_AGENTS);
        let id = rng.next() % 100_000;
        let cookie = format!(
            "session=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ{id}In0.c2lnbmF0dXJl; theme=dark; consent=analytics%3Dfalse%7Cads%3Dfalse"
        );
        let referer = format!(
            "https://app.example.com/search?q={}&page=2",
            percent_encode(text.as_bytes())
        );
        let headers: Vec<(&str, &[u8])> = vec![
            ("Host", b"api.example.com"),
            ("User-Agent", ua.as_bytes()),
            ("Accept", b"application/json, text/plain, */*"),
            ("Accept-Language", b"en-GB,en;q=0.9,fr;q=0.8"),
            ("Cookie", cookie.as_bytes()),
            ("Referer", referer.as_bytes()),
            ("X-Forwarded-For", b"203.0.113.7, 10.0.0.2"),
        ];
        let (method, path, query, ct, body): (&str, String, Option<String>, Option<&str>, Vec<u8>) =
            match i % 4 {
                0 => (
                    "POST",
                    "/api/v1/customers".to_owned(),
                    None,
                    Some("application/json"),
                    serde_json::json!({
                        "name": name, "email": email, "address": addr, "note": text,
                        "plan": "select a plan", "tags": ["vip", text], "age": 42,
                        "website": "https://example.com/about-us?ref=signup&utm_source=news"
                    })
                    .to_string()
                    .into_bytes(),
                ),
                1 => (
                    "GET",
                    format!("/api/v1/customers/{id}/orders"),
                    Some(format!(
                        "q={}&sort=-created_at&page=3&limit=50&name={}",
                        percent_encode(text.as_bytes()),
                        percent_encode(name.as_bytes())
                    )),
                    None,
                    Vec::new(),
                ),
                2 => (
                    "POST",
                    "/contact".to_owned(),
                    None,
                    Some("application/x-www-form-urlencoded"),
                    format!(
                        "name={}&email={}&message={}&address={}",
                        percent_encode(name.as_bytes()),
                        percent_encode(email.as_bytes()),
                        percent_encode(text.as_bytes()),
                        percent_encode(addr.as_bytes())
                    )
                    .into_bytes(),
                ),
                _ => (
                    "GET",
                    format!(
                        "/blog/2024/05/{}",
                        percent_encode(text.to_lowercase().replace(' ', "-").as_bytes())
                    ),
                    Some("utm_source=newsletter&utm_medium=email".to_owned()),
                    None,
                    Vec::new(),
                ),
            };
        let findings = waf.inspect(&RequestView {
            method,
            path: &path,
            query: query.as_deref(),
            headers: &headers,
            content_type: ct,
            body: &body,
        });
        if !findings.is_empty() {
            flagged.push((format!("{method} {path} ({text} / {name})"), findings));
        }
    }
    (n, flagged)
}

/// Cost per request, single thread, best of 5 rounds (the machine is shared; the minimum is
/// the least disturbed).
fn cost(waf: &Waf) {
    let cookie: &[u8] = b"session=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl; theme=dark";
    let headers: Vec<(&str, &[u8])> = vec![
        ("Host", b"api.example.com"),
        ("User-Agent", USER_AGENTS[0].as_bytes()),
        ("Accept", b"application/json"),
        ("Accept-Language", b"en-GB,en;q=0.9"),
        ("Cookie", cookie),
        ("Referer", b"https://app.example.com/orders?page=1"),
    ];
    let get = RequestView {
        method: "GET",
        path: "/api/v1/users/42/orders",
        query: Some("page=2&limit=50&sort=created_at&status=shipped"),
        headers: &headers,
        content_type: None,
        body: b"",
    };
    let get_no_ua = RequestView {
        headers: &headers[2..],
        ..get
    };
    let mut form = String::new();
    let mut k = 0;
    while form.len() < 4096 {
        let text = TEXTS[k % TEXTS.len()];
        form.push_str(&format!("field{k}={}&", percent_encode(text.as_bytes())));
        k += 1;
    }
    form.truncate(4096);
    let post = |path, content_type, body| RequestView {
        method: "POST",
        path,
        query: None,
        headers: &headers,
        content_type: Some(content_type),
        body,
    };
    let form_req = post(
        "/contact",
        "application/x-www-form-urlencoded",
        form.as_bytes(),
    );
    let mut json = String::from("{");
    k = 0;
    while json.len() < 4000 {
        let text = TEXTS[k % TEXTS.len()];
        json.push_str(&format!(
            "\"field{k}\": {},",
            serde_json::to_string(text).unwrap_or_default()
        ));
        k += 1;
    }
    json.push_str("\"end\": true}");
    let json_req = post("/api/v1/notes", "application/json", json.as_bytes());
    let mut xml = String::from("<?xml version=\"1.0\"?><notes>");
    k = 0;
    while xml.len() < 4000 {
        let text = TEXTS[k % TEXTS.len()]
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('\'', "&apos;");
        xml.push_str(&format!("<note id=\"{k}\">{text}</note>"));
        k += 1;
    }
    xml.push_str("</notes>");
    let xml_req = post("/api/v1/notes", "application/xml", xml.as_bytes());
    // Distinct User-Agent and Referer values for every request: the per-thread memo of clean
    // header values never hits, so this is the cost of a client seen for the first time.
    let fresh: Vec<(String, String)> = (0..20_000)
        .map(|i| {
            (
                format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.{i}.0 Safari/537.36"),
                format!("https://app.example.com/orders?page={i}"),
            )
        })
        .collect();
    let mut best_fresh = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for (ua, referer) in &fresh {
            let h: [(&str, &[u8]); 6] = [
                ("Host", b"api.example.com"),
                ("User-Agent", ua.as_bytes()),
                ("Accept", b"application/json"),
                ("Accept-Language", b"en-GB,en;q=0.9"),
                ("Cookie", cookie),
                ("Referer", referer.as_bytes()),
            ];
            let req = RequestView { headers: &h, ..get };
            std::hint::black_box(waf.inspect(std::hint::black_box(&req)));
        }
        best_fresh = best_fresh.min(start.elapsed().as_secs_f64() * 1e6 / fresh.len() as f64);
    }
    println!();
    println!("Cost (single thread, release, best of 5 rounds):");
    println!();
    println!("| request | findings | µs per request |");
    println!("|---|---|---|");
    for (name, req, iters) in [
        (
            "clean GET, 4 query params, browser headers + cookie (repeated: header memo hits)",
            &get,
            20_000u32,
        ),
        (
            "same GET without User-Agent and Referer",
            &get_no_ua,
            20_000,
        ),
        (
            "4 KB urlencoded form (prose values) + same headers",
            &form_req,
            1_000,
        ),
        (
            "4 KB JSON body (prose values) + same headers",
            &json_req,
            1_000,
        ),
        (
            "4 KB XML body (prose text, escaped) + same headers",
            &xml_req,
            1_000,
        ),
    ] {
        let findings = waf.inspect(req).len();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(waf.inspect(std::hint::black_box(req)));
            }
            best = best.min(start.elapsed().as_secs_f64() * 1e6 / f64::from(iters));
        }
        println!("| {name} | {findings} | {best:.2} |");
    }
    println!(
        "| same GET, a new User-Agent and Referer on every request (header memo misses) | 0 | {best_fresh:.2} |"
    );
}
