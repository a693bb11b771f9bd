#!/usr/bin/env bash
# Durable delivery's group commit, made visible: fsync/fdatasync calls per 1000 queued events,
# counted with strace over the whole life of a hookgate that takes a wrk load on a
# `delivery: queue` route and delivers every event to an nginx backend (intake commits and
# delivery-state commits both counted). See bench/README.md, "Durable delivery".
#
#   DURATION=5s CONNS=64 bench/queue-fsync.sh
#   HOOKGATE_BIN=target/release/hookgate (default; built if missing)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
DURATION=${DURATION:-5s}
CONNS=${CONNS:-64}
PORT_BASE=${PORT_BASE:-18100}
# shellcheck source=bench/queue-common.sh
source "$HERE/queue-common.sh"
queue_bench_setup nginx wrk strace curl
write_backend_conf
nginx -p "$WORK" -c "$WORK/nginx.conf" & PIDS+=($!)
write_gateway_conf 32
write_load
strace -f -c -e trace=fsync,fdatasync -o "$WORK/strace.txt" "$BIN" run -c "$WORK/gateway.yaml" 2>"$WORK/hookgate.err" &
SPID=$!; PIDS+=($SPID)
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
wrk -t2 -c"$CONNS" -d"$DURATION" -s "$WORK/post.lua" "http://127.0.0.1:$HG/hooks/queued" | tee "$WORK/wrk.txt" >&2
# wait until every event is delivered
for _ in $(seq 600); do
    pending=$(curl -fs "http://127.0.0.1:$ADMIN/metrics" | awk '/^hookgate_queue_events\{.*state="pending"/ {s += $NF} END {print s + 0}')
    [[ $pending == 0 ]] && break; sleep 0.1
done
queued=$(curl -fs "http://127.0.0.1:$ADMIN/metrics" | awk '/^hookgate_requests_total\{.*outcome="queued".*code="200"/ {s += $NF} END {print s + 0}')
delivered=$(curl -fs "http://127.0.0.1:$ADMIN/metrics" | awk '/^hookgate_delivery_attempts_total\{.*result="delivered"/ {s += $NF} END {print s + 0}')
other=$(curl -fs "http://127.0.0.1:$ADMIN/metrics" | awk '/^hookgate_requests_total\{/ && !/outcome="queued"/ {s += $NF} END {print s + 0}')
commits=$(curl -fs "http://127.0.0.1:$ADMIN/metrics" | awk '/^hookgate_spool_commit_duration_seconds_(sum|count) / {print $NF}' | paste -sd' ')
kill -TERM "$(pgrep -P $SPID hookgate || echo $SPID)" 2>/dev/null || true
wait $SPID 2>/dev/null || true
syncs=$(awk '$NF == "fsync" || $NF == "fdatasync" {s += $4} END {print s + 0}' "$WORK/strace.txt")
read -r csum ccount <<<"$commits"
awk -v s="$csum" -v c="$ccount" -v q="$queued" 'BEGIN { if (c > 0) printf "spool commits %d, %.1f events per commit, mean commit %.2f ms (strace slows it)\n", c, q / c, s * 1000 / c }'
echo "queued (200) $queued, other answers $other, delivered $delivered, pending at end $pending, fsync+fdatasync $syncs"
awk -v s="$syncs" -v q="$queued" 'BEGIN { if (q > 0) printf "fsyncs per 1000 events (intake + delivery): %.1f\n", s * 1000 / q }'
cat "$WORK/strace.txt" >&2
