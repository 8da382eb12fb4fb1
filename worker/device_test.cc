#include "worker/device.h"

#include <gtest/gtest.h>

namespace podtrain::worker {
namespace {

TEST(DeviceTest, CpuIsAlwaysThere) {
  auto device = ResolveDevice("cpu");
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_TRUE(device->is_cpu());
}

TEST(DeviceTest, MalformedNamesAreInvalid) {
  for (const char* name :
       {"", "gpu", "cuda:", "cuda:-1", "cuda:x", "CPU", "cuda0", "tpu:0"}) {
    const auto device = ResolveDevice(name);
    EXPECT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument)
        << name << ": " << device.status();
    EXPECT_NE(device.status().message().find("device: must be"),
              std::string::npos);
  }
}

// No machine here has a GPU, and Debian's libtorch is CPU-only: CUDA must be
// refused up front with the reason, in both build configurations. (On a
// GPU machine with a CUDA libtorch and a --config=cuda build, cuda:0 works.)
TEST(DeviceTest, CudaIsUsableOrRefusedWithTheReason) {
  const bool usable = BuiltWithNccl() && torch::cuda::is_available();
  for (const char* name : {"cuda", "cuda:0"}) {
    const auto device = ResolveDevice(name);
    if (usable) {
      ASSERT_TRUE(device.ok()) << device.status();
      EXPECT_TRUE(device->is_cuda());
      continue;
    }
    EXPECT_EQ(device.status().code(), absl::StatusCode::kFailedPrecondition)
        << device.status();
    const std::string expected = BuiltWithNccl()
                                     ? "libtorch sees no CUDA device"
                                     : "built without CUDA and NCCL";
    EXPECT_NE(device.status().message().find(expected), std::string::npos)
        << device.status();
  }
  EXPECT_EQ(ResolveDevice("cuda:4096").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace podtrain::worker
