#!/usr/bin/env bash
# The Kafka log against the embedded one, in the same run: spoor's CPU per event on each
# (the spoor process alone; the broker's own CPU is reported apart), the latency an
# event's acknowledgement takes (p50/p99 with few clients, where it is the round trip and
# not queueing), and how fast a fresh node catches up from the topic.
#
#   bench/kafka.sh                      # 15 s of load per log
#   DURATION=30s EVENTS=200000 bench/kafka.sh
#
# The broker is Tansu (`tansu` on PATH: cargo install tansu --locked --features libsql),
# its topics in an SQLite file on this machine's disk. Needs wrk, python3 and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15s}
CONNECTIONS=${CONNECTIONS:-64}
FEW=${FEW:-4}
SPEC=../shared/spec/yespo-tracker-rest-api.md
FILE_ADDR=127.0.0.1:18090
KAFKA_ADDR=127.0.0.1:18091
FRESH_ADDR=127.0.0.1:18092
BROKER_PORT=19092

command -v tansu >/dev/null || { echo "no tansu on PATH: cargo install tansu --locked --features libsql"; exit 1; }
cargo build --release -q -p spoor

# shellcheck source=bench/common.sh
source bench/common.sh

product_page_load "$SPEC" "$work/load.lua"

mkdir -p "$work/broker"
# Tansu reads the SQLite file's path relative to its working directory.
(cd "$work/broker" && exec env RUST_LOG=warn tansu broker \
  --kafka-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
  --storage-engine "sqlite://tansu.db" >"$work/broker.log" 2>&1) &
broker_pid=$!
pids+=($!)
for attempt in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null && break
  [ "$attempt" -lt 100 ] || { echo "tansu did not start:"; cat "$work/broker.log"; exit 1; }
  sleep 0.1
done

kafka=(--log kafka --kafka-brokers "127.0.0.1:$BROKER_PORT" --kafka-topic bench)
SPOOR_LOG=warn target/release/spoor serve --listen "$FILE_ADDR" --data "$work/file" \
  --site 8A412DC --admin-token bench 2>"$work/file.log" &
file_pid=$!
pids+=($!)
SPOOR_LOG=warn target/release/spoor serve --listen "$KAFKA_ADDR" --data "$work/kafka" \
  --site 8A412DC --admin-token bench "${kafka[@]}" 2>"$work/kafka.log" &
kafka_pid=$!
pids+=($!)
for addr in "$FILE_ADDR" "$KAFKA_ADDR"; do
  ADDR=$addr
  wait_ready 300
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS_PER_SECOND=$(getconf CLK_TCK)

# load CONNECTIONS ADDRESS TAG PID...: "<req/s> <p50 ms> <p99 ms> <CPU us per request of
# each PID> <non-2xx>".
load() {
  local connections=$1 addr=$2 tag=$3
  shift 3
  local before=() after=() out
  for pid in "$@"; do before+=("$(cpu_ticks "$pid")"); done
  out=$(wrk -t2 -c"$connections" -d"$DURATION" --latency -s "$work/load.lua" \
    "http://$addr/api/v2" -- "$tag")
  for pid in "$@"; do after+=("$(cpu_ticks "$pid")"); done
  echo "$out" >>"$work/wrk.txt"
  python3 - "$out" "$TICKS_PER_SECOND" "${before[*]}" "${after[*]}" <<'PY'
import re, sys
text, ticks = sys.argv[1], int(sys.argv[2])
before, after = ([int(x) for x in a.split()] for a in sys.argv[3:5])
requests = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
def ms(label):
    value, unit = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)\b", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
cpu = " ".join(f"{(a - b) / ticks * 1e6 / max(requests, 1):.1f}" for b, a in zip(before, after))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"{rps:.0f} {ms(50):.2f} {ms(99):.2f} {cpu} {bad.group(1) if bad else 0}")
PY
}

echo "warm-up..."
load "$FEW" "$FILE_ADDR" warm "$file_pid" >/dev/null
load "$FEW" "$KAFKA_ADDR" warm "$kafka_pid" "$broker_pid" >/dev/null

read -r f_rps f_p50 f_p99 f_cpu f_bad <<<"$(load "$CONNECTIONS" "$FILE_ADDR" many "$file_pid")"
read -r k_rps k_p50 k_p99 k_cpu b_cpu k_bad <<<"$(load "$CONNECTIONS" "$KAFKA_ADDR" many "$kafka_pid" "$broker_pid")"
read -r fl_rps fl_p50 fl_p99 fl_cpu fl_bad <<<"$(load "$FEW" "$FILE_ADDR" few "$file_pid")"
read -r kl_rps kl_p50 kl_p99 kl_cpu bl_cpu kl_bad <<<"$(load "$FEW" "$KAFKA_ADDR" few "$kafka_pid" "$broker_pid")"

# Catch-up: a fresh node on a new data directory reads the whole topic.
records=$(curl -s -H "Authorization: Bearer bench" "http://$KAFKA_ADDR/api/v1/sites/8A412DC" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["logEnd"])')
started=$(date +%s.%N)
SPOOR_LOG=warn target/release/spoor serve --listen "$FRESH_ADDR" --data "$work/fresh" \
  --site 8A412DC --admin-token bench "${kafka[@]}" 2>"$work/fresh.log" &
pids+=($!)
ADDR=$FRESH_ADDR
wait_ready 1200
while :; do
  applied=$(curl -s -H "Authorization: Bearer bench" "http://$FRESH_ADDR/api/v1/sites/8A412DC" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["statePosition"])')
  [ "$applied" -ge "$records" ] && break
  sleep 0.2
done
finished=$(date +%s.%N)

python3 - <<PY
print()
print(f"embedded log, $CONNECTIONS connections: {float('$f_rps'):,.0f} req/s, p50 $f_p50 ms, p99 $f_p99 ms, spoor CPU $f_cpu us/event, non-2xx $f_bad")
print(f"Kafka log,    $CONNECTIONS connections: {float('$k_rps'):,.0f} req/s, p50 $k_p50 ms, p99 $k_p99 ms, spoor CPU $k_cpu us/event (broker $b_cpu), non-2xx $k_bad")
print(f"embedded log, $FEW connections: p50 $fl_p50 ms, p99 $fl_p99 ms, spoor CPU $fl_cpu us/event")
print(f"Kafka log,    $FEW connections: p50 $kl_p50 ms, p99 $kl_p99 ms, spoor CPU $kl_cpu us/event (broker $bl_cpu)")
print(f"acknowledgement latency the broker adds, $FEW connections: p50 {float('$kl_p50') - float('$fl_p50'):+.2f} ms, p99 {float('$kl_p99') - float('$fl_p99'):+.2f} ms")
print(f"spoor CPU per event, Kafka / embedded, $CONNECTIONS connections: {float('$k_cpu') / float('$f_cpu'):.2f}")
seconds = $finished - $started
print(f"catch-up of a fresh node: $records records in {seconds:.1f} s (start included): {$records / seconds:,.0f} records/s")
PY
