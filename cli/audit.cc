#include "cli/audit.h"

#include <dirent.h>

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "coordinator/coordinator_state.h"
#include "coordinator/journal.h"
#include "sampler/assignment.h"
#include "worker/consumption_log.h"

namespace podtrain::cli {
namespace {

constexpr size_t kIdsToShow = 10;

// Where a generation's training began: right after `step`, from the
// checkpoint committed there (by `checkpoint_generation`; -1 is the very
// start) or, when `resumed`, from `from_generation`'s model held in memory
// after that step.
struct GenerationStart {
  int64_t step = -1;
  bool resumed = false;
  int64_t from_generation = 0;
  int64_t checkpoint_generation = 0;  // 0: no commit known at `step`
};

struct Lineage {
  const coordinator::JobRecord* job = nullptr;
  // Committed step -> the generation that committed it.
  std::map<int64_t, int64_t> commits;
  std::map<int64_t, GenerationStart> starts;  // by generation
};

// Steps [first, last] of the lineage, trained by `generation`.
struct Segment {
  int64_t first = 0;
  int64_t last = 0;
  int64_t generation = 0;
};

// Walks the lineage back from its head: a generation owns the steps from its
// start to where the walk entered it, and its start says whose steps come
// before (the committer of the checkpoint it loaded, or the generation whose
// held state it continued). Returns the segments oldest first; what it cannot
// explain goes to `problems`, and those steps are left out (so they count as
// missing rather than as silently vouched for).
std::vector<Segment> WalkLineage(const Lineage& lineage,
                                 std::vector<std::string>& problems) {
  std::vector<Segment> segments;
  if (lineage.commits.empty()) return segments;
  int64_t end = lineage.commits.rbegin()->first;
  int64_t generation = lineage.commits.rbegin()->second;
  // Every iteration either stops or strictly lowers `end`, so this ends.
  while (end >= 0) {
    auto it = lineage.starts.find(generation);
    if (it == lineage.starts.end()) {
      problems.push_back(
          absl::StrCat("steps 0-", end, ": the lineage reaches generation ",
                       generation, ", which never started in the journal"));
      break;
    }
    const GenerationStart& start = it->second;
    if (start.step >= end) {
      problems.push_back(absl::StrCat(
          "steps 0-", end, ": the lineage reaches generation ", generation,
          " at step ", end, " but it trained only after step ", start.step));
      break;
    }
    segments.push_back({start.step + 1, end, generation});
    // A commit inside the range must be this generation's own: another
    // generation's would mean the journal tells two stories of these steps.
    for (auto c = lineage.commits.upper_bound(start.step);
         c != lineage.commits.end() && c->first <= end; ++c) {
      if (c->second != generation) {
        problems.push_back(absl::StrCat(
            "step ", c->first, ": committed by generation ", c->second,
            " but in the lineage generation ", generation, " trained steps ",
            start.step + 1, "-", end));
      }
    }
    end = start.step;
    if (start.resumed) {
      generation = start.from_generation;
      continue;
    }
    if (end < 0) break;
    auto base = lineage.commits.find(end);
    if (base == lineage.commits.end() ||
        base->second != start.checkpoint_generation) {
      problems.push_back(
          absl::StrCat("steps 0-", end, ": generation ", generation,
                       " started from the checkpoint of step ", end,
                       ", which is no longer the lineage's commit there"));
      break;
    }
    generation = base->second;
  }
  std::reverse(segments.begin(), segments.end());
  return segments;
}

absl::StatusOr<std::vector<std::string>> LogFiles(const std::string& dir) {
  DIR* handle = opendir(dir.c_str());
  if (handle == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("no consumption logs: cannot open ", dir));
  }
  std::vector<std::string> files;
  while (dirent* entry = readdir(handle)) {
    const std::string name = entry->d_name;
    if (name.size() > 4 && name.substr(name.size() - 4) == ".log") {
      files.push_back(dir + "/" + name);
    }
  }
  closedir(handle);
  std::sort(files.begin(), files.end());
  return files;
}

using RecordKey = std::pair<int64_t, int64_t>;  // (generation, step)

absl::StatusOr<std::map<RecordKey, std::vector<worker::ConsumedStep>>>
ReadRecords(const std::vector<std::string>& files) {
  std::map<RecordKey, std::vector<worker::ConsumedStep>> records;
  for (const std::string& file : files) {
    ASSIGN_OR_RETURN(worker::ConsumptionLog log,
                     worker::ReadConsumptionLog(file));
    for (worker::ConsumedStep& step : log.steps) {
      records[{step.generation, step.step}].push_back(std::move(step));
    }
  }
  return records;
}

// The ranks' records of one lineage step, checked for a complete world.
absl::StatusOr<std::vector<const worker::ConsumedStep*>> RanksOf(
    const std::vector<worker::ConsumedStep>& records, int64_t generation,
    int64_t step) {
  const int32_t world = records.front().world_size;
  std::vector<const worker::ConsumedStep*> by_rank(world, nullptr);
  for (const worker::ConsumedStep& record : records) {
    if (record.world_size != world || record.rank < 0 || record.rank >= world) {
      return absl::DataLossError(
          absl::StrCat("step ", step, " generation ", generation,
                       ": records disagree on the world size"));
    }
    if (by_rank[record.rank] != nullptr) {
      return absl::DataLossError(absl::StrCat("step ", step, " generation ",
                                              generation, ": rank ",
                                              record.rank, " logged twice"));
    }
    by_rank[record.rank] = &record;
  }
  for (int32_t rank = 0; rank < world; ++rank) {
    if (by_rank[rank] == nullptr) {
      return absl::DataLossError(
          absl::StrCat("step ", step, " generation ", generation,
                       ": no record of rank ", rank, " of ", world));
    }
  }
  return by_rank;
}

}  // namespace

