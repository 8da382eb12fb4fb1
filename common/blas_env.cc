#include "common/blas_env.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"

namespace podtrain {
namespace {

constexpr char kReexecMarker[] = "PODTRAIN_BLAS_REEXEC";

std::string CpuFlags() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (absl::StartsWith(line, "flags")) {
      const size_t colon = line.find(':');
      return colon == std::string::npos ? "" : line.substr(colon + 1);
    }
  }
  return "";
}

}  // namespace

std::string BestOpenblasCoretype(absl::string_view cpu_flags) {
  const std::set<absl::string_view> flags =
      absl::StrSplit(cpu_flags, ' ', absl::SkipWhitespace());
  const auto has = [&](absl::string_view flag) { return flags.count(flag); };
  if (has("avx512f") && has("avx512bw") && has("avx512vl")) return "SkylakeX";
  if (has("avx2") && has("fma")) return "Haswell";
  return "";
}

int OpenblasCoreLevel(absl::string_view core_name) {
  const std::string name = absl::AsciiStrToLower(core_name);
  if (name == "skylakex" || name == "cooperlake" || name == "sapphirerapids") {
    return 3;
  }
  if (name == "haswell" || name == "zen") return 2;
  if (name == "sandybridge") return 1;
  return 0;
}

std::string CoretypeToForce(const char* env_coretype,
                            absl::string_view loaded_core_name,
                            absl::string_view cpu_flags) {
  if (env_coretype != nullptr) return "";  // the operator's choice wins
  const std::string best = BestOpenblasCoretype(cpu_flags);
  if (best.empty()) return "";
  return OpenblasCoreLevel(loaded_core_name) < OpenblasCoreLevel(best) ? best
                                                                       : "";
}

void SetBlasThreads(int threads) {
  using SetThreads = void (*)(int);
  auto set = reinterpret_cast<SetThreads>(
      dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set != nullptr) set(threads);
}

void MaybeReexecForBlas(char** argv) {
  if (getenv(kReexecMarker) != nullptr) return;
  using CoreName = char* (*)();
  const auto core_name =
      reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (core_name == nullptr) return;  // not OpenBLAS: nothing to fix
  const char* loaded = core_name();
  const std::string force = CoretypeToForce(getenv("OPENBLAS_CORETYPE"),
                                            loaded ? loaded : "", CpuFlags());
  if (force.empty()) return;
  setenv("OPENBLAS_CORETYPE", force.c_str(), /*overwrite=*/1);
  setenv(kReexecMarker, "1", /*overwrite=*/1);
  // No logging library is set up yet: say it on stderr, once.
  fprintf(stderr,
          "%s: OpenBLAS chose its %s kernels on a CPU that runs %s; "
          "restarting with OPENBLAS_CORETYPE=%s (set OPENBLAS_CORETYPE to "
          "choose yourself, empty to keep OpenBLAS's choice)\n",
          argv[0], loaded ? loaded : "?", force.c_str(), force.c_str());
  execv("/proc/self/exe", argv);
  fprintf(stderr, "%s: re-exec failed (%s); going on with %s\n", argv[0],
          strerror(errno), loaded ? loaded : "?");
}

}  // namespace podtrain
