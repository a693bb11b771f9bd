#!/usr/bin/env bash
# Counts the instructions hookgate executes per request, with valgrind's callgrind: unlike
# timings, the count is the same from run to run whatever else the machine does, so a change of
# a few percent shows. One worker thread, N keep-alive POSTs of a 2 KiB body with a valid GitHub
# signature, through a small Python backend; prints instructions per request and the top
# functions (inclusive). Loopback only; everything it starts is stopped on exit.
#
#   bench/callgrind.sh [N]          N requests (default 2000)
#   HOOKGATE_BIN=path               the binary (default: cargo build --release)
#   REDIS=1                         the route's rate limit on a redis-server (Debian's package)
#                                   started on PORT_BASE+2; requests go one at a time, so each
#                                   check is a batch of one (an upper bound of a check's cost)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
N=${1:-2000}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
if [[ -z ${HOOKGATE_BIN:-} ]]; then
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
    HOOKGATE_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/hookgate
fi
WORK=$(mktemp -d /tmp/hookgate-callgrind.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
[[ -n ${KEEP:-} ]] && trap - EXIT
PORT=${PORT_BASE:-18100}
SECRET=callgrind-secret

python3 - "$PORT" >"$WORK/backend.log" 2>&1 <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) + 1), H).serve_forever()
PY
PIDS+=($!)

REDIS_BLOCK=
if [[ ${REDIS:-0} == 1 ]]; then
    redis-server --port $((PORT + 2)) --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
    PIDS+=($!)
    # valgrind slows the gateway ~50x: a deadline that it still meets
    REDIS_BLOCK="redis: { url: redis://127.0.0.1:$((PORT + 2)), timeout: 2s }"
fi

cat >"$WORK/gateway.yaml" <<EOF
listeners:
  - name: internal
    bind: 127.0.0.1:$PORT
limits:
  worker_threads: 1
access_log: $WORK/access.log
upstreams:
  backend:
    url: http://127.0.0.1:$((PORT + 1))
routes:
  - name: github
    path: /hooks/github
    methods: [POST]
    upstream: backend
    allow_ips: [127.0.0.0/8]
    rate_limit: { per_second: 1000000, burst: 1000000, key: route }
    verify: { provider: github, secrets: ["$SECRET"] }
    replay_window: off
$REDIS_BLOCK
EOF

valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
    "$HOOKGATE_BIN" run -c "$WORK/gateway.yaml" >"$WORK/hookgate.log" 2>&1 &
HG=$!
PIDS+=($HG)

# 200 requests to warm up (connections, pools), then counters zeroed, N requests, a dump.
python3 - "$PORT" "$N" "$SECRET" "$HG" <<'PY'
import hashlib, hmac, http.client, json, subprocess, sys, time
port, n, secret, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4]
body = json.dumps({"pad": "x" * 2000}).encode()
sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
headers = {"Content-Type": "application/json", "X-GitHub-Event": "push", "X-Hub-Signature-256": sig}
for _ in range(600):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30); c.connect(); break
    except OSError:
        time.sleep(0.1)
def send(count):
    for _ in range(count):
        c.request("POST", "/hooks/github", body, headers)
        r = c.getresponse(); r.read()
        assert r.status == 200, r.status
send(200)
subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
send(n)
time.sleep(0.3)  # the access log's 100 ms flush
subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
PY
kill -TERM "$HG"; wait "$HG" || true
dump=$(ls "$WORK"/cg.out.* 2>/dev/null | head -1)
[[ -n $dump ]] && mv "$dump" "$WORK/cg.out"
[[ -s $WORK/cg.out ]] || { cat "$WORK/hookgate.log"; exit 1; }
total=$(callgrind_annotate "$WORK/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "instructions per request (all threads, $N requests): $((total / N))"
if [[ ${REDIS:-0} == 1 ]]; then
    echo "redis fallbacks: $(grep -c 'redis down' "$WORK/hookgate.log" || true) down transitions logged"
fi
callgrind_annotate --inclusive=yes "$WORK/cg.out" 2>/dev/null | sed -n '/file:function/,$p' | head -${TOP:-45} | cut -c1-170
