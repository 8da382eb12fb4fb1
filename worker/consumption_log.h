// The consumption log: what this worker actually trained on, step by step.
// The coverage audit (podtrain-audit) rebuilds the committed lineage from
// these logs and the coordinator's journal and proves, epoch by epoch, that
// every example id was trained on exactly once.
//
// One file per worker process (incarnation), append-only, under the job's
// checkpoint directory: <root>/consumed/<worker_id>.<incarnation>.log.
// Record: u32 payload length, u32 CRC32 of the payload, payload = u64
// generation, u64 step, u32 rank, u32 world size, u32 id count, u64 ids...
// (little-endian). The worker appends a step's record before its gradients
// reach any peer (so a step some survivor completed, and may hand to the
// next world, has every rank's record written), and syncs the log before it
// votes for a checkpoint, so every committed step's records are durable; a
// process killed mid-write leaves at most a torn last record, which the
// reader reports and skips. A node that loses power loses its records since
// the last sync: when the next world resumed from a survivor's state past
// them, the audit reports those steps as unverified (it never passes them).
//
// Thread-safety: thread-compatible.

#ifndef PODTRAIN_WORKER_CONSUMPTION_LOG_H_
#define PODTRAIN_WORKER_CONSUMPTION_LOG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace podtrain::worker {

struct ConsumedStep {
  int64_t generation = 0;
  int64_t step = 0;
  int32_t rank = 0;
  int32_t world_size = 0;
  std::vector<int64_t> ids;
};

class ConsumptionLogWriter {
 public:
  // Creates (or appends to) the log at `path`, creating its directory.
  static absl::StatusOr<std::unique_ptr<ConsumptionLogWriter>> Open(
      const std::string& path);
  ~ConsumptionLogWriter();

  absl::Status Append(const ConsumedStep& step);
  // Everything appended is on stable storage when this returns OK.
  absl::Status Sync();

  const std::string& path() const { return path_; }

 private:
  ConsumptionLogWriter(std::string path, int fd)
      : path_(std::move(path)), fd_(fd) {}
  const std::string path_;
  const int fd_;
};

struct ConsumptionLog {
  std::vector<ConsumedStep> steps;
  // Set when the file ends in a torn record (a writer killed mid-write).
  bool torn_tail = false;
};

// Reads a log. DATA_LOSS naming the file and offset for a damaged record
// that is not the last one.
absl::StatusOr<ConsumptionLog> ReadConsumptionLog(const std::string& path);

// The log file of one worker process under a job's checkpoint root.
std::string ConsumptionLogPath(const std::string& job_root,
                               const std::string& worker_id,
                               uint64_t incarnation);

}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_CONSUMPTION_LOG_H_
