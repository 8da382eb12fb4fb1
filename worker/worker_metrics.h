// The worker's Prometheus metrics (served on /metrics by podtrain-worker):
//
//   podtrain_worker_step_duration_seconds    histogram
//   podtrain_worker_data_wait_seconds        histogram (blocked on input)
//   podtrain_worker_allreduce_duration_seconds  histogram (per step: time
//                                            inside gradient all-reduce calls,
//                                            overlapped with backward or not)
//   podtrain_worker_allreduce_wait_seconds   histogram (per step: the part
//                                            backward did not hide, the wait
//                                            after backward)
//   podtrain_worker_allreduce_bytes_total    counter
//   podtrain_worker_examples_total           counter (rate() = examples/s)
//   podtrain_worker_examples_per_second      gauge (last step)
//   podtrain_worker_loss                     gauge (last step, rank's mean)
//   podtrain_worker_learning_rate            gauge
//   podtrain_worker_gradient_norm            gauge (global, after the
//                                            all-reduce, every 16 steps)
//   podtrain_worker_checkpoint_write_duration_seconds  histogram
//   podtrain_worker_step, podtrain_worker_generation   gauges
//
// No labels beyond what the scrape adds (instance): one worker, one series.
//
// Thread-safety: thread-safe.

#ifndef PODTRAIN_WORKER_WORKER_METRICS_H_
#define PODTRAIN_WORKER_WORKER_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>

namespace podtrain::worker {

struct WorkerMetrics {
  explicit WorkerMetrics(std::shared_ptr<prometheus::Registry> registry);

  std::shared_ptr<prometheus::Registry> registry;
  prometheus::Histogram* step_seconds;
  prometheus::Histogram* data_wait_seconds;
  prometheus::Histogram* allreduce_seconds;
  prometheus::Histogram* allreduce_wait_seconds;
  prometheus::Counter* allreduce_bytes;
  prometheus::Counter* examples;
  prometheus::Gauge* examples_per_second;
  prometheus::Gauge* loss;
  prometheus::Gauge* learning_rate;
  prometheus::Gauge* gradient_norm;
  prometheus::Histogram* checkpoint_write_seconds;
  prometheus::Gauge* step;
  prometheus::Gauge* generation;
};

}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_WORKER_METRICS_H_
