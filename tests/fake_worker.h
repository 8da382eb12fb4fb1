// A worker that speaks the real worker protocol over gRPC but trains
// nothing: it registers, heartbeats, joins generations, streams its
// assignments, reports each step with the digest of the ids it was given,
// and commits a checkpoint every few steps. It rides out coordinator
// restarts (UNAVAILABLE: retry; its incarnation is recovered) and
// generation changes (rejoin), and can be killed abruptly, which looks to
// the coordinator like a process that vanished. Integration tests use it to
// exercise the coordinator before (and independently of) the real worker.
//
// Thread-safety: thread-safe; the worker runs in its own threads.

#ifndef PODTRAIN_TESTS_FAKE_WORKER_H_
#define PODTRAIN_TESTS_FAKE_WORKER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/worker.grpc.pb.h"

namespace podtrain::testing {

class FakeWorker {
 public:
  struct Options {
    std::string worker_id;
    std::string address;  // the coordinator
    uint64_t incarnation = 0;
    int64_t checkpoint_every = 5;
    absl::Duration step_time = absl::Milliseconds(5);
  };

  explicit FakeWorker(Options options);
  ~FakeWorker();

  void Start();
  // Stops every thread at once, telling nobody (like SIGKILL).
  void Kill();
  // Waits until the worker saw its job end; false on timeout.
  bool WaitUntilFinished(absl::Duration timeout);

  // What the worker trained on, per generation: step -> ids.
  std::map<int64_t, std::map<int64_t, std::vector<int64_t>>> trained() const;
  std::vector<int64_t> generations() const;
  // Errors the coordinator returned that a correct worker never gets (e.g.
  // FAILED_PRECONDITION from the audit of its step reports).
  std::vector<std::string> unexpected_errors() const;
  // When the worker first heard of a generation newer than `generation`.
  absl::Time heard_of_newer_generation(int64_t generation) const;

 private:
  void Run();
  void HeartbeatLoop();
  bool Register();
  // Trains one generation; returns when it ends (or the job does).
  void TrainGeneration(const v1::JoinGenerationResponse& world);
  bool Stopped() const { return killed_.load() || finished_.load(); }
  void Unexpected(const std::string& what, const grpc::Status& status);

  const Options options_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  std::atomic<bool> killed_{false};
  std::atomic<bool> finished_{false};
  std::atomic<int64_t> generation_{0};
  std::atomic<int64_t> announced_generation_{0};
  std::thread runner_;
  std::thread heartbeater_;

  mutable absl::Mutex mu_;
  std::map<int64_t, std::map<int64_t, std::vector<int64_t>>> trained_
      ABSL_GUARDED_BY(mu_);
  std::vector<int64_t> generations_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> unexpected_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, absl::Time> heard_newer_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* stream_context_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace podtrain::testing

#endif  // PODTRAIN_TESTS_FAKE_WORKER_H_
