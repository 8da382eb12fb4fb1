#include "dataset/stable_hash.h"

#include <gtest/gtest.h>

namespace podtrain::dataset {
namespace {

// Reference values from the published FNV test vectors and an independent
// SplitMix64 implementation: if these change, every stored digest and
// fingerprint changes with them.
TEST(Fnv1a64Test, MatchesPublishedVectors) {
  EXPECT_EQ(Fnv1a64().value(), 0xcbf29ce484222325ULL);
  Fnv1a64 a;
  a.AddBytes("a");
  EXPECT_EQ(a.value(), 0xaf63dc4c8601ec8cULL);
  Fnv1a64 foobar;
  foobar.AddBytes("foobar");
  EXPECT_EQ(foobar.value(), 0x85944171f73967e8ULL);
}

TEST(Fnv1a64Test, IntegersAreLittleEndianBytes) {
  Fnv1a64 as_int;
  as_int.AddU32(0x04030201);
  as_int.AddU64(0x0c0b0a0908070605ULL);
  Fnv1a64 as_bytes;
  as_bytes.AddBytes("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c");
  EXPECT_EQ(as_int.value(), as_bytes.value());
}

TEST(Fnv1a64Test, StringsAreLengthPrefixed) {
  Fnv1a64 ab_c;
  ab_c.AddString("ab");
  ab_c.AddString("c");
  Fnv1a64 a_bc;
  a_bc.AddString("a");
  a_bc.AddString("bc");
  EXPECT_NE(ab_c.value(), a_bc.value());
}

TEST(SplitMix64Test, MatchesReferenceOutputs) {
  EXPECT_EQ(SplitMix64(0), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(SplitMix64(1), 0x910a2dec89025cc1ULL);
}

}  // namespace
}  // namespace podtrain::dataset
