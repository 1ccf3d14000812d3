#!/usr/bin/env bash
# bench/gateway_instructions.sh: instructions per proxied request through the gateway, counted
# by valgrind's callgrind, which does not move with the machine's load (wall-clock throughput on
# a shared 2-core VM varies by ±15 % between rounds; these counts by about 1 % plain and up to
# ~3 % with the WAF, whose regex compilation differs slightly from run to run).
#
#   bench/gateway_instructions.sh          plain gateway, with the WAF, with full security
#   MODES="full" bench/gateway_instructions.sh   only some of the modes
#   TOP=25 bench/gateway_instructions.sh   also list the 25 costliest functions (inclusive)
#
# Runs crates/gateway/examples/proxy_instructions.rs (one gateway worker, an access log, an
# in-process client and upstream, GET /api/users?id=42 with browser headers and an X-API-Key;
# full mode adds the per-IP rate limit, the API key check and the per-key rate limit) twice per mode,
# with SHORT and LONG requests, and reports (LONG total − SHORT total) / (LONG − SHORT): start-up
# (including compiling the WAF's CRS rules) cancels out. The figure includes the in-process
# client and upstream, the same in every mode; compare modes and commits, not against other
# programs. The `rollgate_gateway::gateway::Worker` line of TOP is the gateway's own share.
# Needs: cargo, valgrind (apt-get install -y valgrind).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHORT=${SHORT:-200}
LONG=${LONG:-1200}
TOP=${TOP:-0}
command -v valgrind >/dev/null || { echo "gateway_instructions: valgrind not found (apt-get install -y valgrind)" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --quiet -p rollgate-gateway --example proxy_instructions)
BIN="$ROOT/target/release/examples/proxy_instructions"
WORK=$(mktemp -d /tmp/gateway-instructions.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

export PROXY_INSTRUCTIONS_KEY=proxy-instructions-secret # the example's KEY_SECRET
count() { # n mode -> total instructions
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$2.$1" "$BIN" "$1" $2 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

echo "| gateway | instructions per request (client + gateway + upstream) |"
echo "|---|---|"
for mode in ${MODES:-plain edge full}; do
    arg=""
    [[ $mode != plain ]] && arg=$mode
    short=$(count "$SHORT" "$arg")
    long=$(count "$LONG" "$arg")
    echo "| $mode | $(((long - short) / (LONG - SHORT))) |"
    if [[ $TOP -gt 0 ]]; then
        echo
        echo "Costliest functions ($mode, inclusive, whole $LONG-request run incl. start-up):"
        echo
        echo '```'
        callgrind_annotate --inclusive=yes --threshold=99 "$WORK/cg.$arg.$LONG" 2>/dev/null \
            | grep -E '^ *[0-9,]+ \(' | grep -v '=>' | head -"$TOP" | cut -c1-160
        echo '```'
        echo
    fi
done
