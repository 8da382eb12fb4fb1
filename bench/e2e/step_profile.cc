// podtrain's world-1 training step taken apart, against a bare libtorch step
// in the same process (issue 8): where a podtrain step spends the time a bare
// step does not. The two kinds of step alternate in rounds, so load from
// other processes on a shared machine hits both alike.
//
//   step_profile --data=DIR/train [--batch=256] [--rounds=8] [--steps=25]
//
// The podtrain side runs the agent's step piece by piece with the worker's
// own libraries: the input pipeline on its thread, BuildModel's MLP
// 784-1024-1024-10, SummedLoss, GradientBuckets over a world of one (the
// identity, as Gloo's is), the agent's stop-flag all-reduce, the gradient-
// norm metric, the SGD+Nesterov optimizer, the consumption log. The bare side
// is bench/e2e:gemm_peak's step (torch::nn + torch::optim::SGD). Prints
// the mean milliseconds of every piece and of both steps.

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "common/blas_env.h"
#include "dataset/dataset.h"
#include "proto/job.pb.h"
#include "sampler/assignment.h"
#include "worker/collectives.h"
#include "worker/consumption_log.h"
#include "worker/gradient_buckets.h"
#include "worker/input_pipeline.h"
#include "worker/model.h"
#include "worker/optimizer.h"
#include "worker/schedule.h"

ABSL_FLAG(std::string, data, "", "a podtrain dataset directory (MANIFEST)");
ABSL_FLAG(int64_t, batch, 256, "examples per step");
ABSL_FLAG(int, rounds, 8, "rounds of (bare steps, podtrain steps)");
ABSL_FLAG(int, steps, 25, "steps of each kind per round");
ABSL_FLAG(std::string, log, "/tmp/step_profile.consumed.log",
          "the consumption log written (truncated first)");

namespace podtrain::worker {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point since) {
  return std::chrono::duration<double, std::milli>(Clock::now() - since)
      .count();
}

// A world of one, as Gloo's: every collective is the identity.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  absl::Status AllReduceSum(torch::Tensor&) override {
    return absl::OkStatus();
  }
  absl::Status Broadcast(torch::Tensor&, int) override {
    return absl::OkStatus();
  }
  absl::Status Barrier() override { return absl::OkStatus(); }
  void Abort() override {}
};

// Accumulates the mean ms of named phases, in first-seen order.
class Phases {
 public:
  void Add(const std::string& name, double ms) {
    if (sums_.emplace(name, 0).second) order_.push_back(name);
    sums_[name] += ms;
  }
  void Print(int64_t steps) const {
    for (const std::string& name : order_) {
      std::printf("  %-34s %8.3f ms\n", name.c_str(), sums_.at(name) / steps);
    }
  }

 private:
  std::vector<std::string> order_;
  std::map<std::string, double> sums_;
};

