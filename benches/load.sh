#!/usr/bin/env bash
# Load test on loopback: the demo echo back end alone, nginx, haproxy and a
# minimal Pingora proxy as plain proxies, keygate as a plain proxy, and keygate
# with the full policy stack (hmac auth, IP allow-list, rate limits, CORS), side
# by side, for each worker count. haproxy is measured when it is installed,
# Pingora when benches/pingora builds (see below).
#
#   benches/load.sh [--workers LIST] [--runtime multi|per-core] [--duration SECS]
#                   [--runs N] [--connections C] [--threads T] [--rate RPS]
#                   [--rate-frac F] [--idle-conns N] [--access-log] [--no-build]
#                   [--no-pingora] [--port-base P] [--backend-workers N] [--keep]
#
#   --workers LIST     comma-separated worker counts: nginx worker_processes,
#                      haproxy nbthread, Pingora threads, and
#                      keygate [server] workers unless --runtime is "default"
#                      (then keygate runs its default, one worker per core)
#                      (default: the number of cores with --runtime default,
#                      else "1,2")
#   --runtime R        keygate [server] runtime and workers: "default" leaves both
#                      out of keygate's config (its DEFAULT configuration, the
#                      figure that counts); multi or per-core set them (default
#                      "default")
#   --duration SECS    length of each wrk run and of each fixed-rate run (default 4)
#   --runs N           repeat every measurement N times, interleaving the
#                      scenarios; medians are printed (default 3)
#   --connections C    connections of wrk and of the fixed-rate generator (default 32)
#   --threads T        wrk threads (default 1)
#   --rate RPS         fixed offered rate for the latency table (default: see --rate-frac)
#   --rate-frac F      offered rate = F x keygate's capacity measured by wrk (the
#                      lower of its plain and full rows)
#                      for this worker count (default 0.5), the same rate for all
#   --idle-conns N     RSS of keygate (full policy) and nginx holding N idle
#                      keep-alive connections (default 1000; 0 = skip)
#   --access-log       nginx logs too (keygate's access log is on, to its redirected
#                      stderr, as in its default configuration)
#   --no-access-log    keygate's access log off ([log] access = false)
#   --no-build         do not run `cargo build --release` (binaries: $KEYGATE_BIN or
#                      $CARGO_TARGET_DIR/release/keygate, and examples/ next to it;
#                      Pingora: benches/pingora/target/release/pingora-bench if built)
#   --no-pingora       leave the Pingora row out (and do not build it)
#   --port-base P      ports P..P+9 on 127.0.0.1 (default 19000)
#   --backend-workers  runtime threads of the back end process (default 2)
#   --keep             keep the temp dir (configs, logs, raw outputs)
#
# Measures, per worker count: closed-loop throughput (wrk -c C), then latency at
# a fixed offered rate (examples/fixed_rate.rs: open loop, latency counted from
# each request's due time when it had to wait for a connection), and for both
# the CPU time of each proxy process (all threads and child processes, utime +
# stime from /proc/PID/stat) divided by the requests it served. Ratios are
# keygate / nginx; "policy overhead" is full-policy minus plain CPU per request.
#
# CPU pinning: with 4 or more cores the proxy, the back end and the load
# generator get cores of their own (taskset); override with PROXY_CPUS /
# BACKEND_CPUS / WRK_CPUS (taskset lists, e.g. "2,3"). With fewer cores nothing
# is pinned and the three compete: then compare the CPU-per-request column,
# which depends least on contention.
#
# nginx and wrk must be installed (the script installs nothing); haproxy is
# optional (without it, its rows are left out).
#
# Pingora: benches/pingora is a separate cargo project (its own [workspace],
# Cargo.lock and target/, so keygate's build and tests never compile it): the
# minimal `ProxyHttp` of pingora-proxy 0.9 whose `upstream_peer` returns the back
# end, Pingora's defaults otherwise (upstream keep-alive pool, work-stealing
# runtime of --workers threads; no logger and no access log, as Pingora is by
# default). The script builds it with `cargo build --release --locked` (a few
# minutes the first time; CARGO_BUILD_JOBS is honoured), which needs the crates
# from crates.io (or cargo's cache) and cmake (pingora-core's zlib-ng); when the
# build fails the reason is printed and its row is left out.
#
# Every process this script starts is stopped on exit (trap).

set -euo pipefail

WORKERS_LIST=""
RUNTIME=default
DURATION=4
RUNS=3
CONNS=32
THREADS=1
RATE=""
RATE_FRAC=0.5
IDLE_CONNS=1000
ACCESS=false
KG_ACCESS=true
BUILD=1
PINGORA=1
PORT_BASE=19000
BACKEND_WORKERS=2
KEEP=0

