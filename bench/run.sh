#!/usr/bin/env bash
# What toolgate adds to a call, measured in one run on one machine: the same tools/call load
# sent directly to a fast upstream, through toolgate with no policy limits (allow-all policy,
# audit off), and through toolgate with a realistic policy (60 tools, deny_if conditions, two
# limits with a high max, audit on) - at 1, 16 and 64 concurrent sessions, over Streamable
# HTTP and over stdio. Then memory: the idle gateway's RSS, and with 1,000 and 10,000 idle
# sessions. Prints Markdown and writes JSON (bench/results.json).
#
# Every measurement runs ROUNDS times (3 by default), the rounds one after another, each round
# running every configuration in turn, with a direct run before the proxies of a transport
# and another after them: a round's baseline is the mean of the two, so that the machine
# drifting during the round favours neither the first proxies nor the last. The table gives,
# per row, the median over the rounds of each round's ratio (and added latency), with the
# lowest and highest ratio: on this machine one run's direct throughput can move by a third
# between neighbouring runs.
#
# Floors are measured beside toolgate, over HTTP: `bare-proxy`, a pass-through on the same
# HTTP stack as toolgate that does nothing else, and nginx when it is installed (a tuned C
# proxy; `apt-get install nginx-light`). They split "what toolgate adds" into what any proxy
# adds on this machine's loopback and what toolgate's own work adds. `bare-proxy` runs four
# ways: on tokio's default runtime, on one single-threaded runtime (toolgate runs one per
# core), on that runtime polling after each request as toolgate does (`busy_poll_us`), and on
# toolgate's serving model whole (one such runtime per core, polling); toolgate also runs once
# with polling off, so that the table shows what polling changes.
#
#   bash bench/run.sh            # 3 rounds of 3 s per run (about 8 minutes)
#   ROUNDS=5 DURATION=5 bash bench/run.sh
#   bash bench/run.sh --smoke    # one round of a few hundred ms per run: checks the instruments
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-3}
WARMUP=1
SESSIONS=(1 16 64)
HOLD=(1000 10000)
OUT=bench/results.json
if [[ ${1:-} == --smoke ]]; then
  DURATION=0.3
  ROUNDS=1
  WARMUP=0.2
  SESSIONS=(1 4)
  HOLD=(50)
  OUT=$(mktemp)
fi

source bench/lib.sh
start_fast_upstream

read -r BARE_PID BARE < <(start_bare_proxy bare)
# The same on one single-threaded runtime: toolgate runs one such runtime per core, so at one
# session this is the floor of its own model.
read -r BARE1_PID BARE1 < <(start_bare_proxy bare1 --current-thread)
# And polling after each request as toolgate does (busy_poll_us, README): toolgate's own
# floor at one session, where polling decides the added latency.
read -r BARE1P_PID BARE1P < <(start_bare_proxy bare1p --current-thread --busy-poll-us 200)
# And on toolgate's serving model whole: one such runtime per core, polling, connections
# handed to them in turn: under load, the floor of toolgate's own model.
CORES=$(nproc)
read -r BAREN_PID BAREN < <(start_bare_proxy baren --current-thread --threads "$CORES" --busy-poll-us 200)

start_nginx

write_policies

start_gateway_info() { # name policy-file audit-enabled [busy_poll_us]
  local dir=$TMP/$1
  write_gateway_config "$dir" "$2" "$3" "${4:-}"
  cat >>"$dir/toolgate.toml" <<TOML
[servers.stdio]
command = "$PWD/$BIN/fast-upstream"
args = ["--stdio"]
policy = "$2"
[grants.stdio]
server = "stdio"
anonymous = true
TOML
  TOOLGATE_LOG="warn,toolgate=info,toolgate::upstream=warn" TOOLGATE_ADMIN_TOKEN=bench "$BIN/toolgate" serve --config "$dir/toolgate.toml" 2>"$dir/log" &
  local pid=$!
  echo "$pid" >"$dir/pid"
  wait_for "$dir/log" 'listening on' >/dev/null
  local port
  port=$(listening_url "$dir/log" | grep -o '[0-9]*$')
  echo "$pid $port"
}

read -r PLAIN_PID PLAIN_PORT < <(start_gateway_info plain "$TMP/plain.json" false)
read -r REAL_PID REAL_PORT < <(start_gateway_info realistic "$TMP/realistic.json" true)
# Allow-all with busy polling off: what polling changes, in the same rounds.
read -r QUIET_PID QUIET_PORT < <(start_gateway_info quiet "$TMP/plain.json" false 0)

