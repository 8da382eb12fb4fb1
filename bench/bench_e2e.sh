#!/usr/bin/env bash
# e2e: training examples/s of podtrain against PyTorch DDP (Debian's
# python3-torch 1.13, gloo) on the reference recipe (Fashion-MNIST, MLP
# 784-1024-1024-10, global batch 256, SGD + Nesterov, cosine), world 1 and 2,
# one intra-op thread per rank, the same epochs; plus the share of the
# machine's fp32 GEMM peak podtrain reaches. World 2 runs in R rounds
# (default 3), podtrain and DDP alternating, and each side's fastest round
# counts (load from other tenants only slows a run down; the fp32 limit is
# also the best of two rounds). ~6 minutes on 2 cores.
#
#   bash bench/bench_e2e.sh [--epochs E] [--skip-steps S] [--rounds R]
#
# Both sides use the same OpenBLAS, with the same OPENBLAS_CORETYPE
# (bench_blas_env in bench/lib.sh: this machine's AVX-512 kernels; left to
# itself Debian's OpenBLAS falls back to SSE3 ones here, ~5x slower; the
# report shows both).
# podtrain runs through deploy/local/run.sh (coordinator, workers, podtrain
# submit) with the optimized binaries, the reference job with checkpoint and
# evaluation only after the last step, and Prometheus off; DDP runs
# bench/e2e/ddp_mlp.py, one process per rank. Steady-state rates come from
# per-step completion times on rank 0, steps S (default 20) to the
# second-to-last (bench/e2e/report.py). Needs bench/install_bench_deps.sh.
# Writes $BENCH_OUT/e2e.md and $BENCH_OUT/e2e/ (raw outputs); last line:
#   BENCH name=e2e podtrain=<ex/s, world 2> peer=<ex/s, world 2> ratio=... ...
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_REPO"

epochs=5
skip=20
rounds=3
while (($# > 0)); do
  case "$1" in
    --epochs) epochs="$2"; shift 2 ;;
    --skip-steps) skip="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    *) echo "usage: $0 [--epochs E] [--skip-steps S] [--rounds R]" >&2; exit 2 ;;
  esac
done

out="$BENCH_OUT/e2e"
rm -rf "$out" && mkdir -p "$out"
# One thread per rank, whatever each library's default: OpenBLAS sizes its
# own pool to every core unless told (torch.set_num_threads does not reach it).
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
bench_blas_env
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"

if ! "$BENCH_PYTHON" -c 'import torch, torch.distributed as d; assert d.is_gloo_available()' 2>/dev/null; then
  echo "bench_e2e: $BENCH_PYTHON cannot import torch with gloo; run bash bench/install_bench_deps.sh" >&2
  exit 1
fi
echo "== build (optimized)"
bench_build //cli:podtrain //cli:podtrain-data //cli:podtrain-audit \
  //coordinator:podtrain-coordinator //worker:podtrain-worker //bench/e2e:gemm_peak || exit 1
# Bazel's server (a JVM: garbage collection, JIT threads) would otherwise
# share the two cores with the runs below; bench_build restarts it.
bazel shutdown 2>/dev/null

# The fp32 limit, measured before and after the training runs (report.py
# takes the best: on a shared machine, load only ever lowers it): 1 thread,
# one 2-thread process, two 1-thread processes at once.
gemm_round() {  # round name
  echo "== fp32 GEMM peak ($1)"
  local gemm_peak="$BENCH_BIN/bench/e2e/gemm_peak" first
  "$gemm_peak" --threads=1 | tee "$out/gemm-t1-$1.txt"
  "$gemm_peak" --threads=2 | tee "$out/gemm-t2-$1.txt"
  "$gemm_peak" --threads=1 >"$out/gemm-pair-$1-a.txt" &
  first=$!
  "$gemm_peak" --threads=1 >"$out/gemm-pair-$1-b.txt"
  wait "$first"
  cat "$out/gemm-pair-$1-a.txt" "$out/gemm-pair-$1-b.txt"
}
gemm_round before
# What OpenBLAS picks by itself here, and the bare training step at world
# 1's per-rank batch.
env -u OPENBLAS_CORETYPE "$BENCH_BIN/bench/e2e/gemm_peak" --threads=1 | tee "$out/gemm-autodetected.txt"
"$BENCH_BIN/bench/e2e/gemm_peak" --threads=1 --mlp_batch=256 | tee "$out/gemm-b256.txt"

# The reference job, checkpointing and evaluating only after the last step
# (checkpoint cost is bench_checkpoint's subject; DDP does neither).
awk '/^[a-z_]+:/ { section = $1 }
     /^  interval_steps:/ && (section == "checkpoint:" || section == "eval:") {
       print "  interval_steps: 1000000"; next }
     { print }' deploy/local/reference_job.yaml >"$out/job.yaml"

run_podtrain() {  # world tag
  echo "== podtrain, world $1 ($2)"
  local work="$out/podtrain-$2" run i port
  bash deploy/local/run.sh --bin-dir "$BENCH_BIN" --workers "$1" --epochs "$epochs" \
    --workdir "$work" --job-template "$out/job.yaml" \
    --events "$out/podtrain-$2.events.jsonl" --no-prometheus \
    --worker-flag --threads=1 >"$out/podtrain-$2.log" 2>&1 &
  run=$!
  # The workers' own step profile: their /metrics, scraped until they exit.
  "$BENCH_PYTHON" bench/e2e/scrape_metrics.py --pid "$run" --work "$work" \
    --out "$out/podtrain-$2" --workers "$1" &
  scraper=$!
  wait "$run"
  echo "run.sh exit status $?"
  wait "$scraper"
  grep '^RESULT ' "$out/podtrain-$2.log" || tail -20 "$out/podtrain-$2.log"
}

run_ddp() {  # world tag
  echo "== PyTorch DDP, world $1 ($2)"
  local port pids=() status=0
  port=$(bench_free_port)
  for ((rank = 0; rank < $1; rank++)); do
    "$BENCH_PYTHON" bench/e2e/ddp_mlp.py --rank "$rank" --world "$1" --port "$port" \
      --epochs "$epochs" --skip_steps "$skip" --threads 1 --summary "$out/ddp-$2.json" \
      >"$out/ddp-$2-rank$rank.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  echo "ddp exit status $status"
  grep '^DDP ' "$out/ddp-$2-rank0.log" || tail -20 "$out/ddp-$2-rank0.log"
}

run_podtrain 1 w1
run_ddp 1 w1
for ((round = 1; round <= rounds; round++)); do
  tag=w2
  ((round > 1)) && tag="w2r$round"
  run_podtrain 2 "$tag"
  run_ddp 2 "$tag"
done
gemm_round after

echo "== report"
"$BENCH_PYTHON" bench/e2e/report.py "$out" "$epochs" "$skip" >"$BENCH_OUT/e2e.md" 2>"$out/bench-line.txt"
status=$?
cat "$BENCH_OUT/e2e.md"
((status == 0)) || { cat "$out/bench-line.txt" >&2; exit 1; }
tail -1 "$out/bench-line.txt"
