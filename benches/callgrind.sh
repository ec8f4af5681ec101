#!/usr/bin/env bash
# Instructions per request of the keygate process, counted by valgrind's
# callgrind: independent of machine load, unlike wall-clock or /proc CPU time.
#
#   benches/callgrind.sh [--bin PATH] [--requests N] [--warmup N]
#                        [--scenario plain|full] [--server 'TOML LINES']
#                        [--no-access-log] [--otlp] [--keep]
#
#   --bin PATH        keygate binary (default target/release/keygate)
#   --requests N      measured requests (default 2000)
#   --warmup N        requests before counting starts (default 200)
#   --scenario S      plain: one API, auth none, no plugins;
#                     full: hmac + IP allow-list + traffic_control + CORS
#                     (benches/load/policy.toml's policies) (default plain)
#   --server LINES    extra lines for [server], e.g. 'runtime = "per-core"'
#                     (default: none, i.e. the default configuration)
#   --no-access-log   [log] access = false (default: access log on, to a file)
#   --otlp            [tracing] on: one span per request exported to a
#                     collector (nginx answering 200 on another port)
#   --native          no valgrind: CPU time (user + system, all threads, from
#                     /proc/PID/stat) per request instead, kernel work included
#                     but sensitive to machine load
#   --clients C       concurrent curl clients, one keep-alive connection each
#                     (default 1); the requests are split between them
#
# The back end is nginx answering 200 from memory on a loopback port. One curl
# process sends the requests over one keep-alive connection; counting covers
# only the measured requests (callgrind_control --zero after the warm-up, then
# --dump), all threads of keygate included. Prints "instructions/request".
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/target/release/keygate"
REQS=2000
WARM=200
SCENARIO=plain
SERVER_EXTRA=""
ACCESS=true
OTLP=0
KEEP=0
NATIVE=0
CLIENTS=1
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN="$2"; shift 2 ;;
        --requests) REQS="$2"; shift 2 ;;
        --warmup) WARM="$2"; shift 2 ;;
        --scenario) SCENARIO="$2"; shift 2 ;;
        --server) SERVER_EXTRA="$2"; shift 2 ;;
        --no-access-log) ACCESS=false; shift ;;
        --otlp) OTLP=1; shift ;;
        --keep) KEEP=1; shift ;;
        --native) NATIVE=1; shift ;;
        --clients) CLIENTS="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
command -v callgrind_control >/dev/null || { echo "callgrind_control is not installed" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "nginx is not installed" >&2; exit 1; }
[ -x "$BIN" ] || { echo "no keygate binary at $BIN" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/keygate-cg.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

BACK=$(free_port)
COLLECTOR=$(free_port)
cat >"$TMP/nginx.conf" <<EOF
worker_processes 1;
error_log $TMP/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/body; proxy_temp_path $TMP/proxy;
    fastcgi_temp_path $TMP/fcgi; uwsgi_temp_path $TMP/uwsgi; scgi_temp_path $TMP/scgi;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$BACK; location / { return 200 "ok\n"; } }
    server { listen 127.0.0.1:$COLLECTOR; location / { return 200; } }
}
EOF
"$NGINX" -p "$TMP" -c "$TMP/nginx.conf" -g "daemon off; master_process off; pid $TMP/nginx.pid;" &
PIDS+=($!)
wait_port "$BACK" || { echo "nginx did not start" >&2; exit 1; }

