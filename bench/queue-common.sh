# Shared by bench/queue-fsync.sh and bench/queue-drain.sh (sourced, not run): the nginx backend,
# the gateway's queue config and the wrk load, in $WORK, on $BACKEND, $HG and $ADMIN.

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
