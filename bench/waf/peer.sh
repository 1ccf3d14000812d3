#!/usr/bin/env bash
# The WAF peer for rollgate's benchmarks: nginx + ModSecurity 3 + OWASP CRS 3.3.x (Debian 12's
# packages), and nginx as a plain proxy, both in front of the same tiny upstream, on loopback.
#
#   bench/waf/peer.sh [start]   install the packages (apt), write configs, start, print URLs
#   bench/waf/peer.sh stop      stop both nginx instances and remove the temporary directory
#   bench/waf/peer.sh status    print the URLs if running
#   bench/waf/peer.sh versions  print nginx / libmodsecurity3 / modsecurity-crs versions
#   bench/waf/peer.sh pids      print the peer's worker pids (comma-separated; for throughput.sh -P)
#
# Environment: PEER_DIR (default /tmp/rollgate-waf-peer; everything lives there, never the
# system nginx service or /etc), PEER_UPSTREAM_PORT (18090), PEER_PLAIN_PORT (18091),
# PEER_MODSEC_PORT (18092), PEER_LOGGED_PORT (18094), PEER_WORKERS (2), PEER_SKIP_INSTALL=1 to
# skip apt-get.
#
# Two nginx processes are started: the upstream (1 worker, `return 200 "ok"`), so that any other
# proxy under test (e.g. rollgate's gateway) can use the very same upstream, and the peer
# (PEER_WORKERS workers) with three server blocks: plain proxy, plain proxy writing a JSON
# access log (like rollgate's gateway, which always writes one), and proxy + ModSecurity.
# ModSecurity: a copy of /etc/nginx/modsecurity.conf with `SecRuleEngine On` (everything else as
# Debian ships it, except the audit log path, which is moved into PEER_DIR), then Debian's
# crs-setup.conf (paranoia level 1, inbound anomaly threshold 5: the defaults) and every CRS
# rule file listed as an explicit `Include` (libmodsecurity3 rejects `IncludeOptional`).
# Every listen of the peer has `reuseport`: each worker accepts from its own socket and the
# kernel spreads new connections evenly, as rollgate's gateway does (without it, one worker can
# take most of a burst of new connections and keep them). Access logs are off on all server
# blocks but the logged one (whose log, the error log and the ModSecurity audit log are in
# PEER_DIR).
set -euo pipefail

PEER_DIR=${PEER_DIR:-/tmp/rollgate-waf-peer}
UP_PORT=${PEER_UPSTREAM_PORT:-18090}
PLAIN_PORT=${PEER_PLAIN_PORT:-18091}
MODSEC_PORT=${PEER_MODSEC_PORT:-18092}
LOGGED_PORT=${PEER_LOGGED_PORT:-18094}
WORKERS=${PEER_WORKERS:-2}
CRS_RULES=/usr/share/modsecurity-crs/rules
CRS_ETC=/etc/modsecurity/crs
MODSEC_MODULE=/usr/lib/nginx/modules/ngx_http_modsecurity_module.so

log() { echo "peer: $*" >&2; }
# wait_port
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"

install_packages() {
    if [[ ${PEER_SKIP_INSTALL:-0} == 1 ]]; then return; fi
    local need=0 p
    for p in nginx-light libnginx-mod-http-modsecurity libmodsecurity3 modsecurity-crs wrk python3 python3-yaml; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need=1
    done
    if [[ $need == 1 ]]; then
        log "installing packages (apt-get)"
        apt-get update -q >/dev/null
        # policy-rc.d on these machines keeps the system nginx service from starting; we never
        # use it anyway.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light libnginx-mod-http-modsecurity \
            libmodsecurity3 modsecurity-crs wrk python3 python3-yaml >/dev/null
    fi
}

versions() {
    echo "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //')"
    dpkg-query -W -f='${Package} ${Version}\n' nginx-light libnginx-mod-http-modsecurity libmodsecurity3 modsecurity-crs wrk 2>/dev/null
    echo "CRS setup version: $(grep -o 'tx.crs_setup_version=[0-9]*' $CRS_ETC/crs-setup.conf | head -1)"
}

urls() {
    echo "UPSTREAM_URL=http://127.0.0.1:$UP_PORT"
    echo "PLAIN_URL=http://127.0.0.1:$PLAIN_PORT"
    echo "MODSEC_URL=http://127.0.0.1:$MODSEC_PORT"
    echo "LOGGED_URL=http://127.0.0.1:$LOGGED_PORT"
}

running() { # $1 = instance name
    local pidf="$PEER_DIR/$1/nginx.pid"
    [[ -s $pidf ]] && kill -0 "$(cat "$pidf")" 2>/dev/null
}

