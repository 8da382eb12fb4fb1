// DDP-style gradient bucketing: all-reduce gradients in flat buckets while
// backward is still running, instead of one parameter at a time after it.
//
// How a step goes (PyTorch DDP's Reducer, reduced to what podtrain needs):
//   * At construction the parameters are taken in reverse registration order
//     (roughly the order backward produces their gradients) and packed into
//     buckets: the first at most first_bucket_bytes (1 MB), the rest at most
//     bucket_bytes (4 MB), one dtype and device per bucket. A parameter
//     larger than the limit gets a bucket of its own. Every rank builds the
//     same buckets from the same model, so bucket i means the same thing on
//     every rank.
//   * Every parameter's .grad() is a view into its bucket's flat buffer
//     (DDP's gradient_as_bucket_view; the buffers come from
//     Communicator::NewReduceBuffer, in shared memory when the ranks share
//     a host), so autograd accumulates gradients straight into the
//     buckets and the reduced sums land in .grad() without a copy either
//     way. A post hook on every parameter's
//     AccumulateGrad node counts the gradients in; when a bucket's last
//     gradient has been accumulated, the bucket is handed to a background
//     communication thread, which all-reduces the buckets strictly in index
//     order (so every rank issues the same sequence of collectives) while
//     backward goes on computing the next gradients.
//   * FinishReduction() then launches what backward left unlaunched (a
//     parameter this rank did not use contributes its current .grad(),
//     zeros if none: other ranks may have used it) and waits for every
//     bucket.
// The reduction is a plain SUM: the trainer scales its loss by
// 1/global_batch, so the sum of the ranks' gradients is the global batch's
// gradient.
//
// Between steps, either clear gradients in place (Module::zero_grad()
// without set_to_none): autograd then adds into the views; or set them to
// none (what the agent does): autograd hands over each new gradient and it
// is copied into the bucket once when counted in, which for one backward per
// step is cheaper than a memset plus an add. Assigning a new tensor works
// the same way. Accumulating over several micro-batches works when
// FinishReduction follows the last of them, but each parameter's gradient
// may arrive only once between two FinishReduction calls (a second arrival
// is FAILED_PRECONDITION). After a failed reduction .grad() holds partial
// sums: discard the step.
//
//   GradientBuckets buckets(model->parameters(), communicator);
//   loss.backward();                            // buckets reduce meanwhile
//   RETURN_IF_ERROR(buckets.FinishReduction());  // .grad() = sum over ranks
//
// Errors from the communicator (UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED)
// come back from FinishReduction naming the bucket. Any error is final:
// every later FinishReduction returns it at once, because the communicator
// it used is broken; build a new GradientBuckets for the next generation.
//
// Thread-safety: one thread drives it (backward, FinishReduction,
// ReduceNow); the hooks run on autograd's thread for that backward. The
// communicator is used by the communication thread from the first hook of a
// step until FinishReduction returns, and is the caller's own in between.
// Destruction joins the communication thread, so abort the communicator
// first if a reduction may still be in flight (it then ends promptly).
// Without overlap (GradientBucketOptions.overlap = false) there is no
// communication thread: FinishReduction all-reduces every bucket on the
// calling thread.

#ifndef PODTRAIN_WORKER_GRADIENT_BUCKETS_H_
#define PODTRAIN_WORKER_GRADIENT_BUCKETS_H_

#include <torch/csrc/autograd/function.h>
#include <torch/torch.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/collectives.h"

