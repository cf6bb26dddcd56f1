#!/usr/bin/env bash
# Dashboard benchmark: every page of /ui/ on the seeded shop (1,000,000 contacts and
# 50,000 products by default, as bench/recommend.sh seeds it), asked ROUNDS times one
# after the other, signed in with the admin token. Prints each page's server time (its
# Server-Timing header: from the request's arrival to its answer) at the median and the
# slowest round, and the time curl saw, beside the 100 ms aim.
#
#   bench/dashboard.sh
#   CONTACTS=100000 bench/dashboard.sh      # a quicker look
#
# Needs python3; changes nothing kept.
set -euo pipefail
cd "$(dirname "$0")/.."

CONTACTS=${CONTACTS:-1000000}
PRODUCTS=${PRODUCTS:-50000}
ROUNDS=${ROUNDS:-20}
ADDR=127.0.0.1:18083

# shellcheck source=bench/shop.sh
source bench/shop.sh

base="http://$ADDR"
jar="$work/cookies"
curl -sf -o /dev/null -c "$jar" -d "key=bench" "$base/ui/sign-in"
csrf=$(curl -sf -b "$jar" "$base/ui/sites/BENCH/contacts" |
  python3 -c 'import re, sys; print(re.search(r"name=\"csrf\" value=\"([0-9a-f]+)\"", sys.stdin.read()).group(1))')

# One request: "<server ms> <total ms> <status>".
ask() {
  local headers="$work/headers"
  local out
  out=$(curl -s -o /dev/null -D "$headers" -b "$jar" -w '%{http_code} %{time_total}' "$@")
  local server
  server=$(sed -n 's/^server-timing: page;dur=\([0-9.]*\).*/\1/ip' "$headers" | tr -d '\r')
  read -r status total <<<"$out"
  echo "${server:-nan} $(python3 -c "print(float('$total') * 1000)") $status"
}

pages=(
  "the sites|$base/ui/"
  "overview|$base/ui/sites/BENCH/overview"
  "overview, live part|$base/ui/sites/BENCH/overview/live"
  "blocks|$base/ui/sites/BENCH/blocks"
  "a block, its variants compared|$base/ui/sites/BENCH/blocks/home"
  "a block's preview for a product|-d product=p17&csrf=$csrf $base/ui/sites/BENCH/blocks/home/preview"
  "a block's preview for a contact|-d by=sc&who=c123456&csrf=$csrf $base/ui/sites/BENCH/blocks/home/preview"
  "triggers|$base/ui/sites/BENCH/triggers"
  "a contact, by cookie|-d by=sc&value=c123456&csrf=$csrf $base/ui/sites/BENCH/contacts"
  "catalogue and searches, a product|$base/ui/sites/BENCH/catalogue?product=p17"
)

echo "page | server ms, median | server ms, slowest | curl ms, median | status"
for entry in "${pages[@]}"; do
  name=${entry%%|*}
  target=${entry#*|}
  samples=()
  for _ in $(seq "$ROUNDS"); do
    # shellcheck disable=SC2086
    samples+=("$(ask $target)")
  done
  python3 - "$name" "${samples[@]}" <<'PY'
import statistics, sys
name, samples = sys.argv[1], [s.split() for s in sys.argv[2:]]
server = sorted(float(s[0]) for s in samples)
total = sorted(float(s[1]) for s in samples)
statuses = sorted(set(s[2] for s in samples))
print(f"{name} | {statistics.median(server):.2f} | {server[-1]:.2f} | "
      f"{statistics.median(total):.2f} | {','.join(statuses)}")
PY
done
rss=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$server/status")
echo "server memory: $rss MiB; aim: every page under 100 ms of server time"
