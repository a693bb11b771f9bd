#!/usr/bin/env bash
# Durable delivery's backlog drain: EVENTS events are queued while the backend is down, the
# gateway is stopped, the backend comes up, and a restarted gateway delivers them all. Reports
# the restart's time to serve (the spool read back), the drain's events/s, the gateway's
# peak RSS (VmHWM), and its RSS when ready, against an empty gateway's. The memory a pending
# event holds is the slope of the ready RSS over two runs of different EVENTS (a restart's
# own buffers blur a single run). See bench/README.md, "Durable delivery".
#
#   EVENTS=100000 CONNS=64 bench/queue-drain.sh
#   HOOKGATE_BIN=target/release/hookgate (default; built if missing)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
EVENTS=${EVENTS:-100000}
CONNS=${CONNS:-64}
PORT_BASE=${PORT_BASE:-18150}
# shellcheck source=bench/queue-common.sh
source "$HERE/queue-common.sh"
queue_bench_setup nginx wrk curl
write_backend_conf
write_gateway_conf 64
write_load
metric() { curl -fs "http://127.0.0.1:$ADMIN/metrics" | awk -v re="$1" '$0 ~ re {s += $NF} END {print s + 0}'; }
start_gateway() {
    "$BIN" run -c "$WORK/gateway.yaml" 2>>"$WORK/hookgate.err" & GPID=$!; PIDS+=($GPID)
    for _ in $(seq 2000); do curl -fs "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && return; sleep 0.01; done
    echo "the gateway did not start" >&2; exit 1
}
# 1. Intake with the backend down, until EVENTS are queued.
start_gateway
rss_empty=$(awk '/^VmRSS/ {print $2}' /proc/$GPID/status)
queued=0
while ((queued < EVENTS)); do
    wrk -t2 -c"$CONNS" -d2s -s "$WORK/post.lua" "http://127.0.0.1:$HG/hooks/queued" >/dev/null
    queued=$(metric '^hookgate_requests_total\{.*outcome="queued".*code="200"')
done
kill -TERM $GPID; wait $GPID 2>/dev/null || true
# The intake's dirty pages written back now, not during the restart being timed.
sync
echo "queued $queued events with the backend down; spool $(du -sh "$WORK/spool" | cut -f1)"
# 2. The backend up, the gateway restarted: every pending event is due at once.
nginx -p "$WORK" -c "$WORK/nginx.conf" & PIDS+=($!)
t0=$(date +%s.%N)
start_gateway
t1=$(date +%s.%N)
rss_ready=$(awk '/^VmRSS/ {print $2}' /proc/$GPID/status)
for _ in $(seq 6000); do
    pending=$(metric '^hookgate_queue_events\{.*state="pending"')
    [[ $pending == 0 ]] && break; sleep 0.05
done
t2=$(date +%s.%N)
delivered=$(metric '^hookgate_delivery_attempts_total\{.*result="delivered"')
hwm=$(awk '/^VmHWM/ {print $2}' /proc/$GPID/status)
cpu=$(awk '{print ($14 + $15) / 100}' /proc/$GPID/stat)
awk -v t0="$t0" -v t1="$t1" -v t2="$t2" -v d="$delivered" -v p="$pending" -v h="$hwm" -v c="$cpu" -v r="$rss_ready" -v e="$rss_empty" 'BEGIN {
    printf "restart to ready %.2f s (RSS then %.0f MiB, empty gateway %.0f MiB); drained %d events in %.2f s: %.0f events/s; pending at end %d; peak RSS %.0f MiB; gateway CPU %.2f s (%.1f us per event)\n",
        t1 - t0, r / 1024, e / 1024, d, t2 - t1, d / (t2 - t1), p, h / 1024, c, c / d * 1e6 }'
