// The job's data stream: position p belongs to epoch e = p / N and is example
// pi_e(p mod N), where pi_e is the epoch permutation keyed by (seed, e)
// (../shared/DESIGN.md, "The sampling contract"). The stream is a pure
// function of (seed, window, shard sizes): any process can compute any
// position, which is what makes resumption after a preemption exact.
//
// Thread-safety: thread-safe. Epoch permutations are built on first use and
// cached (the windowed variant's tables are O(S) to build); mu_ guards the
// cache.

#ifndef PODTRAIN_SAMPLER_STREAM_SAMPLER_H_
#define PODTRAIN_SAMPLER_STREAM_SAMPLER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "sampler/windowed_permutation.h"

namespace podtrain::sampler {

struct SamplerOptions {
  // Seed of every epoch permutation.
  uint64_t seed = 0;
  // Shards per shuffle window; 0 (or >= the number of shards) is a full
  // global shuffle.
  int64_t window_shards = 0;
};

class StreamSampler {
 public:
  // INVALID_ARGUMENT for an empty dataset, a negative size or window.
  static absl::StatusOr<std::unique_ptr<StreamSampler>> Create(
      std::vector<int64_t> shard_sizes, const SamplerOptions& options);

  int64_t examples_per_epoch() const { return examples_per_epoch_; }
  const SamplerOptions& options() const { return options_; }

  // Appends the example ids at stream positions [begin, begin + count) to
  // `out`. INVALID_ARGUMENT for a negative begin or count.
  absl::Status Fill(int64_t begin, int64_t count,
                    std::vector<int64_t>* out) const;

  // The example id at one stream position. REQUIRES: position >= 0.
  int64_t At(int64_t position) const;

 private:
  StreamSampler(std::vector<int64_t> shard_sizes, const SamplerOptions& options,
                int64_t examples_per_epoch);

  // The permutation of `epoch`, built on first use.
  std::shared_ptr<const WindowedPermutation> ForEpoch(int64_t epoch) const;

  const std::vector<int64_t> shard_sizes_;
  const SamplerOptions options_;
  const int64_t examples_per_epoch_;

  // A handful of epochs: at most two are live at once (a step straddling an
  // epoch boundary), a few more cover look-ahead across restarts.
  static constexpr size_t kCachedEpochs = 4;
  mutable absl::Mutex mu_;
  mutable std::deque<
      std::pair<int64_t, std::shared_ptr<const WindowedPermutation>>>
      cache_ ABSL_GUARDED_BY(mu_);
};

}  // namespace podtrain::sampler

#endif  // PODTRAIN_SAMPLER_STREAM_SAMPLER_H_
