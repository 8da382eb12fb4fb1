#!/usr/bin/env bash
# Installs the Debian packages of the peers bench/ compares podtrain with,
# and nothing else. Separate from deploy/install_deps.sh (which podtrain's
# build, tests and CI need) so that CI does not pay for PyTorch. Idempotent:
# when everything is present it changes nothing.
#
#   bash bench/install_bench_deps.sh          # install what is missing
#   bash bench/install_bench_deps.sh --check  # only report; exit 1 if missing
#
# Peers (run with /usr/bin/python3, not a pyenv python3 first on PATH):
#   python3-torch 1.13 (CPU, gloo): PyTorch DDP (bench_e2e) and torchrun
#     (bench_recovery). Under it libblas.so.3 must be OpenBLAS, which
#     deploy/install_deps.sh already sees to.
#   openmpi-bin, libopenmpi-dev: MPI_Allreduce (bench_allreduce).
set -euo pipefail

PACKAGES=(
  python3-torch
  openmpi-bin libopenmpi-dev
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
    echo "install_bench_deps: missing packages: ${missing[*]}" >&2
    exit 1
  fi
  echo "install_bench_deps: installing ${#missing[@]} packages: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# What the benchmarks rely on, checked rather than assumed.
if ! /usr/bin/python3 -c 'import torch, torch.distributed as d; assert d.is_gloo_available()' \
  2>/dev/null; then
  echo "install_bench_deps: /usr/bin/python3 cannot import torch with gloo" >&2
  exit 1
fi
$check_only || echo "install_bench_deps: all ${#PACKAGES[@]} packages present"
