#!/usr/bin/env bash
# Soak: spoor under mixed traffic at about half of its capacity for an hour, reporting
# every minute, after a warm-up that gives the shop a working state. The traffic: tracker
# events (product pages, carts with an email, purchases, category pages),
# recommendations, and contact reads. Visitors come and go as on a shop: VISITORS are on
# the site at any moment, each for about VISIT_MINUTES (a dozen product pages), and new
# ones keep arriving, so the shop's contacts, orders and sessions grow through the soak
# as a real shop's do. Abandoned carts fire triggers a minute after the cart, delivered to
# a webhook receiver on loopback. The capacity of this mix is measured first, unpaced;
# the soak then paces wrk at half of it. Each minute: requests/s, p99, non-2xx answers,
# spoor's resident memory, the retry hashes held, the state's lag, webhooks received.
# At the end spoor saves a snapshot, stops, and starts again on the same data: the
# resident memory of the state loaded afresh, beside the soak's last, tells what the
# soak's memory is (the state it grew, or something held that should not be).
# Changes nothing kept.
#
#   bench/soak.sh                        # 5 minutes' warm-up, then 60 minutes
#   WARMUP=1m MINUTES=5 bench/soak.sh    # a quicker look
#
# Needs wrk (installed with apt-get when missing) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=${MINUTES:-60}
WARMUP=${WARMUP:-5m}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-128}
VISITORS=${VISITORS:-200000}
VISIT_MINUTES=${VISIT_MINUTES:-10}
PRODUCTS=${PRODUCTS:-20000}
ADDR=127.0.0.1:18084
HOOK_PORT=18085

cargo build --release -q -p spoor

# shellcheck source=bench/common.sh
source bench/common.sh

# The shop's webhook receiver: answers 200 and counts what it receives.
cat >"$work/receiver.py" <<'PY'
import http.server, sys
count_path = sys.argv[2]
received = 0
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global received
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        received += 1
        self.send_response(200)
        self.end_headers()
        with open(count_path, "w") as f:
            f.write(str(received))
    def log_message(self, *args):
        pass
class Receiver(http.server.ThreadingHTTPServer):
    # spoor sends 64 deliveries at once: the default backlog of 5 would drop connections.
    request_queue_size = 1024
    daemon_threads = True
