#!/usr/bin/env bash
# Installs every Debian package podtrain needs to build, test and run, and
# nothing else, and the npm packages of the Kubernetes manifest validator.
# Idempotent: when everything is present it changes nothing and returns in
# about a second. The container builds (deploy/docker) run it too.
#
#   bash deploy/install_deps.sh          # install what is missing
#   bash deploy/install_deps.sh --check  # only report; exit 1 if anything is missing
#   bash deploy/install_deps.sh --image  # what building the binaries needs
#                                        # (container builds): no kubectl,
#                                        # no npm packages
#
# CUDA 13 and NCCL are not Debian packages: the machine image carries them at
# /usr/local/cuda (compile and link only; see ../shared/BUILD_NOTES.md).
#
# kubectl (k8s/manifests_test renders the overlays with `kubectl kustomize`)
# is checked, not installed: Debian bookworm's only kubectl is the
# kubernetes-client package, kubectl 1.20, whose built-in kustomize (v2.0.3)
# predates the components and labels k8s/ uses. The machine image carries
# kubectl 1.32 (kustomize v5.5) at /usr/bin/kubectl; elsewhere install
# kubectl >= 1.27 as https://kubernetes.io/docs/tasks/tools/ describes.
#
# The validator's npm packages (k8s/validate/package-lock.json) are installed
# with `npm ci` into $PODTRAIN_TOOLS_DIR/k8s-validate (default
# /opt/podtrain-tools), outside the repository and the Bazel sandbox, which
# has no network; k8s/manifests_test.sh looks for them there.
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
image=false
for arg in "$@"; do
  case "$arg" in
    --check) check_only=true ;;
    --image) image=true ;;
    *) echo "usage: $0 [--check] [--image]" >&2; exit 2 ;;
  esac
done
# CI's deployment checks run Node.js (the manifest validator); Debian's
# nodejs and npm unless the machine has its own.
if ! $image && ! command -v npm >/dev/null; then
  PACKAGES+=(nodejs npm)
fi

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
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
  $SUDO update-alternatives --set libblas.so.3-x86_64-linux-gnu "$openblas"
fi

if ! $image; then
  kubectl=$(command -v kubectl || true)
  kustomize_version=""
  [[ -n "$kubectl" ]] &&
    kustomize_version=$("$kubectl" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\)\..*/\1/p')
  if [[ -z "$kubectl" || -z "$kustomize_version" || "$kustomize_version" -lt 5 ]]; then
    echo "install_deps: kubectl with kustomize v5 (kubectl >= 1.27) is required by" \
      "k8s/manifests_test and is not a usable Debian package (bookworm's" \
      "kubernetes-client is kubectl 1.20 with kustomize v2): install kubectl" \
      "as https://kubernetes.io/docs/tasks/tools/ describes${kubectl:+ (found $kubectl, kustomize v${kustomize_version:-?})}" >&2
    exit 1
  fi

  # The manifest validator's npm packages, exactly as locked. The stamp is
  # written only after `npm ci` succeeded.
  validate_src="$(cd "$(dirname "$0")/.." && pwd)/k8s/validate"
  validate_dir="${PODTRAIN_TOOLS_DIR:-/opt/podtrain-tools}/k8s-validate"
  stamp="$validate_dir/installed-package-lock.json"
  if ! cmp -s "$validate_src/package-lock.json" "$stamp"; then
    if $check_only; then
      echo "install_deps: the npm packages of k8s/validate are missing or stale in $validate_dir" >&2
      exit 1
    fi
    echo "install_deps: npm ci of k8s/validate into $validate_dir"
    $SUDO mkdir -p "$validate_dir"
    $SUDO rm -f "$stamp"
    $SUDO cp "$validate_src/package.json" "$validate_src/package-lock.json" "$validate_dir/"
    (cd "$validate_dir" && $SUDO npm ci --no-audit --no-fund --ignore-scripts --loglevel=error 2>&1 |
      { grep -v EBADENGINE || true; })
    $SUDO cp "$validate_src/package-lock.json" "$stamp"
  fi
fi

if [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  echo "install_deps: note: no CUDA toolkit at /usr/local/cuda; --config=cuda builds will fail" >&2
fi
$check_only || echo "install_deps: all ${#PACKAGES[@]} packages present"
