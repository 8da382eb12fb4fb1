#include "worker/collectives_test_util.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/status_macros.h"
#include "dataset/file_util.h"
#include "dataset/manifest.h"
#include "dataset/synthetic.h"
#include "services/channel.h"
#include "worker/gloo_communicator.h"

namespace podtrain::worker::testing {
namespace {

std::string TempPath(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  return absl::StrCat(base != nullptr ? base : "/tmp", "/", name);
}

}  // namespace

absl::StatusOr<std::unique_ptr<TestCoordinator>> TestCoordinator::Start(
    const std::string& bearer_token) {
  // Tests in one binary may start several: each gets its own files.
  static std::atomic<int> instances{0};
  const std::string tag = absl::StrCat("collectives-", instances++);

  const std::string dataset_dir = TempPath(tag + "-data");
  dataset::Schema schema;
  schema.height = 28;
  schema.width = 28;
  schema.channels = 1;
  schema.num_classes = 10;
  RETURN_IF_ERROR(dataset::CreateDirectories(dataset_dir));
  RETURN_IF_ERROR(dataset::WriteManifest(
      dataset_dir, dataset::MakeSyntheticManifest("d", 1000, 10, schema)));

  services::CoordinatorServerOptions options;
  options.address = "127.0.0.1:0";
  options.metrics_address = "";
  options.bearer_token = bearer_token;
  options.coordinator.journal_path = TempPath(tag + ".journal");
  std::remove(options.coordinator.journal_path.c_str());
  auto coordinator = std::unique_ptr<TestCoordinator>(new TestCoordinator());
  ASSIGN_OR_RETURN(coordinator->server_,
                   services::CoordinatorServer::Start(options, RealClock()));

  v1::CreateJobRequest request;
  v1::JobSpec& spec = *request.mutable_spec();
  spec.set_dataset(dataset_dir);
  spec.mutable_model()->set_name("mlp");
  spec.mutable_model()->add_hidden(8);
  spec.mutable_optimizer()->mutable_sgd()->set_momentum(0.9);
  spec.mutable_schedule()->set_base_learning_rate(0.1);
  spec.set_global_batch(10);
  spec.set_steps(5);
  spec.mutable_checkpoint()->set_directory(TempPath(tag + "-ckpt"));
  ASSIGN_OR_RETURN(const v1::Job job,
                   coordinator->server_->coordinator()->CreateJob(request));
  coordinator->job_ = job.name();
  coordinator->channel_ =
      services::MakeCoordinatorChannel(coordinator->address());
  return coordinator;
}

std::string TestCoordinator::store_prefix(int64_t generation) const {
  return absl::StrCat(job_, "/generation/", generation, "/");
}

std::string TestCoordinator::address() const {
  return absl::StrCat("127.0.0.1:", server_->port());
}

std::shared_ptr<CoordinatorStore> TestCoordinator::NewStore(
    absl::Duration timeout, int64_t generation, const std::string& token) {
  return std::make_shared<CoordinatorStore>(channel_, store_prefix(generation),
                                            token, timeout);
}

void RunRanks(int world_size, const std::function<void(int rank)>& body) {
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world_size; ++rank) {
    threads.emplace_back([&body, rank] { body(rank); });
  }
  for (std::thread& thread : threads) thread.join();
}

absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> ConnectGlooWorld(
    TestCoordinator& coordinator, int world_size, absl::Duration timeout,
    int64_t generation) {
  // Default-constructed StatusOr is UNKNOWN until its rank reports.
  std::vector<absl::StatusOr<std::unique_ptr<Communicator>>> results(
      world_size);
  RunRanks(world_size, [&](int rank) {
    CommunicatorOptions options;
    options.rank = rank;
    options.world_size = world_size;
    options.store_prefix = coordinator.store_prefix(generation);
    options.timeout = timeout;
    results[rank] =
        ConnectGloo(options, coordinator.NewStore(timeout, generation));
  });
  std::vector<std::unique_ptr<Communicator>> world;
  for (auto& result : results) {
    if (!result.ok()) return result.status();
    world.push_back(*std::move(result));
  }
  return world;
}

}  // namespace podtrain::worker::testing
