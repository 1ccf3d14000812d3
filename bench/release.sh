#!/usr/bin/env bash
# bench/release.sh: the release core under load. Builds rollgate in release mode, runs
# `rollgate serve` with a demo-service app in a temporary directory on loopback, releases v1,
# then keeps wrk running against the gateway while it performs DEPLOYS deploys of new versions
# and two rollbacks. Reports deploy-to-live time (deploy command start -> `switched` event),
# deploy command time, and what the clients saw: requests, non-2xx/3xx responses, socket
# errors, requests/s. Prints a markdown table.
#
# Needs: cargo, wrk, jq, python3 (for the statistics). Loopback only; the load is bounded by
# MAX_LOAD seconds; the server is stopped with SIGTERM at the end and no process is left.
#
# Usage: bench/release.sh            (DEPLOYS=10 THREADS=2 CONNECTIONS=32 by default)
#        KEEP=1 bench/release.sh     (keep the temporary directory with serve.log and wrk output)

set -euo pipefail

DEPLOYS=${DEPLOYS:-10}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
MAX_LOAD=${MAX_LOAD:-300}
TARGET_PATH=${TARGET_PATH:-/api/users}
# Rollbacks right after these deploys (counted from 1).
ROLLBACK_AFTER=(4 8)

ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
need_tools cargo wrk jq python3
build_rollgate "$ROOT"

WORK=$(mktemp -d /tmp/rollgate-bench-XXXXXX)
MARK="rollgate-bench-$$"
SERVE_PID=""
WRK_PID=""

cleanup() {
    local code=$?
    if [[ -n "$WRK_PID" ]] && kill -0 "$WRK_PID" 2>/dev/null; then
        kill -INT "$WRK_PID" 2>/dev/null || true
        wait "$WRK_PID" 2>/dev/null || true
    fi
    if [[ -n "$SERVE_PID" ]] && kill -0 "$SERVE_PID" 2>/dev/null; then
        kill -TERM "$SERVE_PID" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$SERVE_PID" 2>/dev/null || break
            sleep 0.1
        done
        wait "$SERVE_PID" 2>/dev/null || true
    fi
    for _ in $(seq 1 50); do
        [[ -z "$(marked BENCH_MARK "$MARK")" ]] && break
        sleep 0.1
    done
    local left
    left=$(marked BENCH_MARK "$MARK")
    if [[ -n "$left" ]]; then
        echo "warning: instances left after serve stopped: $left (killing them)" >&2
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
        code=1
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$WORK/rollgate.toml" <<EOF
[server]
control = "127.0.0.1:0"

[app.api]
run = "'$BIN' demo-service"
env = { BENCH_MARK = "$MARK" }
stop_grace = "5s"
health = { path = "/health", interval = "200ms", timeout = "200ms", healthy = 2, unhealthy = 2, deadline = "10s" }
smoke = [{ path = "/api/users", status = 200, body_contains = "Ada" }]

[env.staging]
listen = "127.0.0.1:0"
monitor = "2s"
rollback_when = ["error_rate > 5%"]
min_requests = 20
EOF

rg() { "$BIN" --config "$WORK/rollgate.toml" "$@"; }
now() { date +%s.%N; }
artifact() {
    mkdir -p "$WORK/build-$1"
    echo "$1" >"$WORK/build-$1/RELEASE"
    echo "$WORK/build-$1"
}

"$BIN" serve --config "$WORK/rollgate.toml" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 300); do
    [[ -s "$WORK/.rollgate/serve.json" ]] && break
    kill -0 "$SERVE_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
    sleep 0.1
done
GW=$(jq -r '.gateways.staging' "$WORK/.rollgate/serve.json")
echo "serve is up; gateway $GW" >&2

rg deploy api --env staging --artifact "$(artifact v1)" >/dev/null

cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)), math.floor(latency.max)))
end
EOF
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${MAX_LOAD}s" --timeout 5s --latency \
    -s "$WORK/report.lua" "http://$GW$TARGET_PATH" >"$WORK/wrk.out" 2>&1 &