usage() { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --workers) WORKERS_LIST="$2"; shift 2 ;;
        --runtime) RUNTIME="$2"; shift 2 ;;
        --duration) DURATION="${2%s}"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --connections) CONNS="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --rate-frac) RATE_FRAC="$2"; shift 2 ;;
        --idle-conns) IDLE_CONNS="$2"; shift 2 ;;
        --access-log) ACCESS=true; shift ;;
        --no-access-log) KG_ACCESS=false; shift ;;
        --no-build) BUILD=0; shift ;;
        --no-pingora) PINGORA=0; shift ;;
        --port-base) PORT_BASE="$2"; shift 2 ;;
        --backend-workers) BACKEND_WORKERS="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown option: $1" >&2; usage 2 ;;
    esac
done
for v in DURATION RUNS CONNS THREADS PORT_BASE BACKEND_WORKERS; do
    [[ "${!v}" =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || { echo "--${v,,} must be a positive integer" >&2; exit 2; }
done
[[ "$IDLE_CONNS" =~ ^[0-9]+$ ]] || { echo "--idle-conns must be a number" >&2; exit 2; }
[ -z "$WORKERS_LIST" ] || [[ "$WORKERS_LIST" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "--workers wants a list like 1,2" >&2; exit 2; }
[ -z "$RATE" ] || [[ "$RATE" =~ ^[0-9]+$ ]] || { echo "--rate must be a number" >&2; exit 2; }
case "$RUNTIME" in default|multi|per-core) ;; *) echo "--runtime is default, multi or per-core" >&2; exit 2 ;; esac
[ -n "$WORKERS_LIST" ] || if [ "$RUNTIME" = default ]; then WORKERS_LIST=$(nproc); else WORKERS_LIST=1,2; fi
IFS=, read -r -a WORKER_COUNTS <<<"$WORKERS_LIST"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOADDIR="$ROOT/benches/load"
BACKEND_PORT=$PORT_BASE
BACKEND_ADMIN=$((PORT_BASE + 1))
BACKEND_UNUSED=$((PORT_BASE + 2))
NGINX_PORT=$((PORT_BASE + 3))
PLAIN_PORT=$((PORT_BASE + 4))
PLAIN_ADMIN=$((PORT_BASE + 5))
POLICY_PORT=$((PORT_BASE + 6))
POLICY_ADMIN=$((PORT_BASE + 7))
HAPROXY_PORT=$((PORT_BASE + 8))
PINGORA_PORT=$((PORT_BASE + 9))
BENCH_KEY_ID=AKIDbench
BENCH_SECRET="bench-secret-$RANDOM$RANDOM"
ORIGIN="http://bench.local"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'load.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- clean-up
TMP=$(mktemp -d "${TMPDIR:-/tmp}/keygate-load.XXXXXX")
PIDS=()
stop_pids() { # stop_pids PID...: TERM, wait up to 5 s, then KILL
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pids "${PIDS[@]}"
    if [ "$KEEP" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools
NGINX=$(command -v nginx || true)
[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -n "$NGINX" ] || missing+=(nginx)
# Nothing is installed by this script: install the tools yourself
# (Debian/Ubuntu: apt-get install wrk nginx).
[ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: install them first (e.g. apt-get install ${missing[*]})"
command -v wrk >/dev/null || die "wrk is not installed"
[ -x "$NGINX" ] || die "nginx is not installed"
HAPROXY=$(command -v haproxy || true)
[ -z "$HAPROXY" ] && [ -x /usr/sbin/haproxy ] && HAPROXY=/usr/sbin/haproxy
[ -n "$HAPROXY" ] || log "haproxy is not installed: its rows are left out"

if [ -n "${KEYGATE_BIN:-}" ]; then
    BIN=$KEYGATE_BIN
    EXAMPLES=$(dirname "$BIN")/examples
else
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/keygate"
    EXAMPLES="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples"
    if [ "$BUILD" = 1 ]; then
        log "cargo build --release (keygate, examples fixed_rate and idle_conns)"
        (cd "$ROOT" && cargo build --release --bin keygate --example fixed_rate --example idle_conns)
    fi
fi
[ -x "$BIN" ] || die "no keygate binary at $BIN (build it, or set KEYGATE_BIN)"

# The Pingora peer (see the header): built in its own project and target dir.
PINGORA_BIN=""
PINGORA_VERSION=""
if [ "$PINGORA" = 1 ]; then
    pg_dir="$ROOT/benches/pingora"
    pg_bin="$pg_dir/target/release/pingora-bench"
    pg_why=""
    if [ "$BUILD" = 1 ]; then
        if ! command -v cargo >/dev/null; then
            pg_why="cargo is not installed"
        elif ! command -v cmake >/dev/null; then
            pg_why="its build needs cmake (pingora-core builds zlib-ng): apt-get install cmake"
        else
            log "cargo build --release (benches/pingora: minimal Pingora proxy; a few minutes the first time)"
            pg_t0=$(date +%s)
            if cargo build --release --locked --manifest-path "$pg_dir/Cargo.toml" \
                --target-dir "$pg_dir/target" >"$TMP/pingora-build.log" 2>&1; then
                log "benches/pingora built in $(( $(date +%s) - pg_t0 ))s"
            else
                { grep -E '^error|Caused by|failed to|could not|No such file' "$TMP/pingora-build.log" \
                    || tail -n 5 "$TMP/pingora-build.log"; } | head -n 12 >&2
                pg_why="cargo build failed (the lines above; crates.io unreachable and the crates not in cargo's cache?)"
            fi
        fi
    fi
    if [ -z "$pg_why" ] && [ ! -x "$pg_bin" ]; then pg_why="no binary at $pg_bin (run without --no-build)"; fi
    if [ -z "$pg_why" ]; then
        PINGORA_BIN=$pg_bin
        PINGORA_VERSION=$(awk '/^name = "pingora-proxy"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$pg_dir/Cargo.lock")
    else
        log "Pingora: $pg_why; its row is left out"
    fi
fi
FIXED_RATE="$EXAMPLES/fixed_rate"
IDLE="$EXAMPLES/idle_conns"
[ -x "$FIXED_RATE" ] || die "no load generator at $FIXED_RATE (cargo build --release --example fixed_rate)"
[ "$IDLE_CONNS" = 0 ] || [ -x "$IDLE" ] || die "no $IDLE (cargo build --release --example idle_conns)"
if [ "$IDLE_CONNS" -gt 0 ] && [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_CONNS * 2 + 200)) ]; then
    ulimit -n $((IDLE_CONNS * 2 + 200)) 2>/dev/null || log "ulimit -n is $(ulimit -n): idle-connection test may fall short"
fi

# ---------------------------------------------------------------- CPU placement
NCPU=$(nproc)
placement() { # placement WORKERS: set PROXY_CPUS / BACKEND_CPUS / WRK_CPUS on big machines
    local w=$1 last=$((NCPU - 1))
    PROXY_CPUS=${USER_PROXY_CPUS:-}; BACKEND_CPUS=${USER_BACKEND_CPUS:-}; WRK_CPUS=${USER_WRK_CPUS:-}
    if [ "$NCPU" -ge $((w + 2)) ]; then
        : "${PROXY_CPUS:=0-$((w - 1))}"
        : "${BACKEND_CPUS:=$w}"
        if [ $((w + 1)) -le "$last" ]; then : "${WRK_CPUS:=$((w + 1))-$last}"; else : "${WRK_CPUS:=$last}"; fi
    fi
    PLACEMENT="proxy=${PROXY_CPUS:-any} backend=${BACKEND_CPUS:-any} load=${WRK_CPUS:-any} (${NCPU} CPUs)"
}
USER_PROXY_CPUS=${PROXY_CPUS:-}; USER_BACKEND_CPUS=${BACKEND_CPUS:-}; USER_WRK_CPUS=${WRK_CPUS:-}
pin() { # pin CPUS CMD...: run CMD on the given CPUs when CPUS is set
    local cpus=$1; shift
    if [ -n "$cpus" ]; then taskset -c "$cpus" "$@"; else "$@"; fi
}

# ---------------------------------------------------------------- configs
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $BACKEND_PORT $BACKEND_ADMIN $BACKEND_UNUSED $NGINX_PORT $PLAIN_PORT $PLAIN_ADMIN $POLICY_PORT $POLICY_ADMIN $HAPROXY_PORT \
    ${PINGORA_BIN:+$PINGORA_PORT}; do
    if port_busy "$p"; then die "port $p is in use; pick other ports with --port-base"; fi
done

LOG_LEVEL=warn
NGINX_ACCESS_LOG=off
if [ "$KG_ACCESS" = true ]; then LOG_LEVEL=info; fi
if [ "$ACCESS" = true ]; then NGINX_ACCESS_LOG="access.log"; fi
USER_LINE=""
if [ "$(id -u)" = 0 ]; then USER_LINE="user $(id -un) $(id -gn);"; fi

fill() { # fill TEMPLATE OUT PORT ADMIN WORKERS
    sed -e "s|@PORT@|$3|g" -e "s|@ADMIN@|$4|g" -e "s|@WORKERS@|$5|g" -e "s|@RUNTIME@|$RUNTIME|g" \
        -e "s|@BACKEND@|$BACKEND_PORT|g" -e "s|@BACKEND_ADMIN@|$BACKEND_ADMIN|g" \
        -e "s|@UNUSED@|$BACKEND_UNUSED|g" -e "s|@BACKEND_WORKERS@|$BACKEND_WORKERS|g" \
        -e "s|@LOG_LEVEL@|$LOG_LEVEL|g" -e "s|@ACCESS_LOG@|$KG_ACCESS|g" \
        -e "s|@NGINX_ACCESS_LOG@|$NGINX_ACCESS_LOG|g" -e "s|@USER_LINE@|$USER_LINE|g" \
        "$1" >"$2"
    # The default configuration: no runtime or workers line at all.
    if [ "$RUNTIME" = default ] && [[ "$1" == *.toml ]] && [ "$1" != "$LOADDIR/backend.toml" ]; then
        sed -i -e '/^runtime = /d' -e '/^workers = /d' "$2"
    fi
    if grep -v '^[[:space:]]*#' "$2" | grep -q '@[A-Z_]*@'; then die "unfilled placeholder in $2"; fi
}
export KEYGATE_BENCH_SECRET=$BENCH_SECRET

# ---------------------------------------------------------------- processes
wait_port() { # wait_port PORT PID NAME
    for _ in $(seq 100); do
        if port_busy "$1"; then return 0; fi
        kill -0 "$2" 2>/dev/null || { tail -n 20 "$TMP/$3.log" >&2; die "$3 exited"; }
        sleep 0.1
    done
    die "$3 did not listen on port $1"
}
start() { # start NAME CPUS CMD...; sets LAST_PID to the command's own pid
    # A simple command put in the background is exec'd by bash's fork, and
    # taskset execs its target: $! is then the server itself, not a subshell.
    local name=$1 cpus=$2; shift 2
    if [ -n "$cpus" ]; then
        taskset -c "$cpus" "$@" >>"$TMP/$name.log" 2>&1 &
    else
        "$@" >>"$TMP/$name.log" 2>&1 &
    fi
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

NGINX_PID=""; HAPROXY_PID=""; PINGORA_PID=""; PLAIN_PID=""; POLICY_PID=""; BACKEND_PID=""
start_proxies() { # start_proxies WORKERS
    local w=$1
    fill "$LOADDIR/plain.toml" "$TMP/plain.toml" "$PLAIN_PORT" "$PLAIN_ADMIN" "$w"
    fill "$LOADDIR/policy.toml" "$TMP/policy.toml" "$POLICY_PORT" "$POLICY_ADMIN" "$w"
    mkdir -p "$TMP/nginx/tmp"
    fill "$LOADDIR/nginx.conf" "$TMP/nginx/nginx.conf" "$NGINX_PORT" 0 "$w"
    for c in plain policy; do
        "$BIN" check -c "$TMP/$c.toml" >"$TMP/check-$c.log" 2>&1 || { cat "$TMP/check-$c.log" >&2; die "keygate check $c.toml failed"; }
    done
    start nginx "${PROXY_CPUS:-}" "$NGINX" -p "$TMP/nginx" -c nginx.conf
    NGINX_PID=$LAST_PID
    if [ -n "$HAPROXY" ]; then
        fill "$LOADDIR/haproxy.cfg" "$TMP/haproxy.cfg" "$HAPROXY_PORT" 0 "$w"
        "$HAPROXY" -c -f "$TMP/haproxy.cfg" >"$TMP/check-haproxy.log" 2>&1 || { cat "$TMP/check-haproxy.log" >&2; die "haproxy -c failed"; }
        start haproxy "${PROXY_CPUS:-}" "$HAPROXY" -db -f "$TMP/haproxy.cfg"
        HAPROXY_PID=$LAST_PID
    fi
    if [ -n "$PINGORA_BIN" ]; then
        start pingora "${PROXY_CPUS:-}" "$PINGORA_BIN" --listen "127.0.0.1:$PINGORA_PORT" \
            --backend "127.0.0.1:$BACKEND_PORT" --threads "$w"
        PINGORA_PID=$LAST_PID
    fi
    start keygate-plain "${PROXY_CPUS:-}" "$BIN" run -c "$TMP/plain.toml"
    PLAIN_PID=$LAST_PID
    start keygate-policy "${PROXY_CPUS:-}" "$BIN" run -c "$TMP/policy.toml"
    POLICY_PID=$LAST_PID
    wait_port "$NGINX_PORT" "$NGINX_PID" nginx
    [ -z "$HAPROXY_PID" ] || wait_port "$HAPROXY_PORT" "$HAPROXY_PID" haproxy
    [ -z "$PINGORA_PID" ] || wait_port "$PINGORA_PORT" "$PINGORA_PID" pingora
    wait_port "$PLAIN_PORT" "$PLAIN_PID" keygate-plain
    wait_port "$POLICY_PORT" "$POLICY_PID" keygate-policy
}
stop_proxies() {
    stop_pids "$NGINX_PID" "$PLAIN_PID" "$POLICY_PID" $HAPROXY_PID $PINGORA_PID
    local keep=() p
    for p in "${PIDS[@]}"; do
        [ "$p" = "$NGINX_PID" ] || [ "$p" = "$PLAIN_PID" ] || [ "$p" = "$POLICY_PID" ] \
            || [ "$p" = "$HAPROXY_PID" ] || [ "$p" = "$PINGORA_PID" ] || keep+=("$p")
    done
    HAPROXY_PID=""; PINGORA_PID=""
    PIDS=("${keep[@]}")
    # Let the sockets of the previous set go (TIME_WAIT does not block SO_REUSEADDR).
    sleep 0.5
}

# ---------------------------------------------------------------- signing
# The hmac headers (SPEC §3.1) are computed with `keygate sign` before each
# policy run (the Date must stay within max_skew; replay is off in policy.toml).
SIGN_HEADERS=()
sign() {
    SIGN_HEADERS=()
    local out
    out=$("$BIN" sign --id "$BENCH_KEY_ID" --secret "$BENCH_SECRET") || die "keygate sign failed"
    while IFS= read -r line; do [ -n "$line" ] && SIGN_HEADERS+=("$line"); done <<<"$out"
}

# ---------------------------------------------------------------- measuring
cpu_ticks() { # "USER SYSTEM": utime and stime (all threads) of the PIDs and all their descendants, in clock ticks
    local user=0 sys=0 p u s
    for p in "$@"; do
        [ -n "$p" ] && [ -r "/proc/$p/stat" ] || continue
        read -r u s < <(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12, $13}')
        user=$((user + u)); sys=$((sys + s))
        read -r u s < <(cpu_ticks $(pgrep -P "$p" 2>/dev/null || true))
        user=$((user + u)); sys=$((sys + s))
    done
    echo "$user $sys"
}
ticks_between() { # ticks_between "U0 S0" "U1 S1" -> "TOTAL<TAB>USER"
    local u0 s0 u1 s1
    read -r u0 s0 <<<"$1"; read -r u1 s1 <<<"$2"
    printf '%s\t%s' $((u1 + s1 - u0 - s0)) $((u1 - u0))
}
rss_kib() { # VmRSS of the PIDs and all their descendants, KiB
    local total=0 p r
    for p in "$@"; do
        [ -n "$p" ] && [ -r "/proc/$p/status" ] || continue
        r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status")
        total=$((total + ${r:-0} + $(rss_kib $(pgrep -P "$p" 2>/dev/null || true))))
    done
    echo "$total"
}

url_of() {
    case "$1" in
        direct) echo "http://127.0.0.1:$BACKEND_PORT/bench" ;;
        nginx) echo "http://127.0.0.1:$NGINX_PORT/bench" ;;
        haproxy) echo "http://127.0.0.1:$HAPROXY_PORT/bench" ;;
        pingora) echo "http://127.0.0.1:$PINGORA_PORT/bench" ;;
        kg-plain) echo "http://127.0.0.1:$PLAIN_PORT/plain/bench" ;;
        kg-policy) echo "http://127.0.0.1:$POLICY_PORT/policy/bench" ;;
    esac
}
pid_of() {
    case "$1" in
        direct) echo "" ;;
        nginx) echo "$NGINX_PID" ;;
        haproxy) echo "$HAPROXY_PID" ;;
        pingora) echo "$PINGORA_PID" ;;
        kg-plain) echo "$PLAIN_PID" ;;
        kg-policy) echo "$POLICY_PID" ;;
    esac
}
header_args() { # header_args SCENARIO: fills HARGS with -H pairs
    HARGS=()
    if [ "$1" = kg-policy ]; then
        sign
        local h
        for h in "${SIGN_HEADERS[@]}" "Origin: $ORIGIN"; do HARGS+=(-H "$h"); done
    fi
}
to_us() { # wrk latency "512.00us" / "2.31ms" / "1.02s" -> microseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.1f", v }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.1f", v * 1000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.1f", v * 1000000 }
        else printf "nan" }'
}

