#!/usr/bin/env bash
# Installs every Debian package podtrain needs to build, test and run, and
# nothing else. Idempotent: when everything is present it changes nothing and
# returns in about a second. Container builds (deploy/docker) reuse it.
#
#   bash deploy/install_deps.sh          # install what is missing
#   bash deploy/install_deps.sh --check  # only report; exit 1 if anything is missing
#
# CUDA 13 and NCCL are not Debian packages: the machine image carries them at
# /usr/local/cuda (compile and link only; see ../shared/BUILD_NOTES.md).
set -euo pipefail

PACKAGES=(
  # Build: Bazel 4 and the rule repositories it loads offline.
  bazel-bootstrap bazel-rules-java bazel-platforms default-jdk-headless
  build-essential clang-format
  # RPC and core libraries.
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libgoogle-glog-dev zlib1g-dev
  # TLS: services/tls parses PEM files with OpenSSL; the tests make their
  # certificates with the openssl command.
  libssl-dev openssl
  # The podtrain CLI reads YAML job specs.
  libyaml-cpp-dev
  # Tests and benchmarks.
  libgtest-dev libgmock-dev libbenchmark-dev
  # Training: collectives, libtorch, and an optimized BLAS under it (without
  # one, libtorch silently falls back to the reference BLAS, ~24x slower).
  libgloo-dev libtorch-dev libopenblas0-pthread
  # Coordinator store, metrics, monitoring.
  libsqlite3-dev sqlite3 prometheus-cpp-dev libmicrohttpd-dev prometheus
  # The demo dataset, and what the local launcher uses around it.
  dataset-fashion-mnist python3 curl
)

check_only=false
[[ "${1:-}" == "--check" ]] && check_only=true

missing=()
for package in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$package")
done

if ((${#missing[@]} > 0)); then
  if $check_only; then
    echo "install_deps: missing packages: ${missing[*]}" >&2
    exit 1
  fi
  echo "install_deps: installing ${#missing[@]} packages: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The BLAS trap: libtorch links libblas.so.3, an alternative that must point
# at OpenBLAS, not the reference implementation.
blas_link=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 || true)
if [[ "$blas_link" != *openblas* ]]; then
  if $check_only; then
    echo "install_deps: libblas.so.3 is $blas_link, not OpenBLAS" >&2
    exit 1
  fi
  openblas=$(update-alternatives --list libblas.so.3-x86_64-linux-gnu | grep openblas | head -n 1)
  ${SUDO:-} update-alternatives --set libblas.so.3-x86_64-linux-gnu "$openblas"
fi

if [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  echo "install_deps: note: no CUDA toolkit at /usr/local/cuda; --config=cuda builds will fail" >&2
fi
$check_only || echo "install_deps: all ${#PACKAGES[@]} packages present"
