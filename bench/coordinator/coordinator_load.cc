// bench_coordinator's load generator: N simulated workers against a real
// podtrain-coordinator process, speaking the worker protocol as
// worker/agent.cc does, multiplexed on a few threads with gRPC's async API
// (one completion queue per thread, one channel, so one TCP connection, per
// worker unless --workers_per_channel says otherwise).
//
// What a simulated worker does: Register; heartbeat every
// heartbeat_interval_ms from then on (RegisterResponse's, then each
// HeartbeatResponse's, as the pool grows); JoinGeneration of one
// job whose world is all N workers; StreamAssignments from step 0; and
// "train" in lockstep with the others: step s occupies
// [T0 + s*P, T0 + (s+1)*P) for everyone (P = --step_ms, as a synchronous
// data-parallel world does: the all-reduce ends every rank's step at the same
// moment), after which the worker reports it (ReportStep with the digest
// of the ids it was assigned, which the coordinator audits), one call in
// flight at a time, as the agent does: every step in worlds of up to
// --max_reports_per_step ranks, else every k = report_every_steps steps at
// the rank's offset, one call carrying the k steps' digests, sent
// ReportSpreadDelay() after the step's end (worker/step_reporter.h: the
// agent spreads the ranks reporting at one step over
// --report_spread_fraction of it).
//
// Measured inside the window [T0 + warmup, T0 + warmup + duration):
//   heartbeat     Heartbeat round trip (client-side, so it includes the time
//                 the client takes to see the reply on a shared machine).
//   report        ReportStep round trip.
//   assignment    how late each stream message arrives after it became
//                 available: the coordinator may send a message ending at
//                 step s once every rank has reported step s - lookahead
//                 (JoinGenerationResponse.assignment_lookahead_steps), so
//                 its availability is the moment the last of those reports
//                 was sent (so this includes that report's trip to the
//                 server and the coordinator's wake-up and fan-out to the
//                 streams). A message holds 1 step, or k in large worlds.
//   stalls        steps for which a rank did not hold its assignment when
//                 the step began (the look-ahead failed to hide latency).
//   CPU           the coordinator's user+system time over the window (from
//                 /proc/<pid>/stat), this client's (getrusage), and the
//                 machine's busy share (/proc/stat).
//
// Prints a markdown section, then one line
//   RESULT n=... heartbeat_p50_ms=... heartbeat_p99_ms=... ...
// for bench_coordinator.sh.

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/common/local_coordinator.h"
#include "common/status_macros.h"
#include "dataset/file_util.h"
#include "dataset/manifest.h"
#include "dataset/synthetic.h"
#include "proto/job.grpc.pb.h"
#include "proto/worker.grpc.pb.h"
#include "sampler/assignment.h"
#include "sampler/stream_sampler.h"
#include "worker/step_reporter.h"

ABSL_FLAG(std::string, address, "", "the coordinator, host:port");
ABSL_FLAG(int, coordinator_pid, 0, "its pid, for its CPU time");
ABSL_FLAG(std::string, dir, "/tmp/podtrain-bench-coordinator",
          "scratch directory for the synthetic dataset's manifest");
ABSL_FLAG(int, workers, 1024, "simulated workers (one job, one world)");
ABSL_FLAG(int, threads, 2, "client threads (one completion queue each)");
ABSL_FLAG(int, workers_per_channel, 1,
          "workers sharing one channel (TCP connection)");
ABSL_FLAG(int, step_ms, 1000, "training step period P");
ABSL_FLAG(double, report_spread_fraction, 0.5,
          "the share of a step over which the ranks reporting at that step "
          "send (as the agent: worker/agent.cc kReportSpreadFraction); 0 "
          "sends every report at its step's end");
ABSL_FLAG(int, examples_per_rank, 32, "global batch = this x workers");
ABSL_FLAG(bool, assignment_positions, true,
          "open assignment streams with positions and map them to ids with "
          "the job's sampler (as the agent does since 2026-12-07); false: "
          "the coordinator sends every example id");
ABSL_FLAG(int, lookahead, 16, "the coordinator's --lookahead_steps");
ABSL_FLAG(double, warmup_s, 3, "seconds after the first step before measuring");
ABSL_FLAG(double, duration_s, 10, "measured seconds");
ABSL_FLAG(double, join_timeout_s, 60, "give up if the world has not formed");
ABSL_FLAG(double, ramp_s, -1,
          "workers start (Register) spread over this many seconds; default "
          "one second per 1,024 workers");

namespace podtrain::bench {
namespace {

using Clock = std::chrono::system_clock;

enum class Kind {
  kRegister,
  kJoin,
  kHeartbeatAlarm,
  kHeartbeat,
  kStreamStart,
  kStreamRead,
  kStreamFinish,
  kStepAlarm,
  kReportAlarm,
  kReport,
  kStart,
  kCount,  // not a kind: how many there are
};

struct Worker;

struct Tag {
  Worker* worker;
  Kind kind;
};

// What every thread records; merged at the end.
struct Recorder {
  std::vector<double> heartbeat_ms, report_ms, assignment_ms;
  // The client's own share of the latencies: how late each step-end alarm
  // was handled (all N of them fall due at the same instant on 2 threads,
  // where a real pod has a process per worker), and the heartbeats whose
  // round trip stayed clear of that: neither sent within
  // kStepEndShadow after a step end nor still out at the next.
  std::vector<double> step_end_late_ms, heartbeat_clear_ms;
  int64_t stalls = 0, steps = 0;
  double stall_ms = 0;
  std::map<std::string, std::pair<int64_t, std::string>> errors;
};

struct Worker {
  int index = 0;
  std::string id;
  uint64_t incarnation = 0;
  v1::WorkerService::Stub* stub = nullptr;
  grpc::CompletionQueue* cq = nullptr;
  Recorder* recorder = nullptr;
  int* outstanding = nullptr;  // the owning thread's count of pending tags
  Tag tags[static_cast<int>(Kind::kCount)];
  grpc::Alarm start_alarm;
  bool start_alarm_set = false;
  bool registered_once = false;
  Tag* tag(Kind kind) { return &tags[static_cast<int>(kind)]; }

