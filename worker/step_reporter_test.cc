#include "worker/step_reporter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/clock.h"

namespace podtrain::worker {
namespace {

v1::ReportStepRequest Step(int64_t step) {
  v1::ReportStepRequest report;
  report.set_step(step);
  return report;
}

TEST(StepReporterTest, SendsEveryReportInOrder) {
  absl::Mutex mu;
  std::vector<int64_t> sent;
  StepReporter reporter(
      [&](const v1::ReportStepRequest& report) {
        absl::MutexLock lock(&mu);
        sent.push_back(report.step());
        return absl::OkStatus();
      },
      /*max_pending=*/3);
  for (int64_t step = 0; step < 100; ++step) {
    ASSERT_TRUE(reporter.Report(Step(step)).ok());
  }
  ASSERT_TRUE(reporter.Flush().ok());
  absl::MutexLock lock(&mu);
  ASSERT_EQ(sent.size(), 100);
  for (int64_t step = 0; step < 100; ++step) EXPECT_EQ(sent[step], step);
}

TEST(StepReporterTest, ReportDoesNotWaitForTheCoordinator) {
  absl::Notification release;
  std::atomic<int> sent{0};
  StepReporter reporter(
      [&](const v1::ReportStepRequest&) {
        release.WaitForNotification();
        ++sent;
        return absl::OkStatus();
      },
      /*max_pending=*/2);
  // One in flight, two queued: none of these block.
  for (int64_t step = 0; step < 3; ++step) {
    ASSERT_TRUE(reporter.Report(Step(step)).ok());
  }
  EXPECT_EQ(sent.load(), 0);
  release.Notify();
  ASSERT_TRUE(reporter.Flush().ok());
  EXPECT_EQ(sent.load(), 3);
}

TEST(StepReporterTest, ReportBlocksWhileMaxPendingAreUnsent) {
  absl::Notification in_flight;
  absl::Notification release;
  StepReporter reporter(
      [&](const v1::ReportStepRequest& report) {
        if (report.step() == 0) in_flight.Notify();
        release.WaitForNotification();
        return absl::OkStatus();
      },
      /*max_pending=*/1);
  ASSERT_TRUE(reporter.Report(Step(0)).ok());
  in_flight.WaitForNotification();             // the sender holds step 0
  ASSERT_TRUE(reporter.Report(Step(1)).ok());  // fills the queue
  std::atomic<bool> third_queued{false};
  std::thread producer([&] {
    EXPECT_TRUE(reporter.Report(Step(2)).ok());
    third_queued = true;
  });
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(third_queued.load());
  release.Notify();
  producer.join();
  EXPECT_TRUE(third_queued.load());
  EXPECT_TRUE(reporter.Flush().ok());
}

TEST(StepReporterTest, AuditFailureStopsTheNextReportAndFlush) {
  std::atomic<int> sent{0};
  StepReporter reporter(
      [&](const v1::ReportStepRequest& report) {
        ++sent;
        if (report.step() == 1) {
          return absl::FailedPreconditionError("not the examples assigned");
        }
        return absl::OkStatus();
      },
      /*max_pending=*/8);
  ASSERT_TRUE(reporter.Report(Step(0)).ok());
  ASSERT_TRUE(reporter.Report(Step(1)).ok());
  const absl::Status flushed = reporter.Flush();
  EXPECT_TRUE(absl::IsFailedPrecondition(flushed)) << flushed;
  EXPECT_EQ(flushed.message(), "not the examples assigned");
  EXPECT_TRUE(absl::IsFailedPrecondition(reporter.Report(Step(2))));
  EXPECT_EQ(sent.load(), 2);  // nothing after the refused report is sent
}

TEST(StepReporterTest, OtherErrorsAreIgnored) {
  std::atomic<int> sent{0};
  StepReporter reporter(
      [&](const v1::ReportStepRequest& report) {
        ++sent;
        if (report.step() == 0) return absl::AbortedError("generation over");
        return absl::UnavailableError("coordinator restarting");
      },
      /*max_pending=*/8);
  ASSERT_TRUE(reporter.Report(Step(0)).ok());
  ASSERT_TRUE(reporter.Report(Step(1)).ok());
  EXPECT_TRUE(reporter.Flush().ok());
  EXPECT_EQ(sent.load(), 2);
}

TEST(StepReporterTest, CancelDropsUnsentReportsAndUnblocks) {
  absl::Notification in_flight;
  absl::Notification release;
  std::atomic<int> sent{0};
  auto reporter = std::make_unique<StepReporter>(
      [&](const v1::ReportStepRequest& report) {
        if (report.step() == 0) in_flight.Notify();
        release.WaitForNotification();
        ++sent;
        return absl::OkStatus();
      },
      /*max_pending=*/1);
  ASSERT_TRUE(reporter->Report(Step(0)).ok());
  in_flight.WaitForNotification();
  ASSERT_TRUE(reporter->Report(Step(1)).ok());
  std::thread flusher(
      [&] { EXPECT_TRUE(absl::IsCancelled(reporter->Flush())); });
  absl::SleepFor(absl::Milliseconds(50));
  reporter->Cancel();
  flusher.join();
  EXPECT_TRUE(absl::IsCancelled(reporter->Report(Step(2))));
  release.Notify();
  reporter.reset();  // joins once the report in flight is answered
  EXPECT_EQ(sent.load(), 1);
}

TEST(StepReporterTest, CancelInterruptsTheReportBeingSent) {
  absl::Notification in_flight;
  absl::Notification interrupted;
  auto reporter = std::make_unique<StepReporter>(
      [&](const v1::ReportStepRequest&) {
        in_flight.Notify();
        // A coordinator that never answers: only the interrupt ends this.
        interrupted.WaitForNotification();
        return absl::CancelledError("interrupted");
      },
      /*max_pending=*/4, [&] { interrupted.Notify(); });
  ASSERT_TRUE(reporter->Report(Step(0)).ok());
  in_flight.WaitForNotification();
  reporter->Cancel();
  EXPECT_TRUE(interrupted.HasBeenNotified());
  EXPECT_TRUE(absl::IsCancelled(reporter->Flush()));
  reporter.reset();  // joins: the send returned
}

TEST(StepReporterTest, CancelStillReturnsAKnownAuditFailure) {
  StepReporter reporter(
      [&](const v1::ReportStepRequest&) {
        return absl::FailedPreconditionError("not the examples assigned");
      },
      /*max_pending=*/4);
  ASSERT_TRUE(reporter.Report(Step(0)).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(reporter.Flush()));
  reporter.Cancel();
  EXPECT_TRUE(absl::IsFailedPrecondition(reporter.Flush()));
}

// Reports every 3 steps at rank 1's offset: due after steps s with
// (s + 1 + 1) % 3 == 0, i.e. 1, 4, 7; an evaluation is due at once; Flush()
// sends what is held. Each request carries the held steps, oldest first.
TEST(StepReporterTest, BatchesStepsAtTheRanksOffset) {
  absl::Mutex mu;
  std::vector<std::vector<int64_t>> sent;  // earlier steps..., step
  StepReporter reporter(
      [&](const v1::ReportStepRequest& report) {
        std::vector<int64_t> steps;
        for (const v1::StepDigest& digest : report.earlier_steps()) {
          EXPECT_EQ(digest.example_digest(), 1000 + digest.step());
          EXPECT_EQ(digest.example_count(), 10);
          steps.push_back(digest.step());
        }
        steps.push_back(report.step());
        absl::MutexLock lock(&mu);
        sent.push_back(steps);
        return absl::OkStatus();
      },
      /*max_pending=*/8, nullptr, ReportBatching{.every_steps = 3, .rank = 1});
  for (int64_t step = 0; step < 9; ++step) {
    v1::ReportStepRequest report = Step(step);
    report.set_example_digest(1000 + step);
    report.set_example_count(10);
    if (step == 5) report.set_eval_accuracy(0.5);
    ASSERT_TRUE(reporter.Report(std::move(report)).ok());
  }
  ASSERT_TRUE(reporter.Flush().ok());
  ASSERT_TRUE(reporter.Flush().ok());  // nothing held: sends nothing
  absl::MutexLock lock(&mu);
  EXPECT_EQ(sent, (std::vector<std::vector<int64_t>>{
                      {0, 1}, {2, 3, 4}, {5}, {6, 7}, {8}}));
}

// A held step the coordinator refuses stops the next Report/Flush, as an
// unbatched one does; Cancel() drops what is held.
TEST(StepReporterTest, HeldStepsAreAuditedAndCancelledLikeOthers) {
  StepReporter refusing(
      [](const v1::ReportStepRequest& report) {
        return report.earlier_steps_size() > 0
                   ? absl::FailedPreconditionError("step 0: not assigned")
                   : absl::OkStatus();
      },
      /*max_pending=*/8, nullptr, ReportBatching{.every_steps = 2, .rank = 0});
  ASSERT_TRUE(refusing.Report(Step(0)).ok());  // held
  ASSERT_TRUE(refusing.Report(Step(1)).ok());  // due: sends 0 and 1
  EXPECT_TRUE(absl::IsFailedPrecondition(refusing.Flush()));
  EXPECT_TRUE(absl::IsFailedPrecondition(refusing.Report(Step(2))));

  std::atomic<int> sent{0};
  StepReporter cancelled(
      [&](const v1::ReportStepRequest&) {
        ++sent;
        return absl::OkStatus();
      },
      /*max_pending=*/8, nullptr, ReportBatching{.every_steps = 4, .rank = 0});
  ASSERT_TRUE(cancelled.Report(Step(0)).ok());
  cancelled.Cancel();
  EXPECT_TRUE(absl::IsCancelled(cancelled.Flush()));
  EXPECT_EQ(sent.load(), 0);
}

TEST(ReportSpreadDelayTest, SpreadsAPhaseOverItsShareOfTheStep) {
  // 4,096 ranks reporting every 32 steps: phases of 128 ranks.
  ReportBatching batching{
      .every_steps = 32, .rank = 0, .world_size = 4096, .spread_fraction = 0.5};
  const absl::Duration step = absl::Milliseconds(512);
  EXPECT_EQ(ReportSpreadDelay(batching, step), absl::ZeroDuration());
  batching.rank = 31;  // also first of its phase
  EXPECT_EQ(ReportSpreadDelay(batching, step), absl::ZeroDuration());
  batching.rank = 32;  // second of phase 0
  EXPECT_EQ(ReportSpreadDelay(batching, step), absl::Milliseconds(2));
  batching.rank = 4095;  // last of phase 31
  EXPECT_EQ(ReportSpreadDelay(batching, step), absl::Milliseconds(254));
}

TEST(ReportSpreadDelayTest, NoSpreadWhereEveryRankReportsEveryStep) {
  ReportBatching batching{
      .every_steps = 1, .rank = 7, .world_size = 8, .spread_fraction = 0.5};
  EXPECT_EQ(ReportSpreadDelay(batching, absl::Seconds(1)),
            absl::ZeroDuration());
  batching = {.every_steps = 4, .rank = 7, .world_size = 8};  // fraction 0
  EXPECT_EQ(ReportSpreadDelay(batching, absl::Seconds(1)),
            absl::ZeroDuration());
}

TEST(ReportSpreadDelayTest, TheWindowIsCapped) {
  const ReportBatching batching{
      .every_steps = 2, .rank = 2, .world_size = 8, .spread_fraction = 0.5};
  // Place 1 of 4: a quarter of min(30 s / 2, 1 s).
  EXPECT_EQ(ReportSpreadDelay(batching, absl::Seconds(30)),
            kMaxReportSpreadWindow / 4);
}

// Reports through a FakeClock, recording each send's time.
class SpreadTest : public testing::Test {
 protected:
  StepReporter::Send Recorder() {
    return [this](const v1::ReportStepRequest& report) {
      absl::MutexLock lock(&mu_);
      sent_.push_back({report.step(), clock_.Now()});
      return absl::OkStatus();
    };
  }
  // A rank of 8 reporting every 2 steps, spread over half a step.
  std::unique_ptr<StepReporter> Reporter(int rank) {
    return std::make_unique<StepReporter>(Recorder(), /*max_pending=*/8,
                                          nullptr,
                                          ReportBatching{.every_steps = 2,
                                                         .rank = rank,
                                                         .world_size = 8,
                                                         .spread_fraction = 0.5,
                                                         .clock = &clock_});
  }
  // Steps 0, 1 and 2, each 100 ms after the one before.
  void ReportThreeSteps(StepReporter& reporter) {
    for (int64_t step = 0; step < 3; ++step) {
      clock_.Advance(absl::Milliseconds(100));
      ASSERT_TRUE(reporter.Report(Step(step)).ok());
    }
  }
  // Waits (real time, bounded) until `count` reports were sent.
  bool AwaitSent(size_t count) {
    absl::MutexLock lock(&mu_);
    const auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return sent_.size() >= count;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
  }
  std::vector<std::pair<int64_t, absl::Time>> Sent() {
    absl::MutexLock lock(&mu_);
    return sent_;
  }

