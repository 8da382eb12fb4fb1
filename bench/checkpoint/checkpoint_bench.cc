// bench_checkpoint: what a checkpoint every 100 steps costs the reference
// MLP job (784-1024-1024-10, SGD with Nesterov momentum, global batch 256,
// one intra-op thread), as a share of its training time:
//
//   share = (time of one checkpoint) / (100 x time of one step)
//
// The podtrain checkpoint is what worker/agent.cc does at a checkpoint step
// on rank 0, in the same order: snapshot the parameters and the optimizer
// state, WriteCheckpoint (real files under --dir, each fsynced, renamed,
// DONE), PruneCheckpoints (keep 3), fsync the consumption log, and the
// CommitCheckpoint RPC to a real coordinator (in this process, on
// 127.0.0.1, whose SQLite journal fsyncs the commit).
//
// The peer is what a PyTorch user writes: torch::save of the same tensors
// (libtorch's serializer, the zip archive torch.save writes; the live
// parameters, as torch.save(model.state_dict()) takes them), fsync, rename,
// fsync of the directory. No coordinator, no checksums, no commit.
//
// Steps and checkpoints alternate (--rounds rounds of --steps_per_round
// training steps, then one podtrain and one peer checkpoint), so both see
// the same machine state. Step times are measured at the global batch on one
// rank (world 1) and at half of it (a rank's share in the reference world of
// 2, all-reduce not counted: shorter steps, so an upper bound on the share).
//
// Prints a markdown report on stdout; its last line is the BENCH line.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/common/local_coordinator.h"
#include "common/status_macros.h"
#include "dataset/file_util.h"
#include "proto/worker.grpc.pb.h"
#include "worker/checkpoint.h"
#include "worker/consumption_log.h"
#include "worker/model.h"
#include "worker/optimizer.h"

ABSL_FLAG(std::string, dir, "/tmp/podtrain-bench-checkpoint",
          "scratch directory (checkpoints, journal); emptied first");
ABSL_FLAG(int, rounds, 10, "checkpoints of each kind");
ABSL_FLAG(int, steps_per_round, 12, "training steps between checkpoints");
ABSL_FLAG(int, half_batch_steps, 40, "steps timed at half the global batch");
ABSL_FLAG(int, interval, 100, "the job's checkpoint interval, in steps");
ABSL_FLAG(double, target_percent, 2.0, "goal for the podtrain share");

namespace podtrain::bench {
namespace {

using worker::CheckpointState;
using worker::NamedTensor;

struct Stats {
  double mean = 0, median = 0, p90 = 0, min = 0, max = 0;
};

Stats Summarize(std::vector<double> values) {
  Stats stats;
  if (values.empty()) return stats;
  std::sort(values.begin(), values.end());
  stats.mean = std::accumulate(values.begin(), values.end(), 0.0) /
               static_cast<double>(values.size());
  stats.median = values[values.size() / 2];
  stats.p90 = values[std::min(values.size() - 1, values.size() * 9 / 10)];
  stats.min = values.front();
  stats.max = values.back();
  return stats;
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

absl::Status FsyncPath(const std::string& path, int flags) {
  const int fd = open(path.c_str(), flags);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", path));
  const int rc = fsync(fd);
  close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat("fsync ", path));
  return absl::OkStatus();
}

// One training job on one rank: the model, its optimizer, a fixed batch.
class Trainer {
 public:
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(
      const v1::JobSpec& spec, int64_t batch, const std::string& log_path) {
    auto trainer = std::unique_ptr<Trainer>(new Trainer());
    trainer->spec_ = spec;
    ASSIGN_OR_RETURN(trainer->model_,
                     worker::BuildModel(spec.model(), {28, 28, 1}, 42));
    ASSIGN_OR_RETURN(
        trainer->optimizer_,
        worker::MakeOptimizer(spec.optimizer(),
                              worker::GroupParameters(*trainer->model_)));
    trainer->images_ = torch::rand({batch, 1, 28, 28});
    trainer->labels_ = torch::randint(0, 10, {batch}, torch::kInt64);
    trainer->ids_.resize(batch);
    std::iota(trainer->ids_.begin(), trainer->ids_.end(), 0);
    ASSIGN_OR_RETURN(trainer->log_,
                     worker::ConsumptionLogWriter::Open(log_path));
    return trainer;
  }

  // One step as the agent runs it at world 1: forward, backward, update,
  // log the ids consumed. Returns its duration.
  absl::StatusOr<absl::Duration> Step() {
    const absl::Time start = absl::Now();
    model_->zero_grad();
    const torch::Tensor logits = model_->forward(images_);
    const torch::Tensor loss =
        worker::SummedLoss(logits, labels_, spec_.model().loss());
    (loss / static_cast<double>(spec_.global_batch())).backward();
    optimizer_->Step(0.05);
    RETURN_IF_ERROR(log_->Append({1, step_, 0, 1, ids_}));
    loss.item<double>();  // the agent reads the loss for its report
    ++step_;
    return absl::Now() - start;
  }

