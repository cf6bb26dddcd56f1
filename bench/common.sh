# Sourced by the benchmarks, not run: installs wrk when missing, and makes `work`, a
# directory removed on exit, when every process whose pid is in `pids` is stopped too.

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