RESULTS=$TMP/results.jsonl
: >"$RESULTS"
load() { # label transport sessions target pid (and $round)
  local args=(--sessions "$3" --duration "$DURATION" --warmup "$WARMUP" --name "$1/$2/$3/$round")
  # Only the direct stdio runs speak stdio (to a child of loadgen); the gateway is HTTP.
  if [[ $1 == direct* && $2 == stdio ]]; then args+=(--stdio "$4"); else args+=(--url "$4"); fi
  [[ -n ${5:-} ]] && args+=(--pid "$5")
  "$BIN/loadgen" "${args[@]}" | tee -a "$RESULTS" >/dev/null
}

for round in $(seq "$ROUNDS"); do
for n in "${SESSIONS[@]}"; do
  load direct http "$n" "$UP"
  load bare http "$n" "$BARE" "$BARE_PID"
  load bare1 http "$n" "$BARE1" "$BARE1_PID"
  load bare1p http "$n" "$BARE1P" "$BARE1P_PID"
  load baren http "$n" "$BAREN" "$BAREN_PID"
  [[ -n $NGINX ]] && load nginx http "$n" "$NGINX" "$NGINX_WORKER"
  load plain http "$n" "http://127.0.0.1:$PLAIN_PORT/mcp/http" "$PLAIN_PID"
  load quiet http "$n" "http://127.0.0.1:$QUIET_PORT/mcp/http" "$QUIET_PID"
  load realistic http "$n" "http://127.0.0.1:$REAL_PORT/mcp/http" "$REAL_PID"
  load direct-after http "$n" "$UP"
  load direct stdio "$n" "$PWD/$BIN/fast-upstream --stdio"
  load plain stdio "$n" "http://127.0.0.1:$PLAIN_PORT/mcp/stdio" "$PLAIN_PID"
  load realistic stdio "$n" "http://127.0.0.1:$REAL_PORT/mcp/stdio" "$REAL_PID"
  load direct-after stdio "$n" "$PWD/$BIN/fast-upstream --stdio"
done
done

# Memory: a fresh gateway, idle, then holding idle sessions (HTTP upstream).
read -r MEM_PID MEM_PORT < <(start_gateway_info memory "$TMP/plain.json" false)
sleep 0.5
IDLE_KIB=$(awk '/VmRSS/{print $2}' "/proc/$MEM_PID/status")
: >"$TMP/memory.jsonl"
for n in "${HOLD[@]}"; do
  "$BIN/loadgen" --url "http://127.0.0.1:$MEM_PORT/mcp/http" --hold "$n" --pid "$MEM_PID" --name "hold/$n" >>"$TMP/memory.jsonl"
done

python3 - "$RESULTS" "$TMP/memory.jsonl" "$IDLE_KIB" "$OUT" "$CORES" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
mem = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
idle_kib = int(sys.argv[3])
# name = label/transport/sessions/round
rounds = {}
for r in runs:
    label, transport, n, k = r["name"].split("/")
    rounds.setdefault((label, transport, int(n)), {})[int(k)] = r

# A round's baseline: the mean of its direct runs before and after the proxies.
for (label, transport, n), before in rounds.items():
    if label != "direct":
        continue
    after = rounds.get(("direct-after", transport, n), {})
    for k, b in before.items():
        a = after.get(k)
        if a is None:
            print(f"warning: round {k} of {transport}/{n} has no second direct run; its "
                  "baseline is its one direct run", file=sys.stderr)
            continue
        before[k] = dict(b, throughput=(b["throughput"] + a["throughput"]) / 2,
                         latency_us={q: (b["latency_us"][q] + a["latency_us"][q]) / 2
                                     for q in b["latency_us"]})

def median(xs):
    xs = sorted(xs)
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2

def compare(label, transport, n):
    """Per-round comparisons of label against direct, reduced to medians; None if missing."""
    d, g = rounds.get(("direct", transport, n)), rounds.get((label, transport, n))
    if not d or not g:
        return None
    ks = sorted(set(d) & set(g))
    ratios = [g[k]["throughput"] / max(d[k]["throughput"], 1e-9) for k in ks]
    added = {q: median([g[k]["latency_us"][q] - d[k]["latency_us"][q] for k in ks]) for q in ("p50", "p99", "p999")}
    cpu = [g[k]["cpu_us_per_call"] for k in ks if g[k].get("cpu_us_per_call") is not None]
    system = [g[k]["cpu_system_us_per_call"] for k in ks
              if g[k].get("cpu_system_us_per_call") is not None]
    return {
        "rounds": len(ks),
        "direct_calls_per_s": median([d[k]["throughput"] for k in ks]),
        "calls_per_s": median([g[k]["throughput"] for k in ks]),
        "ratio": median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "added_us": added,
        "cpu_us_per_call": median(cpu) if cpu else None,
        "cpu_system_us_per_call": median(system) if system else None,
        "errors": errors_of((label,), transport, n),
    }

