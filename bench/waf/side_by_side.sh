#!/usr/bin/env bash
# bench/waf/side_by_side.sh: rollgate's gateway with the WAF on, side by side with nginx +
# ModSecurity 3 + OWASP CRS 3.3.x (PL1) and nginx as a plain proxy, in one run, on loopback.
#
#   bench/waf/side_by_side.sh            (writes bench/waf/SIDE_BY_SIDE.md and its data files)
#   KEEP=1 bench/waf/side_by_side.sh     (keep the temporary directory: serve.log, access logs, wrk output)
#
# What it does:
#  1. cargo build --release -p rollgate
#  2. starts ONE demo service (`rollgate demo-service --port $DEMO_PORT`) and the peer with
#     bench/waf/peer.sh (nginx plain proxy :18091, the same writing a JSON access log :18094,
#     nginx + ModSecurity + CRS :18092; peer.sh also starts its own `return 200` nginx upstream on
#     :18090), then points the nginx server blocks
#     at the demo service instead of that upstream (the generated peer nginx.conf in PEER_DIR is
#     edited and reloaded; peer.sh itself is unchanged), so that nginx and rollgate proxy to the
#     same program (rollgate's `demo-service`, which answers /api/users etc. and 404/405 elsewhere);
#  3. starts `rollgate serve` in a temporary directory with app `api` (run = this build's
#     `demo-service`) released into four environments: `bench` with
#     `[env.bench.edge] waf = { mode = "block" }, rate_limit = false` (paranoia normal, default
#     request limits; every corpus request comes from 127.0.0.1, so a per-IP rate limit would
#     measure the limiter, not the WAF), `full` (the WAF, both rate limits, an API key), `signed`
#     (the same with HMAC signatures instead of the key) and `plain` with no edge table (to
#     isolate the edge cost);
#  4. bench/waf/measure.py on every corpus set against rollgate-edge and nginx-modsec-crs, with
#     rollgate-plain and nginx-plain as controls (one run, same sets, targets one after the other);
#  5. bench/waf/throughput.sh against nginx-plain, nginx-plain-logged, rollgate-plain,
#     rollgate-edge, rollgate-full, nginx-modsec-crs (wrk -t2 -c64 -d10s, ROUNDS interleaved
#     rounds, CPU µs/request of the proxy processes: the peer's nginx workers, the `rollgate
#     serve` process; never the upstream; ratios against nginx-plain and nginx-plain-logged);
#  5b. the same rounds again against the two plain nginx and the three rollgate gateways with
#     bench/waf/varied.lua (requests that all differ: new query values each, 24 User-Agents);
#  5c. and with bench/waf/signed.lua (every request newly HMAC-signed) against the two plain
#     nginx, rollgate-full and rollgate-signed (signatures instead of the API key);
#  6. writes bench/waf/SIDE_BY_SIDE.md (commands, machine, versions, tables),
#     bench/waf/side-by-side-measure.json, bench/waf/side-by-side-throughput.md,
#     bench/waf/side-by-side-throughput-varied.md and bench/waf/side-by-side-throughput-signed.md;
#  7. stops everything it started (serve and its instances, the demo service, the peer).
#
# Environment: CORPORA (/work/shared/corpora), DEMO_PORT (18093), ROUNDS (3), DURATION (10s),
# THREADS (2), CONNS (64), MEASURE_SETS (all; e.g. "libinj,crs" for a quick partial run),
# MAX_PER_SET (0 = every request), OUT (bench/waf; where the three outputs go).
# Needs: cargo, wrk, jq, python3 with PyYAML, nginx + ModSecurity packages (peer.sh installs them).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/bench/waf"
CORPORA=${CORPORA:-/work/shared/corpora}
DEMO_PORT=${DEMO_PORT:-18093}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
MEASURE_SETS=${MEASURE_SETS:-}
MAX_PER_SET=${MAX_PER_SET:-0}
OUT=${OUT:-$HERE}
export PEER_DIR=${PEER_DIR:-/tmp/rollgate-waf-peer}
PLAIN_PORT=${PEER_PLAIN_PORT:-18091}
MODSEC_PORT=${PEER_MODSEC_PORT:-18092}
LOGGED_PORT=${PEER_LOGGED_PORT:-18094}
UP_PORT=${PEER_UPSTREAM_PORT:-18090}

