// Validation and defaults for podtrain.v1.JobSpec (proto/job.proto), and the
// number of optimizer steps a spec trains for.
//
// CreateJob runs NormalizeJobSpec on what the user sent, then, once the
// dataset manifest is read, ValidateJobSpecForDataset; the normalized spec is
// what the job stores and what Job.spec returns.
//
// Every error is INVALID_ARGUMENT with a message that starts with the path of
// the offending field and says why, e.g.
//   "spec.global_batch: must be >= 1, got 0"
//   "spec.optimizer: set exactly one of sgd or adamw"
//
// Defaults. Proto3 cannot tell an unset scalar from 0, so a field whose
// default is not 0 reads 0 as "unset" and gets its default:
//   model.hidden            {32, 64} for "cnn" (required for "mlp")
//   model.num_classes       10
//   model.loss              SOFTMAX_CROSS_ENTROPY
//   optimizer.adamw.beta1   0.9     (so beta1 = 0 cannot be asked for)
//   optimizer.adamw.beta2   0.999   (so beta2 = 0 cannot be asked for)
//   optimizer.adamw.epsilon 1e-8
//   schedule.decay          COSINE
//   min_workers             1
//   max_workers             min_workers
//   checkpoint.interval_steps 100
//   checkpoint.keep         3
//   eval.interval_steps     500 (only when eval.dataset is set)
//   restart_budget          10      (so a budget of 0, "never restart",
//                                    cannot be asked for)
// sgd.momentum keeps 0 (plain SGD), and the other fields have no default.
//
// Thread-safety: free functions on values; no shared state.

#ifndef PODTRAIN_COORDINATOR_JOB_SPEC_H_
#define PODTRAIN_COORDINATOR_JOB_SPEC_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/job.pb.h"

namespace podtrain::coordinator {

// Limits NormalizeJobSpec enforces.
inline constexpr int kMaxDisplayNameChars = 200;  // Unicode code points
inline constexpr int kMaxHiddenLayers = 16;
inline constexpr int64_t kMaxGlobalBatch = int64_t{1} << 24;
inline constexpr double kMaxEpochs = 1e6;
inline constexpr int32_t kMaxWorkers = 4096;

// Returns `spec` with defaults filled in (see above) after checking every
// field. Needs nothing but the spec; checks that depend on the dataset are in
// ValidateJobSpecForDataset.
absl::StatusOr<v1::JobSpec> NormalizeJobSpec(const v1::JobSpec& spec);

// Checks what needs the dataset's size, `examples_per_epoch` (N):
// N >= 1; the job trains a representable number of steps, >= 1;
// schedule.warmup_steps + schedule.cooldown_steps <= that number;
// max_workers <= global_batch (every rank gets >= 1 example per step).
// global_batch may exceed N: a batch may span epochs.
// REQUIRES: `spec` is the output of NormalizeJobSpec.
absl::Status ValidateJobSpecForDataset(const v1::JobSpec& spec,
                                       int64_t examples_per_epoch);

// The number of optimizer steps the job trains: spec.steps(), or
// ceil(spec.epochs() * N / spec.global_batch()). `epochs` is taken as the
// shortest decimal that round-trips to the double (what the user wrote: 0.1,
// not 0.1000000000000000055...) and the product is computed exactly in
// 128-bit integers, so e.g. epochs 1.1, N 100, B 10 gives 11, not 12.
// Saturates at INT64_MAX (ValidateJobSpecForDataset refuses such a spec).
// REQUIRES: `spec` is the output of NormalizeJobSpec; examples_per_epoch >= 1.
int64_t TotalSteps(const v1::JobSpec& spec, int64_t examples_per_epoch);

}  // namespace podtrain::coordinator

#endif  // PODTRAIN_COORDINATOR_JOB_SPEC_H_
