#!/usr/bin/env bash
# coordinator: N simulated workers (256, 1,024 and 4,096) registering,
# heartbeating, joining one world, streaming their assignments and reporting
# every step against a real podtrain-coordinator process on 127.0.0.1, in
# lockstep like a synchronous data-parallel job (one step per second for
# everyone). p50/p99 of the heartbeat round trip, of assignment delivery
# (from the moment the look-ahead let a step out to the moment each rank
# holds it) and of the step report round trip; the coordinator's CPU
# (/proc/<pid>/stat). Heartbeats at the interval the coordinator hands out,
# which --max_heartbeats_per_second (default 2,000/s) stretches for pools
# above 600 workers. The load generator (bench/coordinator/
# coordinator_load.cc, gRPC's async API on 2 threads, one connection per
# worker) shares the 2 cores with the coordinator: its CPU is reported too.
# Every run is bounded (world formation 45 s, a warm-up of 20 s or, for a
# world reporting every k > 8 steps, k + 12 s, then 8 s measured).
# One more 4,096 run puts the coordinator and the load generator on a core
# each (taskset). ~6 minutes.
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

# run LABEL WORKERS WARMUP_S [coordinator flags...]: one coordinator, one
# load ($LOAD_FLAGS: extra load-generator flags; $PIN=1: the coordinator on
# CPU 0 and the load generator on CPU 1, each alone on its core). A world reporting every k steps sends its first reports at steps
# 0 to k - 1 (one step a second) and the look-ahead moves only after them:
# the warm-up must be longer than k s.
run() {
  local label=$1 workers=$2 warmup=$3
  shift 3
  local dir="$out/$label"
  mkdir -p "$dir"
  local coordinator_cpu=() load_cpu=()
  if [[ "${PIN:-0}" == 1 ]]; then
    if (($(nproc) < 2)); then
      echo "== $label: skipped (needs 2 CPUs, this machine has $(nproc))"
      return 0
    fi
    coordinator_cpu=(taskset -c 0)
    load_cpu=(taskset -c 1)
  fi
  "${coordinator_cpu[@]}" "$BENCH_BIN/coordinator/podtrain-coordinator" --address=127.0.0.1:0 \
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
  "${load_cpu[@]}" "$BENCH_BIN/bench/coordinator/coordinator_load" --address="127.0.0.1:$(cat "$dir/port")" \
    --coordinator_pid="$pid" --workers="$workers" --dir="$dir" --warmup_s="$warmup" \
    --duration_s=8 --join_timeout_s=45 ${LOAD_FLAGS:-} >"$dir/report.md" 2>"$dir/load.log"
  local status=$?
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  grep '^RESULT ' "$dir/report.md" || echo "RESULT n=$workers formed=0"
  return $status
}

# Default --max_reports_per_step=128: k = 2 at 256, 8 at 1,024, 32 at 4,096.
run n256 256 20
run n1024 1024 20
run n4096 4096 44
run n4096_m_k 4096 44 --max_assignment_messages_per_step=0
LOAD_FLAGS=--assignment_positions=false run n4096_ids 4096 44
run n4096_every_step 4096 20 --max_reports_per_step=0 --max_assignment_messages_per_step=0
PIN=1 run n4096_pinned 4096 44

field() {  # field LABEL NAME
  sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $(grep '^RESULT ' "$out/$1/report.md" 2>/dev/null | tail -1)"
}
row() {  # row LABEL DESCRIPTION
  local f
  printf '| %s ' "$2"
  for f in heartbeat_p50_ms heartbeat_p99_ms assignment_p50_ms assignment_p99_ms \
    report_p50_ms report_p99_ms probe_p99_ms step_end_late_p99_ms coordinator_cores \
    client_cores; do
    printf '| %s ' "$(field "$1" "$f")"
  done
  printf '| %s |\n' "$(field "$1" errors)"
}
worst() {  # the worse p99 of heartbeats and assignments, or "n/a"
  awk -v h="$(field "$1" heartbeat_p99_ms)" -v a="$(field "$1" assignment_p99_ms)" \
    'BEGIN { if (h == "" || h < 0 || a == "" || a < 0) print "n/a";
             else printf "%.1f", (h > a ? h : a) }'
}

