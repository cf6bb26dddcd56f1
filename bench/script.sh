#!/usr/bin/env bash
# The browser script's route (`GET /js/<site>.js`), as shops' pages load it: what one
# answer weighs, and what spoor serves per second when every request is a full answer,
# gzipped (a browser without it in its cache) and when every request is revalidated by
# its ETag (304: a browser whose five minutes have passed), in the same run; then the
# demo's load of the Online Retail shop, when ../shared is beside the repository.
#
#   bench/script.sh
#   DURATION=5s bench/script.sh
#
# Needs wrk (installed with apt-get when missing), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-16}
ADDR=127.0.0.1:18084

cargo build --release -q -p spoor
# shellcheck source=bench/common.sh
source bench/common.sh

SPOOR_LOG=warn target/release/spoor serve --listen "$ADDR" --data "$work/data" \
  --site BENCH --admin-token bench 2>"$work/spoor.log" &
pids+=($!)
wait_ready 300
admin() {
  curl -sf -o /dev/null -X PUT "http://$ADDR/admin/v1/sites/BENCH/$1" \
    -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' -d "$2"
}
# wrk is one client: without this, the per-client rate limit would answer it 429.
admin settings '{"rateLimit": null}'
# Three placed blocks with the script's own template, as a small shop would have.
for page in main product cart; do
  admin "blocks/$page" "{\"algorithm\": \"popular\", \"placement\": {\"pageTypes\": [\"$page\"],
    \"selector\": \"#recs\", \"title\": \"You may also like\"}}"
done

url="http://$ADDR/js/BENCH.js"
plain=$(curl -sf "$url" | wc -c)
gzipped=$(curl -sf -H 'Accept-Encoding: gzip' "$url" | wc -c)
etag=$(curl -sf -D - -o /dev/null "$url" | awk 'tolower($1) == "etag:" {print $2}' | tr -d '\r')
echo "the script with 3 placed blocks: $plain bytes, $gzipped gzipped"

# load HEADER: prints "<requests/s> <p99 ms> <non-2xx>"
load() {
  cat >"$work/headers.lua" <<LUA
wrk.headers["$1"] = '$2'
function done(summary, latency, requests)
  io.write(string.format("RESULT %.0f %.2f\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(99) / 1000))
end
LUA
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/headers.lua" "$url" \
    | awk '/^RESULT/ {print $2, $3}'
}
echo "warm-up..."
load Accept-Encoding gzip >/dev/null
read -r full_rps full_p99 <<<"$(load Accept-Encoding gzip)"
read -r fresh_rps fresh_p99 <<<"$(load If-None-Match "$etag")"
echo "full answers, gzipped:   $full_rps req/s  p99 $full_p99 ms"
echo "revalidated (304):       $fresh_rps req/s  p99 $fresh_p99 ms"
python3 -c "import sys; f, r = float(sys.argv[1]), float(sys.argv[2]); print(f'a full answer costs {r / f:.1f} times a revalidation')" "$full_rps" "$fresh_rps"

data_set=../shared/data/online-retail/online_retail.csv.gz
if [ -e "$data_set" ]; then
  echo "spoor demo on the Online Retail data set..."
  target/release/spoor demo "$data_set" --listen 127.0.0.1:18085 --shop-listen 127.0.0.1:18086 \
    2>/dev/null >"$work/demo.out" &
  demo=$!
  pids+=("$demo")
  for _ in $(seq 600); do
    grep -q "demo shop:" "$work/demo.out" 2>/dev/null && break
    sleep 0.5
  done
  grep "^loaded" "$work/demo.out" || { echo "the demo did not start"; cat "$work/demo.out"; }
fi
