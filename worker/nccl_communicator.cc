#include "worker/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <gloo/common/error.h>
#include <gloo/common/logging.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "worker/coordinator_store.h"

namespace podtrain::worker {
namespace {

absl::Status CudaStatus(cudaError_t error, absl::string_view what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorName(error),
                                          ": ", cudaGetErrorString(error)));
}

// The status of the exception being handled (the store's, or gloo's).
absl::Status StoreExceptionStatus(absl::string_view what) {
  try {
    throw;
  } catch (const CoordinatorStoreError& e) {
    return WithContext(e.status(), what);
  } catch (const gloo::IoException& e) {
    return absl::UnavailableError(absl::StrCat(what, ": ", e.what()));
  } catch (const gloo::EnforceNotMet& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

// Polls with a short backoff: NCCL operations on a GPU take microseconds
// to milliseconds, so the first checks come quickly; a long wait (a peer
// gone or slow) costs at most one check per millisecond.
class Backoff {
 public:
  void Wait() {
    absl::SleepFor(delay_);
    delay_ = std::min(delay_ * 2, absl::Milliseconds(1));
  }

 private:
  absl::Duration delay_ = absl::Microseconds(10);
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const CommunicatorOptions& options, int device,
                   ncclComm_t comm, cudaStream_t stream, float* scratch)
      : rank_(options.rank),
        world_size_(options.world_size),
        device_(device),
        timeout_(options.timeout),
        comm_(comm),
        stream_(stream),
        scratch_(scratch) {}

  ~NcclCommunicator() override {
    // Abort, not ncclCommDestroy: a communicator ends with its generation,
    // when peers may be gone, and aborting never waits on them.
    AbortCommunicatorIfIdle();
    cudaSetDevice(device_);
    cudaFree(scratch_);
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  absl::Status AllReduceSum(torch::Tensor& tensor) override {
    RETURN_IF_ERROR(CheckTensor("AllReduceSum", tensor));
    ASSIGN_OR_RETURN(const ncclDataType_t type,
                     NcclDataType(tensor.scalar_type()));
    void* data = tensor.data_ptr();
    const size_t count = tensor.numel();
    return Run(absl::StrCat("AllReduceSum of ", count * tensor.element_size(),
                            " bytes"),
               [&] {
                 return ncclAllReduce(data, data, count, type, ncclSum, comm_,
                                      stream_);
               });
  }

  absl::Status Broadcast(torch::Tensor& tensor, int root) override {
    RETURN_IF_ERROR(CheckTensor("Broadcast", tensor));
    if (root < 0 || root >= world_size_) {
      return absl::InvalidArgumentError(
          absl::StrCat("Broadcast: root ", root,
                       " is not a rank of a world of ", world_size_));
    }
    void* data = tensor.data_ptr();
    const size_t bytes = tensor.numel() * tensor.element_size();
    return Run(absl::StrCat("Broadcast of ", bytes, " bytes"), [&] {
      return ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_);
    });
  }

  absl::Status Barrier() override {
    // NCCL has no barrier: an all-reduce of one float completes on a rank
    // only once every rank has entered it.
    return Run("Barrier", [&] {
      return ncclAllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_,
                           stream_);
    });
  }

  void Abort() override {
    abort_requested_.store(true);
    AbortCommunicatorIfIdle();
  }

 private:
  absl::Status CheckTensor(absl::string_view what,
                           const torch::Tensor& tensor) const {
    if (!tensor.defined() || !tensor.is_cuda() ||
        tensor.device().index() != device_ || !tensor.is_contiguous()) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": NCCL needs a contiguous tensor on cuda:", device_,
          tensor.defined()
              ? absl::StrCat(", got one on ", tensor.device().str())
              : ", got an undefined tensor"));
    }
    return absl::OkStatus();
  }

  // Aborts the communicator now unless an operation is polling it (that
  // thread aborts it when it sees the flag). Idempotent.
  void AbortCommunicatorIfIdle() {
    absl::MutexLock lock(&mu_);
    if (comm_aborted_ || in_op_) return;
    comm_aborted_ = true;
    const ncclResult_t result = ncclCommAbort(comm_);
    if (result != ncclSuccess) {
      LOG(WARNING) << NcclStatus(result, "ncclCommAbort");
    }
  }

  // Enqueues one collective (`launch`) and polls it to completion. A failure
  // aborts the communicator and breaks it for good.
  template <typename Launch>
  absl::Status Run(const std::string& what, Launch launch) {
    if (!broken_.ok()) return broken_;
    {
      absl::MutexLock lock(&mu_);
      if (abort_requested_.load() || comm_aborted_) {
        broken_ = absl::AbortedError(absl::StrCat(
            what, ": NCCL communicator of rank ", rank_, " was aborted"));
        return broken_;
      }
      in_op_ = true;
    }
    absl::Status status = CudaStatus(cudaSetDevice(device_), "cudaSetDevice");
    if (status.ok()) {
      const ncclResult_t launched = launch();
      if (launched != ncclSuccess && launched != ncclInProgress) {
        status = NcclStatus(launched, what, comm_);
      } else {
        status = Poll(what);
      }
    }
    {
      absl::MutexLock lock(&mu_);
      in_op_ = false;
    }
    if (status.ok()) return status;
    // Every rank must abort its own communicator after an error.
    AbortCommunicatorIfIdle();
    broken_ = absl::Status(
        status.code(), absl::StrCat(status.message(), " (rank ", rank_, " of ",
                                    world_size_, ")"));
    return broken_;
  }

  // Waits for the enqueued collective: done when NCCL reports no pending
  // error and the stream has drained.
  absl::Status Poll(const std::string& what) {
    const absl::Time deadline = absl::Now() + timeout_;
    Backoff backoff;
    while (true) {
      if (abort_requested_.load()) {
        return absl::AbortedError(absl::StrCat(
            what, ": NCCL communicator of rank ", rank_, " was aborted"));
      }
      ncclResult_t async = ncclSuccess;
      const ncclResult_t queried = ncclCommGetAsyncError(comm_, &async);
      if (queried != ncclSuccess) return NcclStatus(queried, what, comm_);
      if (async != ncclSuccess && async != ncclInProgress) {
        return NcclStatus(async, what, comm_);
      }
      if (async == ncclSuccess) {
        const cudaError_t stream = cudaStreamQuery(stream_);
        if (stream == cudaSuccess) return absl::OkStatus();
        if (stream != cudaErrorNotReady) {
          return CudaStatus(stream, absl::StrCat(what, ": cudaStreamQuery"));
        }
      }
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            what, ": did not finish within ", absl::FormatDuration(timeout_)));
      }
      backoff.Wait();
    }
  }

  const int rank_;
  const int world_size_;
  const int device_;
  const absl::Duration timeout_;
  const ncclComm_t comm_;
  const cudaStream_t stream_;
  float* const scratch_;  // one float on the device, for Barrier

  std::atomic<bool> abort_requested_{false};
  absl::Mutex mu_;
  bool in_op_ ABSL_GUARDED_BY(mu_) = false;
  bool comm_aborted_ ABSL_GUARDED_BY(mu_) = false;

  // Used only by the thread issuing operations.
  absl::Status broken_;
};

