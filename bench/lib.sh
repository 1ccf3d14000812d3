# bench/lib.sh: helpers the benchmark scripts share; sourced, not run.
#
#   . "$(dirname "$0")/lib.sh"         (from bench/)     . "$(dirname "$0")/../lib.sh" (bench/waf/)

# need_tools TOOL...: exits with an error naming the first tool that is not installed.
need_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 1; }
    done
}

# build_rollgate ROOT: builds the release binary and sets BIN to it.
build_rollgate() {
    echo "building rollgate (release)..." >&2
    (cd "$1" && cargo build --release -p rollgate --quiet)
    BIN="$1/target/release/rollgate"
}

# marked VAR VALUE: pids of the processes whose environment holds VAR=VALUE (the app instances
# a run started with its own marker), one per line.
marked() {
    grep -lsz "^$1=$2\$" /proc/[0-9]*/environ 2>/dev/null \
        | sed -e 's#^/proc/##' -e 's#/environ$##' || true
}

# wait_port PORT: waits up to 10 s for 127.0.0.1:PORT to accept a connection.
wait_port() {
    local i
    for i in $(seq 1 100); do
        if python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.5).close()' "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "$(basename "$0"): port $1 did not open" >&2
    return 1
}
