// Where a worker computes: the CPU (with Gloo collectives) or one CUDA
// device (with NCCL collectives), chosen by the worker's --device flag.
//
// CUDA needs two things this file checks up front, so a misconfigured
// worker fails at startup with a message instead of deep inside a step:
// a podtrain-worker built with --config=cuda (it links NCCL), and a libtorch
// that sees the device (Debian's libtorch is CPU-only; a CUDA build of
// libtorch is needed on GPU machines).
//
// Thread-safety: pure functions; thread-safe.

#ifndef PODTRAIN_WORKER_DEVICE_H_
#define PODTRAIN_WORKER_DEVICE_H_

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace podtrain::worker {

// Whether this binary was built with the NCCL backend (--config=cuda).
bool BuiltWithNccl();

// Parses "cpu", "cuda" (device 0) or "cuda:N" and checks the device is
// usable. INVALID_ARGUMENT names a malformed spelling; FAILED_PRECONDITION
// says why a CUDA device cannot be used (no NCCL in this build, libtorch
// without CUDA or with no visible device, an index past the device count).
absl::StatusOr<torch::Device> ResolveDevice(absl::string_view name);

}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_DEVICE_H_
