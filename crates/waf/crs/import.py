#!/usr/bin/env python3
"""Imports the OWASP CRS SQLi (942) and XSS (941) rules into rollgate-waf's vendored data file.

Usage (from the repository root):

    python3 crates/waf/crs/import.py /work/shared/corpora/crs-rules > crates/waf/crs/rules-941-942.tsv

Reads rules/REQUEST-941-APPLICATION-ATTACK-XSS.conf and rules/REQUEST-942-APPLICATION-ATTACK-SQLI.conf
(CRS commit 2cbd1d0, v4.28.0 + 14, Apache-2.0) and writes, for every paranoia level 1 and 2
rule whose operator is @rx, @pm or @contains, one tab-separated line:

    id  pl  severity  targets  transformations  operator  argument  chain  msg

- targets: comma-separated CRS variables, exclusions kept with their '!'
  (e.g. REQUEST_HEADERS,!REQUEST_HEADERS:Cookie); XML targets are dropped (the WAF reads an
  XML body's values as ARGS, which every rule naming XML:/* also reads);
- transformations: comma-separated, without t:none;
- operator: rx, pm or contains; the argument is the regex, the phrase list or the string;
- chain: '-' or 'VARIABLE<space>OPERATOR<space>ARGUMENT' for a chained second rule that
  tests the first rule's match (MATCHED_VARS) or its captures (TX:1 vs %{TX.2});
- msg: the rule's message.

Rules run through libinjection in rollgate-waf (@detectSQLi, @detectXSS), other operators and
paranoia levels 3 and 4 are skipped; what was skipped is printed on stderr. Standard library
only; the output depends on nothing but the two files, so re-running it reproduces the file.
"""

import re
import sys
from pathlib import Path

FILES = [
    "REQUEST-941-APPLICATION-ATTACK-XSS.conf",
    "REQUEST-942-APPLICATION-ATTACK-SQLI.conf",
]
SEVERITIES = {"CRITICAL", "ERROR", "WARNING", "NOTICE"}
MAX_PL = 2
# PL1 rules that rollgate runs only at paranoia level 2 (Paranoia::Strict), because on the
# measured benign sets they add false positives and no detection the other detectors lack
# (crates/waf/examples/corpus.rs with WAF_CORPUS_CRS_EXCLUDE=<id>; docs/edge.md lists them).
DEMOTED_TO_PL2 = {
    942540: "6 of libinjection's 421 tricky-benign lines (a quote, then ';' later: "
    "\"BOOKMAR';[K]]\", \"WOMEN';S ART DEC\"), no PayloadsAllTheThings payload that "
    "nothing else catches",
}
OPERATORS = {"rx", "pm", "contains"}
CHAIN_OPERATORS = {"rx", "!rx", "streq", "!streq"}


def logical_lines(text):
    """Joins backslash continuations; drops comments and blank lines."""
    buf = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1].strip() + " "
        else:
            buf += line.strip()
            yield buf
            buf = ""
    if buf:
        yield buf


def split_secrule(line):
    """'SecRule VARS "OP" "ACTIONS"' -> (vars, op, actions)."""
    m = re.match(r'^SecRule\s+(\S+)\s+"((?:[^"\\]|\\.)*)"\s*(?:"((?:[^"\\]|\\.)*)")?\s*$', line)
    if not m:
        raise ValueError(f"unparsable rule: {line[:120]}")
    return m.group(1), m.group(2), m.group(3) or ""


def split_actions(actions):
    """Splits on commas outside single quotes."""
    out, cur, quoted = [], "", False
    for c in actions:
        if c == "'":
            quoted = not quoted
            cur += c
        elif c == "," and not quoted:
            out.append(cur.strip())
            cur = ""
        else:
            cur += c
    if cur.strip():
        out.append(cur.strip())
    return out


def unquote(v):
    return v[1:-1] if len(v) >= 2 and v[0] == "'" and v[-1] == "'" else v


def parse_operator(op):
    negated = op.startswith("!")
    if negated:
        op = op[1:]
    if not op.startswith("@"):
        return ("!" if negated else "") + "rx", op
    name, _, arg = op[1:].partition(" ")
    # The config format escapes double quotes inside the operator string.
    return ("!" if negated else "") + name, arg.replace('\\"', '"')


def parse(path):
    rules, pending = [], None
    for line in logical_lines(path.read_text(encoding="utf-8")):
        if not line.startswith("SecRule"):
            continue
        variables, op, actions = split_secrule(line)
        acts = split_actions(actions)
        if pending is not None:
            pending["chain"].append((variables, op, acts))
            if not any(a == "chain" for a in acts):
                rules.append(pending)
                pending = None
            continue
        rule = {"vars": variables, "op": op, "actions": acts, "chain": []}
        if any(a == "chain" for a in acts):
            pending = rule
        else:
            rules.append(rule)
    return rules


