#!/usr/bin/env bash
# Instructions the gateway executes per tools/call, counted by callgrind: repeatable for the
# same binary and inputs whatever else the machine is doing, so it is the number to compare
# before and after a change to the request path (wall-clock runs on this machine drift by
# 20% between consecutive runs). One session (SESSIONS to change), HTTP upstream, every
# thread of the gateway counted (the audit syncer included), start-up and warm-up excluded,
# logging at the default level (info: each request has its span).
#
#   bash bench/scripts/instructions.sh [TOOLGATE_BINARY]
#   TOOLGATE_LOG=warn,toolgate=info,toolgate::downstream=warn bash bench/scripts/instructions.sh
#                                    # the same without the request span (the difference is
#                                    # what the span costs; "listening on" must still log)
#   SESSIONS=64 bash bench/scripts/instructions.sh   # under load: fewer idle wake-ups
#                                    # (the runtime count stays one)
#
# Prints one line per configuration: "plain" (allow-all policy, audit off), "realistic"
# (bench/realistic-policy.py, audit on), and "bare-proxy" (the floor: toolgate's HTTP stack
# doing nothing else, on one single-threaded runtime). The gateway's calls are the decisions
# callgrind counted (every POST: the session's initialize and notification too; its closing
# DELETE is not a decision, but its instructions are in the total); bare-proxy
# decides nothing, so its calls are the load generator's count of tools/calls (the session's
# two opening requests and its closing DELETE are left out: well under 0.1% of the thousands
# counted at one session, about 2% at 64). Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
GATEWAY=${1:-target/release/toolgate}
SESSIONS=${SESSIONS:-1}
# Polling off by default: its turns would be counted as the calls' work (BUSY_POLL_US= for
# builds before busy polling, which refuse the key).
BUSY_POLL_US=${BUSY_POLL_US-0}
source bench/lib.sh
start_fast_upstream
write_policies

# Counts the process PID under callgrind (writing DUMP.*) while the load generator drives URL:
# a warm-up, then a counted run. Sets TOTAL (instructions), LOADGEN_CALLS and DUMP_FILE.
measure() { # pid url dump
  "$BIN/loadgen" --url "$2" --sessions "$SESSIONS" --duration 1 --warmup 0.5 --name warm >/dev/null
  callgrind_control -z "$1" >/dev/null 2>&1
  LOADGEN_CALLS=$("$BIN/loadgen" --url "$2" --sessions "$SESSIONS" --duration 4 --warmup 0 --name count |
    loadgen_calls)
  callgrind_control -d "$1" >/dev/null 2>&1
  kill "$1"
  wait "$1" 2>/dev/null || true
  DUMP_FILE=$(ls -t "$3".* | head -1)
  TOTAL=$(callgrind_annotate "$DUMP_FILE" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
}

report() { # name calls
  [[ ${2:-0} -gt 0 ]] || { echo "$1: no calls counted" >&2; exit 1; }
  printf '%-10s %9d instructions per call (%d calls)\n' "$1" $((TOTAL / $2)) "$2"
}

count() { # name policy audit-enabled
  local dir=$TMP/$1
  write_gateway_config "$dir" "$2" "$3" "$BUSY_POLL_US"
  # One runtime thread: the count is the same with two, and one keeps valgrind's
  # serialisation of threads out of the timings that decide when warm-up ends.
  TOOLGATE_WORKER_THREADS=1 TOOLGATE_LOG=${TOOLGATE_LOG:-info} TOOLGATE_ADMIN_TOKEN=bench \
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
    "$GATEWAY" serve --config "$dir/toolgate.toml" 2>"$dir/log" &
  local pid=$!
  pids+=("$pid")
  wait_for "$dir/log" 'listening on' 600
  measure "$pid" "$(listening_url "$dir/log")/mcp/http" "$dir/cg.out"
  # Every POST is decided exactly once: the decision step's call count is the calls.
  local calls
  calls=$(callgrind_annotate --tree=caller --threshold=100 "$DUMP_FILE" 2>/dev/null |
    grep -E '=> .*toolgate::pipeline::decide::decide \(' | grep -o '([0-9,]*x)' | tr -d '(),x' | head -1)
  report "$1" "$calls"
}

count plain "$TMP/plain.json" false
count realistic "$TMP/realistic.json" true

valgrind --tool=callgrind --callgrind-out-file="$TMP/bare.cg.out" \
  "$BIN/bare-proxy" --upstream "$UP" --port 0 --current-thread >"$TMP/bare.log" 2>"$TMP/bare.vg" &
bare=$!
pids+=("$bare")
wait_for "$TMP/bare.log" listening 600
measure "$bare" "$(printed_url "$TMP/bare.log")" "$TMP/bare.cg.out"
report bare-proxy "$LOADGEN_CALLS"
