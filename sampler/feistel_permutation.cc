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
                                                              uint64_t key) {
  if (n == 0 || n > kMaxSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("permutation size must be in [1, 2^62], got ", n,
                     n == 0 ? " (an empty dataset has no epoch order)" : ""));
  }
  return FeistelPermutation(n, key);
}

FeistelPermutation::FeistelPermutation(uint64_t n, uint64_t key) : n_(n) {
  // Two bits at least, so each half has one and Round needs no branch; for
  // n <= 2 cycle-walking over the 4-value domain stays exact.
  const int bits = std::max(BitLength(n - 1), 2);
  right_bits_ = bits / 2;
  const int left_bits = bits - right_bits_;
  left_shift_ = 64 - left_bits;
  right_shift_ = 64 - right_bits_;
  right_mask_ = (uint64_t{1} << right_bits_) - 1;
  for (int r = 0; r < kRounds; ++r) round_keys_[r] = Mix64(key + r);
}

uint64_t FeistelPermutation::Encrypt(uint64_t x) const {
  uint64_t left = x >> right_bits_;
  uint64_t right = x & right_mask_;
  for (int r = 0; r < kRounds; r += 2) {
    left ^= Round(right, round_keys_[r], left_shift_);
    right ^= Round(left, round_keys_[r + 1], right_shift_);
  }
  return (left << right_bits_) | right;
}

void FeistelPermutation::ApplyToRange(uint64_t begin, uint64_t count,
                                      uint64_t* out) const {
  for (uint64_t k = 0; k < count; ++k) out[k] = Encrypt(begin + k);
  for (uint64_t k = 0; k < count; ++k) {
    while (out[k] >= n_) out[k] = Encrypt(out[k]);
  }
}

uint64_t FeistelPermutation::Decrypt(uint64_t x) const {
  uint64_t left = x >> right_bits_;
  uint64_t right = x & right_mask_;
  for (int r = kRounds - 2; r >= 0; r -= 2) {
    right ^= Round(left, round_keys_[r + 1], right_shift_);
    left ^= Round(right, round_keys_[r], left_shift_);
  }
  return (left << right_bits_) | right;
}

}  // namespace podtrain::sampler
