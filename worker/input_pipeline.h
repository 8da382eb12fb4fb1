// The worker's input pipeline: takes the coordinator's step assignments (the
// example ids this rank trains on at each step, or the stream positions they
// are at) and turns them into tensors
// on a background thread, a bounded number of steps ahead of training, so
// reading and decoding overlap compute. The time Next() blocks is the data
// wait the worker reports.
//
// Thread-safety: Next() and Cancel() may be called from any thread; one
// consumer calls Next().

#ifndef PODTRAIN_WORKER_INPUT_PIPELINE_H_
#define PODTRAIN_WORKER_INPUT_PIPELINE_H_

#include <torch/torch.h>

#include <deque>
#include <functional>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "dataset/dataset.h"
#include "proto/worker.pb.h"
#include "sampler/stream_sampler.h"

namespace podtrain::worker {

// One step's data for this rank.
struct Batch {
  int64_t step = 0;
  std::vector<int64_t> ids;
  torch::Tensor images;  // float32 [n, channels, height, width] in [0, 1]
  torch::Tensor labels;  // int64 [n]
};

// Decodes the examples `ids` of `data` into a batch.
absl::StatusOr<Batch> DecodeBatch(const dataset::Dataset& data, int64_t step,
                                  std::vector<int64_t> ids);

// Most examples one assignment may name: far above any real per-rank batch,
// low enough that a corrupt range cannot make the worker allocate gigabytes.
inline constexpr int64_t kMaxAssignedExamples = int64_t{1} << 24;

// The example ids `assignment` names: its example_ids, or the ids at its
// stream positions under `sampler` (which may be null for a stream of ids).
// INVALID_ARGUMENT naming the step for positions without a sampler, for ids
// and positions both, and for a range that is negative, reversed or longer
// than kMaxAssignedExamples.
absl::StatusOr<std::vector<int64_t>> AssignedExampleIds(
    const v1::StepAssignment& assignment,
    const sampler::StreamSampler* sampler);

class InputPipeline {
 public:
  // Returns the next assignment, nullopt at the end of the stream, or the
  // error that ended it. Called on the pipeline's thread only.
  using AssignmentSource =
      std::function<absl::StatusOr<std::optional<v1::StepAssignment>>()>;

  // Starts reading from `source` and decoding from `data`, at most `depth`
  // decoded steps ahead; assignments of stream positions are mapped to ids
  // through `sampler` (null if the source sends ids). Both must outlive the
  // pipeline.
  InputPipeline(const dataset::Dataset* data,
                const sampler::StreamSampler* sampler, AssignmentSource source,
                int depth);
  ~InputPipeline();

  // The next step's batch. Blocks until it is decoded; returns the source's
  // error (or OUT_OF_RANGE at the end of the stream, CANCELLED after
  // Cancel()). `*waited` receives how long it blocked.
  absl::StatusOr<Batch> Next(absl::Duration* waited);

  // Makes Next() return CANCELLED and stops the thread once `source`
  // returns (the caller cancels the source itself, e.g. its gRPC stream).
  void Cancel();

 private:
  void Run();

  const dataset::Dataset* const data_;
  const sampler::StreamSampler* const sampler_;
  const AssignmentSource source_;
  const int depth_;

  absl::Mutex mu_;
  std::deque<Batch> ready_ ABSL_GUARDED_BY(mu_);
  absl::Status end_ ABSL_GUARDED_BY(mu_);  // set once the source ends
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_INPUT_PIPELINE_H_
