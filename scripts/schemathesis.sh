#!/usr/bin/env bash
# Runs schemathesis (PyPI, pinned in fixtures/requirements.txt) against the admin API of a
# running gateway, from the OpenAPI document the gateway serves at
# /admin/api/v1/openapi.json: every operation, with generated valid and invalid requests
# (and stateful sequences through the document's links), checking that
#
#   - no answer is a 5xx (not_a_server_error),
#   - every status code is one the document lists for the operation
#     (status_code_conformance),
#   - content types and bodies match the document's schemas (content_type_conformance,
#     response_schema_conformance, response_headers_conformance),
#
# and that the gateway neither panicked nor died meanwhile.
#
# The gateway runs on 127.0.0.1:0 with a temporary state directory, the recorder fixture
# as a stdio server `rec` behind a policy file, a server `broken` whose command exits at once
# (its tools cannot be listed: 502), a config grant, and TOOLGATE_ADMIN_TOKEN set.
#
# usage: scripts/schemathesis.sh
#
# Environment:
#   TOOLGATE_BIN            gateway binary (default target/debug/toolgate, built with
#                           `cargo build -p toolgate` when missing; an explicitly given
#                           path is never built)
#   SCHEMATHESIS_EXAMPLES   max examples per operation (default 100)
#   SCHEMATHESIS_SEED       hypothesis seed (default 20261126; `random` for a new one)
#   SCHEMATHESIS_CHECKS     checks to run (default the list above)
#   SCHEMATHESIS_TIMEOUT    seconds allowed for the schemathesis run (default 150)
#   SCHEMATHESIS_ARGS       more arguments for `schemathesis run`, split on spaces (to
#                           investigate, e.g. `--exclude-path /audit --continue-on-failure`)
#   STARTUP_TIMEOUT         seconds to wait for the gateway's "listening on" (default 30)
#   SCHEMATHESIS_KEEP=1     keep the temp dir (always kept when something fails)
#
# Exit status: 0 all checks passed; 1 schemathesis found failures, or the gateway panicked
# or died; 2 the gateway could not be built or started, or schemathesis is not installed.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-100}
SEED=${SCHEMATHESIS_SEED:-20261126}
CHECKS=${SCHEMATHESIS_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance}
RUN_TIMEOUT=${SCHEMATHESIS_TIMEOUT:-150}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-30}

