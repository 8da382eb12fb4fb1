#include "sampler/stream_sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <thread>
#include <vector>

namespace podtrain::sampler {
namespace {

TEST(StreamSamplerTest, EachEpochIsAPermutationAndEpochsDiffer) {
  auto sampler = *StreamSampler::Create({30, 50, 20}, {.seed = 7});
  ASSERT_EQ(sampler->examples_per_epoch(), 100);
  std::vector<int64_t> three_epochs;
  ASSERT_TRUE(sampler->Fill(0, 300, &three_epochs).ok());
  for (int e = 0; e < 3; ++e) {
    std::vector<int64_t> epoch(three_epochs.begin() + 100 * e,
                               three_epochs.begin() + 100 * (e + 1));
    std::sort(epoch.begin(), epoch.end());
    for (int64_t i = 0; i < 100; ++i) ASSERT_EQ(epoch[i], i);
  }
  EXPECT_FALSE(std::equal(three_epochs.begin(), three_epochs.begin() + 100,
                          three_epochs.begin() + 100));
}

TEST(StreamSamplerTest, FillAcrossEpochBoundariesMatchesAt) {
  auto sampler =
      *StreamSampler::Create({13, 0, 29, 8}, {.seed = 3, .window_shards = 2});
  std::vector<int64_t> ids;
  // Starts mid-epoch 1 and crosses into epoch 4.
  ASSERT_TRUE(sampler->Fill(77, 120, &ids).ok());
  ASSERT_EQ(ids.size(), 120u);
  for (int64_t k = 0; k < 120; ++k) EXPECT_EQ(ids[k], sampler->At(77 + k));
}

TEST(StreamSamplerTest, FillAppendsToWhatIsThere) {
  auto sampler = *StreamSampler::Create({10}, {.seed = 1});
  std::vector<int64_t> ids = {-5};
  ASSERT_TRUE(sampler->Fill(0, 3, &ids).ok());
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(ids[0], -5);
  EXPECT_EQ(ids[1], sampler->At(0));
}

TEST(StreamSamplerTest, SameOptionsSameStreamInAnotherProcessImage) {
  auto a =
      *StreamSampler::Create({1000, 1000}, {.seed = 11, .window_shards = 1});
  auto b =
      *StreamSampler::Create({1000, 1000}, {.seed = 11, .window_shards = 1});
  auto other =
      *StreamSampler::Create({1000, 1000}, {.seed = 12, .window_shards = 1});
  std::vector<int64_t> x, y, z;
  ASSERT_TRUE(a->Fill(5000, 500, &x).ok());
  ASSERT_TRUE(b->Fill(5000, 500, &y).ok());
  ASSERT_TRUE(other->Fill(5000, 500, &z).ok());
  EXPECT_EQ(x, y);
  EXPECT_NE(x, z);
}

TEST(StreamSamplerTest, ConcurrentReadersAgree) {
  auto sampler = *StreamSampler::Create(std::vector<int64_t>(64, 100),
                                        {.seed = 5, .window_shards = 4});
  std::vector<int64_t> expected;
  ASSERT_TRUE(sampler->Fill(0, 64 * 100 * 6, &expected).ok());
  std::vector<std::thread> threads;
  std::vector<bool> ok(4, false);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      // Each thread walks the epochs in a different order to churn the cache.
      bool all_equal = true;
      for (int round = 0; round < 6; ++round) {
        const int64_t epoch = (round * (t + 1)) % 6;
        std::vector<int64_t> ids;
        if (!sampler->Fill(epoch * 6400, 6400, &ids).ok()) all_equal = false;
        all_equal &=
            std::equal(ids.begin(), ids.end(), expected.begin() + epoch * 6400);
      }
      ok[t] = all_equal;
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < 4; ++t) EXPECT_TRUE(ok[t]) << "thread " << t;
}

TEST(StreamSamplerTest, BadInputGivesAClearError) {
  EXPECT_EQ(StreamSampler::Create({}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StreamSampler::Create({0}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto negative_window = StreamSampler::Create({5}, {.window_shards = -1});
  EXPECT_EQ(negative_window.status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_NE(negative_window.status().message().find("window_shards"),
            std::string::npos);
  auto sampler = *StreamSampler::Create({5}, {});
  std::vector<int64_t> ids;
  EXPECT_EQ(sampler->Fill(-1, 3, &ids).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sampler->Fill(0, -3, &ids).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace podtrain::sampler
