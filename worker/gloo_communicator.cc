#include "worker/gloo_communicator.h"

#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/common/logging.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "worker/coordinator_store.h"

namespace podtrain::worker {
namespace {

// How long a destructor waits for an op thread stuck in gloo before leaving
// it to finish by gloo's timeout on its own (see GlooCommunicator::Shared).
constexpr absl::Duration kOpThreadExitGrace = absl::Seconds(1);

using ReduceFn = void (*)(void*, const void*, const void*, size_t);

// The status for the exception being handled, about `what`.
absl::Status StatusFromCurrentException(absl::string_view what) {
  try {
    throw;
  } catch (const CoordinatorStoreError& e) {
    return WithContext(e.status(), what);
  } catch (const gloo::IoException& e) {
    // Gloo's timeouts ("Timed out waiting ...", "Connect timeout", "Read
    // timeout", "Application timeout caused pair closure") are I/O errors
    // too; only their text tells them apart.
    const std::string message = e.what();
    const bool timeout = absl::StrContains(message, "imeout");
    return absl::Status(timeout ? absl::StatusCode::kDeadlineExceeded
                                : absl::StatusCode::kUnavailable,
                        absl::StrCat(what, ": ", message));
  } catch (const gloo::EnforceNotMet& e) {
    return absl::InternalError(absl::StrCat(what, ": gloo: ", e.what()));
  } catch (const std::system_error& e) {
    return absl::UnavailableError(absl::StrCat(what, ": ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (...) {
    return absl::UnknownError(absl::StrCat(what, ": unknown exception"));
  }
}

// Fails every operation pending on the context's pairs and closes their
// sockets, so local waiters and every peer learn at once (see the header).
//
// This takes the path gloo itself takes when an operation times out: a
// receive that times out calls tcp::Context::signalException, which calls
// tcp::Pair::signalExceptionExternal on every pair. Debian's libgloo-dev
// ships gloo/transport/tcp/pair.h without the gloo/common/memory.h it
// includes, so the pairs cannot be reached directly; a 1 ms receive on a
// private buffer that no peer sends to reaches the same code through public
// API only. Idempotent: a pair that already failed ignores the signal.
void DropConnections(gloo::Context& context) {
  char unused = 0;
  std::unique_ptr<gloo::transport::UnboundBuffer> probe =
      context.createUnboundBuffer(&unused, sizeof(unused));
  try {
    probe->waitRecv(nullptr, std::chrono::milliseconds(1));
  } catch (const gloo::IoException&) {
    // Expected: "Timed out waiting 1ms for recv operation to complete",
    // after every pair has been signalled.
  }
}

// Bounds connectFullMesh by one deadline. Gloo waits for each peer's
// address with the full context timeout, one peer after another, and get()s
// keys it never waited for; through this adapter every wait and get shares
// the deadline instead.
class DeadlineStore : public gloo::rendezvous::Store {
 public:
  DeadlineStore(gloo::rendezvous::Store& store, absl::Time deadline)
      : store_(store), deadline_(deadline) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    store_.set(key, data);
  }
  std::vector<char> get(const std::string& key) override {
    wait({key});
    return store_.get(key);
  }
  void wait(const std::vector<std::string>& keys) override {
    wait(keys, std::chrono::milliseconds::max());
  }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    const absl::Duration left = deadline_ - absl::Now();
    if (left <= absl::ZeroDuration()) {
      throw CoordinatorStoreError(absl::DeadlineExceededError(
          absl::StrCat("timed out waiting for store keys (first: '",
                       keys.empty() ? "" : keys.front(), "')")));
    }
    store_.wait(keys, std::min(timeout, absl::ToChronoMilliseconds(left)));
  }

 private:
  gloo::rendezvous::Store& store_;
  const absl::Time deadline_;
};

class GlooCommunicator final : public Communicator {
 public:
  // `context` is null for a world of one.
  GlooCommunicator(const CommunicatorOptions& options,
                   std::shared_ptr<gloo::rendezvous::Context> context)
      : rank_(options.rank),
        world_size_(options.world_size),
        timeout_(options.timeout),
        shared_(std::make_shared<Shared>()) {
    shared_->context = std::move(context);
    if (shared_->context != nullptr) {
      thread_ = std::thread(&GlooCommunicator::OpLoop, shared_);
    }
  }

