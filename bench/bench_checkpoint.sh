#!/usr/bin/env bash
# checkpoint: the cost of a checkpoint every 100 steps as a share of the
# reference MLP job's training time (784-1024-1024-10, SGD with Nesterov
# momentum, global batch 256, one intra-op thread): Agent::Checkpoint's path
# on rank 0 (snapshot, worker/checkpoint WriteCheckpoint with real files and
# fsyncs, PruneCheckpoints, consumption-log fsync, the CommitCheckpoint RPC
# to a real coordinator that journals it) against torch::save + fsync of the
# same state. ~40 s.
#
#   bash bench/bench_checkpoint.sh
#
# BENCH line: shares in percent of training time; ratio = peer / podtrain
# (a smaller share is better, so higher is better); target < 2 %.
# Writes $BENCH_OUT/checkpoint.md and $BENCH_OUT/checkpoint/.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_REPO"

out="$BENCH_OUT/checkpoint"
rm -rf "$out" && mkdir -p "$out"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

echo "== build (optimized)"
bench_build //bench/checkpoint:checkpoint_bench || exit 1

echo "== training with checkpoints"
"$BENCH_BIN/bench/checkpoint/checkpoint_bench" --dir="$out/scratch" \
  >"$out/report.md" 2>"$out/checkpoint_bench.log" || {
  tail -20 "$out/checkpoint_bench.log" >&2
  exit 1
}
line=$(grep '^BENCH ' "$out/report.md" | tail -1)
share=$(sed -n 's/.* podtrain=\([^ ]*\).*/\1/p' <<<"$line")
met=$(awk -v s="$share" 'BEGIN { print (s < 2) ? "yes" : "no" }')
fs=$(df -T "$out" | awk 'NR == 2 { print $2 " on " $1 }')

{
  echo "Checkpoint files on $fs. Command: \`bash bench/bench_checkpoint.sh\`;" \
    "raw output in \`\$BENCH_OUT/checkpoint/\`."
  echo
  grep -v '^BENCH ' "$out/report.md"
  echo "**Result:** a checkpoint every 100 steps costs ${share} % of training time" \
    "(target < 2 %: $([[ $met == yes ]] && echo met || echo missed))."
} >"$BENCH_OUT/checkpoint.md"
cat "$BENCH_OUT/checkpoint.md"
rm -rf "$out/scratch"
echo
echo "$line met=$met"
