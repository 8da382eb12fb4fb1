#include "worker/step_reporter.h"

#include <algorithm>
#include <utility>

namespace podtrain::worker {

absl::Duration ReportSpreadDelay(const ReportBatching& batching,
                                 absl::Duration step_period) {
  const int every = batching.every_steps;
  if (every <= 1 || batching.spread_fraction <= 0 ||
      step_period <= absl::ZeroDuration() || batching.world_size <= every) {
    return absl::ZeroDuration();
  }
  const int phase_size = (batching.world_size + every - 1) / every;
  const int place = std::clamp(batching.rank / every, 0, phase_size - 1);
  const absl::Duration window =
      std::min(step_period * std::min(batching.spread_fraction, 1.0),
               kMaxReportSpreadWindow);
  return window * place / phase_size;
}

StepReporter::StepReporter(Send send, int max_pending, Interrupt interrupt,
                           ReportBatching batching)
    : send_(std::move(send)),
      max_pending_(max_pending < 1 ? 1 : max_pending),
      interrupt_(std::move(interrupt)),
      batching_(batching),
      clock_(batching.clock != nullptr ? batching.clock : RealClock()),
      thread_([this] { Run(); }) {}

StepReporter::~StepReporter() {
  Cancel();
  thread_.join();
}

absl::Status StepReporter::Report(v1::ReportStepRequest report) {
  absl::MutexLock lock(&mu_);
  const absl::Time not_before = NotBefore();
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
    queue_.push_back({std::move(report), not_before});
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

absl::Time StepReporter::NotBefore() {
  const absl::Time now = clock_->Now();
  absl::Duration step_period;  // unknown (zero: no spread) until a step ends
  if (last_report_ != absl::InfinitePast()) {
    const absl::Duration interval = now - last_report_;
    step_period = std::min(interval, last_interval_);
    last_interval_ = interval;
  }
  last_report_ = now;
  return now + ReportSpreadDelay(batching_, step_period);
}

absl::Status StepReporter::Flush() {
  absl::MutexLock lock(&mu_);
  if (held_.has_value() && !cancelled_ && audit_failure_.ok()) {
    queue_.push_back({*std::move(held_), absl::InfinitePast()});
  }
  held_.reset();
  for (Queued& queued : queue_) queued.not_before = absl::InfinitePast();
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
      // Wait out the spread delay, unless Flush() or Cancel() cuts it short.
      const absl::Time not_before = queue_.front().not_before;
      const auto go = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return cancelled_ || queue_.empty() ||
               queue_.front().not_before == absl::InfinitePast();
      };
      if (not_before > clock_->Now()) {
        clock_->AwaitWithDeadline(&mu_, absl::Condition(&go), not_before);
      }
      if (cancelled_) return;
      if (queue_.empty()) continue;
      report = std::move(queue_.front().report);
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
