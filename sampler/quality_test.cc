// Shuffle quality of the epoch permutations: full avalanche, the position of
// a fixed example uniform over seeds, and neighbours scattered. The measured
// weakness of 4-round index_shuffle (a third of the bit pairs never flip,
// neighbours kept together at twice the random rate) is what these guard
// against. Seeds are fixed, so results are deterministic.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "sampler/feistel_permutation.h"
#include "sampler/windowed_permutation.h"

namespace podtrain::sampler {
namespace {

// For each (input bit, output bit) pair, the probability that flipping the
// input bit flips the output bit, over `samples` random inputs.
std::vector<std::vector<double>> FlipProbabilities(const FeistelPermutation& p,
                                                   int bits, int samples) {
  std::vector<std::vector<double>> flips(bits, std::vector<double>(bits, 0));
  std::mt19937_64 rng(99);
  const uint64_t mask = (bits == 64) ? ~uint64_t{0} : (uint64_t{1} << bits) - 1;
  for (int s = 0; s < samples; ++s) {
    const uint64_t x = rng() & mask;
    const uint64_t y = p.Encrypt(x);
    for (int in = 0; in < bits; ++in) {
      const uint64_t diff = y ^ p.Encrypt(x ^ (uint64_t{1} << in));
      for (int out = 0; out < bits; ++out) {
        flips[in][out] += (diff >> out) & 1;
      }
    }
  }
  for (auto& row : flips) {
    for (double& f : row) f /= samples;
  }
  return flips;
}

void ExpectFullAvalanche(uint64_t n, int bits,
                         int rounds = FeistelPermutation::kRounds) {
  auto p = *FeistelPermutation::Create(n, DeriveKey(5, 0, 1), rounds);
  constexpr int kSamples = 4000;
  const auto flips = FlipProbabilities(p, bits, kSamples);
  double total_deviation = 0;
  for (int in = 0; in < bits; ++in) {
    for (int out = 0; out < bits; ++out) {
      // 6.3 standard deviations of a fair coin over 4000 samples: no pair
      // may be far from 1/2, let alone never flip.
      EXPECT_NEAR(flips[in][out], 0.5, 0.05)
          << "n=" << n << " input bit " << in << " -> output bit " << out;
      total_deviation += std::abs(flips[in][out] - 0.5);
    }
  }
  EXPECT_LT(total_deviation / (bits * bits), 0.015) << "n=" << n;
}

TEST(QualityTest, EveryInputBitFlipsEveryOutputBitHalfTheTime) {
  ExpectFullAvalanche(uint64_t{1} << 32, 32);
  ExpectFullAvalanche(uint64_t{1} << 40, 40);
  ExpectFullAvalanche(uint64_t{1} << 21, 21);  // odd width: unequal halves
}

// Windows of the locality-aware order use fewer rounds; their domains
// (~2^16 to 2^26 examples) still get full avalanche.
TEST(QualityTest, WindowRoundsStillAvalancheOnWindowSizedDomains) {
  ExpectFullAvalanche(uint64_t{1} << 16, 16, FeistelPermutation::kWindowRounds);
  ExpectFullAvalanche(uint64_t{1} << 21, 21, FeistelPermutation::kWindowRounds);
  ExpectFullAvalanche(uint64_t{1} << 26, 26, FeistelPermutation::kWindowRounds);
}

// Chi-square statistic of `counts` against a uniform expectation.
double ChiSquare(const std::vector<int>& counts, double expected) {
  double chi2 = 0;
  for (int c : counts) chi2 += (c - expected) * (c - expected) / expected;
  return chi2;
}

// 99.9th percentile of chi-square with 19 degrees of freedom.
constexpr double kChiSquare19Dof999 = 43.82;

TEST(QualityTest, PositionOfAFixedExampleIsUniformOverSeeds) {
  constexpr uint64_t kN = 1000;
  constexpr int kBins = 20;
  constexpr int kSeeds = 100'000;
  std::vector<int> counts(kBins, 0);
  for (uint64_t seed = 0; seed < kSeeds; ++seed) {
    auto p = *FeistelPermutation::Create(kN, DeriveKey(seed, 0, 1));
    counts[p.Inverse(0) * kBins / kN]++;
  }
  EXPECT_LT(ChiSquare(counts, static_cast<double>(kSeeds) / kBins),
            kChiSquare19Dof999);
}

TEST(QualityTest, WindowedPositionOfAFixedExampleIsUniformOverSeeds) {
  // 10 shards of 100, windows of 2 shards.
  const std::vector<int64_t> shards(10, 100);
  constexpr int kBins = 20;
  constexpr int kSeeds = 20'000;
  constexpr uint64_t kTarget = 437;  // shard 4, record 37
  std::vector<int> counts(kBins, 0);
  std::vector<uint64_t> order(1000);
  for (uint64_t seed = 0; seed < kSeeds; ++seed) {
    auto p = *WindowedPermutation::Create(shards, 2, seed, 0);
    p.Fill(0, order.size(), order.data());
    for (uint64_t i = 0; i < order.size(); ++i) {
      if (order[i] == kTarget) counts[i * kBins / order.size()]++;
    }
  }
  EXPECT_LT(ChiSquare(counts, static_cast<double>(kSeeds) / kBins),
            kChiSquare19Dof999);
}

TEST(QualityTest, ConsecutivePositionsLandFarApart) {
  constexpr uint64_t kN = 1'000'000;
  auto p = *FeistelPermutation::Create(kN, DeriveKey(8, 2, 1));
  const uint64_t near = kN / 1024;
  int close = 0;
  for (uint64_t i = 0; i + 1 < kN; ++i) {
    const uint64_t a = p(i), b = p(i + 1);
    close += (a > b ? a - b : b - a) < near;
  }
  // Two random points are within N/1024 of each other with probability
  // ~2/1024: ~1950 of 10^6 pairs. Demand the random rate within 15%.
  const double expected = (kN - 1) * (2.0 / 1024);
  EXPECT_NEAR(close, expected, 0.15 * expected);
}

TEST(QualityTest, WindowedNeighboursAreNotAdjacentRecords) {
  // 100 shards of 10,000 records, windows of 4 shards: within a window,
  // consecutive positions should not be consecutive records of one shard.
  const std::vector<int64_t> shards(100, 10'000);
  auto p = *WindowedPermutation::Create(shards, 4, 11, 0);
  std::vector<uint64_t> order(p.size());
  p.Fill(0, order.size(), order.data());
  int adjacent = 0;
  for (size_t i = 0; i + 1 < order.size(); ++i) {
    const uint64_t a = order[i], b = order[i + 1];
    adjacent += (a > b ? a - b : b - a) == 1;
  }
  // Random rate: P(same shard) 1/4 x P(adjacent record) 2/10^4 = 5e-5 per
  // pair, ~50 of 10^6. A stream that kept shards sequential would be ~10^6.
  EXPECT_LT(adjacent, 120);
}

}  // namespace
}  // namespace podtrain::sampler