// Initialises a non-blocking communicator and polls it ready. On failure
// the communicator has been aborted.
absl::StatusOr<ncclComm_t> InitCommunicator(const CommunicatorOptions& options,
                                            const ncclUniqueId& id) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  const ncclResult_t started = ncclCommInitRankConfig(
      &comm, options.world_size, id, options.rank, &config);
  if (started != ncclSuccess && started != ncclInProgress) {
    if (comm != nullptr) ncclCommAbort(comm);
    return NcclStatus(started, "ncclCommInitRankConfig");
  }
  const absl::Time deadline = absl::Now() + options.timeout;
  Backoff backoff;
  while (true) {
    ncclResult_t state = ncclInProgress;
    const ncclResult_t queried = ncclCommGetAsyncError(comm, &state);
    absl::Status status;
    if (queried != ncclSuccess) {
      status = NcclStatus(queried, "ncclCommGetAsyncError", comm);
    } else if (state == ncclSuccess) {
      return comm;
    } else if (state != ncclInProgress) {
      status = NcclStatus(state, "ncclCommInitRankConfig", comm);
    } else if (absl::Now() >= deadline) {
      status = absl::DeadlineExceededError(absl::StrCat(
          "ncclCommInitRankConfig: the world of ", options.world_size,
          " did not form within ", absl::FormatDuration(options.timeout)));
    }
    if (!status.ok()) {
      ncclCommAbort(comm);
      return status;
    }
    backoff.Wait();
  }
}

}  // namespace

absl::Status NcclStatus(ncclResult_t result, absl::string_view what,
                        ncclComm_t comm) {
  if (result == ncclSuccess) return absl::OkStatus();
  absl::StatusCode code;
  switch (result) {
    case ncclSystemError:
    case ncclRemoteError:
      code = absl::StatusCode::kUnavailable;
      break;
    case ncclUnhandledCudaError:
    case ncclInternalError:
    case ncclInProgress:  // callers poll it away; as a final result, a bug
      code = absl::StatusCode::kInternal;
      break;
    case ncclInvalidArgument:
      code = absl::StatusCode::kInvalidArgument;
      break;
    case ncclInvalidUsage:
      code = absl::StatusCode::kFailedPrecondition;
      break;
    default:
      code = absl::StatusCode::kUnknown;
      break;
  }
  std::string message = absl::StrCat(what, ": ", ncclGetErrorString(result),
                                     " (ncclResult_t ", result, ")");
  if (comm != nullptr) {
    const char* detail = ncclGetLastError(comm);
    if (detail != nullptr && detail[0] != '\0') {
      absl::StrAppend(&message, ": ", detail);
    }
  }
  return absl::Status(code, message);
}

