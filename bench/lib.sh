# Shared by the benchmark scripts (sourced, from the repository's root): a scratch directory
# whose processes are stopped on exit, waiting for a log line, and the fast upstream.

cargo build --release -q -p toolgate -p toolgate-bench
BIN=target/release
TMP=$(mktemp -d)
pids=()
cleanup() {
  # Processes started in subshells (process substitution) leave their pids in files.
  for f in "$TMP"/*/pid; do [[ -f $f ]] && pids+=("$(cat "$f")"); done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

wait_for() { # file pattern [tries of 0.1 s]
  for _ in $(seq "${3:-100}"); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2
  cat "$1" >&2
  return 1
}

# The URL toolgate printed in its log ("listening on http://127.0.0.1:PORT").
listening_url() { # log file
  grep -o 'listening on http://127.0.0.1:[0-9]*' "$1" | head -1 | grep -o 'http://.*'
}

# The URL a bench binary (fast-upstream, bare-proxy) printed ("listening on http://...").
printed_url() { # log file
  grep -o 'http://[^ ]*' "$1" | head -1
}

# The number of tools/calls in a loadgen report (read from stdin).
loadgen_calls() {
  python3 -c 'import json, sys; print(json.load(sys.stdin)["calls"])'
}

# Starts bench/src/bin/fast_upstream.rs over HTTP; sets UP to its MCP endpoint.
start_fast_upstream() {
  "$BIN/fast-upstream" --port 0 >"$TMP/upstream.log" &
  pids+=($!)
  wait_for "$TMP/upstream.log" listening
  UP=$(printed_url "$TMP/upstream.log")
}

# Starts bench/src/bin/bare_proxy.rs (toolgate's HTTP stack doing nothing else) in front of
# the fast upstream, with ARGS; prints "pid url", and leaves its pid in $TMP/NAME/pid as
# start_gateway does (`read -r pid url < <(start_bare_proxy NAME ...)`).
start_bare_proxy() { # name [bare-proxy args...]
  local dir=$TMP/$1
  mkdir -p "$dir"
  "$BIN/bare-proxy" --upstream "$UP" --port 0 "${@:2}" >"$dir/log" &
  echo "$!" >"$dir/pid"
  wait_for "$dir/log" listening >/dev/null
  echo "$(cat "$dir/pid") $(printed_url "$dir/log")"
}

# Starts nginx, when it is installed, as a tuned C proxy to the fast upstream (one worker,
# keep-alive to the upstream, no buffering): sets NGINX to its MCP endpoint and NGINX_WORKER
# to its worker's pid; NGINX stays empty without nginx (`apt-get install nginx-light`).
start_nginx() {
  NGINX=
  command -v nginx >/dev/null || return 0
  local port up_addr
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$TMP/nginx"
  up_addr=${UP#http://}
  up_addr=${up_addr%%/*}
  cat >"$TMP/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx;
  proxy_temp_path $TMP/nginx;
  upstream up { server $up_addr; keepalive 128; }
  server {
    listen 127.0.0.1:$port;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
NGINX
  nginx -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" &
  pids+=($!)
  for _ in $(seq 50); do [[ -n $(pgrep -P "${pids[-1]}") ]] && break; sleep 0.1; done
  NGINX_WORKER=$(pgrep -P "${pids[-1]}" | head -1)
  NGINX=http://127.0.0.1:$port/mcp
}

# The two policies the benchmarks compare: $TMP/plain.json (allow-all) and
# $TMP/realistic.json (bench/realistic-policy.py: 60 tools, deny_if conditions, two limits).
write_policies() {
  echo '{"version": "1", "default": "allow"}' >"$TMP/plain.json"
  python3 bench/realistic-policy.py "$TMP/realistic.json"
}

# A gateway configuration at DIR/toolgate.toml: the fast upstream as server "http" with
# POLICY, reached by an anonymous loopback grant, audit on or off, and `busy_poll_us` when
# given (builds before busy polling refuse the key).
write_gateway_config() { # dir policy-file audit-enabled [busy_poll_us]
  mkdir -p "$1"
  cat >"$1/toolgate.toml" <<TOML
${4:+busy_poll_us = $4}
listen = "127.0.0.1:0"
state_dir = "$1/state"
[audit]
enabled = $3
[servers.http]
url = "$UP"
policy = "$2"
[grants.http]
server = "http"
anonymous = true
TOML
}

# Starts toolgate BINARY on a configuration of write_gateway_config's at $TMP/NAME; prints
# "pid url" (the url of its server "http"). Its pid also goes to $TMP/NAME/pid, so that it is
# stopped on exit when this runs in a subshell (`read -r pid url < <(start_gateway ...)`).
start_gateway() { # name binary policy-file audit-enabled
  local dir=$TMP/$1
  write_gateway_config "$dir" "$3" "$4"
  TOOLGATE_LOG="warn,toolgate=info,toolgate::upstream=warn" TOOLGATE_ADMIN_TOKEN=bench \
    "$2" serve --config "$dir/toolgate.toml" 2>"$dir/log" &
  echo "$!" >"$dir/pid"
  wait_for "$dir/log" 'listening on' >/dev/null
  echo "$(cat "$dir/pid") $(listening_url "$dir/log")/mcp/http"
}

# For the hey-based scripts (policy-cost.sh, audit-cost.sh): $call is the tools/call they
# send, $N and $C the request count and concurrency.
HEY_INIT='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}'

# Opens an MCP session at URL; prints its id.
hey_session() { # url
  curl -s -D - -o /dev/null "$1" -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -d "$HEY_INIT" |
    tr -d '\r' | awk -F': ' 'tolower($1)=="mcp-session-id"{print $2}'
}

# Fails unless $call through URL in SESSION is an allowed call the upstream answered.
assert_allowed() { # url session
  local answer
  answer=$(curl -s "$1" -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' -H "Mcp-Session-Id: $2" -d "$call")
  case $answer in *'"text":"echo '*) ;; *) echo "not an allowed call through $1: $answer" >&2; exit 1 ;; esac
}

# Sends $call N times, C at once; prints "NAME req/s p50-seconds p99-seconds". Fails unless
# every request was answered 200 (hey sends N/C per worker, so C * floor(N/C) in all; it
# lists transport errors under "Error distribution").
hey_run() { # name url session
  hey -n "$N" -c "$C" -m POST -T application/json -H 'Accept: application/json, text/event-stream' \
    -H "Mcp-Session-Id: $3" -H 'MCP-Protocol-Version: 2025-06-18' -d "$call" "$2" >"$TMP/$1.hey"
  local rps p50 p99 ok
  rps=$(awk '/Requests\/sec/{print $2}' "$TMP/$1.hey")
  p50=$(awk '/ 50% in/{print $3}' "$TMP/$1.hey")
  p99=$(awk '/ 99% in/{print $3}' "$TMP/$1.hey")
  ok=$(awk '/\[200\]/{print $2}' "$TMP/$1.hey")
  if [ "${ok:-0}" != $((N / C * C)) ] || grep -q 'Error distribution' "$TMP/$1.hey"; then
    echo "$1: ${ok:-0} of $((N / C * C)) requests answered 200" >&2
    cat "$TMP/$1.hey" >&2
    exit 1
  fi
  echo "$1 $rps $p50 $p99"
}
