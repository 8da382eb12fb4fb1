// The worker's agent loop: what podtrain-worker runs. One screen of logic,
// llm.c-style, in Run() and TrainGeneration():
//
//   register -> heartbeat (own thread, forever)
//   loop:
//     join a generation (world size, rank, where to resume)
//     open the job's dataset, check its fingerprint
//     build the communicator (Gloo on the CPU, NCCL on CUDA; rendezvous
//       through the coordinator)
//     agree where to start: the newest model and optimizer state a rank
//       still holds from the world before, if it extends the lineage
//       (journaled by the coordinator, broadcast by its holder); else load
//       the committed checkpoint (or initialize from the seed); one that
//       cannot be loaded is rejected: the coordinator falls back a commit
//     stream assignments -> input pipeline (prefetch thread)
//     for each step: log the ids consumed, forward, backward with bucketed
//       all-reduce overlapped, agree on the stop flag, optimizer update,
//       report the step (with the digest of the ids consumed, for the
//       coordinator's check; from a background thread), checkpoint every K
//     until: the job ends, the generation changes (abort the communicator,
//       rejoin), or this worker is preempted (emergency checkpoint, commit,
//       exit)
//
// Preemption (SIGTERM -> RequestPreemption): the worker tells the
// coordinator, and its stop flag, all-reduced with every step, makes every
// rank checkpoint at the end of the same step; once the coordinator has
// committed it, the worker leaves (Run returns OK). Every step's math is the
// global batch's: the loss is summed over this rank's examples and divided
// by the global batch B, so the all-reduced gradient is (1/B) * sum of
// per-example gradients for any world size and slice sizes.
//
// Thread-safety: Run() once, from one thread; RequestPreemption() from any
// thread (a signal handler's thread included: it only sets an atomic).

#ifndef PODTRAIN_WORKER_AGENT_H_
#define PODTRAIN_WORKER_AGENT_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/worker.grpc.pb.h"
#include "worker/worker_metrics.h"

namespace podtrain::worker {

class Communicator;  // worker/collectives.h

// Identifies a job's training state: its name, its normalized spec and its
// dataset. Checkpoints carry it; a checkpoint of another job is refused.
uint64_t JobFingerprint(const std::string& job_name, const v1::JobSpec& spec,
                        uint64_t dataset_fingerprint);

struct AgentOptions {
  std::string coordinator_address;
  std::string worker_id;
  // Random per process when 0.
  uint64_t incarnation = 0;
  // Bearer token for the coordinator, if it wants one.
  std::string bearer_token;
  // TLS credentials for the coordinator channel (services/tls.h); null:
  // plaintext.
  std::shared_ptr<grpc::ChannelCredentials> channel_credentials;
  // Address peers reach this worker's Gloo transport on.
  std::string hostname = "127.0.0.1";
  absl::Duration collective_timeout = absl::Seconds(30);
  // CPU worlds whose ranks share a host all-reduce through shared memory
  // (worker/shm_communicator.h) instead of loopback TCP.
  bool shared_memory_allreduce = true;
  // Decoded steps kept ready ahead of training.
  int prefetch_steps = 4;
  // Intra-op threads for libtorch (1 keeps CPU results bit-reproducible).
  int torch_threads = 1;
  // "cpu" (Gloo collectives) or "cuda[:N]" (NCCL; needs a --config=cuda
  // build and a CUDA libtorch): worker/device.h.
  std::string device = "cpu";
  // How long a preempted worker waits for its emergency checkpoint to be
  // committed before it gives up and exits anyway.
  absl::Duration preemption_grace = absl::Seconds(25);
  std::shared_ptr<prometheus::Registry> metrics_registry;
};

class Agent {
 public:
  explicit Agent(AgentOptions options);
  ~Agent();

  // Trains until the job this worker belongs to ends (OK), or this worker
  // was preempted and its emergency checkpoint is committed (OK). Errors
  // that no rejoin can fix (a dataset whose fingerprint differs, a device
  // that cannot be used) are returned. A committed checkpoint that cannot be
  // loaded (missing, incomplete, corrupt) is rejected to the coordinator,
  // which resumes the world from the commit before it.
  absl::Status Run();

  // Asks for an emergency checkpoint at the next step boundary and a clean
  // exit after it. Async-signal-safe.
  void RequestPreemption() { preempting_.store(true); }

  const WorkerMetrics& metrics() const { return *metrics_; }

 private:
  struct Job;         // the job's dataset, model, optimizer (agent.cc)
  struct Generation;  // one world: communicator, stream, pipeline (agent.cc)
  enum class Outcome { kRejoin, kJobFinished, kPreempted };

  absl::Status Register();
  void HeartbeatLoop();
  absl::StatusOr<v1::JoinGenerationResponse> JoinGeneration();
  absl::Status PrepareJob(const v1::JoinGenerationResponse& world);
  absl::StatusOr<Outcome> TrainGeneration(
      const v1::JoinGenerationResponse& world);
  absl::Status InitializeModel();
  // Whether the model this process holds may continue `world`'s lineage: it
  // was trained in one of world.continuable_generations() past the
  // committed step (and is not the job's last step).
  bool HoldsContinuableState(const v1::JoinGenerationResponse& world) const;
  // The ranks of a new world agree where it starts: the newest state any of
  // them holds (HoldsContinuableState), which rank 0 has the coordinator
  // record and its holder then broadcasts to every rank; or, when none
  // holds one or the coordinator refuses, the committed step. Returns the
  // step the world trains after; an error if the communicator fails.
  absl::StatusOr<int64_t> ResumeFromHeldState(
      const v1::JoinGenerationResponse& world, Communicator& communicator,
      bool holding);
  absl::Status RestoreCommitted(const v1::JoinGenerationResponse& world);
  absl::Status RejectCheckpoint(const v1::JoinGenerationResponse& world,
                                const absl::Status& why);
  absl::Status Checkpoint(const v1::JoinGenerationResponse& world,
                          int64_t step);
  absl::Status WaitForCommit(int64_t step);
  std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout) const;
  void ReportCollectiveError(const absl::Status& error);

  const AgentOptions options_;
  // The CUDA device trained on, or -1 for the CPU (resolved by Run).
  int cuda_device_ = -1;
  std::unique_ptr<WorkerMetrics> metrics_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  std::unique_ptr<Job> job_;

  std::atomic<bool> preempting_{false};
  std::atomic<bool> stopping_{false};
  // What the heartbeat thread learns, for the training thread.
  std::atomic<int64_t> generation_{0};
  std::atomic<bool> generation_over_{false};
  std::atomic<bool> job_finished_{false};
  std::atomic<bool> checkpoint_requested_{false};
  std::atomic<int64_t> committed_step_{-1};
  std::atomic<bool> removed_{false};
  // The heartbeat interval the coordinator hands out, at registration and on
  // every heartbeat (it grows with the pool:
  // CoordinatorOptions::max_heartbeats_per_second).
  std::atomic<int64_t> heartbeat_interval_ms_{300};

  absl::Mutex mu_;
  std::string collective_error_ ABSL_GUARDED_BY(mu_);
  // The live generation, so the heartbeat thread can abort it.
  Generation* current_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::thread heartbeat_;
};

}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_AGENT_H_