  // Register / Join.
  std::unique_ptr<grpc::ClientContext> register_context;
  v1::RegisterResponse register_response;
  grpc::Status register_status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::RegisterResponse>>
      register_call;
  std::unique_ptr<grpc::ClientContext> join_context;
  v1::JoinGenerationResponse join_response;
  grpc::Status join_status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::JoinGenerationResponse>>
      join_call;
  int64_t generation = 0;
  int32_t rank = -1;
  // From the JoinGenerationResponse: report every k steps, the look-ahead.
  int report_every = 1;
  int lookahead = 16;

  // Heartbeats.
  absl::Duration heartbeat_interval;
  grpc::Alarm heartbeat_alarm;
  bool heartbeat_alarm_set = false;
  absl::Time next_heartbeat;
  std::unique_ptr<grpc::ClientContext> heartbeat_context;
  v1::HeartbeatResponse heartbeat_response;
  grpc::Status heartbeat_status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::HeartbeatResponse>>
      heartbeat_call;
  absl::Time heartbeat_sent;
  bool heartbeat_in_flight = false;

  // The assignment stream.
  std::unique_ptr<grpc::ClientContext> stream_context;
  std::unique_ptr<grpc::ClientAsyncReader<v1::StepAssignments>> stream;
  v1::StepAssignments incoming;
  grpc::Status stream_status;
  bool stream_open = false;
  std::map<int64_t, std::pair<absl::Time, uint64_t>> assignments;  // digest

  // Steps and reports.
  int64_t next_step = 0;  // the step whose end we wait for
  grpc::Alarm step_alarm;
  bool step_alarm_set = false;
  // Waiting for its thread's step tick instead of its own alarm (see
  // Loop): a rank on the grid ends its step when every other does.
  bool on_tick = false;
  absl::Duration lag;  // how far behind the world's grid this rank fell
  std::unique_ptr<grpc::ClientContext> report_context;
  v1::ReportStepResponse report_response;
  grpc::Status report_status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::ReportStepResponse>>
      report_call;
  absl::Time report_sent;
  grpc::Alarm report_alarm;  // the spread delay of a due report
  bool report_alarm_set = false;
  int64_t report_alarm_step = 0;  // the step it reports up to
  bool report_in_flight = false;
  int64_t unreported_from = 0;  // the first finished step not yet reported
  bool report_due = false;      // one fell due while the previous was in flight
  bool done = false;
};

// See Recorder::heartbeat_clear_ms.
constexpr absl::Duration kStepEndShadow = absl::Milliseconds(40);

// Shared by every thread: when each step's reports were sent.
class ReportLedger {
 public:
  explicit ReportLedger(int workers) : workers_(workers) {}
  void Sent(int64_t generation, int64_t step, absl::Time when) {
    absl::MutexLock lock(&mu_);
    auto& entry = steps_[{generation, step}];
    ++entry.first;
    entry.second = std::max(entry.second, when);
  }
  // When the last rank sent its report of `step`, if all have.
  bool AllSent(int64_t generation, int64_t step, absl::Time* when) {
    absl::MutexLock lock(&mu_);
    auto it = steps_.find({generation, step});
    if (it == steps_.end() || it->second.first < workers_) return false;
    *when = it->second.second;
    return true;
  }

 private:
  const int workers_;
  absl::Mutex mu_;
  std::map<std::pair<int64_t, int64_t>, std::pair<int, absl::Time>> steps_
      ABSL_GUARDED_BY(mu_);
};

struct Shared {
  int workers = 0;
  int64_t global_batch = 0;
  absl::Duration step;
  double report_spread_fraction = 0;
  int lookahead = 16;
  absl::Duration ramp;
  std::atomic<int> joined{0};  // successful joins (rejoins too)
  std::atomic<int> registered{0};
  // Per worker, the generation whose world it is in (0: none yet).
  std::unique_ptr<std::atomic<int64_t>[]> in_generation;
  // The world's step grid: its origin, and the generation it is for (set
  // once every worker is in the same generation; steps wait for it).
  std::atomic<int64_t> t0_nanos{0};
  std::atomic<int64_t> grid_generation{0};
  // The measurement window, in Unix nanoseconds (set once the world forms).
  std::atomic<int64_t> window_start{std::numeric_limits<int64_t>::max()};
  std::atomic<int64_t> window_end{std::numeric_limits<int64_t>::max()};
  std::atomic<bool> stopping{false};
  std::atomic<int64_t> max_generation_seen{0};
  // For the progress lines while the world forms.
  std::atomic<int64_t> heartbeats{0};
  std::atomic<int64_t> heartbeat_max_us{0};
  ReportLedger* ledger = nullptr;
  // The job's stream, for streams of positions (null: streams of ids).
  const sampler::StreamSampler* sampler = nullptr;

