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

# shellcheck source=bench/shop.sh
source bench/shop.sh

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
