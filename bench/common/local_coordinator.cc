#include "bench/common/local_coordinator.h"

#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/status_macros.h"
#include "dataset/file_util.h"
#include "dataset/manifest.h"
#include "dataset/synthetic.h"
#include "services/channel.h"

namespace podtrain::bench {

v1::JobSpec ReferenceMlpSpec() {
  v1::JobSpec spec;
  spec.set_display_name("reference-mlp");
  spec.mutable_model()->set_name("mlp");
  spec.mutable_model()->add_hidden(1024);
  spec.mutable_model()->add_hidden(1024);
  spec.mutable_model()->set_num_classes(10);
  spec.mutable_model()->set_loss(v1::ModelSpec::SOFTMAX_CROSS_ENTROPY);
  spec.mutable_optimizer()->mutable_sgd()->set_momentum(0.9);
  spec.mutable_optimizer()->mutable_sgd()->set_nesterov(true);
  spec.mutable_schedule()->set_base_learning_rate(0.05);
  spec.set_global_batch(256);
  spec.set_epochs(5);
  spec.set_seed(42);
  spec.mutable_checkpoint()->set_interval_steps(100);
  spec.mutable_checkpoint()->set_keep(3);
  return spec;
}

absl::StatusOr<std::unique_ptr<LocalCoordinator>> LocalCoordinator::Start(
    const std::string& dir, v1::JobSpec spec, int64_t num_examples) {
  const std::string dataset_dir = dataset::JoinPath(dir, "dataset");
  dataset::Schema schema;
  schema.height = 28;
  schema.width = 28;
  schema.channels = 1;
  schema.num_classes = 10;
  RETURN_IF_ERROR(dataset::CreateDirectories(dataset_dir));
  RETURN_IF_ERROR(dataset::WriteManifest(
      dataset_dir,
      dataset::MakeSyntheticManifest("bench", num_examples, 10, schema)));

  services::CoordinatorServerOptions options;
  options.address = "127.0.0.1:0";
  options.metrics_address = "";
  options.coordinator.journal_path = dataset::JoinPath(dir, "journal.db");
  std::remove(options.coordinator.journal_path.c_str());
  auto coordinator = std::unique_ptr<LocalCoordinator>(new LocalCoordinator());
  ASSIGN_OR_RETURN(coordinator->server_,
                   services::CoordinatorServer::Start(options, RealClock()));
  v1::CreateJobRequest request;
  *request.mutable_spec() = std::move(spec);
  request.mutable_spec()->set_dataset(dataset_dir);
  ASSIGN_OR_RETURN(const v1::Job job,
                   coordinator->server_->coordinator()->CreateJob(request));
  coordinator->job_ = job.name();
  coordinator->channel_ =
      services::MakeCoordinatorChannel(coordinator->address());
  return coordinator;
}

std::string LocalCoordinator::address() const {
  return absl::StrCat("127.0.0.1:", server_->port());
}

}  // namespace podtrain::bench
