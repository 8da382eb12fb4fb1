#include "coordinator/job_spec.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>

#include "absl/numeric/int128.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"

namespace podtrain::coordinator {
namespace {

using v1::JobSpec;

// ---------------------------------------------------------------------------
// Field checks: each returns INVALID_ARGUMENT "<path>: <why>" or OK.

absl::Status FieldError(absl::string_view path, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", why));
}

absl::Status CheckAtLeast(absl::string_view path, int64_t value, int64_t min) {
  if (value >= min) return absl::OkStatus();
  return FieldError(path, absl::StrCat("must be >= ", min, ", got ", value));
}

absl::Status CheckAtMost(absl::string_view path, int64_t value, int64_t max) {
  if (value <= max) return absl::OkStatus();
  return FieldError(path, absl::StrCat("must be <= ", max, ", got ", value));
}

absl::Status CheckNotEmpty(absl::string_view path, absl::string_view value) {
  if (!value.empty()) return absl::OkStatus();
  return FieldError(path, "must not be empty");
}

// Shortest text that reads back as `value`: "0.1", "1000001", "1e-08", "nan".
std::string FormatDouble(double value) {
  char text[32];
  const std::to_chars_result result =
      std::to_chars(text, text + sizeof(text), value);
  return std::string(text, result.ptr);
}

absl::Status CheckFinite(absl::string_view path, double value) {
  if (std::isfinite(value)) return absl::OkStatus();
  return FieldError(path,
                    absl::StrCat("must be finite, got ", FormatDouble(value)));
}

// value >= 0 and finite.
absl::Status CheckNonNegative(absl::string_view path, double value) {
  RETURN_IF_ERROR(CheckFinite(path, value));
  if (value >= 0) return absl::OkStatus();
  return FieldError(path,
                    absl::StrCat("must be >= 0, got ", FormatDouble(value)));
}

// value > 0 and finite.
absl::Status CheckPositive(absl::string_view path, double value) {
  RETURN_IF_ERROR(CheckFinite(path, value));
  if (value > 0) return absl::OkStatus();
  return FieldError(path,
                    absl::StrCat("must be > 0, got ", FormatDouble(value)));
}

// value in [0, 1).
absl::Status CheckUnitInterval(absl::string_view path, double value) {
  RETURN_IF_ERROR(CheckFinite(path, value));
  if (value >= 0 && value < 1) return absl::OkStatus();
  return FieldError(
      path, absl::StrCat("must be in [0, 1), got ", FormatDouble(value)));
}

// Code points of valid UTF-8 (proto3 strings are): bytes that do not continue
// a sequence.
int64_t Utf8Length(absl::string_view text) {
  int64_t length = 0;
  for (char c : text) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++length;
  }
  return length;
}

// ---------------------------------------------------------------------------
// One function per part of the spec; each checks and fills in place.

absl::Status CheckNames(const JobSpec& spec) {
  const int64_t length = Utf8Length(spec.display_name());
  if (length > kMaxDisplayNameChars) {
    return FieldError("spec.display_name",
                      absl::StrCat("must be at most ", kMaxDisplayNameChars,
                                   " characters, got ", length));
  }
  return CheckNotEmpty("spec.dataset", spec.dataset());
}

absl::Status NormalizeHidden(v1::ModelSpec* model) {
  if (model->hidden_size() > kMaxHiddenLayers) {
    return FieldError("spec.model.hidden",
                      absl::StrCat("must have at most ", kMaxHiddenLayers,
                                   " entries, got ", model->hidden_size()));
  }
  for (int i = 0; i < model->hidden_size(); ++i) {
    RETURN_IF_ERROR(CheckAtLeast(absl::StrCat("spec.model.hidden[", i, "]"),
                                 model->hidden(i), 1));
  }
  if (!model->hidden().empty()) return absl::OkStatus();
  if (model->name() == "mlp") {
    return FieldError("spec.model.hidden",
                      "mlp needs at least one hidden layer width");
  }
  model->add_hidden(32);  // cnn
  model->add_hidden(64);
  return absl::OkStatus();
}

absl::Status NormalizeModel(v1::ModelSpec* model) {
  if (model->name() != "mlp" && model->name() != "cnn") {
    return FieldError("spec.model.name",
                      absl::StrCat("unknown model \"", model->name(),
                                   "\"; known models: cnn, mlp"));
  }
  RETURN_IF_ERROR(NormalizeHidden(model));
  if (model->num_classes() == 0) model->set_num_classes(10);
  RETURN_IF_ERROR(
      CheckAtLeast("spec.model.num_classes", model->num_classes(), 2));
  if (model->loss() == v1::ModelSpec::LOSS_UNSPECIFIED) {
    model->set_loss(v1::ModelSpec::SOFTMAX_CROSS_ENTROPY);
  }
  if (!v1::ModelSpec::Loss_IsValid(model->loss())) {
    return FieldError("spec.model.loss",
                      absl::StrCat("unknown value ", model->loss()));
  }
  return absl::OkStatus();
}

absl::Status CheckSgd(const v1::SgdSpec& sgd) {
  RETURN_IF_ERROR(
      CheckUnitInterval("spec.optimizer.sgd.momentum", sgd.momentum()));
  return CheckNonNegative("spec.optimizer.sgd.agc_clip", sgd.agc_clip());
}

absl::Status NormalizeAdamW(v1::AdamWSpec* adamw) {
  if (adamw->beta1() == 0) adamw->set_beta1(0.9);
  if (adamw->beta2() == 0) adamw->set_beta2(0.999);
  if (adamw->epsilon() == 0) adamw->set_epsilon(1e-8);
  RETURN_IF_ERROR(
      CheckUnitInterval("spec.optimizer.adamw.beta1", adamw->beta1()));
  RETURN_IF_ERROR(
      CheckUnitInterval("spec.optimizer.adamw.beta2", adamw->beta2()));
  return CheckPositive("spec.optimizer.adamw.epsilon", adamw->epsilon());
}

absl::Status NormalizeOptimizer(v1::OptimizerSpec* optimizer) {
  switch (optimizer->optimizer_case()) {
    case v1::OptimizerSpec::kSgd:
      RETURN_IF_ERROR(CheckSgd(optimizer->sgd()));
      break;
    case v1::OptimizerSpec::kAdamw:
      RETURN_IF_ERROR(NormalizeAdamW(optimizer->mutable_adamw()));
      break;
    case v1::OptimizerSpec::OPTIMIZER_NOT_SET:
      return FieldError("spec.optimizer", "set exactly one of sgd or adamw");
  }
  RETURN_IF_ERROR(CheckNonNegative("spec.optimizer.weight_decay",
                                   optimizer->weight_decay()));
  return CheckNonNegative("spec.optimizer.head_weight_decay",
                          optimizer->head_weight_decay());
}

absl::Status NormalizeSchedule(v1::ScheduleSpec* schedule) {
  RETURN_IF_ERROR(CheckPositive("spec.schedule.base_learning_rate",
                                schedule->base_learning_rate()));
  RETURN_IF_ERROR(
      CheckAtLeast("spec.schedule.warmup_steps", schedule->warmup_steps(), 0));
  RETURN_IF_ERROR(CheckAtLeast("spec.schedule.cooldown_steps",
                               schedule->cooldown_steps(), 0));
  if (schedule->decay() == v1::ScheduleSpec::DECAY_UNSPECIFIED) {
    schedule->set_decay(v1::ScheduleSpec::COSINE);
  }
  if (!v1::ScheduleSpec::Decay_IsValid(schedule->decay())) {
    return FieldError("spec.schedule.decay",
                      absl::StrCat("unknown value ", schedule->decay()));
  }
  if (schedule->cooldown_steps() > 0 &&
      schedule->decay() != v1::ScheduleSpec::RSQRT) {
    return FieldError(
        "spec.schedule.cooldown_steps",
        absl::StrCat("must be 0 unless decay is RSQRT (the only schedule "
                     "with a cooldown), got ",
                     schedule->cooldown_steps(), " with decay ",
                     v1::ScheduleSpec::Decay_Name(schedule->decay())));
  }
  return absl::OkStatus();
}

absl::Status CheckBatchAndLength(const JobSpec& spec) {
  RETURN_IF_ERROR(CheckAtLeast("spec.global_batch", spec.global_batch(), 1));
  RETURN_IF_ERROR(
      CheckAtMost("spec.global_batch", spec.global_batch(), kMaxGlobalBatch));
  switch (spec.length_case()) {
    case JobSpec::kEpochs:
      RETURN_IF_ERROR(CheckPositive("spec.epochs", spec.epochs()));
      if (spec.epochs() > kMaxEpochs) {
        return FieldError("spec.epochs",
                          absl::StrCat("must be <= ", FormatDouble(kMaxEpochs),
                                       ", got ", FormatDouble(spec.epochs())));
      }
      return absl::OkStatus();
    case JobSpec::kSteps:
      return CheckAtLeast("spec.steps", spec.steps(), 1);
    case JobSpec::LENGTH_NOT_SET:
      break;
  }
  return FieldError("spec.length", "set exactly one of epochs or steps");
}

absl::Status NormalizeWorkers(JobSpec* spec) {
  if (spec->min_workers() == 0) spec->set_min_workers(1);
  RETURN_IF_ERROR(CheckAtLeast("spec.min_workers", spec->min_workers(), 1));
  RETURN_IF_ERROR(
      CheckAtMost("spec.min_workers", spec->min_workers(), kMaxWorkers));
  if (spec->max_workers() == 0) spec->set_max_workers(spec->min_workers());
  if (spec->max_workers() < spec->min_workers()) {
    return FieldError(
        "spec.max_workers",
        absl::StrCat("must be >= spec.min_workers (", spec->min_workers(),
                     "), got ", spec->max_workers()));
  }
  return CheckAtMost("spec.max_workers", spec->max_workers(), kMaxWorkers);
}

absl::Status NormalizeCheckpoint(v1::CheckpointSpec* checkpoint) {
  RETURN_IF_ERROR(
      CheckNotEmpty("spec.checkpoint.directory", checkpoint->directory()));
  if (checkpoint->interval_steps() == 0) checkpoint->set_interval_steps(100);
  RETURN_IF_ERROR(CheckAtLeast("spec.checkpoint.interval_steps",
                               checkpoint->interval_steps(), 1));
  if (checkpoint->keep() == 0) checkpoint->set_keep(3);
  return CheckAtLeast("spec.checkpoint.keep", checkpoint->keep(), 1);
}

absl::Status NormalizeEval(JobSpec* spec) {
  if (spec->eval().dataset().empty()) {
    if (spec->eval().interval_steps() == 0) return absl::OkStatus();
    return FieldError("spec.eval.interval_steps",
                      absl::StrCat("must be 0 when spec.eval.dataset is empty "
                                   "(evaluation is off), got ",
                                   spec->eval().interval_steps()));
  }
  v1::EvalSpec* eval = spec->mutable_eval();
  if (eval->interval_steps() == 0) eval->set_interval_steps(500);
  return CheckAtLeast("spec.eval.interval_steps", eval->interval_steps(), 1);
}

// 0 reads as "unset" (proto3 cannot tell them apart) and becomes 10, so a job
// cannot ask for "no restarts" with 0.
absl::Status NormalizeRestartBudget(JobSpec* spec) {
  if (spec->restart_budget() == 0) spec->set_restart_budget(10);
  return CheckAtLeast("spec.restart_budget", spec->restart_budget(), 0);
}

// ---------------------------------------------------------------------------
// Step count arithmetic.

// A positive finite double as the shortest decimal that reads back as it:
// digits * 10^exponent.
struct Decimal {
  uint64_t digits = 0;
  int exponent = 0;
};

Decimal ShortestDecimal(double value) {
  // Scientific form, e.g. "1.1e+00": at most 17 significant digits.
  char text[32];
  const std::to_chars_result result = std::to_chars(
      text, text + sizeof(text), value, std::chars_format::scientific);
  Decimal decimal;
  int fraction_digits = 0;
  bool after_point = false;
  const char* p = text;
  for (; p != result.ptr && *p != 'e'; ++p) {
    if (*p == '.') {
      after_point = true;
      continue;
    }
    decimal.digits = decimal.digits * 10 + (*p - '0');
    if (after_point) ++fraction_digits;
  }
  const int exponent = (p == result.ptr) ? 0 : std::atoi(p + 1);
  decimal.exponent = exponent - fraction_digits;
  return decimal;
}

// ceil(numerator / denominator); denominator > 0.
absl::uint128 CeilDiv(absl::uint128 numerator, absl::uint128 denominator) {
  return numerator / denominator + (numerator % denominator != 0 ? 1 : 0);
}

// ceil(epochs * examples_per_epoch / global_batch) exactly, or nullopt if it
// does not fit in int64. Dividing by 10 one digit at a time is exact because
// ceil(ceil(a / b) / c) == ceil(a / (b * c)) for positive integers.
std::optional<int64_t> EpochSteps(double epochs, int64_t examples_per_epoch,
                                  int64_t global_batch) {
  constexpr absl::uint128 kMaxInt64 = std::numeric_limits<int64_t>::max();
  const Decimal decimal = ShortestDecimal(epochs);
  // < 10^17 * 2^63 < 2^120.
  absl::uint128 examples =
      absl::uint128(decimal.digits) * static_cast<uint64_t>(examples_per_epoch);
  for (int e = decimal.exponent; e > 0; --e) {
    if (examples > absl::Uint128Max() / 10) return std::nullopt;
    examples *= 10;
  }
  for (int e = decimal.exponent; e < 0; ++e) examples = CeilDiv(examples, 10);
  const absl::uint128 steps =
      CeilDiv(examples, static_cast<uint64_t>(global_batch));
  if (steps > kMaxInt64) return std::nullopt;
  return static_cast<int64_t>(steps);
}

}  // namespace

