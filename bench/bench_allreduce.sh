#!/usr/bin/env bash
# allreduce: podtrain's gradient all-reduce (GradientBuckets over the
# communicator a worker uses: shared memory between ranks of one host, over
# Gloo; rendezvous through a real coordinator's store) against bare
# Gloo (gloo::allreduce on the same buffers, TCP on 127.0.0.1) and OpenMPI's
# MPI_Allreduce, for the reference MLP's 1,863,690-float gradient; two ranks
# (threads for podtrain and bare Gloo, processes for MPI). Also: the share
# of the all-reduce a training step hides behind backward. ~40 s.
#
#   bash bench/bench_allreduce.sh
#
# BENCH line: podtrain and peer are median milliseconds per all-reduce
# (GradientBuckets::ReduceNow against bare gloo::allreduce of the same bucket
# buffers); ratio = bare / podtrain (higher is better), target >= 0.9.
# Writes $BENCH_OUT/allreduce.md and $BENCH_OUT/allreduce/.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_REPO"

out="$BENCH_OUT/allreduce"
rm -rf "$out" && mkdir -p "$out"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

echo "== build (optimized)"
bench_build //bench/allreduce:allreduce_bench //bench/allreduce:mpi_allreduce || exit 1

# OpenMPI: the same flat buffer between 2 processes, once over TCP on
# loopback (what Gloo uses here), once over shared memory (for reference).
mpi_flags=()
mpi_note="not run: no mpirun (bash bench/install_bench_deps.sh installs openmpi-bin)"
if command -v mpirun >/dev/null; then
  for transport in tcp shm; do
    if [[ $transport == tcp ]]; then
      btl=(--mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)
    else
      btl=(--mca btl self,vader)
    fi
    echo "== MPI_Allreduce over $transport"
    timeout 120 mpirun --allow-run-as-root --oversubscribe -np 2 "${btl[@]}" \
      "$BENCH_BIN/bench/allreduce/mpi_allreduce" 150 >"$out/mpi_$transport.log" 2>&1
    median=$(sed -n 's/^MPI_ALLREDUCE median_ms=\([0-9.]*\).*/\1/p' "$out/mpi_$transport.log")
    if [[ -n "$median" ]]; then
      mpi_flags+=("--mpi_${transport}_ms=$median")
    else
      echo "bench_allreduce: MPI over $transport failed (see $out/mpi_$transport.log)" >&2
    fi
  done
  mpi_note="mpirun $(mpirun --version 2>/dev/null | head -1 | sed 's/^mpirun //'), -np 2, 150 timed calls after 10 warm-up, barrier before each"
fi

echo "== podtrain vs bare Gloo"
"$BENCH_BIN/bench/allreduce/allreduce_bench" --dir="$out/scratch" "${mpi_flags[@]}" \
  >"$out/report.md" 2>"$out/allreduce_bench.log" || {
  tail -20 "$out/allreduce_bench.log" >&2
  exit 1
}
result=$(grep '^RESULT ' "$out/report.md" | tail -1)
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $result"; }
podtrain=$(field podtrain_ms)
bare=$(field bare_ms)
ratio=$(field ratio)
hidden=$(field hidden_percent)
podtrain_gloo=$(field podtrain_gloo_ms)
met=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.9) ? "yes" : "no" }')

{
  echo "Two ranks on this machine ($(getconf _NPROCESSORS_ONLN) cores); OpenMPI: $mpi_note."
  echo "Command: \`bash bench/bench_allreduce.sh\`; raw output in \`\$BENCH_OUT/allreduce/\`."
  echo
  grep -v '^RESULT ' "$out/report.md"
  echo "**Result:** podtrain ${podtrain} ms vs bare Gloo ${bare} ms per all-reduce:" \
    "ratio ${ratio} (target >= 0.9: $([[ $met == yes ]] && echo met || echo missed))." \
    "A training step hides ${hidden} % of its all-reduce behind backward." \
    "With the shared-memory path off (Gloo TCP, as between hosts): ${podtrain_gloo} ms."
} >"$BENCH_OUT/allreduce.md"
cat "$BENCH_OUT/allreduce.md"
echo
echo "BENCH name=allreduce podtrain=$podtrain peer=$bare ratio=$ratio target=ratio>=0.9 unit=ms_per_allreduce met=$met hidden_behind_backward_percent=$hidden podtrain_gloo_tcp_ms=$podtrain_gloo"