log() { echo "side-by-side: $*" >&2; }
. "$ROOT/bench/lib.sh"
need_tools cargo wrk jq python3
python3 -c 'import yaml' 2>/dev/null || { log "python3 needs PyYAML (python3-yaml)"; exit 1; }
[[ -d $CORPORA ]] || { log "no corpora at $CORPORA"; exit 1; }

WORK=$(mktemp -d /tmp/rollgate-waf-side.XXXXXX)
MARK="rollgate-waf-side-$$"
SERVE_PID=""
DEMO_PID=""
PEER_STARTED=0

stop_pid() { # pid: TERM, wait up to 30 s, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop on TERM; killing"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local code=$?
    trap - EXIT INT TERM
    if [[ -n $SERVE_PID ]]; then stop_pid "$SERVE_PID"; fi
    local left i
    for i in $(seq 1 50); do
        [[ -z "$(marked SBS_MARK "$MARK")" ]] && break
        sleep 0.1
    done
    left=$(marked SBS_MARK "$MARK")
    if [[ -n $left ]]; then
        log "instances left after serve stopped: $left (killing them)"
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
        code=1
    fi
    if [[ -n $DEMO_PID ]]; then stop_pid "$DEMO_PID"; fi
    if [[ $PEER_STARTED == 1 ]]; then "$HERE/peer.sh" stop || true; fi
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

get() { # url -> "STATUS BODY" (Host: localhost, browser UA)
    python3 - "$1" <<'EOF'
import http.client, sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
import os
h = {"Host": "localhost", "User-Agent": "Mozilla/5.0", "Accept": "*/*"}
if os.environ.get("KEY"):
    h["X-API-Key"] = os.environ["KEY"]
c.request("GET", u.path + ("?" + u.query if u.query else ""), headers=h)
r = c.getresponse()
print(r.status, r.read().decode("utf-8", "replace").replace("\n", " ")[:200])
EOF
}

START_UTC=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 1. build ---------------------------------------------------------------------------------
build_rollgate "$ROOT"

# --- 2. the shared upstream and the peer --------------------------------------------------------
log "starting the demo service on 127.0.0.1:$DEMO_PORT (upstream of both nginx server blocks)"
"$BIN" demo-service --port "$DEMO_PORT" >"$WORK/demo-service.log" 2>&1 &
DEMO_PID=$!
wait_port "$DEMO_PORT"

log "starting the peer (bench/waf/peer.sh)"
PEER_STARTED=1
"$HERE/peer.sh" start >"$WORK/peer-urls.txt"
# Point both server blocks of the peer at the demo service, then reload gracefully.
sed -i "s/server 127.0.0.1:$UP_PORT;/server 127.0.0.1:$DEMO_PORT;/" "$PEER_DIR/peer/nginx.conf"
grep -q "server 127.0.0.1:$DEMO_PORT;" "$PEER_DIR/peer/nginx.conf" || { log "could not repoint the peer"; exit 1; }
nginx -p "$PEER_DIR/peer" -c "$PEER_DIR/peer/nginx.conf" -t -q
OLD_WORKERS=$("$HERE/peer.sh" pids)
nginx -p "$PEER_DIR/peer" -c "$PEER_DIR/peer/nginx.conf" -s reload
for _ in $(seq 1 100); do # old workers quit once idle
    alive=0
    for p in ${OLD_WORKERS//,/ }; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.1
done
sleep 0.5
NGINX_WORKERS=$("$HERE/peer.sh" pids)

# --- 3. rollgate serve with two environments --------------------------------------------------
cat >"$WORK/rollgate.toml" <<EOF
[server]
control = "127.0.0.1:0"

[app.api]
run = "'$BIN' demo-service"
env = { SBS_MARK = "$MARK" }
stop_grace = "5s"
health = { path = "/health", interval = "200ms", timeout = "200ms", healthy = 2, unhealthy = 2, deadline = "20s" }
smoke = [{ path = "/api/users", status = 200, body_contains = "Ada" }]

# The gateway with edge security: the WAF in block mode at the default (normal) paranoia,
# default request limits, no per-IP rate limit (every corpus request comes from 127.0.0.1).
[env.bench]
listen = "127.0.0.1:0"
monitor = "1s"

[env.bench.edge]
waf = { mode = "block" }
rate_limit = false

# The full-security gateway for the throughput rounds: the WAF as in bench, the per-IP rate
# limit and an API key on every route with its per-key rate limit, both limits far above what
# wrk sends so that they are paid for on every request and never answer 429.
[env.full]
listen = "127.0.0.1:0"
monitor = "1s"

[env.full.edge]
waf = { mode = "block" }
rate_limit = { requests = 1000000, per = "1s" }

[env.full.edge.auth]
routes = [{ prefix = "/", auth = "api_key" }]
keys = [{ id = "bench", secret_env = "SBS_API_KEY", use = "api_key" }]
rate_limit = { requests = 1000000, per = "1s" }

# rollgate-full with an HMAC signature on every route instead of the API key (the throughput
# pass with bench/waf/signed.lua). A signature is accepted once and remembered for the 5-minute
# window: the replay cache at its maximum holds what ~50k signed requests/s for the rounds leave.
[env.signed]
listen = "127.0.0.1:0"
monitor = "1s"

[env.signed.edge]
waf = { mode = "block" }
rate_limit = { requests = 1000000, per = "1s" }

[env.signed.edge.auth]
routes = [{ prefix = "/", auth = "signature" }]
keys = [{ id = "bench-signer", secret_env = "SBS_SIGNING_KEY", use = "signature" }]
rate_limit = { requests = 1000000, per = "1s" }
replay_cache = 10000000

# The same gateway and app without an edge table: no IP, rate or WAF checks.
[env.plain]
listen = "127.0.0.1:0"
monitor = "1s"
EOF
rg() { "$BIN" --config "$WORK/rollgate.toml" "$@"; }
# The API key of env full, only in the environment of serve and of wrk's header.
export SBS_API_KEY="sbs-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# The signing secret of env signed, in the environment of serve and of wrk's signed.lua.
export SBS_SIGNING_KEY="sbs-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export SIGNED_KEY_ID=bench-signer SIGNED_SECRET="$SBS_SIGNING_KEY"
rg validate >/dev/null
"$BIN" serve --config "$WORK/rollgate.toml" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 300); do
    [[ -s "$WORK/.rollgate/serve.json" ]] && jq -e '.gateways.bench and .gateways.plain and .gateways.full and .gateways.signed' "$WORK/.rollgate/serve.json" >/dev/null 2>&1 && break
    kill -0 "$SERVE_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
    sleep 0.1
done
GW_EDGE=$(jq -r '.gateways.bench' "$WORK/.rollgate/serve.json")
GW_PLAIN=$(jq -r '.gateways.plain' "$WORK/.rollgate/serve.json")
GW_FULL=$(jq -r '.gateways.full' "$WORK/.rollgate/serve.json")
GW_SIGNED=$(jq -r '.gateways.signed' "$WORK/.rollgate/serve.json")
mkdir -p "$WORK/artifact"
echo v1 >"$WORK/artifact/RELEASE"
rg deploy api --env bench --artifact "$WORK/artifact" >"$WORK/deploy-bench.txt" 2>&1 || { cat "$WORK/deploy-bench.txt" >&2; exit 1; }
rg deploy api --env plain --artifact "$WORK/artifact" >"$WORK/deploy-plain.txt" 2>&1 || { cat "$WORK/deploy-plain.txt" >&2; exit 1; }
rg deploy api --env full --artifact "$WORK/artifact" >"$WORK/deploy-full.txt" 2>&1 || { cat "$WORK/deploy-full.txt" >&2; exit 1; }
rg deploy api --env signed --artifact "$WORK/artifact" >"$WORK/deploy-signed.txt" 2>&1 || { cat "$WORK/deploy-signed.txt" >&2; exit 1; }
log "serve is up (pid $SERVE_PID); gateways: bench (edge) $GW_EDGE, plain $GW_PLAIN"

# --- sanity: every target proxies the clean request to a demo service; the WAFs block SQLi -----
NGINX_PLAIN=http://127.0.0.1:$PLAIN_PORT
NGINX_MODSEC=http://127.0.0.1:$MODSEC_PORT
NGINX_LOGGED=http://127.0.0.1:$LOGGED_PORT
RG_PLAIN=http://$GW_PLAIN
RG_EDGE=http://$GW_EDGE
RG_FULL=http://$GW_FULL
RG_SIGNED=http://$GW_SIGNED
SQLI='/?q=1%27%20or%20%271%27%3D%271'
{
    for t in "nginx-plain $NGINX_PLAIN" "nginx-plain-logged $NGINX_LOGGED" "rollgate-plain $RG_PLAIN" "rollgate-edge $RG_EDGE" "nginx-modsec-crs $NGINX_MODSEC"; do
        set -- $t
        echo "$1 clean: $(get "$2/api/users?id=42")"
        echo "$1 /version: $(get "$2/version")"
        echo "$1 sqli: $(get "$2$SQLI" | cut -c1-80)"
    done
    echo "rollgate-full no key: $(get "$RG_FULL/api/users?id=42" | cut -c1-60)"
    echo "rollgate-full with key: $(KEY="rg_bench_$SBS_API_KEY" get "$RG_FULL/api/users?id=42" | cut -c1-60)"
    echo "rollgate-signed with key only: $(KEY="rg_bench_$SBS_API_KEY" get "$RG_SIGNED/api/users?id=42" | cut -c1-60)"
    # One signed.lua request per target, each newly signed: every one must be answered 200.
    for t in "nginx-plain $NGINX_PLAIN" "rollgate-full $RG_FULL" "rollgate-signed $RG_SIGNED"; do
        set -- $t
        echo "$1 signed.lua: $(wrk -t1 -c1 -d1s -s "$HERE/signed.lua" -H "Host: localhost" \
            -H "X-API-Key: rg_bench_$SBS_API_KEY" "$2/api/users" 2>&1 | tr -s ' ' |
            grep -E 'requests in|Non-2xx' | tr '\n' ' ')"
    done
} >"$WORK/sanity.txt"
cat "$WORK/sanity.txt" >&2
grep -q "^rollgate-full no key: 401" "$WORK/sanity.txt" || { log "rollgate-full does not ask for the API key"; exit 1; }
grep -q "^rollgate-full with key: 200" "$WORK/sanity.txt" || { log "rollgate-full does not accept the API key"; exit 1; }
grep -q "^rollgate-signed with key only: 401" "$WORK/sanity.txt" || { log "rollgate-signed does not ask for a signature"; exit 1; }
for t in nginx-plain rollgate-full rollgate-signed; do
    grep -E "^$t signed.lua: +[0-9]+ requests in" "$WORK/sanity.txt" | grep -q -v "Non-2xx" || { log "$t does not answer signed.lua's requests with 200"; exit 1; }
