#include "sampler/stream_sampler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace podtrain::sampler {

absl::StatusOr<std::unique_ptr<StreamSampler>> StreamSampler::Create(
    std::vector<int64_t> shard_sizes, const SamplerOptions& options) {
  if (options.window_shards < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("window_shards: must be >= 0 (0 = global shuffle), got ",
                     options.window_shards));
  }
  const int64_t window = options.window_shards == 0
                             ? static_cast<int64_t>(shard_sizes.size())
                             : options.window_shards;
  // Validates the sizes (and the window) once, on epoch 0.
  auto epoch0 = WindowedPermutation::Create(
      shard_sizes, std::max<int64_t>(window, 1), options.seed, 0);
  if (!epoch0.ok()) return epoch0.status();
  const int64_t n = static_cast<int64_t>(epoch0->size());
  auto sampler = std::unique_ptr<StreamSampler>(
      new StreamSampler(std::move(shard_sizes), options, n));
  absl::MutexLock lock(&sampler->mu_);
  sampler->cache_.emplace_back(
      0, std::make_shared<const WindowedPermutation>(*std::move(epoch0)));
  return sampler;
}

StreamSampler::StreamSampler(std::vector<int64_t> shard_sizes,
                             const SamplerOptions& options,
                             int64_t examples_per_epoch)
    : shard_sizes_(std::move(shard_sizes)),
      options_(options),
      examples_per_epoch_(examples_per_epoch) {}

std::shared_ptr<const WindowedPermutation> StreamSampler::ForEpoch(
    int64_t epoch) const {
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [cached_epoch, permutation] : cache_) {
      if (cached_epoch == epoch) return permutation;
    }
  }
  // Built outside the lock: O(S) work that other epochs need not wait for.
  const int64_t window = options_.window_shards == 0
                             ? static_cast<int64_t>(shard_sizes_.size())
                             : options_.window_shards;
  // The sizes and window were validated by Create, so this cannot fail.
  auto permutation = std::make_shared<const WindowedPermutation>(
      *WindowedPermutation::Create(shard_sizes_, window, options_.seed, epoch));
  absl::MutexLock lock(&mu_);
  cache_.emplace_back(epoch, permutation);
  if (cache_.size() > kCachedEpochs) cache_.pop_front();
  return permutation;
}

int64_t StreamSampler::At(int64_t position) const {
  const int64_t epoch = position / examples_per_epoch_;
  return static_cast<int64_t>(
      ForEpoch(epoch)->At(position % examples_per_epoch_));
}

absl::Status StreamSampler::Fill(int64_t begin, int64_t count,
                                 std::vector<int64_t>* out) const {
  if (begin < 0 || count < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("stream range must be non-negative, got begin=", begin,
                     " count=", count));
  }
  const size_t first = out->size();
  out->resize(first + count);
  uint64_t* dest = reinterpret_cast<uint64_t*>(out->data() + first);
  int64_t position = begin;
  const int64_t stop = begin + count;
  while (position < stop) {
    const int64_t epoch = position / examples_per_epoch_;
    const int64_t offset = position % examples_per_epoch_;
    const int64_t run = std::min(stop - position, examples_per_epoch_ - offset);
    ForEpoch(epoch)->Fill(offset, run, dest);
    dest += run;
    position += run;
  }
  return absl::OkStatus();
}

}  // namespace podtrain::sampler