probe() { # probe SCENARIO: dies unless it answers 200
    local code
    header_args "$1"
    code=$(curl -s -o "$TMP/probe-$1.body" -w '%{http_code}' "${HARGS[@]}" "$(url_of "$1")" || echo 000)
    [ "$code" = 200 ] || die "$1 answers HTTP $code: $(head -c 200 "$TMP/probe-$1.body" 2>/dev/null | tr '\n' ' ')"
}

# results.tsv: workers mode run scenario rps p50_us p99_us requests proxy_ticks bad proxy_user_ticks
RESULTS="$TMP/results.tsv"
: >"$RESULTS"
SCENARIOS=(direct nginx)
[ -z "$HAPROXY" ] || SCENARIOS+=(haproxy)
[ -z "$PINGORA_BIN" ] || SCENARIOS+=(pingora)
SCENARIOS+=(kg-plain kg-policy)
PROXIES=("${SCENARIOS[@]:1}")

run_wrk() { # run_wrk WORKERS RUN SCENARIO
    local w=$1 run=$2 s=$3 pid out p0 p1
    pid=$(pid_of "$s")
    header_args "$s"
    out="$TMP/wrk-$w-$s-$run.txt"
    p0=$(cpu_ticks "$pid")
    pin "${WRK_CPUS:-}" timeout $((DURATION + 30)) \
        wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "${HARGS[@]}" "$(url_of "$s")" >"$out" 2>&1 || true
    p1=$(cpu_ticks "$pid")
    local rps p50 p99 reqs bad
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    [ -n "$rps" ] || { cat "$out" >&2; die "wrk failed for $s"; }
    p50=$(to_us "$(awk '$1 == "50%" {print $2; exit}' "$out")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2; exit}' "$out")")
    reqs=$(awk '/requests in/ {print $1; exit}' "$out")
    bad=$(awk '/Non-2xx or 3xx responses:/ {n = $NF} /Socket errors/ {gsub(/[^0-9 ]/, " "); n += $1 + $2 + $3 + $4} END {print n + 0}' "$out")
    local ticks user; IFS=$'\t' read -r ticks user <<<"$(ticks_between "$p0" "$p1")"
    printf '%s\twrk\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$run" "$s" "$rps" "$p50" "$p99" "${reqs:-0}" \
        "$ticks" "$bad" "$user" >>"$RESULTS"
}

