#!/usr/bin/env bash
# Runs the validation suite (or a part of it) N times in a row while other processes keep every
# core busy, and prints the pass/fail count of each run and of the whole soak.
#
#   benchmarks/load_soak.sh [-n RUNS] [-b BENCH] [-l LOAD_PROCS] [-p] [-- PYTEST_ARGS...]
#
#   -n RUNS        suite runs (default 3: the "three in a row" check)
#   -b BENCH       bench YAML (default benches/sim.yaml); repeat -b for several benches
#   -l LOAD_PROCS  busy-loop processes (default: one per core, `nproc`); 0 = no load
#   -p             run the benches' suites side by side (one per bench at a time) instead of one after another
#   PYTEST_ARGS    default: testcases (the whole suite); e.g. -- testcases/test_soc_timing.py
#
# The load is what a shared lab machine or CI runner sees: other jobs at normal priority (nice 0),
# pure CPU (one Python busy loop per core). Each run's line shows the 1-minute load average at its
# start and end. Exit code 0 only when every run passed. Last line: one JSON object with the figures.
set -u
cd "$(dirname "$0")/.."
RUNS=3
BENCHES=()
LOAD_PROCS=$(nproc)
PARALLEL=0
while getopts "n:b:l:p" opt; do
  case $opt in
    n) RUNS=$OPTARG ;;
    b) BENCHES+=("$OPTARG") ;;
    l) LOAD_PROCS=$OPTARG ;;
    p) PARALLEL=1 ;;
    *) sed -n '2,17p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ ${#BENCHES[@]} -eq 0 ] && BENCHES=(benches/sim.yaml)
PYTEST_ARGS=("$@")
[ ${#PYTEST_ARGS[@]} -eq 0 ] && PYTEST_ARGS=(testcases)
PY=${PY:-.venv/bin/python}
OUT=${SOAK_DIR:-.hil/soak}
mkdir -p "$OUT"

LOAD_PIDS=()
RUN_PIDS=()
stop_load() { for p in "${LOAD_PIDS[@]}"; do kill "$p" 2>/dev/null; done; LOAD_PIDS=(); }
# Ctrl-C / kill: stop the running suites (the plugin then stops its virtual bench) and the load, then exit.
abort() {
  for p in "${RUN_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${RUN_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  stop_load; echo "soak: aborted"; exit 130
}
trap stop_load EXIT
trap abort INT TERM
for _ in $(seq 1 "$LOAD_PROCS"); do
  "$PY" -c 'while True: pass' &
  LOAD_PIDS+=($!)
done
echo "load: $LOAD_PROCS busy-loop process(es) at nice 0 on $(nproc) core(s): ${LOAD_PIDS[*]:-none}"
[ "$PARALLEL" -eq 1 ] && echo "side by side: ${BENCHES[*]}"

loadavg() { cut -d' ' -f1 /proc/loadavg; }
total_pass=0; total_fail=0; runs_ok=0; runs_total=0; results=()
# One suite run in the background: its log, start time and load average are kept by index.
declare -A R_BENCH R_RUN R_LOG R_START R_LOAD
start_run() {  # bench run-number
  local stem="$OUT/$(basename "$1" .yaml)-run$2"
  local log="$stem.log"
  # Each run its own evidence and reports: runs side by side must not write into one folder.
  rm -rf "$stem-evidence" "$stem-reports"
  "$PY" -m pytest "${PYTEST_ARGS[@]}" --bench "$1" -q --evidence-dir "$stem-evidence" --reports-dir "$stem-reports" \
    >"$log" 2>&1 &
  local pid=$!
  RUN_PIDS+=("$pid")
  R_BENCH[$pid]=$1; R_RUN[$pid]=$2; R_LOG[$pid]=$log; R_START[$pid]=$(date +%s); R_LOAD[$pid]=$(loadavg)
}
finish_run() {  # pid
  local pid=$1 rc
  wait "$pid"; rc=$?
  local log=${R_LOG[$pid]} secs=$(( $(date +%s) - ${R_START[$pid]} )) load_end
  load_end=$(loadavg)
  summary=$(grep -E "^(=+ )?[0-9]+ (passed|failed|error)" "$log" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//')
  p=$(echo "$summary" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+"); p=${p:-0}
  f=$(echo "$summary" | grep -oE "[0-9]+ (failed|error|errors)" | grep -oE "[0-9]+" | paste -sd+ | bc 2>/dev/null); f=${f:-0}
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f)); runs_total=$((runs_total + 1))
  verdict=FAIL; [ "$rc" -eq 0 ] && { verdict=PASS; runs_ok=$((runs_ok + 1)); }
  echo "${R_BENCH[$pid]} run ${R_RUN[$pid]}/$RUNS: $verdict  passed=$p failed=$f  ${secs}s  load ${R_LOAD[$pid]} -> $load_end  ($summary)  log: $log"
  [ "$rc" -ne 0 ] && grep -E "^(FAILED|ERROR) " "$log" | sed 's/^/    /'
  results+=("{\"bench\": \"${R_BENCH[$pid]}\", \"run\": ${R_RUN[$pid]}, \"passed\": $p, \"failed\": $f, \"seconds\": $secs, \"load_start\": ${R_LOAD[$pid]}, \"load_end\": $load_end}")
}
if [ "$PARALLEL" -eq 1 ]; then
  for i in $(seq 1 "$RUNS"); do
    RUN_PIDS=()
    for bench in "${BENCHES[@]}"; do start_run "$bench" "$i"; done
    for pid in "${RUN_PIDS[@]}"; do finish_run "$pid"; done
  done
else
  for bench in "${BENCHES[@]}"; do
    for i in $(seq 1 "$RUNS"); do
      RUN_PIDS=()
      start_run "$bench" "$i"
      finish_run "${RUN_PIDS[0]}"
    done
  done
fi
RUN_PIDS=()
stop_load
echo "soak: $runs_ok/$runs_total runs passed, $total_pass tests passed, $total_fail failed, load $LOAD_PROCS busy process(es)"
printf '{"runs": %d, "runs_passed": %d, "tests_passed": %d, "tests_failed": %d, "load_procs": %d, "cores": %d, "results": [%s]}\n' \
  "$runs_total" "$runs_ok" "$total_pass" "$total_fail" "$LOAD_PROCS" "$(nproc)" "$(IFS=,; echo "${results[*]}")"
[ "$runs_ok" -eq "$runs_total" ]
