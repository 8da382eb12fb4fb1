// The coverage audit: proves from what the workers actually trained on that,
// in a job's committed lineage, every example id appears exactly once per
// epoch. Inputs are the coordinator's journal (the job, its dataset shape,
// and every committed checkpoint with the generation that committed it) and
// the workers' consumption logs (worker/consumption_log.h: the ids each rank
// trained on at each step).
//
// The lineage: every generation trains from a start the journal records.
// GenerationStarted(g) starts g right after the head committed at that
// moment, from its checkpoint (or from scratch when nothing is committed);
// GenerationResumed(g, h, p) instead starts g right after step h from the
// model generation p held in memory, so p's steps up to h are g's past. The
// audit walks back from the last surviving commit: its committer g trained
// the steps (start(g), head]; before them come the steps of the generation g
// started from (the one that committed that checkpoint, up to it, or p, up
// to h), and so on down to the start of the job. Rejected commits are out of
// the lineage, and steps trained on a branch that no later start continued
// (a generation that failed before its next commit, unless its held state
// was resumed) are not in it: their log records are ignored, even when they
// cover the same stream positions as the lineage's. A walk the journal cannot
// explain (a generation with no start, a range that ends before its start, a
// commit inside another generation's range) is reported as a problem, and
// the steps it cannot attribute count as untrained. For each lineage step the
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