def describe(rule):
    acts = rule["actions"]
    get = lambda key: [unquote(a.split(":", 1)[1]) for a in acts if a.startswith(key + ":")]
    ids = get("id")
    pl = [int(t.rsplit("/", 1)[1]) for t in get("tag") if t.startswith("paranoia-level/")]
    sev = get("severity")
    return {
        "id": int(ids[0]) if ids else 0,
        "pl": pl[0] if pl else 0,
        "severity": sev[0] if sev else "",
        "msg": get("msg")[0] if get("msg") else "",
        "transforms": [t for t in get("t") if t != "none"],
        "multimatch": "multiMatch" in acts,
        "tags": get("tag"),
    }


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: import.py <crs-rules dir>")
    root = Path(sys.argv[1])
    out, skipped = [], []
    for name in FILES:
        for rule in parse(root / "rules" / name):
            d = describe(rule)
            if d["id"] == 0 or not d["severity"]:
                continue  # flow control (paranoia-level skips, 941010's ctl), not a detection
            op, arg = parse_operator(rule["op"])
            if d["id"] in DEMOTED_TO_PL2 and d["pl"] == 1:
                d["pl"] = 2
            if d["pl"] > MAX_PL:
                skipped.append((d["id"], f"paranoia level {d['pl']}"))
                continue
            if op not in OPERATORS:
                skipped.append((d["id"], f"operator @{op} (libinjection in rollgate-waf)"
                                if op in ("detectSQLi", "detectXSS") else f"operator @{op}"))
                continue
            if d["severity"] not in SEVERITIES:
                raise ValueError(f"{d['id']}: severity {d['severity']}")
            chain = "-"
            if rule["chain"]:
                if len(rule["chain"]) > 1:
                    skipped.append((d["id"], "chain of more than two rules"))
                    continue
                cvars, cop, _ = rule["chain"][0]
                cop_name, carg = parse_operator(cop)
                if cvars not in ("MATCHED_VARS", "TX:1") or cop_name not in CHAIN_OPERATORS:
                    skipped.append((d["id"], f"chain {cvars} {cop}"))
                    continue
                if cop_name.endswith("streq") and carg != "%{TX.2}":
                    skipped.append((d["id"], f"chain {cvars} {cop}"))
                    continue
                chain = f"{cvars} {cop_name} {carg}"
            targets = [v for v in rule["vars"].split("|") if not v.startswith("XML:")]
            transforms = list(d["transforms"])
            if d["multimatch"]:
                transforms.insert(0, "multiMatch")
            if "xss-perf-disable" in d["tags"]:
                transforms.insert(0, "xssPerfDisable")
            fields = [
                str(d["id"]),
                str(d["pl"]),
                d["severity"],
                ",".join(targets),
                ",".join(transforms) or "-",
                op,
                arg,
                chain,
                d["msg"],
            ]
            for f in fields:
                if "\t" in f or "\n" in f or not f:
                    raise ValueError(f"{d['id']}: a field holds a tab, a newline or nothing")
            out.append("\t".join(fields))
    print("# OWASP CRS 941 (XSS) and 942 (SQLi) rules for rollgate-waf, paranoia levels 1 and 2.")
    print("# Generated by crates/waf/crs/import.py from coreruleset/coreruleset commit 2cbd1d0")
    print("# (v4.28.0 + 14, rules marked OWASP_CRS/4.29.0-dev). Do not edit: re-run the script.")
    print("# Copyright the OWASP CRS project; licensed under the Apache License 2.0 (LICENSE here).")
    print("# Flags in the transformations column (not CRS transformations): xssPerfDisable = the")
    print("# rule carries the xss-perf-disable tag (941010 removes REQUEST_FILENAME from it for")
    print("# plain paths); multiMatch = the CRS multiMatch action.")
    for rid, why in sorted(DEMOTED_TO_PL2.items()):
        print(f"# {rid} is paranoia level 1 in CRS, 2 here: {why}.")
    print("# id\tpl\tseverity\ttargets\ttransformations\toperator\targument\tchain\tmsg")
    for line in out:
        print(line)
    for rid, why in skipped:
        print(f"skipped {rid}: {why}", file=sys.stderr)
    print(f"imported {len(out)} rules, skipped {len(skipped)}", file=sys.stderr)


if __name__ == "__main__":
    main()