absl::StatusOr<v1::JobSpec> NormalizeJobSpec(const v1::JobSpec& spec) {
  JobSpec normalized = spec;
  RETURN_IF_ERROR(CheckNames(normalized));
  RETURN_IF_ERROR(NormalizeModel(normalized.mutable_model()));
  RETURN_IF_ERROR(NormalizeOptimizer(normalized.mutable_optimizer()));
  RETURN_IF_ERROR(NormalizeSchedule(normalized.mutable_schedule()));
  RETURN_IF_ERROR(CheckBatchAndLength(normalized));
  RETURN_IF_ERROR(NormalizeWorkers(&normalized));
  RETURN_IF_ERROR(NormalizeCheckpoint(normalized.mutable_checkpoint()));
  RETURN_IF_ERROR(NormalizeEval(&normalized));
  RETURN_IF_ERROR(NormalizeRestartBudget(&normalized));
  return normalized;
}

absl::Status ValidateJobSpecForDataset(const v1::JobSpec& spec,
                                       int64_t examples_per_epoch) {
  if (examples_per_epoch < 1) {
    return FieldError("spec.dataset",
                      absl::StrCat("must hold >= 1 example per epoch, got ",
                                   examples_per_epoch));
  }
  if (spec.has_epochs() &&
      !EpochSteps(spec.epochs(), examples_per_epoch, spec.global_batch())) {
    return FieldError(
        "spec.epochs",
        absl::StrCat("epochs * ", examples_per_epoch, " examples / batch ",
                     spec.global_batch(), " is more than ",
                     std::numeric_limits<int64_t>::max(), " steps"));
  }
  const int64_t total_steps = TotalSteps(spec, examples_per_epoch);
  if (total_steps < 1) {
    return FieldError("spec.length",
                      absl::StrCat("must train >= 1 step, got ", total_steps));
  }
  const v1::ScheduleSpec& schedule = spec.schedule();
  if (schedule.warmup_steps() > total_steps ||
      schedule.cooldown_steps() > total_steps - schedule.warmup_steps()) {
    return FieldError(
        "spec.schedule.warmup_steps + spec.schedule.cooldown_steps",
        absl::StrCat("must be <= the job's ", total_steps, " steps, got ",
                     schedule.warmup_steps(), " + ",
                     schedule.cooldown_steps()));
  }
  if (spec.max_workers() > spec.global_batch()) {
    return FieldError(
        "spec.max_workers",
        absl::StrCat("must be <= spec.global_batch (", spec.global_batch(),
                     ") so every rank gets >= 1 example per step, got ",
                     spec.max_workers()));
  }
  return absl::OkStatus();
}

int64_t TotalSteps(const v1::JobSpec& spec, int64_t examples_per_epoch) {
  if (!spec.has_epochs()) return spec.steps();
  return EpochSteps(spec.epochs(), examples_per_epoch, spec.global_batch())
      .value_or(std::numeric_limits<int64_t>::max());
}

}  // namespace podtrain::coordinator
