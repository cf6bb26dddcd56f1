#!/usr/bin/env bash
# Item vectors on a running server: Diginetica's training sessions posted as product
# views (a visitor per session, a minute apart) to a fresh spoor, the site tuned through
# the admin API (the tuning learns vectors from its training part and tries their
# weight), then the server's own learning of them: how long it took (from its log) and
# the server's memory before, at its peak, and after. Changes nothing kept.
#
#   bench/vectors.sh                      # ../shared/data/diginetica
#   bench/vectors.sh DIR                  # DIR/train_sessions.txt, one session a line
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/diginetica}
ADDR=127.0.0.1:18086

cargo build --release -q -p spoor
# shellcheck source=bench/common.sh
source bench/common.sh

SPOOR_LOG=info SPOOR_LOG_FORMAT=json target/release/spoor serve --listen "$ADDR" --data "$work/data" --site S1 \
  --admin-token bench 2>"$work/spoor.log" &
pids+=($!)
server=$!
wait_ready 600
rss() { awk -v key="$1" '$1 == key":" {printf "%.0f", $2 / 1024}' "/proc/$server/status"; }

echo "posting the sessions of $DATA/train_sessions.txt..."
python3 - "$DATA/train_sessions.txt" "$ADDR" <<'PY'
import http.client, json, sys, time
path, addr = sys.argv[1], sys.argv[2]
T0 = 1_500_000_000_000
connection = http.client.HTTPConnection(addr)
batch, sessions, views, last = [], 0, 0, 0
started = time.time()

def send():
    global batch, last
    connection.request("POST", "/api/v2/batch", "\n".join(batch),
                       {"Content-Type": "application/x-ndjson"})
    response = connection.getresponse()
    body = response.read()
    assert response.status == 200, body[:300]
    answer = json.loads(body)
    assert answer["rejected"] == 0, [r for r in answer["results"] if "error" in r][:1]
    last = answer["results"][-1]["position"]
    batch = []

with open(path, encoding="utf-8") as lines:
    for line in lines:
        items = line.split()
        if not items:
            continue
        for step, item in enumerate(items):
            batch.append(json.dumps({
                "GeneralInfo": {"eventName": "ProductPage", "siteId": "S1",
                                "datetime": T0 + sessions * 60_000 + step * 1_000,
                                "cookies": {"sc": f"s{sessions}"}},
                "ProductPage": {"Product": {"productKey": item, "price": "1"}}}))
            views += 1
            if len(batch) == 500:
                send()
        sessions += 1
if batch:
    send()
connection.request("GET", f"/api/v1/sites/S1?after={last}")
connection.getresponse().read()
print(f"  {sessions} sessions, {views} views in {time.time() - started:.0f} s")
PY

before=$(rss VmRSS)
echo "tuning (the server's own POST /admin/v1/sites/S1/tuning)..."
started=$(date +%s.%N)
tuned=$(curl -sf -X POST "http://$ADDR/admin/v1/sites/S1/tuning" -H 'Authorization: Bearer bench')
seconds=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$started" "$(date +%s.%N)")
echo "$tuned" | python3 -c "
import json, sys
t = json.load(sys.stdin)
r = t['report']
print(f\"  {sys.argv[1]} s; held-out HR@20 {100 * r['HR@k']:.2f}, MRR@20 {100 * r['MRR@k']:.2f}; embeddingWeight {t['nextItem']['embeddingWeight']}\")
" "$seconds"

weight=$(echo "$tuned" | python3 -c "import json, sys; print(json.load(sys.stdin)['nextItem']['embeddingWeight'])")
if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)" "$weight"; then
  for _ in $(seq 600); do
    grep -q '"item vectors learned"' "$work/spoor.log" && break
    sleep 0.5
  done
  grep -q '"item vectors learned"' "$work/spoor.log" || {
    echo "no vectors learned within 5 minutes; the server's log:"
    grep -v '"level":"DEBUG"' "$work/spoor.log" | tail -20
    exit 1
  }
  grep '"item vectors learned"' "$work/spoor.log" | python3 -c "
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    print(f\"server learned the vectors: {e['sessions']} sessions, {e['products']} products, {e['seconds']} s\")
"
  curl -sf "http://$ADDR/admin/v1/sites/S1/tuning" -H 'Authorization: Bearer bench' |
    python3 -c "import json, sys; print('  GET tuning: itemVectors', json.load(sys.stdin)['itemVectors'])"
else
  echo "the tuning gave the vectors no weight: the server does not learn them"
fi
echo "memory: ${before} MB before the tuning, peak $(rss VmHWM) MB, $(rss VmRSS) MB after"
