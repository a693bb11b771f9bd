# Shared by bench/queue-fsync.sh and bench/queue-drain.sh (sourced, not run): the nginx backend,
# the gateway's queue config and the wrk load, in $WORK, on $BACKEND, $HG and $ADMIN.

# The binary (built if missing), the tools named (installed if missing), a temp folder $WORK
# removed at exit (kept with KEEP=1) with every pid in $PIDS killed, and the ports from
# $PORT_BASE.
queue_bench_setup() {
    BIN=${HOOKGATE_BIN:-$ROOT/target/release/hookgate}
    [[ -x $BIN ]] || cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
    done
    WORK=$(mktemp -d)
    PIDS=()
    trap queue_bench_cleanup EXIT
    BACKEND=$((PORT_BASE + 1)); HG=$((PORT_BASE + 2)); ADMIN=$((PORT_BASE + 3))
}
queue_bench_cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n ${KEEP:-} ]] || rm -rf "$WORK"
}

# nginx answering 200 "ok" to everything, on $BACKEND (started by the caller).
write_backend_conf() {
    cat >"$WORK/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $WORK; proxy_temp_path $WORK; fastcgi_temp_path $WORK;
  uwsgi_temp_path $WORK; scgi_temp_path $WORK; client_body_buffer_size 2m;
  server { listen 127.0.0.1:$BACKEND; keepalive_requests 1000000; location / { return 200 "ok"; } } }
NGX
}

# One queued route to the backend, with $1 delivery attempts at once.
write_gateway_conf() {
    cat >"$WORK/gateway.yaml" <<YAML
listeners: [ { name: plain, bind: "127.0.0.1:$HG" } ]
admin: { bind: "127.0.0.1:$ADMIN" }
access_log: off
spool: { path: spool, max_bytes: 8GiB }
upstreams:
  backend: { url: "http://127.0.0.1:$BACKEND", delivery: { concurrency: $1 } }
routes:
  - { name: queued, path: /hooks/queued, upstream: backend, delivery: queue, replay_window: off }
YAML
}

# wrk's script: POSTs of a 2 KiB body.
write_load() {
    head -c 2048 /dev/urandom | base64 -w0 | head -c 2048 >"$WORK/body"
    cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
local f = io.open("$WORK/body", "rb"); wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "application/json"
LUA
}
