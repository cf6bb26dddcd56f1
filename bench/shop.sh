# Shared by the benchmarks that load a seeded shop (recommend.sh, snapshot.sh); sourced,
# not run. Builds spoor and the seeder, seeds CONTACTS contacts and PRODUCTS products
# into a fresh data directory, starts spoor on ADDR, and defines `load DURATION
# CONNECTIONS`, which runs wrk with the shop's mix of recommendation questions and prints
# "<requests/s> <p50 ms> <p99 ms> <non-2xx> <socket errors>". Sets `work` (removed on
# exit) and `server` (spoor's pid).

cargo build --release -q -p spoor
cargo build --release -q -p spoor --example seed_shop

# shellcheck source=bench/common.sh
source bench/common.sh

echo "seeding $CONTACTS contacts and $PRODUCTS products..."
seed=$(target/release/examples/seed_shop "$work/data" "$CONTACTS" "$PRODUCTS")
echo "  $seed"

started=$(date +%s.%N)
SPOOR_LOG=warn target/release/spoor serve --listen "$ADDR" --data "$work/data" \
  --admin-token bench 2>"$work/spoor.log" &
pids+=($!)
server=$!
wait_ready 600
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

