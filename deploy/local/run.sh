#!/usr/bin/env bash
# The README's run command: installs what is missing, builds, and runs the
# most end-to-end thing podtrain has. Today that is the toolchain check: the
# public job API served on loopback and called by a real client, and every
# system library (gRPC, libtorch on OpenBLAS, Gloo, Prometheus, SQLite) doing
# real work. The local pod demo (coordinator + workers + Prometheus on
# Fashion-MNIST) replaces this with the end-to-end issue.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/install_deps.sh
trap 'bazel shutdown >/dev/null 2>&1 || true' EXIT
bazel build //...
bazel run //proto:proto_test
bazel run //third_party:system_libs_test
