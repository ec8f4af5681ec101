#!/usr/bin/env bash
# Load test on loopback: the demo echo back end alone, nginx as a plain proxy,
# keygate as a plain proxy, and keygate with the full policy stack (hmac auth,
# IP allow-list, rate limits, CORS), side by side.
#
#   benches/load.sh [--workers 1|2] [--duration SECS] [--runs N] [--connections C]
#                   [--threads T] [--rate RPS] [--access-log] [--no-build]
#                   [--port-base P] [--backend-workers N] [--keep]
#
#   --workers N        keygate [server] workers and nginx worker_processes (default 1)
#   --duration SECS    length of each wrk run (default 5)
#   --runs N           repeat the whole set N times, interleaved; medians are printed (default 1)
#   --connections C    wrk connections (default 32);  --threads T  wrk threads (default 1)
#   --rate RPS         also measure p50/p99 at a fixed offered rate (needs `oha`; see below)
#   --access-log       turn the access log on in both keygate (to a file) and nginx
#   --no-build         do not run `cargo build --release` (binary: $KEYGATE_BIN or
#                      $CARGO_TARGET_DIR/release/keygate)
#   --port-base P      ports P..P+9 on 127.0.0.1 (default 19000)
#   --backend-workers  runtime threads of the back end process (default 2)
#   --keep             keep the temp dir (configs, logs, raw wrk outputs)
#
# CPU pinning: with 4 or more cores the proxy, the back end and wrk get cores of
# their own (taskset); override with PROXY_CPUS / BACKEND_CPUS / WRK_CPUS (taskset
# lists, e.g. "2,3"). With fewer cores nothing is pinned and the three compete:
# then compare the CPU-per-request column, which does not depend on contention.
#
# Fixed-rate mode: wrk measures closed-loop throughput; latency at a fixed offered
# rate needs an open-loop generator. wrk2 is not packaged by Debian; `oha` (crates.io,
# `cargo install oha`, several minutes to compile) has `-q RPS --latency-correction`.
# When --rate is given and oha is on PATH, a second table is printed; otherwise the
# mode is skipped with a note.
#
# Every process this script starts is stopped on exit (trap).

set -euo pipefail

WORKERS=1
DURATION=5
RUNS=1
CONNS=32
THREADS=1
RATE=""
ACCESS=false
BUILD=1
PORT_BASE=19000
BACKEND_WORKERS=2
KEEP=0

usage() { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --workers) WORKERS="$2"; shift 2 ;;
        --duration) DURATION="${2%s}"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --connections) CONNS="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --access-log) ACCESS=true; shift ;;
        --no-build) BUILD=0; shift ;;
        --port-base) PORT_BASE="$2"; shift 2 ;;
        --backend-workers) BACKEND_WORKERS="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown option: $1" >&2; usage 2 ;;
    esac
