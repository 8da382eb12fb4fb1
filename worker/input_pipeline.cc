#include "worker/input_pipeline.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "dataset/example.h"

namespace podtrain::worker {

absl::StatusOr<Batch> DecodeBatch(const dataset::Dataset& data, int64_t step,
                                  std::vector<int64_t> ids) {
  const dataset::Schema& schema = data.manifest().schema;
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t pixels = dataset::PixelCount(schema);
  Batch batch;
  batch.step = step;
  batch.images = torch::empty({n, schema.channels, schema.height, schema.width},
                              torch::kFloat32);
  batch.labels = torch::empty({n}, torch::kInt64);
  float* images = batch.images.data_ptr<float>();
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  for (int64_t k = 0; k < n; ++k) {
    absl::StatusOr<dataset::Example> example = data.Read(ids[k]);
    if (!example.ok()) {
      return absl::Status(
          example.status().code(),
          absl::StrCat("step ", step, ": ", example.status().message()));
    }
    const auto* raw =
        reinterpret_cast<const unsigned char*>(example->pixels.data());
    float* image = images + k * pixels;
    for (int64_t p = 0; p < pixels; ++p) image[p] = raw[p] / 255.0f;
    labels[k] = example->label;
  }
  batch.ids = std::move(ids);
  return batch;
}

absl::StatusOr<std::vector<int64_t>> AssignedExampleIds(
    const v1::StepAssignment& assignment,
    const sampler::StreamSampler* sampler) {
  if (!assignment.has_positions()) {
    return std::vector<int64_t>(assignment.example_ids().begin(),
                                assignment.example_ids().end());
  }
  const int64_t begin = assignment.positions().begin();
  const int64_t end = assignment.positions().end();
  const auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("assignment of step ", assignment.step(), ": positions [",
                     begin, ", ", end, ") ", why));
  };
  if (!assignment.example_ids().empty()) {
    return invalid("come with example ids as well; expected one or the other");
  }
  if (sampler == nullptr) {
    return invalid("but this stream has no sampler to map them to ids");
  }
  if (begin < 0 || end < begin) return invalid("are not a range");
  if (end - begin > kMaxAssignedExamples) {
    return invalid(
        absl::StrCat("hold more than ", kMaxAssignedExamples, " examples"));
  }
  std::vector<int64_t> ids;
  ids.reserve(end - begin);
  RETURN_IF_ERROR(sampler->Fill(begin, end - begin, &ids));
  return ids;
}

InputPipeline::InputPipeline(const dataset::Dataset* data,
                             const sampler::StreamSampler* sampler,
                             AssignmentSource source, int depth)
    : data_(data),
      sampler_(sampler),
      source_(std::move(source)),
      depth_(std::max(depth, 1)) {
  thread_ = std::thread([this] { Run(); });
}

InputPipeline::~InputPipeline() {
  Cancel();
  thread_.join();
}

void InputPipeline::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
}

void InputPipeline::Run() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      const auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return static_cast<int>(ready_.size()) < depth_ || cancelled_;
      };
      mu_.Await(absl::Condition(&room));
      if (cancelled_) return;
    }
    absl::StatusOr<std::optional<v1::StepAssignment>> next = source_();
    absl::StatusOr<Batch> batch = absl::OutOfRangeError("end of assignments");
    if (next.ok() && next->has_value()) {
      const v1::StepAssignment& assignment = **next;
      absl::StatusOr<std::vector<int64_t>> ids =
          AssignedExampleIds(assignment, sampler_);
      batch = ids.ok() ? DecodeBatch(*data_, assignment.step(), *std::move(ids))
                       : absl::StatusOr<Batch>(ids.status());
    } else if (!next.ok()) {
      batch = next.status();
    }
    absl::MutexLock lock(&mu_);
    if (!batch.ok()) {
      end_ = batch.status();
      ended_ = true;
      return;
    }
    ready_.push_back(*std::move(batch));
  }
}

absl::StatusOr<Batch> InputPipeline::Next(absl::Duration* waited) {
  const absl::Time start = absl::Now();
  absl::MutexLock lock(&mu_);
  const auto available = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !ready_.empty() || ended_ || cancelled_;
  };
  mu_.Await(absl::Condition(&available));
  if (waited != nullptr) *waited = absl::Now() - start;
  if (cancelled_) return absl::CancelledError("input pipeline cancelled");
  if (ready_.empty()) return end_;
  Batch batch = std::move(ready_.front());
  ready_.pop_front();
  return batch;
}

}  // namespace podtrain::worker
