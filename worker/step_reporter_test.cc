#include "worker/step_reporter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

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

}  // namespace
}  // namespace podtrain::worker
