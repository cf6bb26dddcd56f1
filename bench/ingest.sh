#!/usr/bin/env bash
# Ingest benchmark: durable spoor against a bare axum server that parses the same body
# without storing it, loaded in turn by wrk on loopback, plus the disk's fdatasync latency
# measured in the same run. Prints every figure and the comparison; changes nothing kept.
#
#   bench/ingest.sh                 # 2 rounds of 15 s per server
#   ROUNDS=3 DURATION=20s bench/ingest.sh
#
# Needs wrk (installed with apt-get when missing) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-256}
DURATION=${DURATION:-15s}
ROUNDS=${ROUNDS:-2}
BARE_ADDR=127.0.0.1:18081
SPOOR_ADDR=127.0.0.1:18080
SPEC=../shared/spec/yespo-tracker-rest-api.md

cargo build --release -q -p spoor
cargo build --release -q -p spoor-server --example bare_server
cargo build --release -q -p spoor-log --example fsync_probe

# shellcheck source=bench/common.sh
source bench/common.sh

product_page_load "$SPEC" "$work/load.lua"

target/release/examples/bare_server "$BARE_ADDR" 2>"$work/bare.log" &
bare_pid=$!
pids+=($!)
SPOOR_LOG=warn target/release/spoor serve --listen "$SPOOR_ADDR" --data "$work/data" \
  --site 8A412DC --admin-token bench 2>"$work/spoor.log" &
spoor_pid=$!
pids+=($!)
for addr in "$BARE_ADDR" "$SPOOR_ADDR"; do
  for attempt in $(seq 100); do
    curl -s -o /dev/null "http://$addr/" && break
    [ "$attempt" -lt 100 ] || { echo "nothing answers on $addr:"; cat "$work"/*.log; exit 1; }
    sleep 0.1
  done
done

# CPU time (user + system) a process has used so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS_PER_SECOND=$(getconf CLK_TCK)

# load DURATION ADDRESS TAG PID: prints "<requests/s> <p99 ms> <server CPU us per request>
# <non-2xx>" for one wrk run. TAG makes this run's bodies unique; PID is the server's.
load() {
  local out before after
  before=$(cpu_ticks "$4")
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$1" --latency -s "$work/load.lua" \
    "http://$2/api/v2" -- "$3")
  after=$(cpu_ticks "$4")
  echo "$out" >>"$work/wrk.txt"
  python3 - "$out" "$((after - before))" "$TICKS_PER_SECOND" <<'PY'
import re, sys
text = sys.argv[1]
requests = int(re.search(r"(\d+) requests in", text).group(1))
cpu_us = int(sys.argv[2]) / int(sys.argv[3]) * 1e6 / max(requests, 1)
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
value, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", text).groups()
p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: .*", text)
print(f"{rps:.0f} {p99:.2f} {cpu_us:.1f} {bad.group(1) if bad else 0} {errors.group(0) if errors else ''}")
PY
}

echo "warm-up..."
load 3s "$BARE_ADDR" warm "$bare_pid" >/dev/null
load 3s "$SPOOR_ADDR" warm "$spoor_pid" >/dev/null

# The state's lag behind the log, sampled every second while spoor is loaded. Each sample
# starts a curl (~8 ms of CPU on the cores both servers share), so the bare server's rounds
# get the same side load: a curl a second at its (absent) /metrics, the answer discarded.
sample_lag() {
  while :; do
    curl -s "http://$1/metrics" | awk '/^spoor_state_lag_records / {print $2}' >>"$work/lag.txt"
    sleep 1
  done
}

bare_rps=(); bare_p99=(); bare_cpu=(); spoor_rps=(); spoor_p99=(); spoor_cpu=()
for round in $(seq "$ROUNDS"); do
  sample_lag "$BARE_ADDR" &
  sampler=$!
  read -r rps p99 cpu bad rest <<<"$(load "$DURATION" "$BARE_ADDR" "round$round" "$bare_pid")"
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  echo "round $round  bare : $rps req/s  p99 $p99 ms  CPU $cpu us/req  non-2xx $bad $rest"
  bare_rps+=("$rps"); bare_p99+=("$p99"); bare_cpu+=("$cpu")
  sample_lag "$SPOOR_ADDR" &
  sampler=$!
  read -r rps p99 cpu bad rest <<<"$(load "$DURATION" "$SPOOR_ADDR" "round$round" "$spoor_pid")"
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  echo "round $round  spoor: $rps req/s  p99 $p99 ms  CPU $cpu us/req  non-2xx $bad $rest"
  spoor_rps+=("$rps"); spoor_p99+=("$p99"); spoor_cpu+=("$cpu")
done

fsync=$(target/release/examples/fsync_probe "$work" 1000)
groups=$(curl -s "http://$SPOOR_ADDR/metrics" | python3 -c '
import re, sys
text = sys.stdin.read()
dup = re.search(r"^spoor_events_accepted_total\{event=\"ProductPage\",outcome=\"duplicate\"\} (\S+)", text, re.M)
assert dup is None, "the load repeated bodies: spoor counted duplicates, so the figures are not of storing"

count = float(re.search(r"^spoor_log_group_commit_records_count (\S+)", text, re.M).group(1))
total = float(re.search(r"^spoor_log_group_commit_records_sum (\S+)", text, re.M).group(1))
print(f"{count:.0f} fsyncs, {total / count:.1f} records per fsync on average")')

lag=$(sort -n "$work/lag.txt" | awk 'NF {n++; a[n]=$1} END {if (n) printf "%d records at most, %d at the median, over %d samples", a[n], a[int((n+1)/2)], n; else print "no samples"}')

python3 - "${bare_rps[*]}" "${bare_p99[*]}" "${spoor_rps[*]}" "${spoor_p99[*]}" "${bare_cpu[*]}" "${spoor_cpu[*]}" "$fsync" "$groups" "$lag" <<'PY'
import json, statistics, sys
bare_rps, bare_p99, spoor_rps, spoor_p99, bare_cpu, spoor_cpu = (
    [float(x) for x in a.split()] for a in sys.argv[1:7])
fsync, groups, lag = json.loads(sys.argv[7]), sys.argv[8], sys.argv[9]
b, s = statistics.mean(bare_rps), statistics.mean(spoor_rps)
bp, sp = statistics.mean(bare_p99), statistics.mean(spoor_p99)
print()
print(f"bare server   : {b:,.0f} req/s, p99 {bp:.2f} ms")
print(f"spoor (fsync) : {s:,.0f} req/s, p99 {sp:.2f} ms")
print(f"throughput ratio spoor/bare: {s / b:.1%}   (goal >= 70%)")
print(f"p99 difference: {sp - bp:+.2f} ms          (goal <= +10 ms)")
print(f"server CPU per request: bare {statistics.mean(bare_cpu):.1f} us, "
      f"spoor {statistics.mean(spoor_cpu):.1f} us (user + system, all threads)")
print(f"disk fdatasync: p50 {fsync['fdatasync_ms_p50']:.2f} ms, p99 {fsync['fdatasync_ms_p99']:.2f} ms")
print(f"group commit  : {groups}")
print(f"state lag     : {lag} (log records not yet applied to contacts and products)")
PY