done
grep -q "^nginx-plain /version: 200 .*\"pid\":$DEMO_PID" "$WORK/sanity.txt" || { log "nginx does not reach the demo service"; exit 1; }
grep -q "^nginx-modsec-crs sqli: 403" "$WORK/sanity.txt" || { log "ModSecurity does not block the probe"; exit 1; }
grep -q "^rollgate-edge sqli: 403" "$WORK/sanity.txt" || { log "rollgate's WAF does not block the probe"; exit 1; }
for t in nginx-plain nginx-plain-logged rollgate-plain rollgate-edge nginx-modsec-crs; do
    grep -q "^$t clean: 200" "$WORK/sanity.txt" || { log "$t does not answer the clean request with 200"; exit 1; }
done

# --- versions and machine ---------------------------------------------------------------------
{
    echo "rollgate: $("$BIN" --version) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- crates examples 2>/dev/null || echo ', crates/ or examples/ modified in the working tree'))"
    echo "rustc: $(rustc --version)"
    "$HERE/peer.sh" versions
    echo "python3: $(python3 --version 2>&1 | cut -d' ' -f2), PyYAML $(python3 -c 'import yaml; print(yaml.__version__)')"
} >"$WORK/versions.txt"
MACHINE="$(. /etc/os-release && echo "$PRETTY_NAME"), $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/^Mem:/{print $2}') GB RAM, kernel $(uname -r)"

