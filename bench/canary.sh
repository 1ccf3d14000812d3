#!/usr/bin/env bash
# bench/canary.sh: how fast a bad canary is taken back, under steady load. Builds rollgate in
# release mode, runs `rollgate serve` on loopback with the default rules of the AWS setup it
# replaces (error_rate > 5%, errors > 3 in 1m, 5xx > 10 in 5m, p99 > 500ms) and a canary
# 10 -> 25 -> 50 -> 100 every 30 s, keeps RATE requests/s flowing through the gateway
# (bench/load.py), and releases ROUNDS bad candidates (DEMO_ERROR_RATE, default 20 % of API
# calls fail). For each: the time from the candidate's first request (gateway access log) to
# all traffic back on the stable version (the rollout's terminal event), and the requests that
# failed at clients. Prints a markdown table.
#
# Needs: cargo, jq, python3. Loopback only; bounded: each round's load lasts LOAD seconds.
# Usage: bench/canary.sh    (RATE=500 ROUNDS=5 ERROR_RATE=0.2 LOAD=12 by default)

set -euo pipefail

RATE=${RATE:-500}
ROUNDS=${ROUNDS:-5}
ERROR_RATE=${ERROR_RATE:-0.2}
LOAD=${LOAD:-12}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/bench/lib.sh"
need_tools cargo jq python3
build_rollgate "$ROOT"

WORK=$(mktemp -d /tmp/rollgate-canary-XXXXXX)
SERVE_PID=""
cleanup() {
    local code=$?
    if [[ -n "$SERVE_PID" ]] && kill -0 "$SERVE_PID" 2>/dev/null; then
        kill -TERM "$SERVE_PID" 2>/dev/null || true
        wait "$SERVE_PID" 2>/dev/null || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat > "$WORK/rollgate.toml" <<TOML
[server]
control = "127.0.0.1:0"

[app.api]
run = "'$BIN' demo-service"
health = { path = "/health", interval = "200ms", timeout = "200ms", healthy = 2 }
smoke = [{ path = "/api/users", status = 200 }]

[env.prod]
listen = "127.0.0.1:0"
strategy = { canary = { steps = [10, 25, 50, 100], interval = "30s" } }
monitor = "30s"
rollback_when = ["error_rate > 5%", "errors > 3 in 1m", "5xx > 10 in 5m", "p99 > 500ms"]
TOML
mkdir -p "$WORK/build"
"$BIN" serve --config "$WORK/rollgate.toml" > "$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 200); do [[ -f "$WORK/.rollgate/serve.json" ]] && break; sleep 0.05; done
GW=$(jq -r '.gateways.prod' "$WORK/.rollgate/serve.json")
rg() { "$BIN" --config "$WORK/rollgate.toml" "$@"; }

echo "v1" > "$WORK/build/RELEASE"
rg deploy api --env prod --artifact "$WORK/build" > /dev/null

ms() { python3 -c "import sys,datetime; print(int(datetime.datetime.fromisoformat(sys.argv[1].replace('Z','+00:00')).timestamp()*1000))" "$1"; }
results=()
for round in $(seq 1 "$ROUNDS"); do
    version=$((round + 1))
    echo "bad-$round" > "$WORK/build/RELEASE"
    python3 "$ROOT/bench/load.py" "http://$GW/api/users" "$RATE" 20 "$LOAD" "$WORK/load-$round.txt" &
    LOAD_PID=$!
    sleep 2
    rg deploy api --env prod --artifact "$WORK/build" --var "DEMO_ERROR_RATE=$ERROR_RATE" > "$WORK/deploy-$round.txt" || true
    wait "$LOAD_PID"
    outcome=$(rg history api --env prod --limit 1 --json | jq -r '.rollouts[0].outcome')
    back=$(rg history api --env prod --limit 1 --json | jq -r '.rollouts[0].finished_at')
    first=$(grep -m1 "\"version\":$version," "$WORK/.rollgate/logs/access-prod.log" | jq -r '.ts')
    t_first=$(ms "$first"); t_back=$(ms "$back")
    sent=$(wc -l < "$WORK/load-$round.txt")
    failed=$(awk '$2 < 200 || $2 >= 300' "$WORK/load-$round.txt" | wc -l)
    conn=$(awk '$2 == 0' "$WORK/load-$round.txt" | wc -l)
    reason=$(rg history api --env prod --limit 1 --json | jq -r '.rollouts[0].reason' | cut -c1-80)
    results+=("$round|$outcome|$((t_back - t_first))|$sent|$failed|$conn|$reason")
    echo "round $round: $outcome in $((t_back - t_first)) ms; $failed of $sent failed" >&2
    sleep 1
done

echo
echo "| round | outcome | candidate's first request -> 100 % on stable | requests sent | failed at clients | connection errors | reason |"
echo "|---|---|---|---|---|---|---|"
for r in "${results[@]}"; do
    IFS='|' read -r n o t s f c why <<< "$r"
    echo "| $n | $o | $t ms | $s | $f | $c | $why |"
done
printf '%s\n' "${results[@]}" | awk -F'|' '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "\nmin %d ms, median %d ms, max %d ms over %d rounds at %s requests/s\n", a[1], a[int((NR+1)/2)], a[NR], NR, ENVIRON["RATE"]}'
