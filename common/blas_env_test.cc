#include "common/blas_env.h"

#include <gtest/gtest.h>

namespace podtrain {
namespace {

constexpr char kAvx512[] =
    "fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx avx2 avx512f avx512dq "
    "avx512cd avx512bw avx512vl";
constexpr char kAvx2[] = "fpu sse sse2 ssse3 fma sse4_2 avx avx2";

TEST(BlasEnvTest, BestCoretypeFollowsTheVectorExtensions) {
  EXPECT_EQ(BestOpenblasCoretype(kAvx512), "SkylakeX");
  EXPECT_EQ(BestOpenblasCoretype(kAvx2), "Haswell");
  EXPECT_EQ(BestOpenblasCoretype("fpu sse sse2 avx"), "");
  // AVX-512 F alone (Knights Landing) is not enough for the SkylakeX
  // kernels; a flag that merely starts with "avx2" is not AVX2.
  EXPECT_EQ(BestOpenblasCoretype("avx2 fma avx512f"), "Haswell");
  EXPECT_EQ(BestOpenblasCoretype("avx2x fma"), "");
}

TEST(BlasEnvTest, ForcesOnlyWhenOpenblasChoseNarrowerKernels) {
  // Debian's OpenBLAS on an AVX-512 Xeon it does not recognise.
  EXPECT_EQ(CoretypeToForce(nullptr, "Prescott", kAvx512), "SkylakeX");
  EXPECT_EQ(CoretypeToForce(nullptr, "Haswell", kAvx512), "SkylakeX");
  EXPECT_EQ(CoretypeToForce(nullptr, "SkylakeX", kAvx512), "");
  EXPECT_EQ(CoretypeToForce(nullptr, "Cooperlake", kAvx512), "");
  EXPECT_EQ(CoretypeToForce(nullptr, "Zen", kAvx2), "");
  EXPECT_EQ(CoretypeToForce(nullptr, "Sandybridge", kAvx2), "Haswell");
  EXPECT_EQ(CoretypeToForce(nullptr, "Prescott", "sse sse2"), "");
}

TEST(BlasEnvTest, AnOperatorsChoiceAlwaysWins) {
  EXPECT_EQ(CoretypeToForce("Haswell", "Haswell", kAvx512), "");
  EXPECT_EQ(CoretypeToForce("", "Prescott", kAvx512), "");
}

}  // namespace
}  // namespace podtrain