namespace podtrain::worker {

struct GradientBucketOptions {
  // The small first bucket starts communication early in backward (PyTorch
  // DDP's kDefaultFirstBucketBytes).
  int64_t first_bucket_bytes = 1 << 20;
  // DDP's bucket_cap_mb is 25 MB, sized for NCCL, where every collective
  // has a fixed launch cost. podtrain's shared-memory path has little fixed
  // cost, and with 25 MB the reference MLP's last gradient, fc1.weight,
  // shares a 7.4 MB bucket with fc2.weight: nothing but the head can be
  // reduced before backward ends. With 4 MB, fc2.weight is reduced while
  // backward computes fc1.weight (bench/RESULTS.md, allreduce: the overlap
  // table). Between hosts over Gloo TCP a 4 MB bucket still takes ~4 ms to
  // move, far above the per-collective cost.
  int64_t bucket_bytes = 4 << 20;
  // Reduce buckets on a communication thread while backward runs (true),
  // or all of them in FinishReduction, on the calling thread, after
  // backward (false). Overlap pays off when the all-reduce is slow (TCP,
  // NCCL between hosts). Through shared memory it takes ~0.3 ms for the
  // reference MLP, and on a 2-core host handing buckets to another thread
  // mid-backward costs more than it hides: no overlap was 0.04-0.56 ms a
  // step faster in four runs of bench/allreduce's side-by-side steps.
  bool overlap = true;
};

// The bucket assignment: for each bucket, indices into `parameters`.
// `parameters` are in registration order; buckets are filled from the last
// parameter backwards, each bucket holding one dtype and device and at most
// first_bucket_bytes (bucket 0) or bucket_bytes (the rest) unless a single
// parameter is larger. Pure; exposed for tests and for logging the layout.
std::vector<std::vector<size_t>> AssignBuckets(
    const std::vector<torch::Tensor>& parameters,
    const GradientBucketOptions& options);

// At most the bytes of Communicator::NewReduceBuffer memory a
// GradientBuckets over `parameters` takes, whatever the options: what to
// reserve for it when forming a shared-memory world
// (SharedMemoryOptions.buffer_bytes).
int64_t ReduceBufferBytes(const std::vector<torch::Tensor>& parameters);

class GradientBuckets {
 public:
  // Hooks every parameter of `parameters` (registration order, e.g.
  // Module::parameters()) that requires grad.
  // REQUIRES: `communicator` is not null and outlives this object; every
  // rank passes parameters of the same shapes and dtypes in the same order
  // (Gloo aborts the process when ranks reduce different sizes).
  GradientBuckets(std::vector<torch::Tensor> parameters,
                  Communicator* communicator,
                  GradientBucketOptions options = {});
  // Removes the hooks and joins the communication thread.
  ~GradientBuckets();

  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  // Completes this step's reduction (see above) and returns the first error.
  // On success every hooked parameter's .grad() holds the sum over ranks.
  absl::Status FinishReduction();

  // The synchronous path, for gradients that did not come from a backward
  // through the hooks (set by hand, or computed elsewhere): reduces every
  // parameter's current .grad() (zeros where undefined) now.
  // FAILED_PRECONDITION if a hook has fired since the last FinishReduction.
  absl::Status ReduceNow();

  // The last completed step (FinishReduction or ReduceNow):
  // Time spent inside all-reduce calls (overlapped with backward or not).
  double last_reduce_seconds() const;
  // Bytes all-reduced (this rank's buffers).
  int64_t last_reduce_bytes() const;
  // Time FinishReduction spent waiting: the communication backward did not
  // hide.
  double last_wait_seconds() const;
  // Buckets handed to the communication thread before the step's last
  // gradient arrived: those whose reduction could overlap backward.
  int last_buckets_launched_before_last_grad() const;

  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  // Indices (into the constructor's `parameters`) of bucket i's parameters.
  const std::vector<size_t>& bucket_parameters(int i) const {
    return buckets_[i].params;
  }

 private:
  struct Bucket {
    // Constant after construction.
    std::vector<size_t> params;    // indices into params_
    std::vector<int64_t> offsets;  // of each param in `buffer`, in elements
    torch::Tensor buffer;          // flat; written by hooks, then reduced
    int64_t bytes = 0;
    // This step's progress, guarded by mu_.
    int pending = 0;        // gradients not yet in `buffer`
    bool launched = false;  // handed to the communication thread
    int64_t hooks_at_launch = -1;
  };

  // Counts parameter `param`'s gradient in (after autograd accumulated it).
  void OnGradient(size_t param);
  // Bucket slice of `param`, shaped like it.
  torch::Tensor Slot(size_t param) const;
  // Makes .grad() of `param` its bucket view, copying its current value in
  // (zeros if undefined) unless it already is the view.
  void AdoptGrad(size_t param);
  // Marks bucket b launched (its buffer is complete).
  void LaunchLocked(size_t b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CommunicationLoop();
  // All-reduces bucket b (skipped after an earlier failure) and counts it
  // reduced; on the communication thread, or FinishReduction's without
  // overlap.
  void ReduceBucket(size_t b);
  // Resets the per-step state after a step has been reduced.
  void ResetStepLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const std::vector<torch::Tensor> params_;  // the hooked ones
  Communicator* const communicator_;
  const bool overlap_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;       // per param
  std::vector<size_t> slot_in_bucket_;  // per param
  // Per param: its AccumulateGrad node (null if not hooked) and the key of
  // the post hook on it.
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<uintptr_t> hook_handles_;

  mutable absl::Mutex mu_;
  std::vector<bool> arrived_ ABSL_GUARDED_BY(mu_);  // per param, this step
  int64_t hooks_this_step_ ABSL_GUARDED_BY(mu_) = 0;
  // Buckets [0, next_to_reduce_) of this step are reduced.
  size_t next_to_reduce_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The first error; final (see the header comment).
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  absl::Duration reduce_time_ ABSL_GUARDED_BY(mu_);
  int64_t reduce_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // The last completed step's figures.
  double last_reduce_seconds_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_reduce_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  double last_wait_seconds_ ABSL_GUARDED_BY(mu_) = 0;
  int last_overlapped_ ABSL_GUARDED_BY(mu_) = 0;

  std::thread thread_;  // the communication thread; none without overlap
};

}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_GRADIENT_BUCKETS_H_
