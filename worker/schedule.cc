#include "worker/schedule.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace podtrain::worker {
namespace {

constexpr double kPi = 3.14159265358979323846;

double WarmupFactor(int64_t warmup, int64_t step) {
  if (warmup <= 0) return 1.0;
  return std::min(1.0, static_cast<double>(step + 1) / warmup);
}

double CosineFactor(int64_t warmup, int64_t step, int64_t total_steps) {
  const double span =
      static_cast<double>(std::max<int64_t>(1, total_steps - warmup));
  const double progress =
      std::clamp(static_cast<double>(step - warmup) / span, 0.0, 1.0);
  return 0.5 * (1.0 + std::cos(kPi * progress));
}

double RsqrtFactor(int64_t warmup, int64_t cooldown, int64_t step,
                   int64_t total_steps) {
  const double timescale = static_cast<double>(std::max<int64_t>(warmup, 1));
  const double since_warmup =
      static_cast<double>(std::max<int64_t>(0, step - warmup));
  double factor = 1.0 / std::sqrt(1.0 + since_warmup / timescale);
  if (cooldown > 0) {
    factor *= std::clamp(static_cast<double>(total_steps - step) / cooldown,
                         0.0, 1.0);
  }
  return factor;
}

}  // namespace

double LearningRate(const v1::ScheduleSpec& schedule, int64_t step,
                    int64_t total_steps) {
  const int64_t warmup = schedule.warmup_steps();
  double factor = WarmupFactor(warmup, step);
  switch (schedule.decay()) {
    case v1::ScheduleSpec::COSINE:
      factor *= CosineFactor(warmup, step, total_steps);
      break;
    case v1::ScheduleSpec::RSQRT:
      factor *=
          RsqrtFactor(warmup, schedule.cooldown_steps(), step, total_steps);
      break;
    default:  // CONSTANT, DECAY_UNSPECIFIED.
      break;
  }
  return schedule.base_learning_rate() * factor;
}

absl::Status ValidateSchedule(const v1::ScheduleSpec& schedule) {
  if (!std::isfinite(schedule.base_learning_rate()) ||
      schedule.base_learning_rate() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("schedule.base_learning_rate: must be finite and >= 0, "
                     "got ",
                     schedule.base_learning_rate()));
  }
  if (schedule.warmup_steps() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "schedule.warmup_steps: must be >= 0, got ", schedule.warmup_steps()));
  }
  if (!v1::ScheduleSpec::Decay_IsValid(schedule.decay())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "schedule.decay: unknown value ", static_cast<int>(schedule.decay())));
  }
  if (schedule.cooldown_steps() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("schedule.cooldown_steps: must be >= 0, got ",
                     schedule.cooldown_steps()));
  }
  // Only RSQRT cools down; refusing the field elsewhere beats ignoring it.
  if (schedule.cooldown_steps() > 0 &&
      schedule.decay() != v1::ScheduleSpec::RSQRT) {
    return absl::InvalidArgumentError(
        "schedule.cooldown_steps: only the RSQRT decay has a cooldown");
  }
  return absl::OkStatus();
}

}  // namespace podtrain::worker