# --- 4. detection and false positives -----------------------------------------------------------
MEASURE_ARGS=(--target "rollgate-edge=$RG_EDGE" --target "nginx-modsec-crs=$NGINX_MODSEC"
    --target "rollgate-plain=$RG_PLAIN" --target "nginx-plain=$NGINX_PLAIN"
    --corpora "$CORPORA" --out "$WORK/measure" --max-per-set "$MAX_PER_SET")
if [[ -n $MEASURE_SETS ]]; then MEASURE_ARGS+=(--sets "$MEASURE_SETS"); fi
log "measure.py (4 targets, one after the other)"
MEASURE_T0=$(date -u +%H:%M:%S)
python3 "$HERE/measure.py" "${MEASURE_ARGS[@]}" >"$WORK/measure.stdout" 2>"$WORK/measure.stderr" || {
    cat "$WORK/measure.stderr" >&2
    exit 1
}
MEASURE_T1=$(date -u +%H:%M:%S)
cp "$WORK/measure.json" "$OUT/side-by-side-measure.json"

# Which rollgate rules blocked the benign requests (from the gateway's access log).
python3 - "$WORK/.rollgate/logs/access-bench.log" >"$WORK/edge-rules.md" <<'EOF' || true
import json, sys
from collections import Counter
c = Counter()
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    for d in e.get("edge", []):
        if d.get("action") == "block":
            c[d.get("rule")] += 1
