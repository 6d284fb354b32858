#!/usr/bin/env bash
# End-to-end cost of the policy step: the same tools/call load (hey) sent directly to a fast
# upstream, through toolgate with a minimal policy ({"default":"allow"}), and through toolgate
# with the benchmarks' realistic 60-tool policy, limits left out (bench/realistic-policy.py
# --no-limits: the echo rule has conditions - regex, contains, in, numeric) - all in one run on
# this machine, reported as ratios to the direct run.
#   bash bench/scripts/policy-cost.sh [REQUESTS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-20000}
C=${2:-16}
command -v hey >/dev/null || { echo "needs hey (apt-get install hey)" >&2; exit 2; }
source bench/lib.sh
start_fast_upstream

python3 bench/realistic-policy.py "$TMP/rich.json" --no-limits
echo '{"version":"1","default":"allow"}' >"$TMP/plain.json"
cat >"$TMP/gw.toml" <<TOML
listen = "127.0.0.1:0"
state_dir = "$TMP/state"
[servers.plain]
url = "$UP"
policy = "$TMP/plain.json"
[servers.rich]
url = "$UP"
policy = "$TMP/rich.json"
[grants.plain]
server = "plain"
anonymous = true
[grants.rich]
server = "rich"
anonymous = true
TOML
TOOLGATE_LOG=warn,toolgate=info "$BIN/toolgate" serve --config "$TMP/gw.toml" 2>"$TMP/gw.log" &
pids+=($!)
wait_for "$TMP/gw.log" 'listening on'
GW=$(listening_url "$TMP/gw.log")

call='{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"select name from users","env":"dev","limit":10}}}'

s_plain=$(hey_session "$GW/mcp/plain"); s_rich=$(hey_session "$GW/mcp/rich")
# The load must be allowed calls answered by the upstream, not denials.
assert_allowed "$GW/mcp/plain" "$s_plain"
assert_allowed "$GW/mcp/rich" "$s_rich"
# Warm-up (also lets the gateway fetch the upstream's tool list once per session).
N=500 hey_run warm "$GW/mcp/plain" "$s_plain" >/dev/null; N=500 hey_run warm "$GW/mcp/rich" "$s_rich" >/dev/null
{
  hey_run direct "$UP" fast-upstream-session
  hey_run gateway-minimal-policy "$GW/mcp/plain" "$s_plain"
  hey_run gateway-60-tool-policy "$GW/mcp/rich" "$s_rich"
} >"$TMP/results"
echo "| run ($N calls, $C concurrent) | req/s | p50 ms | p99 ms | throughput vs direct |"
echo "|---|---|---|---|---|"
direct=$(awk '$1=="direct"{print $2}' "$TMP/results")
while read -r name rps p50 p99; do
  ratio=$(awk -v a="$rps" -v b="$direct" 'BEGIN{printf "%.2f", a/b}')
  p50ms=$(awk -v s="$p50" 'BEGIN{printf "%.3f", s*1000}')
  p99ms=$(awk -v s="$p99" 'BEGIN{printf "%.3f", s*1000}')
  echo "| $name | $rps | $p50ms | $p99ms | $ratio |"
done <"$TMP/results"
