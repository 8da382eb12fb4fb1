// A keyed bijection of [0, n) computable at random access in O(1) memory, for
// n up to 2^62: the epoch permutation behind podtrain's exactly-once sampling
// (../shared/DESIGN.md, "The sampling contract").
//
// Construction: an alternating Feistel network over a domain of 2^b values,
// b = bit length of n-1 (so the domain is < 2n and cycle-walking takes fewer
// than two encryptions on average), and b >= 2 so both halves have a bit. The b
// bits split into a left half of ceil(b/2) and a right half of floor(b/2) bits;
// even rounds xor a keyed function of the right half into the left, odd rounds
// the other way. Every round is invertible whatever the widths, so the network
// is a permutation of [0, 2^b); cycle-walking (re-encrypt while the value is >=
// n) restricts it to a permutation of [0, n) (Black and Rogaway, "Ciphers with
// arbitrary finite domains", 2002).
//
// Two flaws of the widely used index_shuffle (TF, Grain) are avoided: sizing
// the domain from ceil(log2 n) instead of the bit length of n-1 loses
// bijectivity at n = 2^k + 1, and 4 rounds of its round function leave a
// third of the input/output bit pairs that never flip (see
// ../shared/research/dataloaders.md). Here the round keys are derived once at
// construction, and the round function is a 64-bit multiply whose high bits
// depend on every input bit; 8 rounds give full avalanche (quality_test.cc).
//
// The function is part of podtrain's checkpoint contract: a job resumed from
// a checkpoint must see the same order, so golden values pin it in tests.
//
// Thread-safety: immutable after Create; all const methods are thread-safe.

#ifndef PODTRAIN_SAMPLER_FEISTEL_PERMUTATION_H_
#define PODTRAIN_SAMPLER_FEISTEL_PERMUTATION_H_

#include <array>
#include <cstdint>

#include "absl/status/statusor.h"

namespace podtrain::sampler {

// Mixes a seed, an epoch and a stream tag (which use of randomness this is:
// the global order, the shard order, window j, ...) into one 64-bit key.
// Stable across runs, compilers and machines.
uint64_t DeriveKey(uint64_t seed, uint64_t epoch, uint64_t stream);

// splitmix64's finalizer: a stable, well-mixed 64-bit hash of x.
uint64_t Mix64(uint64_t x);

class FeistelPermutation {
 public:
  // Rounds of the global order (and the default). Windows of the
  // locality-aware order use kWindowRounds: their domains are ~2^20, where 6
  // rounds already give full avalanche (quality_test.cc), and the windowed
  // order must also pay for its shard lookup.
  static constexpr int kRounds = 8;
  static constexpr int kWindowRounds = 6;
  static constexpr int kMaxRounds = 16;
  static constexpr uint64_t kMaxSize = uint64_t{1} << 62;

  // A permutation of [0, n) keyed by `key`. INVALID_ARGUMENT unless
  // 1 <= n <= kMaxSize and `rounds` is even and in [2, kMaxRounds].
  static absl::StatusOr<FeistelPermutation> Create(uint64_t n, uint64_t key,
                                                   int rounds = kRounds);

  uint64_t size() const { return n_; }

  // The image of i. REQUIRES: i < size().
  uint64_t operator()(uint64_t i) const {
    uint64_t x = i;
    do {
      x = Encrypt(x);
    } while (x >= n_);
    return x;
  }

  // out[k] = (*this)(begin + k) for k < count: the images of a run of
  // consecutive indices. Faster than calling operator() in a loop: the first
  // pass encrypts independent values with no data-dependent branch, so the
  // CPU overlaps their multiply chains; only the few values outside [0, n)
  // are walked after. REQUIRES: begin + count <= size().
  void ApplyToRange(uint64_t begin, uint64_t count, uint64_t* out) const;

  // The preimage of y: Inverse((*this)(i)) == i. REQUIRES: y < size().
  uint64_t Inverse(uint64_t y) const {
    uint64_t x = y;
    do {
      x = Decrypt(x);
    } while (x >= n_);
    return x;
  }

  // One pass of the network over [0, 2^b), without cycle-walking. Exposed
  // for the quality tests. REQUIRES: x < 2^b.
  uint64_t Encrypt(uint64_t x) const;
  uint64_t Decrypt(uint64_t x) const;

 private:
  FeistelPermutation(uint64_t n, uint64_t key, int rounds);

  // Encrypt with the round count fixed at compile time: the loop unrolls and
  // the round keys stay in registers. REQUIRES: kFixedRounds == rounds_.
  template <int kFixedRounds>
  uint64_t EncryptFixed(uint64_t x) const {
    uint64_t left = x >> right_bits_;
    uint64_t right = x & right_mask_;
    for (int r = 0; r < kFixedRounds; r += 2) {
      left ^= Round(right, round_keys_[r], left_shift_);
      right ^= Round(left, round_keys_[r + 1], right_shift_);
    }
    return (left << right_bits_) | right;
  }
  template <typename EncryptFn>
  void ApplyToRangeWith(uint64_t begin, uint64_t count, uint64_t* out,
                        EncryptFn encrypt) const;

  // The top bits of a keyed 64-bit multiply of v (`shift` = 64 - width):
  // every bit of v moves them, which a low-bits mask would not give. Widths
  // are >= 1, so no branch guards the shift.
  static uint64_t Round(uint64_t v, uint64_t key, int shift) {
    return ((v ^ key) * uint64_t{0x9E3779B97F4A7C15}) >> shift;
  }

  uint64_t n_;
  int rounds_;
  int right_bits_;
  int left_shift_;
  int right_shift_;
  uint64_t right_mask_;
  std::array<uint64_t, kMaxRounds> round_keys_;
};

}  // namespace podtrain::sampler

#endif  // PODTRAIN_SAMPLER_FEISTEL_PERMUTATION_H_
