#include "sampler/assignment.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace podtrain::sampler {
namespace {

TEST(AssignmentTest, StepTakesItsBlockOfTheStream) {
  auto positions = StepPositions(256, 10);
  ASSERT_TRUE(positions.ok());
  EXPECT_EQ(*positions, (PositionRange{2560, 2816}));
}

TEST(AssignmentTest, RanksSplitTheStepContiguouslyWithoutDivisibility) {
  // B = 10 over W = 3: slices of 3, 3, 4 (floor(r*B/W) boundaries 0, 3, 6).
  const std::vector<PositionRange> expected = {{30, 33}, {33, 36}, {36, 40}};
  for (int rank = 0; rank < 3; ++rank) {
    auto range = RankPositions(10, 3, 3, rank);
    ASSERT_TRUE(range.ok());
    EXPECT_EQ(*range, expected[rank]) << "rank " << rank;
  }
}

TEST(AssignmentTest, EveryWorldSizeCoversTheStepExactlyOnce) {
  for (int64_t batch : {1, 2, 7, 64, 255, 256, 1000}) {
    for (int64_t world = 1; world <= std::min<int64_t>(batch, 70); ++world) {
      int64_t next = 5 * batch;  // step 5
      int64_t smallest = batch, largest = 0;
      for (int64_t rank = 0; rank < world; ++rank) {
        auto range = *RankPositions(batch, 5, world, rank);
        ASSERT_EQ(range.begin, next) << "B=" << batch << " W=" << world;
        next = range.end;
        smallest = std::min(smallest, range.size());
        largest = std::max(largest, range.size());
      }
      EXPECT_EQ(next, 6 * batch);
      EXPECT_GE(smallest, 1);
      EXPECT_LE(largest - smallest, 1) << "balanced slices";
    }
  }
}

TEST(AssignmentTest, StepExamplesDoNotDependOnTheWorldSize) {
  auto sampler = *StreamSampler::Create({300, 200, 500}, {.seed = 4});
  auto step_ids = [&](int64_t world) {
    std::vector<int64_t> all;
    for (int64_t rank = 0; rank < world; ++rank) {
      auto ids = *RankExampleIds(*sampler, 96, 17, world, rank);
      all.insert(all.end(), ids.begin(), ids.end());
    }
    return all;
  };
  const std::vector<int64_t> one = step_ids(1);
  ASSERT_EQ(one.size(), 96u);
  // Not just the same set: the same order, concatenated over ranks.
  for (int64_t world : {2, 3, 5, 8, 96}) EXPECT_EQ(step_ids(world), one);
}

TEST(AssignmentTest, HugeBatchesAndStepsDoNotOverflow) {
  // 2^40 examples per step, rank boundaries computed in 128 bits.
  const int64_t batch = int64_t{1} << 40;
  auto last = *RankPositions(batch, 1000, 3, 2);
  EXPECT_EQ(last.end, 1001 * batch);
  EXPECT_EQ(last.begin, 1000 * batch + (2 * batch) / 3);
}

TEST(AssignmentTest, BadInputGivesAClearError) {
  const auto error = [](const absl::StatusOr<PositionRange>& result) {
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(result.status().message());
  };
  EXPECT_NE(error(RankPositions(0, 1, 1, 0)).find("global_batch"),
            std::string::npos);
  EXPECT_NE(error(RankPositions(8, -1, 1, 0)).find("step"), std::string::npos);
  EXPECT_NE(error(RankPositions(8, 0, 9, 0)).find("at least one example"),
            std::string::npos);
  EXPECT_NE(error(RankPositions(8, 0, 0, 0)).find("world"), std::string::npos);
  EXPECT_NE(error(RankPositions(8, 0, 4, 4)).find("rank"), std::string::npos);
  EXPECT_NE(error(RankPositions(8, 0, 4, -1)).find("rank"), std::string::npos);
}

}  // namespace
}  // namespace podtrain::sampler