  absl::Time t0() const { return absl::FromUnixNanos(t0_nanos.load()); }
  bool InWindow(absl::Time t) const {
    const int64_t nanos = absl::ToUnixNanos(t);
    return nanos >= window_start.load() && nanos < window_end.load();
  }
};

Shared* shared = nullptr;

// Errors by call and code, with the first message seen as an example.
void Count(Worker& w, const std::string& what, const grpc::Status& status) {
  const std::string key = absl::StrCat(what, " code ", status.error_code());
  auto& [count, example] = w.recorder->errors[key];
  if (count++ == 0) example = status.error_message().substr(0, 100);
}

std::unique_ptr<grpc::ClientContext> NewContext(absl::Duration timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return context;
}

void SetAlarm(Worker& w, grpc::Alarm& alarm, absl::Time when, Kind kind) {
  ++*w.outstanding;
  alarm.Set(w.cq, absl::ToChronoTime(when), w.tag(kind));
}

void SendRegister(Worker& w) {
  v1::RegisterRequest request;
  request.set_worker_id(w.id);
  request.set_incarnation(w.incarnation);
  // A call's reader lives in its context's arena: drop it first.
  w.register_call.reset();
  w.register_context = NewContext(absl::Seconds(30));
  w.register_call =
      w.stub->PrepareAsyncRegister(w.register_context.get(), request, w.cq);
  w.register_call->StartCall();
  ++*w.outstanding;
  w.register_call->Finish(&w.register_response, &w.register_status,
                          w.tag(Kind::kRegister));
}

void SendJoin(Worker& w) {
  v1::JoinGenerationRequest request;
  request.set_worker_id(w.id);
  request.set_incarnation(w.incarnation);
  request.set_after_generation(w.generation);
  w.join_call.reset();
  w.join_context = NewContext(absl::Seconds(15));
  w.join_call =
      w.stub->PrepareAsyncJoinGeneration(w.join_context.get(), request, w.cq);
  w.join_call->StartCall();
  ++*w.outstanding;
  w.join_call->Finish(&w.join_response, &w.join_status, w.tag(Kind::kJoin));
}

void SendHeartbeat(Worker& w) {
  v1::HeartbeatRequest request;
  request.set_worker_id(w.id);
  request.set_incarnation(w.incarnation);
  request.set_generation(w.generation);
  w.heartbeat_call.reset();
  w.heartbeat_context = NewContext(absl::Seconds(10));
  w.heartbeat_call =
      w.stub->PrepareAsyncHeartbeat(w.heartbeat_context.get(), request, w.cq);
  w.heartbeat_sent = absl::Now();
  w.heartbeat_in_flight = true;
  w.heartbeat_call->StartCall();
  ++*w.outstanding;
  w.heartbeat_call->Finish(&w.heartbeat_response, &w.heartbeat_status,
                           w.tag(Kind::kHeartbeat));
}

void ScheduleHeartbeat(Worker& w) {
  const absl::Time now = absl::Now();
  w.next_heartbeat = std::max(w.next_heartbeat + w.heartbeat_interval, now);
  w.heartbeat_alarm_set = true;
  SetAlarm(w, w.heartbeat_alarm, w.next_heartbeat, Kind::kHeartbeatAlarm);
}

void OpenStream(Worker& w) {
  v1::StreamAssignmentsRequest request;
  request.set_worker_id(w.id);
  request.set_incarnation(w.incarnation);
  request.set_generation(w.generation);
  request.set_from_step(w.next_step);
  request.set_positions(shared->sampler != nullptr);
  w.stream.reset();
  w.stream_context = std::make_unique<grpc::ClientContext>();
  w.stream = w.stub->PrepareAsyncStreamAssignments(w.stream_context.get(),
                                                   request, w.cq);
  w.stream_open = true;
  ++*w.outstanding;
  w.stream->StartCall(w.tag(Kind::kStreamStart));
}

void ReadStream(Worker& w) {
  ++*w.outstanding;
  w.stream->Read(&w.incoming, w.tag(Kind::kStreamRead));
}

void FinishStream(Worker& w) {
  ++*w.outstanding;
  w.stream->Finish(&w.stream_status, w.tag(Kind::kStreamFinish));
}

// The end of step `next_step` on the world's grid, shifted by this rank's
// own lag.
absl::Time StepEnd(const Worker& w, int64_t step) {
  return shared->t0() + (step + 1) * shared->step + w.lag;
}

// Reports steps [unreported_from, last] in one call, as the agent's
// StepReporter does: the newest in the request's own fields, the others as
// earlier_steps.
void SendReport(Worker& w, int64_t last) {
  v1::ReportStepRequest request;
  request.set_worker_id(w.id);
  request.set_incarnation(w.incarnation);
  request.set_generation(w.generation);
  request.set_step(last);
  request.set_loss(1.0);
  request.set_step_seconds(absl::ToDoubleSeconds(shared->step));
  const int64_t count = shared->global_batch / shared->workers;
  for (int64_t step = w.unreported_from; step <= last; ++step) {
    auto it = w.assignments.find(step);
    if (it == w.assignments.end()) return;  // its generation ended
    if (step == last) {
      request.set_example_digest(it->second.second);
      request.set_example_count(count);
    } else {
      v1::StepDigest* digest = request.add_earlier_steps();
      digest->set_step(step);
      digest->set_example_digest(it->second.second);
      digest->set_example_count(count);
    }
  }
  w.report_call.reset();
  w.report_context = NewContext(absl::Seconds(10));
  w.report_call =
      w.stub->PrepareAsyncReportStep(w.report_context.get(), request, w.cq);
  w.report_sent = absl::Now();
  for (int64_t step = w.unreported_from; step <= last; ++step) {
    w.assignments.erase(step);
    shared->ledger->Sent(w.generation, step, w.report_sent);
  }
  w.unreported_from = last + 1;
  w.report_in_flight = true;
  w.report_call->StartCall();
  ++*w.outstanding;
  w.report_call->Finish(&w.report_response, &w.report_status,
                        w.tag(Kind::kReport));
}

// A report up to `last` fell due: sent now, or when the one in flight
// returns (one call in flight at a time, as the agent's StepReporter).
void DueReport(Worker& w, int64_t last) {
  if (w.report_in_flight) {
    w.report_due = true;  // sent when the last returns
  } else {
    SendReport(w, last);
  }
}

// Waits for the end of step next_step if its assignment is here; a step
// whose assignment came late starts late (a stall) and the rank falls
// behind the grid by as much.
void MaybeStartStep(Worker& w) {
  if (w.step_alarm_set || w.on_tick || shared->stopping ||
      shared->grid_generation.load() != w.generation) {
    return;
  }
  auto it = w.assignments.find(w.next_step);
  if (it == w.assignments.end()) return;
  const absl::Time start = StepEnd(w, w.next_step - 1);
  const absl::Time arrived = it->second.first;
  if (arrived > start) {
    if (shared->InWindow(start)) {
      ++w.recorder->stalls;
      w.recorder->stall_ms += absl::ToDoubleMilliseconds(arrived - start);
    }
    w.lag += arrived - start;
  }
  if (w.lag == absl::ZeroDuration()) {
    w.on_tick = true;
  } else {
    w.step_alarm_set = true;
    SetAlarm(w, w.step_alarm, StepEnd(w, w.next_step), Kind::kStepAlarm);
  }
}

// A stream message: its steps, and how late it came. It could leave the
// coordinator once every rank had reported the step `lookahead` before its
// last one (the horizon is the slowest rank's step + 1 + lookahead), so its
// availability is the moment the last of those reports was sent (this
// includes that report's trip to the server and the coordinator's wake-up
// and fan-out).
void OnAssignments(Worker& w, const v1::StepAssignments& message) {
  if (message.assignments().empty()) return;
  const absl::Time now = absl::Now();
  std::vector<int64_t> ids;
  for (const v1::StepAssignment& assignment : message.assignments()) {
    ids.assign(assignment.example_ids().begin(),
               assignment.example_ids().end());
    if (assignment.has_positions() && shared->sampler != nullptr) {
      // What the agent's input pipeline does (AssignedExampleIds). A range
      // the sampler refuses leaves no ids, whose digest the coordinator's
      // audit then refuses: it shows as a report error.
      const v1::StreamRange& range = assignment.positions();
      if (!shared->sampler
               ->Fill(range.begin(), range.end() - range.begin(), &ids)
               .ok()) {
        ids.clear();
      }
    }
    w.assignments[assignment.step()] = {now, sampler::ExampleDigest(ids)};
  }
  const int64_t last = message.assignments().rbegin()->step();
  const int64_t gate = last - w.lookahead;
  absl::Time available;
  if (gate >= 0 && shared->ledger->AllSent(w.generation, gate, &available) &&
      shared->InWindow(available)) {
    w.recorder->assignment_ms.push_back(
        absl::ToDoubleMilliseconds(now - available));
  }
  MaybeStartStep(w);
}

// Stops everything this worker has pending.
void Teardown(Worker& w) {
  if (w.done) return;
  w.done = true;
  if (w.start_alarm_set) w.start_alarm.Cancel();
  if (w.heartbeat_alarm_set) w.heartbeat_alarm.Cancel();
  if (w.step_alarm_set) w.step_alarm.Cancel();
  w.on_tick = false;
  if (w.report_alarm_set) w.report_alarm.Cancel();
  if (w.stream_context != nullptr) w.stream_context->TryCancel();
  if (w.join_context != nullptr) w.join_context->TryCancel();
}

// Step next_step ended for `w` (its own alarm or its thread's tick).
void StepEnded(Worker& w) {
  ++w.recorder->steps;
  if (shared->InWindow(StepEnd(w, w.next_step))) {
    w.recorder->step_end_late_ms.push_back(
        absl::ToDoubleMilliseconds(absl::Now() - StepEnd(w, w.next_step)));
  }
  // Due every report_every steps, at this rank's offset (the agent's
  // StepReporter), or at the job's last step.
  if (w.next_step + 1 == w.join_response.total_steps()) {
    DueReport(w, w.next_step);  // the agent's Flush(): no spread
  } else if ((w.next_step + 1 + w.rank) % w.report_every == 0) {
    const absl::Duration delay = worker::ReportSpreadDelay(
        {.every_steps = w.report_every,
         .rank = w.rank,
         .world_size = shared->workers,
         .spread_fraction = shared->report_spread_fraction},
        shared->step);
    if (delay > absl::ZeroDuration() && !w.report_alarm_set) {
      w.report_alarm_set = true;
      w.report_alarm_step = w.next_step;
      SetAlarm(w, w.report_alarm, absl::Now() + delay, Kind::kReportAlarm);
    } else {
      DueReport(w, w.next_step);
    }
  }
  ++w.next_step;
  MaybeStartStep(w);
}

void Handle(Worker& w, Kind kind, bool ok) {
  --*w.outstanding;
  const bool stopping = shared->stopping;
  switch (kind) {
    case Kind::kCount:
      return;
    case Kind::kStart:
      w.start_alarm_set = false;
      if (ok && !stopping) SendRegister(w);
      return;
    case Kind::kRegister:
      if (!w.register_status.ok()) {
        Count(w, "Register", w.register_status);
        if (!stopping) SendRegister(w);
        return;
      }
      if (stopping) return;
      if (w.registered_once) {  // registering again: heartbeats go on
        SendJoin(w);
        return;
      }
      w.registered_once = true;
      shared->registered++;
      w.heartbeat_interval =
          absl::Milliseconds(w.register_response.heartbeat_interval_ms());
      // Heartbeats at spread phases, as independent processes have them.
      w.next_heartbeat =
          absl::Now() +
          std::fmod(w.index * 0.6180339887, 1.0) * w.heartbeat_interval -
          w.heartbeat_interval;
      ScheduleHeartbeat(w);
      SendJoin(w);
      return;
    case Kind::kJoin:
      if (stopping) return;
      if (!w.join_status.ok()) {
        if (w.join_status.error_code() == grpc::StatusCode::NOT_FOUND) {
          // Its lease ran out before the world formed: register again and
          // rejoin, as the agent does (its heartbeats go on meanwhile).
          Count(w, "JoinGeneration", w.join_status);
          SendRegister(w);
          return;
        }
        if (w.join_status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
          Count(w, "JoinGeneration", w.join_status);
        }
        SendJoin(w);
        return;
      }
      w.generation = w.join_response.generation();
      w.rank = w.join_response.rank();
      w.next_step = w.join_response.resume_step() + 1;
      w.report_every = std::max(1, w.join_response.report_every_steps());
      w.lookahead = w.join_response.assignment_lookahead_steps() > 0
                        ? w.join_response.assignment_lookahead_steps()
                        : shared->lookahead;
      w.lag = absl::ZeroDuration();
      w.assignments.clear();
      w.unreported_from = w.next_step;
      w.report_due = false;
      shared->in_generation[w.index] = w.generation;
      shared->joined++;
      OpenStream(w);
      return;
    case Kind::kHeartbeatAlarm:
      w.heartbeat_alarm_set = false;
      if (!ok || stopping) return;
      if (!w.heartbeat_in_flight) SendHeartbeat(w);
      ScheduleHeartbeat(w);
      return;
    case Kind::kHeartbeat: {
      w.heartbeat_in_flight = false;
      if (!w.heartbeat_status.ok()) {
        if (!stopping) Count(w, "Heartbeat", w.heartbeat_status);
        return;
      }
      {
        const int64_t us =
            absl::ToInt64Microseconds(absl::Now() - w.heartbeat_sent);
        shared->heartbeats++;
        int64_t max = shared->heartbeat_max_us.load();
        while (us > max &&
               !shared->heartbeat_max_us.compare_exchange_weak(max, us)) {
        }
      }
      if (shared->InWindow(w.heartbeat_sent)) {
        const absl::Time now = absl::Now();
        const double ms = absl::ToDoubleMilliseconds(now - w.heartbeat_sent);
        w.recorder->heartbeat_ms.push_back(ms);
        const absl::Duration into_step =
            (w.heartbeat_sent - shared->t0()) % shared->step;
        if (into_step >= kStepEndShadow &&
            into_step + (now - w.heartbeat_sent) < shared->step) {
          w.recorder->heartbeat_clear_ms.push_back(ms);
        }
      }
      if (w.heartbeat_response.heartbeat_interval_ms() > 0) {  // as the agent
        w.heartbeat_interval =
            absl::Milliseconds(w.heartbeat_response.heartbeat_interval_ms());
      }
      const int64_t g = w.heartbeat_response.generation();
      int64_t seen = shared->max_generation_seen.load();
      while (g > seen &&
             !shared->max_generation_seen.compare_exchange_weak(seen, g)) {
      }
      return;
    }
    case Kind::kStreamStart:
      if (!ok) {
        FinishStream(w);
        return;
      }
      ReadStream(w);
      return;
    case Kind::kStreamRead:
      if (!ok) {
        FinishStream(w);
        return;
      }
      OnAssignments(w, w.incoming);
      ReadStream(w);
      return;
    case Kind::kStreamFinish:
      w.stream_open = false;
      if (stopping) return;
      // The generation ended (ABORTED) or this worker was dropped
      // (NOT_FOUND): rejoin, as the agent does.
      Count(w, "StreamAssignments", w.stream_status);
      shared->in_generation[w.index] = 0;
      if (w.step_alarm_set) w.step_alarm.Cancel();
      w.on_tick = false;
      if (w.report_alarm_set) w.report_alarm.Cancel();
      w.assignments.clear();
      w.report_due = false;
      if (w.stream_status.error_code() == grpc::StatusCode::NOT_FOUND) {
        SendRegister(w);
      } else {
        SendJoin(w);
      }
      return;
    case Kind::kStepAlarm:
      w.step_alarm_set = false;
      if (!ok || stopping || !w.stream_open) return;
      StepEnded(w);
      return;
    case Kind::kReportAlarm:
      w.report_alarm_set = false;
      if (!ok || stopping || !w.stream_open) return;
      DueReport(w, w.report_alarm_step);
      return;
    case Kind::kReport:
      w.report_in_flight = false;
      if (!w.report_status.ok()) {
        if (!stopping) Count(w, "ReportStep", w.report_status);
      } else if (shared->InWindow(w.report_sent)) {
        w.recorder->report_ms.push_back(
            absl::ToDoubleMilliseconds(absl::Now() - w.report_sent));
      }
      if (w.report_due && !stopping) {
        w.report_due = false;
        SendReport(w, w.next_step - 1);
      }
      return;
  }
}

// The first step end of the world's grid after `now`.
absl::Time NextStepEnd(absl::Time now) {
  const absl::Time t0 = shared->t0();
  if (now < t0) return t0 + shared->step;
  absl::Duration into_step;
  const int64_t done = absl::IDivDuration(now - t0, shared->step, &into_step);
  return t0 + (done + 1) * shared->step;
}

// One client thread: its workers' events, until they have all been torn
// down and nothing is pending.
//
// The ranks still on the world's step grid (never stalled) all end a step
// at the same instant; one alarm per thread (the step tick) ends it for
// them in one pass, where an alarm per rank cost this client ~60 ms per
// step boundary at 4,096 ranks on 2 threads ("step-end alarm handled
// late"), in which time no reply to any rank was read. A rank that fell
// behind the grid keeps its own alarm.
void Loop(grpc::CompletionQueue* cq, std::vector<Worker*> workers,
          int* outstanding, absl::Time stop_at, Recorder* recorder) {
  grpc::Alarm stop_alarm;
  Tag stop_tag{nullptr, Kind::kCount};
  stop_alarm.Set(cq, absl::ToChronoTime(stop_at), &stop_tag);
  grpc::Alarm tick_alarm;
  Tag tick_tag{nullptr, Kind::kStepAlarm};
  bool tick_set = false;
  const auto set_tick = [&] {
    tick_set = true;
    tick_alarm.Set(cq, absl::ToChronoTime(NextStepEnd(absl::Now())), &tick_tag);
  };
  // Processes start over --ramp_s, as a pod's workers come up.
  const absl::Time now = absl::Now();
  for (Worker* w : workers) {
    w->start_alarm_set = true;
    SetAlarm(*w, w->start_alarm,
             now + shared->ramp * w->index / shared->workers, Kind::kStart);
  }
  bool torn_down = false;
  void* raw;
  bool ok;
  while (cq->Next(&raw, &ok)) {
    Tag* tag = static_cast<Tag*>(raw);
    if (tag->worker == nullptr && tag->kind == Kind::kStart) {
      // The world's step grid is set: start stepping.
      for (Worker* w : workers) MaybeStartStep(*w);
      if (!tick_set) set_tick();
    } else if (tag == &tick_tag) {
      tick_set = false;
      if (ok && !shared->stopping) {
        const absl::Time now = absl::Now();
        for (Worker* w : workers) {
          if (w->on_tick && StepEnd(*w, w->next_step) <= now) {
            w->on_tick = false;
            if (w->stream_open) StepEnded(*w);
          }
        }
        set_tick();
      }
    } else if (tag->worker == nullptr) {  // a stop alarm
      shared->stopping = true;
    } else {
      Handle(*tag->worker, tag->kind, ok);
    }
    if (shared->stopping && !torn_down) {
      torn_down = true;
      for (Worker* w : workers) Teardown(*w);
      if (tick_set) tick_alarm.Cancel();
    }
    if (torn_down && *outstanding == 0 && !tick_set) break;
  }
  (void)recorder;
}

double Percentile(std::vector<double>& values, double p) {
  if (values.empty()) return -1;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1,
                         static_cast<size_t>(p * values.size()))];
}

