// The collectives a worker needs, behind one small interface: sum-all-reduce,
// broadcast and barrier over the ranks of one generation of a job's world,
// plus Abort() for when the generation ends under it. Backends:
//   worker/gloo_communicator.h  CPU tensors over TCP (what runs everywhere).
//   worker/nccl_communicator.h  CUDA tensors (built only with --config=cuda).
//
// A Communicator belongs to exactly one generation. Any membership change
// makes the agent Abort() it and build a new one for the next generation; a
// communicator is never repaired. Likewise, after any failed operation a
// communicator is broken for good: every later operation fails at once with
// the same kind of error, so a rank never blocks on a world it already knows
// is gone.
//
// Errors, for every operation:
//   UNAVAILABLE        a peer went away (connection closed or reset) or the
//                      transport failed; the message names the peer.
//   ABORTED            Abort() was called (typically: the generation changed).
//   DEADLINE_EXCEEDED  the operation did not finish within the timeout (a
//                      peer alive but stuck, or never arriving).
//   INVALID_ARGUMENT   a tensor the backend cannot reduce (dtype, device).
//   INTERNAL           the backend broke one of its own invariants.
// No operation crashes or blocks past the configured timeout.
//
// Thread-safety: one thread issues the collective operations (they are
// matched across ranks by the order they are issued in, so two threads
// issuing them concurrently would pair up the wrong operations), plus
// Abort(), which any thread may call at any time, any number of times.

#ifndef PODTRAIN_WORKER_COLLECTIVES_H_
#define PODTRAIN_WORKER_COLLECTIVES_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace podtrain::worker {

// One communicator for one generation of a job's world.
class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Sum-all-reduce in place over every rank: afterwards `tensor` holds the
  // element-wise sum of every rank's `tensor` (float32 CPU tensor for Gloo;
  // device tensor for NCCL). Every rank must pass the same shape and dtype.
  // On error the tensor's contents are unspecified.
  virtual absl::Status AllReduceSum(torch::Tensor& tensor) = 0;

  // Copies `root`'s `tensor` into every rank's `tensor` (same shape and dtype
  // on every rank). Used to check or agree on state.
  virtual absl::Status Broadcast(torch::Tensor& tensor, int root) = 0;

  // Returns once every rank has entered the barrier.
  virtual absl::Status Barrier() = 0;

  // A zero-filled flat tensor of `numel` elements to AllReduceSum in place,
  // placed where this backend reduces it fastest: the shared-memory backend
  // hands out memory every rank on the host maps, which it reduces with no
  // copy in or out (worker/shm_communicator.h); the default is
  // torch::zeros. Ranks must ask for the same sequence of buffers (as
  // GradientBuckets does: same model, same order), from the thread that
  // issues the operations. The tensor stays valid after the communicator is
  // gone.
  virtual torch::Tensor NewReduceBuffer(int64_t numel,
                                        const torch::TensorOptions& options) {
    return torch::zeros({numel}, options);
  }

  // Makes every pending and future operation fail promptly with ABORTED
  // (generation change). Also drops this rank's connections, so peers
  // blocked on it fail promptly too instead of waiting out their timeout.
  // Safe from any thread; idempotent.
  virtual void Abort() = 0;
};

// NewReduceBuffer's backends round every buffer up to this many bytes (a
// page: buffers never share a cache line or a page).
inline constexpr int64_t kReduceBufferAlign = 4096;

// What a NewReduceBuffer of `bytes` takes of a backend's region (an empty
// buffer still takes one unit).
inline int64_t ReservedReduceBufferBytes(int64_t bytes) {
  const int64_t at_least_one = bytes > 0 ? bytes : 1;
  return (at_least_one + kReduceBufferAlign - 1) / kReduceBufferAlign *
         kReduceBufferAlign;
}

struct CommunicatorOptions {
  int rank = 0;
  int world_size = 1;
  // Where this generation's bootstrap keys live in the coordinator's store
  // (CollectiveBootstrap.store_prefix, "<job>/generation/<g>/").
  std::string store_prefix;
  // Bound on forming the world and on every operation.
  absl::Duration timeout = absl::Seconds(30);
  // The address peers reach this rank's transport on.
  std::string hostname = "127.0.0.1";
};

}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_COLLECTIVES_H_