int64_t AuditReport::missing() const {
  int64_t total = 0;
  for (const EpochAudit& epoch : epochs) total += epoch.missing;
  return total;
}

int64_t AuditReport::duplicates() const {
  int64_t total = 0;
  for (const EpochAudit& epoch : epochs) total += epoch.duplicates;
  return total;
}

absl::StatusOr<AuditReport> AuditJob(const AuditOptions& options) {
  ASSIGN_OR_RETURN(auto journal,
                   coordinator::Journal::Open(options.journal_path));
  ASSIGN_OR_RETURN(const auto updates, journal->ReadAll());
  coordinator::CoordinatorState state;
  Lineage lineage;
  for (const auto& update : updates) {
    RETURN_IF_ERROR(state.Apply(update));
    if (update.has_generation_started() &&
        update.generation_started().name() == options.job) {
      GenerationStart start;
      start.step = state.FindJob(options.job)->resume_step;
      if (start.step >= 0) {
        auto base = lineage.commits.find(start.step);
        if (base != lineage.commits.end()) {
          start.checkpoint_generation = base->second;
        }
      }
      lineage.starts[update.generation_started().generation()] = start;
    }
    if (update.has_generation_resumed() &&
        update.generation_resumed().name() == options.job) {
      GenerationStart& start =
          lineage.starts[update.generation_resumed().generation()];
      start.step = update.generation_resumed().step();
      start.resumed = true;
      start.from_generation = update.generation_resumed().from_generation();
    }
    if (update.has_checkpoint_committed() &&
        update.checkpoint_committed().name() == options.job) {
      lineage.commits[update.checkpoint_committed().step()] =
          update.checkpoint_committed().generation();
    }
    if (update.has_checkpoint_rejected() &&
        update.checkpoint_rejected().name() == options.job) {
      // The rejected head leaves the lineage: the steps after the new head
      // count from the branch that trains them again.
      lineage.commits.erase(lineage.commits.upper_bound(
                                state.FindJob(options.job)->committed_step),
                            lineage.commits.end());
    }
  }
  lineage.job = state.FindJob(options.job);
  if (lineage.job == nullptr) {
    return absl::NotFoundError(absl::StrCat("no job named '", options.job,
                                            "' in ", options.journal_path));
  }
  const coordinator::JobRecord& job = *lineage.job;
  std::string consumed = options.consumed_dir;
  if (consumed.empty()) {
    consumed =
        absl::StrCat(job.spec.checkpoint().directory(), "/",
                     job.name.substr(job.name.find('/') + 1), "/consumed");
  }
  ASSIGN_OR_RETURN(const auto files, LogFiles(consumed));
  ASSIGN_OR_RETURN(const auto records, ReadRecords(files));

  AuditReport report;
  report.job = job.name;
  report.examples_per_epoch = job.examples_per_epoch();
  report.global_batch = job.spec.global_batch();
  report.commits = lineage.commits.size();
  const int64_t n = report.examples_per_epoch;
  const int64_t last =
      lineage.commits.empty() ? -1 : lineage.commits.rbegin()->first;
  report.lineage_steps = last + 1;
  const int64_t end_position = (last + 1) * report.global_batch;
  const int64_t epochs = (end_position + n - 1) / n;
  std::vector<std::vector<int32_t>> counts(epochs, std::vector<int32_t>(n, 0));
  std::set<int64_t> generations;
  for (const Segment& segment : WalkLineage(lineage, report.problems)) {
    generations.insert(segment.generation);
    for (int64_t step = segment.first; step <= segment.last; ++step) {
      auto it = records.find({segment.generation, step});
      if (it == records.end()) {
        report.problems.push_back(
            absl::StrCat("step ", step, ": no rank of generation ",
                         segment.generation, " logged it"));
        continue;
      }
      absl::StatusOr<std::vector<const worker::ConsumedStep*>> ranks =
          RanksOf(it->second, segment.generation, step);
      if (!ranks.ok()) {
        report.problems.push_back(std::string(ranks.status().message()));
        continue;
      }
      for (const worker::ConsumedStep* record : *ranks) {
        ASSIGN_OR_RETURN(
            const sampler::PositionRange slice,
            sampler::RankPositions(report.global_batch, step,
                                   record->world_size, record->rank));
        if (slice.size() != static_cast<int64_t>(record->ids.size())) {
          report.problems.push_back(absl::StrCat(
              "step ", step, " rank ", record->rank, ": ", record->ids.size(),
              " ids for a slice of ", slice.size()));
          continue;
        }
        for (size_t k = 0; k < record->ids.size(); ++k) {
          const int64_t id = record->ids[k];
          if (id < 0 || id >= n) {
            report.problems.push_back(absl::StrCat("step ", step, ": id ", id,
                                                   " outside [0, ", n, ")"));
            continue;
          }
          counts[(slice.begin + k) / n][id]++;
        }
      }
    }
  }
  report.generations = generations.size();
  for (int64_t e = 0; e < epochs; ++e) {
    EpochAudit epoch;
    epoch.epoch = e;
    epoch.complete = (e + 1) * n <= end_position;
    for (int64_t id = 0; id < n; ++id) {
      const int32_t c = counts[e][id];
      epoch.examples_seen += c;
      if (c > 1) {
        epoch.duplicates += c - 1;
        if (epoch.duplicate_ids.size() < kIdsToShow) {
          epoch.duplicate_ids.push_back(id);
        }
      }
      if (c == 0 && epoch.complete) {
        ++epoch.missing;
        if (epoch.missing_ids.size() < kIdsToShow) {
          epoch.missing_ids.push_back(id);
        }
      }
    }
    report.epochs.push_back(std::move(epoch));
  }
  return report;
}

