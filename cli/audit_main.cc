// podtrain-audit: proves (or refutes) exactly-once per epoch for a job, from
// the coordinator's journal and the workers' consumption logs.
//
//   podtrain-audit --journal=PATH --job=jobs/000001 [--consumed=DIR]
//
// Prints one line per epoch and a summary line; exits 0 only when every
// complete epoch holds every example exactly once and no step is
// unaccounted for.

#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "cli/audit.h"
#include "common/logging.h"

ABSL_FLAG(std::string, journal, "", "the coordinator's journal (SQLite)");
ABSL_FLAG(std::string, job, "", "the job, e.g. jobs/000001");
ABSL_FLAG(std::string, consumed, "",
          "consumption log directory (default: from the job's checkpoint "
          "directory)");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "podtrain-audit --journal=PATH --job=jobs/NNNNNN [--consumed=DIR]");
  absl::ParseCommandLine(argc, argv);
  podtrain::InitLogging(argv[0]);
  podtrain::cli::AuditOptions options;
  options.journal_path = absl::GetFlag(FLAGS_journal);
  options.job = absl::GetFlag(FLAGS_job);
  options.consumed_dir = absl::GetFlag(FLAGS_consumed);
  if (options.journal_path.empty() || options.job.empty()) {
    std::cerr << "podtrain-audit: --journal and --job are required\n";
    return 2;
  }
  auto report = podtrain::cli::AuditJob(options);
  if (!report.ok()) {
    std::cerr << "podtrain-audit: " << report.status().message() << "\n";
    return 1;
  }
  std::cout << podtrain::cli::FormatAuditReport(*report);
  return report->exact() ? 0 : 1;
}
