// The NCCL backend of Communicator (worker/collectives.h): CUDA tensors,
// NCCL 2.28 from /usr/local/cuda. Built only with --config=cuda.
//
// NOT RUN HERE: no machine podtrain is built or tested on has a GPU. What is
// unit-tested (nccl_communicator_test.cc) is what needs no device: the
// ncclResult_t -> Status mapping, the dtype mapping, the unique-id
// rendezvous through a real coordinator store, and that ConnectNccl on a
// machine without a GPU fails with a clear error. Real NCCL collectives,
// ncclCommInitRankConfig, and the abort/poll paths below have been compiled
// and linked, never executed.
//
// Forming the world: rank 0 calls ncclGetUniqueId and publishes the 128
// bytes through the store under "nccl_unique_id" (the store adds the
// generation's prefix: "<job>/generation/<g>/nccl_unique_id"); the other
// ranks wait for it (options.timeout). Every rank then calls
// ncclCommInitRankConfig with config.blocking = 0 and polls
// ncclCommGetAsyncError until the communicator is ready, fails, or the
// timeout passes (then it is aborted).
//
// Operations are non-blocking, as NCCL's fault-tolerance guidance requires
// ("To abort safely, communicators must be non-blocking"): the collective is
// enqueued on this communicator's CUDA stream, then the calling thread polls
// ncclCommGetAsyncError and cudaStreamQuery (never cudaStreamSynchronize,
// which can hang forever once a peer is gone) until it completes, fails,
// Abort() is requested, or the timeout passes. Abort() only sets an atomic
// flag when an operation is in flight; the polling thread sees it and calls
// ncclCommAbort itself, so the communicator is never freed under a thread
// still using it. When idle, Abort() aborts the communicator directly. NCCL
// never aborts survivors for us when a peer dies: each rank must call
// ncclCommAbort itself, which every failure path here does.
//
// Streams: the communicator's stream is created with cudaStreamCreate (a
// blocking stream), so it is ordered after work on the legacy default
// stream, where libtorch runs by default. Work on other streams must be
// synchronized by the caller before handing its tensor over. (Debian's
// libtorch is CPU-only, so c10::cuda's current stream is not available to
// build against.)
//
// Thread-safety: as Communicator (one thread for operations, Abort() from
// any). ConnectNccl is thread-safe.

#ifndef PODTRAIN_WORKER_NCCL_COMMUNICATOR_H_
#define PODTRAIN_WORKER_NCCL_COMMUNICATOR_H_

#include <gloo/rendezvous/store.h>
#include <nccl.h>
#include <torch/torch.h>

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/collectives.h"

namespace podtrain::worker {

// The store key (before the store's prefix) rank 0 publishes the id under.
inline constexpr char kNcclUniqueIdKey[] = "nccl_unique_id";

// `result` as a Status about `what`: OK for ncclSuccess; otherwise a message
// with ncclGetErrorString (and ncclGetLastError(comm) when `comm` is given):
//   ncclSystemError, ncclRemoteError       UNAVAILABLE (a peer or the
//                                          network failed)
//   ncclUnhandledCudaError, ncclInternalError  INTERNAL
//   ncclInvalidArgument                    INVALID_ARGUMENT
//   ncclInvalidUsage                       FAILED_PRECONDITION
//   ncclInProgress                         INTERNAL (not a final result)
//   anything else                          UNKNOWN
absl::Status NcclStatus(ncclResult_t result, absl::string_view what,
                        ncclComm_t comm = nullptr);

// The NCCL type of a torch dtype; INVALID_ARGUMENT for one NCCL lacks.
absl::StatusOr<ncclDataType_t> NcclDataType(torch::ScalarType dtype);

// Rank 0: makes a unique id (ncclGetUniqueId) and publishes it under
// kNcclUniqueIdKey. Other ranks: wait up to `timeout` for it and return it.
// Errors: DEADLINE_EXCEEDED if rank 0 never published; the store's errors
// (see worker/coordinator_store.h); INTERNAL for a value that is not 128
// bytes.
absl::StatusOr<ncclUniqueId> ExchangeNcclUniqueId(
    gloo::rendezvous::Store& store, int rank, absl::Duration timeout);

// Forms the NCCL world on CUDA device `cuda_device` (see above). `store` may
// be null only for a world of one. AllReduceSum takes contiguous CUDA
// tensors on `cuda_device` of float16/bfloat16/float32/float64/int8/uint8/
// int32/int64; Broadcast any dtype.
// Errors: FAILED_PRECONDITION when there is no usable CUDA device (the
// message carries the CUDA runtime's reason); INVALID_ARGUMENT for bad
// options; DEADLINE_EXCEEDED if the world did not form within
// options.timeout; otherwise NcclStatus's mapping.
absl::StatusOr<std::unique_ptr<Communicator>> ConnectNccl(
    const CommunicatorOptions& options, int cuda_device,
    std::shared_ptr<gloo::rendezvous::Store> store);

}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_NCCL_COMMUNICATOR_H_
