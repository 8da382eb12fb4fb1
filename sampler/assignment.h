// Which stream positions, and so which examples, each rank trains on at each
// step. Step t consumes the positions [t*B, (t+1)*B) of the stream (B the
// job's fixed global batch); a world of W ranks splits them into W contiguous
// slices, rank r taking [floor(r*B/W), floor((r+1)*B/W)) of the step: slices
// differ in size by at most one and need no divisibility. The union over ranks
// is the whole step for every W, so exactly-once per epoch holds through any
// sequence of world sizes, and the step's math (the gradient is (1/B) times
// the sum of per-example gradients) does not depend on W.
//
// Thread-safety: free functions; thread-safe given a thread-safe sampler.

#ifndef PODTRAIN_SAMPLER_ASSIGNMENT_H_
#define PODTRAIN_SAMPLER_ASSIGNMENT_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "sampler/stream_sampler.h"

namespace podtrain::sampler {

// A half-open range [begin, end) of stream positions.
struct PositionRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const PositionRange& other) const {
    return begin == other.begin && end == other.end;
  }
};

// The positions step `step` consumes. INVALID_ARGUMENT for B < 1, step < 0.
absl::StatusOr<PositionRange> StepPositions(int64_t global_batch, int64_t step);

// The positions rank `rank` of a world of `world` trains on at `step`.
// INVALID_ARGUMENT unless 1 <= world <= global_batch and 0 <= rank < world.
absl::StatusOr<PositionRange> RankPositions(int64_t global_batch, int64_t step,
                                            int64_t world, int64_t rank);

// The example ids of RankPositions, in order.
absl::StatusOr<std::vector<int64_t>> RankExampleIds(
    const StreamSampler& sampler, int64_t global_batch, int64_t step,
    int64_t world, int64_t rank);

// The digest a worker reports for the ids it consumed at a step
// (ReportStepRequest.example_digest), which the coordinator checks against
// what it assigned: FNV-1a-64 over the ids' little-endian bytes, in order.
uint64_t ExampleDigest(const std::vector<int64_t>& ids);

}  // namespace podtrain::sampler

#endif  // PODTRAIN_SAMPLER_ASSIGNMENT_H_
