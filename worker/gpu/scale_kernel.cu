#include "worker/gpu/scale_kernel.h"

namespace podtrain::gpu {
namespace {

__global__ void ScaleKernel(float a, const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i];
}

}  // namespace

cudaError_t LaunchScale(float a, const float* x, float* y, int n,
                        cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int blocks = (n + kThreads - 1) / kThreads;
  ScaleKernel<<<blocks, kThreads, 0, stream>>>(a, x, y, n);
  return cudaGetLastError();
}

}  // namespace podtrain::gpu