done
for v in WORKERS DURATION RUNS CONNS THREADS PORT_BASE BACKEND_WORKERS; do
    [[ "${!v}" =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || { echo "--${v,,} must be a positive integer" >&2; exit 2; }
done

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
BENCH_KEY_ID=AKIDbench
BENCH_SECRET="bench-secret-$RANDOM$RANDOM"
ORIGIN="http://bench.local"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'load.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- clean-up
TMP=$(mktemp -d "${TMPDIR:-/tmp}/keygate-load.XXXXXX")
PIDS=()
POLICY_RC_CREATED=0
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$POLICY_RC_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ "$KEEP" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
NGINX=$(command -v nginx || true)
[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -n "$NGINX" ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (apt-get)"
    # Keep the package's postinst from starting a system nginx on port 80
    # (policy-rc.d is Debian's switch for that; removed again on exit).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod 0755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    if [ "$POLICY_RC_CREATED" = 1 ]; then as_root rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
command -v wrk >/dev/null || die "wrk is not installed"
[ -x "$NGINX" ] || die "nginx is not installed"
OHA=$(command -v oha || true)

if [ -n "${KEYGATE_BIN:-}" ]; then
    BIN=$KEYGATE_BIN
else
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/keygate"
    if [ "$BUILD" = 1 ]; then
        log "cargo build --release"
        (cd "$ROOT" && cargo build --release --bin keygate)
    fi
fi
[ -x "$BIN" ] || die "no keygate binary at $BIN (build it, or set KEYGATE_BIN)"

# ---------------------------------------------------------------- CPU placement
NCPU=$(nproc)
if [ "$NCPU" -ge 4 ]; then
    last=$((NCPU - 1))
    : "${PROXY_CPUS:=0-$((WORKERS - 1))}"
    : "${BACKEND_CPUS:=$WORKERS-$((WORKERS + 0))}"
    if [ $((WORKERS + 1)) -le "$last" ]; then : "${WRK_CPUS:=$((WORKERS + 1))-$last}"; else : "${WRK_CPUS:=$last}"; fi
fi
pin() { # pin CPUS CMD...: run CMD on the given CPUs when CPUS is set
    local cpus=$1; shift
    if [ -n "$cpus" ]; then taskset -c "$cpus" "$@"; else "$@"; fi
}
PLACEMENT="proxy=${PROXY_CPUS:-any} backend=${BACKEND_CPUS:-any} wrk=${WRK_CPUS:-any} (${NCPU} CPUs)"

# ---------------------------------------------------------------- configs
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $BACKEND_PORT $BACKEND_ADMIN $BACKEND_UNUSED $NGINX_PORT $PLAIN_PORT $PLAIN_ADMIN $POLICY_PORT $POLICY_ADMIN; do
    if port_busy "$p"; then die "port $p is in use; pick other ports with --port-base"; fi
done

LOG_LEVEL=warn
NGINX_ACCESS_LOG=off
if [ "$ACCESS" = true ]; then LOG_LEVEL=info; NGINX_ACCESS_LOG="access.log"; fi
USER_LINE=""
if [ "$(id -u)" = 0 ]; then USER_LINE="user $(id -un) $(id -gn);"; fi

fill() { # fill TEMPLATE OUT PORT ADMIN
    sed -e "s|@PORT@|$3|g" -e "s|@ADMIN@|$4|g" -e "s|@WORKERS@|$WORKERS|g" \
        -e "s|@BACKEND@|$BACKEND_PORT|g" -e "s|@BACKEND_ADMIN@|$BACKEND_ADMIN|g" \
        -e "s|@UNUSED@|$BACKEND_UNUSED|g" -e "s|@BACKEND_WORKERS@|$BACKEND_WORKERS|g" \
        -e "s|@LOG_LEVEL@|$LOG_LEVEL|g" -e "s|@ACCESS_LOG@|$ACCESS|g" \
        -e "s|@NGINX_ACCESS_LOG@|$NGINX_ACCESS_LOG|g" -e "s|@USER_LINE@|$USER_LINE|g" \
        "$1" >"$2"
    if grep -v '^[[:space:]]*#' "$2" | grep -q '@[A-Z_]*@'; then die "unfilled placeholder in $2"; fi
}
fill "$LOADDIR/backend.toml" "$TMP/backend.toml" 0 0
fill "$LOADDIR/plain.toml" "$TMP/plain.toml" "$PLAIN_PORT" "$PLAIN_ADMIN"
fill "$LOADDIR/policy.toml" "$TMP/policy.toml" "$POLICY_PORT" "$POLICY_ADMIN"
mkdir -p "$TMP/nginx/tmp"
fill "$LOADDIR/nginx.conf" "$TMP/nginx/nginx.conf" "$NGINX_PORT" 0
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
        taskset -c "$cpus" "$@" >"$TMP/$name.log" 2>&1 &
    else
        "$@" >"$TMP/$name.log" 2>&1 &
    fi
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

for c in plain policy; do
    if ! "$BIN" check -c "$TMP/$c.toml" >"$TMP/check-$c.log" 2>&1; then
        log "keygate check $c.toml failed:"; cat "$TMP/check-$c.log" >&2
    fi
done

log "starting the back end, nginx and keygate ($PLACEMENT)"
start backend "${BACKEND_CPUS:-}" "$BIN" run -c "$TMP/backend.toml" --demo-backend "127.0.0.1:$BACKEND_PORT"
BACKEND_PID=$LAST_PID; wait_port "$BACKEND_PORT" "$BACKEND_PID" backend
start nginx "${PROXY_CPUS:-}" "$NGINX" -p "$TMP/nginx" -c nginx.conf
NGINX_PID=$LAST_PID; wait_port "$NGINX_PORT" "$NGINX_PID" nginx
start keygate-plain "${PROXY_CPUS:-}" "$BIN" run -c "$TMP/plain.toml"
PLAIN_PID=$LAST_PID
start keygate-policy "${PROXY_CPUS:-}" "$BIN" run -c "$TMP/policy.toml"
POLICY_PID=$LAST_PID
wait_port "$PLAIN_PORT" "$PLAIN_PID" keygate-plain
POLICY_UP=1
for _ in $(seq 50); do port_busy "$POLICY_PORT" && break; kill -0 "$POLICY_PID" 2>/dev/null || break; sleep 0.1; done
port_busy "$POLICY_PORT" || { POLICY_UP=0; log "keygate (policy) did not start:"; tail -n 20 "$TMP/keygate-policy.log" >&2; }

# ---------------------------------------------------------------- signing
# The hmac headers (SPEC §3.1) are computed once per policy run with `keygate
# sign`; when that subcommand is unavailable, the same signature is computed
# here from the spec (hmac-sha1 over "date: <Date>").
SIGN_HEADERS=()
sign() {
    SIGN_HEADERS=()
    local out
    if out=$("$BIN" sign --id "$BENCH_KEY_ID" --secret "$BENCH_SECRET" 2>/dev/null) && [ -n "$out" ]; then
        while IFS= read -r line; do [ -n "$line" ] && SIGN_HEADERS+=("$line"); done <<<"$out"
        SIGN_SOURCE="keygate sign"
    else
        local date sig
        date=$(LC_ALL=C TZ=GMT date '+%a, %d %b %Y %H:%M:%S GMT')
        sig=$(printf 'date: %s' "$date" | openssl dgst -sha1 -hmac "$BENCH_SECRET" -binary | base64)
        SIGN_HEADERS=("Date: $date" "Authorization: hmac id=\"$BENCH_KEY_ID\", algorithm=\"hmac-sha1\", headers=\"date\", signature=\"$sig\"")
        SIGN_SOURCE="openssl (keygate sign unavailable)"
    fi
}

# ---------------------------------------------------------------- measuring
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # utime+stime (all threads) of the PIDs and all their descendants, in clock ticks
    local total=0 p t
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        t=$(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')
        total=$((total + t + $(cpu_ticks $(pgrep -P "$p" 2>/dev/null || true))))
    done
    echo "$total"
}

# scenario name -> URL, proxy pid (none for direct), extra headers
url_of() {
    case "$1" in
        direct) echo "http://127.0.0.1:$BACKEND_PORT/bench" ;;
        nginx) echo "http://127.0.0.1:$NGINX_PORT/bench" ;;
        kg-plain) echo "http://127.0.0.1:$PLAIN_PORT/plain/bench" ;;
        kg-policy) echo "http://127.0.0.1:$POLICY_PORT/policy/bench" ;;
    esac
}
pid_of() {
    case "$1" in
        direct) echo "" ;;
        nginx) echo "$NGINX_PID" ;;
        kg-plain) echo "$PLAIN_PID" ;;
        kg-policy) echo "$POLICY_PID" ;;
    esac
}
headers_of() { # prints one header per line
    if [ "$1" = kg-policy ]; then
        printf '%s\n' "${SIGN_HEADERS[@]}" "Origin: $ORIGIN"
    fi
}
to_us() { # wrk latency "512.00us" / "2.31ms" / "1.02s" -> microseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.1f", v }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.1f", v * 1000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.1f", v * 1000000 }
        else printf "nan" }'
}

