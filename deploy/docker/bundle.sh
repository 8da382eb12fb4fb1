#!/usr/bin/env bash
# Copies podtrain binaries and every shared library they load into OUT, for
# a runtime image that has nothing but a C library:
#
#   bundle.sh OUT BINARY...
#
# OUT/bin/<binary>, OUT/lib/<soname> (run with LD_LIBRARY_PATH=OUT/lib). The
# libraries are what `ldd` resolves on the build machine, under the name the
# binary asks for: libblas.so.3 is the OpenBLAS the build stage's
# alternatives point at, not the reference BLAS. Left out, because the
# runtime image provides them and they must match it: the C library and the
# dynamic loader (glibc >= the build stage's 2.36), libstdc++ and libgcc_s,
# and the NVIDIA driver's libraries (libcuda, libnvidia-*), which the NVIDIA
# container runtime mounts. Fails if a library cannot be found.
set -euo pipefail
if (($# < 2)); then
  echo "usage: $0 OUT BINARY..." >&2
  exit 2
fi
out="$1"
shift
mkdir -p "$out/bin" "$out/lib"

# Provided by the runtime image (see above).
provided='^(linux-vdso\.so|ld-linux.*\.so|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|libutil\.so|libresolv\.so|libnss_.*|libstdc\+\+\.so|libgcc_s\.so|libcuda\.so|libnvidia-.*)'

for binary in "$@"; do
  [[ -x "$binary" ]] || { echo "bundle: $binary is not an executable" >&2; exit 1; }
  install -m 0755 "$(readlink -f "$binary")" "$out/bin/$(basename "$binary")"
  ldd_output=$(ldd "$binary")
  if grep -q 'not found' <<<"$ldd_output"; then
    echo "bundle: $binary: unresolved libraries:" >&2
    grep 'not found' <<<"$ldd_output" >&2
    exit 1
  fi
  # "libfoo.so.1 => /path/libfoo.so.1 (0x...)"
  while read -r soname arrow path _; do
    [[ "$arrow" == "=>" && -n "$path" ]] || continue
    [[ "$soname" =~ $provided ]] && continue
    [[ -e "$out/lib/$soname" ]] || install -m 0644 "$(readlink -f "$path")" "$out/lib/$soname"
  done <<<"$ldd_output"
done
echo "bundle: $(ls "$out/bin" | wc -l) binaries, $(ls "$out/lib" | wc -l) libraries," \
  "$(du -sh "$out" | cut -f1) in $out"
