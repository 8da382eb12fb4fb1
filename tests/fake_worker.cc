#include "tests/fake_worker.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "sampler/assignment.h"
#include "services/channel.h"

namespace podtrain::testing {
namespace {

std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return context;
}

bool Retryable(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

}  // namespace

FakeWorker::FakeWorker(Options options)
    : options_(std::move(options)),
      stub_(v1::WorkerService::NewStub(
          services::MakeCoordinatorChannel(options_.address))) {}

FakeWorker::~FakeWorker() { Kill(); }

void FakeWorker::Start() {
  runner_ = std::thread([this] { Run(); });
  heartbeater_ = std::thread([this] { HeartbeatLoop(); });
}

void FakeWorker::Kill() {
  killed_ = true;
  {
    absl::MutexLock lock(&mu_);
    if (stream_context_ != nullptr) stream_context_->TryCancel();
  }
  if (runner_.joinable()) runner_.join();
  if (heartbeater_.joinable()) heartbeater_.join();
}

bool FakeWorker::WaitUntilFinished(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!finished_ && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  return finished_;
}

std::map<int64_t, std::map<int64_t, std::vector<int64_t>>> FakeWorker::trained()
    const {
  absl::MutexLock lock(&mu_);
  return trained_;
}

std::vector<int64_t> FakeWorker::generations() const {
  absl::MutexLock lock(&mu_);
  return generations_;
}

std::vector<std::string> FakeWorker::unexpected_errors() const {
  absl::MutexLock lock(&mu_);
  return unexpected_;
}

absl::Time FakeWorker::heard_of_newer_generation(int64_t generation) const {
  absl::MutexLock lock(&mu_);
  auto it = heard_newer_.find(generation);
  return it == heard_newer_.end() ? absl::InfiniteFuture() : it->second;
}

void FakeWorker::Unexpected(const std::string& what,
                            const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  unexpected_.push_back(absl::StrCat(options_.worker_id, " ", what, ": ",
                                     status.error_code(), " ",
                                     status.error_message()));
}

bool FakeWorker::Register() {
  while (!Stopped()) {
    v1::RegisterRequest request;
    request.set_worker_id(options_.worker_id);
    request.set_incarnation(options_.incarnation);
    v1::RegisterResponse response;
    auto context = Context(absl::Seconds(2));
    const grpc::Status status =
        stub_->Register(context.get(), request, &response);
    if (status.ok()) return true;
    if (!Retryable(status)) {
      Unexpected("register", status);
      return false;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

void FakeWorker::HeartbeatLoop() {
  while (!Stopped()) {
    v1::HeartbeatRequest request;
    request.set_worker_id(options_.worker_id);
    request.set_incarnation(options_.incarnation);
    request.set_generation(generation_);
    v1::HeartbeatResponse response;
    auto context = Context(absl::Seconds(1));
    const grpc::Status status =
        stub_->Heartbeat(context.get(), request, &response);
    if (status.ok()) {
      if (response.job_finished()) finished_ = true;
      const int64_t current = generation_;
      if (current > 0 && response.generation() > current) {
        announced_generation_ = response.generation();
        absl::MutexLock lock(&mu_);
        heard_newer_.emplace(current, absl::Now());
        // Abort the "communicator": the stream of the old generation.
        if (stream_context_ != nullptr) stream_context_->TryCancel();
      }
    } else if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
      Register();
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

void FakeWorker::Run() {
  if (!Register()) return;
  while (!Stopped()) {
    v1::JoinGenerationRequest request;
    request.set_worker_id(options_.worker_id);
    request.set_incarnation(options_.incarnation);
    request.set_after_generation(generation_);
    v1::JoinGenerationResponse world;
    auto context = Context(absl::Seconds(3));
    const grpc::Status status =
        stub_->JoinGeneration(context.get(), request, &world);
    if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
      Register();
      continue;
    }
    if (Retryable(status)) continue;
    if (!status.ok()) {
      Unexpected("join", status);
      absl::SleepFor(absl::Milliseconds(50));
      continue;
    }
    generation_ = world.generation();
    {
      absl::MutexLock lock(&mu_);
      generations_.push_back(world.generation());
    }
    TrainGeneration(world);
  }
}

void FakeWorker::TrainGeneration(const v1::JoinGenerationResponse& world) {
  int64_t next_step = world.resume_step() + 1;
  while (!Stopped() && announced_generation_ <= world.generation()) {
    if (next_step >= world.total_steps()) {
      absl::SleepFor(absl::Milliseconds(20));  // done; wait for the verdict
      continue;
    }
    v1::StreamAssignmentsRequest request;
    request.set_worker_id(options_.worker_id);
    request.set_incarnation(options_.incarnation);
    request.set_generation(world.generation());
    request.set_from_step(next_step);
    grpc::ClientContext context;
    {
      absl::MutexLock lock(&mu_);
      stream_context_ = &context;
    }
    auto reader = stub_->StreamAssignments(&context, request);
    v1::StepAssignments message;
    while (!Stopped() && reader->Read(&message)) {
      for (const v1::StepAssignment& assignment : message.assignments()) {
        if (Stopped()) break;
        absl::SleepFor(options_.step_time);  // "training"
        const std::vector<int64_t> ids(assignment.example_ids().begin(),
                                       assignment.example_ids().end());
        {
          absl::MutexLock lock(&mu_);
          trained_[world.generation()][assignment.step()] = ids;
        }
        v1::ReportStepRequest report;
        report.set_worker_id(options_.worker_id);
        report.set_incarnation(options_.incarnation);
        report.set_generation(world.generation());
        report.set_step(assignment.step());
        report.set_example_count(ids.size());
        report.set_example_digest(sampler::ExampleDigest(ids));
        v1::ReportStepResponse ignored;
        auto report_context = Context(absl::Seconds(2));
        grpc::Status status =
            stub_->ReportStep(report_context.get(), report, &ignored);
        if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
          Unexpected("report", status);
        }
        const bool last = assignment.step() + 1 == world.total_steps();
        if ((assignment.step() + 1) % options_.checkpoint_every == 0 || last) {
          v1::CommitCheckpointRequest commit;
          commit.set_worker_id(options_.worker_id);
          commit.set_incarnation(options_.incarnation);
          commit.set_generation(world.generation());
          commit.set_step(assignment.step());
          commit.set_path(absl::StrCat("/fake/step-", assignment.step()));
          v1::CommitCheckpointResponse committed;
          do {
            auto commit_context = Context(absl::Seconds(2));
            status = stub_->CommitCheckpoint(commit_context.get(), commit,
                                             &committed);
          } while (!Stopped() &&
                   status.error_code() == grpc::StatusCode::UNAVAILABLE &&
                   (absl::SleepFor(absl::Milliseconds(50)), true));
          if (!status.ok() &&
              status.error_code() != grpc::StatusCode::ABORTED &&
              status.error_code() != grpc::StatusCode::UNAVAILABLE) {
            Unexpected("commit", status);
          }
        }
        next_step = assignment.step() + 1;
      }
    }
    const grpc::Status status = reader->Finish();
    {
      absl::MutexLock lock(&mu_);
      stream_context_ = nullptr;
    }
    if (status.error_code() == grpc::StatusCode::ABORTED) return;  // rejoin
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
        status.error_code() == grpc::StatusCode::CANCELLED || status.ok()) {
      absl::SleepFor(absl::Milliseconds(20));
      continue;  // coordinator restarting, or our own abort: check and retry
    }
    Unexpected("stream", status);
    return;
  }
}

}  // namespace podtrain::testing
