// Picks OpenBLAS's kernels when OpenBLAS itself picks badly.
//
// Debian's OpenBLAS 0.3.21 does not recognise some CPUs (the AVX-512 Xeons
// of the VMs podtrain is built on report a model it has no table entry
// for) and falls back to its Prescott (SSE3) kernels: about a fifth of the
// fp32 GEMM rate the CPU can do, so training runs ~3x slower. OpenBLAS
// reads OPENBLAS_CORETYPE once, while the dynamic loader initialises it,
// before main(); so the only fix from inside the process is to set the
// variable and exec the binary again.
//
// Policy: an OPENBLAS_CORETYPE already in the environment always wins (set
// it empty to keep OpenBLAS's own choice). Otherwise, when the kernels
// OpenBLAS chose use fewer vector extensions than the CPU reports, the
// worker re-executes itself once with the best core type the CPU supports.
//
// Thread-safety: call MaybeReexecForBlas at the top of main(), before any
// thread starts; the pure functions are safe anywhere.

#ifndef PODTRAIN_COMMON_BLAS_ENV_H_
#define PODTRAIN_COMMON_BLAS_ENV_H_

#include <string>

#include "absl/strings/string_view.h"

namespace podtrain {

// The OpenBLAS core type for a CPU with these /proc/cpuinfo "flags"
// (space-separated): "SkylakeX" with AVX-512 F/BW/VL, "Haswell" with AVX2
// and FMA, "" otherwise (nothing better than OpenBLAS's generic choice).
std::string BestOpenblasCoretype(absl::string_view cpu_flags);

// How wide the vector kernels of an OpenBLAS core name are (as
// openblas_get_corename() spells it, any case): 3 for the AVX-512 cores,
// 2 for the AVX2 ones, 1 for Sandy Bridge (AVX), 0 for anything older or
// unknown.
int OpenblasCoreLevel(absl::string_view core_name);

// What to export before re-executing: the core type to force, or "" to
// leave things as they are. `env_coretype` is null when OPENBLAS_CORETYPE
// is unset.
std::string CoretypeToForce(const char* env_coretype,
                            absl::string_view loaded_core_name,
                            absl::string_view cpu_flags);

// Applies the policy above to this process: may not return (execv of
// /proc/self/exe with the same argv). Does nothing when OpenBLAS is not
// loaded, after one re-exec (PODTRAIN_BLAS_REEXEC is set), or when the exec
// fails (it then logs why and training goes on with OpenBLAS's choice).
void MaybeReexecForBlas(char** argv);

// OpenBLAS keeps its own thread pool, sized to every core unless told
// otherwise: torch::set_num_threads does not reach it. Looked up at run
// time, so any BLAS links (a BLAS without the call is left alone).
void SetBlasThreads(int threads);

}  // namespace podtrain

#endif  // PODTRAIN_COMMON_BLAS_ENV_H_
