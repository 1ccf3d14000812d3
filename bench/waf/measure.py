#!/usr/bin/env python3
"""Measure any HTTP WAF endpoint on the shared corpora, the same sets as
crates/waf/examples/corpus.rs measures rollgate's WAF crate in process.

    python3 bench/waf/measure.py --target modsec=http://127.0.0.1:18092 \
        --corpora /work/shared/corpora --out /tmp/waf-peer

    # several targets in one run (sets interleaved target by target), side by side:
    python3 bench/waf/measure.py --target rollgate=http://127.0.0.1:8080 \
        --target modsec=http://127.0.0.1:18092 --corpora /work/shared/corpora --out /tmp/waf-side

    # side-by-side table from earlier JSON outputs:
    python3 bench/waf/measure.py --compare /tmp/waf-peer.json /tmp/waf-rollgate.json

A request counts as "blocked" when the answer's status is in --blocked (default 403). Every
other status is counted too (per set, in the JSON and the table), so that 400/414 from an HTTP
parser, 401 from authentication or 429 from a rate limit are visible and not mistaken for
detection. Writes OUT.json and OUT.md and prints the Markdown. Python 3 standard library, plus
PyYAML (Debian: python3-yaml) to read the CRS regression suite.

How each set is sent (mirrors corpus.rs):
- libinjection sqli-*.txt, xss-*.txt, false_positives.txt: each non-empty, non-`#` line is a
  URL-encoded query value, sent as `GET /?q=<line>`; a literal `&` is sent as `%26` (the value
  stays one parameter). On the wire, bytes that are not legal in an RFC 3986 request target
  (space, controls, non-ASCII, `#`, `"`, `<`, `>`, `\\`, `^`, `` ` ``, `{`, `|`, `}`) are
  percent-encoded; the decoded value is the same bytes.
- PayloadsAllTheThings `SQL Injection/**` and `XSS Injection/**`: raw lines, every non-empty
  line percent-encoded (all but `A-Za-z0-9-_.~`) into `GET /?q=`.
- CRS regression suite (go-ftw YAML), rule files 913/930/932/941/942/944: each stage's method,
  uri (as written), headers (Host replaced by --host), data (a list is joined with CRLF), a
  form Content-Type added when there is data and none is given, Content-Length computed;
  positive = `expect_ids` non-empty, negative = only `no_expect_ids`; `encoded_request` stages
  are skipped (as corpus.rs does).
- generated benign API traffic: the 5,000 requests of corpus.rs's `benign()` (same xorshift
  seed, same tables, same order), with Host replaced by --host.
The payload sets (libinjection, PayloadsAllTheThings) carry browser-like headers (Host,
User-Agent, Accept, Accept-Language), since a bare request scores on its own in CRS.
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import socket
import sys
import threading
import time
from collections import Counter, OrderedDict
from urllib.parse import urlsplit

BROWSER_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
              "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36")
CRS_FAMILIES = ["913", "930", "932", "941", "942", "944"]

# ---------------------------------------------------------------------------------------------
# encoding helpers


def percent_encode(raw: bytes) -> str:
    """corpus.rs percent_encode: everything but A-Za-z0-9-_.~"""
    out = []
    for b in raw:
        if (48 <= b <= 57) or (65 <= b <= 90) or (97 <= b <= 122) or b in b"-_.~":
            out.append(chr(b))
        else:
            out.append("%%%02X" % b)
    return "".join(out)


_WIRE_OK = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
               b"-._~!$&'()*+,;=:@/?%")


def wire_escape(value: bytes) -> bytes:
    """Percent-encode only bytes that may not appear in a request target; the decoded value
    is unchanged."""
    out = bytearray()
    for b in value:
        if b in _WIRE_OK:
            out.append(b)
        else:
            out += b"%%%02X" % b
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# request items: (id, method, target, headers [(name, value)], body bytes, version)


def base_headers(host):
    return [("Host", host), ("User-Agent", BROWSER_UA),
            ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            ("Accept-Language", "en-GB,en;q=0.9")]


def read_lines(path):
    with open(path, "rb") as f:
        data = f.read()
    for n, line in enumerate(data.split(b"\n"), 1):
        if line.endswith(b"\r"):
            line = line[:-1]
        yield n, line


def libinjection_items(data_dir, prefix, host):
    if prefix == "false_positives":
        files = [os.path.join(data_dir, "false_positives.txt")]
    else:
        files = sorted(os.path.join(data_dir, f) for f in os.listdir(data_dir)
                       if f.startswith(prefix) and f.endswith(".txt"))
    items = []
    for path in files:
        for n, line in read_lines(path):
            if not line or line.startswith(b"#"):
                continue
            value = wire_escape(line.replace(b"&", b"%26"))
            items.append(("%s:%d" % (os.path.basename(path), n), "GET", b"/?q=" + value,
                          base_headers(host), b"", "HTTP/1.1"))
    return items


def walk(d):
    out = []
    for root, _dirs, files in os.walk(d):
        for f in files:
            out.append(os.path.join(root, f))
    return sorted(out)


def patt_items(folder, host):
    items = []
    for path in walk(folder):
        for n, line in read_lines(path):
            if not line:
                continue
            target = ("/?q=" + percent_encode(line)).encode()
            items.append(("%s:%d" % (os.path.relpath(path, os.path.dirname(folder)), n), "GET",
                          target, base_headers(host), b"", "HTTP/1.1"))
    return items


def scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (str, int, float)):
        return str(v)
    return None


def crs_items(tests_dir, host):
    """Returns {family folder: (positives, negatives)}; each a list of items."""
    try:
        import yaml
    except ImportError:
        sys.exit("measure.py: PyYAML is needed for the CRS suite (apt-get install -y python3-yaml)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out = OrderedDict()
    for path in walk(tests_dir):
        folder = os.path.basename(os.path.dirname(path))
        if not any(folder.startswith("REQUEST-%s" % c) for c in CRS_FAMILIES):
            continue
        if not path.endswith((".yaml", ".yml")):
            continue
        with open(path, encoding="utf-8") as f:
            try:
                doc = yaml.load(f, Loader=loader)
            except yaml.YAMLError:
                print("unparsable %s" % path, file=sys.stderr)
                continue
        pos, neg = out.setdefault(folder, ([], []))
        for test in (doc or {}).get("tests") or []:
            for si, stage in enumerate(test.get("stages") or []):
                inp, log = stage.get("input"), (stage.get("output") or {}).get("log")
                if inp is None or log is None:
                    continue
                if "encoded_request" in inp:
                    continue
                expect = bool(log.get("expect_ids"))
                no_expect = bool(log.get("no_expect_ids"))
                if not expect and not no_expect:
                    continue
                method = inp.get("method") or "GET"
                uri = inp.get("uri")
                uri = "/" if uri is None or uri == "" else str(uri)
                headers = []
                for k, v in (inp.get("headers") or {}).items():
                    sv = scalar(v)
                    if sv is None or str(k).lower() in ("host", "content-length"):
                        continue
                    headers.append((str(k), sv))
                headers.insert(0, ("Host", host))
                data = inp.get("data")
                if isinstance(data, list):
                    body = "\r\n".join(s for s in (scalar(x) for x in data) if s is not None)
                elif data is None:
                    body = ""
                else:
                    body = scalar(data) or ""
                body = body.encode("utf-8")
                if body and not any(k.lower() == "content-type" for k, _ in headers):
                    headers.append(("Content-Type", "application/x-www-form-urlencoded"))
                version = inp.get("version") or "HTTP/1.1"
                item = ("%s#%s.%d" % (os.path.basename(path), test.get("test_id"), si + 1),
                        str(method), uri.encode("utf-8"), headers, body, str(version))
                (pos if expect else neg).append(item)
    return out


# --- corpus.rs benign(): same xorshift seed, tables and order -----------------------------

NAMES = ["Jane Doe", "O'Brien", "Seán O'Connor", "D'Angelo Russell", "Mary-Kate Olsen",
         "José Álvarez", "Zoë Smith", "Robert'); Smith", "Li Wei", "Anne-Marie d'Arcy",
         "Chloé Dubois", "Müller"]
TEXTS = [
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
]
EMAILS = ["jane.doe@example.com", "o'brien@example.ie", "user+tag@mail.example.org",
          "first.last@sub.example.co.uk"]
ADDRESSES = ["1600 Amphitheatre Pkwy, Mountain View, CA 94043", "10 Downing St, London SW1A 2AA",
             "Apt. #5, 12 O'Connell St., Dublin 1", "Rue de l'Église 3, 1000 Bruxelles"]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "curl/8.5.0",
    "python-requests/2.31.0",
    "okhttp/4.12.0",
    "Go-http-client/1.1",
]
MASK64 = (1 << 64) - 1


class Rng:
    def __init__(self, seed):
        self.s = seed

    def next(self):
        s = self.s
        s ^= (s << 13) & MASK64
        s ^= s >> 7
        s ^= (s << 17) & MASK64
        self.s = s
        return s

    def pick(self, items):
        return items[self.next() % len(items)]


def benign_items(host, n=5000):
    rng = Rng(0x1234_5678_9abc_def1)
    items = []
    for i in range(n):
        name = rng.pick(NAMES)
        text = rng.pick(TEXTS)
        email = rng.pick(EMAILS)
        addr = rng.pick(ADDRESSES)
        ua = rng.pick(USER_AGENTS)
        uid = rng.next() % 100_000
        cookie = ("session=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ%dIn0.c2lnbmF0dXJl; theme=dark; "
                  "consent=analytics%%3Dfalse%%7Cads%%3Dfalse" % uid)
        referer = "https://app.example.com/search?q=%s&page=2" % percent_encode(text.encode())
        headers = [("Host", host), ("User-Agent", ua),
                   ("Accept", "application/json, text/plain, */*"),
                   ("Accept-Language", "en-GB,en;q=0.9,fr;q=0.8"),
                   ("Cookie", cookie), ("Referer", referer),
                   ("X-Forwarded-For", "203.0.113.7, 10.0.0.2")]
        k = i % 4
        if k == 0:
            method, target = "POST", "/api/v1/customers"
            body = json.dumps({
                "name": name, "email": email, "address": addr, "note": text,
                "plan": "select a plan", "tags": ["vip", text], "age": 42,
                "website": "https://example.com/about-us?ref=signup&utm_source=news",
            }, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            headers.append(("Content-Type", "application/json"))
        elif k == 1:
            method = "GET"
            target = "/api/v1/customers/%d/orders?q=%s&sort=-created_at&page=3&limit=50&name=%s" % (
                uid, percent_encode(text.encode()), percent_encode(name.encode()))
            body = b""
        elif k == 2:
            method, target = "POST", "/contact"
            body = ("name=%s&email=%s&message=%s&address=%s" % (
                percent_encode(name.encode()), percent_encode(email.encode()),
                percent_encode(text.encode()), percent_encode(addr.encode()))).encode()
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        else:
            method = "GET"
            target = "/blog/2024/05/%s?utm_source=newsletter&utm_medium=email" % percent_encode(
                text.lower().replace(" ", "-").encode())
            body = b""
        items.append(("benign#%d" % i, method, target.encode(), headers, body, "HTTP/1.1"))
    return items


# ---------------------------------------------------------------------------------------------
# HTTP client: raw request bytes on a kept-alive socket per thread, parsed by http.client


class Client:
    def __init__(self, url, timeout):
        u = urlsplit(url)
        if u.scheme != "http":
            sys.exit("measure.py: only http:// targets are supported (%s)" % url)
        self.addr = (u.hostname, u.port or 80)
        self.prefix = (u.path or "").rstrip("/").encode()
        self.timeout = timeout
        self.local = threading.local()

    def _sock(self):
        s = getattr(self.local, "sock", None)
        if s is None:
            s = socket.create_connection(self.addr, timeout=self.timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.local.sock = s
        return s

    def _drop(self):
        s = getattr(self.local, "sock", None)
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
        self.local.sock = None

    def send(self, item):
        _id, method, target, headers, body, version = item
        head = [b"%s %s %s\r\n" % (method.encode(), self.prefix + target, version.encode())]
        for k, v in headers:
            head.append(b"%s: %s\r\n" % (k.encode("utf-8"), v.encode("utf-8")))
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        raw = b"".join(head) + body
        for attempt in (0, 1):
            fresh = getattr(self.local, "sock", None) is None
            try:
                s = self._sock()
                s.sendall(raw)
                resp = http.client.HTTPResponse(s, method=method)
                resp.begin()
                resp.read()
                status = resp.status
                if resp.will_close:
                    self._drop()
                return str(status)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.BadStatusLine) as e:
                # a kept-alive connection closed by the server between requests: retry once
                self._drop()
                if fresh or attempt == 1:
                    return "error:%s" % type(e).__name__
            except (OSError, http.client.HTTPException) as e:
                self._drop()
                return "error:%s" % type(e).__name__
        return "error:retry"


# ---------------------------------------------------------------------------------------------


def sample(items, limit):
    """Deterministic: evenly spaced by index, the same for every target."""
    if not limit or len(items) <= limit:
        return items, False
    n = len(items)
    return [items[i * n // limit] for i in range(limit)], True


def build_sets(corpora, host, limit):
    """[(key, title, kind, items, available, sampled, family)]; kind: detection | benign."""
    data = os.path.join(corpora, "libinjection", "data")
    patt = os.path.join(corpora, "payloads-all-the-things")
    raw = [
        ("libinjection-sqli", "libinjection `sqli-*.txt`", "detection",
         libinjection_items(data, "sqli-", host)),
        ("libinjection-xss", "libinjection `xss-*.txt`", "detection",
         libinjection_items(data, "xss-", host)),
        ("libinjection-fp", "libinjection `false_positives.txt`", "benign",
         libinjection_items(data, "false_positives", host)),
        ("patt-sql", "PayloadsAllTheThings SQL Injection", "detection",
         patt_items(os.path.join(patt, "SQL Injection"), host)),
        ("patt-xss", "PayloadsAllTheThings XSS Injection", "detection",
         patt_items(os.path.join(patt, "XSS Injection"), host)),
        ("benign-api", "generated benign API requests (corpus.rs `benign()`)", "benign",
         benign_items(host)),
    ]
    for fam, (pos, neg) in crs_items(os.path.join(corpora, "crs-regression", "tests"), host).items():
        raw.append(("crs-%s+" % fam[8:11], "CRS %s positive stages" % fam, "detection", pos))
        raw.append(("crs-%s-" % fam[8:11], "CRS %s negative stages" % fam, "benign", neg))
    sets = []
    for key, title, kind, items in raw:
        s, sampled = sample(items, limit)
        sets.append({"key": key, "title": title, "kind": kind, "items": s,
                     "available": len(items), "sampled": sampled})
    return sets


def run_set(client, pool, s, details):
    t0 = time.monotonic()
    statuses = list(pool.map(client.send, s["items"]))
    dt = time.monotonic() - t0
    if details is not None:
        for item, st in zip(s["items"], statuses):
            details.append((s["key"], item[0], st))
    return statuses, dt


def pct(a, b):
    if b == 0:
        return "–"
    r = "%.1f" % (a * 100.0 / b)
    if a != b and r == "100.0":  # never print 100.0 % for a set with misses
        r = "%.2f" % (int(a * 10000.0 / b) / 100.0)
    return r + " %"


def summarise(s, statuses, dt, blocked_set):
    c = Counter(statuses)
    blocked = sum(v for k, v in c.items() if k in blocked_set)
    flagged = [item[0] for item, st in zip(s["items"], statuses)
               if st in blocked_set and s["kind"] == "benign"]
    return OrderedDict([
        ("key", s["key"]), ("title", s["title"]), ("kind", s["kind"]),
        ("requests", len(statuses)), ("available", s["available"]), ("sampled", s["sampled"]),
        ("blocked", blocked),
        ("rate_percent", round(blocked * 100.0 / len(statuses), 2) if statuses else None),
        ("statuses", OrderedDict(sorted(c.items()))),
        ("seconds", round(dt, 2)),
        ("blocked_benign_items", flagged[:500]),
    ])


def other_statuses(r, blocked_set):
    parts = ["%s×%d" % (k, v) for k, v in r["statuses"].items() if k not in blocked_set and k != "200"]
    return ", ".join(parts) if parts else "–"


def markdown(results):
    """results: list of per-target dicts."""
    out = []
    for res in results:
        bs = set(res["config"]["blocked_statuses"])
        out.append("### %s (`%s`)" % (res["label"], res["url"]))
        out.append("")
        out.append("Blocked = HTTP %s; concurrency %d; Host `%s`; wall time %.1f s for %d requests%s." % (
            "/".join(res["config"]["blocked_statuses"]), res["config"]["concurrency"],
            res["config"]["host"], res["wall_seconds"], res["total_requests"],
            "; sets larger than %d sampled evenly by index (same sample for every target)" %
            res["config"]["max_per_set"] if res["config"]["max_per_set"] else "; no sampling"))
        out.append("")
        out.append("| set | requests | blocked | rate | other non-200 statuses | seconds |")
        out.append("|---|---|---|---|---|---|")
        for r in res["sets"]:
            if r["key"].startswith("crs-"):
                continue
            what = "detected" if r["kind"] == "detection" else "blocked = false positive"
            req = "%d%s" % (r["requests"], " of %d (sampled)" % r["available"] if r["sampled"] else "")
            out.append("| %s (%s) | %s | %d | %s | %s | %.1f |" % (
                r["title"], what, req, r["blocked"], pct(r["blocked"], r["requests"]),
                other_statuses(r, bs), r["seconds"]))
        out.append("")
        out.append("CRS regression suite (go-ftw stages; detected = blocked when `expect_ids` is "
                   "set; false positive = blocked when only `no_expect_ids` is set):")
        out.append("")
        out.append("| rule file | positive stages | detected | negative stages | false positives | other non-200 statuses |")
        out.append("|---|---|---|---|---|---|")
        tot = [0, 0, 0, 0]
        for fam in res["crs"]:
            p, n = fam["positive"], fam["negative"]
            out.append("| %s | %d | %d (%s) | %d | %d (%s) | %s |" % (
                fam["name"], p["requests"], p["blocked"], pct(p["blocked"], p["requests"]),
                n["requests"], n["blocked"], pct(n["blocked"], n["requests"]),
                "pos: %s; neg: %s" % (other_statuses(p, bs), other_statuses(n, bs))))
            for i, v in enumerate((p["requests"], p["blocked"], n["requests"], n["blocked"])):
                tot[i] += v
        out.append("| all six | %d | %d (%s) | %d | %d (%s) | |" % (
            tot[0], tot[1], pct(tot[1], tot[0]), tot[2], tot[3], pct(tot[3], tot[2])))
        out.append("")
    if len(results) > 1:
        out.extend(side_by_side(results))
    return "\n".join(out) + "\n"


def side_by_side(results):
    out = ["### Side by side", "",
           "| set | " + " | ".join("%s" % r["label"] for r in results) + " |",
           "|---|" + "---|" * len(results)]
    keys = [r["key"] for r in results[0]["sets"]]
    for key in keys:
        cells, title, kind = [], key, ""
        for res in results:
            r = next((x for x in res["sets"] if x["key"] == key), None)
            if r is None:
                cells.append("–")
                continue
            title, kind = r["title"], r["kind"]
            cells.append("%s (%d/%d)" % (pct(r["blocked"], r["requests"]), r["blocked"], r["requests"]))
        what = "detected" if kind == "detection" else "false positives"
        out.append("| %s (%s) | %s |" % (title, what, " | ".join(cells)))
    cells = []
    for res in results:
        c = [0, 0, 0, 0]
        for fam in res["crs"]:
            c[0] += fam["positive"]["blocked"]
            c[1] += fam["positive"]["requests"]
            c[2] += fam["negative"]["blocked"]
            c[3] += fam["negative"]["requests"]
        cells.append(c)
    out.append("| CRS all six, positive stages (detected) | " + " | ".join(
        "%s (%d/%d)" % (pct(c[0], c[1]), c[0], c[1]) for c in cells) + " |")
    out.append("| CRS all six, negative stages (false positives) | " + " | ".join(
        "%s (%d/%d)" % (pct(c[2], c[3]), c[2], c[3]) for c in cells) + " |")
    out.append("| requests / wall time | " + " | ".join(
        "%d / %.1f s" % (r["total_requests"], r["wall_seconds"]) for r in results) + " |")
    out.append("")
    return out


def measure_target(label, url, sets, args, details):
    client = Client(url, args.timeout)
    blocked_set = set(args.blocked)
    res_sets = []
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for s in sets:
            statuses, dt = run_set(client, pool, s, details)
            r = summarise(s, statuses, dt, blocked_set)
            res_sets.append(r)
            print("  %-10s %-14s %5d requests  %5d blocked  %6.1f s  %s" % (
                label, s["key"], r["requests"], r["blocked"], dt,
                dict(r["statuses"])), file=sys.stderr)
            errs = sum(v for k, v in r["statuses"].items() if k.startswith("error"))
            if errs:
                print("  warning: %d transport errors in %s" % (errs, s["key"]), file=sys.stderr)
            if "429" in r["statuses"]:
                print("  warning: 429 answers in %s: a rate limit is on; results are not "
                      "detection" % s["key"], file=sys.stderr)
    wall = time.monotonic() - t0
    crs = []
    for r in res_sets:
        if r["key"].startswith("crs-") and r["key"].endswith("+"):
            neg = next(x for x in res_sets if x["key"] == r["key"][:-1] + "-")
            crs.append({"name": r["title"].split(" ")[1], "positive": r, "negative": neg})
    return OrderedDict([
        ("label", label), ("url", url),
        ("started", started),
        ("finished", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        ("wall_seconds", round(wall, 2)),
        ("total_requests", sum(r["requests"] for r in res_sets)),
        ("config", OrderedDict([("blocked_statuses", sorted(blocked_set)),
                                ("concurrency", args.concurrency), ("host", args.host),
                                ("max_per_set", args.max_per_set), ("timeout", args.timeout),
                                ("corpora", os.path.abspath(args.corpora))])),
        ("sets", res_sets),
        ("crs", crs),
    ])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", action="append", default=[],
                    help="LABEL=URL (repeatable), e.g. modsec=http://127.0.0.1:18092")
    ap.add_argument("--url", help="shorthand for one target labelled 'target'")
    ap.add_argument("--corpora", default="/work/shared/corpora")
    ap.add_argument("--out", help="output prefix: writes OUT.json and OUT.md")
    ap.add_argument("--blocked", default="403",
                    help="comma-separated statuses counted as blocked (default 403)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--host", default="localhost", help="Host header for every request")
    ap.add_argument("--max-per-set", type=int, default=0,
                    help="sample sets larger than this evenly by index (0 = every request)")
    ap.add_argument("--sets", help="comma-separated set keys or prefixes to run (default all)")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--details", help="write one JSON line per request (target, set, id, status)")
    ap.add_argument("--compare", nargs="+", metavar="JSON",
                    help="print a side-by-side table from earlier outputs and exit")
    args = ap.parse_args()

    if args.compare:
        results = []
        for p in args.compare:
            with open(p) as f:
                d = json.load(f)
            results.extend(d["targets"])
        sys.stdout.write("\n".join(side_by_side(results)) + "\n")
        return

    targets = []
    for t in args.target:
        label, sep, url = t.partition("=")
        if not sep:
            sys.exit("measure.py: --target wants LABEL=URL")
        targets.append((label, url))
    if args.url:
        targets.append(("target", args.url))
    if not targets:
        ap.error("give --target LABEL=URL or --url URL")
    args.blocked = [b.strip() for b in args.blocked.split(",") if b.strip()]

    t0 = time.monotonic()
    sets = build_sets(args.corpora, args.host, args.max_per_set)
    if args.sets:
        want = [w.strip() for w in args.sets.split(",")]
        sets = [s for s in sets if any(s["key"].startswith(w) for w in want)]
    print("built %d sets, %d requests per target in %.1f s" % (
        len(sets), sum(len(s["items"]) for s in sets), time.monotonic() - t0), file=sys.stderr)

    details = [] if args.details else None
    results = []
    for label, url in targets:
        d = [] if details is not None else None
        results.append(measure_target(label, url, sets, args, d))
        if d is not None:
            details.extend((label,) + x for x in d)

    md = markdown(results)
    doc = OrderedDict([("tool", "bench/waf/measure.py"), ("targets", results)])
    if args.out:
        with open(args.out + ".json", "w") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
        with open(args.out + ".md", "w") as f:
            f.write(md)
        print("wrote %s.json and %s.md" % (args.out, args.out), file=sys.stderr)
    if details is not None:
        with open(args.details, "w") as f:
            for label, key, iid, st in details:
                f.write(json.dumps({"target": label, "set": key, "id": iid, "status": st},
                                   ensure_ascii=False) + "\n")
    sys.stdout.write(md)


if __name__ == "__main__":
    main()
