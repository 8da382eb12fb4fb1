#!/usr/bin/env bash
# The real `podtrain-worker` refuses a device it cannot train on at startup,
# with exit 1 and the reason, before it registers anywhere: no machine here
# has a GPU, so --device=cuda must fail in both build configurations (the
# message says which part is missing), and a misspelled device is named.
# Under --config=cuda it also checks the binary links NCCL and cudart.
set -uo pipefail

worker="$1"
work="${TEST_TMPDIR:-$(mktemp -d)}/worker_device_test"
rm -rf "$work" && mkdir -p "$work"
failures=0

# expect_exit_1 "what" "needle in stderr" -- args...
expect_exit_1() {
  local what="$1" needle="$2"
  shift 3
  # Port 1 on loopback: nothing listens, so reaching Register would show
  # up as a connection error instead of the device error.
  timeout 60 "$worker" --coordinator=127.0.0.1:1 --metrics_address= "$@" \
    >"$work/out" 2>"$work/err"
  local status=$?
  if [[ $status -ne 1 ]]; then
    echo "FAIL: $what: exit $status, want 1: $(tail -3 "$work/err")" >&2
    failures=$((failures + 1))
  elif ! grep -qF -- "$needle" "$work/err"; then
    echo "FAIL: $what: stderr lacks '$needle': $(tail -3 "$work/err")" >&2
    failures=$((failures + 1))
  else
    echo "ok: $what"
  fi
}

# The build configuration this test was built in (--config=cuda or not):
# under CUDA the worker must link NCCL and the CUDA runtime.
build="$2"
if [[ $build == cuda ]]; then
  # Captured first: `ldd | grep -q` under pipefail fails whenever grep
  # exits before ldd has written everything (SIGPIPE).
  libraries=$(ldd "$worker")
  for lib in libnccl.so libcudart.so; do
    if grep -q "$lib" <<<"$libraries"; then
      echo "ok: podtrain-worker links $lib"
    else
      echo "FAIL: a --config=cuda podtrain-worker does not link $lib" >&2
      failures=$((failures + 1))
    fi
  done
  cuda_reason="libtorch sees no CUDA device"
else
  cuda_reason="built without CUDA and NCCL"
fi
expect_exit_1 "--device=cuda" "$cuda_reason" -- --device=cuda
expect_exit_1 "--device=cuda:1" "$cuda_reason" -- --device=cuda:1
expect_exit_1 "--device=gpu" "device: must be 'cpu', 'cuda' or 'cuda:<index>', got 'gpu'" -- --device=gpu

echo "$failures failures"
[[ $failures -eq 0 ]]
