#include "worker/worker_metrics.h"

#include <string>

#include "common/metrics.h"

namespace podtrain::worker {
namespace {

prometheus::Histogram* Histogram(prometheus::Registry& registry,
                                 const std::string& name,
                                 const std::string& help) {
  return &prometheus::BuildHistogram()
              .Name(name)
              .Help(help)
              .Register(registry)
              .Add({}, LatencyBuckets());
}

prometheus::Gauge* Gauge(prometheus::Registry& registry,
                         const std::string& name, const std::string& help) {
  return &prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add(
      {});
}

prometheus::Counter* Counter(prometheus::Registry& registry,
                             const std::string& name, const std::string& help) {
  return &prometheus::BuildCounter()
              .Name(name)
              .Help(help)
              .Register(registry)
              .Add({});
}

}  // namespace

WorkerMetrics::WorkerMetrics(std::shared_ptr<prometheus::Registry> r)
    : registry(std::move(r)),
      step_seconds(Histogram(*registry, "podtrain_worker_step_duration_seconds",
                             "Wall time of one optimizer step on this rank.")),
      data_wait_seconds(Histogram(*registry,
                                  "podtrain_worker_data_wait_seconds",
                                  "Time a step waited for its input batch.")),
      allreduce_seconds(
          Histogram(*registry, "podtrain_worker_allreduce_duration_seconds",
                    "Time inside gradient all-reduce calls per step, "
                    "overlapped with backward or not.")),
      allreduce_wait_seconds(Histogram(
          *registry, "podtrain_worker_allreduce_wait_seconds",
          "Time a step waited for its gradient all-reduce after backward: "
          "the part backward did not hide.")),
      allreduce_bytes(Counter(*registry,
                              "podtrain_worker_allreduce_bytes_total",
                              "Bytes all-reduced.")),
      examples(Counter(*registry, "podtrain_worker_examples_total",
                       "Examples this rank trained on.")),
      examples_per_second(
          Gauge(*registry, "podtrain_worker_examples_per_second",
                "Global-batch examples per second at the last step.")),
      loss(Gauge(*registry, "podtrain_worker_loss",
                 "Mean loss of this rank's examples at the last step.")),
      learning_rate(Gauge(*registry, "podtrain_worker_learning_rate",
                          "Learning rate of the last step.")),
      gradient_norm(Gauge(*registry, "podtrain_worker_gradient_norm",
                          "Global gradient L2 norm, sampled every 16 steps.")),
      checkpoint_write_seconds(Histogram(
          *registry, "podtrain_worker_checkpoint_write_duration_seconds",
          "Time to write a checkpoint durably (rank 0).")),
      step(Gauge(*registry, "podtrain_worker_step", "Last step trained.")),
      generation(Gauge(*registry, "podtrain_worker_generation",
                       "The generation this worker trains in.")) {}

}  // namespace podtrain::worker
