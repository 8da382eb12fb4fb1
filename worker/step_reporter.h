// Sends a generation's step reports (ReportStep) to the coordinator from a
// background thread, in step order, so the training loop does not wait for a
// round trip to the coordinator after every step. On the reference MLP at
// world 1 that wait was ~0.9 ms of a ~24 ms step (issue 8).
//
// What the synchronous call guaranteed, and how it is kept:
//   * Every report reaches the coordinator, in step order: one thread sends
//     them one at a time, oldest first.
//   * An audit failure (FAILED_PRECONDITION: the ids consumed are not the
//     ones assigned) stops training. It now comes back from the next
//     Report() or Flush() instead of from the report's own step; the agent
//     Flush()es before every checkpoint, so no checkpoint is voted for
//     after a report the coordinator refused.
//   * Any other error (the generation ended, the coordinator restarting)
//     is ignored, as before: the report is dropped and sending goes on.
//   * The training loop cannot run far ahead of its reports: Report()
//     blocks while `max_pending` reports are unsent.
//
// In a world the coordinator asks to report every k > 1 steps
// (JoinGenerationResponse.report_every_steps; see ReportBatching), Report()
// holds a step back until step s with (s + 1 + rank) % k == 0 or one that
// carries an evaluation, and sends one request with the steps held as its
// earlier_steps; Flush() sends what is held. The audit of a held step then
// comes back up to k steps later, still before the next checkpoint vote.
//
// Such a world still ends every step at one moment on every rank (the
// all-reduce), so each step W / k ranks (one phase) would report at once: a
// burst the coordinator drains one report at a time while heartbeats and
// stream messages wait behind it (bench/RESULTS.md, coordinator: 128
// reports at 4,096 ranks took most of the 20 ms p99). ReportBatching's
// spread_fraction spreads a phase's reports over that share of a step: the
// i-th rank of its phase (i = rank / k) sends ReportSpreadDelay() after its
// report falls due, a fraction i / ceil(W / k) of the window. The
// coordinator's look-ahead (2k + 4 steps) hides far more than that delay;
// Flush() sends at once, so checkpoint votes and the last step wait for
// nothing.
//
//   StepReporter reporter(send, /*max_pending=*/8);
//   RETURN_IF_ERROR(reporter.Report(std::move(request)));  // every step
//   RETURN_IF_ERROR(reporter.Flush());  // before a checkpoint, at the end
//
// Thread-safety: Report, Flush and Cancel may be called from any thread;
// `send` runs on the reporter's own thread only. Destruction drops unsent
// reports and interrupts the one being sent.

#ifndef PODTRAIN_WORKER_STEP_REPORTER_H_
#define PODTRAIN_WORKER_STEP_REPORTER_H_

#include <deque>
#include <functional>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "proto/worker.pb.h"

namespace podtrain::worker {

// How often reports go out: every `every_steps` steps, offset by `rank` so
// the ranks of a world do not all report at the same step; and, when
// every_steps > 1, how far a rank's report waits within its step so that the
// ranks reporting at the same step do not all send at the same moment.
struct ReportBatching {
  int every_steps = 1;
  int rank = 0;
  int world_size = 1;
  // The share of a step (measured between Report() calls) a phase's
  // reports are spread over; 0 sends each report as soon as it is due.
  double spread_fraction = 0;
  // Reads the time for the spread; RealClock() when null.
  Clock* clock = nullptr;
};

// The spread window never exceeds this, so a job with minute-long steps does
// not hold its audit back for half a minute: a burst of reports takes the
// coordinator milliseconds, not seconds.
inline constexpr absl::Duration kMaxReportSpreadWindow = absl::Seconds(1);

// How long after it falls due `batching.rank`'s report waits, in a world
// whose steps take `step_period`: spread_fraction x step_period (at most
// kMaxReportSpreadWindow) x i / ceil(world_size / every_steps), with
// i = rank / every_steps its place in its phase. Zero when every_steps <= 1.
// bench/coordinator/coordinator_load.cc sends its simulated reports by it.
absl::Duration ReportSpreadDelay(const ReportBatching& batching,
                                 absl::Duration step_period);

class StepReporter {
 public:
  // Sends one report and returns the coordinator's answer.
  using Send = std::function<absl::Status(const v1::ReportStepRequest&)>;
  // Makes a `send` in progress (and any later one) return at once, e.g. by
  // cancelling its RPC; called once, by the first Cancel(), from any thread.
  using Interrupt = std::function<void()>;

  // REQUIRES: max_pending >= 1.
  StepReporter(Send send, int max_pending, Interrupt interrupt = nullptr,
               ReportBatching batching = {});
  ~StepReporter();

  StepReporter(const StepReporter&) = delete;
  StepReporter& operator=(const StepReporter&) = delete;

  // Queues `report` behind the earlier ones (or holds it, see
  // ReportBatching); blocks while `max_pending` are unsent. REQUIRES: its
  // step follows the previous report's. Returns the audit failure
  // (FAILED_PRECONDITION) of an earlier report if there was one (and then
  // queues nothing), else OK. CANCELLED after Cancel().
  absl::Status Report(v1::ReportStepRequest report);

  // Sends what is held, and returns once every report queued so far has
  // been answered: the audit
  // failure of any of them, CANCELLED after Cancel(), else OK.
  absl::Status Flush();

  // Drops unsent reports, interrupts the one being sent (`interrupt`), and
  // makes Report/Flush return CANCELLED at once, or the audit failure
  // already known. For a generation that ended: the coordinator refuses its
  // reports anyway, and one that is down must not hold up the next world.
  void Cancel();

 private:
  // A report due to be sent, not before `not_before` (InfinitePast once
  // Flush() wants it sent).
  struct Queued {
    v1::ReportStepRequest report;
    absl::Time not_before;
  };

  void Run();
  bool Due(const v1::ReportStepRequest& report) const;
  // When a report falling due now may go out. Updates the step period.
  absl::Time NotBefore() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Send send_;
  const int max_pending_;
  const Interrupt interrupt_;
  const ReportBatching batching_;
  Clock* const clock_;

  absl::Mutex mu_;
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  // When the last two Report() calls came: the step period is the shorter
  // of the two latest intervals, so one long step (a checkpoint, an
  // evaluation) does not stretch the spread.
  absl::Time last_report_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Duration last_interval_ ABSL_GUARDED_BY(mu_) = absl::InfiniteDuration();
  // The newest step not yet due, carrying the older held ones.
  std::optional<v1::ReportStepRequest> held_ ABSL_GUARDED_BY(mu_);
  bool sending_ ABSL_GUARDED_BY(mu_) = false;  // one taken off queue_
  absl::Status audit_failure_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts once the fields above exist
};

}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_STEP_REPORTER_H_
