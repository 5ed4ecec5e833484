#!/usr/bin/env bash
# Runs the validation suite (or a part of it) N times in a row while other processes keep every
# core busy, and prints the pass/fail count of each run and of the whole soak.
#
#   benchmarks/load_soak.sh [-n RUNS] [-b BENCH] [-l LOAD_PROCS] [-- PYTEST_ARGS...]
#
#   -n RUNS        suite runs (default 3: the "three in a row" check)
#   -b BENCH       bench YAML (default benches/sim.yaml); repeat -b for several benches
#   -l LOAD_PROCS  busy-loop processes (default: one per core, `nproc`); 0 = no load
#   PYTEST_ARGS    default: testcases (the whole suite); e.g. -- testcases/test_soc_timing.py
#
# The load is what a shared lab machine or CI runner sees: other jobs at normal priority (nice 0),
# pure CPU (one Python busy loop per core). Exit code 0 only when every run passed.
# Last line: one JSON object with the figures.
set -u
cd "$(dirname "$0")/.."
RUNS=3
BENCHES=()
LOAD_PROCS=$(nproc)
while getopts "n:b:l:" opt; do
  case $opt in
    n) RUNS=$OPTARG ;;
    b) BENCHES+=("$OPTARG") ;;
    l) LOAD_PROCS=$OPTARG ;;
    *) sed -n '2,15p' "$0"; exit 2 ;;
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
RUN_PID=""
stop_load() { for p in "${LOAD_PIDS[@]}"; do kill "$p" 2>/dev/null; done; LOAD_PIDS=(); }
# Ctrl-C / kill: stop the running suite (the plugin then stops its virtual bench) and the load, then exit.
abort() { [ -n "$RUN_PID" ] && kill -TERM "$RUN_PID" 2>/dev/null && wait "$RUN_PID"; stop_load; echo "soak: aborted"; exit 130; }
trap stop_load EXIT
trap abort INT TERM
for _ in $(seq 1 "$LOAD_PROCS"); do
  "$PY" -c 'while True: pass' &
  LOAD_PIDS+=($!)
done
echo "load: $LOAD_PROCS busy-loop process(es) at nice 0 on $(nproc) core(s): ${LOAD_PIDS[*]:-none}"

total_pass=0; total_fail=0; runs_ok=0; runs_total=0; results=()
for bench in "${BENCHES[@]}"; do
  for i in $(seq 1 "$RUNS"); do
    log="$OUT/$(basename "$bench" .yaml)-run$i.log"
    start=$(date +%s)
    "$PY" -m pytest "${PYTEST_ARGS[@]}" --bench "$bench" -q >"$log" 2>&1 &
    RUN_PID=$!
    wait "$RUN_PID"
    rc=$?
    RUN_PID=""
    secs=$(( $(date +%s) - start ))
    summary=$(grep -E "^(=+ )?[0-9]+ (passed|failed|error)" "$log" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//')
    p=$(echo "$summary" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+"); p=${p:-0}
    f=$(echo "$summary" | grep -oE "[0-9]+ (failed|error|errors)" | grep -oE "[0-9]+" | paste -sd+ | bc 2>/dev/null); f=${f:-0}
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f)); runs_total=$((runs_total + 1))
    verdict=FAIL; [ "$rc" -eq 0 ] && { verdict=PASS; runs_ok=$((runs_ok + 1)); }
    echo "$bench run $i/$RUNS: $verdict  passed=$p failed=$f  ${secs}s  ($summary)  log: $log"
    [ "$rc" -ne 0 ] && grep -E "^(FAILED|ERROR) " "$log" | sed 's/^/    /'
    results+=("{\"bench\": \"$bench\", \"run\": $i, \"passed\": $p, \"failed\": $f, \"seconds\": $secs}")
  done
done
stop_load
echo "soak: $runs_ok/$runs_total runs passed, $total_pass tests passed, $total_fail failed, load $LOAD_PROCS busy process(es)"
printf '{"runs": %d, "runs_passed": %d, "tests_passed": %d, "tests_failed": %d, "load_procs": %d, "cores": %d, "results": [%s]}\n' \
  "$runs_total" "$runs_ok" "$total_pass" "$total_fail" "$LOAD_PROCS" "$(nproc)" "$(IFS=,; echo "${results[*]}")"
[ "$runs_ok" -eq "$runs_total" ]