PORT=$(free_port)
ADMIN=$(free_port)
SECRET="cg-secret-$RANDOM$RANDOM"
{
    printf '[server]\nlisten = ["127.0.0.1:%s"]\nadmin = "127.0.0.1:%s"\nstate_dir = "state"\nwatch = false\n%s\n\n' \
        "$PORT" "$ADMIN" "$SERVER_EXTRA"
    printf '[log]\nlevel = "info"\naccess = %s\naccess_file = "access.log"\n\n' "$ACCESS"
    if [ "$OTLP" = 1 ]; then
        printf '[tracing]\notlp = "http://127.0.0.1:%s"\n\n' "$COLLECTOR"
    fi
    if [ "$SCENARIO" = full ]; then
        cat <<EOF
[auth]
replay = false
[auth.hmac]
algorithms = ["hmac-sha1", "hmac-sha256"]
max_skew = "15m"

[[keys]]
id = "AKIDbench"
secret = "$SECRET"
app = "bench"

[[usage_plans]]
name = "bench"
qps = 1000000000
keys = ["AKIDbench"]

[[plugins]]
name = "loopback-only"
type = "ip_control"
mode = "white"
ips = "127.0.0.1;::1"

[[plugins]]
name = "flow"
type = "traffic_control"
expire_type = "second"
expire = 1
api_rate_limit = 1000000000
app_rate_limit = 1000000000
ip_rate_limit = 1000000000

[[plugins]]
name = "browser"
type = "cors"
allow_origin = ["http://bench.local"]
allow_methods = ["GET", "POST"]
allow_headers = ["authorization", "date", "content-type"]
max_age = 600

[[services]]
name = "bench"
qps = 1000000000
usage_plans = ["bench"]
plugins = ["loopback-only"]

[[services.apis]]
name = "full"
path = "/bench/"
methods = ["GET", "POST"]
auth = "hmac"
qps = 1000000000
plugins = ["flow", "browser"]
[services.apis.backend]
type = "http"
url = "http://127.0.0.1:$BACK"
path = "/bench/"
timeout = "10s"
EOF
    else
        cat <<EOF
[[services]]
name = "bench"

[[services.apis]]
name = "plain"
path = "/bench/"
methods = ["ANY"]
[services.apis.backend]
type = "http"
url = "http://127.0.0.1:$BACK"
path = "/bench/"
timeout = "10s"
EOF
    fi
} >"$TMP/keygate.toml"

HEADERS=()
if [ "$SCENARIO" = full ]; then
    while IFS= read -r line; do [ -n "$line" ] && HEADERS+=(-H "$line"); done \
        < <("$BIN" sign --id AKIDbench --secret "$SECRET")
    HEADERS+=(-H "Origin: http://bench.local")
fi

# Uncompressed names: the measured dump (part 1) can then be read alone by
# callgrind_annotate.
VG=(valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$TMP/callgrind.out.%p")
[ "$NATIVE" = 0 ] || VG=()
"${VG[@]}" "$BIN" run --config "$TMP/keygate.toml" >"$TMP/keygate.out" 2>"$TMP/keygate.err" &
KG=$!
PIDS+=($KG)
wait_port "$PORT" || { cat "$TMP/keygate.err" >&2; echo "keygate did not start" >&2; exit 1; }

send() { # send N: N requests over CLIENTS keep-alive connections
    local i per=$(($1 / CLIENTS)) cpids=()
    for i in $(seq "$per"); do
        printf 'url = "http://127.0.0.1:%s/bench/x"\noutput = "/dev/null"\n' "$PORT"
    done >"$TMP/urls"
    for i in $(seq "$CLIENTS"); do
        curl -sS -w '%{http_code}\n' "${HEADERS[@]}" -K "$TMP/urls" >"$TMP/codes.$i" &
        cpids+=($!)
    done
    for i in "${cpids[@]}"; do wait "$i"; done
    cat "$TMP"/codes.* >"$TMP/codes"
    rm -f "$TMP"/codes.*
    local bad
    bad=$(grep -vc '^200$' "$TMP/codes" || true)
    [ "$bad" = 0 ] || { echo "non-200 answers: $(sort "$TMP/codes" | uniq -c | tr '\n' ' ')" >&2; exit 1; }
}
ticks() { sed 's/^.*) //' "/proc/$KG/stat" | awk '{print $12 + $13}'; }
send "$WARM"
sleep 0.5
if [ "$NATIVE" = 1 ]; then
    t0=$(ticks)
    send "$REQS"
    sleep 0.2
    t1=$(ticks)
    echo "scenario=$SCENARIO server='${SERVER_EXTRA}' access=$ACCESS otlp=$OTLP requests=$REQS clients=$CLIENTS cpu_ticks=$((t1 - t0))"
    awk -v t=$((t1 - t0)) -v n="$REQS" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "cpu_us/request %.1f\n", t * 1000000 / hz / n }'
    exit 0
fi
callgrind_control --zero "$KG" >/dev/null
send "$REQS"
sleep 0.5 # let the access writer's batch go out within the window
callgrind_control --dump=measured "$KG" >/dev/null
sleep 0.5
ir=$(for f in "$TMP"/callgrind.out.*.1; do awk '/^summary:|^totals:/ {print $2; exit}' "$f"; done \
    | sort -n | tail -n 1)
if [ "$ACCESS" = true ]; then
    lines=$(wc -l <"$TMP/access.log" 2>/dev/null || echo 0)
    echo "access lines written: $lines" >&2
fi
echo "scenario=$SCENARIO server='${SERVER_EXTRA}' access=$ACCESS otlp=$OTLP requests=$REQS instructions=$ir"
awk -v ir="$ir" -v n="$REQS" 'BEGIN { printf "instructions/request %.0f\n", ir / n }'