  const absl::Time start_ = absl::FromUnixSeconds(1000);
  FakeClock clock_{start_};
  absl::Mutex mu_;
  std::vector<std::pair<int64_t, absl::Time>> sent_ ABSL_GUARDED_BY(mu_);
};

TEST_F(SpreadTest, ALaterRankOfItsPhaseSendsItsShareOfAStepLate) {
  // 8 ranks every 2 steps: rank 5 is place 2 of 4, so it sends 2/4 of half
  // a step (25 ms of 100) after its report falls due.
  const auto reporter = Reporter(/*rank=*/5);
  // Step 0 is due ((0 + 1 + 5) % 2 == 0) before any period is known: at once.
  ASSERT_TRUE(reporter->Report(Step(0)).ok());
  ASSERT_TRUE(AwaitSent(1));
  clock_.Advance(absl::Milliseconds(100));
  ASSERT_TRUE(reporter->Report(Step(1)).ok());  // held
  clock_.Advance(absl::Milliseconds(100));
  const absl::Time due = clock_.Now();
  ASSERT_TRUE(reporter->Report(Step(2)).ok());
  // The sender waits on the clock; it cannot send before time moves.
  clock_.BlockUntilWaiters(1);
  EXPECT_EQ(Sent().size(), 1);
  clock_.Advance(absl::Milliseconds(25));
  ASSERT_TRUE(AwaitSent(2));
  const auto sent = Sent();
  EXPECT_EQ(sent[0], std::make_pair(int64_t{0}, start_));
  EXPECT_EQ(sent[1].first, 2);
  EXPECT_EQ(sent[1].second, due + absl::Milliseconds(25));
}

TEST_F(SpreadTest, TheFirstRankOfAPhaseSendsAtOnce) {
  const auto reporter = Reporter(/*rank=*/1);
  ReportThreeSteps(*reporter);
  // Steps 0 and 2 fall due ((s + 1 + 1) % 2 == 0); no time passes after.
  ASSERT_TRUE(AwaitSent(2));
  EXPECT_EQ(Sent()[1], std::make_pair(int64_t{2}, clock_.Now()));
}

TEST_F(SpreadTest, FlushSendsADelayedReportAtOnce) {
  const auto reporter = Reporter(/*rank=*/7);
  ReportThreeSteps(*reporter);
  // Step 2 fell due ((2 + 1 + 7) % 2 == 0) with a 37.5 ms delay; a checkpoint
  // vote cannot wait for it.
  ASSERT_TRUE(reporter->Flush().ok());
  const auto sent = Sent();
  ASSERT_EQ(sent.size(), 2);
  EXPECT_EQ(sent[1], std::make_pair(int64_t{2}, clock_.Now()));
}

TEST_F(SpreadTest, OneLongStepDoesNotStretchTheSpread) {
  const auto reporter = Reporter(/*rank=*/5);
  ASSERT_TRUE(reporter->Report(Step(0)).ok());
  ASSERT_TRUE(AwaitSent(1));
  clock_.Advance(absl::Milliseconds(100));
  ASSERT_TRUE(reporter->Report(Step(1)).ok());
  clock_.Advance(absl::Seconds(30));  // a checkpoint, say
  const absl::Time due = clock_.Now();
  ASSERT_TRUE(reporter->Report(Step(2)).ok());
  clock_.BlockUntilWaiters(1);
  clock_.Advance(absl::Milliseconds(25));  // the spread of a 100 ms step
  ASSERT_TRUE(AwaitSent(2));
  EXPECT_EQ(Sent()[1].second, due + absl::Milliseconds(25));
}

TEST_F(SpreadTest, CancelEndsTheWait) {
  auto reporter = Reporter(/*rank=*/5);
  ReportThreeSteps(*reporter);
  clock_.BlockUntilWaiters(1);
  reporter->Cancel();
  EXPECT_TRUE(absl::IsCancelled(reporter->Flush()));
  reporter.reset();  // joins the sender without time moving
  EXPECT_EQ(Sent().size(), 1);
}

}  // namespace
}  // namespace podtrain::worker
