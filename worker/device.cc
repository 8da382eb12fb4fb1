#include "worker/device.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace podtrain::worker {

bool BuiltWithNccl() {
#ifdef PODTRAIN_WITH_NCCL
  return true;
#else
  return false;
#endif
}

absl::StatusOr<torch::Device> ResolveDevice(absl::string_view name) {
  if (name == "cpu") return torch::Device(torch::kCPU);
  absl::string_view rest = name;
  int index = 0;
  const bool cuda =
      absl::ConsumePrefix(&rest, "cuda") &&
      (rest.empty() || (absl::ConsumePrefix(&rest, ":") &&
                        absl::SimpleAtoi(rest, &index) && index >= 0));
  if (!cuda) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device: must be 'cpu', 'cuda' or 'cuda:<index>', got '", name, "'"));
  }
  if (!BuiltWithNccl()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", name,
        ": this podtrain-worker was built without CUDA and NCCL; build it "
        "with `bazel build --config=cuda //worker:podtrain-worker`"));
  }
  if (!torch::cuda::is_available()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", name,
        ": libtorch sees no CUDA device (a CPU-only libtorch, such as "
        "Debian's, or no GPU visible to this process)"));
  }
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (index >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", name, ": only ", count, " CUDA device",
                     count == 1 ? "" : "s", " visible"));
  }
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

}  // namespace podtrain::worker
