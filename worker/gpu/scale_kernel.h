// A minimal CUDA kernel (y = a * x) behind a host-callable launcher. It exists
// so the --config=cuda build proves that .cu files compile with nvcc and link
// with host code; the NCCL collective backend (worker issue) builds on the
// same toolchain.
//
// Thread-safety: stateless; safe from any thread with its own stream.

#ifndef PODTRAIN_WORKER_GPU_SCALE_KERNEL_H_
#define PODTRAIN_WORKER_GPU_SCALE_KERNEL_H_

#include <cuda_runtime_api.h>

namespace podtrain::gpu {

// Enqueues y[i] = a * x[i] for i in [0, n) on `stream`. x and y are device
// pointers. Returns the launch error (cudaSuccess if enqueued).
cudaError_t LaunchScale(float a, const float* x, float* y, int n,
                        cudaStream_t stream);

}  // namespace podtrain::gpu

#endif  // PODTRAIN_WORKER_GPU_SCALE_KERNEL_H_
