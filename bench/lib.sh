# Helpers for bench/bench_*.sh (source it; bash only). The contract with
# bench/run_all.sh:
#   - a benchmark script's last line is
#     BENCH name=<name> podtrain=<figure> peer=<figure> ratio=<x> target=<goal> unit=<unit>
#     (values without spaces, or in double quotes; optional extra fields such
#     as met=yes|no are shown too);
#   - it writes its detail section, Markdown, to $BENCH_OUT/<name>.md
#     (run_all.sh puts it in RESULTS.md under the benchmark's heading);
#   - it exits non-zero only when it could not measure (a missed target is a
#     result, not a failure).
# Run alone, a script writes to $BENCH_OUT, by default /tmp/podtrain-bench.

BENCH_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_OUT="${BENCH_OUT:-${TMPDIR:-/tmp}/podtrain-bench}"
mkdir -p "$BENCH_OUT"
export BENCH_OUT
# The peers' Python: Debian's, never a pyenv python3 first on PATH.
BENCH_PYTHON=/usr/bin/python3

# bench_build TARGET... : builds the targets (optimized; .bazelrc says -c opt)
# and sets BENCH_BIN to the bazel-bin directory holding them.
bench_build() {
  (cd "$BENCH_REPO" && bazel build -c opt "$@") >&2 || return 1
  BENCH_BIN="$(cd "$BENCH_REPO" && bazel info -c opt bazel-bin 2>/dev/null)" || return 1
}

# bench_free_port: a free TCP port on 127.0.0.1.
bench_free_port() {
  "$BENCH_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# bench_now: wall-clock seconds since the epoch, microsecond resolution.
bench_now() { date +%s.%6N; }

# bench_blas_env: exports OPENBLAS_CORETYPE for this CPU unless it is set.
# Debian's OpenBLAS 0.3.21 does not recognise the CPUs of these VMs
# (AVX-512 Xeons) and falls back to its Prescott (SSE3) kernels: ~25 instead
# of ~145 GFLOP/s per core for fp32 GEMM. Every process of a benchmark,
# podtrain's and the peer's, inherits the same choice.
bench_blas_env() {
  [[ -n "${OPENBLAS_CORETYPE:-}" ]] && return 0
  local flags
  flags=$(grep -m1 '^flags' /proc/cpuinfo)
  if [[ " $flags " == *" avx512f "* && " $flags " == *" avx512bw "* && " $flags " == *" avx512vl "* ]]; then
    export OPENBLAS_CORETYPE=SkylakeX
  elif [[ " $flags " == *" avx2 "* && " $flags " == *" fma "* ]]; then
    export OPENBLAS_CORETYPE=Haswell
  fi
  return 0
}