  ~GlooCommunicator() override {
    Abort();
    if (!thread_.joinable()) return;
    bool exited;
    {
      absl::MutexLock lock(&shared_->mu);
      shared_->stopping = true;
      exited = shared_->mu.AwaitWithTimeout(
          absl::Condition(&shared_->thread_exited), kOpThreadExitGrace);
    }
    if (exited) {
      thread_.join();
    } else {
      // Only a segment in flight when Abort() closed its socket keeps gloo
      // from returning (see the header); the thread owns everything it
      // uses and ends at gloo's own timeout.
      LOG(WARNING) << "gloo rank " << rank_
                   << ": an aborted operation is still inside gloo; leaving "
                      "it to end at gloo's timeout";
      thread_.detach();
    }
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  absl::Status AllReduceSum(torch::Tensor& tensor) override {
    TensorBody body;
    if (tensor.defined() && tensor.device().is_cpu()) {
      switch (tensor.scalar_type()) {
        case torch::kFloat32:
          body = &SumAllReduce<float>;
          break;
        case torch::kFloat64:
          body = &SumAllReduce<double>;
          break;
        case torch::kInt32:
          body = &SumAllReduce<int32_t>;
          break;
        case torch::kInt64:
          body = &SumAllReduce<int64_t>;
          break;
        default:
          break;
      }
    }
    if (body == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "AllReduceSum: gloo reduces float32/float64/int32/int64 CPU "
          "tensors, got ",
          Describe(tensor)));
    }
    return RunOnTensor("AllReduceSum", tensor, std::move(body));
  }

  absl::Status Broadcast(torch::Tensor& tensor, int root) override {
    if (!tensor.defined() || !tensor.device().is_cpu()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Broadcast: gloo broadcasts CPU tensors, got ", Describe(tensor)));
    }
    if (root < 0 || root >= world_size_) {
      return absl::InvalidArgumentError(
          absl::StrCat("Broadcast: root ", root,
                       " is not a rank of a world of ", world_size_));
    }
    const size_t bytes = tensor.numel() * tensor.element_size();
    return RunOnTensor(
        "Broadcast", tensor,
        [root, bytes](const std::shared_ptr<gloo::Context>& context,
                      const torch::Tensor& work, uint32_t tag,
                      std::chrono::milliseconds timeout) {
          gloo::BroadcastOptions options(context);
          options.setOutput(static_cast<uint8_t*>(work.data_ptr()), bytes);
          options.setRoot(root);
          options.setTag(tag);
          options.setTimeout(timeout);
          gloo::broadcast(options);
        });
  }

  absl::Status Barrier() override {
    return Run("Barrier", [](const std::shared_ptr<gloo::Context>& context,
                             uint32_t tag, std::chrono::milliseconds timeout) {
      gloo::BarrierOptions options(context);
      options.setTag(tag);
      options.setTimeout(timeout);
      gloo::barrier(options);
    });
  }

  void Abort() override {
    {
      absl::MutexLock lock(&shared_->mu);
      if (!shared_->aborted.ok()) return;
      shared_->aborted = absl::AbortedError(
          absl::StrCat("gloo communicator of rank ", rank_, " was aborted"));
    }
    if (shared_->context != nullptr) DropOnce(*shared_);
  }

 private:
  // An operation for the op thread: runs gloo, throws what gloo throws.
  using Body =
      std::function<void(const std::shared_ptr<gloo::Context>& context,
                         uint32_t tag, std::chrono::milliseconds timeout)>;
  using TensorBody = std::function<void(
      const std::shared_ptr<gloo::Context>& context, const torch::Tensor& work,
      uint32_t tag, std::chrono::milliseconds timeout)>;

