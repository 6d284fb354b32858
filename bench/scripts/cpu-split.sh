#!/usr/bin/env bash
# Where each call's CPU goes, at 64 sessions (SESSIONS to change): the load generator's, the
# upstream's and the proxy's CPU per call, the whole machine's busy, idle and stolen time per
# call (/proc/stat; steal is time the host gave our vCPUs to someone else), context switches
# per call of the upstream and the proxy, and the proxy's minor page faults per call -
# directly against the fast upstream, through bare-proxy (the HTTP stack alone: on one
# single-threaded runtime, and as "bare-proxy-xN" on toolgate's serving model, one for each
# of N cores, with polling), nginx when it is installed, and toolgate four ways: allow-all and
# realistic (bench/realistic-policy.py), each with audit off and on (bench/run.sh's two are
# allow-all with audit off and realistic with audit on), so that the policy's cost and the
# audit journal's show apart.
#
# Why: with every process on two cores and the machine busy (idle near zero), throughput is
# the machine's CPU divided by the CPU a call costs in all processes together, so a proxy's
# ratio to direct is about direct's busy time per call over the proxy's. That splits the
# 64-session ratio of bench/run.sh into what the proxy spends itself and what the load
# generator and the upstream spend more behind it (more context switches: each goes idle and
# is woken more often). Steal above zero marks a run the host slowed down. Medians over
# ROUNDS rounds; each round runs direct first and last, and its ratios are to the mean of
# the two.
#
#   bash bench/scripts/cpu-split.sh          # 3 rounds of 3 s per run (about 2 minutes)
#   SESSIONS=16 ROUNDS=5 bash bench/scripts/cpu-split.sh [TOOLGATE_BINARY]
#   bash bench/scripts/cpu-split.sh --smoke  # one short round at 4 sessions: checks it runs
#   GATEWAY_B=OTHER_BINARY bash bench/scripts/cpu-split.sh [TOOLGATE_BINARY]
#                                            # two builds in the same rounds: bench/run.sh's
#                                            # two configurations of OTHER_BINARY too, as
#                                            # rows ending in "-B"
set -euo pipefail
cd "$(dirname "$0")/../.."
SESSIONS=${SESSIONS:-64}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
WARMUP=1
if [[ ${1:-} == --smoke ]]; then
  shift
  SESSIONS=4
  ROUNDS=1
  DURATION=0.3
  WARMUP=0.2
fi
GATEWAY=${1:-target/release/toolgate}
source bench/lib.sh
start_fast_upstream
UP_PID=${pids[-1]}
write_policies

names=(direct)
declare -A URL PID
URL[direct]=$UP
PID[direct]=

read -r "PID[bare-proxy]" "URL[bare-proxy]" < <(start_bare_proxy bare1 --current-thread)
names+=(bare-proxy)
# The same on toolgate's serving model: one single-threaded runtime per core (named for
# their number: bare-proxy-x2 on two cores), connections handed out in turn, polling after
# each request as toolgate does.
model=bare-proxy-x$(nproc)
read -r "PID[$model]" "URL[$model]" < <(start_bare_proxy bare-model --current-thread --threads "$(nproc)" --busy-poll-us 200)
names+=("$model")

start_nginx
if [[ -n $NGINX ]]; then
  PID[nginx]=$NGINX_WORKER
  URL[nginx]=$NGINX
  names+=(nginx)
fi

for config in plain realistic; do
  for audit in false true; do
    name=toolgate-$config
    [[ $config == plain ]] && name=toolgate-allow-all
    [[ $audit == true ]] && name+=+audit
    read -r "PID[$name]" "URL[$name]" < <(start_gateway "$name" "$GATEWAY" "$TMP/$config.json" "$audit")
    names+=("$name")
    if [[ -n ${GATEWAY_B:-} && $config/$audit =~ ^(plain/false|realistic/true)$ ]]; then
      read -r "PID[$name-B]" "URL[$name-B]" < <(start_gateway "$name-B" "$GATEWAY_B" "$TMP/$config.json" "$audit")
      names+=("$name-B")
    fi
  done
done

RESULTS=$TMP/split.jsonl
: >"$RESULTS"
run() { # name round
  local args=(--url "${URL[$1]}" --sessions "$SESSIONS" --duration "$DURATION" --warmup "$WARMUP"
    --upstream-pid "$UP_PID" --name "$1/$2")
  [[ -n ${PID[$1]} ]] && args+=(--pid "${PID[$1]}")
  "$BIN/loadgen" "${args[@]}" >>"$RESULTS"
}
for round in $(seq "$ROUNDS"); do
  for name in "${names[@]}"; do run "$name" "$round"; done
  run direct "$round"
done

python3 - "$RESULTS" "$SESSIONS" "$ROUNDS" "${names[@]}" <<'PY'
import json, statistics, sys
path, sessions, rounds, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
runs = {}
for line in open(path):
    d = json.loads(line)
    name, rnd = d["name"].rsplit("/", 1)
    runs.setdefault((name, int(rnd)), []).append(d)
def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def fmt(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}"
print(f"CPU per call at {sessions} sessions, medians of {rounds} rounds "
      "(µs per call; ratio = calls/s over the round's direct mean)")
print()
print("| run | calls/s | ratio | load generator | upstream | proxy (of it kernel) | sum | machine busy "
      "| idle | steal | upstream ctx sw | proxy ctx sw | proxy faults |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for name in names:
    rows = []
    for r in range(1, rounds + 1):
        direct = runs[("direct", r)]
        base = statistics.mean(d["throughput"] for d in direct)
        for d in runs[(name, r)] if name != "direct" else direct:
            split = dict(d["cpu_split_per_call"] or {})
            split["gateway_system_us"] = d.get("cpu_system_us_per_call")
            rows.append((d["throughput"], d["throughput"] / base, split))
    col = lambda k: median([s.get(k) for _, _, s in rows])
    proxy = col("gateway_us")
    # A part that could not be read (no calls, an upstream that died) is left out of the sum.
    parts = [col("loadgen_us"), col("upstream_us"), proxy]
    known = [x for x in parts if x is not None]
    proxy_text = "-" if proxy is None else f"{proxy:.1f} ({fmt(col('gateway_system_us'))})"
    print(f"| {name} | {median([t for t, _, _ in rows]):.0f} | {median([q for _, q, _ in rows]):.2f} "
          f"| {fmt(parts[0])} | {fmt(parts[1])} | {proxy_text} | {fmt(sum(known) if known else None)} "
          f"| {fmt(col('machine_busy_us'))} | {fmt(col('machine_idle_us'))} | {fmt(col('machine_steal_us'))} "
          f"| {fmt(col('upstream_context_switches'), 2)} | {fmt(col('gateway_context_switches'), 2)} "
          f"| {fmt(col('gateway_minor_faults'), 3)} |")
PY