Receiver(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()
PY
echo 0 >"$work/webhooks"
python3 "$work/receiver.py" "$HOOK_PORT" "$work/webhooks" &
pids+=($!)

SPOOR_LOG=warn target/release/spoor serve --listen "$ADDR" --data "$work/data" \
  --admin-token soak --site SOAK --allow-private-targets 2>"$work/spoor.log" &
pids+=($!)
server=$!
wait_ready 300
curl -sf -o /dev/null -X PUT "http://$ADDR/admin/v1/sites/SOAK/settings" \
  -H 'Authorization: Bearer soak' -d '{"rateLimit": null}'
curl -sf -o /dev/null -X PUT "http://$ADDR/admin/v1/sites/SOAK/triggers" \
  -H 'Authorization: Bearer soak' \
  -d "{\"abandonedCart\": {\"enabled\": true, \"delaysMinutes\": [1]},
       \"webhooks\": [{\"id\": \"shop\", \"url\": \"http://127.0.0.1:$HOOK_PORT/hook\",
                      \"secret\": \"soak-secret-0123456789\", \"kinds\": [\"abandoned-cart\"]}]}"

# The mix, paced by DELAY_MS between one connection's requests (0: unpaced).
write_mix() {
  cat >"$work/mix.lua" <<LUA
local visitors, products, pause = $VISITORS, $PRODUCTS, $1
local opened, arrivals_per_second = $opened, $VISITORS / ($VISIT_MINUTES * 60)
function init(args)
  math.randomseed(os.time() + (tonumber(args[1]) or 0) * 7919)
end
function delay() return pause end
-- The visitors on the site now: a window of numbers that moves up as new ones arrive.
local function visitor()
  return math.floor((os.time() - opened) * arrivals_per_second) + math.random(0, visitors - 1)
end
local function product() return "p" .. math.random(0, products - 1) end
local json = {["Content-Type"] = "application/json"}
local function event(name, v, extra, body)
  local info = '{"eventName":"' .. name .. '","siteId":"SOAK","cookies":{"sc":"v' .. v .. '"}' .. extra .. '}'
  return wrk.format("POST", "/api/v2", json, '{"GeneralInfo":' .. info .. body .. '}')
end
function request()
  local r, v = math.random(100), visitor()
  local email = ',"user_email":"v' .. v .. '@soak.test"'
  if r <= 22 then
    return event("ProductPage", v, "", ',"ProductPage":{"Product":{"productKey":"' .. product() .. '","price":10}}')
  elseif r <= 30 then
    return event("StatusCart", v, email, ',"StatusCart":{"GUID":"cart-' .. v .. '","Products":[{"productKey":"'
      .. product() .. '","price":10,"quantity":1}]}')
  elseif r <= 33 then
    return event("PurchasedItems", v, email, ',"PurchasedItems":{"OrderNumber":"o-' .. v .. '-' .. math.random(1000000)
      .. '","GUID":"cart-' .. v .. '","Products":[{"productKey":"' .. product() .. '","price":10,"quantity":1}]}')
  elseif r <= 40 then
    return event("CategoryPage", v, "", ',"CategoryPage":{"Category":{"categoryKey":"c' .. math.random(0, 99) .. '"}}')
  elseif r <= 90 then
    local q
    if r <= 65 then q = "algorithm=similar,popular&productKey=" .. product()
    elseif r <= 80 then q = "algorithm=personal,popular&sc=v" .. v
    else q = "algorithm=bought-together,popular&productKey=" .. product() end
    return wrk.format("GET", "/api/v2/recommendations?siteId=SOAK&limit=10&" .. q)
  else
    return wrk.format("GET", "/api/v1/sites/SOAK/contacts?sc=v" .. v, {["Authorization"] = "Bearer soak"})
  end
end
LUA
}

# load DURATION: prints "<requests/s> <p99 ms> <non-2xx> <socket errors>" (non-2xx counts the
# 404s of contacts not seen yet).
load() {
  local out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$1" --latency -s "$work/mix.lua" "http://$ADDR/" -- "$RANDOM")
  python3 - "$out" <<'PY'
import re, sys
text = sys.argv[1]
value, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", text).groups()
p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: .*", text)
print(f"{rps:.0f} {p99:.2f} {bad.group(1) if bad else 0} {errors.group(0).replace(' ', '_') if errors else '-'}")
PY
}

metric() {
  # The whole text first: awk stopping early would cut curl's write, a failure here.
  local text
  text=$(curl -sf "http://$ADDR/metrics")
  awk -v name="$1" '$1 == name {print $2; exit}' <<<"$text"
}

opened=$(date +%s)
write_mix 0
# The shop's state first grows to a working size: its capacity on an empty state would be
# far above what it is once visitors have histories and orders.
echo "warm-up: the mix unpaced for $WARMUP..."
load "$WARMUP" >/dev/null
echo "capacity of the mix (unpaced, 20 s)..."
read -r capacity _ _ _ <<<"$(load 20s)"
target=$((capacity / 2))
pause=$((CONNECTIONS * 1000 / target))
write_mix "$pause"
echo "capacity $capacity req/s; soaking at about $target req/s ($CONNECTIONS connections, $pause ms apart) for $MINUTES minutes"
echo "minute   req/s   p99 ms  non-2xx  RSS MiB  retry hashes  state lag  webhooks"
: >"$work/minutes.txt"
for minute in $(seq "$MINUTES"); do
  read -r rps p99 bad errors <<<"$(load 60s)"
  rss=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$server/status")
  hashes=$(metric spoor_dedup_recent_requests)
  lag=$(metric spoor_state_lag_records)
  hooks=$(cat "$work/webhooks")
  printf "%6d %7d %8.2f %8s %8d %13s %10s %9s  %s\n" "$minute" "$rps" "$p99" "$bad" "$rss" "$hashes" "$lag" "$hooks" "$errors"
  echo "$minute $rps $p99 $bad $rss $hashes $lag $hooks" >>"$work/minutes.txt"
done

python3 - "$work/minutes.txt" <<'PY'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1])]
tenth = max(1, len(rows) // 10)
first, last = rows[:tenth], rows[-tenth:]
def mean(rows, i): return statistics.mean(r[i] for r in rows)
print()
print(f"over {len(rows)} minutes: {mean(rows, 1):,.0f} req/s on average, "
      f"{sum(r[3] for r in rows):,.0f} non-2xx, {rows[-1][7]:,.0f} webhooks received")
print(f"first {tenth} min: {mean(first, 1):,.0f} req/s, p99 {mean(first, 2):.2f} ms, RSS {mean(first, 4):,.0f} MiB")
print(f"last  {tenth} min: {mean(last, 1):,.0f} req/s, p99 {mean(last, 2):.2f} ms, RSS {mean(last, 4):,.0f} MiB")
print(f"retry hashes held: {rows[0][5]:,.0f} after the first minute, {rows[-1][5]:,.0f} at the end "
      "(kept 24 to 48 hours by design: they grow through a soak shorter than that)")
PY

# What the memory is: the state saved, spoor stopped and started on the same data. A
# fresh process holds the state it loads and nothing else; the soak's process held the
# same state, plus whatever its traffic left behind.
records=$(metric spoor_log_records)
curl -sf -o /dev/null -X POST "http://$ADDR/admin/v1/state/snapshot" -H 'Authorization: Bearer soak'
soaked_rss=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$server/status")
kill -TERM "$server"
wait "$server" || true
started=$(date +%s.%N)
SPOOR_LOG=warn target/release/spoor serve --listen "$ADDR" --data "$work/data" \
  --admin-token soak --site SOAK --allow-private-targets 2>>"$work/spoor.log" &
pids+=($!)
server=$!
wait_ready 6000
ready=$(date +%s.%N)
sleep 5
fresh_rss=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$server/status")
awk -v records="$records" -v s="$started" -v r="$ready" \
  'BEGIN {printf "\nthe log: %d records; spoor restarted on them in %.1f s\n", records, r - s}'
echo "resident memory: $soaked_rss MiB at the soak's end, $fresh_rss MiB in a process that loaded the same state"