  // Gloo's ring all-reduce with a sum, in place on `work` (contiguous T).
  // Typed: gloo segments the buffer and calls the reduce function in
  // elements of sizeof(T).
  template <typename T>
  static void SumAllReduce(const std::shared_ptr<gloo::Context>& context,
                           const torch::Tensor& work, uint32_t tag,
                           std::chrono::milliseconds timeout) {
    gloo::AllreduceOptions options(context);
    options.setOutput(static_cast<T*>(work.data_ptr()), work.numel());
    options.setReduceFunction(static_cast<ReduceFn>(&gloo::sum<T>));
    options.setTag(tag);
    options.setTimeout(timeout);
    gloo::allreduce(options);
  }

  struct Op {
    std::function<void()> run;
    bool done = false;  // guarded by Shared::mu, like `status`
    absl::Status status;
  };

  // What the op thread shares with the communicator. Jointly owned: an op
  // thread left behind by Abort() keeps the context (and, through its Op,
  // the tensor's storage) alive until gloo lets it go.
  struct Shared {
    // Null for a world of one. Constant once the op thread runs.
    std::shared_ptr<gloo::rendezvous::Context> context;
    absl::Mutex mu;
    std::shared_ptr<Op> queued ABSL_GUARDED_BY(mu);
    bool stopping ABSL_GUARDED_BY(mu) = false;
    bool thread_exited ABSL_GUARDED_BY(mu) = false;
    // Non-OK once Abort() has been called.
    absl::Status aborted ABSL_GUARDED_BY(mu);
    // Whether DropConnections has run (or is running) on the context.
    bool dropped ABSL_GUARDED_BY(mu) = false;
  };

  // DropConnections, once per context. Abort() on one thread and the op
  // thread's failure handling (which Abort's signal itself can trigger)
  // would otherwise run it concurrently on the same pairs, a race seen
  // once as a crash of a loaded CI machine.
  static void DropOnce(Shared& shared) {
    {
      absl::MutexLock lock(&shared.mu);
      if (shared.dropped) return;
      shared.dropped = true;
    }
    DropConnections(*shared.context);
  }

  static void OpLoop(std::shared_ptr<Shared> shared) {
    while (true) {
      std::shared_ptr<Op> op;
      {
        absl::MutexLock lock(&shared->mu);
        const auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared->mu) {
          return shared->queued != nullptr || shared->stopping;
        };
        shared->mu.Await(absl::Condition(&ready));
        if (shared->queued == nullptr) break;
        op = std::move(shared->queued);
      }
      absl::Status status;
      try {
        op->run();
      } catch (...) {
        status = StatusFromCurrentException("gloo");
        // Tell every peer now (gloo only closed the pair that failed), so
        // none waits out its timeout on this rank.
        DropOnce(*shared);
      }
      absl::MutexLock lock(&shared->mu);
      op->status = std::move(status);
      op->done = true;
    }
    absl::MutexLock lock(&shared->mu);
    shared->thread_exited = true;
  }

  static std::string Describe(const torch::Tensor& tensor) {
    if (!tensor.defined()) return "an undefined tensor";
    return absl::StrCat(std::string(c10::toString(tensor.scalar_type())),
                        " tensor on ", tensor.device().str());
  }

  // Runs `body` on a contiguous version of `tensor` and copies the result
  // back if that was a copy.
  absl::Status RunOnTensor(absl::string_view what, torch::Tensor& tensor,
                           TensorBody body) {
    torch::Tensor work = tensor.contiguous();
    const std::string name = absl::StrCat(
        what, " of ", work.numel() * work.element_size(), " bytes");
    RETURN_IF_ERROR(
        Run(name, [body = std::move(body), work](
                      const std::shared_ptr<gloo::Context>& context,
                      uint32_t tag, std::chrono::milliseconds timeout) {
          if (work.numel() > 0) body(context, work, tag, timeout);
        }));
    if (!work.is_same(tensor)) {
      torch::NoGradGuard no_grad;
      tensor.copy_(work);
    }
    return absl::OkStatus();
  }