per_message() {  # per_message LABEL: messages per second and CPU per message
  local report="$out/$1/report.md"
  awk -v c="$(field "$1" coordinator_cores)" -v l="$(field "$1" client_cores)" \
    -v hb="$(sed -n 's/.* heartbeats (\([0-9.]*\)\/s).*/\1/p' "$report" | head -1)" \
    -v rp="$(sed -n 's/.* step reports (\([0-9.]*\)\/s).*/\1/p' "$report" | head -1)" \
    -v am="$(sed -n 's/.* assignment messages timed (\([0-9.]*\)\/s).*/\1/p' "$report" | head -1)" \
    'BEGIN { m = hb + rp + am;
             if (m <= 0 || c == "" || l == "") { print "no figures"; exit }
             printf "%d heartbeats, %d step reports and %d assignment messages a second, %.0f us of coordinator CPU and %.0f us of load-generator CPU per message on average", hb, rp, am, c * 1e6 / m, l * 1e6 / m }'
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
  echo "synthetic 10^9-example dataset); one step per second for every worker,"
  echo "reports as the agent sends them (one in flight per worker; every step in"
  echo "worlds of up to --max_reports_per_step = 128 ranks, above that every"
  echo "k = ceil(N / 128) steps at the rank's own offset, one call carrying the k"
  echo "steps' digests: k = 2 at 256 workers, 8 at 1,024, 32 at 4,096, and, as the"
  echo "agent does since 2026-12-07, the ranks reporting at the same step spread over"
  echo "half of it: the i-th of them sends i / (N / k) x 500 ms after the step ends,"
  echo "worker/step_reporter.h ReportSpreadDelay); assignments (stream positions,"
  echo "which the rank maps to ids) m = max(k, ceil(N / 64)) steps a stream message"
  echo "(--max_assignment_messages_per_step = 64, since 2026-12-07; before, m = k):"
  echo "m = 4 at 256, 16 at 1,024, 64 at 4,096, each rank's messages at its own"
  echo "offset; workers start over 1 s per 1,024 (a pod coming up); heartbeats at"
  echo "the interval the coordinator hands out, one in flight per worker: 300 ms"
  echo "with a 3 s lease up to 600 workers, above that stretched so the pool sends at"
  echo "most --max_heartbeats_per_second (default 2,000/s): 1,024 workers every"
  echo "512 ms (lease 5.1 s), 4,096 every 2.05 s (lease 20.5 s). The load generator"
  echo "runs on the same 2 cores: its CPU is in the table. Measured over 8 s after a"
  echo "warm-up of 20 s, or k + 12 s for k > 8 (44 s at k = 32: steps 44 to 51): a"
  echo "world reporting every 32 steps sends its first reports at steps 0-31, and"
  echo "only after those does the look-ahead (m + k + 4 = 100 steps) move."
  echo
  echo "No peer runs here (nothing comparable hands out per-step work), so the"
  echo "BENCH line's peer is the target, 20 ms, and podtrain is the worse p99 of"
  echo "heartbeats and assignments at 4,096 workers, default flags."
  echo
  echo "| run | heartbeat p50 ms | heartbeat p99 ms | assignment p50 ms | assignment p99 ms | report p50 ms | report p99 ms | probe heartbeat p99 ms | client step-end lag p99 ms | coordinator cores | client cores | errors |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  row n256 "256 workers"
  row n1024 "1,024 workers"
  row n4096 "4,096 workers"
  row n4096_m_k "4,096 workers, k = 32 steps a message (--max_assignment_messages_per_step=0: before 2026-12-07)"
  row n4096_ids "4,096 workers, streams of example ids (load generator --assignment_positions=false: the agent before 2026-12-07)"
  row n4096_every_step "4,096 workers, every rank reports every step and gets one step a message (--max_reports_per_step=0 --max_assignment_messages_per_step=0)"
  row n4096_pinned "4,096 workers, coordinator and load generator on a core each (taskset -c 0 / -c 1)"
  echo
  echo "Probe: one extra worker heartbeating 10 times a second from its own thread"
  echo "and connection, so its round trips do not queue behind the load generator's"
  echo "own backlog. Errors during world formation are leases that ran out before"
  echo "the world formed (the simulated worker registers again, as the agent does)."
  echo "Client step-end lag: how late the load generator handled the end of each"
  echo "rank's step. Every rank of a lockstep world ends its step at the same instant,"
  echo "which in a real pod happens in N processes at once and here on 2 threads; the"
  echo "ranks still on the grid end theirs in one pass per thread (until 2026-12-07"
  echo "one alarm per rank: p99 ~60 ms at 4,096, in which the client read no reply,"
  echo "which showed up as heartbeat p99). Each run's section also gives the"
  echo "heartbeat round trips clear of step ends."
  echo
  echo "Largest N with p99 < 20 ms for both heartbeats and assignments: $largest_met."
  echo
  echo "What the 4,096 rows show. A world of 4,096 reports every k = 32 steps at"
  echo "staggered offsets; each step, once the last of the 128 ranks whose reports"
  echo "hold the slowest step back has reported, the horizon moves and the ranks"
  echo "whose message boundary it passes get their next message, all at once: one"
  echo "stream write each, a syscall and a wake-up on both sides (instrumented hand"
  echo "runs on 2026-12-07: 128 StartWrite calls took the coordinator's pump 4-24 ms,"
  echo "its wake-up after the report 1.5-2.4 ms). Two changes of 2026-12-07 cut"
  echo "that burst: messages carry each step's stream positions (two integers a"
  echo "step) instead of its 32 example ids, which the rank maps to ids through its"
  echo "own sampler (streams-of-ids row: coordinator $(field n4096_ids coordinator_cores) cores, load generator"
  echo "$(field n4096_ids client_cores), assignment p50 $(field n4096_ids assignment_p50_ms) / p99 $(field n4096_ids assignment_p99_ms) ms), and a world gets m = 64 steps"
  echo "a message, so a step sends 64 messages instead of 128 (row m = k:"
  echo "assignment p50 $(field n4096_m_k assignment_p50_ms) / p99 $(field n4096_m_k assignment_p99_ms) ms); with both, default flags: coordinator"
  echo "$(field n4096 coordinator_cores) cores, load generator $(field n4096 client_cores), assignment p50 $(field n4096 assignment_p50_ms) / p99 $(field n4096 assignment_p99_ms) ms ($(per_message n4096))."
  echo "The pinned row puts the coordinator and the load generator on a core each,"
  echo "so neither waits for the other's bursts: heartbeat p99 $(field n4096_pinned heartbeat_p99_ms) ms, reports"
  echo "$(field n4096_pinned report_p99_ms), assignments $(field n4096_pinned assignment_p99_ms). (The heartbeat-bound-off row, last run 2026-12-07"
  echo "23:30 UTC: heartbeat p99 763 ms, assignment 1,181 ms, 8,730 errors, gave"
  echo "its place to the m = k row.)"
  echo
  if [[ "$met" != yes ]]; then
    echo "Why 4,096 workers miss the target in this run: the p99 that remains is"
    echo "shared by every kind of call and by the probe, which has its own thread"
    echo "and connection (probe p99 $(field n4096 probe_p99_ms) ms), and the load generator itself handles"
    echo "its ranks' step ends up to $(field n4096 step_end_late_p99_ms) ms late (p99): 4,096 workers' worth of"
    echo "connections, timers and step ends and the coordinator take turns on 2"
    echo "cores. perf (2026-12-07, cpu-clock, AMD EPYC VM) puts 42 % of the load"
    echo "generator's samples and 48 % of the coordinator's in the kernel (context"
    echo "switches, futex wake-ups, loopback TCP; the paravirtualised interrupt"
    echo "re-enable after a context switch, pvm_irq_enable, alone 28 % of the load"
    echo "generator's), 28-34 % in gRPC, and under 5 % in either program's own code;"
    echo "gRPC's timer thread takes 21 % and 15 %. On this VM the p99 of the same"
    echo "build also varies from run to run (hand runs on 2026-12-07: 17-89 ms for"
    echo "assignments, p50 steady at 10-17 ms). Next: a machine where the load"
    echo "generator has cores of its own, or fewer gRPC wake-ups per simulated worker."
    echo
  fi
  for label in n256 n1024 n4096 n4096_m_k n4096_ids n4096_every_step n4096_pinned; do
    [[ -f "$out/$label/report.md" ]] || continue
    echo "#### Run $label"
    echo
    grep -v '^RESULT ' "$out/$label/report.md" | sed 's/^### /##### /'
  done
} >"$BENCH_OUT/coordinator.md"
cat "$BENCH_OUT/coordinator.md"
echo
echo "BENCH name=coordinator podtrain=$podtrain peer=20 ratio=$ratio target=p99<20ms unit=ms_p99_at_4096_workers met=$met largest_n_meeting_target=$largest_met"
