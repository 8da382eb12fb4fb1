#!/usr/bin/env bash
# Installs what is missing, builds everything, runs every test. The README's
# test command, and what CI runs (.ci/run). Last line: `N passed, N failed`.
#
# Steps: deploy/install_deps.sh; `bazel build //...` in the default
# configuration (proves the tree builds without CUDA); the format check;
# `bazel test //...` under --config=cuda when /usr/local/cuda exists (so the
# NCCL/CUDA code compiles and links and its device-free tests run), otherwise
# in the default configuration.
set -uo pipefail
cd "$(dirname "$0")/.."

bash deploy/install_deps.sh || { echo "0 passed, 1 failed"; exit 1; }

log_dir=$(mktemp -d)
trap 'rm -rf "$log_dir"' EXIT
checks=()

echo "== bazel build //... (default configuration, no CUDA)"
if bazel build //... 2>&1 | tee "$log_dir/build.log" | grep -E '^(ERROR|FAIL)'; then
  checks+=("bazel_build_default=FAILED")
elif grep -q 'Build completed successfully' "$log_dir/build.log"; then
  checks+=("bazel_build_default=PASSED")
else
  tail -20 "$log_dir/build.log"
  checks+=("bazel_build_default=FAILED")
fi

echo "== format check"
if bash tools/check_format.sh; then
  checks+=("clang_format=PASSED")
else
  checks+=("clang_format=FAILED")
fi

config=()
if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  config=(--config=cuda)
else
  echo "test.sh: no /usr/local/cuda: CUDA targets are skipped" >&2
fi
echo "== bazel test ${config[*]} //..."
bazel test "${config[@]}" --test_summary=short //... 2>&1 | tee "$log_dir/test.log" |
  grep -E '^(//|ERROR|FAIL|Executed)'

# CI shows only what this script prints: the end of every failed test's own
# log goes here, so a failure seen only there can be diagnosed.
grep -oE '^FAIL: //[^ ]+ \(see [^)]+\)' "$log_dir/test.log" |
  sed -E 's/.*\(see (.*)\)/\1/' | while read -r failed_log; do
    echo "== last 150 lines of $failed_log"
    tail -n 150 "$failed_log"
  done

python3 tools/test_summary.py "$log_dir/test.log" "${checks[@]}"
status=$?
# Leave nothing running behind (CI, and machines that are shared).
bazel shutdown >/dev/null 2>&1
exit $status
