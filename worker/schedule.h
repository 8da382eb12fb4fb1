// Learning-rate schedules a job can name in its ScheduleSpec: a pure function
// of the step, so every rank (and a resumed run) computes the same rate
// without carrying schedule state in checkpoints.
//
// Thread-safety: pure functions; safe to call from any thread.

#ifndef PODTRAIN_WORKER_SCHEDULE_H_
#define PODTRAIN_WORKER_SCHEDULE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "proto/job.pb.h"

namespace podtrain::worker {

// The learning rate of optimizer step `step` (counting from 0) of a run of
// `total_steps` steps. With base = schedule.base_learning_rate and
// w = warmup_steps:
//   warmup (w > 0): everything below is multiplied by min(1, (step+1)/w),
//     so step 0 already moves and step w-1 reaches the full rate.
//   CONSTANT (and DECAY_UNSPECIFIED, the proto default): base.
//   COSINE: base·0.5·(1 + cos(π·p)), p = (step − w)/(total_steps − w)
//     clipped to [0, 1] (the denominator floored at 1).
//   RSQRT (Scaling ViTs §3.5, big_vision): with τ = max(w, 1),
//     base / sqrt(1 + max(0, step − w)/τ), i.e. base right after warmup,
//     then, if cooldown_steps c > 0, times max(0, min(1, (total_steps −
//     step)/c)): a linear cooldown that reaches 0 at step total_steps. The
//     rsqrt phase does not depend on total_steps, so one run can branch into
//     cooldowns of several lengths.
// REQUIRES: ValidateSchedule(schedule) is OK.
double LearningRate(const v1::ScheduleSpec& schedule, int64_t step,
                    int64_t total_steps);

// INVALID_ARGUMENT, naming the field, if base_learning_rate is negative or not
// finite, warmup_steps or cooldown_steps is negative, decay is not a known
// value, or cooldown_steps > 0 with a decay other than RSQRT (which would
// silently ignore it).
absl::Status ValidateSchedule(const v1::ScheduleSpec& schedule);

}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_SCHEDULE_H_
