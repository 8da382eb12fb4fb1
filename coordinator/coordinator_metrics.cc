#include "coordinator/coordinator_metrics.h"

#include "common/metrics.h"

namespace podtrain::coordinator {
namespace {

prometheus::Family<prometheus::Gauge>& Gauge(prometheus::Registry& registry,
                                             const std::string& name,
                                             const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry);
}

}  // namespace

CoordinatorMetrics::CoordinatorMetrics(
    std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)),
      jobs_(Gauge(*registry_, "podtrain_coordinator_jobs",
                  "Jobs known to the coordinator, by state.")),
      workers_(Gauge(*registry_, "podtrain_coordinator_workers",
                     "Live workers: free, waiting in a rendezvous, or "
                     "members of a job's world.")),
      generation_changes_(
          prometheus::BuildCounter()
              .Name("podtrain_coordinator_generation_changes_total")
              .Help("Worlds formed, by cause: first, voluntary (growth, "
                    "preemption), involuntary (a lost worker).")
              .Register(*registry_)),
      rpc_(prometheus::BuildHistogram()
               .Name("podtrain_coordinator_rpc_duration_seconds")
               .Help("Time to serve a gRPC call (streams: a whole stream).")
               .Register(*registry_)),
      job_committed_step_(Gauge(*registry_, "podtrain_job_committed_step",
                                "Head of the job's committed lineage.")),
      job_epoch_(Gauge(*registry_, "podtrain_job_epoch",
                       "Epochs of the job's committed lineage (fractional).")),
      job_world_size_(Gauge(*registry_, "podtrain_job_world_size",
                            "Workers in the job's current generation.")),
      job_generation_(Gauge(*registry_, "podtrain_job_generation",
                            "The job's current generation.")),
      job_lookahead_(Gauge(*registry_,
                           "podtrain_job_assignment_lookahead_steps",
                           "Steps assigned ahead of the slowest rank.")),
      job_step_(Gauge(*registry_, "podtrain_job_step",
                      "Last step every rank of the job's world reported.")),
      job_examples_(prometheus::BuildCounter()
                        .Name("podtrain_job_examples_total")
                        .Help("Examples the job's ranks reported trained "
                              "(steps redone after a restart count again).")
                        .Register(*registry_)),
      job_restarts_(Gauge(*registry_, "podtrain_job_restarts",
                          "Involuntary restarts of the job so far.")),
      job_restarts_remaining_(
          Gauge(*registry_, "podtrain_job_restarts_remaining",
                "Restarts left in the job's restart budget.")),
      job_checkpoint_interval_(
          Gauge(*registry_, "podtrain_job_checkpoint_interval_steps",
                "Steps between the job's periodic checkpoints.")),
      job_last_checkpoint_(
          Gauge(*registry_, "podtrain_job_last_checkpoint_timestamp_seconds",
                "Unix time since which the committed lineage has not "
                "advanced: the last commit, or the start of the first "
                "world.")) {
  journal_append_ = &prometheus::BuildHistogram()
                         .Name(
                             "podtrain_coordinator_journal_append_duration_"
                             "seconds")
                         .Help("Time to make one state update durable.")
                         .Register(*registry_)
                         .Add({}, LatencyBuckets());
  checkpoint_commit_ =
      &prometheus::BuildHistogram()
           .Name("podtrain_coordinator_checkpoint_commit_duration_seconds")
           .Help("From the first rank's commit vote to the durable commit.")
           .Register(*registry_)
           .Add({}, LatencyBuckets());
  committed_examples_ =
      &prometheus::BuildCounter()
           .Name("podtrain_coordinator_committed_examples_total")
           .Help("Examples trained on in committed checkpoints, all jobs.")
           .Register(*registry_)
           .Add({});
  audit_mismatches_ =
      &prometheus::BuildCounter()
           .Name("podtrain_coordinator_audit_mismatches_total")
           .Help("Step reports whose examples differ from the assignment.")
           .Register(*registry_)
           .Add({});
  rejected_checkpoints_ =
      &prometheus::BuildCounter()
           .Name("podtrain_coordinator_rejected_checkpoints_total")
           .Help(
               "Committed checkpoints a worker could not load (corrupt, "
               "missing), taken out of their job's lineage.")
           .Register(*registry_)
           .Add({});
  for (int state = v1::QUEUED; state <= v1::CANCELLED; ++state) {
    SetJobsInState(static_cast<v1::JobState>(state), 0);
  }
  SetWorkers(0, 0, 0);
  for (const char* cause : {"first", "voluntary", "involuntary"}) {
    generation_changes_.Add({{"cause", cause}});
  }
}

