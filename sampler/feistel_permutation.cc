#include "sampler/feistel_permutation.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace podtrain::sampler {
namespace {

int BitLength(uint64_t x) { return x == 0 ? 0 : 64 - __builtin_clzll(x); }

}  // namespace

uint64_t Mix64(uint64_t x) {
  x += uint64_t{0x9E3779B97F4A7C15};
  x = (x ^ (x >> 30)) * uint64_t{0xBF58476D1CE4E5B9};
  x = (x ^ (x >> 27)) * uint64_t{0x94D049BB133111EB};
  return x ^ (x >> 31);
}

uint64_t DeriveKey(uint64_t seed, uint64_t epoch, uint64_t stream) {
  return Mix64(Mix64(Mix64(seed) ^ epoch) ^ (stream * 0xD6E8FEB86659FD93));
}

absl::StatusOr<FeistelPermutation> FeistelPermutation::Create(uint64_t n,
                                                              uint64_t key,
                                                              int rounds) {
  if (n == 0 || n > kMaxSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("permutation size must be in [1, 2^62], got ", n,
                     n == 0 ? " (an empty dataset has no epoch order)" : ""));
  }
  if (rounds < 2 || rounds > kMaxRounds || rounds % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rounds must be even and in [2, ", kMaxRounds, "], got ", rounds));
  }
  return FeistelPermutation(n, key, rounds);
}

FeistelPermutation::FeistelPermutation(uint64_t n, uint64_t key, int rounds)
    : n_(n), rounds_(rounds) {
  // Two bits at least, so each half has one and Round needs no branch; for
  // n <= 2 cycle-walking over the 4-value domain stays exact.
  const int bits = std::max(BitLength(n - 1), 2);
  right_bits_ = bits / 2;
  const int left_bits = bits - right_bits_;
  left_shift_ = 64 - left_bits;
  right_shift_ = 64 - right_bits_;
  right_mask_ = (uint64_t{1} << right_bits_) - 1;
  for (int r = 0; r < rounds_; ++r) round_keys_[r] = Mix64(key + r);
}

uint64_t FeistelPermutation::Encrypt(uint64_t x) const {
  uint64_t left = x >> right_bits_;
  uint64_t right = x & right_mask_;
  for (int r = 0; r < rounds_; r += 2) {
    left ^= Round(right, round_keys_[r], left_shift_);
    right ^= Round(left, round_keys_[r + 1], right_shift_);
  }
  return (left << right_bits_) | right;
}

void FeistelPermutation::ApplyToRange(uint64_t begin, uint64_t count,
                                      uint64_t* out) const {
  // The two round counts podtrain uses get unrolled networks.
  switch (rounds_) {
    case kRounds:
      ApplyToRangeWith(begin, count, out,
                       [this](uint64_t x) { return EncryptFixed<kRounds>(x); });
      break;
    case kWindowRounds:
      ApplyToRangeWith(begin, count, out, [this](uint64_t x) {
        return EncryptFixed<kWindowRounds>(x);
      });
      break;
    default:
      ApplyToRangeWith(begin, count, out,
                       [this](uint64_t x) { return Encrypt(x); });
  }
}

template <typename EncryptFn>
void FeistelPermutation::ApplyToRangeWith(uint64_t begin, uint64_t count,
                                          uint64_t* out,
                                          EncryptFn encrypt) const {
  // Blocks small enough for a stack buffer of out-of-range positions.
  constexpr uint64_t kBlock = 512;
  uint16_t walk[kBlock];
  for (uint64_t block = 0; block < count; block += kBlock) {
    const uint64_t size = std::min(kBlock, count - block);
    uint64_t* values = out + block;
    for (uint64_t k = 0; k < size; ++k) values[k] = encrypt(begin + block + k);
    // Cycle-walk the values that landed outside [0, n) in passes: list them
    // without branching, encrypt each listed value once more, list those
    // still outside, and so on. Every pass is a loop of independent work
    // with no data-dependent branch; walking each value to the end in turn
    // would mispredict on every value that needs a second step.
    uint64_t walking = 0;
    for (uint64_t k = 0; k < size; ++k) {
      walk[walking] = static_cast<uint16_t>(k);
      walking += values[k] >= n_;
    }
    while (walking > 0) {
      uint64_t still = 0;
      for (uint64_t w = 0; w < walking; ++w) {
        const uint16_t k = walk[w];
        values[k] = encrypt(values[k]);
        walk[still] = k;
        still += values[k] >= n_;
      }
      walking = still;
    }
  }
}

uint64_t FeistelPermutation::Decrypt(uint64_t x) const {
  uint64_t left = x >> right_bits_;
  uint64_t right = x & right_mask_;
  for (int r = rounds_ - 2; r >= 0; r -= 2) {
    right ^= Round(left, round_keys_[r + 1], right_shift_);
    left ^= Round(right, round_keys_[r], left_shift_);
  }
  return (left << right_bits_) | right;
}

}  // namespace podtrain::sampler
