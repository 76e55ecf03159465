#!/usr/bin/env bash
# Runs the whole test suite N times in a row on a fresh clone of the committed
# HEAD (what CI sees), and prints a pass/fail/hang table with durations.
#
#   scripts/soak-tests.sh N [--loaded K] [--load-cmd CMD] [--limit-min M] [--keep]
#   npm run soak -- 10 --loaded 3
#
#   N            how many runs (`npm test`, the README's test command, each time)
#   --loaded K   the last K runs have a CPU-heavy process beside them: by
#                default `npm run bench` in a second fresh clone, in a loop
#                (CI machines are shared; this is what a test meets there)
#   --load-cmd   another load command instead (run with bash -c, in a loop)
#   --limit-min  a run still going after M minutes (default 15) is killed
#                and counted as a hang
#   --keep       keep the clones and logs (default: keep only the logs)
#
# Exit status: 0 when every run passed. Logs: $SOAK_DIR (default a temp dir).
# Needs what the tests need: Node.js 20, npm, Redis at REDIS_URL (default
# redis://127.0.0.1:6379; the tests start their own redis-server otherwise).
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

runs="${1:-}"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || usage
shift
loaded=0
load_cmd=""
limit_min=15
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --loaded) loaded="${2:?}"; shift 2 ;;
    --load-cmd) load_cmd="${2:?}"; shift 2 ;;
    --limit-min) limit_min="${2:?}"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) usage ;;
  esac
done
[[ "$loaded" =~ ^[0-9]+$ ]] && [ "$loaded" -le "$runs" ] || { echo "soak: --loaded takes 0..N" >&2; exit 2; }

repo="$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"
head="$(git -C "$repo" rev-parse --short HEAD)"
work="${SOAK_DIR:-$(mktemp -d /tmp/soak-XXXXXX)}"
mkdir -p "$work"
clone="$work/clone"
load_clone="$work/load-clone"
load_pid=""

stop_load() {
  if [ -n "$load_pid" ]; then
    # The load loop runs in its own process group (setsid): end all of it.
    kill -- "-$load_pid" 2>/dev/null || true
    wait "$load_pid" 2>/dev/null || true
    load_pid=""
  fi
}
cleanup() {
  stop_load
  if [ "$keep" = 0 ]; then rm -rf "$clone" "$load_clone"; fi
}
trap cleanup EXIT

fresh_clone() {
  rm -rf "$1"
  git clone --quiet "$repo" "$1"
  (cd "$1" && npm ci --no-audit --no-fund >"$2" 2>&1) || { echo "soak: npm ci failed in $1 (see $2)" >&2; exit 1; }
}

echo "soak: $runs run(s) of 'npm test' on a fresh clone of $head; the last $loaded beside a CPU load; logs in $work"
started=$(date +%s)
fresh_clone "$clone" "$work/npm-ci.log"
echo "soak: npm ci took $(( $(date +%s) - started )) s"

if [ "$loaded" -gt 0 ] && [ -z "$load_cmd" ]; then
  fresh_clone "$load_clone" "$work/npm-ci-load.log"
  load_cmd="cd '$load_clone' && npm run bench"
fi

results=()
failures=0
for i in $(seq 1 "$runs"); do
  with_load="no"
  if [ "$i" -gt $(( runs - loaded )) ]; then
    with_load="yes"
    if [ -z "$load_pid" ]; then
      setsid bash -c "while true; do $load_cmd >>'$work/load.log' 2>&1 || sleep 1; done" &
      load_pid=$!
      sleep 5 # let the load get going before the run starts
    fi
  fi
  log="$work/run-$i.log"
  t0=$(date +%s)
  set +e
  # timeout signals its whole process group: npm, the test runner, the relays
  # and redis-servers the tests started.
  (cd "$clone" && timeout --signal=KILL "$(( limit_min * 60 ))" npm test) >"$log" 2>&1
  code=$?
  set -e
  secs=$(( $(date +%s) - t0 ))
  pass="$(grep -Eo '^ℹ pass [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+$' || true)"
  fail="$(grep -Eo '^ℹ fail [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+$' || true)"
  cancelled="$(grep -Eo '^ℹ cancelled [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+$' || true)"
  if [ "$code" = 0 ]; then
    result="pass"
  elif [ "$code" = 137 ] || grep -qE "test timed out after|exceeded [0-9]+ minutes" "$log"; then
    result="HANG"
  else
    result="FAIL"
  fi
  [ "$result" = pass ] || failures=$(( failures + 1 ))
  line="$(printf '%3s  %-6s  %-5s  %5ss  %5s  %4s  %9s  %s' "$i" "$with_load" "$result" "$secs" "${pass:--}" "${fail:--}" "${cancelled:--}" "$log")"
  results+=("$line")
  echo "soak: run $i: $result in ${secs}s (load: $with_load)"
done
stop_load

echo
echo "soak summary: $head, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)"
printf '%3s  %-6s  %-5s  %6s  %5s  %4s  %9s  %s\n' run loaded result time pass fail cancelled log
for line in "${results[@]}"; do echo "$line"; done
echo "soak: $(( runs - failures ))/$runs passed"
[ "$failures" = 0 ]