# Check one request before loading a target: a wrong answer makes the figures meaningless.
probe() { # probe SCENARIO -> 0 when it answers 200
    local args=() h code
    while IFS= read -r h; do [ -n "$h" ] && args+=(-H "$h"); done < <(headers_of "$1")
    code=$(curl -s -o "$TMP/probe-$1.body" -w '%{http_code}' "${args[@]}" "$(url_of "$1")" || echo 000)
    if [ "$code" != 200 ]; then
        PROBE_ERR="HTTP $code: $(head -c 200 "$TMP/probe-$1.body" 2>/dev/null | tr '\n' ' ')"
        return 1
    fi
}

RESULTS="$TMP/results.tsv"   # run scenario rps p50_us p99_us requests proxy_ticks backend_ticks non2xx
: >"$RESULTS"
declare -A PENDING=()
SCENARIOS=(direct nginx kg-plain kg-policy)

run_wrk() { # run_wrk RUN SCENARIO
    local run=$1 s=$2 pid args=() h out
    pid=$(pid_of "$s")
    while IFS= read -r h; do [ -n "$h" ] && args+=(-H "$h"); done < <(headers_of "$s")
    out="$TMP/wrk-$s-$run.txt"
    local p0 b0 p1 b1
    p0=$( [ -n "$pid" ] && cpu_ticks "$pid" || echo 0 )
    b0=$(cpu_ticks "$BACKEND_PID")
    pin "${WRK_CPUS:-}" timeout $((DURATION + 30)) \
        wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "${args[@]}" "$(url_of "$s")" >"$out" 2>&1 || true
    p1=$( [ -n "$pid" ] && cpu_ticks "$pid" || echo 0 )
    b1=$(cpu_ticks "$BACKEND_PID")
    local rps p50 p99 reqs non2xx
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p50=$(to_us "$(awk '$1 == "50%" {print $2; exit}' "$out")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2; exit}' "$out")")
    reqs=$(awk '/requests in/ {print $1; exit}' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    [ -n "$rps" ] || { log "wrk failed for $s:"; cat "$out" >&2; return 0; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$s" "$rps" "$p50" "$p99" "${reqs:-0}" \
        $((p1 - p0)) $((b1 - b0)) "${non2xx:-0}" >>"$RESULTS"
}

log "wrk -t$THREADS -c$CONNS -d${DURATION}s, $RUNS run(s), workers=$WORKERS"
for run in $(seq "$RUNS"); do
    for s in "${SCENARIOS[@]}"; do
        [ -n "${PENDING[$s]:-}" ] && continue
        if [ "$s" = kg-policy ]; then
            if [ "$POLICY_UP" = 0 ]; then PENDING[$s]="did not start (see keygate check)"; continue; fi
            sign
        fi
        if ! probe "$s"; then
            PENDING[$s]=$PROBE_ERR
            log "$s: skipped, $PROBE_ERR"
            continue
        fi
        log "run $run/$RUNS: $s"
        run_wrk "$run" "$s"
    done
done

# ---------------------------------------------------------------- fixed rate (oha)
RATE_RESULTS="$TMP/rate.tsv"
: >"$RATE_RESULTS"
RATE_NOTE=""
if [ -n "$RATE" ]; then
    if [ -z "$OHA" ]; then
        RATE_NOTE="fixed-rate mode skipped: oha is not installed (cargo install oha)"
    else
        for s in "${SCENARIOS[@]}"; do
            [ -n "${PENDING[$s]:-}" ] && continue
            [ "$s" = kg-policy ] && sign
            args=()
            while IFS= read -r h; do [ -n "$h" ] && args+=(-H "$h"); done < <(headers_of "$s")
            log "oha at $RATE req/s: $s"
            pin "${WRK_CPUS:-}" timeout $((DURATION + 30)) "$OHA" --no-tui -z "${DURATION}s" -c "$CONNS" \
                -q "$RATE" --latency-correction --output-format json "${args[@]}" "$(url_of "$s")" \
                >"$TMP/oha-$s.json" 2>"$TMP/oha-$s.err" || true
            python3 - "$s" "$TMP/oha-$s.json" >>"$RATE_RESULTS" <<'PY' || true
import json, sys
s, path = sys.argv[1], sys.argv[2]
d = json.load(open(path))
lp = d.get("latencyPercentiles", {})
ok = d.get("summary", {}).get("successRate", 0)
print(f"{s}\t{d['summary']['requestsPerSec']:.0f}\t{lp.get('p50', 0) * 1e6:.1f}\t{lp.get('p99', 0) * 1e6:.1f}\t{ok:.4f}")
PY
        done
    fi
fi

# ---------------------------------------------------------------- report
median() { sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
col() { # col SCENARIO EXPR -> median over runs of an awk expression on the row
    awk -F'\t' -v s="$1" '$2 == s { print '"$2"' }' "$RESULTS" | median
}
declare -A RPS P50 P99 PCPU BCPU
label() {
    case "$1" in
        direct) echo "direct (back end)" ;;
        nginx) echo "nginx proxy" ;;
        kg-plain) echo "keygate plain" ;;
        kg-policy) echo "keygate full policy" ;;
    esac
}
tck=$CLK_TCK
echo
echo "keygate load test: wrk -t$THREADS -c$CONNS -d${DURATION}s, workers=$WORKERS, runs=$RUNS (medians), $PLACEMENT"
echo "keygate $("$BIN" --version 2>/dev/null | awk '{print $2}'), $("$NGINX" -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')"
printf '%-22s %10s %9s %9s %15s %17s\n' scenario "req/s" "p50 ms" "p99 ms" "proxy CPU µs/req" "backend CPU µs/req"
for s in "${SCENARIOS[@]}"; do
    if ! awk -F'\t' -v s="$s" '$2 == s {f = 1} END {exit !f}' "$RESULTS"; then
        printf '%-22s %s\n' "$(label "$s")" "pending: ${PENDING[$s]:-no result}"
        continue
    fi
    RPS[$s]=$(col "$s" '$3')
    P50[$s]=$(col "$s" '$4 / 1000')
    P99[$s]=$(col "$s" '$5 / 1000')
    PCPU[$s]=$(col "$s" "(\$6 > 0 ? \$7 * 1000000 / $tck / \$6 : 0)")
    BCPU[$s]=$(col "$s" "(\$6 > 0 ? \$8 * 1000000 / $tck / \$6 : 0)")
    bad=$(awk -F'\t' -v s="$s" '$2 == s {n += $9} END {print n + 0}' "$RESULTS")
    proxy_cpu=$([ "$s" = direct ] && echo "-" || printf '%.1f' "${PCPU[$s]}")
    printf '%-22s %10.0f %9.3f %9.3f %15s %17.1f%s\n' "$(label "$s")" "${RPS[$s]}" "${P50[$s]}" "${P99[$s]}" \
        "$proxy_cpu" "${BCPU[$s]}" "$([ "$bad" -gt 0 ] && echo "  ($bad non-2xx!)")"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
