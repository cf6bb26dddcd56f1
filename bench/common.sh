# Sourced by the benchmarks, not run: installs wrk when missing, makes `work`, a
# directory removed on exit (when every process whose pid is in `pids` is stopped), and
# defines `wait_ready` and `product_page_load`.

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Waits until spoor answers /readyz on ADDR, at most $1 tenths of a second; shows its log
# and stops the script if it does not.
wait_ready() {
  for attempt in $(seq "$1"); do
    curl -sf -o /dev/null "http://$ADDR/readyz" && return
    [ "$attempt" -lt "$1" ] || { echo "spoor did not start:"; cat "$work/spoor.log"; exit 1; }
    sleep 0.1
  done
}

# product_page_load SPEC OUT: writes to OUT a wrk script that posts the spec's ProductPage
# example, exactly as printed, with a unique sc cookie per request: every event a new
# visitor. With VISITORS=N, the events come from N returning visitors per wrk thread
# instead (the body is kept unique by a tag's value).
product_page_load() {
  VISITORS=${VISITORS:-0} python3 - "$1" "$2" <<'PY'
import os, re, sys
spec = open(sys.argv[1], encoding="utf-8").read()
example = re.findall(r"```json\n(.*?)```", spec, re.S)[0]
assert '"eventName": "ProductPage"' in example
visitors = int(os.environ["VISITORS"])
cookie = "CDA68358-94FB-4D83-9655-3FEB3C4114A3"
if visitors:
    assert example.count('"abc"') == 1
    template = example.replace(cookie, "bench-visitor-%d-%d").replace('"abc"', '"abc-%s-%d-%d"')
    arguments = "id, counter %% %d, run, id, counter" % visitors
else:
    template = example.replace(cookie, "bench-%s-%d-%d")
    arguments = "run, id, counter"
# Each run passes its own tag (wrk's script arguments), so no body repeats across runs:
# a repeated body is a client retry to spoor, acknowledged without being stored again.
lua = """
local counter = 0
local next_thread = 0
local run = "run"
function setup(thread)
  thread:set("id", next_thread)
  next_thread = next_thread + 1
end
function init(args)
  run = args[1] or run
end
local template = [==[%s]==]
local headers = { ["Content-Type"] = "application/json" }
function request()
  counter = counter + 1
  return wrk.format("POST", "/api/v2", headers, string.format(template, %s))
end
""" % (re.sub(r"%(?![sd])", "%%", template), arguments)
open(sys.argv[2], "w", encoding="utf-8").write(lua)
PY
}
