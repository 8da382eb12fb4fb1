#!/usr/bin/env bash
# coordinator: N simulated workers (256, 1,024 and 4,096) registering,
# heartbeating, joining one world, streaming their assignments and reporting
# every step against a real podtrain-coordinator process on 127.0.0.1, in
# lockstep like a synchronous data-parallel job (one step per second for
# everyone). p50/p99 of the heartbeat round trip, of assignment delivery
# (from the moment the look-ahead let a step out to the moment each rank
# holds it) and of the step report round trip; the coordinator's CPU
# (/proc/<pid>/stat). The load generator (bench/coordinator/
# coordinator_load.cc, gRPC's async API on 2 threads, one connection per
# worker) shares the 2 cores with the coordinator: its CPU is reported too.
# Every run is bounded (world formation 45 s, 3 s warm-up, 8 s measured).
# ~2 minutes.
#
#   bash bench/bench_coordinator.sh
#
# No peer: nothing comparable runs here (tf.data service's dispatcher or a
# torchrun/etcd rendezvous do not hand out per-step work), so the BENCH
# line's peer column is the target itself, 20 ms; podtrain is the worse of
# the heartbeat and assignment p99 at 4,096 workers with the coordinator's
# default flags; ratio = 20 / podtrain (higher is better).
# Writes $BENCH_OUT/coordinator.md and $BENCH_OUT/coordinator/.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_REPO"

out="$BENCH_OUT/coordinator"
rm -rf "$out" && mkdir -p "$out"

echo "== build (optimized)"
bench_build //coordinator:podtrain-coordinator //bench/coordinator:coordinator_load || exit 1

# run LABEL WORKERS [coordinator flags...]: one coordinator, one load.
run() {
  local label=$1 workers=$2
  shift 2
  local dir="$out/$label"
  mkdir -p "$dir"
  "$BENCH_BIN/coordinator/podtrain-coordinator" --address=127.0.0.1:0 \
    --port_file="$dir/port" --journal="$dir/journal.db" --metrics_address= \
    "$@" >"$dir/coordinator.log" 2>&1 &
  local pid=$!
  for _ in $(seq 200); do
    [[ -s "$dir/port" ]] && break
    sleep 0.05
  done
  if [[ ! -s "$dir/port" ]]; then
    echo "bench_coordinator: the coordinator did not start (see $dir/coordinator.log)" >&2
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 1
  fi
  echo "== $label: $workers workers, coordinator flags: ${*:-(defaults)}"
  "$BENCH_BIN/bench/coordinator/coordinator_load" --address="127.0.0.1:$(cat "$dir/port")" \
    --coordinator_pid="$pid" --workers="$workers" --dir="$dir" --warmup_s=3 \
    --duration_s=8 --join_timeout_s=45 >"$dir/report.md" 2>"$dir/load.log"
  local status=$?
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  grep '^RESULT ' "$dir/report.md" || echo "RESULT n=$workers formed=0"
  return $status
}

run n256 256
run n1024 1024
run n4096 4096
run n4096_hb1200 4096 --heartbeat_ms=1200 --lease_ms=12000

field() {  # field LABEL NAME
  sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $(grep '^RESULT ' "$out/$1/report.md" 2>/dev/null | tail -1)"
}
row() {  # row LABEL DESCRIPTION
  local f
  printf '| %s ' "$2"
  for f in heartbeat_p50_ms heartbeat_p99_ms assignment_p50_ms assignment_p99_ms \
    report_p50_ms report_p99_ms probe_p99_ms coordinator_cores client_cores; do
    printf '| %s ' "$(field "$1" "$f")"
  done
  printf '| %s |\n' "$(field "$1" errors)"
}
worst() {  # the worse p99 of heartbeats and assignments, or "n/a"
  awk -v h="$(field "$1" heartbeat_p99_ms)" -v a="$(field "$1" assignment_p99_ms)" \
    'BEGIN { if (h == "" || h < 0 || a == "" || a < 0) print "n/a";
             else printf "%.1f", (h > a ? h : a) }'
}

podtrain=$(worst n4096)
largest_met="none"
for n in 256 1024 4096; do
  w=$(worst "n$n")
  [[ "$w" != n/a ]] && awk -v w="$w" 'BEGIN { exit !(w < 20) }' && largest_met=$n
done
if [[ "$podtrain" == n/a ]]; then
  ratio=0
  met=no
else
  ratio=$(awk -v p="$podtrain" 'BEGIN { printf "%.3f", 20 / p }')
  met=$(awk -v p="$podtrain" 'BEGIN { print (p < 20) ? "yes" : "no" }')
fi

{
  echo "One job whose world is all N simulated workers (global batch 32 x N on a"
  echo "synthetic 10^9-example dataset); one step per second for every worker, the"
  echo "step report sent at the end of each (one in flight per worker, as the agent"
  echo "does); workers start over 1 s per 1,024 (a pod coming up); heartbeats at"
  echo "the interval the coordinator hands out (default 300 ms, lease 3 s), one in"
  echo "flight per worker. The load generator runs on the same 2 cores: its CPU is in"
  echo "the table. Measured over 8 s after a 3 s warm-up."
  echo
  echo "No peer runs here (nothing comparable hands out per-step work), so the"
  echo "BENCH line's peer is the target, 20 ms, and podtrain is the worse p99 of"
  echo "heartbeats and assignments at 4,096 workers, default flags."
  echo
  echo "| run | heartbeat p50 ms | heartbeat p99 ms | assignment p50 ms | assignment p99 ms | report p50 ms | report p99 ms | probe heartbeat p99 ms | coordinator cores | client cores | errors |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  row n256 "256 workers"
  row n1024 "1,024 workers"
  row n4096 "4,096 workers"
  row n4096_hb1200 "4,096 workers, heartbeat 1.2 s, lease 12 s"
  echo
  echo "Probe: one extra worker heartbeating 10 times a second from its own thread"
  echo "and connection, so its round trips do not queue behind the load generator's"
  echo "own backlog. Errors during world formation are leases that ran out before"
  echo "the world formed (the simulated worker registers again, as the agent does)."
  echo
  echo "Largest N with p99 < 20 ms for both heartbeats and assignments: $largest_met."
  echo
  for label in n256 n1024 n4096 n4096_hb1200; do
    [[ -f "$out/$label/report.md" ]] || continue
    echo "#### Run $label"
    echo
    grep -v '^RESULT ' "$out/$label/report.md" | sed 's/^### /##### /'
  done
} >"$BENCH_OUT/coordinator.md"
cat "$BENCH_OUT/coordinator.md"
echo
echo "BENCH name=coordinator podtrain=$podtrain peer=20 ratio=$ratio target=p99<20ms unit=ms_p99_at_4096_workers met=$met largest_n_meeting_target=$largest_met"