WRK_PID=$!
sleep 2

: >"$WORK/timings"
for i in $(seq 1 "$DEPLOYS"); do
    v=$((i + 1))
    t0=$(now)
    rg deploy api --env staging --artifact "$(artifact "v$v")" --json >"$WORK/deploy-$v.json" \
        || { echo "deploy of v$v failed:" >&2; cat "$WORK/deploy-$v.json" >&2; exit 1; }
    t1=$(now)
    echo "deploy $(jq -r '.id' "$WORK/deploy-$v.json") $t0 $t1" >>"$WORK/timings"
    echo "v$v live" >&2
    for r in "${ROLLBACK_AFTER[@]}"; do
        if [[ "$r" == "$i" ]]; then
            t0=$(now)
            rg rollback api --env staging --json >"$WORK/rollback-$i.json"
            t1=$(now)
            echo "rollback $(jq -r '.live' "$WORK/rollback-$i.json") $t0 $t1" >>"$WORK/timings"
            echo "rolled back to v$(jq -r '.live' "$WORK/rollback-$i.json")" >&2
        fi
    done
done
sleep 2
kill -INT "$WRK_PID"
wait "$WRK_PID" || true
WRK_PID=""
rg history api --env staging --limit 100 --json >"$WORK/history.json"

python3 - "$WORK" "$THREADS" "$CONNECTIONS" "$TARGET_PATH" <<'EOF'
import json, statistics, sys
from datetime import datetime

work, threads, conns, path = sys.argv[1:5]
history = {r["id"]: r for r in json.load(open(f"{work}/history.json"))["rollouts"]}

def ts(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

to_live, to_exit, rollbacks, rows = [], [], [], []
for line in open(f"{work}/timings"):
    kind, ident, t0, t1 = line.split()
    t0, t1 = float(t0), float(t1)
    if kind == "rollback":
        rollbacks.append(t1 - t0)
        continue
    r = history[int(ident)]
    switched = next(e for e in r["events"] if e["kind"] == "switched")
    live = ts(switched["at"]) - t0
    to_live.append(live)
    to_exit.append(t1 - t0)
    rows.append((r["version"], live, t1 - t0, r["outcome"]))

wrk = None
for line in open(f"{work}/wrk.out"):
    if line.startswith("WRK_JSON "):
        wrk = json.loads(line[len("WRK_JSON "):])
if wrk is None:
    sys.exit("no summary from wrk:\n" + open(f"{work}/wrk.out").read())

def mmm(xs):
    return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f} s"

secs = wrk["duration_us"] / 1e6
socket = wrk["connect"] + wrk["read"] + wrk["write"] + wrk["timeout"]
print(f"\n### rollgate release core: {len(to_live)} deploys + {len(rollbacks)} rollbacks under wrk -t{threads} -c{conns} GET {path}\n")
print("| metric | value |")
print("|---|---|")
print(f"| deploy → live (`switched` event), min / median / max | {mmm(to_live)} |")
print(f"| deploy command → exit (includes the 2 s monitor window), min / median / max | {mmm(to_exit)} |")
if rollbacks:
    print(f"| rollback command, min / max | {min(rollbacks):.2f} / {max(rollbacks):.2f} s |")
print(f"| load duration | {secs:.1f} s |")
print(f"| requests | {wrk['requests']} |")
print(f"| non-2xx/3xx responses | {wrk['status']} |")
print(f"| socket errors (connect / read / write / timeout) | {socket} ({wrk['connect']} / {wrk['read']} / {wrk['write']} / {wrk['timeout']}) |")
print(f"| requests/s | {wrk['requests'] / secs:.0f} |")
print(f"| latency p50 / p99 / max | {wrk['p50_us'] / 1000:.2f} / {wrk['p99_us'] / 1000:.2f} / {wrk['max_us'] / 1000:.2f} ms |")
print("\n| version | deploy → live | deploy → exit | outcome |")
print("|---|---|---|---|")
for v, live, done, outcome in rows:
    print(f"| v{v} | {live:.2f} s | {done:.2f} s | {outcome} |")
EOF
