#!/usr/bin/env bash
# System calls per tools/call, counted by strace on the serving process: toolgate allow-all
# (audit off), toolgate realistic (audit on), and bare-proxy (the HTTP stack alone) on one
# single-threaded runtime and, as "bare-xN", on toolgate's serving model (N cores). At one session a
# proxy's latency is the CPU on the request's path, and about half of that is the kernel's,
# so a system call more or less per call shows here before it shows in a noisy wall-clock
# run. Every thread of the process is counted (the audit syncer included); the counts are
# divided by the load generator's tools/calls. Each session's opening (connect, initialize,
# notification) and closing DELETE fall inside the count too: nothing at one session, a few
# tenths per call at 64.
#
#   bash bench/scripts/syscalls.sh [TOOLGATE_BINARY]
#   SESSIONS=64 bash bench/scripts/syscalls.sh
#   BUSY_POLL_US=200 SESSIONS=64 bash bench/scripts/syscalls.sh   # polling on, as by default
#
# Needs strace, allowed to attach to a running process (root, or ptrace_scope 0). strace
# slows the process it watches, so only the counts mean anything here.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v strace >/dev/null || { echo "needs strace (apt-get install strace)" >&2; exit 2; }
GATEWAY=${1:-target/release/toolgate}
SESSIONS=${SESSIONS:-1}
# Polling off by default: its turns would be counted as the calls' work (BUSY_POLL_US= for
# builds before busy polling, which refuse the key).
BUSY_POLL_US=${BUSY_POLL_US-0}
source bench/lib.sh
start_fast_upstream
write_policies
# strace writes under a directory of its own: the gateway watches the policies' directory.
mkdir -p "$TMP/strace"

count() { # name pid url
  "$BIN/loadgen" --url "$3" --sessions "$SESSIONS" --duration 1 --warmup 0.3 --name warm >/dev/null
  strace -c -f -p "$2" -o "$TMP/strace/$1" 2>"$TMP/strace/$1.err" &
  local tracer=$!
  sleep 0.5
  kill -0 "$tracer" 2>/dev/null || { echo "strace could not attach to $1:" >&2; cat "$TMP/strace/$1.err" >&2; exit 1; }
  local calls
  calls=$("$BIN/loadgen" --url "$3" --sessions "$SESSIONS" --duration 2 --warmup 0 --name "$1" |
    loadgen_calls)
  kill -INT "$tracer"
  wait "$tracer" 2>/dev/null || true
  [[ $calls -gt 0 ]] || { echo "$1: no calls counted" >&2; exit 1; }
  # strace -c: "% time seconds usecs/call calls [errors] syscall"; the last row is the total.
  python3 - "$1" "$calls" "$TMP/strace/$1" <<'PY'
import sys
name, calls, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = []
for line in open(path):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        rows.append((int(f[3]) / calls, f[-1]))
if not rows:
    sys.exit(f"{name}: strace counted no system calls ({path})")
rows.sort(reverse=True)
shown = ", ".join(f"{n:.2f} {s}" for n, s in rows if n >= 0.05)
print(f"{name:<10} {sum(n for n, _ in rows):5.2f} per call ({calls} calls): {shown}")
PY
}

for config in plain realistic; do
  audit=false
  [[ $config == realistic ]] && audit=true
  write_gateway_config "$TMP/$config" "$TMP/$config.json" "$audit" "$BUSY_POLL_US"
  TOOLGATE_ADMIN_TOKEN=bench "$GATEWAY" serve --config "$TMP/$config/toolgate.toml" \
    2>"$TMP/$config/log" &
  pid=$!
  pids+=("$pid")
  wait_for "$TMP/$config/log" 'listening on'
  count "$config" "$pid" "$(listening_url "$TMP/$config/log")/mcp/http"
done

read -r bare bare_url < <(start_bare_proxy bare --current-thread)
count bare-proxy "$bare" "$bare_url"
# On toolgate's serving model (one runtime per core, connections handed out in turn),
# polling as the gateways above do.
poll=()
[[ ${BUSY_POLL_US:-0} -gt 0 ]] && poll=(--busy-poll-us "$BUSY_POLL_US")
read -r bare bare_url < <(start_bare_proxy bare-model --current-thread --threads "$(nproc)" "${poll[@]}")
count "bare-x$(nproc)" "$bare" "$bare_url"
