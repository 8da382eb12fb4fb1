#include "worker/step_reporter.h"

#include <utility>

namespace podtrain::worker {

StepReporter::StepReporter(Send send, int max_pending, Interrupt interrupt)
    : send_(std::move(send)),
      max_pending_(max_pending < 1 ? 1 : max_pending),
      interrupt_(std::move(interrupt)),
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
  queue_.push_back(std::move(report));
  return absl::OkStatus();
}

absl::Status StepReporter::Flush() {
  absl::MutexLock lock(&mu_);
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
