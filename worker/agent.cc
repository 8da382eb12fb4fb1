#include "worker/agent.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <torch/torch.h>

#include <algorithm>
#include <deque>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/status_macros.h"
#include "dataset/dataset.h"
#include "dataset/stable_hash.h"
#include "sampler/assignment.h"
#include "sampler/stream_sampler.h"
#include "services/channel.h"
#include "services/grpc_status.h"
#include "worker/checkpoint.h"
#include "worker/collectives.h"
#include "worker/consumption_log.h"
#include "worker/coordinator_store.h"
#include "worker/device.h"
#include "worker/gloo_communicator.h"
#include "worker/gradient_buckets.h"
#include "worker/input_pipeline.h"
#include "worker/model.h"
#include "worker/shm_communicator.h"
#ifdef PODTRAIN_WITH_NCCL
#include "worker/nccl_communicator.h"
#endif
#include "worker/optimizer.h"
#include "worker/schedule.h"
#include "worker/step_reporter.h"

namespace podtrain::worker {

using services::FromGrpcStatus;

// ===========================================================================
// State that lives as long as the worker trains one job.
// ===========================================================================

struct Agent::Job {
  std::string name;
  v1::JobSpec spec;
  int64_t total_steps = 0;
  uint64_t fingerprint = 0;  // job spec + dataset: checkpoints must match
  std::unique_ptr<dataset::Dataset> data;
  std::unique_ptr<dataset::Dataset> eval_data;  // null without spec.eval
  // Maps the stream positions the coordinator assigns to example ids: the
  // same pure function of (seed, window, shard sizes) as the coordinator's.
  std::unique_ptr<sampler::StreamSampler> sampler;
  std::shared_ptr<Model> model;
  ParamGroups params;
  std::unique_ptr<Optimizer> optimizer;
  std::string checkpoint_root;
  // What this process trained on, for the coverage audit.
  std::unique_ptr<ConsumptionLogWriter> consumed;
  // What `model` and `optimizer` hold: the state after step `held_step`,
  // trained in generation `held_generation` (0: not a state another world
  // may continue from: fresh, restored from a checkpoint, or half received).
  int64_t held_generation = 0;
  int64_t held_step = -1;
};

// One world: the communicator and the assignment stream of a generation.
struct Agent::Generation {
  std::unique_ptr<Communicator> communicator;
  grpc::ClientContext stream_context;
  std::unique_ptr<grpc::ClientReader<v1::StepAssignments>> stream;
  // Steps of the last stream message not yet handed to the pipeline (its
  // thread only).
  std::deque<v1::StepAssignment> unread;
  std::unique_ptr<InputPipeline> pipeline;

