"""cuda_library: compile .cu files with /usr/local/cuda's nvcc (--config=cuda).

Bazel 4 has no CUDA rules offline, so each .cu becomes a position-independent
object through a genrule and is linked by a cc_library. Targets built with
this macro are incompatible (skipped by `bazel build //...`) unless
--config=cuda is set, so the default build needs no CUDA toolkit.
"""

CUDA_ARCH = "sm_90"

def cuda_only():
    """target_compatible_with value for targets that need the CUDA toolkit."""
    return select({
        "//third_party:cuda_enabled": [],
        "//conditions:default": ["//third_party:incompatible"],
    })

def cuda_library(name, srcs, hdrs = [], deps = [], visibility = None):
    objs = []
    for src in srcs:
        obj = src[:-len(".cu")] + ".cu.pic.o"
        native.genrule(
            name = name + "_" + src.replace("/", "_").replace(".", "_"),
            srcs = [src] + hdrs,
            outs = [obj],
            cmd = " ".join([
                "/usr/local/cuda/bin/nvcc",
                "-std=c++17",
                "-O2",
                "-arch=" + CUDA_ARCH,
                "-Xcompiler -fPIC",
                "-I.",
                "-c $(location %s)" % src,
                "-o $@",
            ]),
            target_compatible_with = cuda_only(),
            message = "nvcc " + src,
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        deps = deps + ["@cuda//:cudart"],
        target_compatible_with = cuda_only(),
        visibility = visibility,
    )
