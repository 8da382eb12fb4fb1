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
//   podtrain_job_committed_step{job_name}, podtrain_job_epoch{job_name}
//   (fractional
//       epochs of the committed lineage), podtrain_job_world_size{job_name},
//       podtrain_job_generation{job_name},
//       podtrain_job_assignment_lookahead_steps{job_name}
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
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "proto/job.pb.h"

namespace podtrain::coordinator {

struct JobProgress {
  int64_t committed_step = -1;
  double epoch = 0;
  int64_t world_size = 0;
  int64_t generation = 0;
  int64_t lookahead_steps = 0;
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
  void SetJobProgress(const std::string& job, const JobProgress& progress);
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
  prometheus::Family<prometheus::Gauge>& job_committed_step_;
  prometheus::Family<prometheus::Gauge>& job_epoch_;
  prometheus::Family<prometheus::Gauge>& job_world_size_;
  prometheus::Family<prometheus::Gauge>& job_generation_;
  prometheus::Family<prometheus::Gauge>& job_lookahead_;

  absl::Mutex mu_;
  std::map<std::string, prometheus::Histogram*> rpc_by_method_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace podtrain::coordinator

#endif  // PODTRAIN_COORDINATOR_COORDINATOR_METRICS_H_