int Main() {
  // One thread for libtorch and for OpenBLAS's own pool, as the worker runs.
  torch::set_num_threads(1);
  podtrain::SetBlasThreads(1);
  const int64_t batch_size = absl::GetFlag(FLAGS_batch);
  auto data = dataset::Dataset::Open(absl::GetFlag(FLAGS_data));
  if (!data.ok()) {
    std::fprintf(stderr, "%s\n", data.status().ToString().c_str());
    return 1;
  }
  const dataset::Schema& schema = (*data)->manifest().schema;

  // --- podtrain's side, set up as the agent does ---------------------------
  v1::JobSpec spec;
  spec.mutable_model()->set_name("mlp");
  spec.mutable_model()->add_hidden(1024);
  spec.mutable_model()->add_hidden(1024);
  spec.mutable_model()->set_num_classes(10);
  spec.mutable_model()->set_loss(v1::ModelSpec::SOFTMAX_CROSS_ENTROPY);
  spec.mutable_optimizer()->mutable_sgd()->set_momentum(0.9);
  spec.mutable_optimizer()->mutable_sgd()->set_nesterov(true);
  spec.mutable_schedule()->set_base_learning_rate(0.05);
  spec.mutable_schedule()->set_decay(v1::ScheduleSpec::COSINE);
  auto model = BuildModel(spec.model(),
                          {schema.height, schema.width, schema.channels}, 42);
  if (!model.ok()) return 1;
  ParamGroups params = GroupParameters(**model);
  auto optimizer = MakeOptimizer(spec.optimizer(), params);
  if (!optimizer.ok()) return 1;
  LocalCommunicator communicator;
  GradientBuckets buckets((*model)->parameters(), &communicator);
  std::remove(absl::GetFlag(FLAGS_log).c_str());
  auto consumed = ConsumptionLogWriter::Open(absl::GetFlag(FLAGS_log));
  if (!consumed.ok()) return 1;
  const int64_t total_steps = 1'000'000;
  int64_t next_assignment = 0;
  InputPipeline pipeline(
      data->get(), /*sampler=*/nullptr,
      [&]() -> absl::StatusOr<std::optional<v1::StepAssignment>> {
        v1::StepAssignment assignment;
        assignment.set_step(next_assignment);
        for (int64_t k = 0; k < batch_size; ++k) {
          assignment.add_example_ids((next_assignment * batch_size + k) %
                                     (*data)->num_examples());
        }
        ++next_assignment;
        return assignment;
      },
      /*depth=*/4);

  Phases phases;
  int64_t step = 0;
  const auto podtrain_step = [&] {
    Clock::time_point t = Clock::now();
    const Clock::time_point start = t;
    const auto lap = [&](const char* name) {
      phases.Add(name, Ms(t));
      t = Clock::now();
    };
    absl::Duration waited;
    absl::StatusOr<Batch> batch = pipeline.Next(&waited);
    if (!batch.ok()) std::abort();
    lap("input wait");
    (*model)->zero_grad();
    lap("zero_grad");
    const torch::Tensor logits = (*model)->forward(batch->images);
    const torch::Tensor local_loss =
        SummedLoss(logits, batch->labels, spec.model().loss());
    lap("forward + loss");
    (local_loss / static_cast<double>(batch_size)).backward();
    lap("backward");
    if (!buckets.FinishReduction().ok()) std::abort();
    lap("finish reduction");
    torch::Tensor stop = torch::tensor({0.0f});
    if (!communicator.AllReduceSum(stop).ok()) std::abort();
    const bool stop_here = stop.item<float>() > 0;
    (void)stop_here;
    lap("stop flag all-reduce");
    const double learning_rate =
        LearningRate(spec.schedule(), step, total_steps);
    const double norm = GlobalGradNorm(params);
    (void)norm;
    lap("gradient norm metric");
    (*optimizer)->Step(learning_rate);
    lap("optimizer step");
    if (!(*consumed)->Append({1, step, 0, 1, batch->ids}).ok()) {
      std::abort();
    }
    lap("consumption log append");
    const double mean_loss = local_loss.item<double>() / batch_size;
    (void)mean_loss;
    const uint64_t digest = sampler::ExampleDigest(batch->ids);
    (void)digest;
    lap("loss item + digest");
    phases.Add("= podtrain step", Ms(start));
    t = Clock::now();
    batch = absl::CancelledError("");  // frees the batch, as the loop does
    lap("free the batch");
    ++step;
  };

  // --- the bare step, as bench/e2e:gemm_peak -------------------------------
  torch::nn::Sequential bare(torch::nn::Linear(784, 1024), torch::nn::ReLU(),
                             torch::nn::Linear(1024, 1024), torch::nn::ReLU(),
                             torch::nn::Linear(1024, 10));
  torch::optim::SGD sgd(
      bare->parameters(),
      torch::optim::SGDOptions(0.01).momentum(0.9).nesterov(true));
  const torch::Tensor images = torch::rand({batch_size, 784});
  const torch::Tensor labels = torch::randint(0, 10, {batch_size});
  const auto bare_step = [&] {
    const Clock::time_point start = Clock::now();
    sgd.zero_grad();
    torch::Tensor loss =
        torch::nn::functional::cross_entropy(bare->forward(images), labels);
    loss.backward();
    sgd.step();
    phases.Add("= bare step", Ms(start));
  };

  for (int i = 0; i < 3; ++i) {  // warm-up, not counted
    bare_step();
    podtrain_step();
  }
  phases = Phases();
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int steps = absl::GetFlag(FLAGS_steps);
  for (int round = 0; round < rounds; ++round) {
    for (int i = 0; i < steps; ++i) bare_step();
    for (int i = 0; i < steps; ++i) podtrain_step();
  }
  std::printf("mean over %d steps of each kind, batch %ld:\n", rounds * steps,
              static_cast<long>(batch_size));
  phases.Print(static_cast<int64_t>(rounds) * steps);
  pipeline.Cancel();
  return 0;
}

}  // namespace
}  // namespace podtrain::worker

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return podtrain::worker::Main();
}
