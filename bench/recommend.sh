#!/usr/bin/env bash
# Recommendations benchmark: a synthetic shop (50,000 products, 1,000,000 contacts by
# default) seeded into a fresh data directory, served by spoor, and loaded by wrk on
# loopback with a mix of the questions shop pages ask. Prints requests/s, latency
# percentiles and the server's memory beside the goals; changes nothing kept.
#
#   bench/recommend.sh
#   CONTACTS=100000 DURATION=10s bench/recommend.sh     # a quicker look
#
# Each number of connections in CONNECTIONS is a load level: few connections show the
# latency of a loaded server, many show its saturation throughput (and queueing).
#
# Needs wrk (installed with apt-get when missing) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

CONTACTS=${CONTACTS:-1000000}
PRODUCTS=${PRODUCTS:-50000}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-16 32 64}
DURATION=${DURATION:-20s}
ROUNDS=${ROUNDS:-2}
ADDR=127.0.0.1:18082

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release -q -p spoor
cargo build --release -q -p spoor --example seed_shop

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "seeding $CONTACTS contacts and $PRODUCTS products..."
seed=$(target/release/examples/seed_shop "$work/data" "$CONTACTS" "$PRODUCTS")
echo "  $seed"

started=$(date +%s.%N)
SPOOR_LOG=warn target/release/spoor serve --listen "$ADDR" --data "$work/data" \
  --admin-token bench 2>"$work/spoor.log" &
pids+=($!)
server=$!
for attempt in $(seq 600); do
  curl -sf -o /dev/null "http://$ADDR/readyz" && break
  [ "$attempt" -lt 600 ] || { echo "spoor did not start:"; cat "$work/spoor.log"; exit 1; }
  sleep 0.1
done
ready=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$started" "$(date +%s.%N)")
echo "  ready in $ready s (state and index from the seed's snapshots)"

# wrk is one client: without this, the per-client rate limit would answer it 429.
curl -sf -o /dev/null -X PUT "http://$ADDR/admin/v1/sites/BENCH/settings" \
  -H 'Authorization: Bearer bench' -d '{"rateLimit": null}'

# A block with two variants, as a home page would use.
curl -sf -o /dev/null -X PUT "http://$ADDR/admin/v1/sites/BENCH/blocks/home" \
  -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' \
  -d '{"algorithm": "personal,popular", "size": 8,
       "variants": [{"id": "a", "share": 1}, {"id": "b", "share": 1, "algorithm": "bestsellers,popular"}]}'

cat >"$work/mix.lua" <<LUA
-- The pages of a shop, roughly as often as visitors see them.
local contacts, products, categories = $CONTACTS, $PRODUCTS, 500
local base = "/api/v2/recommendations?siteId=BENCH&limit=10&"
function init(args)
  math.randomseed(os.time() + (tonumber(args[1]) or 0) * 7919)
end
local function product() return "p" .. math.random(0, products - 1) end
local function visitor() return "c" .. math.random(0, contacts - 1) end
function request()
  local r = math.random(100)
  local q
  if r <= 35 then q = "algorithm=similar,popular&productKey=" .. product()
  elseif r <= 55 then q = "algorithm=personal,popular&sc=" .. visitor()
  elseif r <= 65 then q = "algorithm=popular"
  elseif r <= 75 then q = "algorithm=popular-in-category&categoryKey=c" .. math.random(0, categories - 1)
  elseif r <= 80 then q = "algorithm=new-arrivals"
  elseif r <= 90 then q = "algorithm=bought-together,similar&productKey=" .. product()
  else q = "block=home&sc=" .. visitor() end
  return wrk.format("GET", base .. q)
end
LUA

# load DURATION CONNECTIONS: prints "<requests/s> <p50 ms> <p99 ms> <non-2xx> <socket errors>".
load() {
  local out
  out=$(wrk -t"$THREADS" -c"$2" -d"$1" --latency -s "$work/mix.lua" "http://$ADDR/" -- "$RANDOM")
  echo "$out" >>"$work/wrk.txt"
  python3 - "$out" <<'PY'
import re, sys
text = sys.argv[1]
def ms(label):
    value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)\b", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: .*", text)
print(f"{rps:.0f} {ms(50):.2f} {ms(99):.2f} {bad.group(1) if bad else 0} {errors.group(0).replace(' ', '_') if errors else '-'}")
PY
}

echo "warm-up..."
load 5s 32 >/dev/null
results=()
for connections in $CONNECTIONS; do
  for round in $(seq "$ROUNDS"); do
    read -r rps p50 p99 bad errors <<<"$(load "$DURATION" "$connections")"
    echo "$connections connections, round $round: $rps req/s  p50 $p50 ms  p99 $p99 ms  non-2xx $bad  $errors"
    results+=("$connections:$rps:$p50:$p99")
  done
done
rss=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$server/status")

python3 - "$rss" "$CONTACTS" "$PRODUCTS" "${results[@]}" <<'PY'
import statistics, sys
from collections import defaultdict
rss, contacts, products = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
runs = defaultdict(list)
for result in sys.argv[4:]:
    connections, rps, p50, p99 = result.split(":")
    runs[int(connections)].append((float(rps), float(p50), float(p99)))
print()
print(f"shop: {products:,} products, {contacts:,} contacts; server memory {rss:,} MiB resident")
print("goal: at least 10,000 req/s with p99 under 5 ms")
print("connections   req/s    p50 ms   p99 ms   goal")
for connections, rounds in sorted(runs.items()):
    rps = statistics.mean(r[0] for r in rounds)
    p50 = statistics.mean(r[1] for r in rounds)
    p99 = statistics.mean(r[2] for r in rounds)
    met = "met" if rps >= 10_000 and p99 < 5 else "not met"
    print(f"{connections:>11} {rps:>8,.0f} {p50:>8.2f} {p99:>8.2f}   {met}")
PY
