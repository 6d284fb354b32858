#!/usr/bin/env bash
# Runs the MCP conformance server suite (@modelcontextprotocol/conformance)
# three ways and prints the results side by side:
#
#   direct                        suite -> fixture (Streamable HTTP)
#   via gateway (stdio upstream)  suite -> toolgate -> fixture as a stdio child
#   via gateway (HTTP upstream)   suite -> toolgate -> fixture (Streamable HTTP)
#
# The fixture is fixtures/node/conformance-server.mjs. A scenario's outcome is
# PASS (no failed or warning check), WARN (warnings only) or FAIL; MISSING means
# the run produced no result for it (crash or timeout) and counts as FAIL.
#
# usage: scripts/conformance.sh [--direct-only] [--suite all|active|pending]
#
# Environment:
#   TOOLGATE_BIN         gateway binary (default target/release/toolgate, built
#                        with `cargo build --release -p toolgate` when missing;
#                        an explicitly given path is never built)
#   FIXTURE_NODE         node used for the fixture (default: the pinned Node 22
#                        in fixtures/node; the system Node 20 works too)
#   CONFORMANCE_TIMEOUT  seconds allowed for one suite run (default 300)
#   STARTUP_TIMEOUT      seconds to wait for a "listening on" line (default 30)
#   BUILD_TIMEOUT        seconds allowed for the cargo build (default 1800)
#   CONFORMANCE_KEEP=1   keep the temp dir (it is always kept when something fails)
#
# Exit status: 0 all good; 1 a scenario is worse through the gateway than
# directly (either column), or fails directly; 2 the gateway could not be built
# or started (its columns then read n/a); 64 usage error.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE_DIR=$ROOT/fixtures/node
# The conformance CLI needs Node >= 22, so it always runs on the pinned one.
SUITE_NODE=$NODE_DIR/node_modules/.bin/node
SUITE_CLI=$NODE_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js
FIXTURE=$NODE_DIR/conformance-server.mjs
SUMMARIZE=$ROOT/fixtures/conformance/summarize.mjs

FIXTURE_NODE=${FIXTURE_NODE:-$SUITE_NODE}
CONFORMANCE_TIMEOUT=${CONFORMANCE_TIMEOUT:-300}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-30}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}

# usage [STATUS]: print the header comment above as help.
usage() {
  sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit "${1:-64}"
}

direct_only=0
suite=all
while (($# > 0)); do
  case $1 in
    --direct-only) direct_only=1 ;;
    --suite)
      (($# >= 2)) || usage
      suite=$2
      shift
      ;;
    --suite=*) suite=${1#--suite=} ;;
    -h | --help) usage 0 ;;
    *)
      echo "unknown argument: $1" >&2
      usage
      ;;
  esac
  shift
done

log() { printf '[conformance] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

for f in "$SUITE_NODE" "$SUITE_CLI" "$FIXTURE" "$SUMMARIZE"; do
  [[ -e $f ]] || die "missing $f (run 'npm ci' in fixtures/node?)"
done
command -v "$FIXTURE_NODE" >/dev/null || die "FIXTURE_NODE not found: $FIXTURE_NODE"
FIXTURE_NODE=$(command -v "$FIXTURE_NODE")

TMP=$(mktemp -d "${TMPDIR:-/tmp}/toolgate-conformance.XXXXXX")
PIDS=()
keep_tmp=${CONFORMANCE_KEEP:-0}

# alive PID: true while PID exists and is not a zombie. (`kill -0` alone is
# true for zombies, which our exited background children stay until reaped.)
alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $state != Z* ]]
}

# Every background process is started with setsid, so it leads its own
# process group and we can stop it together with whatever it spawned (the
# gateway's stdio child) without touching anything we did not start.
# shellcheck disable=SC2317  # only ever invoked through the EXIT trap
cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 50; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if ((rc != 0 || keep_tmp)); then
    log "outputs kept in $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_bg LOGFILE CMD...: start CMD in its own session, stdout+stderr to LOGFILE.
# Sets BG_PID.
start_bg() {
  local logfile=$1
  shift
  # Created here, not by the child's redirection, so it exists for grep at once.
  : >"$logfile"
  setsid "$@" >>"$logfile" 2>&1 </dev/null &
  BG_PID=$!
  PIDS+=("$BG_PID")
}

# run_bounded SECS LOGFILE CMD...: run CMD with a time limit, output to
# LOGFILE, and return its exit status (124/137 on timeout). It runs in the
# background and we `wait` for it because bash defers traps until a
# foreground command ends; this way a TERM to this script is handled at once.
# GNU timeout leads its own process group, so cleanup can stop it like the rest.
run_bounded() {
  local secs=$1 logfile=$2 pid rc=0
  shift 2
  timeout --kill-after=10 "$secs" "$@" >"$logfile" 2>&1 </dev/null &
  pid=$!
  PIDS+=("$pid")
  wait "$pid" || rc=$?
  return "$rc"
}