log() { printf '[schemathesis] %s\n' "$*" >&2; }

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 0
fi
(($# == 0)) || {
  log "no arguments are taken (see --help)"
  exit 64
}

# The schemathesis of the python3 that fixtures/requirements.txt was installed into.
st() {
  python3 -c 'import sys; from schemathesis.cli import schemathesis; sys.argv[0] = "schemathesis"; sys.exit(schemathesis())' "$@"
}
if ! version=$(st --version 2>/dev/null); then
  log "error: schemathesis is not installed for python3: pip install -r fixtures/requirements.txt"
  exit 2
fi
log "$version"

if [[ -n ${TOOLGATE_BIN:-} ]]; then
  [[ -x $TOOLGATE_BIN ]] || {
    log "error: TOOLGATE_BIN=$TOOLGATE_BIN is not an executable"
    exit 2
  }
else
  TOOLGATE_BIN=$ROOT/target/debug/toolgate
  if [[ ! -x $TOOLGATE_BIN ]]; then
    log "building toolgate (cargo build -p toolgate)"
    (cd "$ROOT" && cargo build -p toolgate) || exit 2
  fi
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/toolgate-schemathesis.XXXXXX")
GW_PID=
failed=1
# descendants PID: every live descendant of PID (the gateway's stdio servers).
descendants() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}
cleanup() {
  if [[ -n $GW_PID ]] && kill -0 "$GW_PID" 2>/dev/null; then
    local family
    family=$(descendants "$GW_PID")
    # SIGTERM: the gateway ends its sessions and their servers; SIGKILL if it does not exit.
    kill -TERM "$GW_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$GW_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    # Whatever it left behind (each stdio server runs in a process group of its own).
    for p in $family; do
      kill -KILL -- "-$p" 2>/dev/null || true
      kill -KILL "$p" 2>/dev/null || true
    done
  fi
  if ((failed)) || [[ ${SCHEMATHESIS_KEEP:-0} == 1 ]]; then
    log "kept $TMP (gateway log: $TMP/gateway.log, reports: $TMP/report)"
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A token nobody else knows, for this run only.
ADMIN_TOKEN=tga_schemathesis_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
AGENT_TOKEN=tg_schemathesis_agent_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

cat >"$TMP/policy.json" <<'EOF'
{"version": "1", "default": "deny", "tools": {"echo": {}, "pid": {}}}
EOF
cat >"$TMP/toolgate.toml" <<EOF
listen = "127.0.0.1:0"
state_dir = "$TMP/state"

[servers.rec]
command = "python3"
args = ["$ROOT/fixtures/servers/recorder.py"]
env = { RECORD_FILE = "$TMP/rec.jsonl" }
policy = "policy.json"

[servers.broken]
command = "python3"
args = ["-c", "import sys; sys.exit(3)"]

[grants.agent]
server = "rec"
token_env = "AGENT_TOKEN"
EOF

# The stateful phase finds server names through GET /servers; PUT has no link to them, so
# it gets the real one (the coverage phase still tries unknown names).
cat >"$TMP/schemathesis.toml" <<EOF
hooks = "$TMP/hooks.py"

[[operations]]
include-operation-id = "applyPolicy"
parameters = { "path.server" = "rec" }
EOF
# Objects generated from the document's schemas are almost never valid policies (422) or
# grants of a configured server (404): valid ones are mixed in, so that the success answers
# (201 with the stored version, or the new grant and its token; then rotate, revoke and the
# GETs of what was stored, through the stateful links) are checked against the document too.
cat >"$TMP/hooks.py" <<'EOF'
import schemathesis
from hypothesis import strategies as st

POLICIES = [
    {"version": "1", "default": "allow"},
    {"version": "1", "default": "deny", "tools": {"echo": {}, "pid": {}}},
    {"version": "1", "default": "deny", "tools": {"echo": {"deny_if": [
        {"conditions": [{"path": "args.message", "op": "eq", "value": "x"}], "on_deny": "no"}]}}},
]


@schemathesis.hook.apply_to(operation_id="applyPolicy")
def flatmap_body(context, body):
    return st.one_of(st.just(body), st.sampled_from(POLICIES))


@schemathesis.hook.apply_to(operation_id="createGrant")
def flatmap_body(context, body):  # noqa: F811 (one hook per operation)
    valid = st.fixed_dictionaries({
        "server": st.just("rec"),
        "label": st.text(min_size=1, max_size=20).filter(lambda s: s.isprintable() and s.strip()),
        "policy": st.one_of(st.none(), st.sampled_from(POLICIES)),
    })
    return st.one_of(st.just(body), valid)
EOF

log "starting $TOOLGATE_BIN"
(
  cd "$TMP"
  exec env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY -u all_proxy -u ALL_PROXY \
    TOOLGATE_ADMIN_TOKEN="$ADMIN_TOKEN" AGENT_TOKEN="$AGENT_TOKEN" NO_COLOR=1 TOOLGATE_LOG=info \
    "$TOOLGATE_BIN" serve --config "$TMP/toolgate.toml"
) >"$TMP/gateway.stdout" 2>"$TMP/gateway.log" &
GW_PID=$!

PORT=
for _ in $(seq 1 $((STARTUP_TIMEOUT * 10))); do
  PORT=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$TMP/gateway.log" | head -n1)
  [[ -n $PORT ]] && break
  kill -0 "$GW_PID" 2>/dev/null || break
  sleep 0.1
done
if [[ -z $PORT ]]; then
  log "error: the gateway did not start listening; its log:"
  cat "$TMP/gateway.log" >&2
  exit 2
fi
BASE=http://127.0.0.1:$PORT
log "gateway listening on $BASE (pid $GW_PID)"

# Something stored before the run, so that the GETs of policies and versions find them.
seed() {
  if ! python3 - "$1" "$BASE/admin/api/v1$2" "$3" "$ADMIN_TOKEN" <<'PY'; then
import sys, urllib.request
method, url, body, token = sys.argv[1:]
req = urllib.request.Request(url, data=body.encode(), method=method, headers={
    "Authorization": "Bearer " + token, "Content-Type": "application/json"})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(req, timeout=30) as r:
        sys.exit(0 if r.status in (200, 201) else 1)
except Exception as e:
    print(f"{method} {url}: {e}: {getattr(e, 'read', lambda: b'')().decode(errors='replace')}", file=sys.stderr)
    sys.exit(1)
PY
    log "error: seeding $1 $2 failed"
    exit 2
  fi
}
seed PUT /servers/rec/policy '{"version": "1", "default": "deny", "tools": {"echo": {}}}'
seed PUT /servers/rec/policy '{"version": "1", "default": "allow"}'
seed PUT '/servers/rec/policy?grant=config:agent' '{"version": "1", "default": "deny"}'
seed POST /grants '{"server": "rec", "label": "seeded", "policy": {"version": "1", "default": "allow"}}'

args=(
  run "$BASE/admin/api/v1/openapi.json"
  --header "Authorization: Bearer $ADMIN_TOKEN"
  --checks "$CHECKS"
  --max-examples "$EXAMPLES"
  --workers 2
  --request-timeout 30
  --report junit
  --report-dir "$TMP/report"
  --output-truncate false
)
if [[ $SEED != random ]]; then
  args+=(--seed "$SEED")
fi
if [[ -n ${SCHEMATHESIS_ARGS:-} ]]; then
  read -r -a extra <<<"$SCHEMATHESIS_ARGS"
  args+=("${extra[@]}")
fi
log "schemathesis ${args[*]/$ADMIN_TOKEN/<admin token>}"
set +e
(cd "$TMP" && timeout --kill-after=10 "$RUN_TIMEOUT" \
  python3 -c 'import sys; from schemathesis.cli import schemathesis; sys.argv[0] = "schemathesis"; sys.exit(schemathesis())' \
  --config-file "$TMP/schemathesis.toml" "${args[@]}")
st_status=$?
set -e

problems=()
case $st_status in
  0) ;;
  124 | 137) problems+=("schemathesis did not finish within ${RUN_TIMEOUT}s") ;;
  *) problems+=("schemathesis found failures (exit $st_status; see its report above)") ;;
esac
if ! kill -0 "$GW_PID" 2>/dev/null; then
  problems+=("the gateway died during the run")
fi
if grep -q 'panicked' "$TMP/gateway.log"; then
  problems+=("the gateway panicked: $(grep -m1 'panicked' "$TMP/gateway.log")")
fi
if ((${#problems[@]})); then
  log "FAIL"
  for p in "${problems[@]}"; do log "  - $p"; done
  log "last lines of the gateway log:"
  tail -n 30 "$TMP/gateway.log" >&2
  exit 1
fi
failed=0
log "PASS: no 5xx, every status, content type and body as documented (seed $SEED, $EXAMPLES examples per operation)"
