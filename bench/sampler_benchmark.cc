// ns per index of the epoch permutations at JFT scale (N = 4*10^9 examples,
// S = 40,000 shards), single core. Target: <= 10 ns per index. Results are
// recorded in bench/RESULTS.md; run with
//   bazel run -c opt //bench:sampler_benchmark
// Fill is how the coordinator reads (a step's contiguous positions); At is
// random access (one position at a time, e.g. for the audit).

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "sampler/feistel_permutation.h"
#include "sampler/windowed_permutation.h"

namespace podtrain::sampler {
namespace {

constexpr uint64_t kJftExamples = 4'000'000'000;
constexpr int64_t kJftShards = 40'000;
constexpr int64_t kBatch = 4096;

std::vector<int64_t> JftShardSizes() {
  return std::vector<int64_t>(kJftShards, kJftExamples / kJftShards);
}

// Feistel over [0, N): one step's worth of positions per iteration.
void BM_GlobalFill(benchmark::State& state) {
  auto p = *WindowedPermutation::Create(JftShardSizes(), kJftShards, 42, 0);
  std::vector<uint64_t> out(kBatch);
  uint64_t begin = 1'234'567'890;
  for (auto _ : state) {
    p.Fill(begin, kBatch, out.data());
    benchmark::DoNotOptimize(out.data());
    begin = (begin + kBatch) % (kJftExamples - kBatch);
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_GlobalFill);

void BM_GlobalRandomAt(benchmark::State& state) {
  auto p = *FeistelPermutation::Create(kJftExamples, DeriveKey(42, 0, 1));
  std::mt19937_64 rng(1);
  std::vector<uint64_t> positions(kBatch);
  for (auto& i : positions) i = rng() % kJftExamples;
  for (auto _ : state) {
    uint64_t sum = 0;
    for (uint64_t i : positions) sum += p(i);
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_GlobalRandomAt);

// The same network, but with its round keys re-derived on every call, as
// index_shuffle does: what caching the keys per (seed, epoch) saves.
void BM_GlobalRekeyEveryCall(benchmark::State& state) {
  std::vector<uint64_t> out(kBatch);
  uint64_t begin = 1'234'567'890;
  for (auto _ : state) {
    for (int64_t k = 0; k < kBatch; ++k) {
      auto p = *FeistelPermutation::Create(kJftExamples, DeriveKey(42, 0, 1));
      out[k] = p(begin + k);
    }
    benchmark::DoNotOptimize(out.data());
    begin = (begin + kBatch) % (kJftExamples - kBatch);
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_GlobalRekeyEveryCall);

// The peer: index_shuffle as Grain and TF ship it (../shared/research/
// dataloaders.md, "index_shuffle construction"), written from that
// description: a reduced Simon Feistel network over a block of
// max(even(ceil(log2 max_index)), 16) bits, round function
// f(x) = (x<<<1 & x<<<8) ^ (x<<<2) on half-blocks, 4 rounds, round keys built
// from the seed with std::seed_seq on every call, cycle-walking to
// <= max_index.
class IndexShuffleBaseline {
 public:
  static uint64_t Shuffle(uint64_t index, uint64_t max_index, uint32_t seed,
                          int rounds) {
    int bits = 0;
    while (bits < 64 && (uint64_t{1} << bits) < max_index) ++bits;
    bits = std::max(bits + (bits & 1), 16);
    const int half = bits / 2;
    const uint64_t mask = (uint64_t{1} << half) - 1;
    std::vector<uint32_t> keys(rounds);
    std::seed_seq{seed}.generate(keys.begin(), keys.end());
    uint64_t value = index;
    do {
      uint64_t x = value >> half;
      uint64_t y = value & mask;
      for (int r = 0; r < rounds; ++r) {
        const uint64_t next = y ^ F(x, half, mask) ^ (keys[r] & mask);
        y = x;
        x = next;
      }
      value = (x << half) | y;
    } while (value > max_index);
    return value;
  }

 private:
  static uint64_t Rotl(uint64_t x, int r, int width, uint64_t mask) {
    return ((x << r) | (x >> (width - r))) & mask;
  }
  static uint64_t F(uint64_t x, int width, uint64_t mask) {
    return (Rotl(x, 1, width, mask) & Rotl(x, 8, width, mask)) ^
           Rotl(x, 2, width, mask);
  }
};

void BM_IndexShuffleBaseline(benchmark::State& state) {
  const int rounds = static_cast<int>(state.range(0));
  std::vector<uint64_t> out(kBatch);
  uint64_t begin = 1'234'567'890;
  for (auto _ : state) {
    for (int64_t k = 0; k < kBatch; ++k) {
      out[k] = IndexShuffleBaseline::Shuffle(begin + k, kJftExamples - 1, 42,
                                             rounds);
    }
    benchmark::DoNotOptimize(out.data());
    begin = (begin + kBatch) % (kJftExamples - kBatch);
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_IndexShuffleBaseline)->Arg(4)->Arg(8);

// Locality-aware: shuffled shard order, windows of `range(0)` shards.
void BM_WindowedFill(benchmark::State& state) {
  auto p = *WindowedPermutation::Create(JftShardSizes(), state.range(0), 42, 0);
  std::vector<uint64_t> out(kBatch);
  uint64_t begin = 1'234'567'890;
  for (auto _ : state) {
    p.Fill(begin, kBatch, out.data());
    benchmark::DoNotOptimize(out.data());
    begin = (begin + kBatch) % (kJftExamples - kBatch);
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["table_bytes"] = p.MemoryBytes();
}
BENCHMARK(BM_WindowedFill)->Arg(1)->Arg(16)->Arg(256);

void BM_WindowedRandomAt(benchmark::State& state) {
  auto p = *WindowedPermutation::Create(JftShardSizes(), state.range(0), 42, 0);
  std::mt19937_64 rng(1);
  std::vector<uint64_t> positions(kBatch);
  for (auto& i : positions) i = rng() % kJftExamples;
  for (auto _ : state) {
    uint64_t sum = 0;
    for (uint64_t i : positions) sum += p.At(i);
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_WindowedRandomAt)->Arg(16);

// Building one epoch's O(S) tables (once per epoch per process).
void BM_WindowedCreateEpoch(benchmark::State& state) {
  const auto sizes = JftShardSizes();
  uint64_t epoch = 0;
  for (auto _ : state) {
    auto p = WindowedPermutation::Create(sizes, 16, 42, epoch++);
    benchmark::DoNotOptimize(p);
  }
}
BENCHMARK(BM_WindowedCreateEpoch)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace podtrain::sampler

BENCHMARK_MAIN();
