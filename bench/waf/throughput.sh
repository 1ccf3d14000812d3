#!/usr/bin/env bash
# Throughput and p99 of HTTP endpoints with wrk, rounds interleaved across targets.
#
#   bench/waf/throughput.sh [options] [LABEL=]URL ...
#
#   bench/waf/throughput.sh nginx-plain=http://127.0.0.1:18091 \
#       nginx-modsec-crs=http://127.0.0.1:18092 rollgate=http://127.0.0.1:8080
#
# Options (or environment):
#   -t N        wrk threads            (THREADS, default 2)
#   -c N        wrk connections        (CONNS, default 64)
#   -d DUR      duration per run       (DURATION, default 10s)
#   -r N        rounds                 (ROUNDS, default 3)
#   -p PATH     request path and query (REQ_PATH, default /api/users?id=42)
#   -w DUR      warm-up per target before round 1, not reported (WARMUP, default 2s; 0 = none)
#   -H 'K: V'   an extra request header (repeatable), e.g. an X-API-Key for the gateway
#   -s FILE     a wrk Lua script (e.g. one that signs every request)
#   -o DIR      keep raw wrk outputs and the Markdown there (default: a temporary dir)
#   -b LABEL    a second reference: the summary also gives each target's req/s and CPU per
#               request against LABEL's (the first target is always the first reference)
#   -P LABEL=PID[,PID...]  (repeatable) also report the CPU time (user+system, all threads)
#               those processes spent per request during each run of target LABEL, e.g. the
#               nginx workers (`bench/waf/peer.sh pids`) or the gateway's pid
#
# Every request is a clean GET with `Host: localhost` and browser-like headers (User-Agent,
# Accept, Accept-Language, Accept-Encoding). Reports req/s, p50 and p99 (wrk --latency) per
# target per round, wrk's non-2xx/3xx count and socket errors (a WAF that blocks the clean
# request, or a rate limit, shows up there: such a run does not measure proxying), and the
# median over rounds per target. Loopback only: wrk shares the machine's cores with the targets.
set -euo pipefail

THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
REQ_PATH=${REQ_PATH:-/api/users?id=42}
WARMUP=${WARMUP:-2s}
OUTDIR=${OUTDIR:-}
SCRIPT=""
SECOND=""
EXTRA=()
declare -A CPU_PIDS=()
while getopts "t:c:d:r:p:w:H:s:o:b:P:h" opt; do
    case $opt in
    t) THREADS=$OPTARG ;;
    c) CONNS=$OPTARG ;;
    d) DURATION=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    p) REQ_PATH=$OPTARG ;;
    w) WARMUP=$OPTARG ;;
    H) EXTRA+=(-H "$OPTARG") ;;
    s) SCRIPT=$OPTARG ;;
    o) OUTDIR=$OPTARG ;;
    b) SECOND=$OPTARG ;;
    P) CPU_PIDS[${OPTARG%%=*}]=${OPTARG#*=} ;;
    *) sed -n '2,30p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[[ $# -ge 1 ]] || { sed -n '2,30p' "$0"; exit 2; }
command -v wrk >/dev/null || { echo "throughput: wrk not found (apt-get install -y wrk)" >&2; exit 1; }

if [[ -z $OUTDIR ]]; then OUTDIR=$(mktemp -d /tmp/waf-throughput.XXXXXX); fi
mkdir -p "$OUTDIR"

LABELS=()
URLS=()
for a in "$@"; do
    if [[ $a == *=http* ]]; then
        LABELS+=("${a%%=http*}")
        URLS+=("http${a#*=http}")
    else
        LABELS+=("$a")
        URLS+=("$a")
    fi
done

HEADERS=(
    -H "Host: localhost"
    -H "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
    -H "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    -H "Accept-Language: en-GB,en;q=0.9"
    -H "Accept-Encoding: gzip, deflate"
)
SCRIPT_ARGS=()
if [[ -n $SCRIPT ]]; then SCRIPT_ARGS=(-s "$SCRIPT"); fi

run_wrk() { # url threads conns duration outfile
    wrk -t"$2" -c"$3" -d"$4" --latency "${HEADERS[@]}" ${EXTRA[@]+"${EXTRA[@]}"} \
        ${SCRIPT_ARGS[@]+"${SCRIPT_ARGS[@]}"} "$1${REQ_PATH}" >"$5" 2>&1
}