// utime + stime of `pid`, in seconds.
double ProcessCpuSeconds(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  // Fields after the command, which is in parentheses and may hold spaces.
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; fields >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) {
      stime = std::stod(field);
      break;
    }
  }
  return (utime + stime) / sysconf(_SC_CLK_TCK);
}

int ProcessThreads(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

double SelfCpuSeconds() {
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec * 1e-6 +
         usage.ru_stime.tv_sec + usage.ru_stime.tv_usec * 1e-6;
}

// Machine-wide (busy, total) jiffies.
std::pair<double, double> MachineJiffies() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  in >> cpu;
  double value, total = 0, idle = 0;
  for (int i = 0; i < 8 && in >> value; ++i) {
    total += value;
    if (i == 3 || i == 4) idle += value;  // idle, iowait
  }
  return {total - idle, total};
}

absl::Status Run() {
  const int n = absl::GetFlag(FLAGS_workers);
  const int pid = absl::GetFlag(FLAGS_coordinator_pid);
  const std::string address = absl::GetFlag(FLAGS_address);
  const int examples_per_rank = absl::GetFlag(FLAGS_examples_per_rank);

  // --- the job: one world of n workers on a synthetic dataset -------------
  const std::string dataset_dir =
      dataset::JoinPath(absl::GetFlag(FLAGS_dir), "dataset");
  dataset::Schema schema;
  schema.height = 28;
  schema.width = 28;
  schema.channels = 1;
  schema.num_classes = 10;
  RETURN_IF_ERROR(dataset::CreateDirectories(dataset_dir));
  const dataset::Manifest manifest =
      dataset::MakeSyntheticManifest("bench", 1'000'000'000, 1000, schema);
  RETURN_IF_ERROR(dataset::WriteManifest(dataset_dir, manifest));
  v1::JobSpec spec = ReferenceMlpSpec();
  spec.set_dataset(dataset_dir);
  spec.set_global_batch(static_cast<int64_t>(examples_per_rank) * n);
  spec.set_epochs(1);
  spec.set_min_workers(n);
  spec.set_max_workers(n);
  spec.mutable_checkpoint()->set_directory(
      dataset::JoinPath(absl::GetFlag(FLAGS_dir), "checkpoints"));
  {
    auto jobs = v1::JobService::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    v1::CreateJobRequest request;
    *request.mutable_spec() = spec;
    v1::Job job;
    const grpc::Status status = jobs->CreateJob(&context, request, &job);
    if (!status.ok()) {
      return absl::InternalError(
          absl::StrCat("CreateJob: ", status.error_message()));
    }
  }

  // --- the workers -----------------------------------------------------
  ReportLedger ledger(n);
  Shared state;
  shared = &state;
  state.workers = n;
  state.in_generation = std::make_unique<std::atomic<int64_t>[]>(n);
  for (int i = 0; i < n; ++i) state.in_generation[i] = 0;
  state.global_batch = spec.global_batch();
  state.step = absl::Milliseconds(absl::GetFlag(FLAGS_step_ms));
  state.report_spread_fraction = absl::GetFlag(FLAGS_report_spread_fraction);
  state.lookahead = absl::GetFlag(FLAGS_lookahead);
  state.ramp = absl::Seconds(absl::GetFlag(FLAGS_ramp_s) >= 0
                                 ? absl::GetFlag(FLAGS_ramp_s)
                                 : n / 1024.0);
  state.ledger = &ledger;
  std::unique_ptr<sampler::StreamSampler> stream_sampler;
  if (absl::GetFlag(FLAGS_assignment_positions)) {
    ASSIGN_OR_RETURN(stream_sampler,
                     sampler::StreamSampler::Create(
                         manifest.ShardSizes(),
                         {.seed = spec.seed(),
                          .window_shards = spec.shuffle_window_shards()}));
    state.sampler = stream_sampler.get();
  }

  const int threads = absl::GetFlag(FLAGS_threads);
  const int per_channel = std::max(1, absl::GetFlag(FLAGS_workers_per_channel));
  std::vector<std::unique_ptr<v1::WorkerService::Stub>> stubs;
  for (int c = 0; c * per_channel < n; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("podtrain.bench_channel", c);  // no subchannel sharing
    stubs.push_back(v1::WorkerService::NewStub(grpc::CreateCustomChannel(
        address, grpc::InsecureChannelCredentials(), args)));
  }
  std::vector<grpc::CompletionQueue> queues(threads);
  std::vector<Recorder> recorders(threads);
  std::vector<int> outstanding(threads, 0);
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<std::vector<Worker*>> by_thread(threads);
  const uint64_t run = absl::ToUnixNanos(absl::Now());
  for (int i = 0; i < n; ++i) {
    auto w = std::make_unique<Worker>();
    const int t = i % threads;
    w->index = i;
    w->id = absl::StrCat("sim-", i);
    w->incarnation = run + i + 1;
    w->stub = stubs[i / per_channel].get();
    w->cq = &queues[t];
    w->recorder = &recorders[t];
    w->outstanding = &outstanding[t];
    for (int k = 0; k < static_cast<int>(Kind::kCount); ++k) {
      w->tags[k] = {w.get(), static_cast<Kind>(k)};
    }
    by_thread[t].push_back(w.get());
    workers.push_back(std::move(w));
  }

  // The window is fixed once the world's grid exists; until then the
  // threads run with an unbounded stop time, moved by a stop alarm below.
  const absl::Time started = absl::Now();
  const absl::Time give_up =
      started + absl::Seconds(absl::GetFlag(FLAGS_join_timeout_s));
  // Threads stop at a time decided after formation; give them a far
  // deadline now and a real one via a shared flag checked by the alarm.
  const double warmup = absl::GetFlag(FLAGS_warmup_s);
  const double duration = absl::GetFlag(FLAGS_duration_s);
  // Upper bound for the run: formation + 1 s + warmup + duration + margin.
  const absl::Time hard_stop = give_up + absl::Seconds(1 + warmup + duration);
  std::vector<std::thread> loops;
  for (int t = 0; t < threads; ++t) {
    loops.emplace_back(Loop, &queues[t], by_thread[t], &outstanding[t],
                       hard_stop, &recorders[t]);
  }
  // The probe: one more worker, outside the job, on its own connection and
  // thread, heartbeating every 100 ms with blocking calls. Its round trips
  // do not queue behind the simulated workers' events in this client, so
  // they separate the coordinator's responsiveness from the client's.
  std::vector<double> probe_ms;
  std::thread probe([&] {
    grpc::ChannelArguments args;
    args.SetInt("podtrain.bench_channel", -1);
    auto stub = v1::WorkerService::NewStub(grpc::CreateCustomChannel(
        address, grpc::InsecureChannelCredentials(), args));
    const uint64_t incarnation = run + n + 1;
    bool registered = false;
    while (!state.stopping) {
      const absl::Time sent = absl::Now();
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(sent + absl::Seconds(10)));
      grpc::Status status;
      if (!registered) {
        v1::RegisterRequest request;
        request.set_worker_id("probe");
        request.set_incarnation(incarnation);
        v1::RegisterResponse response;
        status = stub->Register(&context, request, &response);
        registered = status.ok();
      } else {
        v1::HeartbeatRequest request;
        request.set_worker_id("probe");
        request.set_incarnation(incarnation);
        v1::HeartbeatResponse response;
        status = stub->Heartbeat(&context, request, &response);
        registered = status.error_code() != grpc::StatusCode::NOT_FOUND;
        if (status.ok() && state.InWindow(sent)) {
          probe_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - sent));
        }
      }
      absl::SleepFor(sent + absl::Milliseconds(100) - absl::Now());
    }
  });
  // Wait until every worker is in the same generation's world (a lease that
  // runs out while thousands form one breaks it, and they form another).
  const auto world = [&]() -> int64_t {
    int64_t lowest = state.in_generation[0], highest = lowest;
    for (int i = 1; i < n; ++i) {
      lowest = std::min<int64_t>(lowest, state.in_generation[i]);
      highest = std::max<int64_t>(highest, state.in_generation[i]);
    }
    return lowest == highest ? lowest : 0;
  };
  absl::Time next_progress = started + absl::Seconds(1);
  int64_t generation = 0;
  while ((generation = world()) == 0 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
    if (absl::Now() >= next_progress) {
      next_progress += absl::Seconds(1);
      std::fprintf(stderr,
                   "coordinator_load: %.0f s: %d registered, %d joins; "
                   "%lld heartbeats, slowest %.0f ms; client CPU %.1f s\n",
                   absl::ToDoubleSeconds(absl::Now() - started),
                   state.registered.load(), state.joined.load(),
                   static_cast<long long>(state.heartbeats.exchange(0)),
                   state.heartbeat_max_us.exchange(0) / 1e3, SelfCpuSeconds());
    }
  }
  const absl::Duration formation = absl::Now() - started;
  const bool formed = generation > 0;
  if (formed) {
    // The world's step grid, one second ahead so that every rank holds its
    // first assignments; then tell the threads to start stepping.
    state.t0_nanos = absl::ToUnixNanos(absl::Now() + absl::Seconds(1));
    state.grid_generation = generation;
    static Tag kick_tag{nullptr, Kind::kStart};
    std::vector<std::unique_ptr<grpc::Alarm>> kicks;
    for (int t = 0; t < threads; ++t) {
      kicks.push_back(std::make_unique<grpc::Alarm>());
      kicks.back()->Set(&queues[t], Clock::now(), &kick_tag);
    }
    absl::SleepFor(absl::Milliseconds(100));  // the alarms fire, then go
  }
  double coordinator_cpu = 0, client_cpu = 0, machine_busy = 0;
  int coordinator_threads = -1;
  if (formed) {
    const absl::Time window_start = state.t0() + absl::Seconds(warmup);
    const absl::Time window_end = window_start + absl::Seconds(duration);
    state.window_end = absl::ToUnixNanos(window_end);
    state.window_start = absl::ToUnixNanos(window_start);
    const absl::Time now = absl::Now();
    if (window_start > now) absl::SleepFor(window_start - now);
    const double c0 = pid > 0 ? ProcessCpuSeconds(pid) : 0;
    const double s0 = SelfCpuSeconds();
    const auto m0 = MachineJiffies();
    absl::SleepFor(window_end - absl::Now());
    coordinator_cpu = (pid > 0 ? ProcessCpuSeconds(pid) : 0) - c0;
    client_cpu = SelfCpuSeconds() - s0;
    const auto m1 = MachineJiffies();
    machine_busy = (m1.first - m0.first) / (m1.second - m0.second);
    coordinator_threads = pid > 0 ? ProcessThreads(pid) : -1;
    // Let the replies to calls sent inside the window come back.
    absl::SleepFor(absl::Milliseconds(500));
  }
  state.stopping = true;
  // Wake every loop (their stop alarms are far away).
  std::vector<std::unique_ptr<grpc::Alarm>> wake;
  static Tag stop_tag{nullptr, Kind::kCount};
  for (int t = 0; t < threads; ++t) {
    wake.push_back(std::make_unique<grpc::Alarm>());
    wake.back()->Set(&queues[t], Clock::now(), &stop_tag);
  }
  for (std::thread& loop : loops) loop.join();
  probe.join();
  for (auto& queue : queues) {
    queue.Shutdown();
    void* tag;
    bool ok;
    while (queue.Next(&tag, &ok)) {
    }
  }

  // --- report --------------------------------------------------------------
  Recorder all;
  for (Recorder& r : recorders) {
    all.heartbeat_ms.insert(all.heartbeat_ms.end(), r.heartbeat_ms.begin(),
                            r.heartbeat_ms.end());
    all.report_ms.insert(all.report_ms.end(), r.report_ms.begin(),
                         r.report_ms.end());
    all.assignment_ms.insert(all.assignment_ms.end(), r.assignment_ms.begin(),
                             r.assignment_ms.end());
    all.step_end_late_ms.insert(all.step_end_late_ms.end(),
                                r.step_end_late_ms.begin(),
                                r.step_end_late_ms.end());
    all.heartbeat_clear_ms.insert(all.heartbeat_clear_ms.end(),
                                  r.heartbeat_clear_ms.begin(),
                                  r.heartbeat_clear_ms.end());
    all.stalls += r.stalls;
    all.stall_ms += r.stall_ms;
    all.steps += r.steps;
    for (const auto& [what, error] : r.errors) {
      auto& [count, example] = all.errors[what];
      if (count == 0) example = error.second;
      count += error.first;
    }
  }
  const double hb50 = Percentile(all.heartbeat_ms, 0.5);
  const double hb99 = Percentile(all.heartbeat_ms, 0.99);
  const double hbmax = Percentile(all.heartbeat_ms, 1.0);
  const double as50 = Percentile(all.assignment_ms, 0.5);
  const double as99 = Percentile(all.assignment_ms, 0.99);
  const double asmax = Percentile(all.assignment_ms, 1.0);
  const double pr50 = Percentile(probe_ms, 0.5);
  const double pr99 = Percentile(probe_ms, 0.99);
  const double rp50 = Percentile(all.report_ms, 0.5);
  const double rp99 = Percentile(all.report_ms, 0.99);
  // Worlds broken while forming (before the one measured), and after it
  // formed (heartbeats announce a newer generation).
  const int64_t broken_forming = std::max<int64_t>(0, generation - 1);
  const int64_t generation_changes =
      formed
          ? std::max<int64_t>(0, state.max_generation_seen.load() - generation)
          : 0;

  std::printf("### %d workers\n\n", n);
  std::printf(
      "- World formed in %.2f s (Register + JoinGeneration of every "
      "worker)%s; worlds broken while forming (a lease ran out): %lld.\n",
      absl::ToDoubleSeconds(formation), formed ? "" : " — **did not form**",
      static_cast<long long>(broken_forming));
  std::printf(
      "- Window %.0f s; %zu heartbeats (%.0f/s), %zu step reports (%.0f/s), "
      "%zu assignment messages timed (%.0f/s).\n",
      duration, all.heartbeat_ms.size(), all.heartbeat_ms.size() / duration,
      all.report_ms.size(), all.report_ms.size() / duration,
      all.assignment_ms.size(), all.assignment_ms.size() / duration);
  std::printf(
      "- CPU over the window: coordinator %.2f cores (%d threads), this "
      "client %.2f cores, machine %.0f %% busy of %ld cores.\n",
      coordinator_cpu / duration, coordinator_threads, client_cpu / duration,
      100 * machine_busy, sysconf(_SC_NPROCESSORS_ONLN));
  std::printf(
      "- Stalls (a rank's step began before its assignment arrived): %lld "
      "(%.1f ms in all); generation changes after the world formed: %lld.\n",
      static_cast<long long>(all.stalls), all.stall_ms,
      static_cast<long long>(generation_changes));
  if (!all.errors.empty()) {
    std::printf("- Errors (while forming too):");
    for (const auto& [what, error] : all.errors) {
      std::printf(" %s x%lld (e.g. \"%s\");", what.c_str(),
                  static_cast<long long>(error.first), error.second.c_str());
    }
    std::printf("\n");
  }
  std::printf(
      "\n| latency (ms) | p50 | p99 | max |\n| --- | --- | --- | --- |\n"
      "| heartbeat round trip | %.2f | %.2f | %.2f |\n"
      "| assignment delivery after availability | %.2f | %.2f | %.2f |\n"
      "| step report round trip | %.2f | %.2f | %.2f |\n"
      "| probe heartbeat round trip (own thread and connection, 10/s) | "
      "%.2f | %.2f | %.2f |\n"
      "| client: heartbeat round trip clear of step ends (%zu of them) | "
      "%.2f | %.2f | %.2f |\n"
      "| client: step-end alarm handled late (every simulated rank) | "
      "%.2f | %.2f | %.2f |\n\n",
      hb50, hb99, hbmax, as50, as99, asmax, rp50, rp99,
      Percentile(all.report_ms, 1.0), pr50, pr99, Percentile(probe_ms, 1.0),
      all.heartbeat_clear_ms.size(), Percentile(all.heartbeat_clear_ms, 0.5),
      Percentile(all.heartbeat_clear_ms, 0.99),
      Percentile(all.heartbeat_clear_ms, 1.0),
      Percentile(all.step_end_late_ms, 0.5),
      Percentile(all.step_end_late_ms, 0.99),
      Percentile(all.step_end_late_ms, 1.0));
  int64_t error_count = 0;
  for (const auto& [what, error] : all.errors) error_count += error.first;
  std::printf(
      "RESULT n=%d formed=%d heartbeat_p50_ms=%.3f heartbeat_p99_ms=%.3f "
      "assignment_p50_ms=%.3f assignment_p99_ms=%.3f report_p50_ms=%.3f "
      "report_p99_ms=%.3f probe_p50_ms=%.3f probe_p99_ms=%.3f "
      "coordinator_cores=%.3f client_cores=%.3f "
      "heartbeat_clear_p99_ms=%.3f step_end_late_p99_ms=%.3f "
      "stalls=%lld errors=%lld broken_forming=%lld generation_changes=%lld\n",
      n, formed ? 1 : 0, hb50, hb99, as50, as99, rp50, rp99, pr50, pr99,
      coordinator_cpu / duration, client_cpu / duration,
      Percentile(all.heartbeat_clear_ms, 0.99),
      Percentile(all.step_end_late_ms, 0.99),
      static_cast<long long>(all.stalls), static_cast<long long>(error_count),
      static_cast<long long>(broken_forming),
      static_cast<long long>(generation_changes));
  return formed ? absl::OkStatus()
                : absl::DeadlineExceededError("the world did not form");
}

}  // namespace
}  // namespace podtrain::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // As in podtrain-coordinator's main: Abseil's deadlock detection keeps a
  // lock-order graph for every lock gRPC takes, ~20 % of this client's CPU
  // at 4,096 simulated workers, all of it taken from the coordinator sharing
  // the cores (a real worker is one process per machine and pays nothing
  // comparable).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  const absl::Status status = podtrain::bench::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "coordinator_load: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
