#include "common/clock.h"

#include "absl/time/clock.h"

namespace podtrain {
namespace {

class SystemClock : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }

  void SleepUntil(absl::Time deadline) override {
    const absl::Duration left = deadline - absl::Now();
    if (left > absl::ZeroDuration()) absl::SleepFor(left);
  }

  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& condition,
                         absl::Time deadline) override {
    return mu->AwaitWithDeadline(condition, deadline);
  }

  bool WaitWithDeadline(absl::Mutex* mu, absl::CondVar* cv,
                        absl::Time deadline) override {
    return cv->WaitWithDeadline(mu, deadline);
  }
};

}  // namespace

Clock* RealClock() {
  static Clock* const clock = new SystemClock;
  return clock;
}

absl::Time FakeClock::Now() const {
  absl::MutexLock lock(&mu_);
  return now_;
}

void FakeClock::SleepUntil(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  ++waiters_;
  const auto deadline_reached =
      [this, deadline]()
          ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return now_ >= deadline; };
  mu_.Await(absl::Condition(&deadline_reached));
  --waiters_;
}

bool FakeClock::AwaitWithDeadline(absl::Mutex* mu,
                                  const absl::Condition& condition,
                                  absl::Time deadline) {
  // The caller's condition lives under the caller's mutex and fake time under
  // ours, so neither can wake the other directly. Re-check both in short real
  // slices: a fake clock exists for tests, where this costs microseconds.
  {
    absl::MutexLock lock(&mu_);
    ++waiters_;
  }
  bool satisfied = false;
  while (true) {
    if (mu->AwaitWithTimeout(condition, absl::Milliseconds(1))) {
      satisfied = true;
      break;
    }
    if (Now() >= deadline) {
      satisfied = condition.Eval();
      break;
    }
  }
  absl::MutexLock lock(&mu_);
  --waiters_;
  return satisfied;
}

bool FakeClock::WaitWithDeadline(absl::Mutex* mu, absl::CondVar* cv,
                                 absl::Time deadline) {
  // As in AwaitWithDeadline: fake time cannot signal `cv`, so re-check the
  // fake deadline in short real slices until `cv` is signalled.
  {
    absl::MutexLock lock(&mu_);
    ++waiters_;
  }
  bool passed = false;
  while (true) {
    const bool signalled = !cv->WaitWithTimeout(mu, absl::Milliseconds(1));
    passed = Now() >= deadline;
    if (signalled || passed) break;
  }
  absl::MutexLock lock(&mu_);
  --waiters_;
  return passed;
}

void FakeClock::Advance(absl::Duration duration) {
  absl::MutexLock lock(&mu_);
  now_ += duration;
}

void FakeClock::BlockUntilWaiters(int count) const {
  absl::MutexLock lock(&mu_);
  const auto enough_waiters = [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(
                                  mu_) { return waiters_ >= count; };
  mu_.Await(absl::Condition(&enough_waiters));
}

int FakeClock::waiters() const {
  absl::MutexLock lock(&mu_);
  return waiters_;
}

}  // namespace podtrain