cpu_ticks() { # comma-separated pids -> summed utime+stime in clock ticks
    local s=0 p t
    for p in ${1//,/ }; do
        # fields after "pid (comm) ": utime is the 12th, stime the 13th
        t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
        s=$((s + ${t:-0}))
    done
    echo "$s"
}

REQUESTS="GET \`$REQ_PATH\`"
if [[ -n $SCRIPT ]]; then REQUESTS="requests made by \`$(basename "$SCRIPT")\`"; fi
echo "throughput: wrk -t$THREADS -c$CONNS -d$DURATION --latency, $ROUNDS rounds interleaved, $REQUESTS; raw output in $OUTDIR" >&2
if [[ $WARMUP != 0 ]]; then
    for i in "${!URLS[@]}"; do
        run_wrk "${URLS[$i]}" "$THREADS" "$CONNS" "$WARMUP" "$OUTDIR/warmup-$i.txt"
    done
fi
for r in $(seq 1 "$ROUNDS"); do
    for i in "${!URLS[@]}"; do
        f="$OUTDIR/round$r-$i.txt"
        pids=${CPU_PIDS[${LABELS[$i]}]:-}
        if [[ -n $pids ]]; then c0=$(cpu_ticks "$pids"); fi
        run_wrk "${URLS[$i]}" "$THREADS" "$CONNS" "$DURATION" "$f"
        if [[ -n $pids ]]; then
            echo "$(($(cpu_ticks "$pids") - c0)) $(getconf CLK_TCK) $pids" >"$OUTDIR/round$r-$i.cpu"
        fi
        echo "  round $r ${LABELS[$i]}: $(grep -E 'Requests/sec' "$f" | tr -s ' ')" >&2
    done
done

{
    printf '%s\n' "${LABELS[@]}" >"$OUTDIR/labels"
    printf '%s\n' "${URLS[@]}" >"$OUTDIR/urls"
    python3 - "$OUTDIR" "$ROUNDS" "$THREADS" "$CONNS" "$DURATION" "$REQUESTS" "$SECOND" <<'EOF'
import os, re, statistics, sys
outdir, rounds, threads, conns, duration, path, second = sys.argv[1:8]
rounds = int(rounds)
labels = open(os.path.join(outdir, "labels")).read().splitlines()
urls = open(os.path.join(outdir, "urls")).read().splitlines()

def ms(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v)
    if not m:
        return None
    x = float(m.group(1))
    return x / 1000 if m.group(2) == "us" else x if m.group(2) == "ms" else x * 1000 if m.group(2) == "s" else x * 60000

def parse(f):
    t = open(f).read()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", t)
    p50 = re.search(r"^\s+50%\s+(\S+)", t, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", t, re.M)
    non2 = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
    total = re.search(r"(\d+) requests in", t)
    err = re.search(r"Socket errors: (.*)", t)
    cpu = None
    cf = f[:-4] + ".cpu"
    if os.path.exists(cf) and total:
        ticks, hz = open(cf).read().split()[:2]
        cpu = int(ticks) / int(hz) * 1e6 / int(total.group(1))
    return {
        "cpu": cpu,
        "rps": float(rps.group(1)) if rps else None,
        "p50": ms(p50.group(1)) if p50 else None,
        "p99": ms(p99.group(1)) if p99 else None,
        "non2xx": int(non2.group(1)) if non2 else 0,
        "requests": int(total.group(1)) if total else None,
        "errors": err.group(1).strip() if err else "0",
    }

def f(x, fmt):
    return "–" if x is None else fmt % x

print("wrk -t%s -c%s -d%s --latency, %s, `Host: localhost` + browser headers; %d rounds, "
      "targets interleaved within each round." % (threads, conns, duration, path, rounds))
print()
print("| round | target | req/s | p50 ms | p99 ms | requests | non-2xx/3xx | socket errors | CPU µs/request |")
print("|---|---|---|---|---|---|---|---|---|")
res = {i: [] for i in range(len(labels))}
for r in range(1, rounds + 1):
    for i, label in enumerate(labels):
        d = parse(os.path.join(outdir, "round%d-%d.txt" % (r, i)))
        res[i].append(d)
        print("| %d | %s | %s | %s | %s | %s | %d | %s | %s |" % (
            r, label, f(d["rps"], "%.0f"), f(d["p50"], "%.2f"), f(d["p99"], "%.2f"),
            f(d["requests"], "%d"), d["non2xx"], d["errors"], f(d["cpu"], "%.1f")))
print()
# Ratios are taken per round (the targets of one round ran back to back), then the median.
refs = [0] + [labels.index(second)] if second in labels else [0]
head = "| target | URL | median req/s | median p99 ms | median CPU µs/request |"
for r in refs:
    head += " req/s vs %s | CPU/request vs %s |" % (labels[r], labels[r])
print(head)
print("|---" * (5 + 2 * len(refs)) + "|")

def median_ratio(i, r, key):
    ratios = [a[key] / b[key] for a, b in zip(res[i], res[r]) if a[key] and b[key]]
    return statistics.median(ratios) if ratios else None

for i, label in enumerate(labels):
    rps = [d["rps"] for d in res[i] if d["rps"] is not None]
    p99 = [d["p99"] for d in res[i] if d["p99"] is not None]
    cpu = [d["cpu"] for d in res[i] if d["cpu"] is not None]
    row = "| %s | %s | %s | %s | %s |" % (
        label, urls[i], f(statistics.median(rps) if rps else None, "%.0f"),
        f(statistics.median(p99) if p99 else None, "%.2f"),
        f(statistics.median(cpu) if cpu else None, "%.1f"))
    for r in refs:
        row += " %s | %s |" % (f(median_ratio(i, r, "rps"), "%.2f"), f(median_ratio(i, r, "cpu"), "%.2f"))
    print(row)
print()
print("req/s and CPU/request ratios: the median over rounds of the target's figure divided by the "
      "reference's in the same round.")
bad = [labels[i] for i in res if any(d["non2xx"] for d in res[i])]
if bad:
    print()
    print("Warning: non-2xx/3xx answers from %s: those runs do not measure clean proxying." % ", ".join(bad))
EOF
} | tee "$OUTDIR/throughput.md"
