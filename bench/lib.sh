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

# Starts bench/src/bin/fast_upstream.rs over HTTP; sets UP to its MCP endpoint.
start_fast_upstream() {
  "$BIN/fast-upstream" --port 0 >"$TMP/upstream.log" &
  pids+=($!)
  wait_for "$TMP/upstream.log" listening
  UP=$(grep -o 'http://[^ ]*' "$TMP/upstream.log")
}

# A gateway configuration at DIR/toolgate.toml: the fast upstream as server "http" with
# POLICY, reached by an anonymous loopback grant, audit on or off.
write_gateway_config() { # dir policy-file audit-enabled
  mkdir -p "$1"
  cat >"$1/toolgate.toml" <<TOML
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