# wait_listening PID LOGFILE: wait (bounded) for the "listening on
# http://127.0.0.1:PORT" line that both the fixture and the gateway print, and
# set LISTEN_PORT from it. Binding port 0 and reading the real port back
# avoids racing other processes for a "free" port.
wait_listening() {
  local pid=$1 logfile=$2 line deadline=$((SECONDS + STARTUP_TIMEOUT))
  while ((SECONDS < deadline)); do
    line=$(grep -m1 -oE 'listening on http://127\.0\.0\.1:[0-9]+' "$logfile" || true)
    if [[ -n $line ]]; then
      LISTEN_PORT=${line##*:}
      return 0
    fi
    if ! alive "$pid"; then
      log "process $pid exited before listening; last lines of $logfile:"
      tail -n 20 "$logfile" >&2 || true
      return 1
    fi
    sleep 0.2
  done
  log "no 'listening on' line from $pid within ${STARTUP_TIMEOUT}s; last lines of $logfile:"
  tail -n 20 "$logfile" >&2 || true
  return 1
}

# run_suite NAME URL: run the suite against URL, outputs in $TMP/NAME/.
run_suite() {
  local name=$1 url=$2 rc=0
  mkdir -p "$TMP/$name"
  log "running suite '$suite' $name against $url"
  # The suite exits non-zero when a check fails; that is data, not an error.
  run_bounded "$CONFORMANCE_TIMEOUT" "$TMP/$name/stdout.txt" \
    "$SUITE_NODE" "$SUITE_CLI" server --url "$url" --suite "$suite" -o "$TMP/$name/results" || rc=$?
  if ((rc == 124 || rc == 137)); then
    log "$name: suite timed out after ${CONFORMANCE_TIMEOUT}s (results so far are used)"
  fi
  "$SUITE_NODE" "$SUMMARIZE" "$TMP/$name/results" >"$TMP/$name/summary.tsv"
}

# toml_str S: S as a TOML basic string.
toml_str() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# --- direct ----------------------------------------------------------------

mkdir -p "$TMP/fixture"
start_bg "$TMP/fixture/server.log" "$FIXTURE_NODE" "$FIXTURE" --port 0
FIXTURE_PID=$BG_PID
wait_listening "$FIXTURE_PID" "$TMP/fixture/server.log" || die "conformance fixture did not start"
FIXTURE_URL=http://127.0.0.1:$LISTEN_PORT/mcp
log "fixture ($("$FIXTURE_NODE" --version)) at $FIXTURE_URL"

run_suite direct "$FIXTURE_URL"
columns=(direct)
gateway_error=""

# --- via the gateway --------------------------------------------------------

if ((!direct_only)); then
  if [[ -n ${TOOLGATE_BIN:-} ]]; then
    [[ -x $TOOLGATE_BIN ]] || gateway_error="TOOLGATE_BIN=$TOOLGATE_BIN does not exist or is not executable"
  else
    TOOLGATE_BIN=$ROOT/target/release/toolgate
    if [[ ! -x $TOOLGATE_BIN ]]; then
      log "building $TOOLGATE_BIN (cargo build --release -p toolgate, log: $TMP/cargo-build.log)"
      if ! run_bounded "$BUILD_TIMEOUT" "$TMP/cargo-build.log" \
        cargo build --release -p toolgate --manifest-path "$ROOT/Cargo.toml"; then
        tail -n 20 "$TMP/cargo-build.log" >&2 || true
        gateway_error="cargo build --release -p toolgate failed (see $TMP/cargo-build.log)"
      elif [[ ! -x $TOOLGATE_BIN ]]; then
        gateway_error="cargo build succeeded but $TOOLGATE_BIN is missing"
      fi
    fi
  fi

  if [[ -z $gateway_error ]]; then
    mkdir -p "$TMP/gateway/state"
    config=$TMP/gateway/toolgate.toml
    cat >"$config" <<EOF
# Generated by scripts/conformance.sh
listen = "127.0.0.1:0"
state_dir = $(toml_str "$TMP/gateway/state")

[servers.conf-stdio]
# Everything allowed: the suite checks the relay; the policy path still runs on every call.
policy = $(toml_str "$ROOT/fixtures/conformance/policy.json")
command = $(toml_str "$FIXTURE_NODE")
args = [$(toml_str "$FIXTURE"), "--stdio"]
cwd = $(toml_str "$NODE_DIR")

[servers.conf-http]
policy = $(toml_str "$ROOT/fixtures/conformance/policy.json")
url = $(toml_str "$FIXTURE_URL")

# The suite cannot send credentials: anonymous grants (loopback only).
[grants.conformance-stdio]
server = "conf-stdio"
anonymous = true

[grants.conformance-http]
server = "conf-http"
anonymous = true
EOF
    start_bg "$TMP/gateway/gateway.log" "$TOOLGATE_BIN" serve --config "$config"
    if wait_listening "$BG_PID" "$TMP/gateway/gateway.log"; then
      GATEWAY=http://127.0.0.1:$LISTEN_PORT
      log "gateway $TOOLGATE_BIN at $GATEWAY"
      run_suite gw-stdio "$GATEWAY/mcp/conf-stdio"
      run_suite gw-http "$GATEWAY/mcp/conf-http"
      columns+=(gw-stdio gw-http)
    else
      gateway_error="gateway did not start (see $TMP/gateway/gateway.log)"
    fi
  fi
fi

# --- table ------------------------------------------------------------------

declare -A status detail
scenarios=()
declare -A seen
# Scenario order: as the suite ran them (direct first), then anything else.
for col in direct gw-stdio gw-http; do
  [[ -f $TMP/$col/stdout.txt ]] || continue
  while IFS= read -r s; do
    [[ -n ${seen[$s]:-} ]] && continue
    seen[$s]=1
    scenarios+=("$s")
  done < <(sed -n 's/^=== Running scenario: \(.*\) ===$/\1/p' "$TMP/$col/stdout.txt")
done
for col in "${columns[@]}"; do
  while IFS=$'\t' read -r s st d; do
    status[$col/$s]=$st
    detail[$col/$s]=$d
    if [[ -z ${seen[$s]:-} ]]; then
      seen[$s]=1
      scenarios+=("$s")
    fi
  done <"$TMP/$col/summary.tsv"
done
((${#scenarios[@]} > 0)) || die "the suite ran no scenario; see $TMP/direct/stdout.txt"

rank() {
  case $1 in
    PASS) echo 0 ;;
    WARN) echo 1 ;;
    *) echo 2 ;;
  esac
}

declare -A passed failed warned
regressions=()
direct_failures=()
printf '\n| scenario | direct | via gateway (stdio upstream) | via gateway (HTTP upstream) |\n'
printf '|---|---|---|---|\n'
for s in "${scenarios[@]}"; do
  row="| $s"
  for col in direct gw-stdio gw-http; do
    if [[ " ${columns[*]} " != *" $col "* ]]; then
      row+=" | n/a"
      continue
    fi
    st=${status[$col/$s]:-MISSING}
    status[$col/$s]=$st
    row+=" | $st"
    if [[ $st == PASS || $st == WARN ]]; then
      passed[$col]=$((${passed[$col]:-0} + 1))
    else
      failed[$col]=$((${failed[$col]:-0} + 1))
    fi
    [[ $st == WARN ]] && warned[$col]=$((${warned[$col]:-0} + 1))
  done
  printf '%s |\n' "$row"

  dst=${status[direct/$s]}
  [[ $dst == PASS || $dst == WARN ]] || direct_failures+=("$s: ${detail[direct/$s]:-no result}")
  # A regression: the gateway did worse than the fixture on its own.
  if [[ $dst == PASS || $dst == WARN ]]; then
    for col in gw-stdio gw-http; do
      [[ " ${columns[*]} " == *" $col "* ]] || continue
      if (($(rank "${status[$col/$s]}") > $(rank "$dst"))); then
        regressions+=("$col $s: ${status[$col/$s]} (direct $dst) ${detail[$col/$s]:-no result}")
      fi
    done
  fi
done

printf '\n'
declare -A label=([direct]=direct [gw-stdio]=gateway-stdio [gw-http]=gateway-http)
for col in "${columns[@]}"; do
  printf '%s: %d passed, %d failed\n' "${label[$col]}" "${passed[$col]:-0}" "${failed[$col]:-0}"
done
for col in "${columns[@]}"; do
  if ((${warned[$col]:-0} > 0)); then
    printf '(%s: %d of the passed had warnings)\n' "${label[$col]}" "${warned[$col]}"
  fi
done

# Warnings directly are worth seeing (they bound what the gateway can show).
for s in "${scenarios[@]}"; do
  if [[ ${status[direct/$s]} == WARN ]]; then
    printf 'direct warning  %s: %s\n' "$s" "${detail[direct/$s]}"
  fi
done

rc=0
if ((${#direct_failures[@]} > 0)); then
  printf '\nFailing directly (fixture or suite problem):\n'
  printf '  %s\n' "${direct_failures[@]}"
  rc=1
fi
if ((${#regressions[@]} > 0)); then
  printf '\nWorse through the gateway than directly:\n'
  printf '  %s\n' "${regressions[@]}"
  rc=1
fi
if [[ -n $gateway_error ]]; then
  printf '\nGateway not tested: %s\n' "$gateway_error"
  ((rc != 0)) || rc=2
fi
exit "$rc"
