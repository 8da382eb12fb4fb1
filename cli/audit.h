// The coverage audit: proves from what the workers actually trained on that,
// in a job's committed lineage, every example id appears exactly once per
// epoch. Inputs are the coordinator's journal (the job, its dataset shape,
// and every committed checkpoint with the generation that committed it) and
// the workers' consumption logs (worker/consumption_log.h: the ids each rank
// trained on at each step).
//
// The lineage: commits c1 < c2 < ... were made by generations g1, g2, ...;
// the steps (c[i-1], c[i]] were trained by generation g[i] (a generation
// resumes right after the commit before its own first one). Steps trained
// after the last commit of a generation that then failed are not in the
// lineage, and their log records are ignored. For each lineage step the
// audit takes every rank's record of that generation, places rank r's ids at
// the stream positions of its slice (sampler/assignment.h: the split of a
// step over W ranks), and counts ids per epoch (position / N). It does not
// recompute the permutation: it checks what was trained.
//
// Thread-safety: functions without shared state.

#ifndef PODTRAIN_CLI_AUDIT_H_
#define PODTRAIN_CLI_AUDIT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace podtrain::cli {

struct EpochAudit {
  int64_t epoch = 0;
  bool complete = false;  // the lineage covers the whole epoch
  int64_t examples_seen = 0;
  int64_t missing = 0;     // ids never trained on (complete epochs only)
  int64_t duplicates = 0;  // extra occurrences beyond the first
  std::vector<int64_t> missing_ids;    // the first few, for the report
  std::vector<int64_t> duplicate_ids;  // the first few
};

struct AuditReport {
  std::string job;
  int64_t examples_per_epoch = 0;
  int64_t global_batch = 0;
  int64_t lineage_steps = 0;  // committed steps audited (0..last commit)
  int64_t commits = 0;
  int64_t generations = 0;  // distinct generations in the lineage
  std::vector<EpochAudit> epochs;
  // Steps whose records are missing or inconsistent (the audit cannot vouch
  // for them); each counts as a failure.
  std::vector<std::string> problems;

  int64_t missing() const;
  int64_t duplicates() const;
  bool exact() const {
    return missing() == 0 && duplicates() == 0 && problems.empty();
  }
};

struct AuditOptions {
  std::string journal_path;
  std::string job;  // "jobs/000001"
  // Directory of the consumption logs; default: the job's checkpoint
  // directory + "/<id>/consumed".
  std::string consumed_dir;
};

absl::StatusOr<AuditReport> AuditJob(const AuditOptions& options);

// Human-readable report, one line per epoch, then a summary line:
// "audit job=<id> epochs=<complete> steps=<n> missing=<m> duplicates=<d>".
std::string FormatAuditReport(const AuditReport& report);

}  // namespace podtrain::cli

#endif  // PODTRAIN_CLI_AUDIT_H_