run_rate() { # run_rate WORKERS RUN SCENARIO RATE
    local w=$1 run=$2 s=$3 rate=$4 pid out p0 p1
    pid=$(pid_of "$s")
    header_args "$s"
    out="$TMP/rate-$w-$s-$run.txt"
    p0=$(cpu_ticks "$pid")
    pin "${WRK_CPUS:-}" timeout $((DURATION + 30)) "$FIXED_RATE" --url "$(url_of "$s")" --rate "$rate" \
        --duration "$DURATION" --connections "$CONNS" "${HARGS[@]}" >"$out" 2>&1 || true
    p1=$(cpu_ticks "$pid")
    local kv; kv=$(tail -n 1 "$out")
    [[ "$kv" == sent=* ]] || { cat "$out" >&2; die "fixed_rate failed for $s"; }
    get() { sed -n "s/.*\\b$1=\\([0-9.]*\\).*/\\1/p" <<<"$kv"; }
    local ticks user; IFS=$'\t' read -r ticks user <<<"$(ticks_between "$p0" "$p1")"
    printf '%s\trate\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$run" "$s" "$(get rps)" "$(get p50_us)" "$(get p99_us)" \
        "$(get ok)" "$ticks" $(($(get non2xx) + $(get errors))) "$user" >>"$RESULTS"
}

median() { sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
TCK=$(getconf CLK_TCK)
col() { # col WORKERS MODE SCENARIO EXPR -> median over runs of an awk expression on the row
    awk -F'\t' -v w="$1" -v m="$2" -v s="$3" -v tck="$TCK" '$1 == w && $2 == m && $4 == s { print '"$4"' }' "$RESULTS" | median
}
CPU_EXPR='($8 > 0 ? $9 * 1000000 / tck / $8 : 0)'
USER_EXPR='($8 > 0 ? $11 * 1000000 / tck / $8 : 0)'
SYS_EXPR='($8 > 0 ? ($9 - $11) * 1000000 / tck / $8 : 0)'

IDLE_RESULTS="$TMP/idle.tsv"
: >"$IDLE_RESULTS"

# ---------------------------------------------------------------- the runs
placement 1
fill "$LOADDIR/backend.toml" "$TMP/backend.toml" 0 0 "$BACKEND_WORKERS"
start backend "${BACKEND_CPUS:-}" "$BIN" run -c "$TMP/backend.toml" --demo-backend "127.0.0.1:$BACKEND_PORT"
BACKEND_PID=$LAST_PID
wait_port "$BACKEND_PORT" "$BACKEND_PID" backend

declare -A RATE_OF
for w in "${WORKER_COUNTS[@]}"; do
    placement "$w"
    log "workers=$w runtime=$RUNTIME: starting nginx and keygate ($PLACEMENT)"
    start_proxies "$w"
    for s in "${SCENARIOS[@]}"; do probe "$s"; done
    for run in $(seq "$RUNS"); do
        for s in "${SCENARIOS[@]}"; do
            log "workers=$w run $run/$RUNS: wrk $s"
            run_wrk "$w" "$run" "$s"
        done
    done
    if [ -n "$RATE" ]; then
        rate=$RATE
    else
        # Issue 13's rule: half of keygate's own capacity (its lower row), the
        # same rate for every proxy.
        cap=$(for s in kg-plain kg-policy; do col "$w" wrk "$s" '$5'; done | sort -g | head -n 1)
        rate=$(awk -v c="$cap" -v f="$RATE_FRAC" 'BEGIN { printf "%d", c * f }')
    fi
    RATE_OF[$w]=$rate
    for run in $(seq "$RUNS"); do
        for s in "${PROXIES[@]}"; do
            log "workers=$w run $run/$RUNS: $rate req/s fixed rate, $s"
            run_rate "$w" "$run" "$s" "$rate"
        done
    done
    if [ "$IDLE_CONNS" -gt 0 ]; then
        for s in nginx kg-policy; do
            header_args "$s"
            pid=$(pid_of "$s")
            port=$( [ "$s" = nginx ] && echo "$NGINX_PORT" || echo "$POLICY_PORT")
            path=$(url_of "$s" | sed 's|^http://[^/]*||')
            log "workers=$w: RSS of $s with $IDLE_CONNS idle keep-alive connections"
            r0=$(rss_kib "$pid")
            "$IDLE" --addr "127.0.0.1:$port" --path "$path" --pid "$pid" --connections "$IDLE_CONNS" \
                "${HARGS[@]}" --hold 4 >"$TMP/idle-$w-$s.txt" 2>&1 &
            idle_pid=$!
            for _ in $(seq 300); do [ -s "$TMP/idle-$w-$s.txt" ] && break; sleep 0.1; done
            r1=$(rss_kib "$pid")   # the whole process tree (nginx: master + workers)
            wait "$idle_pid" || true
            ok=$(sed -n 's/.*answered_200=\([0-9]*\).*/\1/p' "$TMP/idle-$w-$s.txt")
            printf '%s\t%s\t%s\t%s\t%s\n' "$w" "$s" "$r0" "$r1" "${ok:-0}" >>"$IDLE_RESULTS"
        done
    fi
    stop_proxies
done

# ---------------------------------------------------------------- report
label() {
    case "$1" in
        direct) echo "direct (back end)" ;;
        nginx) echo "nginx proxy_pass" ;;
        haproxy) echo "haproxy plain" ;;
        pingora) echo "pingora minimal" ;;
        kg-plain) echo "keygate plain" ;;
        kg-policy) echo "keygate full policy" ;;
    esac
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
ms() { awk -v v="$1" 'BEGIN { printf "%.3f", v / 1000 }'; }
echo
echo "keygate load test: runtime=$RUNTIME, $RUNS run(s) per figure (medians), ${DURATION}s each, $CONNS connections; $NCPU CPUs"
echo "keygate $("$BIN" --version 2>/dev/null | awk '{print $2}'), $("$NGINX" -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')${PINGORA_VERSION:+, pingora-proxy $PINGORA_VERSION}, load generator for fixed rate: examples/fixed_rate.rs"
for w in "${WORKER_COUNTS[@]}"; do
    echo
    echo "== workers=$w (keygate [server] workers, nginx worker_processes); fixed rate ${RATE_OF[$w]} req/s"
    printf '%-22s %9s %8s %8s %9s | %9s %8s %8s %9s\n' "" "wrk:" "" "" "" "fixed rate:" "" "" ""
    printf '%-22s %9s %8s %8s %9s | %9s %8s %8s %9s\n' scenario "req/s" "p50 ms" "p99 ms" "CPU µs/req" "req/s" "p50 ms" "p99 ms" "CPU µs/req"
    declare -A RPS=() WP50=() WP99=() WCPU=() QP50=() QP99=() QCPU=() QRPS=()
    for s in "${SCENARIOS[@]}"; do
        RPS[$s]=$(col "$w" wrk "$s" '$5'); WP50[$s]=$(col "$w" wrk "$s" '$6'); WP99[$s]=$(col "$w" wrk "$s" '$7')
        WCPU[$s]=$(col "$w" wrk "$s" "$CPU_EXPR")
        QRPS[$s]=$(col "$w" rate "$s" '$5'); QP50[$s]=$(col "$w" rate "$s" '$6'); QP99[$s]=$(col "$w" rate "$s" '$7')
        QCPU[$s]=$(col "$w" rate "$s" "$CPU_EXPR")
        bad=$(awk -F'\t' -v w="$w" -v s="$s" '$1 == w && $4 == s {n += $10} END {print n + 0}' "$RESULTS")
        if [ "$s" = direct ]; then
            printf '%-22s %9.0f %8s %8s %9s | %9s %8s %8s %9s%s\n' "$(label "$s")" "${RPS[$s]}" "$(ms "${WP50[$s]}")" \
                "$(ms "${WP99[$s]}")" - - - - - "$([ "$bad" -gt 0 ] && echo "  ($bad errors/non-2xx!)")"
        else
            printf '%-22s %9.0f %8s %8s %9.1f | %9.0f %8s %8s %9.1f%s\n' "$(label "$s")" "${RPS[$s]}" "$(ms "${WP50[$s]}")" \
                "$(ms "${WP99[$s]}")" "${WCPU[$s]}" "${QRPS[$s]}" "$(ms "${QP50[$s]}")" "$(ms "${QP99[$s]}")" "${QCPU[$s]}" \
                "$([ "$bad" -gt 0 ] && echo "  ($bad errors/non-2xx!)")"
        fi
    done
    printf '%-34s %7s %7s %7s %9s | %7s %7s %9s\n' "ratio to nginx" "req/s" "p50" "p99" "CPU/req" "p50" "p99" "CPU/req"
    for s in "${PROXIES[@]:1}"; do
        printf '%-34s %7s %7s %7s %9s | %7s %7s %9s\n' "$(label "$s")" "$(ratio "${RPS[$s]}" "${RPS[nginx]}")" \
            "$(ratio "${WP50[$s]}" "${WP50[nginx]}")" "$(ratio "${WP99[$s]}" "${WP99[nginx]}")" "$(ratio "${WCPU[$s]}" "${WCPU[nginx]}")" \
            "$(ratio "${QP50[$s]}" "${QP50[nginx]}")" "$(ratio "${QP99[$s]}" "${QP99[nginx]}")" "$(ratio "${QCPU[$s]}" "${QCPU[nginx]}")"
    done
    # The kernel's share (loopback TCP, epoll) is about the same for every proxy
    # making the same four socket calls per request; the user-space share is
    # what a proxy's own code costs.
    printf '%-22s %21s | %21s\n' "CPU µs/req split" "wrk: user + system" "fixed: user + system"
    for s in "${PROXIES[@]}"; do
        printf '%-22s %9.1f + %9.1f | %9.1f + %9.1f\n' "$(label "$s")" \
            "$(col "$w" wrk "$s" "$USER_EXPR")" "$(col "$w" wrk "$s" "$SYS_EXPR")" \
            "$(col "$w" rate "$s" "$USER_EXPR")" "$(col "$w" rate "$s" "$SYS_EXPR")"
    done
    printf 'policy overhead (full - plain CPU/req): %s µs (wrk), %s µs (fixed rate)\n' \
        "$(awk -v a="${WCPU[kg-policy]}" -v b="${WCPU[kg-plain]}" 'BEGIN { printf "%.1f", a - b }')" \
        "$(awk -v a="${QCPU[kg-policy]}" -v b="${QCPU[kg-plain]}" 'BEGIN { printf "%.1f", a - b }')"
    if [ -s "$IDLE_RESULTS" ]; then
        awk -F'\t' -v w="$w" -v n="$IDLE_CONNS" '$1 == w {
            printf "RSS with %d idle keep-alive connections: %-20s %6.1f MiB (%.1f MiB before; %d answered 200)\n",
                n, $2, $4 / 1024, $3 / 1024, $5 }' "$IDLE_RESULTS"
    fi
done
