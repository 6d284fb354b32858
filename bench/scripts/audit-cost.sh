#!/usr/bin/env bash
# End-to-end cost of the audit trail: the same allowed tools/call load (hey) sent directly to a
# fast upstream, and through two toolgate gateways that differ only in `[audit] enabled` (both
# with the allow-all policy, `arguments = "redacted"` for the audited one) - all in one run on
# this machine. The two gateways are measured in alternation, ROUNDS times each, so that drift
# of the machine falls on both alike; the table reports each round and the medians.
#   bash bench/scripts/audit-cost.sh [REQUESTS] [CONCURRENCY] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-20000}
C=${2:-16}
ROUNDS=${3:-3}
command -v hey >/dev/null || { echo "needs hey (apt-get install hey)" >&2; exit 2; }
source bench/lib.sh
start_fast_upstream
echo '{"version":"1","default":"allow"}' >"$TMP/plain.json"

start_gateway() { # name enabled
  cat >"$TMP/$1.toml" <<TOML
listen = "127.0.0.1:0"
state_dir = "$TMP/state-$1"
[servers.up]
url = "$UP"
policy = "$TMP/plain.json"
[grants.bench]
server = "up"
anonymous = true
[audit]
enabled = $2
TOML
  TOOLGATE_LOG=warn,toolgate=info "$BIN/toolgate" serve --config "$TMP/$1.toml" >/dev/null 2>"$TMP/$1.log" &
  pids+=($!)
  wait_for "$TMP/$1.log" 'listening on'
}
address() { listening_url "$TMP/$1.log"; }
start_gateway off false
start_gateway on true
GW_OFF=$(address off)
GW_ON=$(address on)
[ -n "$GW_OFF" ] && [ -n "$GW_ON" ] || { echo "a gateway did not start" >&2; cat "$TMP"/*.log >&2; exit 1; }

# Arguments like a real call's: a few keys, one of them a secret the audit masks.
call='{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"select name from users","env":"dev","limit":10,"api_key":"k-123456"}}}'

s_off=$(hey_session "$GW_OFF/mcp/up"); s_on=$(hey_session "$GW_ON/mcp/up")
# The load must be allowed calls answered by the upstream.
assert_allowed "$GW_OFF/mcp/up" "$s_off"
assert_allowed "$GW_ON/mcp/up" "$s_on"
# Warm-up (also lets each gateway fetch the upstream's tool list once per session).
N=500 hey_run warm "$GW_OFF/mcp/up" "$s_off" >/dev/null; N=500 hey_run warm "$GW_ON/mcp/up" "$s_on" >/dev/null
{
  hey_run direct "$UP" fast-upstream-session
  for r in $(seq "$ROUNDS"); do
    hey_run "audit-off#$r" "$GW_OFF/mcp/up" "$s_off"
    hey_run "audit-on#$r" "$GW_ON/mcp/up" "$s_on"
  done
} >"$TMP/results"
records=$(cat "$TMP"/state-on/audit/*.jsonl | wc -l)
# The rounds, the warm-up and the check call above.
expected=$((ROUNDS * (N / C * C) + 500 / C * C + 1))
[ "$records" -eq "$expected" ] || { echo "audited gateway: $records records for $expected calls" >&2; exit 1; }
[ ! -d "$TMP/state-off/audit" ] || [ -z "$(ls -A "$TMP/state-off/audit")" ] || { echo "audit off wrote records" >&2; exit 1; }

echo "| run ($N calls, $C concurrent) | req/s | p50 ms | p99 ms | throughput vs direct |"
echo "|---|---|---|---|---|"
direct=$(awk '$1=="direct"{print $2}' "$TMP/results")
while read -r name rps p50 p99; do
  ratio=$(awk -v a="$rps" -v b="$direct" 'BEGIN{printf "%.2f", a/b}')
  p50ms=$(awk -v s="$p50" 'BEGIN{printf "%.3f", s*1000}')
  p99ms=$(awk -v s="$p99" 'BEGIN{printf "%.3f", s*1000}')
  echo "| $name | $rps | $p50ms | $p99ms | $ratio |"
done <"$TMP/results"
median() { sort -n | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
off=$(awk '$1 ~ /^audit-off#/{print $2}' "$TMP/results" | median)
on=$(awk '$1 ~ /^audit-on#/{print $2}' "$TMP/results" | median)
echo
echo "median req/s: audit off $off, audit on $on; audit on/off = $(awk -v a="$on" -v b="$off" 'BEGIN{printf "%.3f", a/b}') ($records records written)"
