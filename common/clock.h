// Time as a dependency. Components that read the time or wait for a timeout
// (leases, heartbeats, backoff, rendezvous deadlines) take a Clock*, so tests
// drive time with a FakeClock and never sleep to wait out a timeout.
//
// Thread-safety: every Clock method may be called from any thread.
//
// Example (a lease that expires):
//   FakeClock clock(absl::FromUnixSeconds(1000));
//   LeaseTable leases(&clock, /*lease=*/absl::Seconds(10));
//   leases.Renew("w0");
//   clock.Advance(absl::Seconds(11));
//   EXPECT_TRUE(leases.Expired("w0"));

#ifndef PODTRAIN_COMMON_CLOCK_H_
#define PODTRAIN_COMMON_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace podtrain {

class Clock {
 public:
  virtual ~Clock() = default;

  virtual absl::Time Now() const = 0;

  // Blocks the calling thread until Now() >= deadline.
  virtual void SleepUntil(absl::Time deadline) = 0;

  void SleepFor(absl::Duration duration) { SleepUntil(Now() + duration); }

  // Waits on `mu` (which the caller holds) until `condition` is true or Now()
  // reaches `deadline`; returns whether the condition held. Like
  // absl::Mutex::AwaitWithDeadline, but on this clock's time.
  // REQUIRES: mu is held by the caller.
  virtual bool AwaitWithDeadline(absl::Mutex* mu,
                                 const absl::Condition& condition,
                                 absl::Time deadline) = 0;

  // Waits on `cv` with `mu` (which the caller holds) until `cv` is signalled
  // or Now() reaches `deadline`, and may return spuriously, so callers
  // re-check their condition in a loop; returns whether the deadline has
  // passed. Like absl::CondVar::WaitWithDeadline, but on this clock's time.
  // For many waiters on one mutex: a Condition is evaluated for every waiter
  // at every unlock, a CondVar waiter only when signalled.
  // REQUIRES: mu is held by the caller.
  virtual bool WaitWithDeadline(absl::Mutex* mu, absl::CondVar* cv,
                                absl::Time deadline) = 0;
};

// The system clock. Never destroyed.
Clock* RealClock();

// A clock that only moves when told to. Starts at `start`.
class FakeClock : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::UnixEpoch()) : now_(start) {}

  absl::Time Now() const override;
  void SleepUntil(absl::Time deadline) override;
  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& condition,
                         absl::Time deadline) override;
  bool WaitWithDeadline(absl::Mutex* mu, absl::CondVar* cv,
                        absl::Time deadline) override;

  // Moves time forward and wakes every sleeper whose deadline has come.
  void Advance(absl::Duration duration);

  // Blocks until at least `count` threads are waiting in SleepUntil or
  // AwaitWithDeadline, so a test can advance time exactly after a component
  // has started waiting.
  void BlockUntilWaiters(int count) const;

  int waiters() const;

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  int waiters_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace podtrain

#endif  // PODTRAIN_COMMON_CLOCK_H_
