#!/usr/bin/env bash
# The container builds' steps, exercised without a Docker engine (none runs
# on these machines, so no image is built here):
#   - static checks of Dockerfile and Dockerfile.cuda (check_dockerfiles.py:
#     tagged base images, COPY sources present and not .dockerignored, RUN
#     steps valid bash, bazel targets that exist, bundles and entrypoints
#     that match, uid 65532, CUDA runtime base) and of a broken fixture,
#     which must be refused for every reason testdata/expected.txt lists;
#   - the scripts the RUN steps call parse (bash -n), and
#     `deploy/install_deps.sh --check --image` passes on this machine (the
#     image's install step, in its image mode);
#   - the Dockerfiles' own bundle.sh commands, run on the binaries Bazel
#     built: every bundled binary resolves its libraries in the bundle or
#     from the C library, the bundled BLAS is OpenBLAS, and the bundled
#     coordinator starts and serves from the bundle alone (127.0.0.1).
# Last line: "N passed, N failed".
#
#   dockerfile_test.sh LABEL=PATH...   (the binaries the Dockerfiles build)
set -uo pipefail
root="${TEST_SRCDIR:?run under bazel test}/podtrain"
tmp="${TEST_TMPDIR:?}"
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS: $1"; }
fail() { failed=$((failed + 1)); echo "FAIL: $1"; }

labels=()
declare -A binary_of
for arg in "$@"; do
  labels+=(--label "${arg%%=*}")
  label="${arg%%=*}"
  binary_of["bazel-bin/${label#//}"]=$(readlink -f "${arg#*=}")
done
# bazel-bin/<pkg>:<name> -> bazel-bin/<pkg>/<name>
declare -A binary_path
for key in "${!binary_of[@]}"; do binary_path["${key/://}"]="${binary_of[$key]}"; done

# --- static checks ------------------------------------------------------------
cd "$root" || exit 1
if /usr/bin/python3 deploy/docker/check_dockerfiles.py --context "$root" "${labels[@]}" \
  deploy/docker/Dockerfile deploy/docker/Dockerfile.cuda >"$tmp/bundles.txt" 2>"$tmp/check.err"; then
  pass "Dockerfile and Dockerfile.cuda pass the static checks ($(wc -l <"$tmp/bundles.txt") bundle steps)"
else
  fail "static checks:"
  sed 's/^/    /' "$tmp/check.err"
fi
if /usr/bin/python3 deploy/docker/check_dockerfiles.py --context "$root" "${labels[@]}" \
  deploy/docker/testdata/Dockerfile.broken >/dev/null 2>"$tmp/broken.err"; then
  fail "the broken Dockerfile was accepted"
else
  missing=0
  while IFS= read -r expected; do
    grep -qF -- "$expected" "$tmp/broken.err" || { fail "broken Dockerfile not refused for: $expected"; missing=1; }
  done <deploy/docker/testdata/expected.txt
  ((missing)) && sed 's/^/    /' "$tmp/broken.err" ||
    pass "the broken Dockerfile is refused for all $(wc -l <deploy/docker/testdata/expected.txt) expected reasons"
fi
for script in deploy/install_deps.sh deploy/docker/bundle.sh; do
  bash -n "$script" && pass "bash -n $script" || fail "bash -n $script"
done
if bash deploy/install_deps.sh --check --image >"$tmp/deps.out" 2>&1; then
  pass "install_deps.sh --check --image: the image's install step has what it needs here"
else
  fail "install_deps.sh --check --image: $(tail -3 "$tmp/deps.out")"
fi

# --- the bundle steps, for real ---------------------------------------------
while read -r out binaries; do
  [[ -z "$out" ]] && continue
  dir="$tmp/bundle${out}"
  [[ -d "$dir" ]] && continue  # both Dockerfiles make the same bundles
  paths=()
  for binary in $binaries; do paths+=("${binary_path[$binary]:-missing:$binary}"); done
  if bash deploy/docker/bundle.sh "$dir" "${paths[@]}" >"$tmp/bundle.out" 2>&1; then
    pass "bundle.sh $out: $(tail -1 "$tmp/bundle.out")"
  else
    fail "bundle.sh $out ${paths[*]}: $(tail -3 "$tmp/bundle.out")"
    continue
  fi
  for binary in "$dir"/bin/*; do
    name=$(basename "$binary")
    outside=$(env -i LD_LIBRARY_PATH="$dir/lib" ldd "$binary" | awk '$2 == "=>" {print $1, $3}' |
      grep -v " $dir/lib/" | grep -vE '^(libc|libm|libpthread|libdl|librt|libresolv|libstdc\+\+|libgcc_s)\.so')
    if [[ -z "$outside" ]]; then
      pass "$out/bin/$name loads every library from the bundle or the C library"
    else
      fail "$out/bin/$name loads from outside the bundle: $outside"
    fi
    # Abseil's --helpfull exits 1 after printing the flags; the CLI has none.
    if [[ "$name" != podtrain ]]; then
      env -i LD_LIBRARY_PATH="$dir/lib" "$binary" --helpfull >"$tmp/help.out" 2>&1
      grep -qE '^\s+--[a-z_]+ \(' "$tmp/help.out" && pass "$out/bin/$name runs from the bundle" ||
        fail "$out/bin/$name does not run from the bundle: $(head -3 "$tmp/help.out")"
    fi
  done
done <"$tmp/bundles.txt"
worker_lib="$tmp/bundle/out/worker/lib"
# Debian's OpenBLAS libblas.so.3 is a thin library over libopenblas.so.0.
# (Outputs captured first: with pipefail, grep -q closing the pipe early
# would fail the pipeline.)
blas_ldd=$(env -i LD_LIBRARY_PATH="$worker_lib" ldd "$worker_lib/libblas.so.3" 2>&1)
openblas_symbols=$(nm -D --defined-only "$worker_lib/libopenblas.so.0" 2>&1)
if grep -q "libopenblas.so.0 => $worker_lib/" <<<"$blas_ldd" &&
  grep -q openblas_set_num_threads <<<"$openblas_symbols"; then
  pass "the worker bundle's libblas.so.3 is OpenBLAS"
else
  fail "the worker bundle's libblas.so.3 is missing or not OpenBLAS (libtorch would be ~24x slower)"
fi
bundle="$tmp/bundle/out/coordinator"
env -i LD_LIBRARY_PATH="$bundle/lib" "$bundle/bin/podtrain-coordinator" --address=127.0.0.1:0 \
  --port_file="$tmp/port" --metrics_address=127.0.0.1:0 --health_address=127.0.0.1:0 \
  --journal="$tmp/journal.db" >"$tmp/coordinator.log" 2>&1 &
pid=$!
for _ in $(seq 300); do [[ -s "$tmp/port" ]] && break; sleep 0.1; done
if [[ -s "$tmp/port" ]] && env -i LD_LIBRARY_PATH="$bundle/lib" "$bundle/bin/podtrain" \
  --coordinator="127.0.0.1:$(cat "$tmp/port")" list >"$tmp/list.out" 2>&1; then
  pass "the bundled coordinator serves; the bundled CLI talks to it"
else
  fail "the bundled coordinator: $(tail -3 "$tmp/coordinator.log") $(cat "$tmp/list.out" 2>/dev/null)"
fi
kill -TERM "$pid" 2>/dev/null
wait "$pid" 2>/dev/null

echo "$passed passed, $failed failed"
((failed == 0))
