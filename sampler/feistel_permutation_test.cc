#include "sampler/feistel_permutation.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <unordered_set>
#include <vector>

namespace podtrain::sampler {
namespace {

// Checks that p is a bijection of [0, n) by evaluating every index.
void ExpectBijection(const FeistelPermutation& p) {
  const uint64_t n = p.size();
  std::vector<bool> seen(n, false);
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t y = p(i);
    ASSERT_LT(y, n) << "n=" << n << " i=" << i;
    ASSERT_FALSE(seen[y]) << "n=" << n << ": " << y << " hit twice";
    seen[y] = true;
    ASSERT_EQ(p.Inverse(y), i) << "n=" << n;
  }
}

std::vector<uint64_t> SizesAroundPowersOfTwo(int max_k) {
  std::vector<uint64_t> sizes;
  for (int k = 1; k <= max_k; ++k) {
    const uint64_t power = uint64_t{1} << k;
    sizes.push_back(power - 1);
    sizes.push_back(power);
    sizes.push_back(power + 1);
  }
  return sizes;
}

TEST(FeistelPermutationTest, BijectionForEverySmallSize) {
  for (uint64_t n = 1; n <= 1000; ++n) {
    auto p = FeistelPermutation::Create(n, DeriveKey(7, n, 0));
    ASSERT_TRUE(p.ok());
    ExpectBijection(*p);
  }
}

// 2^k + 1 is where index_shuffle's domain sizing drops an index.
TEST(FeistelPermutationTest, BijectionAroundEveryPowerOfTwoUpTo2To20) {
  for (uint64_t n : SizesAroundPowersOfTwo(20)) {
    for (uint64_t seed : {0, 1}) {
      auto p = FeistelPermutation::Create(n, DeriveKey(seed, 3, 1));
      ASSERT_TRUE(p.ok());
      ExpectBijection(*p);
    }
  }
}

TEST(FeistelPermutationTest, SampledBijectionAtHugeSizes) {
  std::mt19937_64 rng(123);
  for (uint64_t n : {uint64_t{4'000'000'000}, uint64_t{1} << 40,
                     (uint64_t{1} << 40) + 1, uint64_t{1} << 62}) {
    auto p = FeistelPermutation::Create(n, DeriveKey(42, 0, 1));
    ASSERT_TRUE(p.ok());
    std::unordered_set<uint64_t> inputs, outputs;
    while (inputs.size() < 100'000) {
      const uint64_t i = rng() % n;
      if (!inputs.insert(i).second) continue;
      const uint64_t y = (*p)(i);
      ASSERT_LT(y, n);
      ASSERT_TRUE(outputs.insert(y).second) << "collision at n=" << n;
      ASSERT_EQ(p->Inverse(y), i);
    }
    // The extreme indices are in range and invert too.
    for (uint64_t i : {uint64_t{0}, n - 1}) {
      ASSERT_LT((*p)(i), n);
      ASSERT_EQ(p->Inverse((*p)(i)), i);
    }
  }
}

TEST(FeistelPermutationTest, EveryEvenRoundCountIsABijection) {
  for (int rounds = 2; rounds <= FeistelPermutation::kMaxRounds; rounds += 2) {
    auto p = FeistelPermutation::Create(1025, DeriveKey(1, 2, 3), rounds);
    ASSERT_TRUE(p.ok());
    ExpectBijection(*p);
  }
  EXPECT_FALSE(FeistelPermutation::Create(10, 1, 3).ok());
  EXPECT_FALSE(FeistelPermutation::Create(10, 1, 0).ok());
  EXPECT_FALSE(FeistelPermutation::Create(10, 1, 18).ok());
}

TEST(FeistelPermutationTest, RejectsEmptyAndOversizedDomains) {
  auto empty = FeistelPermutation::Create(0, 1);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find("empty dataset"), std::string::npos);
  auto huge = FeistelPermutation::Create(FeistelPermutation::kMaxSize + 1, 1);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FeistelPermutationTest, KeysSelectDifferentPermutationsDeterministically) {
  const uint64_t n = 10'000;
  auto a = *FeistelPermutation::Create(n, DeriveKey(1, 0, 1));
  auto a_again = *FeistelPermutation::Create(n, DeriveKey(1, 0, 1));
  auto next_epoch = *FeistelPermutation::Create(n, DeriveKey(1, 1, 1));
  auto other_seed = *FeistelPermutation::Create(n, DeriveKey(2, 0, 1));
  int same_as_next_epoch = 0, same_as_other_seed = 0;
  for (uint64_t i = 0; i < n; ++i) {
    ASSERT_EQ(a(i), a_again(i));
    same_as_next_epoch += a(i) == next_epoch(i);
    same_as_other_seed += a(i) == other_seed(i);
  }
  // Two independent permutations agree on ~1 point on average.
  EXPECT_LT(same_as_next_epoch, 10);
  EXPECT_LT(same_as_other_seed, 10);
}

TEST(FeistelPermutationTest, NotTheIdentityEvenForTinyDomains) {
  int identities = 0;
  for (uint64_t seed = 0; seed < 100; ++seed) {
    auto p = *FeistelPermutation::Create(4, DeriveKey(seed, 0, 1));
    identities += p(0) == 0 && p(1) == 1 && p(2) == 2 && p(3) == 3;
  }
  // 1 in 24 permutations of 4 is the identity: ~4 of 100 seeds.
  EXPECT_LT(identities, 15);
}

// The permutation is part of the checkpoint contract: a job resumed by a new
// binary must see the same order. If this fails, the function changed, and
// every running job's data order with it.
TEST(FeistelPermutationTest, GoldenValuesPinTheFunction) {
  auto small = *FeistelPermutation::Create(1000, DeriveKey(42, 0, 1));
  const std::vector<uint64_t> small_golden = {800, 738, 478, 489,
                                              307, 774, 779, 736};
  for (uint64_t i = 0; i < small_golden.size(); ++i) {
    EXPECT_EQ(small(i), small_golden[i]) << "i=" << i;
  }
  auto jft = *FeistelPermutation::Create(4'000'000'000, DeriveKey(42, 3, 1));
  const std::vector<uint64_t> jft_golden = {1469226607, 303428532,  3452353548,
                                            949325671,  3517544122, 1145034985,
                                            2643617187, 3357638497};
  for (uint64_t i = 0; i < jft_golden.size(); ++i) {
    EXPECT_EQ(jft(i), jft_golden[i]) << "i=" << i;
  }
  EXPECT_EQ(DeriveKey(42, 0, 1), uint64_t{0xf9f5aab2d6e9f824});
}

}  // namespace
}  // namespace podtrain::sampler
