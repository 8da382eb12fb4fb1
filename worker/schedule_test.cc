#include "worker/schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "proto/job.pb.h"

namespace podtrain::worker {
namespace {

constexpr double kTol = 1e-12;

v1::ScheduleSpec Schedule(v1::ScheduleSpec::Decay decay, double base,
                          int64_t warmup, int64_t cooldown = 0) {
  v1::ScheduleSpec schedule;
  schedule.set_decay(decay);
  schedule.set_base_learning_rate(base);
  schedule.set_warmup_steps(warmup);
  schedule.set_cooldown_steps(cooldown);
  return schedule;
}

TEST(ScheduleTest, LinearWarmupStartsAboveZeroAndReachesBaseOnItsLastStep) {
  const auto s = Schedule(v1::ScheduleSpec::CONSTANT, 2.0, 10);
  EXPECT_NEAR(LearningRate(s, 0, 100), 0.2, kTol);
  EXPECT_NEAR(LearningRate(s, 4, 100), 1.0, kTol);
  EXPECT_NEAR(LearningRate(s, 8, 100), 1.8, kTol);
  EXPECT_NEAR(LearningRate(s, 9, 100), 2.0, kTol);
  EXPECT_NEAR(LearningRate(s, 10, 100), 2.0, kTol);
  EXPECT_NEAR(LearningRate(s, 99, 100), 2.0, kTol);
}

TEST(ScheduleTest, ConstantWithoutWarmupAndUnspecifiedDecayIsFlat) {
  for (auto decay :
       {v1::ScheduleSpec::CONSTANT, v1::ScheduleSpec::DECAY_UNSPECIFIED}) {
    const auto s = Schedule(decay, 0.5, 0);
    EXPECT_NEAR(LearningRate(s, 0, 10), 0.5, kTol);
    EXPECT_NEAR(LearningRate(s, 9, 10), 0.5, kTol);
  }
}

TEST(ScheduleTest, CosineDecaysFromBaseAfterWarmupToZeroAtTheEnd) {
  // warmup 10, total 110: the decay spans steps 10..110.
  const auto s = Schedule(v1::ScheduleSpec::COSINE, 1.0, 10);
  EXPECT_NEAR(LearningRate(s, 0, 110), 0.1, kTol);
  // During warmup the cosine factor is 1 (p is clipped to 0).
  EXPECT_NEAR(LearningRate(s, 4, 110), 0.5, kTol);
  EXPECT_NEAR(LearningRate(s, 9, 110), 1.0, kTol);
  EXPECT_NEAR(LearningRate(s, 10, 110), 1.0, kTol);
  // p = 1/4: 0.5·(1 + cos(π/4)) = 0.5 + sqrt(2)/4.
  EXPECT_NEAR(LearningRate(s, 35, 110), 0.5 + std::sqrt(2.0) / 4, kTol);
  EXPECT_NEAR(LearningRate(s, 60, 110), 0.5, kTol);
  // p = 99/100 on the last step: small but not zero.
  const double last = LearningRate(s, 109, 110);
  EXPECT_GT(last, 0.0);
  EXPECT_LT(last, 3e-4);  // 0.5·(1 − cos(π/100)) ≈ 2.47e-4.
  EXPECT_NEAR(LearningRate(s, 110, 110), 0.0, kTol);
  EXPECT_NEAR(LearningRate(s, 500, 110), 0.0, kTol);
}

TEST(ScheduleTest, CosineWithoutWarmupStartsAtBase) {
  const auto s = Schedule(v1::ScheduleSpec::COSINE, 3.0, 0);
  EXPECT_NEAR(LearningRate(s, 0, 4), 3.0, kTol);
  EXPECT_NEAR(LearningRate(s, 2, 4), 1.5, kTol);
}

TEST(ScheduleTest, CosineWhenWarmupFillsTheRunDoesNotDivideByZero) {
  const auto s = Schedule(v1::ScheduleSpec::COSINE, 1.0, 10);
  EXPECT_NEAR(LearningRate(s, 4, 10), 0.5, kTol);
  EXPECT_NEAR(LearningRate(s, 9, 10), 1.0, kTol);
}

TEST(ScheduleTest, RsqrtIsBaseRightAfterWarmupThenDecaysWithTimescaleWarmup) {
  // warmup 100 (so τ = 100), no cooldown.
  const auto s = Schedule(v1::ScheduleSpec::RSQRT, 1.0, 100);
  EXPECT_NEAR(LearningRate(s, 0, 10000), 0.01, kTol);
  EXPECT_NEAR(LearningRate(s, 49, 10000), 0.5, kTol);
  EXPECT_NEAR(LearningRate(s, 99, 10000), 1.0, kTol);
  EXPECT_NEAR(LearningRate(s, 100, 10000), 1.0, kTol);
  EXPECT_NEAR(LearningRate(s, 400, 10000), 0.5, kTol);      // 1/sqrt(4)
  EXPECT_NEAR(LearningRate(s, 900, 10000), 1.0 / 3, kTol);  // 1/sqrt(9)
  // No cooldown: the last step is not pulled towards 0.
  EXPECT_NEAR(LearningRate(s, 9999, 10000), 1.0 / std::sqrt(1 + 98.99), kTol);
}

TEST(ScheduleTest, RsqrtCooldownIsLinearToZeroOverTheLastSteps) {
  // base 2, warmup 100, cooldown 100, total 1000: cooldown covers 900..1000.
  const auto s = Schedule(v1::ScheduleSpec::RSQRT, 2.0, 100, 100);
  EXPECT_NEAR(LearningRate(s, 99, 1000), 2.0, kTol);
  EXPECT_NEAR(LearningRate(s, 100, 1000), 2.0, kTol);
  // Step 899: (1000 − 899)/100 > 1, so no cooldown yet.
  EXPECT_NEAR(LearningRate(s, 899, 1000), 2.0 / std::sqrt(1 + 7.99), kTol);
  // Step 900: cooldown factor exactly 1.
  EXPECT_NEAR(LearningRate(s, 900, 1000), 2.0 / 3, kTol);
  EXPECT_NEAR(LearningRate(s, 950, 1000), 0.5 * 2.0 / std::sqrt(1 + 8.5), kTol);
  EXPECT_NEAR(LearningRate(s, 999, 1000), 0.01 * 2.0 / std::sqrt(1 + 8.99),
              kTol);
  EXPECT_NEAR(LearningRate(s, 1000, 1000), 0.0, kTol);
  EXPECT_NEAR(LearningRate(s, 1200, 1000), 0.0, kTol);
}

TEST(ScheduleTest, RsqrtWithoutWarmupUsesTimescaleOne) {
  const auto s = Schedule(v1::ScheduleSpec::RSQRT, 1.0, 0);
  EXPECT_NEAR(LearningRate(s, 0, 100), 1.0, kTol);
  EXPECT_NEAR(LearningRate(s, 3, 100), 0.5, kTol);
  EXPECT_NEAR(LearningRate(s, 8, 100), 1.0 / 3, kTol);
}

TEST(ScheduleTest, RsqrtMainPhaseDoesNotDependOnTotalSteps) {
  // What lets one run branch into cooldowns of several lengths.
  const auto s = Schedule(v1::ScheduleSpec::RSQRT, 1.0, 10, 20);
  EXPECT_EQ(LearningRate(s, 50, 100), LearningRate(s, 50, 5000));
  EXPECT_LT(LearningRate(s, 90, 100), LearningRate(s, 90, 5000));
}

TEST(ScheduleTest, ValidateScheduleRefusesBadFields) {
  EXPECT_TRUE(
      ValidateSchedule(Schedule(v1::ScheduleSpec::RSQRT, 1, 10, 5)).ok());
  EXPECT_TRUE(ValidateSchedule(Schedule(v1::ScheduleSpec::COSINE, 0, 0)).ok());
  const v1::ScheduleSpec bad[] = {
      Schedule(v1::ScheduleSpec::CONSTANT, -1, 0),
      Schedule(v1::ScheduleSpec::CONSTANT, std::nan(""), 0),
      Schedule(v1::ScheduleSpec::CONSTANT, 1, -1),
      Schedule(v1::ScheduleSpec::RSQRT, 1, 0, -1),
      Schedule(v1::ScheduleSpec::COSINE, 1, 0, 10),
      Schedule(static_cast<v1::ScheduleSpec::Decay>(17), 1, 0),
  };
  for (const auto& s : bad) {
    SCOPED_TRACE(s.ShortDebugString());
    EXPECT_EQ(ValidateSchedule(s).code(), absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace podtrain::worker
