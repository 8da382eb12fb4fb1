// Stable 64-bit hashes for identities that are stored or compared across
// processes: record-shard content digests, manifest fingerprints and the
// synthetic example generator. absl::Hash is salted per process and may change
// between Abseil releases, so it must never be used for these. The functions
// here give the same value for the same input in every run, on every machine
// and in every build: they are part of podtrain's file formats, so their
// definitions must never change.
//
// Thread-safety: Fnv1a64 is a plain value (use one per thread); SplitMix64 is
// a pure function.

#ifndef PODTRAIN_DATASET_STABLE_HASH_H_
#define PODTRAIN_DATASET_STABLE_HASH_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace podtrain::dataset {

// FNV-1a, 64-bit (Fowler/Noll/Vo). Integers are fed as fixed-width
// little-endian bytes so the result does not depend on the host's byte order.
//
//   Fnv1a64 hash;
//   hash.AddString(name);
//   hash.AddU64(records);
//   uint64_t fingerprint = hash.value();
class Fnv1a64 {
 public:
  static constexpr uint64_t kOffsetBasis = 0xcbf29ce484222325ULL;
  static constexpr uint64_t kPrime = 0x100000001b3ULL;

  void AddBytes(absl::string_view bytes) {
    for (const char c : bytes) AddByte(static_cast<uint8_t>(c));
  }
  void AddU32(uint32_t value) {
    for (int shift = 0; shift < 32; shift += 8) AddByte(value >> shift);
  }
  void AddU64(uint64_t value) {
    for (int shift = 0; shift < 64; shift += 8) AddByte(value >> shift);
  }
  // Length-prefixed, so that ("ab", "c") and ("a", "bc") hash differently.
  void AddString(absl::string_view text) {
    AddU64(text.size());
    AddBytes(text);
  }

  uint64_t value() const { return state_; }

 private:
  void AddByte(uint8_t byte) {
    state_ ^= byte;
    state_ *= kPrime;
  }

  uint64_t state_ = kOffsetBasis;
};

// One step of SplitMix64 (Steele, Lea & Flood, 2014): adds the golden-ratio
// increment to `x` and mixes all 64 bits. Bijective and well distributed, so
// SplitMix64(key + i) works as a counter-based random stream for key `key`.
constexpr uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace podtrain::dataset

#endif  // PODTRAIN_DATASET_STABLE_HASH_H_