  // Makes everything this generation blocks on return promptly.
  void Abort() {
    if (communicator != nullptr) communicator->Abort();
    stream_context.TryCancel();
    if (pipeline != nullptr) pipeline->Cancel();
  }
};

namespace {

torch::Device ComputeDevice(int cuda_device) {
  return cuda_device < 0
             ? torch::Device(torch::kCPU)
             : torch::Device(torch::kCUDA,
                             static_cast<c10::DeviceIndex>(cuda_device));
}

// `tensor` in host memory, for checkpoint files: a device tensor is copied
// over, a CPU tensor is written as it is. No copy is needed for the step's
// sake: Checkpoint runs on the training thread between steps and writes
// synchronously, so nothing changes the tensors while they are written. A
// copy cost more than the write itself on the VMs here (fresh pages for
// 7.5 MB of parameters and again for the optimizer's snapshot: 20-33 ms of a
// 60-90 ms checkpoint, bench/RESULTS.md, checkpoint).
torch::Tensor HostTensor(const torch::Tensor& tensor) {
  return tensor.detach().to(torch::kCPU);
}

// Step reports the training loop may run ahead of the coordinator's answers
// (StepReporter): enough to ride out a slow answer, few enough that the
// coordinator's view of progress lags by at most this many steps.
constexpr int kMaxPendingStepReports = 8;
// In a world reporting every k > 1 steps, the ranks reporting at one step
// send over this share of it, not all at its end (step_reporter.h).
constexpr double kReportSpreadFraction = 0.5;

// How often the gradient-norm gauge is refreshed (every step's would cost a
// pass over all gradients).
constexpr int64_t kGradientNormEverySteps = 16;

uint64_t RandomIncarnation() {
  std::random_device device;
  uint64_t value = 0;
  while (value == 0) value = (uint64_t{device()} << 32) | device();
  return value;
}

}  // namespace

uint64_t JobFingerprint(const std::string& name, const v1::JobSpec& spec,
                        uint64_t dataset_fingerprint) {
  std::string spec_bytes;
  google::protobuf::io::StringOutputStream stream(&spec_bytes);
  {
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    spec.SerializeToCodedStream(&coded);
  }
  dataset::Fnv1a64 hash;
  hash.AddString(name);
  hash.AddString(spec_bytes);
  hash.AddU64(dataset_fingerprint);
  return hash.value();
}

namespace {

// Accuracy of `model` on every example of `data`, in batches.
absl::StatusOr<double> Evaluate(Model& model, const dataset::Dataset& data,
                                torch::Device device) {
  torch::NoGradGuard no_grad;
  constexpr int64_t kBatch = 1000;
  int64_t correct = 0;
  for (int64_t begin = 0; begin < data.num_examples(); begin += kBatch) {
    const int64_t end = std::min(begin + kBatch, data.num_examples());
    std::vector<int64_t> ids(end - begin);
    for (int64_t k = 0; k < end - begin; ++k) ids[k] = begin + k;
    ASSIGN_OR_RETURN(Batch batch, DecodeBatch(data, -1, std::move(ids)));
    const torch::Tensor predicted =
        model.forward(batch.images.to(device)).argmax(1);
    correct += predicted.eq(batch.labels.to(device)).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / data.num_examples();
}

std::string CheckpointPath(const std::string& root, int64_t step) {
  return absl::StrFormat("%s/step-%012d", root, step);
}

}  // namespace

// ===========================================================================
// Construction, registration, heartbeats
// ===========================================================================

Agent::Agent(AgentOptions options)
    : options_([&] {
        if (options.incarnation == 0) options.incarnation = RandomIncarnation();
        return options;
      }()),
      metrics_(std::make_unique<WorkerMetrics>(
          options_.metrics_registry != nullptr
              ? options_.metrics_registry
              : std::make_shared<prometheus::Registry>())),
      channel_(services::MakeCoordinatorChannel(options_.coordinator_address,
                                                options_.channel_credentials)),
      stub_(v1::WorkerService::NewStub(channel_)) {
  torch::set_num_threads(options_.torch_threads);
}

Agent::~Agent() {
  stopping_ = true;
  if (heartbeat_.joinable()) heartbeat_.join();
}

std::unique_ptr<grpc::ClientContext> Agent::Context(
    absl::Duration timeout) const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  if (!options_.bearer_token.empty()) {
    context->AddMetadata("authorization", "Bearer " + options_.bearer_token);
  }
  return context;
}

absl::Status Agent::Register() {
  // The coordinator may be restarting: retry unavailability for a while.
  const absl::Time deadline = absl::Now() + absl::Minutes(2);
  while (true) {
    v1::RegisterRequest request;
    request.set_worker_id(options_.worker_id);
    request.set_incarnation(options_.incarnation);
    v1::RegisterResponse response;
    auto context = Context(absl::Seconds(5));
    const grpc::Status status =
        stub_->Register(context.get(), request, &response);
    if (status.ok()) {
      if (response.heartbeat_interval_ms() > 0) {
        heartbeat_interval_ms_ = response.heartbeat_interval_ms();
      }
      return absl::OkStatus();
    }
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE ||
        absl::Now() > deadline) {
      return WithContext(FromGrpcStatus(status),
                         absl::StrCat("register with coordinator at ",
                                      options_.coordinator_address));
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
}

void Agent::ReportCollectiveError(const absl::Status& error) {
  absl::MutexLock lock(&mu_);
  collective_error_ = std::string(error.message());
}

void Agent::HeartbeatLoop() {
  while (!stopping_) {
    const int64_t sent = generation_;
    v1::HeartbeatRequest request;
    request.set_worker_id(options_.worker_id);
    request.set_incarnation(options_.incarnation);
    request.set_generation(sent);
    request.set_preempting(preempting_);
    {
      absl::MutexLock lock(&mu_);
      request.set_collective_error(collective_error_);
      collective_error_.clear();
    }
    v1::HeartbeatResponse response;
    auto context = Context(absl::Seconds(2));
    const grpc::Status status =
        stub_->Heartbeat(context.get(), request, &response);
    if (status.ok()) {
      committed_step_ = response.committed_step();
      if (response.heartbeat_interval_ms() > 0) {  // the pool's, as it grows
        heartbeat_interval_ms_ = response.heartbeat_interval_ms();
      }
      checkpoint_requested_ = response.checkpoint_requested();
      // Only an answer about the generation we are still in counts: one
      // that raced with JoinGeneration speaks of the previous world.
      const bool newer =
          sent > 0 && sent == generation_ &&
          (response.generation() > sent || response.job().empty());
      if (response.job_finished()) job_finished_ = true;
      if (newer || response.job_finished()) {
        generation_over_ = true;
        absl::MutexLock lock(&mu_);
        if (current_ != nullptr) current_->Abort();
      }
    } else if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
      // The coordinator forgot us: our lease expired, it restarted without
      // us in its journal, or (when preempting) it let us go.
      if (preempting_) removed_ = true;
      if (!Register().ok()) LOG(WARNING) << "re-register failed";
    }
    // Next heartbeat after the interval the coordinator handed out, or
    // within 100 ms when there is news for it (a collective error, a
    // preemption notice), so a failure reaches it as fast as before.
    const absl::Time due =
        absl::Now() + absl::Milliseconds(heartbeat_interval_ms_.load());
    while (!stopping_ && absl::Now() < due &&
           preempting_ == request.preempting()) {
      {
        absl::MutexLock lock(&mu_);
        if (!collective_error_.empty()) break;
      }
      absl::SleepFor(std::min(absl::Milliseconds(100), due - absl::Now()));
    }
  }
}

// ===========================================================================
// The loop
// ===========================================================================

absl::Status Agent::Run() {
  ASSIGN_OR_RETURN(const torch::Device device, ResolveDevice(options_.device));
  cuda_device_ = device.is_cuda() ? device.index() : -1;
  RETURN_IF_ERROR(Register());
  LOG(INFO) << options_.worker_id << " registered with "
            << options_.coordinator_address << " (incarnation "
            << options_.incarnation << ")";
  heartbeat_ = std::thread([this] { HeartbeatLoop(); });
  while (true) {
    absl::StatusOr<v1::JoinGenerationResponse> joined = JoinGeneration();
    if (!joined.ok()) {
      // Preempted between worlds: nothing uncommitted to save.
      return preempting_ ? absl::OkStatus() : joined.status();
    }
    const v1::JoinGenerationResponse& world = *joined;
    RETURN_IF_ERROR(PrepareJob(world));
    ASSIGN_OR_RETURN(const Outcome outcome, TrainGeneration(world));
    if (outcome == Outcome::kPreempted) return absl::OkStatus();
    if (outcome == Outcome::kJobFinished) {
      LOG(INFO) << world.job() << " ended; " << options_.worker_id
                << " is done";
      return absl::OkStatus();
    }
  }
}

absl::StatusOr<v1::JoinGenerationResponse> Agent::JoinGeneration() {
  while (true) {
    if (preempting_) return absl::CancelledError("preempted while joining");
    v1::JoinGenerationRequest request;
    request.set_worker_id(options_.worker_id);
    request.set_incarnation(options_.incarnation);
    request.set_after_generation(generation_);
    v1::JoinGenerationResponse world;
    auto context = Context(absl::Seconds(15));
    const grpc::Status status =
        stub_->JoinGeneration(context.get(), request, &world);
    if (status.ok()) {
      generation_ = world.generation();
      generation_over_ = false;
      job_finished_ = false;
      metrics_->generation->Set(world.generation());
      LOG(INFO) << options_.worker_id << ": " << world.job() << " generation "
                << world.generation() << ", rank " << world.rank() << " of "
                << world.world_size() << ", resuming after step "
                << world.resume_step();
      if (world.report_every_steps() > 1) {
        LOG(INFO) << options_.worker_id << ": reporting every "
                  << world.report_every_steps()
                  << " steps, assignments looking "
                  << world.assignment_lookahead_steps() << " steps ahead";
      }
      return world;
    }
    switch (status.error_code()) {
      case grpc::StatusCode::DEADLINE_EXCEEDED:
      case grpc::StatusCode::UNAVAILABLE:
        absl::SleepFor(absl::Milliseconds(100));
        continue;
      case grpc::StatusCode::NOT_FOUND:
      case grpc::StatusCode::ABORTED:
        RETURN_IF_ERROR(Register());
        continue;
      default:
        return WithContext(FromGrpcStatus(status), "join a generation");
    }
  }
}

absl::Status Agent::PrepareJob(const v1::JoinGenerationResponse& world) {
  if (job_ != nullptr && job_->name == world.job()) return absl::OkStatus();
  auto job = std::make_unique<Job>();
  job->name = world.job();
  job->spec = world.spec();
  job->total_steps = world.total_steps();
  ASSIGN_OR_RETURN(job->data, dataset::Dataset::Open(job->spec.dataset()));
  const uint64_t fingerprint = job->data->manifest().Fingerprint();
  if (fingerprint != world.dataset_fingerprint()) {
    return absl::FailedPreconditionError(absl::StrCat(
        job->name, ": dataset ", job->spec.dataset(), " has fingerprint ",
        dataset::FingerprintHex(fingerprint), " but the job was created on ",
        dataset::FingerprintHex(world.dataset_fingerprint()),
        "; refusing to train on changed data"));
  }
  ASSIGN_OR_RETURN(job->sampler,
                   sampler::StreamSampler::Create(
                       job->data->manifest().ShardSizes(),
                       {.seed = job->spec.seed(),
                        .window_shards = job->spec.shuffle_window_shards()}));
  if (!job->spec.eval().dataset().empty()) {
    ASSIGN_OR_RETURN(job->eval_data,
                     dataset::Dataset::Open(job->spec.eval().dataset()));
  }
  job->fingerprint =
      JobFingerprint(job->name, job->spec, world.dataset_fingerprint());
  std::string id = job->name.substr(job->name.find('/') + 1);
  job->checkpoint_root =
      absl::StrCat(job->spec.checkpoint().directory(), "/", id);
  ASSIGN_OR_RETURN(job->consumed, ConsumptionLogWriter::Open(ConsumptionLogPath(
                                      job->checkpoint_root, options_.worker_id,
                                      options_.incarnation)));
  job_ = std::move(job);
  return absl::OkStatus();
}

// A fresh model and optimizer from the seed: every generation starts from
// these, then restores the committed checkpoint over them, so steps trained
// after the last commit are discarded and every rank starts alike.
absl::Status Agent::InitializeModel() {
  Job& job = *job_;
  const dataset::Schema& schema = job.data->manifest().schema;
  ASSIGN_OR_RETURN(job.model,
                   BuildModel(job.spec.model(),
                              {schema.height, schema.width, schema.channels},
                              job.spec.seed()));
  // Initialized on the CPU from the seed (the same weights whatever the
  // device), then moved; the optimizer's state follows its parameters.
  job.model->to(ComputeDevice(cuda_device_));
  job.params = GroupParameters(*job.model);
  ASSIGN_OR_RETURN(job.optimizer,
                   MakeOptimizer(job.spec.optimizer(), job.params));
  job.held_generation = 0;
  job.held_step = -1;
  return absl::OkStatus();
}

// Loads the head of the committed lineage into the model and optimizer.
// An unusable checkpoint is NOT_FOUND, FAILED_PRECONDITION (incomplete or
// another job's) or DATA_LOSS (corrupt, or not this model's).
absl::Status Agent::RestoreCommitted(const v1::JoinGenerationResponse& world) {
  Job& job = *job_;
  ASSIGN_OR_RETURN(const CheckpointState state,
                   ReadCheckpoint(world.resume_checkpoint(), job.fingerprint));
  if (state.step != world.resume_step()) {
    return absl::DataLossError(absl::StrCat(
        world.resume_checkpoint(), " holds step ", state.step,
        " but the coordinator committed step ", world.resume_step()));
  }
  torch::NoGradGuard no_grad;
  const auto named = job.model->named_parameters();
  if (state.model.size() != named.size()) {
    return absl::DataLossError(
        absl::StrCat(world.resume_checkpoint(), ": ", state.model.size(),
                     " model tensors, the model has ", named.size()));
  }
  for (const NamedTensor& saved : state.model) {
    const torch::Tensor* parameter = named.find(saved.name);
    if (parameter == nullptr ||
        !parameter->sizes().equals(saved.tensor.sizes())) {
      return absl::DataLossError(absl::StrCat(world.resume_checkpoint(),
                                              ": tensor ", saved.name,
                                              " does not match the model"));
    }
    const_cast<torch::Tensor*>(parameter)->copy_(saved.tensor);
  }
  std::vector<std::pair<std::string, torch::Tensor>> optimizer_state;
  for (const NamedTensor& saved : state.optimizer) {
    optimizer_state.emplace_back(saved.name, saved.tensor);
  }
  const absl::Status loaded = job.optimizer->LoadStateTensors(optimizer_state);
  if (!loaded.ok()) {
    return absl::DataLossError(absl::StrCat(
        world.resume_checkpoint(), ": optimizer state: ", loaded.message()));
  }
  return absl::OkStatus();
}

bool Agent::HoldsContinuableState(
    const v1::JoinGenerationResponse& world) const {
  const Job& job = *job_;
  if (job.held_generation == 0 || job.held_step <= world.resume_step() ||
      job.held_step + 1 >= job.total_steps) {
    return false;
  }
  for (int64_t generation : world.continuable_generations()) {
    if (generation == job.held_generation) return true;
  }
  return false;
}

absl::StatusOr<int64_t> Agent::ResumeFromHeldState(
    const v1::JoinGenerationResponse& world, Communicator& communicator,
    bool holding) {
  Job& job = *job_;
  const int world_size = communicator.world_size();
  const int rank = communicator.rank();
  const torch::Device device = ComputeDevice(cuda_device_);
  // Every rank's offer side by side: (held step + 1, held generation), zero
  // for none, summed so every rank sees all of them.
  torch::Tensor offers = torch::zeros({2 * world_size}, torch::kInt64);
  if (holding) {
    offers[rank] = job.held_step + 1;
    offers[world_size + rank] = job.held_generation;
  }
  offers = offers.to(device);
  RETURN_IF_ERROR(communicator.AllReduceSum(offers));
  offers = offers.cpu();
  int source = -1;
  int64_t best = 0;
  for (int r = 0; r < world_size; ++r) {
    if (offers[r].item<int64_t>() > best) {
      best = offers[r].item<int64_t>();
      source = r;
    }
  }
  if (source < 0) return world.resume_step();
  const int64_t step = best - 1;
  const int64_t from_generation = offers[world_size + source].item<int64_t>();

  // Rank 0 has the coordinator journal the resume before anyone trains on
  // it, and tells the others whether it did.
  torch::Tensor recorded = torch::zeros({1}, torch::kInt64);
  if (rank == 0) {
    v1::ResumeFromHeldStateRequest request;
    request.set_worker_id(options_.worker_id);
    request.set_incarnation(options_.incarnation);
    request.set_generation(world.generation());
    request.set_step(step);
    request.set_from_generation(from_generation);
    request.set_source_rank(source);
    v1::ResumeFromHeldStateResponse ignored;
    auto context = Context(absl::Seconds(10));
    const grpc::Status status =
        stub_->ResumeFromHeldState(context.get(), request, &ignored);
    if (status.ok()) {
      recorded[0] = 1;
    } else {
      LOG(WARNING) << "the coordinator did not record resuming generation "
                   << world.generation() << " after step " << step
                   << " from rank " << source
                   << "'s state: " << FromGrpcStatus(status)
                   << "; resuming from step " << world.resume_step()
                   << "'s checkpoint";
    }
  }
  recorded = recorded.to(device);
  RETURN_IF_ERROR(communicator.Broadcast(recorded, /*root=*/0));
  if (recorded.cpu().item<int64_t>() == 0) return world.resume_step();

  // The holder's model and optimizer state, to every rank. Until every
  // tensor has arrived this process holds nothing another world may use.
  if (rank != source) {
    job.held_generation = 0;
    job.held_step = -1;
  }
  torch::NoGradGuard no_grad;
  for (torch::Tensor parameter : job.model->parameters()) {
    torch::Tensor data = parameter.data();
    RETURN_IF_ERROR(communicator.Broadcast(data, source));
  }
  std::vector<std::pair<std::string, torch::Tensor>> state =
      job.optimizer->StateTensors();
  for (auto& [name, tensor] : state) {
    tensor = tensor.contiguous();
    RETURN_IF_ERROR(communicator.Broadcast(tensor, source));
  }
  if (rank != source) {
    const absl::Status loaded = job.optimizer->LoadStateTensors(state);
    if (!loaded.ok()) {
      return absl::InternalError(absl::StrCat("optimizer state from rank ",
                                              source, ": ", loaded.message()));
    }
  }
  job.held_generation = from_generation;
  job.held_step = step;
  LOG(INFO) << options_.worker_id << ": generation " << world.generation()
            << " resumes after step " << step << " from rank " << source
            << "'s state (generation " << from_generation
            << "), not from the checkpoint of step " << world.resume_step();
  return step;
}

// Tells the coordinator that the lineage's head cannot be loaded, so the
// world resumes from the commit before it instead of failing here forever.
absl::Status Agent::RejectCheckpoint(const v1::JoinGenerationResponse& world,
                                     const absl::Status& why) {
  LOG(ERROR) << options_.worker_id << ": cannot resume " << world.job()
             << " from the checkpoint of step " << world.resume_step() << ": "
             << why << "; asking the coordinator to fall back";
  v1::RejectCheckpointRequest request;
  request.set_worker_id(options_.worker_id);
  request.set_incarnation(options_.incarnation);
  request.set_generation(world.generation());
  request.set_step(world.resume_step());
  request.set_path(world.resume_checkpoint());
  request.set_reason(
      absl::StrCat(absl::StatusCodeToString(why.code()), ": ", why.message()));
  v1::RejectCheckpointResponse response;
  grpc::Status status;
  for (int attempt = 0; attempt < 50; ++attempt) {
    auto context = Context(absl::Seconds(5));
    status = stub_->RejectCheckpoint(context.get(), request, &response);
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  if (status.ok()) {
    LOG(INFO) << world.job() << " resumes after step "
              << response.resume_step();
    return absl::OkStatus();
  }
  // The generation ended meanwhile: the next one gives the head again, and
  // it is rejected again if it is still the bad one.
  if (status.error_code() == grpc::StatusCode::ABORTED ||
      status.error_code() == grpc::StatusCode::NOT_FOUND) {
    return absl::OkStatus();
  }
  return WithContext(FromGrpcStatus(status), "reject a checkpoint");
}

absl::Status Agent::Checkpoint(const v1::JoinGenerationResponse& world,
                               int64_t step) {
  Job& job = *job_;
  std::string path = CheckpointPath(job.checkpoint_root, step);
  if (world.rank() == 0) {
    ScopedTimer timer(metrics_->checkpoint_write_seconds);
    CheckpointState state;
    state.step = step;
    state.job_fingerprint = job.fingerprint;
    state.generation = world.generation();
    state.next_stream_position = (step + 1) * job.spec.global_batch();
    for (const auto& item : job.model->named_parameters()) {
      state.model.push_back({item.key(), HostTensor(item.value())});
    }
    // StateTensors() is a snapshot already.
    for (auto& [name, tensor] : job.optimizer->StateTensors()) {
      state.optimizer.push_back({name, HostTensor(tensor)});
    }
    ASSIGN_OR_RETURN(path, WriteCheckpoint(job.checkpoint_root, state));
    // Keep the newest N, never the committed one (it may be older).
    const int64_t committed = committed_step_;
    const absl::Status pruned = PruneCheckpoints(
        job.checkpoint_root, job.spec.checkpoint().keep(),
        committed >= 0 ? CheckpointPath(job.checkpoint_root, committed) : "");
    if (!pruned.ok()) LOG(WARNING) << "pruning checkpoints: " << pruned;
  }
  // The ids behind every step up to here must be durable before the commit
  // that puts those steps in the lineage: the audit reads them.
  RETURN_IF_ERROR(job.consumed->Sync());
  // Every rank votes; rank 0 only after its write is durable, so a commit
  // (all votes) implies the checkpoint is on disk.
  v1::CommitCheckpointRequest request;
  request.set_worker_id(options_.worker_id);
  request.set_incarnation(options_.incarnation);
  request.set_generation(world.generation());
  request.set_step(step);
  request.set_path(path);
  v1::CommitCheckpointResponse response;
  grpc::Status status;
  for (int attempt = 0; attempt < 50; ++attempt) {
    auto context = Context(absl::Seconds(5));
    status = stub_->CommitCheckpoint(context.get(), request, &response);
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  if (response.committed())
    committed_step_ = std::max<int64_t>(committed_step_, step);
  return FromGrpcStatus(status);
}

// A preempted worker leaves once its emergency checkpoint is in the
// lineage: the coordinator says so (committed_step), or has already let the
// worker go (NOT_FOUND on heartbeat).
absl::Status Agent::WaitForCommit(int64_t step) {
  const absl::Time deadline = absl::Now() + options_.preemption_grace;
  while (committed_step_ < step && !removed_ && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  if (committed_step_ >= step || removed_) return absl::OkStatus();
  return absl::DeadlineExceededError(absl::StrCat(
      "emergency checkpoint of step ", step, " not committed within ",
      absl::FormatDuration(options_.preemption_grace)));
}

absl::StatusOr<Agent::Outcome> Agent::TrainGeneration(
    const v1::JoinGenerationResponse& world) {
  Job& job = *job_;
  // A model this process still holds from the world before may spare every
  // rank the reload of the checkpoint and the steps trained since it.
  const bool holding = HoldsContinuableState(world);
  if (!holding) RETURN_IF_ERROR(InitializeModel());
  const int64_t global_batch = job.spec.global_batch();

  // --- communicator and assignment stream --------------------------------
  auto generation = std::make_unique<Generation>();
  {
    absl::MutexLock lock(&mu_);
    current_ = generation.get();
  }
  const auto release = [&] {
    absl::MutexLock lock(&mu_);
    current_ = nullptr;
  };
  CommunicatorOptions comm_options;
  comm_options.rank = world.rank();
  comm_options.world_size = world.world_size();
  comm_options.store_prefix = world.bootstrap().store_prefix();
  comm_options.timeout = options_.collective_timeout;
  comm_options.hostname = options_.hostname;
  auto store = std::make_shared<CoordinatorStore>(
      channel_, world.bootstrap().store_prefix(), options_.bearer_token,
      options_.collective_timeout);
  const torch::Device device = ComputeDevice(cuda_device_);
  absl::StatusOr<std::unique_ptr<Communicator>> communicator =
#ifdef PODTRAIN_WITH_NCCL
      device.is_cuda() ? ConnectNccl(comm_options, cuda_device_, store) :
#endif
                       ConnectGloo(comm_options, store);
  if (communicator.ok() && !device.is_cuda() &&
      options_.shared_memory_allreduce) {
    // Room for the gradient buckets and the stop flag (below): the ranks
    // then reduce them with no copy in or out.
    SharedMemoryOptions shared;
    shared.buffer_bytes =
        ReduceBufferBytes(job.model->parameters()) + kReduceBufferAlign;
    communicator = ConnectSharedMemory(comm_options, shared, store,
                                       *std::move(communicator));
  }
  if (!communicator.ok()) {
    release();
    LOG(WARNING) << "cannot form the world: " << communicator.status();
    ReportCollectiveError(communicator.status());
    return Outcome::kRejoin;
  }
  generation->communicator = *std::move(communicator);

  // --- where this world starts: a held state, or the committed checkpoint -
  absl::StatusOr<int64_t> resumed =
      ResumeFromHeldState(world, *generation->communicator, holding);
  if (!resumed.ok()) {
    release();
    generation->Abort();
    if (!generation_over_) {
      LOG(WARNING) << "cannot agree where generation " << world.generation()
                   << " resumes: " << resumed.status();
      ReportCollectiveError(resumed.status());
    }
    return Outcome::kRejoin;
  }
  const int64_t resume_step = *resumed;
  if (resume_step == world.resume_step()) {
    if (holding) RETURN_IF_ERROR(InitializeModel());
    if (world.resume_step() >= 0) {
      const absl::Status restored = RestoreCommitted(world);
      if (absl::IsNotFound(restored) || absl::IsFailedPrecondition(restored) ||
          absl::IsDataLoss(restored)) {
        release();
        generation->Abort();
        RETURN_IF_ERROR(RejectCheckpoint(world, restored));
        return Outcome::kRejoin;
      }
      RETURN_IF_ERROR(restored);
    }
  }
  {
    // Set under the lock: the heartbeat thread may Abort() concurrently.
    v1::StreamAssignmentsRequest request;
    request.set_worker_id(options_.worker_id);
    request.set_incarnation(options_.incarnation);
    request.set_generation(world.generation());
    request.set_from_step(resume_step + 1);
    request.set_positions(true);
    if (!options_.bearer_token.empty()) {
      generation->stream_context.AddMetadata("authorization",
                                             "Bearer " + options_.bearer_token);
    }
    generation->stream =
        stub_->StreamAssignments(&generation->stream_context, request);
  }
  Generation* g = generation.get();
  generation->pipeline = std::make_unique<InputPipeline>(
      job.data.get(), job.sampler.get(),
      [g]() -> absl::StatusOr<std::optional<v1::StepAssignment>> {
        v1::StepAssignments message;
        while (g->unread.empty() && g->stream->Read(&message)) {
          for (v1::StepAssignment& assignment :
               *message.mutable_assignments()) {
            g->unread.push_back(std::move(assignment));
          }
        }
        if (!g->unread.empty()) {
          v1::StepAssignment next = std::move(g->unread.front());
          g->unread.pop_front();
          return next;
        }
        const grpc::Status status = g->stream->Finish();
        if (status.ok()) return std::nullopt;
        return FromGrpcStatus(status);
      },
      options_.prefetch_steps);
  if (generation_over_) generation->Abort();  // raced with the heartbeat
  // Between hosts (Gloo TCP, NCCL) buckets are reduced while backward runs;
  // through shared memory the whole reduction is a fraction of a
  // millisecond, cheaper after backward than handed to another thread
  // mid-backward (GradientBucketOptions.overlap).
  GradientBucketOptions bucket_options;
  bucket_options.overlap = !UsesSharedMemory(*generation->communicator);
  GradientBuckets buckets(job.model->parameters(),
                          generation->communicator.get(), bucket_options);
  // After the buckets, on every rank alike (NewReduceBuffer's contract).
  torch::Tensor stop = generation->communicator->NewReduceBuffer(
      1, torch::TensorOptions().dtype(torch::kFloat32).device(device));

  // --- the steps -----------------------------------------------------------
  // Step reports go out from their own thread, in order (see
  // step_reporter.h): the loop no longer waits a coordinator round trip per
  // step. Declared after `generation`, so it is destroyed (dropping unsent
  // reports of a world that is over) before the stream and communicator.
  struct InFlightReport {
    absl::Mutex mu;
    grpc::ClientContext* context ABSL_GUARDED_BY(mu) = nullptr;
    bool interrupted ABSL_GUARDED_BY(mu) = false;
  };
  auto in_flight = std::make_shared<InFlightReport>();
  StepReporter reporter(
      [this, in_flight](const v1::ReportStepRequest& report) {
        v1::ReportStepResponse ignored;
        auto context = Context(absl::Seconds(5));
        {
          absl::MutexLock lock(&in_flight->mu);
          if (in_flight->interrupted) {
            return absl::CancelledError("step reports interrupted");
          }
          in_flight->context = context.get();
        }
        const grpc::Status status =
            stub_->ReportStep(context.get(), report, &ignored);
        absl::MutexLock lock(&in_flight->mu);
        in_flight->context = nullptr;
        return FromGrpcStatus(status);
      },
      kMaxPendingStepReports,
      [in_flight] {
        absl::MutexLock lock(&in_flight->mu);
        in_flight->interrupted = true;
        if (in_flight->context != nullptr) in_flight->context->TryCancel();
      },
      ReportBatching{.every_steps = world.report_every_steps(),
                     .rank = world.rank(),
                     .world_size = world.world_size(),
                     .spread_fraction = kReportSpreadFraction});
  Outcome outcome = Outcome::kRejoin;
  absl::Status error;
  for (int64_t step = resume_step + 1; step < job.total_steps; ++step) {
    if (generation_over_) break;
    const absl::Time step_start = absl::Now();
    absl::Duration waited;
    absl::StatusOr<Batch> batch = generation->pipeline->Next(&waited);
    if (!batch.ok()) {
      if (!generation_over_) error = batch.status();
      break;
    }
    if (batch->step != step) {
      error = absl::InternalError(absl::StrCat(
          "assignment for step ", batch->step, " arrived at step ", step));
      break;
    }
    metrics_->data_wait_seconds->Observe(absl::ToDoubleSeconds(waited));
    // Log what this rank trains on (the log feeds the coverage audit) before
    // its gradients reach any peer: a peer that completes this step's
    // all-reduce, and so may hand this step's state to the next world after
    // this process dies, knows this record was written.
    RETURN_IF_ERROR(
        job.consumed->Append({world.generation(), step, world.rank(),
                              world.world_size(), batch->ids}));

    // Forward and backward; buckets all-reduce during backward. The loss is
    // this rank's sum over its examples divided by the global batch, so the
    // summed gradients are the global batch's mean gradient.
    // Gradients set to none rather than zeroed: autograd then hands over
    // each new gradient, which the bucket copies in once (GradientBuckets::
    // AdoptGrad), instead of a memset of every bucket plus an add into it.
    // World 2 by hand, five alternating runs: 20.1 -> 19.0 ms/step (median).
    job.model->zero_grad(/*set_to_none=*/true);
    const torch::Tensor logits =
        job.model->forward(batch->images.to(device, /*non_blocking=*/true));
    const torch::Tensor local_loss =
        SummedLoss(logits, batch->labels.to(device, /*non_blocking=*/true),
                   job.spec.model().loss());
    (local_loss / static_cast<double>(global_batch)).backward();
    absl::Status reduced = buckets.FinishReduction();
    // The stop flag rides in its own all-reduce: every rank sees the same
    // sum at the same step, so they all checkpoint at this step's end.
    stop.fill_((preempting_ || checkpoint_requested_) ? 1.0f : 0.0f);
    if (reduced.ok()) reduced = generation->communicator->AllReduceSum(stop);
    if (!reduced.ok()) {
      if (!generation_over_) {
        LOG(WARNING) << "all-reduce failed at step " << step << ": " << reduced;
        ReportCollectiveError(reduced);
      }
      break;
    }
    const bool stop_here = stop.item<float>() > 0;
    const double learning_rate =
        LearningRate(job.spec.schedule(), step, job.total_steps);
    // A sweep over every gradient (~0.3 ms of a ~24 ms step for the
    // reference MLP) for a gauge scraped every few seconds: sampled.
    if (step % kGradientNormEverySteps == 0) {
      metrics_->gradient_norm->Set(GlobalGradNorm(job.params));
    }
    job.optimizer->Step(learning_rate);
    job.held_generation = world.generation();
    job.held_step = step;

    // Report what this rank trained on (the digest lets the coordinator
    // check it against the plan).
    const int64_t examples = static_cast<int64_t>(batch->ids.size());
    const double mean_loss =
        local_loss.item<double>() / std::max<int64_t>(examples, 1);
    const double step_seconds = absl::ToDoubleSeconds(absl::Now() - step_start);
    v1::ReportStepRequest report;
    report.set_worker_id(options_.worker_id);
    report.set_incarnation(options_.incarnation);
    report.set_generation(world.generation());
    report.set_step(step);
    report.set_loss(mean_loss);
    report.set_step_seconds(step_seconds);
    report.set_data_wait_seconds(absl::ToDoubleSeconds(waited));
    report.set_example_digest(sampler::ExampleDigest(batch->ids));
    report.set_example_count(examples);
    const bool last = step + 1 == job.total_steps;
    const int64_t eval_interval = job.spec.eval().interval_steps();
    if (world.rank() == 0 && job.eval_data != nullptr &&
        (last || (eval_interval > 0 && (step + 1) % eval_interval == 0))) {
      ASSIGN_OR_RETURN(const double accuracy,
                       Evaluate(*job.model, *job.eval_data, device));
      report.set_eval_accuracy(accuracy);
      LOG(INFO) << job.name << " step " << step << ": eval accuracy "
                << accuracy;
    }
    // Only an audit failure (of this or an earlier report) comes back: the
    // audit caught a bug, stop.
    RETURN_IF_ERROR(reporter.Report(std::move(report)));
    metrics_->step->Set(step);
    metrics_->step_seconds->Observe(step_seconds);
    metrics_->examples->Increment(examples);
    metrics_->examples_per_second->Set(global_batch /
                                       std::max(step_seconds, 1e-9));
    metrics_->loss->Set(mean_loss);
    metrics_->learning_rate->Set(learning_rate);
    metrics_->allreduce_seconds->Observe(buckets.last_reduce_seconds());
    metrics_->allreduce_wait_seconds->Observe(buckets.last_wait_seconds());
    metrics_->allreduce_bytes->Increment(buckets.last_reduce_bytes());

    const int64_t interval = job.spec.checkpoint().interval_steps();
    if (last || stop_here || (step + 1) % interval == 0) {
      // Every report up to this step is answered before the vote, so no
      // checkpoint joins the lineage after a step the audit refused, and the
      // last step's report (its evaluation) is in before the job can end.
      const absl::Status reported = reporter.Flush();
      if (absl::IsFailedPrecondition(reported)) return reported;
      const absl::Status checkpointed = Checkpoint(world, step);
      if (!checkpointed.ok()) {
        LOG(WARNING) << "checkpoint of step " << step << ": " << checkpointed;
        if (!absl::IsAborted(checkpointed)) error = checkpointed;
        break;
      }
    }
    if (stop_here && preempting_) {
      release();
      generation->Abort();
      LOG(INFO) << options_.worker_id
                << " preempted: emergency checkpoint of step " << step
                << " written; waiting for the commit";
      RETURN_IF_ERROR(WaitForCommit(step));
      return Outcome::kPreempted;
    }
    if (last) outcome = Outcome::kJobFinished;
  }
  // A finished job flushed its reports before its last checkpoint. A world
  // that failed drops what is still queued (the coordinator refuses a
  // world's reports once it is over, and one that is down or restarting
  // must not hold this process out of the next world), but still stops on
  // an audit failure already known.
  if (outcome != Outcome::kJobFinished) reporter.Cancel();
  const absl::Status reported = reporter.Flush();
  if (absl::IsFailedPrecondition(reported)) return reported;
  release();
  generation->Abort();
  if (job_finished_) return Outcome::kJobFinished;
  if (outcome == Outcome::kJobFinished) {
    // Our part is done; the job ends once every rank's final commit is in.
    while (!job_finished_ && !generation_over_) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    return job_finished_ ? Outcome::kJobFinished : Outcome::kRejoin;
  }
  if (!error.ok() && !generation_over_) {
    LOG(WARNING) << "generation " << world.generation() << " ends: " << error;
    ReportCollectiveError(error);
  }
  return Outcome::kRejoin;
}

}  // namespace podtrain::worker
