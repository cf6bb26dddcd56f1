#!/usr/bin/env bash
# The whole HTTP API against its own OpenAPI document: schemathesis (PyPI) sends generated
# requests to every route of a real spoor for a bounded time. Any 5xx fails, and so does
# any answer its document does not describe (status code, content type, body schema,
# headers). The tracker is lenient on purpose (every variant real clients send is taken),
# so requests the schema would forbid being accepted is not a failure here. The NDJSON
# import is left out (schemathesis cannot write NDJSON); crates/cli/tests/lifecycle.rs
# imports through it.
#
# Two passes: first without a key (what the open internet reaches: public answers, and
# 401s everywhere else), on the server as it starts; then with the admin token (every
# route's work). Both run; either failing fails the script.
#
#   tests/openapi.sh                 # 60 s and 20 s of generated requests
#   MAX_TIME=600 ANONYMOUS_TIME=120 tests/openapi.sh    # longer
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_TIME=${MAX_TIME:-60}
ANONYMOUS_TIME=${ANONYMOUS_TIME:-20}
ADDR=127.0.0.1:18190
TOKEN=openapi-test-admin-token

schemathesis --version 2>/dev/null | grep -q "4.32.5" ||
  python3 -m pip install -q "schemathesis==4.32.5"
cargo build -q -p spoor

work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The site the document's examples name; loopback webhooks allowed (schemathesis may set
# any); no slowing of refused keys, which the generated requests send by the thousand.
SPOOR_LOG=warn target/debug/spoor serve --listen "$ADDR" --data "$work/data" \
  --site 8A412DC --admin-token "$TOKEN" --allow-private-targets \
  --refused-keys-per-minute 0 2>"$work/server.log" &
pid=$!
for _ in $(seq 100); do
  kill -0 "$pid" 2>/dev/null || { cat "$work/server.log"; echo "spoor did not start" >&2; exit 1; }
  curl -sf "http://$ADDR/healthz" >/dev/null && break
  sleep 0.1
done
curl -sf "http://$ADDR/healthz" >/dev/null || { echo "spoor did not answer on $ADDR" >&2; exit 1; }

pass() {
  schemathesis run "http://$ADDR/openapi.json" "$@" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --request-timeout 10 --continue-on-failure \
    --exclude-path /admin/v1/events/import \
    --suppress-health-check all --seed 20261206
}
failed=0
pass --max-time "$ANONYMOUS_TIME" || failed=1
pass --header "Authorization: Bearer $TOKEN" --max-time "$MAX_TIME" || failed=1
exit "$failed"
