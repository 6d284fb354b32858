#!/usr/bin/env bash
# Two gateway builds side by side, measured in alternation (A, B, A, B, ...) so that this
# machine's drift falls on both alike: the same fast upstream, allow-all (audit off) and
# realistic (audit on) configurations of each, one loadgen run at a time. Per run: p50, p99,
# calls/s, and the gateway's user and system CPU per call (loadgen reads /proc/PID/stat
# around its measured run; before, this script read it around the warm-up too, which put the
# CPU per call about a sixth too high on both sides).
#
#   bash bench/scripts/ab.sh OLD_BINARY NEW_BINARY              # 64 sessions, 3 rounds
#   SESSIONS=1 ROUNDS=2 bash bench/scripts/ab.sh OLD NEW
#
# (Build the old binary from a worktree: `git worktree add /tmp/old REV && cargo build
# --release -p toolgate --manifest-path /tmp/old/Cargo.toml`.)
set -euo pipefail
[[ $# == 2 ]] || { echo "usage: ab.sh BINARY_A BINARY_B" >&2; exit 2; }
A=$(realpath "$1")
B=$(realpath "$2")
cd "$(dirname "$0")/../.."
source bench/lib.sh
start_fast_upstream
write_policies

runs=()
for side in A B; do
  bin=$A
  [[ $side == B ]] && bin=$B
  for config in plain realistic; do
    audit=false
    [[ $config == realistic ]] && audit=true
    read -r pid url < <(start_gateway "$side-$config" "$bin" "$TMP/$config.json" "$audit")
    runs+=("$side-$config $pid $url")
  done
done

for round in $(seq "${ROUNDS:-3}"); do
  for config in plain realistic; do
    for side in A B; do
      for r in "${runs[@]}"; do
        read -r name pid url <<<"$r"
        [[ $name == "$side-$config" ]] || continue
        # loadgen reads the gateway's CPU from /proc around the measured run only.
        out=$("$BIN/loadgen" --url "$url" --sessions "${SESSIONS:-64}" --duration "${DURATION:-3}" --warmup 0.5 --name "$name" --pid "$pid")
        python3 - "$out" "$round" "$name" <<'PY'
import json, sys
d = json.loads(sys.argv[1]); l = d["latency_us"]
cpu, sys_ = d["cpu_us_per_call"] or 0, d["cpu_system_us_per_call"] or 0
print("round %s %-12s p50 %5d µs  p99 %5d µs  %7.0f calls/s  CPU/call user %5.1f + sys %5.1f µs" % (
    sys.argv[2], sys.argv[3], l["p50"], l["p99"], d["throughput"], cpu - sys_, sys_))
PY
      done
    done
  done
done
