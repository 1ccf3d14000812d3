#!/usr/bin/env bash
# bench/gateway_instructions.sh: instructions per proxied request through the gateway, counted
# by valgrind's callgrind, which does not move with the machine's load (wall-clock throughput on
# a shared 2-core VM varies by ±15 % between rounds; these counts by about 1 % plain and up to
# ~3 % with the WAF, whose regex compilation differs slightly from run to run).
#
#   bench/gateway_instructions.sh          plain gateway, with the WAF, with full security, with
#                                          full security and varied requests, and with full
#                                          security signing every request
#   MODES="full" bench/gateway_instructions.sh   only some of the modes
#   TOP=25 bench/gateway_instructions.sh   also list the 25 costliest functions (inclusive)
#
# Runs crates/gateway/examples/proxy_instructions.rs (one gateway worker, an access log, an
# in-process client and upstream, GET /api/users?id=42 with browser headers and an X-API-Key;
# full mode adds the per-IP rate limit, the API key check and the per-key rate limit; varied mode
# is full mode with requests that differ as bench/waf/varied.lua's do (new query values on every
# request, 24 User-Agents in turn); signed mode
# is full mode with an HMAC signature on every route instead of the API key, and a new query
# value on every request, since a signature is accepted once) twice per mode,
# with SHORT and LONG requests, and reports (LONG total − SHORT total) / (LONG − SHORT). Counting
# starts after the edge policy is built (callgrind's --dump-after), so compiling the WAF's CRS
# rules, whose count varies by a few million from run to run, is left out. Two figures: the whole
# process (the in-process client and upstream included, the same in every mode) and the gateway
# worker thread alone (callgrind's --separate-threads; the busiest thread after the main one),
# which is the gateway's own cost. Compare modes and commits, not against other programs.
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
count() { # n mode -> "whole gateway-thread gateway-thread-file", instructions after the edge policy was built
    local out="$WORK/cg.$2.$1"
    valgrind --tool=callgrind --separate-threads=yes \
        --dump-after='rollgate_gateway::config::GatewayConfig::with_edge_keys' \
        --callgrind-out-file="$out" "$BIN" "$1" $2 >/dev/null 2>&1
    # The last part of each thread: files OUT-NN (the part before the dump is OUT.1-NN). The
    # gateway thread is the busiest one after the main thread (OUT-01).
    local whole=0 busiest=0 busiest_file="" n f
    for f in "$out"-[0-9]*; do
        n=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$f" | head -1)
        whole=$((whole + ${n:-0}))
        if [[ $f != "$out-01" && ${n:-0} -gt $busiest ]]; then busiest=$n busiest_file=$f; fi
    done
    echo "$whole $busiest $busiest_file"
}

echo "| gateway | instructions per request, whole process (client + gateway + upstream) | gateway worker thread |"
echo "|---|---|---|"
for mode in ${MODES:-plain edge full varied signed}; do
    arg=""
    [[ $mode != plain ]] && arg=$mode
    read -r short_whole short_gw _ < <(count "$SHORT" "$arg")
    read -r long_whole long_gw gw_file < <(count "$LONG" "$arg")
    per=$((LONG - SHORT))
    echo "| $mode | $(((long_whole - short_whole) / per)) | $(((long_gw - short_gw) / per)) |"
    if [[ $TOP -gt 0 ]]; then
        echo
        echo "Costliest functions of the gateway thread ($mode, inclusive, the $LONG-request run):"
        echo
        echo '```'
        callgrind_annotate --inclusive=yes --threshold=99 "$gw_file" 2>/dev/null \
            | grep -E '^ *[0-9,]+ \(' | grep -v '=>' | sed -n "1,${TOP}p" | cut -c1-160
        echo '```'
        echo
    fi
done
