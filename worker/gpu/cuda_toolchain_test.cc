// Built and run only under --config=cuda. Proves the toolchain: host code
// calling NCCL and launching a kernel compiled by nvcc links and runs. No
// machine podtrain is tested on has a GPU, so the device branch only runs
// where one exists; NCCL's unique id (the bootstrap token rank 0 hands out
// through the coordinator) needs no device and is checked everywhere.

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <nccl.h>

#include <cstring>
#include <vector>

#include "worker/gpu/scale_kernel.h"

namespace podtrain::gpu {
namespace {

TEST(CudaToolchainTest, NcclLinksAndReportsItsVersion) {
  int version = 0;
  ASSERT_EQ(ncclGetVersion(&version), ncclSuccess);
  EXPECT_GE(version, 22800) << "NCCL 2.28 or newer expected";
}

TEST(CudaToolchainTest, NcclUniqueIdNeedsNoDevice) {
  ncclUniqueId first;
  ncclUniqueId second;
  ASSERT_EQ(ncclGetUniqueId(&first), ncclSuccess);
  ASSERT_EQ(ncclGetUniqueId(&second), ncclSuccess);
  EXPECT_EQ(sizeof(first.internal), 128u);
  // Each call names a fresh bootstrap endpoint.
  EXPECT_NE(std::memcmp(first.internal, second.internal, sizeof(first)), 0);
}

TEST(CudaToolchainTest, KernelLaunchRunsOnADeviceOrFailsCleanly) {
  int devices = 0;
  const cudaError_t count_error = cudaGetDeviceCount(&devices);
  if (count_error != cudaSuccess || devices == 0) {
    // The machines here: the runtime must report the missing driver/device as
    // an error, and launching must fail with an error rather than crash.
    EXPECT_NE(count_error == cudaSuccess ? cudaErrorNoDevice : count_error,
              cudaSuccess);
    EXPECT_NE(LaunchScale(2.0f, nullptr, nullptr, 16, nullptr), cudaSuccess);
    return;
  }
  constexpr int kN = 1000;
  std::vector<float> host(kN);
  for (int i = 0; i < kN; ++i) host[i] = static_cast<float>(i);
  float* x = nullptr;
  float* y = nullptr;
  ASSERT_EQ(cudaMalloc(&x, kN * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&y, kN * sizeof(float)), cudaSuccess);
  ASSERT_EQ(
      cudaMemcpy(x, host.data(), kN * sizeof(float), cudaMemcpyHostToDevice),
      cudaSuccess);
  ASSERT_EQ(LaunchScale(2.0f, x, y, kN, nullptr), cudaSuccess);
  std::vector<float> out(kN);
  ASSERT_EQ(
      cudaMemcpy(out.data(), y, kN * sizeof(float), cudaMemcpyDeviceToHost),
      cudaSuccess);
  for (int i = 0; i < kN; ++i) EXPECT_EQ(out[i], 2.0f * i);
  cudaFree(x);
  cudaFree(y);
}

}  // namespace
}  // namespace podtrain::gpu
