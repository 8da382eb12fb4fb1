#include "common/clock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "absl/time/clock.h"

namespace podtrain {
namespace {

TEST(RealClockTest, FollowsTheSystemClock) {
  const absl::Time before = absl::Now();
  const absl::Time now = RealClock()->Now();
  EXPECT_GE(now, before);
  EXPECT_LE(now, absl::Now());
}

TEST(FakeClockTest, OnlyMovesWhenAdvanced) {
  FakeClock clock(absl::FromUnixSeconds(1000));
  EXPECT_EQ(clock.Now(), absl::FromUnixSeconds(1000));
  clock.Advance(absl::Seconds(30));
  EXPECT_EQ(clock.Now(), absl::FromUnixSeconds(1030));
}

TEST(FakeClockTest, SleepersWakeExactlyWhenTheirDeadlineComes) {
  FakeClock clock(absl::FromUnixSeconds(0));
  std::atomic<bool> woke{false};
  std::thread sleeper([&] {
    clock.SleepFor(absl::Seconds(10));
    woke = true;
  });
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Seconds(9));
  // Not yet due: the sleeper must still be waiting.
  EXPECT_EQ(clock.waiters(), 1);
  EXPECT_FALSE(woke.load());
  clock.Advance(absl::Seconds(1));
  sleeper.join();
  EXPECT_TRUE(woke.load());
  EXPECT_EQ(clock.waiters(), 0);
}

TEST(FakeClockTest, SleepUntilThePastReturnsAtOnce) {
  FakeClock clock(absl::FromUnixSeconds(100));
  clock.SleepUntil(absl::FromUnixSeconds(50));
  EXPECT_EQ(clock.waiters(), 0);
}

TEST(FakeClockTest, AwaitWithDeadlineReturnsWhenTheConditionHolds) {
  FakeClock clock;
  absl::Mutex mu;
  bool ready = false;
  std::thread setter([&] {
    clock.BlockUntilWaiters(1);
    absl::MutexLock lock(&mu);
    ready = true;
  });
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(clock.AwaitWithDeadline(&mu, absl::Condition(&ready),
                                        clock.Now() + absl::Hours(1)));
  }
  setter.join();
}

TEST(FakeClockTest, AwaitWithDeadlineTimesOutOnFakeTimeOnly) {
  FakeClock clock;
  absl::Mutex mu;
  const bool never = false;
  std::atomic<bool> returned{false};
  std::thread waiter([&] {
    absl::MutexLock lock(&mu);
    EXPECT_FALSE(clock.AwaitWithDeadline(&mu, absl::Condition(&never),
                                         clock.Now() + absl::Seconds(30)));
    returned = true;
  });
  clock.BlockUntilWaiters(1);
  // Real time passing does not time the waiter out...
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_FALSE(returned.load());
  // ...fake time does.
  clock.Advance(absl::Seconds(30));
  waiter.join();
  EXPECT_TRUE(returned.load());
}

TEST(FakeClockTest, WaitWithDeadlineReturnsWhenSignalled) {
  FakeClock clock;
  absl::Mutex mu;
  absl::CondVar cv;
  std::thread signaller([&] {
    clock.BlockUntilWaiters(1);
    absl::MutexLock lock(&mu);
    cv.Signal();
  });
  {
    absl::MutexLock lock(&mu);
    EXPECT_FALSE(
        clock.WaitWithDeadline(&mu, &cv, clock.Now() + absl::Hours(1)));
  }
  signaller.join();
  EXPECT_EQ(clock.waiters(), 0);
}

TEST(FakeClockTest, WaitWithDeadlineTimesOutOnFakeTimeOnly) {
  FakeClock clock;
  absl::Mutex mu;
  absl::CondVar cv;
  std::atomic<bool> returned{false};
  std::thread waiter([&] {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(
        clock.WaitWithDeadline(&mu, &cv, clock.Now() + absl::Seconds(30)));
    returned = true;
  });
  clock.BlockUntilWaiters(1);
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_FALSE(returned.load());
  clock.Advance(absl::Seconds(30));
  waiter.join();
  EXPECT_TRUE(returned.load());
}

TEST(RealClockTest, WaitWithDeadlineTimesOut) {
  absl::Mutex mu;
  absl::CondVar cv;
  absl::MutexLock lock(&mu);
  const absl::Time start = absl::Now();
  EXPECT_TRUE(
      RealClock()->WaitWithDeadline(&mu, &cv, start + absl::Milliseconds(20)));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(19));
}

}  // namespace
}  // namespace podtrain
