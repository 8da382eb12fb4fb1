// The coordinator's Prometheus metrics. Per-job series carry a `job_name`
// label (not `job`, which Prometheus sets to the scrape job)
// and are removed when the job ends, so the label stays bounded by the jobs
// alive at once.
//
//   podtrain_coordinator_jobs{state}                      gauge
//   podtrain_coordinator_workers{state=free|joining|member} gauge
//   podtrain_coordinator_generation_changes_total{cause=first|voluntary|involuntary}
//   podtrain_coordinator_rpc_duration_seconds{method}     histogram
//   podtrain_coordinator_journal_append_duration_seconds  histogram
//   podtrain_coordinator_checkpoint_commit_duration_seconds histogram
//       (first rank's vote to the durable commit)
//   podtrain_coordinator_committed_examples_total         counter
//   podtrain_coordinator_audit_mismatches_total           counter
//   Per job (label job_name), gauges unless said otherwise:
//   podtrain_job_committed_step     head of the committed lineage
//   podtrain_job_step               last step every rank of the world reported
//   podtrain_job_epoch              epochs of the committed lineage
//                                   (fractional)
//   podtrain_job_world_size, podtrain_job_generation
//   podtrain_job_assignment_lookahead_steps
//   podtrain_job_examples_total     counter: examples the ranks reported
//                                   trained (steps redone after a restart
//                                   count again; rate() = examples/s)
//   podtrain_job_restarts           involuntary restarts so far
//   podtrain_job_restarts_remaining restarts left in the restart budget
//   podtrain_job_checkpoint_interval_steps  the spec's checkpoint interval
//   podtrain_job_last_checkpoint_timestamp_seconds  Unix time since which the
//       committed lineage has not advanced: the last commit, or the start of
//       the first world before any commit (absent before the first world)
//
// Thread-safety: thread-safe (prometheus-cpp metrics are; the method cache
// has its own mutex).

#ifndef PODTRAIN_COORDINATOR_COORDINATOR_METRICS_H_
#define PODTRAIN_COORDINATOR_COORDINATOR_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/job.pb.h"

namespace podtrain::coordinator {

struct JobProgress {
  int64_t committed_step = -1;
  // The last step every rank of the current world has reported (the
  // committed step when no world trains).
  int64_t step = -1;
  double epoch = 0;
  int64_t world_size = 0;
  int64_t generation = 0;
  int64_t lookahead_steps = 0;
  int64_t restarts = 0;
  int64_t restarts_remaining = 0;
  int64_t checkpoint_interval_steps = 0;
  // Since when the committed lineage has not advanced; unset before the
  // job's first world formed.
  std::optional<absl::Time> lineage_time;
};

class CoordinatorMetrics {
 public:
  explicit CoordinatorMetrics(std::shared_ptr<prometheus::Registry> registry);

  const std::shared_ptr<prometheus::Registry>& registry() const {
    return registry_;
  }

  void SetJobsInState(v1::JobState state, int64_t count);
  void SetWorkers(int64_t free, int64_t joining, int64_t member);
  void CountGenerationChange(const std::string& cause);
  prometheus::Histogram& Rpc(const std::string& method);
  prometheus::Histogram& journal_append() { return *journal_append_; }
  prometheus::Histogram& checkpoint_commit() { return *checkpoint_commit_; }
  void CountCommittedExamples(int64_t examples);
  void CountAuditMismatch() { audit_mismatches_->Increment(); }
  void CountRejectedCheckpoint() { rejected_checkpoints_->Increment(); }
  void SetJobProgress(const std::string& job, const JobProgress& progress);
  // Examples a rank of `job` reported trained in one step.
  void CountJobExamples(const std::string& job, int64_t examples);
  void RemoveJob(const std::string& job);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Gauge>& workers_;
  prometheus::Family<prometheus::Counter>& generation_changes_;
  prometheus::Family<prometheus::Histogram>& rpc_;
  prometheus::Histogram* journal_append_;
  prometheus::Histogram* checkpoint_commit_;
  prometheus::Counter* committed_examples_;
  prometheus::Counter* audit_mismatches_;
  prometheus::Counter* rejected_checkpoints_;
  prometheus::Family<prometheus::Gauge>& job_committed_step_;
  prometheus::Family<prometheus::Gauge>& job_epoch_;
  prometheus::Family<prometheus::Gauge>& job_world_size_;
  prometheus::Family<prometheus::Gauge>& job_generation_;
  prometheus::Family<prometheus::Gauge>& job_lookahead_;
  prometheus::Family<prometheus::Gauge>& job_step_;
  prometheus::Family<prometheus::Counter>& job_examples_;
  prometheus::Family<prometheus::Gauge>& job_restarts_;
  prometheus::Family<prometheus::Gauge>& job_restarts_remaining_;
  prometheus::Family<prometheus::Gauge>& job_checkpoint_interval_;
  prometheus::Family<prometheus::Gauge>& job_last_checkpoint_;

  absl::Mutex mu_;
  std::map<std::string, prometheus::Histogram*> rpc_by_method_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace podtrain::coordinator

#endif  // PODTRAIN_COORDINATOR_COORDINATOR_METRICS_H_
