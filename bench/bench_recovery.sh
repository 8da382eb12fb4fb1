#!/usr/bin/env bash
# recovery: SIGKILL one of two training workers mid-run; seconds from the
# kill to the next step the recovered world completes, and steps redone, for
# podtrain and for torchrun (Debian's python3-torch 1.13: c10d rendezvous on
# 127.0.0.1, --max_restarts, a checkpoint every 50 steps). ~2 minutes.
#
#   bash bench/bench_recovery.sh [--kill-step K] [--repeats N]
#
# Same model, data and checkpoint interval (50 steps) on both sides; the
# rank-1 worker is killed once rank 0 has finished step K (default 124, 25
# steps after the newest checkpoint: the expected loss of a kill at a random
# time). Runs (bench/recovery/measure.py, each N times, default 1):
#   podtrain             the survivor goes on (the job's min_workers is 1)
#   podtrain --replace   the killed worker is started again at once, as
#                        Kubernetes would (torchrun restarts its workers too)
#   torchrun             --monitor_interval 0.1 (torch 2.x's default)
#   torchrun default     --monitor_interval 5 (torch 1.13's default)
# The BENCH line compares podtrain (survivor) with torchrun at 0.1 s, the
# fastest this torchrun gets; ratio = torchrun seconds / podtrain seconds
# (higher is better). Writes $BENCH_OUT/recovery.md and $BENCH_OUT/recovery/.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_REPO"

kill_step=124
repeats=1
while (($# > 0)); do
  case "$1" in
    --kill-step) kill_step="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    *) echo "usage: $0 [--kill-step K] [--repeats N]" >&2; exit 2 ;;
  esac
done

out="$BENCH_OUT/recovery"
rm -rf "$out" && mkdir -p "$out"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

if [[ ! -x /usr/bin/torchrun ]] || ! "$BENCH_PYTHON" -c 'import torch.distributed as d; assert d.is_gloo_available()' 2>/dev/null; then
  echo "bench_recovery: no torchrun / torch with gloo; run bash bench/install_bench_deps.sh" >&2
  exit 1
fi
echo "== build (optimized)"
bench_build //cli:podtrain //cli:podtrain-data //cli:podtrain-audit \
  //coordinator:podtrain-coordinator //worker:podtrain-worker || exit 1

# The reference job, checkpointing every 50 steps, evaluating only at the end.
awk '/^[a-z_]+:/ { section = $1 }
     /^  interval_steps:/ && section == "checkpoint:" { print "  interval_steps: 50"; next }
     /^  interval_steps:/ && section == "eval:" { print "  interval_steps: 1000000"; next }
     /^epochs:/ { print "epochs: 2"; next }
     { print }' deploy/local/reference_job.yaml >"$out/job.yaml"

measure() {  # label, then measure.py arguments
  local label="$1"
  shift
  for ((i = 1; i <= repeats; i++)); do
    echo "== $label ($i/$repeats)"
    "$BENCH_PYTHON" bench/recovery/measure.py "$@" --repo "$BENCH_REPO" \
      --work "$out/$label-$i" --out "$out/$label-$i.json" --kill-step "$kill_step"
  done
}
measure podtrain podtrain --bin "$BENCH_BIN" --job-template "$out/job.yaml"
measure podtrain-replace podtrain --bin "$BENCH_BIN" --job-template "$out/job.yaml" --replace --settle 3
measure torchrun torchrun --monitor-interval 0.1
measure torchrun-default torchrun --monitor-interval 5

echo "== report"
"$BENCH_PYTHON" bench/recovery/report.py "$out" "$kill_step" >"$BENCH_OUT/recovery.md" 2>"$out/bench-line.txt"
status=$?
cat "$BENCH_OUT/recovery.md"
((status == 0)) || { cat "$out/bench-line.txt" >&2; exit 1; }
tail -1 "$out/bench-line.txt"