print("| rule | blocked decisions (all corpus requests to rollgate-edge) |")
print("|---|---|")
for k, v in c.most_common():
    print("| %s | %d |" % (k, v))
EOF

# --- 5. throughput ----------------------------------------------------------------------------
# One pass of bench/waf/throughput.sh with this run's wrk settings, the same X-API-Key for every
# target (only rollgate-full checks it), nginx-plain-logged as the second reference and the CPU
# of each target's proxy processes (the peer's nginx workers, or the serve process); raw output
# in $WORK/NAME, its table copied to $OUT/side-by-side-NAME.md.
throughput_pass() { # NAME [throughput.sh options] LABEL=URL...
    local name=$1 arg
    shift
    local args=(-t "$THREADS" -c "$CONNS" -d "$DURATION" -r "$ROUNDS" -o "$WORK/$name"
        -H "X-API-Key: rg_bench_$SBS_API_KEY" -b nginx-plain-logged)
    for arg in "$@"; do
        case $arg in
        nginx-*=http*) args+=(-P "${arg%%=*}=$NGINX_WORKERS") ;;
        rollgate-*=http*) args+=(-P "${arg%%=*}=$SERVE_PID") ;;
        esac
    done
    "$HERE/throughput.sh" "${args[@]}" "$@" >"$WORK/$name.stdout" 2>"$WORK/$name.stderr" || {
        cat "$WORK/$name.stderr" >&2
        exit 1
    }
    cp "$WORK/$name/throughput.md" "$OUT/side-by-side-$name.md"
}

log "throughput.sh ($ROUNDS interleaved rounds, wrk -t$THREADS -c$CONNS -d$DURATION)"
THR_T0=$(date -u +%H:%M:%S)
throughput_pass throughput \
    "nginx-plain=$NGINX_PLAIN" "nginx-plain-logged=$NGINX_LOGGED" "rollgate-plain=$RG_PLAIN" "rollgate-edge=$RG_EDGE" \
    "rollgate-full=$RG_FULL" "nginx-modsec-crs=$NGINX_MODSEC"