  // What Agent::Checkpoint hands to WriteCheckpoint.
  CheckpointState Snapshot(int64_t step) const {
    CheckpointState state;
    state.step = step;
    state.job_fingerprint = 0x5eed;
    state.generation = 1;
    state.next_stream_position = (step + 1) * spec_.global_batch();
    // As the agent (HostTensor): CPU parameters are written in place, the
    // optimizer's state from its StateTensors() snapshot.
    for (const auto& item : model_->named_parameters()) {
      state.model.push_back({item.key(), item.value().detach()});
    }
    for (auto& [name, tensor] : optimizer_->StateTensors()) {
      state.optimizer.push_back({name, tensor});
    }
    return state;
  }

  // What torch.save(model.state_dict()) sees: the live parameters (no
  // copy), and the optimizer's state (StateTensors copies it).
  CheckpointState Live() const {
    CheckpointState state;
    for (const auto& item : model_->named_parameters()) {
      state.model.push_back({item.key(), item.value().detach()});
    }
    for (auto& [name, tensor] : optimizer_->StateTensors()) {
      state.optimizer.push_back({name, tensor});
    }
    return state;
  }

  worker::ConsumptionLogWriter& log() { return *log_; }

 private:
  Trainer() = default;

  v1::JobSpec spec_;
  std::shared_ptr<worker::Model> model_;
  std::unique_ptr<worker::Optimizer> optimizer_;
  torch::Tensor images_;
  torch::Tensor labels_;
  std::vector<int64_t> ids_;
  std::unique_ptr<worker::ConsumptionLogWriter> log_;
  int64_t step_ = 0;
};

struct PodtrainTimes {
  absl::Duration snapshot, write, prune, log_sync, commit, total;
};

absl::Status Run() {
  const std::string dir = absl::GetFlag(FLAGS_dir);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int steps_per_round = absl::GetFlag(FLAGS_steps_per_round);
  const int interval = absl::GetFlag(FLAGS_interval);
  torch::set_num_threads(1);

  std::filesystem::remove_all(dir);
  RETURN_IF_ERROR(dataset::CreateDirectories(dir));
  const std::string root = dataset::JoinPath(dir, "checkpoints");
  const std::string peer_root = dataset::JoinPath(dir, "torch_save");
  RETURN_IF_ERROR(dataset::CreateDirectories(peer_root));

  v1::JobSpec spec = ReferenceMlpSpec();
  spec.mutable_checkpoint()->set_directory(root);
  ASSIGN_OR_RETURN(std::unique_ptr<LocalCoordinator> coordinator,
                   LocalCoordinator::Start(dir, spec, 60000));
  auto stub = v1::WorkerService::NewStub(coordinator->channel());
  const auto deadline = [] {
    return std::chrono::system_clock::now() + std::chrono::seconds(10);
  };
  v1::JoinGenerationResponse world;
  {
    grpc::ClientContext context;
    context.set_deadline(deadline());
    v1::RegisterRequest request;
    request.set_worker_id("bench-worker");
    request.set_incarnation(7);
    v1::RegisterResponse response;
    const grpc::Status status = stub->Register(&context, request, &response);
    if (!status.ok()) return absl::InternalError(status.error_message());
  }
  {
    grpc::ClientContext context;
    context.set_deadline(deadline());
    v1::JoinGenerationRequest request;
    request.set_worker_id("bench-worker");
    request.set_incarnation(7);
    const grpc::Status status = stub->JoinGeneration(&context, request, &world);
    if (!status.ok()) return absl::InternalError(status.error_message());
  }

  // Heartbeats keep the lease, as the agent's heartbeat thread does.
  absl::Notification stop_heartbeats;
  std::thread heartbeats([&] {
    while (!stop_heartbeats.WaitForNotificationWithTimeout(
        absl::Milliseconds(300))) {
      grpc::ClientContext context;
      context.set_deadline(deadline());
      v1::HeartbeatRequest request;
      request.set_worker_id("bench-worker");
      request.set_incarnation(7);
      request.set_generation(world.generation());
      v1::HeartbeatResponse response;
      stub->Heartbeat(&context, request, &response);
    }
  });
  const auto stop = absl::MakeCleanup([&] {
    stop_heartbeats.Notify();
    heartbeats.join();
  });

  ASSIGN_OR_RETURN(
      std::unique_ptr<Trainer> trainer,
      Trainer::Create(spec, spec.global_batch(),
                      dataset::JoinPath(dir, "consumed/bench-worker.log")));
  // Warm up libtorch's allocator and the BLAS.
  for (int i = 0; i < 3; ++i) RETURN_IF_ERROR(trainer->Step().status());

  std::vector<double> step_ms;
  std::vector<PodtrainTimes> podtrain;
  std::vector<double> peer_ms;
  uint64_t checkpoint_bytes = 0, peer_bytes = 0;
  int64_t committed = -1;
  for (int round = 0; round < rounds; ++round) {
    for (int i = 0; i < steps_per_round; ++i) {
      ASSIGN_OR_RETURN(const absl::Duration took, trainer->Step());
      step_ms.push_back(Ms(took));
    }
    const int64_t step = static_cast<int64_t>(round + 1) * interval - 1;

    // --- podtrain: Agent::Checkpoint's path -------------------------------
    PodtrainTimes times;
    absl::Time t0 = absl::Now();
    const CheckpointState state = trainer->Snapshot(step);
    absl::Time t1 = absl::Now();
    times.snapshot = t1 - t0;
    ASSIGN_OR_RETURN(const std::string path,
                     worker::WriteCheckpoint(root, state));
    absl::Time t2 = absl::Now();
    times.write = t2 - t1;
    RETURN_IF_ERROR(worker::PruneCheckpoints(
        root, spec.checkpoint().keep(),
        committed >= 0 ? absl::StrFormat("%s/step-%012d", root, committed)
                       : ""));
    absl::Time t3 = absl::Now();
    times.prune = t3 - t2;
    RETURN_IF_ERROR(trainer->log().Sync());
    absl::Time t4 = absl::Now();
    times.log_sync = t4 - t3;
    {
      grpc::ClientContext context;
      context.set_deadline(deadline());
      v1::CommitCheckpointRequest request;
      request.set_worker_id("bench-worker");
      request.set_incarnation(7);
      request.set_generation(world.generation());
      request.set_step(step);
      request.set_path(path);
      v1::CommitCheckpointResponse response;
      const grpc::Status status =
          stub->CommitCheckpoint(&context, request, &response);
      if (!status.ok() || !response.committed()) {
        return absl::InternalError(absl::StrCat("commit of step ", step, ": ",
                                                status.error_message()));
      }
      committed = step;
    }
    absl::Time t5 = absl::Now();
    times.commit = t5 - t4;
    times.total = t5 - t0;
    podtrain.push_back(times);
    if (checkpoint_bytes == 0) {
      for (const char* file : {"model.tensors", "optimizer.tensors"}) {
        const std::string full = dataset::JoinPath(path, file);
        FILE* f = std::fopen(full.c_str(), "rb");
        if (f != nullptr) {
          std::fseek(f, 0, SEEK_END);
          checkpoint_bytes += std::ftell(f);
          std::fclose(f);
        }
      }
    }

    // --- peer: torch::save + fsync + rename + directory fsync -------------
    t0 = absl::Now();
    {
      const CheckpointState snapshot = trainer->Live();
      torch::serialize::OutputArchive archive;
      for (const NamedTensor& named : snapshot.model) {
        archive.write(absl::StrCat("model/", named.name), named.tensor);
      }
      for (const NamedTensor& named : snapshot.optimizer) {
        archive.write(absl::StrCat("optimizer/", named.name), named.tensor);
      }
      archive.write("step", torch::tensor(step));
      const std::string final_path =
          absl::StrFormat("%s/step-%012d.pt", peer_root, step);
      const std::string temp = final_path + ".tmp";
      archive.save_to(temp);
      RETURN_IF_ERROR(FsyncPath(temp, O_RDONLY));
      if (std::rename(temp.c_str(), final_path.c_str()) != 0) {
        return absl::InternalError("rename");
      }
      RETURN_IF_ERROR(FsyncPath(peer_root, O_RDONLY | O_DIRECTORY));
      if (peer_bytes == 0) {
        FILE* f = std::fopen(final_path.c_str(), "rb");
        if (f != nullptr) {
          std::fseek(f, 0, SEEK_END);
          peer_bytes = std::ftell(f);
          std::fclose(f);
        }
      }
      // Keep 3, as the job does.
      const std::string old =
          absl::StrFormat("%s/step-%012d.pt", peer_root, step - 3 * interval);
      std::remove(old.c_str());
    }
    peer_ms.push_back(Ms(absl::Now() - t0));
  }

  // Step time at a rank's half of the global batch (world 2).
  std::vector<double> half_step_ms;
  {
    ASSIGN_OR_RETURN(
        std::unique_ptr<Trainer> half,
        Trainer::Create(spec, spec.global_batch() / 2,
                        dataset::JoinPath(dir, "consumed/half.log")));
    for (int i = 0; i < 3; ++i) RETURN_IF_ERROR(half->Step().status());
    for (int i = 0; i < absl::GetFlag(FLAGS_half_batch_steps); ++i) {
      ASSIGN_OR_RETURN(const absl::Duration took, half->Step());
      half_step_ms.push_back(Ms(took));
    }
  }

  const auto collect = [&](absl::Duration PodtrainTimes::*field) {
    std::vector<double> values;
    for (const PodtrainTimes& t : podtrain) values.push_back(Ms(t.*field));
    return Summarize(values);
  };
  const Stats step = Summarize(step_ms);
  const Stats half_step = Summarize(half_step_ms);
  const Stats total = collect(&PodtrainTimes::total);
  const Stats peer = Summarize(peer_ms);
  // Amortized costs: means (an fsync that stalls once in ten costs its time).
  const double share = 100.0 * total.mean / (interval * step.mean);
  const double peer_share = 100.0 * peer.mean / (interval * step.mean);
  const double share_half = 100.0 * total.mean / (interval * half_step.mean);

  std::printf("## Setup\n\n");
  std::printf(
      "- %d training steps (global batch %lld, one rank, 1 intra-op thread) "
      "in %d rounds; after each round one podtrain checkpoint and one peer "
      "checkpoint of the same state.\n",
      rounds * steps_per_round, static_cast<long long>(spec.global_batch()),
      rounds);
  std::printf(
      "- State: %zu model tensors + %zu optimizer tensors; podtrain files "
      "%.2f MB (model.tensors + optimizer.tensors), torch::save archive %.2f "
      "MB.\n",
      trainer->Snapshot(0).model.size(), trainer->Snapshot(0).optimizer.size(),
      checkpoint_bytes / 1e6, peer_bytes / 1e6);
  std::printf("- Files under %s (same filesystem as the build; fsync real).\n",
              dir.c_str());
  std::printf(
      "- Share = mean checkpoint time / (%d x mean step time); means, since "
      "a checkpoint's cost is amortized over its interval.\n\n",
      interval);
  std::printf("## Step time\n\n| batch | mean ms | median ms | p90 ms |\n");
  std::printf("| --- | --- | --- | --- |\n");
  std::printf("| %lld (world 1) | %.2f | %.2f | %.2f |\n",
              static_cast<long long>(spec.global_batch()), step.mean,
              step.median, step.p90);
  std::printf(
      "| %lld (a rank of world 2, no all-reduce) | %.2f | %.2f | %.2f "
      "|\n\n",
      static_cast<long long>(spec.global_batch() / 2), half_step.mean,
      half_step.median, half_step.p90);
  std::printf(
      "## Checkpoint time (ms)\n\n| phase | mean | median | p90 | max |\n"
      "| --- | --- | --- | --- | --- |\n");
  const struct {
    const char* name;
    absl::Duration PodtrainTimes::*field;
  } phases[] = {
      {"snapshot (the optimizer state; parameters are written in place)",
       &PodtrainTimes::snapshot},
      {"WriteCheckpoint (files, fsyncs, rename, DONE)", &PodtrainTimes::write},
      {"PruneCheckpoints (keep 3)", &PodtrainTimes::prune},
      {"consumption log fsync", &PodtrainTimes::log_sync},
      {"CommitCheckpoint RPC (journal fsync)", &PodtrainTimes::commit},
      {"**podtrain total**", &PodtrainTimes::total},
  };
  for (const auto& phase : phases) {
    const Stats s = collect(phase.field);
    std::printf("| %s | %.2f | %.2f | %.2f | %.2f |\n", phase.name, s.mean,
                s.median, s.p90, s.max);
  }
  std::printf(
      "| peer: torch::save + fsync + rename + dir fsync | %.2f | %.2f | %.2f "
      "| %.2f |\n\n",
      peer.mean, peer.median, peer.p90, peer.max);
  std::printf("## Result\n\n| | share of training time |\n| --- | --- |\n");
  std::printf("| podtrain, world 1 (headline) | %.3f %% |\n", share);
  std::printf("| podtrain, a rank of world 2 (upper bound) | %.3f %% |\n",
              share_half);
  std::printf("| peer (torch::save), world 1 | %.3f %% |\n", peer_share);
  std::printf("| target | < %.1f %% |\n\n",
              absl::GetFlag(FLAGS_target_percent));
  std::printf(
      "ratio = peer share / podtrain share (lower share is better, so higher "
      "ratio is better).\n\n");
  std::printf(
      "BENCH name=checkpoint podtrain=%.3f peer=%.3f ratio=%.2f "
      "target=<%.0f unit=percent_of_step_time\n",
      share, peer_share, peer_share / share,
      absl::GetFlag(FLAGS_target_percent));
  return absl::OkStatus();
}

}  // namespace
}  // namespace podtrain::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = podtrain::bench::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "checkpoint_bench: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