void CoordinatorMetrics::SetJobsInState(v1::JobState state, int64_t count) {
  jobs_.Add({{"state", v1::JobState_Name(state)}}).Set(count);
}

void CoordinatorMetrics::SetWorkers(int64_t free, int64_t joining,
                                    int64_t member) {
  workers_.Add({{"state", "free"}}).Set(free);
  workers_.Add({{"state", "joining"}}).Set(joining);
  workers_.Add({{"state", "member"}}).Set(member);
}

void CoordinatorMetrics::CountGenerationChange(const std::string& cause) {
  generation_changes_.Add({{"cause", cause}}).Increment();
}

prometheus::Histogram& CoordinatorMetrics::Rpc(const std::string& method) {
  absl::MutexLock lock(&mu_);
  prometheus::Histogram*& histogram = rpc_by_method_[method];
  if (histogram == nullptr) {
    histogram = &rpc_.Add({{"method", method}}, LatencyBuckets());
  }
  return *histogram;
}

void CoordinatorMetrics::CountCommittedExamples(int64_t examples) {
  if (examples > 0) committed_examples_->Increment(examples);
}

void CoordinatorMetrics::SetJobProgress(const std::string& job,
                                        const JobProgress& progress) {
  job_committed_step_.Add({{"job_name", job}}).Set(progress.committed_step);
  job_epoch_.Add({{"job_name", job}}).Set(progress.epoch);
  job_world_size_.Add({{"job_name", job}}).Set(progress.world_size);
  job_generation_.Add({{"job_name", job}}).Set(progress.generation);
  job_lookahead_.Add({{"job_name", job}}).Set(progress.lookahead_steps);
  job_step_.Add({{"job_name", job}}).Set(progress.step);
  job_examples_.Add({{"job_name", job}});  // 0 from the start, for rate()
  job_restarts_.Add({{"job_name", job}}).Set(progress.restarts);
  job_restarts_remaining_.Add({{"job_name", job}})
      .Set(progress.restarts_remaining);
  job_checkpoint_interval_.Add({{"job_name", job}})
      .Set(progress.checkpoint_interval_steps);
  if (progress.lineage_time.has_value()) {
    job_last_checkpoint_.Add({{"job_name", job}})
        .Set(absl::ToDoubleSeconds(*progress.lineage_time - absl::UnixEpoch()));
  }
}

void CoordinatorMetrics::CountJobExamples(const std::string& job,
                                          int64_t examples) {
  if (examples > 0) job_examples_.Add({{"job_name", job}}).Increment(examples);
}

void CoordinatorMetrics::RemoveJob(const std::string& job) {
  for (auto* family :
       {&job_committed_step_, &job_epoch_, &job_world_size_, &job_generation_,
        &job_lookahead_, &job_step_, &job_restarts_, &job_restarts_remaining_,
        &job_checkpoint_interval_, &job_last_checkpoint_}) {
    auto& gauge = family->Add({{"job_name", job}});
    family->Remove(&gauge);
  }
  auto& examples = job_examples_.Add({{"job_name", job}});
  job_examples_.Remove(&examples);
}

}  // namespace podtrain::coordinator
