#!/usr/bin/env bash
# Recommendation latency while state snapshots are saved, beside the same load without
# one, in the same run: a synthetic shop (1,000,000 contacts by default) seeded and
# served as in bench/recommend.sh, loaded by wrk with the shop's mix of questions, in
# rounds that alternate a quiet phase and one in which snapshots are saved back to back
# (`POST /admin/v1/state/snapshot`). Prints each phase's figures, each snapshot's lock
# hold (the state's copy) and whole save, and the comparison; changes nothing kept.
#
#   bench/snapshot.sh
#   CONTACTS=100000 DURATION=10s bench/snapshot.sh     # a quicker look
#
# Needs wrk (installed with apt-get when missing) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

CONTACTS=${CONTACTS:-1000000}
PRODUCTS=${PRODUCTS:-50000}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-16}
DURATION=${DURATION:-20s}
ROUNDS=${ROUNDS:-2}
ADDR=127.0.0.1:18083

# shellcheck source=bench/shop.sh
source bench/shop.sh

# Saves snapshots back to back until $work/stop exists, one answer per line.
save_snapshots() {
  while [ ! -e "$work/stop" ]; do
    curl -sf -X POST -H 'Authorization: Bearer bench' \
      "http://$ADDR/admin/v1/state/snapshot" >>"$work/snapshots.ndjson" || true
    echo >>"$work/snapshots.ndjson"
  done
}

echo "warm-up..."
load 5s 32 >/dev/null
results=()
for round in $(seq "$ROUNDS"); do
  read -r rps p50 p99 bad errors <<<"$(load "$DURATION" "$CONNECTIONS")"
  echo "round $round, no snapshot:        $rps req/s  p50 $p50 ms  p99 $p99 ms  non-2xx $bad  $errors"
  results+=("quiet:$rps:$p50:$p99")

  rm -f "$work/stop"
  save_snapshots &
  saver=$!
  read -r rps p50 p99 bad errors <<<"$(load "$DURATION" "$CONNECTIONS")"
  touch "$work/stop"
  wait "$saver"
  echo "round $round, snapshots saving:   $rps req/s  p50 $p50 ms  p99 $p99 ms  non-2xx $bad  $errors"
  results+=("snapshots:$rps:$p50:$p99")
done
rss=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$server/status")

python3 - "$rss" "$CONTACTS" "$work/snapshots.ndjson" "${results[@]}" <<'PY'
import json, statistics, sys
from collections import defaultdict
rss, contacts, saved_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
runs = defaultdict(list)
for result in sys.argv[4:]:
    phase, rps, p50, p99 = result.split(":")
    runs[phase].append((float(rps), float(p50), float(p99)))
saved = [json.loads(line) for line in open(saved_path) if line.strip()]
print()
print(f"shop: {contacts:,} contacts; server memory {rss:,} MiB resident at the end")
if saved:
    copy = [s["copySeconds"] for s in saved]
    whole = [s["seconds"] for s in saved]
    print(f"snapshots saved: {len(saved)}; state lock held to copy: mean {statistics.mean(copy):.2f} s, "
          f"max {max(copy):.2f} s; whole save: mean {statistics.mean(whole):.2f} s")
print("phase          req/s    p50 ms   p99 ms")
for phase in ("quiet", "snapshots"):
    rounds = runs[phase]
    print(f"{phase:<10} {statistics.mean(r[0] for r in rounds):>9,.0f} "
          f"{statistics.mean(r[1] for r in rounds):>8.2f} {statistics.mean(r[2] for r in rounds):>8.2f}")
quiet = statistics.mean(r[2] for r in runs["quiet"])
busy = statistics.mean(r[2] for r in runs["snapshots"])
print(f"p99 while snapshots are saved: {busy:.2f} ms against {quiet:.2f} ms without ({busy / quiet:.2f}x)")
PY