absl::StatusOr<ncclDataType_t> NcclDataType(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat16:
      return ncclFloat16;
    case torch::kBFloat16:
      return ncclBfloat16;
    case torch::kFloat32:
      return ncclFloat32;
    case torch::kFloat64:
      return ncclFloat64;
    case torch::kInt8:
      return ncclInt8;
    case torch::kUInt8:
      return ncclUint8;
    case torch::kInt32:
      return ncclInt32;
    case torch::kInt64:
      return ncclInt64;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "NCCL cannot reduce ", c10::toString(dtype), " tensors"));
  }
}

absl::StatusOr<ncclUniqueId> ExchangeNcclUniqueId(
    gloo::rendezvous::Store& store, int rank, absl::Duration timeout) {
  ncclUniqueId id;
  if (rank == 0) {
    RETURN_IF_ERROR(NcclStatus(ncclGetUniqueId(&id), "ncclGetUniqueId"));
    try {
      store.set(kNcclUniqueIdKey,
                std::vector<char>(id.internal, id.internal + sizeof(id)));
    } catch (...) {
      return StoreExceptionStatus("publishing the NCCL unique id");
    }
    return id;
  }
  std::vector<char> value;
  try {
    store.wait({kNcclUniqueIdKey}, absl::ToChronoMilliseconds(timeout));
    value = store.get(kNcclUniqueIdKey);
  } catch (...) {
    return StoreExceptionStatus("waiting for rank 0's NCCL unique id");
  }
  if (value.size() != sizeof(id.internal)) {
    return absl::InternalError(absl::StrCat("the published NCCL unique id has ",
                                            value.size(), " bytes, not ",
                                            sizeof(id.internal)));
  }
  std::memcpy(id.internal, value.data(), sizeof(id.internal));
  return id;
}

absl::StatusOr<std::unique_ptr<Communicator>> ConnectNccl(
    const CommunicatorOptions& options, int cuda_device,
    std::shared_ptr<gloo::rendezvous::Store> store) {
  if (options.world_size < 1 || options.rank < 0 ||
      options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " of a world of ",
                     options.world_size, " is not a valid rank"));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeout must be positive");
  }
  if (store == nullptr && options.world_size > 1) {
    return absl::InvalidArgumentError(
        "a world of more than one rank needs a rendezvous store");
  }
  // Check the device before the rendezvous: a rank without a GPU should say
  // so at once, not after its peers have waited for it.
  int devices = 0;
  const cudaError_t counted = cudaGetDeviceCount(&devices);
  if (counted != cudaSuccess || devices == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no usable CUDA device for NCCL: cudaGetDeviceCount: ",
        counted == cudaSuccess ? "0 devices"
                               : absl::StrCat(cudaGetErrorName(counted), ": ",
                                              cudaGetErrorString(counted))));
  }
  if (cuda_device < 0 || cuda_device >= devices) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", cuda_device,
                                                   " does not exist (", devices,
                                                   " devices)"));
  }
  ncclUniqueId id;
  if (options.world_size == 1) {
    RETURN_IF_ERROR(NcclStatus(ncclGetUniqueId(&id), "ncclGetUniqueId"));
  } else {
    ASSIGN_OR_RETURN(
        id, ExchangeNcclUniqueId(*store, options.rank, options.timeout));
  }
  RETURN_IF_ERROR(CudaStatus(cudaSetDevice(cuda_device), "cudaSetDevice"));
  cudaStream_t stream = nullptr;
  RETURN_IF_ERROR(CudaStatus(cudaStreamCreate(&stream), "cudaStreamCreate"));
  float* scratch = nullptr;
  absl::Status allocated =
      CudaStatus(cudaMalloc(&scratch, sizeof(float)), "cudaMalloc");
  if (!allocated.ok()) {
    cudaStreamDestroy(stream);
    return allocated;
  }
  absl::StatusOr<ncclComm_t> comm = InitCommunicator(options, id);
  if (!comm.ok()) {
    cudaFree(scratch);
    cudaStreamDestroy(stream);
    return WithContext(
        comm.status(),
        absl::StrCat("forming the NCCL world of ", options.world_size,
                     " ranks as rank ", options.rank));
  }
  return std::unique_ptr<Communicator>(std::make_unique<NcclCommunicator>(
      options, cuda_device, *comm, stream, scratch));
}

}  // namespace podtrain::worker
