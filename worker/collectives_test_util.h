// Test helpers for the collectives: a real coordinator (in-process gRPC
// server on loopback) with one job, whose store serves the collective
// bootstrap exactly as in production, and a way to form a Gloo world of
// several ranks, each rank a thread with its own device and context.
//
// Thread-safety: TestCoordinator's accessors are thread-safe (ranks share
// it); ConnectGlooWorld runs its own threads and joins them.

#ifndef PODTRAIN_WORKER_COLLECTIVES_TEST_UTIL_H_
#define PODTRAIN_WORKER_COLLECTIVES_TEST_UTIL_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/coordinator_server.h"
#include "worker/collectives.h"
#include "worker/coordinator_store.h"

namespace podtrain::worker::testing {

class TestCoordinator {
 public:
  // Starts a coordinator (journal under TEST_TMPDIR) and creates one job on
  // a synthetic 28x28x1, 10-class dataset, so that "<job>/generation/<g>/"
  // is a valid store prefix. With `bearer_token`, calls must carry it.
  static absl::StatusOr<std::unique_ptr<TestCoordinator>> Start(
      const std::string& bearer_token = "");

  const std::string& job() const { return job_; }
  std::string store_prefix(int64_t generation = 1) const;
  std::string address() const;
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  services::CoordinatorServer& server() { return *server_; }

  // A store on store_prefix(generation), authenticated with `token`.
  std::shared_ptr<CoordinatorStore> NewStore(absl::Duration timeout,
                                             int64_t generation = 1,
                                             const std::string& token = "");

 private:
  std::unique_ptr<services::CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::string job_;
};

// Runs body(rank) for rank in [0, world_size) on one thread each; joins.
void RunRanks(int world_size, const std::function<void(int rank)>& body);

// Forms a Gloo world of `world_size` ranks (threads) through the store of
// `coordinator`'s generation `generation`. Returns the communicators by rank,
// or the first rank's error.
absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> ConnectGlooWorld(
    TestCoordinator& coordinator, int world_size, absl::Duration timeout,
    int64_t generation = 1);

}  // namespace podtrain::worker::testing

#endif  // PODTRAIN_WORKER_COLLECTIVES_TEST_UTIL_H_
