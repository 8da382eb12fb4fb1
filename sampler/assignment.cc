#include "sampler/assignment.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace podtrain::sampler {

absl::StatusOr<PositionRange> StepPositions(int64_t global_batch,
                                            int64_t step) {
  if (global_batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("global_batch: must be >= 1, got ", global_batch));
  }
  if (step < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("step: must be >= 0, got ", step));
  }
  return PositionRange{step * global_batch, (step + 1) * global_batch};
}

absl::StatusOr<PositionRange> RankPositions(int64_t global_batch, int64_t step,
                                            int64_t world, int64_t rank) {
  ASSIGN_OR_RETURN(const PositionRange positions,
                   StepPositions(global_batch, step));
  if (world < 1 || world > global_batch) {
    return absl::InvalidArgumentError(absl::StrCat(
        "world: must be in [1, global_batch=", global_batch, "], got ", world,
        world > global_batch ? " (every rank needs at least one example)"
                             : ""));
  }
  if (rank < 0 || rank >= world) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank: must be in [0, world=", world, "), got ", rank));
  }
  // floor(r*B/W) in 128 bits: r*B may not fit 64 bits for huge batches.
  const auto slice_start = [&](int64_t r) {
    return static_cast<int64_t>(static_cast<__int128>(r) * global_batch /
                                world);
  };
  return PositionRange{positions.begin + slice_start(rank),
                       positions.begin + slice_start(rank + 1)};
}

absl::StatusOr<std::vector<int64_t>> RankExampleIds(
    const StreamSampler& sampler, int64_t global_batch, int64_t step,
    int64_t world, int64_t rank) {
  ASSIGN_OR_RETURN(const PositionRange range,
                   RankPositions(global_batch, step, world, rank));
  std::vector<int64_t> ids;
  ids.reserve(range.size());
  RETURN_IF_ERROR(sampler.Fill(range.begin, range.size(), &ids));
  return ids;
}

uint64_t ExampleDigest(const std::vector<int64_t>& ids) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (int64_t id : ids) {
    for (int byte = 0; byte < 8; ++byte) {
      hash ^= (static_cast<uint64_t>(id) >> (8 * byte)) & 0xff;
      hash *= 0x100000001b3ULL;
    }
  }
  return hash;
}

}  // namespace podtrain::sampler
