# Sourced by the benchmarks, not run: installs wrk when missing, makes `work`, a
# directory removed on exit (when every process whose pid is in `pids` is stopped), and
# defines `wait_ready`.

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