  // Runs one operation on the op thread and waits for its result, Abort()
  // or the timeout. A failure breaks the communicator for good.
  absl::Status Run(absl::string_view what, Body body) {
    if (!broken_.ok()) return broken_;
    // Every rank issues operations in the same order, so the n-th operation
    // gets the same tag everywhere (even one a world of one skips).
    const uint32_t tag = next_tag_++;
    if (shared_->context == nullptr) {  // a world of one: the identity
      absl::MutexLock lock(&shared_->mu);
      return shared_->aborted;
    }
    auto op = std::make_shared<Op>();
    std::shared_ptr<gloo::Context> context = shared_->context;
    const auto timeout = absl::ToChronoMilliseconds(timeout_);
    op->run = [body = std::move(body), context, tag, timeout] {
      body(context, tag, timeout);
    };
    absl::Status status;
    bool timed_out = false;
    {
      absl::MutexLock lock(&shared_->mu);
      if (shared_->aborted.ok()) {
        shared_->queued = op;
        const auto finished = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(shared_->mu) {
          return op->done || !shared_->aborted.ok();
        };
        shared_->mu.AwaitWithTimeout(absl::Condition(&finished), timeout_);
      }
      if (!shared_->aborted.ok()) {
        // Abort() wins over whatever the operation did meanwhile.
        status = shared_->aborted;
      } else if (op->done) {
        status = op->status;
      } else {
        timed_out = true;
        status = absl::DeadlineExceededError(absl::StrCat(
            "did not finish within ", absl::FormatDuration(timeout_)));
      }
    }
    if (status.ok()) return status;
    if (timed_out) {
      // Release the op thread and tell the peers.
      DropOnce(*shared_);
    }
    broken_ = absl::Status(
        status.code(), absl::StrCat(what, " (rank ", rank_, " of ", world_size_,
                                    "): ", status.message()));
    return broken_;
  }

  const int rank_;
  const int world_size_;
  const absl::Duration timeout_;
  const std::shared_ptr<Shared> shared_;
  std::thread thread_;

  // Used only by the thread issuing operations.
  uint32_t next_tag_ = 0;
  absl::Status broken_;  // the first failure; every later operation's result
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> ConnectGloo(
    const CommunicatorOptions& options,
    std::shared_ptr<gloo::rendezvous::Store> store) {
  if (options.world_size < 1 || options.rank < 0 ||
      options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " of a world of ",
                     options.world_size, " is not a valid rank"));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout must be positive, got ",
                     absl::FormatDuration(options.timeout)));
  }
  if (options.world_size == 1) {
    return std::unique_ptr<Communicator>(
        std::make_unique<GlooCommunicator>(options, nullptr));
  }
  if (store == nullptr) {
    return absl::InvalidArgumentError(
        "a world of more than one rank needs a rendezvous store");
  }
  const std::string what = absl::StrCat(
      "forming the gloo world of ", options.world_size, " ranks as rank ",
      options.rank, " (store prefix '", options.store_prefix, "')");
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = options.hostname;
    std::shared_ptr<gloo::transport::Device> device =
        gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(
        options.rank, options.world_size);
    context->setTimeout(absl::ToChronoMilliseconds(options.timeout));
    DeadlineStore bounded(*store, absl::Now() + options.timeout);
    context->connectFullMesh(bounded, device);
    return std::unique_ptr<Communicator>(
        std::make_unique<GlooCommunicator>(options, std::move(context)));
  } catch (...) {
    return StatusFromCurrentException(what);
  }
}

}  // namespace podtrain::worker
