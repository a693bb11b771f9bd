#!/usr/bin/env bash
# hookgate load benchmark: the same load against a bare backend (the ceiling), nginx as a
# keep-alive reverse proxy, and hookgate with its full route policy, back to back, several
# rounds. Prints one table of medians (min-max) and hookgate/nginx ratios. See bench/README.md.
#
# Everything listens on 127.0.0.1 only, every load run is bounded in time, and every process
# this script starts is stopped on exit (trap EXIT).
#
# Environment (all optional):
#   DURATION=10s      length of each load run (wrk syntax: 3s, 10s, 1m)
#   ROUNDS=3          rounds; every round runs every workload against every target
#   CONNS=64          concurrent connections      THREADS=2   wrk threads
#   WORKLOADS="http-2k tls-2k tls-64k tls-1m tls-handshake"   subset/order of workloads
#   TARGETS="backend nginx hookgate"    subset/order of targets; also nginx-verify (nginx
#                     checking the signature with njs) and the experiment targets in README
#   SCALING=1         also run hookgate with 10 000 routes and with 100 000 allowlist CIDRs
#                     (http-2k), as ratios to the small config
#   PROFILE=1         also record a perf profile of hookgate per workload (perf from linux-perf)
#   CARGO_TARGET_DIR  where cargo builds hookgate (default: target/ in the repository)
#   HOOKGATE_BIN      use this binary instead of building one
#   HOOKGATE_ALT_BIN  a second binary, run as the target hookgate-alt (A/B in one run), and
#                     with the Redis limiter as hookgate-alt-redis, and in queue mode as
#                     hookgate-alt-queue
#   OUT=bench/last-run.md   where the table is also written
#   KEEP=1            keep the temp dir (configs, logs, raw wrk output)
#   PORT_BASE=18000   first of the loopback ports used (PORT_BASE..PORT_BASE+30)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}; export CONNS  # also the queue target's delivery concurrency
THREADS=${THREADS:-2}
WORKLOADS=${WORKLOADS:-"http-2k tls-2k tls-64k tls-1m tls-handshake"}
TARGETS=${TARGETS:-"backend nginx hookgate"}
SCALING=${SCALING:-0}
PROFILE=${PROFILE:-0}
OUT=${OUT:-$HERE/last-run.md}
PORT_BASE=${PORT_BASE:-18000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

BACKEND_HTTP=$((PORT_BASE + 1)); BACKEND_TLS=$((PORT_BASE + 2))
NGINX_HTTP=$((PORT_BASE + 11)); NGINX_TLS=$((PORT_BASE + 12))
HG_HTTP=$((PORT_BASE + 21)); HG_TLS=$((PORT_BASE + 22)); HG_ADMIN=$((PORT_BASE + 23))
SECRET="bench-secret-$(date +%s)"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
SUDO=; [[ $(id -u) == 0 ]] || SUDO=sudo
need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v python3 >/dev/null || need_apt+=(python3)
command -v curl >/dev/null || need_apt+=(curl)
if [[ " $TARGETS " == *" nginx-verify "* && ! -e /usr/lib/nginx/modules/ngx_http_js_module.so ]]; then
    need_apt+=(libnginx-mod-http-js)
fi
if [[ $PROFILE == 1 ]] && ! command -v perf >/dev/null; then need_apt+=(linux-perf); fi
if ((${#need_apt[@]})); then
    log "installing ${need_apt[*]} (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# the revision the binary is built from (read before the build, as the tree may move on)
REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')
[[ -z $(cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null) ]] || REV="$REV+local changes"
[[ -z ${HOOKGATE_BIN:-} ]] || REV="$HOOKGATE_BIN"
if [[ -n ${HOOKGATE_BIN:-} ]]; then
    BIN=$HOOKGATE_BIN
else
    log "building hookgate (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
    BIN=$CARGO_TARGET_DIR/release/hookgate
fi
[[ -x $BIN ]] || die "no hookgate binary at $BIN"
if [[ " $TARGETS " == *" floor"* ]]; then
    log "building the floor proxy (bench/floor)"
    cargo build --release --quiet --manifest-path "$HERE/floor/Cargo.toml"
    FLOOR_BIN=$CARGO_TARGET_DIR/release/hookgate-bench-floor
fi
FLOOR_HTTP=$((PORT_BASE + 31))
REDIS_PORT=$((PORT_BASE + 32))

# ---------------------------------------------------------------------------------------------
# Process bookkeeping: every pid started is stopped on exit
# ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/hookgate-bench.XXXXXX)
chmod 755 "$WORK"
STARTED=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pids "${STARTED[@]}" 2>/dev/null || true
    if [[ ${KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

alive() { [[ -n $1 && -d /proc/$1 ]] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

# children of a pid (nginx workers)
children() { local p; for p in /proc/[0-9]*; do
    [[ $(awk '{print $4}' "$p/stat" 2>/dev/null) == "$1" ]] && echo "${p#/proc/}"; done; true; }

stop_pids() {
    local pid all=()
    for pid in "$@"; do [[ -n $pid ]] || continue; all+=("$pid" $(children "$pid")); done
    for pid in "${all[@]}"; do alive "$pid" && { kill -TERM "$pid" 2>/dev/null || true; }; done
    for _ in $(seq 50); do
        local left=0
        for pid in "${all[@]}"; do alive "$pid" && left=1; done
        ((left)) || break
        sleep 0.1
    done
    for pid in "${all[@]}"; do alive "$pid" && { kill -KILL "$pid" 2>/dev/null || true; }; done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
    # forget them, so a pid reused later by someone else is never signalled
    local keep=() s
    for s in "${STARTED[@]}"; do
        for pid in "$@"; do [[ $s == "$pid" ]] && continue 2; done
        keep+=("$s")
    done
    STARTED=("${keep[@]}")
}

wait_port() { # port [seconds]
    local i
    for ((i = 0; i < ${2:-20} * 20; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# utime+stime in seconds of a pid and its children (nginx: master + workers)
cpu_seconds() {
    local pid total=0
    for pid in "$1" $(children "$1"); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total $(getconf CLK_TCK)" | awk '{printf "%.2f", $1 / $2}'
}

# CPU ticks of one process's threads, by kind: "workers spool-writer other"
thread_ticks() {
    local t comm ticks w=0 s=0 o=0
    for t in /proc/"$1"/task/*; do
        comm=$(cat "$t/comm" 2>/dev/null) || continue
        ticks=$(awk '{print $14 + $15}' "$t/stat" 2>/dev/null) || continue
        case $comm in
            hookgate-worker*) w=$((w + ticks)) ;;
            hookgate-spool*) s=$((s + ticks)) ;;
            *) o=$((o + ticks)) ;;
        esac
    done
    echo "$w $s $o"
}

# busy time of the whole machine: user nice system steal (irq/softirq time is left out here
# as it is from every process's utime+stime)
machine_busy_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '/^cpu / {printf "%.2f", ($2 + $3 + $4 + $9) / hz}' /proc/stat
}

# stime alone, seconds (kernel time: mostly loopback TCP, which every target pays alike)
sys_seconds() {
    local pid total=0
    for pid in "$1" $(children "$1"); do
        total=$((total + $(awk '{print $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total $(getconf CLK_TCK)" | awk '{printf "%.2f", $1 / $2}'
}

# sum of VmHWM (peak RSS, KiB) of a pid and its children
peak_rss_kib() {
    local pid total=0 v
    for pid in "$1" $(children "$1"); do
        v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo $total
}

# ---------------------------------------------------------------------------------------------
# Inputs: certificate, bodies, signatures, wrk scripts
# ---------------------------------------------------------------------------------------------
log "temp dir $WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
chmod 644 "$WORK/key.pem" # nginx workers may run as another user; throwaway key

python3 - "$WORK" "$SECRET" <<'PY'
import hmac, hashlib, json, sys
work, secret = sys.argv[1], sys.argv[2].encode()
for name, size in (("2k", 2048), ("64k", 65536), ("1m", 1048576)):
    head = '{"action":"opened","repository":{"full_name":"bench/hookgate"},"padding":"'
    tail = '"}'
    body = (head + "x" * (size - len(head) - len(tail)) + tail).encode()
    assert len(body) == size and json.loads(body)
    open(f"{work}/body-{name}.json", "wb").write(body)
    sig = hmac.new(secret, body, hashlib.sha256).hexdigest()
    open(f"{work}/body-{name}.sig", "w").write("sha256=" + sig)
PY

# workload -> body, scheme, extra header
workload_body() { case $1 in *-2k | tls-handshake) echo 2k ;; *-64k) echo 64k ;; *-1m) echo 1m ;; esac; }
workload_tls() { [[ $1 == tls-* ]] && echo 1 || echo 0; }

write_lua() { # workload -> path of its wrk script
    local w=$1 b; b=$(workload_body "$w")
    local lua=$WORK/$w.lua close=""
    [[ $w == tls-handshake ]] && close='wrk.headers["Connection"] = "close"'
    cat >"$lua" <<EOF
local f = assert(io.open("$WORK/body-$b.json", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "GitHub-Hookshot/bench"
wrk.headers["X-GitHub-Event"] = "push"
wrk.headers["X-Hub-Signature-256"] = "$(cat "$WORK/body-$b.sig")"
$close
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
EOF
    echo "$lua"
}

# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------
NGINX_USER=""
[[ $(id -u) == 0 ]] && NGINX_USER="user root root;"

nginx_common() { # name
    cat <<EOF
$NGINX_USER
worker_processes auto;
daemon off;
master_process on;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path $WORK/$1-body;
    proxy_temp_path $WORK/$1-proxy;
    fastcgi_temp_path $WORK/$1-fcgi; uwsgi_temp_path $WORK/$1-uwsgi; scgi_temp_path $WORK/$1-scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
EOF
}

# The backend (and the ceiling): nginx answering 200 "ok" to anything, plain and TLS.
start_backend() {
    local conf=$WORK/backend.conf
    { nginx_common backend; cat <<EOF
    access_log off;
    client_max_body_size 0;
    server {
        listen 127.0.0.1:$BACKEND_HTTP;
        listen 127.0.0.1:$BACKEND_TLS ssl;
        location / { return 200 "ok\n"; }
    }
}
EOF
    } >"$conf"
    "$NGINX" -e "$WORK/backend-error.log" -p "$WORK" -c "$conf" >>"$WORK/backend.out" 2>&1 &
    BACKEND_PID=$!; STARTED+=("$BACKEND_PID")
    wait_port "$BACKEND_HTTP" && wait_port "$BACKEND_TLS" || die "backend did not start"
}

# nginx as a keep-alive reverse proxy with an access log (JSON, buffered like hookgate's).
# $1 = verify (target nginx-verify): nginx first checks the GitHub signature the way an operator
# would add that to nginx, which has no HMAC check of its own: with njs, nginx's scripting
# module (Debian's libnginx-mod-http-js). Then it proxies exactly as the plain target does.
start_nginx() {
    local variant=${1:-plain} conf=$WORK/nginx.conf
    local entry="proxy_pass http://backend/internal/github;"
    if [[ $variant == verify ]]; then
        # njs 0.7's WebCrypto, which is OpenSSL's HMAC (with the CPU's SHA extensions, like
        # hookgate's ring); njs's own crypto.createHmac is a slower, portable SHA-256.
        # requestBuffer is the raw body, kept in one buffer below.
        cat >"$WORK/verify.js" <<EOF
const secret = Buffer.from('$SECRET');
async function github(r) {
    const signature = r.headersIn['X-Hub-Signature-256'];
    const body = r.requestBuffer;
    if (!signature || body === undefined) { r.return(401); return; }
    const key = await crypto.subtle.importKey('raw', secret, { name: 'HMAC', hash: 'SHA-256' },
        false, ['sign']);
    const digest = await crypto.subtle.sign('HMAC', key, body);
    const mac = Buffer.from(digest).toString('hex');
    if (signature !== 'sha256=' + mac) { r.return(401); return; }
    r.internalRedirect('/internal/github');
}
export default { github };
EOF
        entry="client_body_in_single_buffer on;
            js_content verify.github;
        }
        location = /internal/github {
            internal;
            proxy_pass http://backend;"
    fi
    { [[ $variant == verify ]] && echo "load_module /usr/lib/nginx/modules/ngx_http_js_module.so;"
      nginx_common nginx; cat <<EOF
    log_format json escape=json '{"ts":"\$time_iso8601","request_id":"\$request_id",'
        '"method":"\$request_method","path":"\$uri","proto":"\$server_protocol",'
        '"tls_version":"\$ssl_protocol","peer_ip":"\$remote_addr","status":\$status,'
        '"bytes_in":\$request_length,"bytes_out":\$bytes_sent,"duration":\$request_time,'
        '"upstream_status":"\$upstream_status","upstream_ms":"\$upstream_response_time",'
        '"user_agent":"\$http_user_agent"}';
    access_log $WORK/nginx-access.log json buffer=64k flush=1s;
    client_max_body_size 2m;
    client_body_buffer_size 2m;     # bodies stay in memory, as in hookgate
    $([[ $variant == verify ]] && echo "js_import verify from $WORK/verify.js;")
    upstream backend {
        server 127.0.0.1:$BACKEND_HTTP;
        keepalive 256;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$NGINX_HTTP;
        listen 127.0.0.1:$NGINX_TLS ssl;
        location = /hooks/github {
            allow 127.0.0.0/8;
            deny all;
            $entry
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host 127.0.0.1:$BACKEND_HTTP;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Request-Id \$request_id;
        }
    }
}
EOF
    } >"$conf"
    "$NGINX" -e "$WORK/nginx-error.log" -p "$WORK" -c "$conf" >>"$WORK/nginx.out" 2>&1 &
    TARGET_PID=$!; STARTED+=("$TARGET_PID")
    wait_port "$NGINX_HTTP" && wait_port "$NGINX_TLS" || die "nginx did not start"
}

# hookgate with its full policy on the route. $1: small | routes | cidrs, or, to see where the
# cost goes: bare (no verify, allowlist or rate limit) | nolog (bare, and access_log: off);
# queue: small with `delivery: queue` (answered after the spool's fsync'd commit, issue 16)
write_hookgate_config() {
    local variant=$1 conf=$WORK/hookgate-$1.yaml
    python3 - "$variant" "$conf" "$WORK" "$SECRET" "$BACKEND_HTTP" "$HG_HTTP" "$HG_TLS" "$HG_ADMIN" "$REDIS_PORT" <<'PY'
import random, sys
variant, conf, work, secret, backend, http, tls, admin, redis_port = sys.argv[1:]
allow = ["127.0.0.0/8"]
extra_routes = []
if variant == "cidrs":
    # 100 000 distinct /32s and /24s outside 127/8, then the loopback network the load comes from
    rnd = random.Random(42)
    seen = set()
    while len(seen) < 100_000:
        a = rnd.choice([n for n in range(1, 224) if n not in (10, 127)])
        net = (a, rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
        plen = rnd.choice([24, 32])
        if plen == 24:
            net = net[:3] + (0,)
        seen.add((net, plen))
    allow = [f"{a}.{b}.{c}.{d}/{p}" for (a, b, c, d), p in sorted(seen)] + allow
if variant == "routes":
    extra_routes = [f"/hooks/r{i:05d}" for i in range(9_999)]  # bench route is the 10 000th
policy = variant not in ("bare", "nolog")
queue = variant == "queue"  # durable delivery: answered after the spool commit (issue 16)
with open(conf, "w") as f:
    f.write(f"""listeners:
  - name: public
    bind: 127.0.0.1:{tls}
    tls: {{ cert: {work}/cert.pem, key: {work}/key.pem }}
  - name: internal
    bind: 127.0.0.1:{http}
admin:
  bind: 127.0.0.1:{admin}
limits:
  max_body: 2MiB
  drain_timeout: 2s{chr(10) + "  worker_threads: 1" if variant == "1thread" else ""}
access_log: {"off" if variant == "nolog" else work + "/hookgate-access.log"}{chr(10) + "redis: { url: redis://127.0.0.1:" + redis_port + ", timeout: 25ms }" if variant == "redis" else ""}
{f"spool: {{ path: {work}/spool, max_bytes: 8GiB }}" if queue else ""}
upstreams:
  backend:
    url: http://127.0.0.1:{backend}
    timeout: 15s{chr(10) + "    delivery: { concurrency: " + __import__("os").environ.get("CONNS", "64") + " }  # as many attempts at once as direct mode has forwards (CONNS)" if queue else ""}
routes:
""")
    for i, path in enumerate(extra_routes):
        f.write(f"  - {{ name: r{i:05d}, path: {path}, upstream: backend }}\n")
    f.write(f"""  - name: github
    path: /hooks/github
    methods: [POST]
    upstream: backend
    upstream_path: /internal/github
""")
    if queue:
        f.write("    delivery: queue\n")
    if policy:
        f.write(f"""    allow_ips: [{", ".join(allow)}]
    rate_limit: {{ per_second: 1000000, burst: 1000000, key: route }}
    verify: {{ provider: github, secrets: ["{secret}"] }}
    replay_window: off
""")
PY
    echo "$conf"
}

# Variants that change hookgate's environment, not its config (experiments, see README):
# jemalloc / mimalloc preload another allocator (Debian libjemalloc2 / libmimalloc2.0),
# (1thread, a config variant, runs one worker thread; alt runs $HOOKGATE_ALT_BIN, and alt-redis
# runs it with the redis variant's config, for an A/B of two builds' Redis limiters in one run;
# alt-queue likewise with the queue variant's.)
# HOOKGATE_ENV="K=V ..." applies to every variant.
variant_env() {
    case $1 in
        jemalloc) echo "LD_PRELOAD=$(lib_path libjemalloc.so.2 libjemalloc2)" ;;
        mimalloc) echo "LD_PRELOAD=$(lib_path libmimalloc.so.2 libmimalloc2.0)" ;;
    esac
}
variant_config() { case $1 in jemalloc | mimalloc | alt) echo small ;; alt-redis) echo redis ;; alt-queue) echo queue ;; *) echo "$1" ;; esac; }
lib_path() { # soname apt-package
    local f; f=$(ldconfig -p | awk -v n="$1" '$1 == n {print $NF; exit}')
    if [[ -z $f ]]; then
        DEBIAN_FRONTEND=noninteractive ${SUDO:-} apt-get install -y -qq "$2" >/dev/null
        f=$(ldconfig -p | awk -v n="$1" '$1 == n {print $NF; exit}')
    fi
    [[ -n $f ]] || die "no $1"
    echo "$f"
}

start_hookgate() { # variant
    local conf=$WORK/hookgate-$(variant_config "$1").yaml t0
    # Each queue run starts from an empty spool, so that rounds and A/B builds compare alike
    # (a spool that kept the earlier rounds' events is read back at start and held in memory).
    [[ $(variant_config "$1") == queue ]] && rm -rf "$WORK/spool"
    t0=$(date +%s.%N)
    local bin=$BIN; [[ $1 == alt || $1 == alt-* ]] && bin=${HOOKGATE_ALT_BIN:?hookgate-alt needs HOOKGATE_ALT_BIN}
    env ${HOOKGATE_ENV:-} $(variant_env "$1") "$bin" run -c "$conf" >>"$WORK/hookgate.out" 2>&1 &
    TARGET_PID=$!; STARTED+=("$TARGET_PID")
    local i
    for ((i = 0; i < 1200; i++)); do
        curl -fs "http://127.0.0.1:$HG_ADMIN/readyz" >/dev/null 2>&1 && break
        alive "$TARGET_PID" || die "hookgate exited; see: $(tail -5 "$WORK/hookgate.out")"
        sleep 0.05
    done
    wait_port "$HG_HTTP" && wait_port "$HG_TLS" || die "hookgate did not start"
    STARTUP_S=$(echo "$t0 $(date +%s.%N)" | awk '{printf "%.2f", $2 - $1}')
}

# Refusals would make hookgate look fast: every request must have been forwarded.
check_hookgate_outcomes() {
    curl -fs "http://127.0.0.1:$HG_ADMIN/metrics" | awk '
        /^hookgate_requests_total\{/ {
            if (($0 ~ /outcome="forwarded"/ || $0 ~ /outcome="queued"/) && $0 ~ /code="200"/) ok += $NF; else bad += $NF }
        END { printf "%d %d\n", ok, bad }'
}

# ---------------------------------------------------------------------------------------------
# One run: fresh backend + fresh target, wrk for DURATION, measurements, stop.
# ---------------------------------------------------------------------------------------------
RESULTS=$WORK/results.tsv
printf 'round\tworkload\ttarget\trps\tp50_ms\tp99_ms\trss_mib\tcpu_per_10k\trequests\terrors\tother_load\tuser_per_10k\tbackend_per_10k\twrk_per_10k\n' >"$RESULTS"
dur_s=$(echo "$DURATION" | awk '/m$/ {print $0 * 60; next} {print $0 + 0}')

# probe URL BODY_FILE SIGNATURE: the status of one signed POST
probe() {
    curl -sk -o /dev/null -w '%{http_code}' -X POST --data-binary "@$2" -H "X-Hub-Signature-256: $3" \
        -H 'Content-Type: application/json' -H 'X-GitHub-Event: push' "$1"
}

run_one() { # round workload target(backend|nginx|hookgate|hookgate-routes|hookgate-cidrs)
    local round=$1 w=$2 target=$3 tls port scheme lua raw
    tls=$(workload_tls "$w"); lua=$(write_lua "$w")
    [[ $target == floor* && $tls == 1 ]] && return 0 # the floor proxy speaks plain HTTP only
    start_backend
    case $target in
        backend) TARGET_PID=$BACKEND_PID; port=$([[ $tls == 1 ]] && echo $BACKEND_TLS || echo $BACKEND_HTTP) ;;
        nginx | nginx-verify)
            start_nginx "$([[ $target == nginx-verify ]] && echo verify || echo plain)"
            port=$([[ $tls == 1 ]] && echo $NGINX_TLS || echo $NGINX_HTTP) ;;
        floor*)
            "$FLOOR_BIN" "127.0.0.1:$FLOOR_HTTP" "127.0.0.1:$BACKEND_HTTP" ${target#floor-} >>"$WORK/floor.out" 2>&1 &
            TARGET_PID=$!; STARTED+=("$TARGET_PID"); port=$FLOOR_HTTP
            wait_port "$FLOOR_HTTP" || die "floor did not start" ;;
        hookgate*)
            local variant=small; [[ $target == hookgate-* ]] && variant=${target#hookgate-}
            start_hookgate "$variant"
            port=$([[ $tls == 1 ]] && echo $HG_TLS || echo $HG_HTTP) ;;
    esac
    scheme=$([[ $tls == 1 ]] && echo https || echo http)
    local url="$scheme://127.0.0.1:$port/hooks/github"
    # one request first: it must succeed, or the numbers mean nothing; and a target that checks
    # signatures must refuse a wrong one, or it would look fast by not checking
    local body="$WORK/body-$(workload_body "$w")" code refused=0
    code=$(probe "$url" "$body.json" "$(cat "$body.sig")")
    [[ $code == 200 ]] || die "$target $w: probe answered $code"
    if [[ $target == nginx-verify || $target == hookgate ]]; then
        refused=1
        code=$(probe "$url" "$body.json" "sha256=$(printf '0%.0s' {1..64})")
        [[ $code == 401 ]] || die "$target $w: a bad signature was answered $code, not 401"
    fi

    # PROFILE=1 adds a round "P" before the measured ones: counters (perf stat) for every target
    # and a sampled profile (perf record) of hookgate. Its numbers do not enter the table.
    local perf_pids=() prof=$WORK/perf
    if [[ $round == P ]]; then
        mkdir -p "$prof"
        local pids; pids=$(echo "$TARGET_PID" $(children "$TARGET_PID") | tr ' ' ,)
        perf stat -x, -e task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter \
            -p "$pids" -o "$prof/$w-$target.stat" -- sleep "$dur_s" >/dev/null 2>&1 &
        perf_pids+=($!); STARTED+=($!)
        if [[ $target == hookgate*-redis ]]; then
            # redis-server's share of the work: its counters, and where its time goes
            perf stat -x, -e task-clock,instructions,context-switches,raw_syscalls:sys_enter \
                -p "$REDIS_PID" -o "$prof/$w-redis-server.stat" -- sleep "$dur_s" >/dev/null 2>&1 &
            perf_pids+=($!); STARTED+=($!)
            perf record -q -e cpu-clock -F 999 -g -p "$REDIS_PID" -o "$prof/$w-redis-server.data" \
                -- sleep "$(awk -v d="$dur_s" 'BEGIN{print (d > 4 ? 4 : d)}')" >/dev/null 2>&1 &
            perf_pids+=($!); STARTED+=($!)
        fi
        if [[ $target == hookgate || $target == hookgate*-redis || $target == hookgate*-queue ]]; then
            perf stat -x, -e instructions -p "$TARGET_PID" -o "$prof/$w-$target.instructions" \
                -- sleep "$dur_s" >/dev/null 2>&1 &
            perf_pids+=($!); STARTED+=($!)
            perf record -q -e cpu-clock -F 999 -g --call-graph dwarf,16384 -p "$TARGET_PID" \
                -o "$prof/$w-$target.data" -- sleep "$(awk -v d="$dur_s" 'BEGIN{print (d > 4 ? 4 : d)}')" \
                >/dev/null 2>&1 &
            perf_pids+=($!); STARTED+=($!)
        fi
    fi
    local cpu0 cpu1 sys0 sys1 bcpu0 bcpu1=0 busy0 busy1 wall0 wall1 wrk_cpu
    bcpu0=$(cpu_seconds "$BACKEND_PID")
    busy0=$(machine_busy_seconds); wall0=$(date +%s.%N)
    cpu0=$(cpu_seconds "$TARGET_PID"); sys0=$(sys_seconds "$TARGET_PID")
    local threads0=""; [[ $target == hookgate* ]] && threads0=$(thread_ticks "$TARGET_PID")
    local rcalls0="0 0 0" rcpu0=0; [[ $target == hookgate*-redis ]] && { rcalls0=$(redis_calls); rcpu0=$(cpu_seconds "$REDIS_PID"); }
    # `times` after wrk: the subshell's children's CPU, i.e. wrk's own
    raw=$( (timeout $((dur_s + 60)) wrk -t "$THREADS" -c "$CONNS" -d "$DURATION" --timeout 10s -s "$lua" "$url" 2>&1
        rc=$?; times; exit $rc)) || die "wrk failed: $raw"
    cpu1=$(cpu_seconds "$TARGET_PID"); sys1=$(sys_seconds "$TARGET_PID")
    local threads1=""; [[ $target == hookgate* ]] && threads1=$(thread_ticks "$TARGET_PID")
    [[ $target == backend ]] || bcpu1=$(cpu_seconds "$BACKEND_PID")
    busy1=$(machine_busy_seconds); wall1=$(date +%s.%N)
    wrk_cpu=$(tail -1 <<<"$raw" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%.2f", t }')
    local p; for p in "${perf_pids[@]}"; do wait "$p" || true; done
    local rss; rss=$(peak_rss_kib "$TARGET_PID")
    echo "$raw" >"$WORK/wrk-$round-$w-$target.txt"
    local res; res=$(grep '^RESULT' <<<"$raw") || die "no wrk result: $raw"
    eval "local ${res#RESULT }"
    local errors=$((connect + read + write + status + timeout))
    if [[ $target == hookgate*-redis ]]; then
        local rcalls1 rcpu1; rcalls1=$(redis_calls); rcpu1=$(cpu_seconds "$REDIS_PID")
        log "$target $w: $(awk -v a="$rcalls0" -v b="$rcalls1" -v n="$requests" -v c0="$rcpu0" -v c1="$rcpu1" -v hc0="$cpu0" -v hc1="$cpu1" 'BEGIN { split(a, x, " "); split(b, y, " ")
            printf "%d requests; EVALSHA %.3f per request; every command counted by Redis, scripts'"'"' inner ones included, %.3f per request; redis-server CPU s/10k req %.3f, hookgate + redis-server %.3f", n, (y[2] - x[2]) / n, (y[3] - x[3] - 1) / n, (c1 - c0) / n * 10000, ((c1 - c0) + (hc1 - hc0)) / n * 10000 }'), $(curl -fs "http://127.0.0.1:$HG_ADMIN/metrics" | awk '/^hookgate_rate_limit_fallback_total/ { print "fallbacks " $NF }')"
    fi
    if [[ $target == hookgate* ]]; then
        # Which threads the gateway's CPU went to (the spool writer only exists in queue mode).
        log "$target $w: CPU per request by thread: $(awk -v a="$threads0" -v b="$threads1" -v n="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN {
            split(a, x, " "); split(b, y, " "); us = 1e6 / hz / (n > 0 ? n : 1)
            printf "workers %.1f us, spool writer %.1f us, other threads %.1f us", (y[1] - x[1]) * us, (y[2] - x[2]) * us, (y[3] - x[3]) * us }')"
    fi
    if [[ $target == hookgate*-queue ]]; then
        # Whether delivery kept up: events acknowledged but not yet delivered when the load
        # stopped (the CPU above counts only the delivery work done by then).
        log "$target $w: backlog at the end of the load $(curl -fs "http://127.0.0.1:$HG_ADMIN/metrics" | awk '
            /^hookgate_requests_total\{/ && /outcome="queued"/ { q += $NF }
            /^hookgate_delivery_attempts_total\{/ && /result="delivered"/ { d += $NF }
            /^hookgate_spool_commit_duration_seconds_count/ { c = $NF }
            /^hookgate_spool_commit_duration_seconds_sum/ { t = $NF }
            END { printf "%d events (%.1f%% of %d queued); %d commits, %.1f events per commit, mean commit %.3f ms", q - d, (q > 0 ? (q - d) * 100 / q : 0), q, c, (c > 0 ? q / c : 0), (c > 0 ? t / c * 1000 : 0) }')"
    fi
    if [[ $target == hookgate* ]]; then
        local ok bad; read -r ok bad < <(check_hookgate_outcomes)
        ((bad == refused)) || die "$target $w: $((bad - refused)) requests were not forwarded with 200 (see metrics)"
    fi
    stop_pids "$TARGET_PID"
    [[ $target == backend ]] || stop_pids "$BACKEND_PID"
    rm -f "$WORK"/*-access.log
    if [[ $round == P ]]; then
        awk -F, -v n="$requests" -v d="$duration_us" -v dur="$dur_s" -v w="$w" -v t="$target" '
            $1 ~ /^[0-9.]+$/ { v[$3] = $1 }
            END { rps = n / (d / 1e6); req = rps * dur  # requests inside perf'"'"'s window
                  printf "%-14s %-16s %8.0f req/s  per request: %6.1f us CPU  %5.2f context switches  %5.2f migrations  %5.2f syscalls\n",
                      w, t, rps, v["task-clock"] * 1000 / req, v["context-switches"] / req,
                      v["cpu-migrations"] / req, v["raw_syscalls:sys_enter"] / req }' \
            "$prof/$w-$target.stat" | tee -a "$prof/counters.txt" >&2
        # instructions per request (immune to contention): the gateway's, and redis-server's
        local f who
        for f in "$prof/$w-$target.instructions" "$prof/$w-redis-server.stat"; do
            [[ -f $f && ( $target == hookgate*-redis || $f == *.instructions ) ]] || continue
            who=$([[ $f == *redis-server* ]] && echo "  redis-server" || echo "$target")
            awk -F, -v n="$requests" -v d="$duration_us" -v dur="$dur_s" -v w="$w" -v t="$who" '
                $1 ~ /^[0-9.]+$/ { v[$3] = $1 }
                END { req = n / (d / 1e6) * dur
                      printf "%-14s %-16s per request: %8.0f instructions", w, t, v["instructions"] / req
                      if ("task-clock" in v) printf "  %6.1f us CPU  %5.2f syscalls", v["task-clock"] * 1000 / req, v["raw_syscalls:sys_enter"] / req
                      printf "\n" }' "$f" | tee -a "$prof/counters.txt" >&2
        done
        return
    fi
    awk -v r="$round" -v w="$w" -v t="$target" -v n="$requests" -v d="$duration_us" \
        -v p50="$p50_us" -v p99="$p99_us" -v rss="$rss" -v c0="$cpu0" -v c1="$cpu1" -v s0="$sys0" -v s1="$sys1" -v e="$errors" \
        -v b0="$busy0" -v b1="$busy1" -v w0="$wall0" -v w1="$wall1" -v wrk="$wrk_cpu" \
        -v bc=$([[ $target == backend ]] && echo 0 || awk -v a="$bcpu0" -v b="$bcpu1" 'BEGIN{print b - a}') \
        'BEGIN { other = ((b1 - b0) - (c1 - c0) - bc - wrk) / (w1 - w0); if (other < 0) other = 0
                 printf "%s\t%s\t%s\t%.0f\t%.3f\t%.3f\t%.1f\t%.3f\t%d\t%d\t%.2f\t%.3f\t%.3f\t%.3f\n",
                 r, w, t, n / (d / 1e6), p50 / 1000, p99 / 1000, rss / 1024,
                 (n > 0 ? (c1 - c0) / n * 10000 : 0), n, e, other,
                 (n > 0 ? ((c1 - c0) - (s1 - s0)) / n * 10000 : 0),
                 (n > 0 ? bc / n * 10000 : 0), (n > 0 ? wrk / n * 10000 : 0) }' >>"$RESULTS"
    log "$(tail -1 "$RESULTS" | tr '\t' ' ')${STARTUP_S:+ (startup ${STARTUP_S}s)}"
    STARTUP_S=""
}

for t in $TARGETS; do
    case $t in hookgate-*) write_hookgate_config "$(variant_config "${t#hookgate-}")" >/dev/null ;; esac
done
# hookgate-redis: the same policy with the rate limit on a local redis-server (Debian's
# package), started once for the whole run; its round trips per request are logged per run.
if [[ " $TARGETS " == *" hookgate-redis "* || " $TARGETS " == *" hookgate-alt-redis "* ]]; then
    command -v redis-server >/dev/null || DEBIAN_FRONTEND=noninteractive ${SUDO:-} apt-get install -y -qq redis-server >/dev/null
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.out" 2>&1 &
    REDIS_PID=$!; STARTED+=($!)
    wait_port "$REDIS_PORT" || die "redis-server did not start"
fi
# Round trips: the commands the gateway sent (EVALSHA, plus any other top-level command), not
# the ones its scripts run inside Redis (TIME, GET, SET, which commandstats counts too).
redis_calls() { redis-cli -p "$REDIS_PORT" info commandstats | awk -F'[=,:]' '/^cmdstat_(evalsha|eval|set|get|ping|script)/ && !/^cmdstat_(set|get):/ { n += $3 } /^cmdstat_evalsha:/ { e = $3 } /^cmdstat_/ { all += $3 } END { printf "%d %d %d\n", n, e, all }'; }
write_hookgate_config small >/dev/null
[[ $SCALING == 1 ]] && { write_hookgate_config routes >/dev/null; write_hookgate_config cidrs >/dev/null; }

log "hookgate $("$BIN" version 2>/dev/null | head -1), nginx $("$NGINX" -v 2>&1 | sed 's/.*\///'), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
log "DURATION=$DURATION ROUNDS=$ROUNDS CONNS=$CONNS THREADS=$THREADS WORKLOADS='$WORKLOADS' TARGETS='$TARGETS' SCALING=$SCALING"
if [[ $PROFILE == 1 ]]; then
    log "profile pass (not in the table)"
    for w in $WORKLOADS; do for t in $TARGETS; do run_one P "$w" "$t"; done; done
fi
for ((round = 1; round <= ROUNDS; round++)); do
    for w in $WORKLOADS; do
        for t in $TARGETS; do run_one "$round" "$w" "$t"; done
    done
    if [[ $SCALING == 1 ]]; then
        # the small config is the baseline; measured again only if the main loop did not
        if [[ " $WORKLOADS " != *" http-2k "* || " $TARGETS " != *" hookgate "* ]]; then
            run_one "$round" http-2k hookgate
        fi
        for t in hookgate-routes hookgate-cidrs; do run_one "$round" http-2k "$t"; done
    fi
done

# ---------------------------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------------------------
HEADER="hookgate $REV, $(date -u +%Y-%m-%d), $(nproc) cores; DURATION=$DURATION ROUNDS=$ROUNDS CONNS=$CONNS"
python3 - "$RESULTS" "$HEADER" <<'PY' | tee "$OUT"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
metrics = [("rps", "req/s", "%.0f"), ("p50_ms", "p50 ms", "%.2f"), ("p99_ms", "p99 ms", "%.2f"),
           ("rss_mib", "peak RSS MiB", "%.1f"), ("cpu_per_10k", "CPU s/10k req", "%.3f"),
           ("user_per_10k", "of which user", "%.3f")]
def cell(vals, fmt):
    vals = sorted(vals)
    if not vals: return "-"
    med = statistics.median(vals)
    if len(vals) == 1: return fmt % med
    return f"{fmt % med} ({fmt % vals[0]}–{fmt % vals[-1]})"
by = {}
for r in rows:
    by.setdefault((r["workload"], r["target"]), {})[r["round"]] = r
workloads = list(dict.fromkeys(r["workload"] for r in rows))
targets = list(dict.fromkeys(r["target"] for r in rows))
print(f"**{sys.argv[2]}**. Cells: median over rounds (min–max). Ratios are per round, "
      "hookgate ÷ nginx (and ÷ nginx-verify when it ran; ÷ hookgate for the scaling rows); req/s higher is better, "
      "everything else lower is better. *other load*: the most CPU (in cores) that processes outside "
      "the benchmark used during any round of that row; above ~0.1 the row is disturbed.\n")
print("| workload | target | " + " | ".join(m[1] for m in metrics) + " | errors | other load |")
print("|---|---|" + "---:|" * (len(metrics) + 2))
for w in workloads:
    for t in targets:
        runs = by.get((w, t))
        if not runs: continue
        cells = [cell([float(r[k]) for r in runs.values()], f) for k, _, f in metrics]
        errs = sum(int(r["errors"]) for r in runs.values())
        other = max(float(r["other_load"]) for r in runs.values())
        print(f"| {w} | {t} | " + " | ".join(cells) + f" | {errs} | {other:.2f} |")
        bases = (["nginx", "nginx-verify"] if t == "hookgate" else
                 ["nginx"] if t in ("floor", "nginx-verify") else
                 # two builds' Redis limiters: each ÷ its own build's local limiter, and ÷ each other
                 ["hookgate-alt", "hookgate", "hookgate-redis"] if t == "hookgate-alt-redis" else
                 ["hookgate-alt", "hookgate", "hookgate-queue"] if t == "hookgate-alt-queue" else
                 ["hookgate"] if t.startswith("hookgate-") else
                 ["floor"] if t.startswith("floor-") else [])
        for base in (b for b in bases if (w, b) in by):
            ratios = []
            for k, _, _ in metrics:
                rs = [float(runs[rd][k]) / float(by[(w, base)][rd][k])
                      for rd in runs if rd in by[(w, base)] and float(by[(w, base)][rd][k]) > 0]
                ratios.append(cell(rs, "%.2f"))
            print(f"| {w} | *{t} ÷ {base}* | " + " | ".join("×" + c for c in ratios) + " | | |")
PY
log "table written to $OUT"
if [[ $PROFILE == 1 && -d $WORK/perf ]]; then
    log "writing perf reports (this takes a few minutes: DWARF unwinding)"
    mkdir -p "$HERE/profiles"
    cp "$WORK/perf/counters.txt" "$HERE/profiles/counters.txt"
    for f in "$WORK"/perf/*.data; do
        n=$(basename "$f" .data)
        # flat: where the time is spent; inclusive: which code paths it is spent under
        perf report -i "$f" --no-children --sort dso,symbol -g none --stdio 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -80 | cut -c1-200 >"$HERE/profiles/$n-self.txt" || true
        perf report -i "$f" --children --sort symbol -g none --stdio 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -400 | cut -c1-200 >"$HERE/profiles/$n-inclusive.txt" || true
    done
    log "perf reports in $HERE/profiles/"
fi