write_configs() {
    mkdir -p "$PEER_DIR"/{upstream,peer}/{tmp,logs} "$PEER_DIR/modsec"
    # Workers run as the nginx default user when started as root; let them write their dirs.
    chmod -R a+rwX "$PEER_DIR"

    # --- the upstream: one worker, answers everything with 200 "ok" ---
    cat >"$PEER_DIR/upstream/nginx.conf" <<EOF
worker_processes 1;
pid $PEER_DIR/upstream/nginx.pid;
error_log $PEER_DIR/upstream/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $PEER_DIR/upstream/tmp/body;
    proxy_temp_path $PEER_DIR/upstream/tmp/proxy;
    fastcgi_temp_path $PEER_DIR/upstream/tmp/fastcgi;
    uwsgi_temp_path $PEER_DIR/upstream/tmp/uwsgi;
    scgi_temp_path $PEER_DIR/upstream/tmp/scgi;
    keepalive_requests 100000;
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        default_type text/plain;
        location / { return 200 "ok"; }
    }
}
EOF

    # --- ModSecurity: Debian's recommended config, engine On ---
    sed -e 's/^SecRuleEngine DetectionOnly/SecRuleEngine On/' \
        -e "s|^SecAuditLog .*|SecAuditLog $PEER_DIR/peer/logs/modsec_audit.log|" \
        /etc/nginx/modsecurity.conf >"$PEER_DIR/modsec/modsecurity.conf"
    grep -q '^SecRuleEngine On' "$PEER_DIR/modsec/modsecurity.conf" || { log "SecRuleEngine On not set"; exit 1; }
    cp /etc/nginx/unicode.mapping "$PEER_DIR/modsec/unicode.mapping"
    {
        echo "# generated by bench/waf/peer.sh"
        echo "Include $PEER_DIR/modsec/modsecurity.conf"
        echo "Include $CRS_ETC/crs-setup.conf"
        echo "Include $CRS_ETC/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf"
        local f
        for f in "$CRS_RULES"/*.conf; do echo "Include $f"; done
        echo "Include $CRS_ETC/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf"
    } >"$PEER_DIR/modsec/main.conf"

    # --- the peer: plain proxy and proxy + ModSecurity, same upstream ---
    cat >"$PEER_DIR/peer/nginx.conf" <<EOF
load_module $MODSEC_MODULE;
worker_processes $WORKERS;
pid $PEER_DIR/peer/nginx.pid;
error_log $PEER_DIR/peer/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $PEER_DIR/peer/tmp/body;
    proxy_temp_path $PEER_DIR/peer/tmp/proxy;
    fastcgi_temp_path $PEER_DIR/peer/tmp/fastcgi;
    uwsgi_temp_path $PEER_DIR/peer/tmp/uwsgi;
    scgi_temp_path $PEER_DIR/peer/tmp/scgi;
    keepalive_requests 100000;
    upstream backend {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$PLAIN_PORT backlog=4096 reuseport;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    # The plain proxy again, writing one JSON line per request as rollgate's gateway does, in
    # nginx's buffered mode (the recommended setting for busy servers: one write per 64 KiB).
    log_format rollgate_like escape=json '{"ts":"\$time_iso8601","request_id":"\$request_id",'
        '"method":"\$request_method","path":"\$uri","client":"\$remote_addr","status":\$status,'
        '"duration_ms":\$request_time,"upstream_ms":"\$upstream_response_time","bytes":\$body_bytes_sent}';
    server {
        listen 127.0.0.1:$LOGGED_PORT backlog=4096 reuseport;
        access_log $PEER_DIR/peer/logs/access.json rollgate_like buffer=64k flush=1s;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen 127.0.0.1:$MODSEC_PORT backlog=4096 reuseport;
        modsecurity on;
        modsecurity_rules_file $PEER_DIR/modsec/main.conf;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

start_one() { # $1 = instance name
    local conf="$PEER_DIR/$1/nginx.conf"
    nginx -p "$PEER_DIR/$1" -c "$conf" -t -q 2>"$PEER_DIR/$1/logs/configtest.log" || {
        cat "$PEER_DIR/$1/logs/configtest.log" >&2
        exit 1
    }
    nginx -p "$PEER_DIR/$1" -c "$conf"
}

probe() { # $1 = url path+query; prints the status code
    python3 - "$1" <<'EOF'
import http.client, sys
port, path = sys.argv[1].split(" ", 1)
c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
c.request("GET", path, headers={"Host": "localhost", "User-Agent": "Mozilla/5.0", "Accept": "*/*"})
print(c.getresponse().status)
EOF
}

stop_one() { # $1 = instance name
    local pidf="$PEER_DIR/$1/nginx.pid" pid i
    [[ -s $pidf ]] || return 0
    pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null; then
        nginx -p "$PEER_DIR/$1" -c "$PEER_DIR/$1/nginx.conf" -s quit 2>/dev/null || kill -QUIT "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$1 master $pid did not quit; sending TERM"
            kill -TERM "$pid" 2>/dev/null || true
            sleep 1
        fi
    fi
}

cmd=${1:-start}
case $cmd in
start)
    install_packages
    if running upstream || running peer; then
        log "already running in $PEER_DIR (use: $0 stop)"
        urls
        exit 0
    fi
    rm -rf "$PEER_DIR"
    write_configs
    start_one upstream
    start_one peer
    wait_port "$UP_PORT"
    wait_port "$PLAIN_PORT"
    wait_port "$MODSEC_PORT"
    wait_port "$LOGGED_PORT"
    # Sanity: plain passes everything; ModSecurity passes a clean GET and blocks an obvious SQLi.
    s1=$(probe "$PLAIN_PORT /api/users?id=42")
    s2=$(probe "$MODSEC_PORT /api/users?id=42")
    s3=$(probe "$MODSEC_PORT /?q=1%27%20or%20%271%27%3D%271")
    s4=$(probe "$LOGGED_PORT /api/users?id=42")
    log "probe: plain clean=$s1, modsec clean=$s2, modsec sqli=$s3, logged clean=$s4"
    if [[ $s1 != 200 || $s2 != 200 || $s3 != 403 || $s4 != 200 ]]; then
        log "unexpected probe results; see $PEER_DIR/peer/logs/error.log"
        exit 1
    fi
    versions >&2
    urls
    ;;
stop)
    stop_one peer
    stop_one upstream
    rm -rf "$PEER_DIR"
    log "stopped"
    ;;
status)
    if running upstream && running peer; then urls; else
        echo "not running"
        exit 1
    fi
    ;;
versions) versions ;;
pids)
    running peer || { echo "not running" >&2; exit 1; }
    pgrep -P "$(cat "$PEER_DIR/peer/nginx.pid")" | paste -sd, -
    ;;
*)
    echo "usage: $0 [start|stop|status|versions|pids]" >&2
    exit 2
    ;;
esac
