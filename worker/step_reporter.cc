#include "worker/step_reporter.h"

#include <utility>

namespace podtrain::worker {

StepReporter::StepReporter(Send send, int max_pending, Interrupt interrupt,
                           ReportBatching batching)
    : send_(std::move(send)),
      max_pending_(max_pending < 1 ? 1 : max_pending),
      interrupt_(std::move(interrupt)),
      batching_(batching),
      thread_([this] { Run(); }) {}

StepReporter::~StepReporter() {
  Cancel();
  thread_.join();
}

absl::Status StepReporter::Report(v1::ReportStepRequest report) {
  absl::MutexLock lock(&mu_);
  const auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return static_cast<int>(queue_.size()) < max_pending_ || cancelled_ ||
           !audit_failure_.ok();
  };
  mu_.Await(absl::Condition(&room));
  if (!audit_failure_.ok()) return audit_failure_;
  if (cancelled_) return absl::CancelledError("step reporter cancelled");
  if (held_.has_value()) {
    // The held steps go first, oldest first, then the held report's own.
    google::protobuf::RepeatedPtrField<v1::StepDigest> earlier =
        std::move(*held_->mutable_earlier_steps());
    v1::StepDigest* newest_held = earlier.Add();
    newest_held->set_step(held_->step());
    newest_held->set_example_digest(held_->example_digest());
    newest_held->set_example_count(held_->example_count());
    earlier.MergeFrom(report.earlier_steps());
    *report.mutable_earlier_steps() = std::move(earlier);
    held_.reset();
  }
  if (Due(report)) {
    queue_.push_back(std::move(report));
  } else {
    held_ = std::move(report);
  }
  return absl::OkStatus();
}

bool StepReporter::Due(const v1::ReportStepRequest& report) const {
  const int every = batching_.every_steps;
  return every <= 1 || report.has_eval_accuracy() ||
         (report.step() + 1 + batching_.rank) % every == 0;
}

absl::Status StepReporter::Flush() {
  absl::MutexLock lock(&mu_);
  if (held_.has_value() && !cancelled_ && audit_failure_.ok()) {
    queue_.push_back(*std::move(held_));
  }
  held_.reset();
  const auto answered = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return (queue_.empty() && !sending_) || cancelled_ || !audit_failure_.ok();
  };
  mu_.Await(absl::Condition(&answered));
  if (!audit_failure_.ok()) return audit_failure_;
  if (cancelled_) return absl::CancelledError("step reporter cancelled");
  return absl::OkStatus();
}

void StepReporter::Cancel() {
  bool first = false;
  {
    absl::MutexLock lock(&mu_);
    first = !cancelled_;
    cancelled_ = true;
    queue_.clear();
    held_.reset();
  }
  if (first && interrupt_) interrupt_();
}

void StepReporter::Run() {
  while (true) {
    v1::ReportStepRequest report;
    {
      absl::MutexLock lock(&mu_);
      const auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || cancelled_;
      };
      mu_.Await(absl::Condition(&work));
      if (cancelled_) return;
      report = std::move(queue_.front());
      queue_.pop_front();
      sending_ = true;
    }
    const absl::Status status = send_(report);
    absl::MutexLock lock(&mu_);
    sending_ = false;
    if (absl::IsFailedPrecondition(status)) {
      // The audit caught a bug: nothing after this report may count.
      audit_failure_ = status;
      queue_.clear();
      return;
    }
  }
}

}  // namespace podtrain::worker