def errors_of(labels, transport, n):
    """Error counts by kind, added up over the rounds of these labels' runs."""
    total = {}
    for label in labels:
        for run in rounds.get((label, transport, n), {}).values():
            for kind, count in run["errors"].items():
                total[kind] = total.get(kind, 0) + count
    return total

summary = {f"{label}/{transport}/{n}": c
           for (label, transport, n) in sorted(rounds) if label not in ("direct", "direct-after")
           for c in [compare(label, transport, n)] if c}
out = {"rounds": max((int(r["name"].split("/")[3]) for r in runs), default=0),
       "summary": summary, "runs": runs, "memory": {"idle_rss_kib": idle_kib, "holds": mem}}
json.dump(out, open(sys.argv[4], "w"), indent=1)

def fmt(x, d=0):
    return "-" if x is None else f"{x:,.{d}f}"

def ratio(c):
    if c["rounds"] == 1:
        return f'{c["ratio"]:.2f}×'
    return f'{c["ratio"]:.2f}×, {c["ratio_min"]:.2f}–{c["ratio_max"]:.2f}'

print(f"\n{out['rounds']} round(s); each cell is the median over the rounds, ratios with their lowest and highest.")
for transport in ("http", "stdio"):
    print(f"\n### {transport} upstream\n")
    print("| sessions | direct calls/s | gateway calls/s (ratio) | realistic calls/s (ratio) | added p50 µs (gw / realistic) | added p99 µs | added p99.9 µs | gateway CPU µs/call (gw / realistic) | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sorted({k[2] for k in rounds}):
        p, r = compare("plain", transport, n), compare("realistic", transport, n)
        if not (p and r):
            continue
        def added(q):
            return f'{p["added_us"][q]:+,.0f} / {r["added_us"][q]:+,.0f}'
        errs = errors_of(("direct", "direct-after", "plain", "realistic"), transport, n)
        print(f'| {n} | {fmt(p["direct_calls_per_s"])} | {fmt(p["calls_per_s"])} ({ratio(p)}) '
              f'| {fmt(r["calls_per_s"])} ({ratio(r)}) | {added("p50")} | {added("p99")} | {added("p999")} '
              f'| {fmt(p["cpu_us_per_call"],1)} / {fmt(r["cpu_us_per_call"],1)} | {errs or "none"} |')
print("\n### floors: other proxies in the same run (HTTP upstream)\n")
print("| sessions | proxy | calls/s (ratio) | added p50 µs | added p99 µs | CPU µs/call | of it in the kernel |")
print("|---|---|---|---|---|---|---|")
proxies = (("bare", "bare-proxy (tokio's work-stealing runtime)"),
           ("bare1", "bare-proxy --current-thread (one single-threaded runtime)"),
           ("bare1p", "bare-proxy --current-thread --busy-poll-us 200 (polling as toolgate)"),
           ("baren", f"bare-proxy --current-thread --threads {sys.argv[5]} --busy-poll-us 200 (toolgate's serving model)"),
           ("nginx", "nginx"), ("quiet", "toolgate, allow-all, busy_poll_us = 0"),
           ("plain", "toolgate, allow-all"),
           ("realistic", "toolgate, realistic policy"))
for n in sorted({k[2] for k in rounds}):
    for key, label in proxies:
        c = compare(key, "http", n)
        if c is None:
            continue
        print(f'| {n} | {label} | {fmt(c["calls_per_s"])} ({ratio(c)}) '
              f'| {c["added_us"]["p50"]:+,.0f} | {c["added_us"]["p99"]:+,.0f} '
              f'| {fmt(c["cpu_us_per_call"], 1)} | {fmt(c["cpu_system_us_per_call"], 1)} |')
print("\n### memory (HTTP upstream, idle sessions)\n")
print(f"| state | gateway RSS | per session |")
print("|---|---|---|")
print(f"| idle, no sessions | {idle_kib/1024:.1f} MiB | - |")
prev = idle_kib
total = 0
for m in mem:
    total += m["sessions"]
    after = m["rss_after_kib"]
    per = (after - prev) * 1024 / m["sessions"]
    print(f'| {total:,} sessions open | {after/1024:.1f} MiB | {per/1024:.1f} KiB (the last {m["sessions"]:,}) |')
    prev = after
bad = [r["name"] for r in runs if r["errors"] or r["calls"] == 0]
if bad:
    print(f"\nruns with errors or no calls: {bad}")
    sys.exit(1)
PY
echo
echo "JSON: $OUT"