THR_T1=$(date -u +%H:%M:%S)

# 5b. The same against requests that all differ (bench/waf/varied.lua: new query values on every
# request, 24 browser User-Agents in turn), where the WAF's memo helps least. ModSecurity is
# left out: it would only add minutes at 1k req/s.
log "throughput.sh, varied requests ($ROUNDS interleaved rounds)"
VAR_T0=$(date -u +%H:%M:%S)
throughput_pass throughput-varied -s "$HERE/varied.lua" \
    "nginx-plain=$NGINX_PLAIN" "nginx-plain-logged=$NGINX_LOGGED" "rollgate-plain=$RG_PLAIN" "rollgate-edge=$RG_EDGE" \
    "rollgate-full=$RG_FULL"
VAR_T1=$(date -u +%H:%M:%S)

# 5c. Signed requests (bench/waf/signed.lua: every request newly signed with HMAC-SHA256, a new
# nonce in its query) against the plain nginx, rollgate-full (API key; it ignores the signature
# headers, which its WAF still reads) and rollgate-signed (the signature checked and remembered
# instead of the key). The same script for every target, so the client's signing costs all alike.
log "throughput.sh, signed requests ($ROUNDS interleaved rounds)"
SIG_T0=$(date -u +%H:%M:%S)
throughput_pass throughput-signed -s "$HERE/signed.lua" \
    "nginx-plain=$NGINX_PLAIN" "nginx-plain-logged=$NGINX_LOGGED" "rollgate-full=$RG_FULL" \
    "rollgate-signed=$RG_SIGNED"
SIG_T1=$(date -u +%H:%M:%S)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 6. the report ----------------------------------------------------------------------------
python3 - "$WORK/measure.json" >"$WORK/detection.md" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
T = {t["label"]: t for t in d["targets"]}
a, b = T["rollgate-edge"], T["nginx-modsec-crs"]
ctl = [T[k] for k in ("rollgate-plain", "nginx-plain") if k in T]

def pct(n, m):
    return "%.1f %%" % (100.0 * n / m) if m else "–"

def other(s):
    o = ["%s×%d" % (k, v) for k, v in s["statuses"].items() if k not in ("200", "403")]
    return ", ".join(o) if o else "–"

print("| set | requests | rollgate edge: blocked | nginx + ModSecurity + CRS PL1: blocked | controls (plain rollgate / plain nginx): 403s |")
print("|---|---|---|---|---|")
for sa in a["sets"]:
    sb = next(x for x in b["sets"] if x["key"] == sa["key"])
    what = "detected" if sa["kind"] == "detection" else "blocked = false positive"
    title = sa["title"]
    cells = " / ".join(str(next(x for x in c["sets"] if x["key"] == sa["key"])["blocked"]) for c in ctl)
    print("| %s (%s) | %d | %d (%s) | %d (%s) | %s |" % (
        title, what, sa["requests"], sa["blocked"], pct(sa["blocked"], sa["requests"]),
        sb["blocked"], pct(sb["blocked"], sb["requests"]), cells or "–"))
tot = {}
for t in (a, b):
    c = [0, 0, 0, 0]
    for fam in t["crs"]:
        c[0] += fam["positive"]["blocked"]; c[1] += fam["positive"]["requests"]
        c[2] += fam["negative"]["blocked"]; c[3] += fam["negative"]["requests"]
    tot[t["label"]] = c
ca, cb = tot["rollgate-edge"], tot["nginx-modsec-crs"]
print("| CRS suite, all six families, positive stages (detected) | %d | %d (%s) | %d (%s) | |" % (
    ca[1], ca[0], pct(ca[0], ca[1]), cb[0], pct(cb[0], cb[1])))
