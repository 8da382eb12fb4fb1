#include "sampler/windowed_permutation.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <set>
#include <unordered_set>
#include <vector>

namespace podtrain::sampler {
namespace {

// Evaluates every position both ways (At and Fill) and checks a bijection.
void ExpectBijection(const std::vector<int64_t>& shards, int64_t window,
                     uint64_t seed, uint64_t epoch) {
  auto p = WindowedPermutation::Create(shards, window, seed, epoch);
  ASSERT_TRUE(p.ok()) << p.status();
  const uint64_t n = p->size();
  std::vector<uint64_t> filled(n);
  p->Fill(0, n, filled.data());
  std::vector<bool> seen(n, false);
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t id = p->At(i);
    ASSERT_EQ(id, filled[i]) << "At and Fill disagree at " << i;
    ASSERT_LT(id, n);
    ASSERT_FALSE(seen[id]) << "id " << id << " twice; n=" << n
                           << " window=" << window;
    seen[id] = true;
  }
}

TEST(WindowedPermutationTest, BijectionForSmallLayouts) {
  const std::vector<std::vector<int64_t>> layouts = {
      {1},          {2},       {3},          {1, 1},          {5, 0, 3},
      {0, 0, 7, 0}, {1, 2, 3}, {10, 10, 10}, {4, 9, 1, 0, 6}, {100, 1, 100},
  };
  for (const auto& shards : layouts) {
    for (int64_t window = 1; window <= 6; ++window) {
      for (uint64_t seed = 0; seed < 3; ++seed) {
        ExpectBijection(shards, window, seed, seed + 1);
      }
    }
  }
}

// Sizes around powers of two up to 2^20 + 1, split over uneven shards, for
// both the windowed variant and the global shuffle.
TEST(WindowedPermutationTest, BijectionAroundPowersOfTwoUpTo2To20) {
  for (int k = 1; k <= 20; ++k) {
    for (int64_t delta : {-1, 0, 1}) {
      const int64_t n = (int64_t{1} << k) + delta;
      // 7 shards of uneven size (the last takes the remainder).
      std::vector<int64_t> shards(7, n / 9);
      shards.back() = n - 6 * (n / 9);
      ExpectBijection(shards, 2, k, 0);  // windowed
      ExpectBijection(shards, 7, k, 0);  // global
    }
  }
}

TEST(WindowedPermutationTest, SampledBijectionAtJftScale) {
  const std::vector<int64_t> shards(40'000, 100'000);  // 4e9 examples
  for (int64_t window : {16, 40'000}) {
    auto p = *WindowedPermutation::Create(shards, window, 42, 3);
    ASSERT_EQ(p.size(), uint64_t{4'000'000'000});
    std::mt19937_64 rng(window);
    std::unordered_set<uint64_t> ids;
    for (int k = 0; k < 50'000; ++k) {
      const uint64_t id = p.At(rng() % p.size());
      ASSERT_LT(id, p.size());
      ids.insert(id);
    }
    // Random positions are distinct with overwhelming probability; their
    // images must be too.
    EXPECT_GE(ids.size(), 49'999u);
    // A whole window's worth of consecutive positions has no repeat.
    std::vector<uint64_t> run(1'600'000);
    p.Fill(123'456'789, run.size(), run.data());
    std::unordered_set<uint64_t> distinct(run.begin(), run.end());
    EXPECT_EQ(distinct.size(), run.size());
  }
}

// The point of windows: a window's positions come from its w shards only, so
// a reader streams from at most w shards at a time.
TEST(WindowedPermutationTest, EachWindowReadsFromAtMostWShards) {
  const std::vector<int64_t> shards(50, 1000);
  constexpr int64_t kWindow = 4;
  auto p = *WindowedPermutation::Create(shards, kWindow, 9, 1);
  EXPECT_EQ(p.num_windows(), 13);
  std::vector<uint64_t> order(p.size());
  p.Fill(0, order.size(), order.data());
  std::set<uint64_t> all_shards;
  for (int64_t w = 0; w * kWindow * 1000 < static_cast<int64_t>(p.size());
       ++w) {
    std::set<uint64_t> shards_in_window;
    const int64_t begin = w * kWindow * 1000;
    const int64_t end = std::min<int64_t>(begin + kWindow * 1000, order.size());
    for (int64_t i = begin; i < end; ++i) {
      shards_in_window.insert(order[i] / 1000);
    }
    EXPECT_EQ(shards_in_window.size(),
              static_cast<size_t>((end - begin) / 1000));
    all_shards.insert(shards_in_window.begin(), shards_in_window.end());
  }
  EXPECT_EQ(all_shards.size(), 50u);
}

TEST(WindowedPermutationTest, ShardOrderChangesWithTheEpoch) {
  const std::vector<int64_t> shards(100, 10);
  auto e0 = *WindowedPermutation::Create(shards, 1, 5, 0);
  auto e1 = *WindowedPermutation::Create(shards, 1, 5, 1);
  int same_first_shard = 0;
  for (uint64_t w = 0; w < 100; ++w) {
    same_first_shard += e0.At(w * 10) / 10 == e1.At(w * 10) / 10;
  }
  EXPECT_LT(same_first_shard, 10);
}

TEST(WindowedPermutationTest, MemoryIsLinearInShardsAndIndependentOfN) {
  const std::vector<int64_t> small(40'000, 100);
  const std::vector<int64_t> jft(40'000, 100'000);
  auto a = *WindowedPermutation::Create(small, 16, 1, 0);
  auto b = *WindowedPermutation::Create(jft, 16, 1, 0);
  EXPECT_EQ(a.MemoryBytes(), b.MemoryBytes());
  // Two tables of S+1 words: 16 bytes per shard plus a constant.
  EXPECT_LE(b.MemoryBytes(), 16 * 40'000 + 1024);
  EXPECT_GE(b.MemoryBytes(), 16 * 40'000);  // it does hold the tables
  const std::vector<int64_t> half(20'000, 100'000);
  auto c = *WindowedPermutation::Create(half, 16, 1, 0);
  EXPECT_NEAR(static_cast<double>(c.MemoryBytes()) / b.MemoryBytes(), 0.5,
              0.01);
  // The global shuffle needs no tables at all.
  auto global = *WindowedPermutation::Create(jft, 40'000, 1, 0);
  EXPECT_TRUE(global.is_global());
  EXPECT_LE(global.MemoryBytes(), 512u);  // a few keys, no tables
}

TEST(WindowedPermutationTest, BadInputGivesAClearError) {
  const auto message = [](absl::Status status) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    return std::string(status.message());
  };
  EXPECT_NE(message(WindowedPermutation::Create({}, 1, 0, 0).status())
                .find("needs a shard"),
            std::string::npos);
  EXPECT_NE(message(WindowedPermutation::Create({0, 0}, 1, 0, 0).status())
                .find("N = 0"),
            std::string::npos);
  EXPECT_NE(message(WindowedPermutation::Create({5}, 0, 0, 0).status())
                .find("window"),
            std::string::npos);
  EXPECT_NE(message(WindowedPermutation::Create({5, -1}, 1, 0, 0).status())
                .find("shard_sizes[1]"),
            std::string::npos);
}

}  // namespace
}  // namespace podtrain::sampler