echo
printf '%-34s %8s %8s %8s %10s\n' ratio "req/s" "p50" "p99" "proxy CPU"
for s in kg-plain kg-policy; do
    [ -n "${RPS[$s]:-}" ] || continue
    if [ -n "${RPS[nginx]:-}" ]; then
        printf '%-34s %8s %8s %8s %10s\n' "$(label "$s") / nginx" "$(ratio "${RPS[$s]}" "${RPS[nginx]}")" \
            "$(ratio "${P50[$s]}" "${P50[nginx]}")" "$(ratio "${P99[$s]}" "${P99[nginx]}")" "$(ratio "${PCPU[$s]}" "${PCPU[nginx]}")"
    fi
    if [ -n "${RPS[direct]:-}" ]; then
        printf '%-34s %8s %8s %8s %10s\n' "$(label "$s") / direct" "$(ratio "${RPS[$s]}" "${RPS[direct]}")" \
            "$(ratio "${P50[$s]}" "${P50[direct]}")" "$(ratio "${P99[$s]}" "${P99[direct]}")" "-"
    fi
done
if [ -n "${SIGN_SOURCE:-}" ]; then echo "hmac headers from: $SIGN_SOURCE"; fi
if [ -n "$RATE" ]; then
    echo
    if [ -s "$RATE_RESULTS" ]; then
        echo "fixed offered rate: $RATE req/s (oha, latency-corrected)"
        printf '%-22s %10s %9s %9s %9s\n' scenario "req/s" "p50 ms" "p99 ms" "success"
        while IFS=$'\t' read -r s r p50 p99 ok; do
            printf '%-22s %10s %9.3f %9.3f %9s\n' "$(label "$s")" "$r" "$(awk -v v="$p50" 'BEGIN{print v/1000}')" \
                "$(awk -v v="$p99" 'BEGIN{print v/1000}')" "$ok"
        done <"$RATE_RESULTS"
    else
        echo "${RATE_NOTE:-fixed-rate mode produced no result (see $TMP/oha-*.err)}"
    fi
fi