print("| CRS suite, all six families, negative stages (blocked = false positive) | %d | %d (%s) | %d (%s) | |" % (
    ca[3], ca[2], pct(ca[2], ca[3]), cb[2], pct(cb[2], cb[3])))
print()
print("Statuses other than 200 and 403, per target and set (404/405 come from the demo service, "
      "which both gateways proxy to; 400/414 from the proxy's HTTP layer or ModSecurity):")
print()
print("| set | " + " | ".join(t["label"] for t in [a, b] + ctl) + " |")
print("|---|" + "---|" * (2 + len(ctl)))
for sa in a["sets"]:
    row = [other(next(x for x in t["sets"] if x["key"] == sa["key"])) for t in [a, b] + ctl]
    print("| %s | %s |" % (sa["title"], " | ".join(row)))
print()
print("| target | requests | wall time |")
print("|---|---|---|")
for t in [a, b] + ctl:
    print("| %s | %d | %.1f s |" % (t["label"], t["total_requests"], t["wall_seconds"]))
EOF

{
    echo "# rollgate's gateway with the WAF, side by side with nginx + ModSecurity + CRS (PL1)"
    echo
    echo "Generated by \`bench/waf/side_by_side.sh\` (one run, $START_UTC to $(date -u +%Y-%m-%dT%H:%M:%SZ)). Machine:"
    echo "$MACHINE; loopback only. Load average (1/5/15 min) at the start: $LOAD_START; at the end of"
    echo "the throughput rounds: $LOAD_END (the machine may be shared with other sessions' builds)."
    echo
    echo "## Versions"
    echo
    echo '```'
    cat "$WORK/versions.txt"
    echo '```'
    echo
    echo "## Setup"
    echo
    echo "- One upstream for everyone: \`rollgate demo-service\` (this build). nginx's three server blocks"
    echo "  (\`bench/waf/peer.sh\`, 2 workers, \`reuseport\`, keep-alive 64 to the upstream) proxy to one"
    echo "  instance started by this script on 127.0.0.1:$DEMO_PORT; rollgate's gateways proxy to the"
    echo "  instances \`rollgate serve\` runs for app \`api\` (\`run = \"'<binary>' demo-service\"\`), one per"
    echo "  environment. The demo service answers \`/api/users\` (200) and 404 (405 for other methods than"
    echo "  GET/HEAD) elsewhere; only 403 counts as blocked."
    echo "- rollgate-edge: \`[env.bench.edge] waf = { mode = \"block\" }, rate_limit = false\` (every detector"
    echo "  on, paranoia \`normal\`, default request limits). rollgate-plain: the same app in a second"
    echo "  environment with no edge table. rollgate-full (throughput only): the WAF as rollgate-edge, the"
    echo "  per-IP rate limit, an API key (\`X-API-Key\`, checked against its SHA-256 in constant time)"
    echo "  on every route and the per-key rate limit, both limits set far above the load so they are"
    echo "  checked on every request and never answer 429. All gateways run in the one \`rollgate serve\`"
    echo "  process ($(nproc) serving threads each, \`server.gateway_workers\` unset), which writes its"
    echo "  access log (one JSON line per request) as it always does."
    echo "- nginx-plain and nginx-modsec-crs write no access log. nginx-plain-logged is nginx-plain"
    echo "  writing one JSON line per request (time, request id, method, path, client, status,"
    echo "  durations, bytes: what rollgate's line holds, less the edge fields) with nginx's buffered"
    echo "  writes (\`buffer=64k flush=1s\`): the like-for-like reference, since rollgate always logs."
    echo "- ModSecurity: Debian's modsecurity.conf with \`SecRuleEngine On\`, CRS 3.3.4 with Debian's"
    echo "  crs-setup.conf (PL1, inbound anomaly threshold 5), as in PEER_RESULTS.md."
    echo
    echo "Sanity probes before measuring (status and start of the body):"
    echo
    echo '```'
    cat "$WORK/sanity.txt"
    echo '```'
    echo
    echo "## Detection and false positives ($MEASURE_T0–$MEASURE_T1 UTC)"
    echo
    echo '```'
    echo "python3 bench/waf/measure.py --target rollgate-edge=$RG_EDGE \\"
    echo "    --target nginx-modsec-crs=$NGINX_MODSEC --target rollgate-plain=$RG_PLAIN \\"
    echo "    --target nginx-plain=$NGINX_PLAIN --corpora $CORPORA --max-per-set $MAX_PER_SET${MEASURE_SETS:+ --sets $MEASURE_SETS}"
    echo '```'
    echo
    cat "$WORK/detection.md"
    echo
    echo "Rules of rollgate's edge behind its 403s (access log of the \`bench\` gateway, every request"
    echo "measure.py sent to it):"
    echo
    cat "$WORK/edge-rules.md"
    echo
    echo "Per-target tables and the CRS families as measure.py prints them (raw JSON:"
    echo "\`bench/waf/side-by-side-measure.json\`):"
    echo
    sed 's/^## /### /' "$WORK/measure.md"
    echo
    echo "## Throughput, p99 and CPU ($THR_T0–$THR_T1 UTC)"
    echo
    echo '```'
    echo "bench/waf/throughput.sh -t $THREADS -c $CONNS -d $DURATION -r $ROUNDS -H 'X-API-Key: <key>' -b nginx-plain-logged \\"
    echo "    -P nginx-plain=<peer nginx workers> -P nginx-plain-logged=<peer nginx workers> -P rollgate-plain=<serve pid> \\"
    echo "    -P rollgate-edge=<serve pid> -P rollgate-full=<serve pid> -P nginx-modsec-crs=<peer nginx workers> \\"
    echo "    nginx-plain=$NGINX_PLAIN nginx-plain-logged=$NGINX_LOGGED rollgate-plain=$RG_PLAIN \\"
    echo "    rollgate-edge=$RG_EDGE rollgate-full=$RG_FULL nginx-modsec-crs=$NGINX_MODSEC"
    echo '```'
    echo
    echo "CPU µs/request counts the proxy only: the two peer nginx workers, or the whole \`rollgate serve\`"
    echo "process (both gateways, the control plane, the access-log writer); the demo service is not"
    echo "included on either side."
    echo
    cat "$WORK/throughput/throughput.md"
    echo
    echo "## Throughput with varied requests ($VAR_T0–$VAR_T1 UTC)"
    echo
    echo "The same rounds with \`-s bench/waf/varied.lua\`: every request has new query values (an id,"
    echo "a search word with a number, a sort key) and one of 24 browser User-Agents in turn, so the"
    echo "WAF's per-thread memo only helps with the headers, the path and the parameter names."
    echo
    cat "$WORK/throughput-varied/throughput.md"
    echo
    echo "## Throughput with signed requests ($SIG_T0–$SIG_T1 UTC)"
    echo
    echo "The same rounds with \`-s bench/waf/signed.lua\`: wrk signs every request (HMAC-SHA256 over"
    echo "the canonical request, OpenSSL's through LuaJIT's FFI; a new nonce in the query, the current"
    echo "\`X-Timestamp\`). rollgate-signed is rollgate-full with \`auth = \"signature\"\` on every route"
    echo "instead of the API key (\`replay_cache = 10000000\`): it recomputes the body hash and the"
    echo "HMAC, checks the window and remembers each signature. The other targets get the same requests"
    echo "and ignore the signature (rollgate-full checks the API key as before)."
    echo
    cat "$WORK/throughput-signed/throughput.md"
} >"$OUT/SIDE_BY_SIDE.md"

log "wrote $OUT/SIDE_BY_SIDE.md, $OUT/side-by-side-measure.json, $OUT/side-by-side-throughput{,-varied,-signed}.md"
cat "$WORK/detection.md"
cat "$WORK/throughput/throughput.md"
cat "$WORK/throughput-varied/throughput.md"
cat "$WORK/throughput-signed/throughput.md"
# --- 7. cleanup (trap) ------------------------------------------------------------------------