std::string FormatAuditReport(const AuditReport& report) {
  std::string out = absl::StrCat(
      report.job, ": ", report.lineage_steps, " committed steps of ",
      report.global_batch, " examples, ", report.commits, " commits by ",
      report.generations, " generations; ", report.examples_per_epoch,
      " examples per epoch\n");
  int64_t complete = 0;
  for (const EpochAudit& epoch : report.epochs) {
    complete += epoch.complete;
    absl::StrAppend(&out, "epoch ", epoch.epoch,
                    epoch.complete ? "" : " (partial)", ": ",
                    epoch.examples_seen, " examples, ", epoch.missing,
                    " missing, ", epoch.duplicates, " duplicated");
    if (!epoch.missing_ids.empty()) {
      absl::StrAppend(&out, "; missing ids ",
                      absl::StrJoin(epoch.missing_ids, ","),
                      epoch.missing > kIdsToShow ? ",..." : "");
    }
    if (!epoch.duplicate_ids.empty()) {
      absl::StrAppend(&out, "; duplicated ids ",
                      absl::StrJoin(epoch.duplicate_ids, ","),
                      epoch.duplicates > kIdsToShow ? ",..." : "");
    }
    out += "\n";
  }
  for (const std::string& problem : report.problems) {
    absl::StrAppend(&out, "problem: ", problem, "\n");
  }
  absl::StrAppend(
      &out, "audit job=", report.job, " epochs=", complete,
      " steps=", report.lineage_steps, " missing=", report.missing(),
      " duplicates=", report.duplicates(), " problems=", report.problems.size(),
      report.exact() ? " EXACT" : " FAILED", "\n");
  return out;
}

}  // namespace podtrain::cli
