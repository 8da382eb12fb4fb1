#include "worker/consumption_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "dataset/file_util.h"
#include "dataset/record_shard.h"

namespace podtrain::worker {
namespace {

void PutU32(std::string* out, uint32_t value) {
  for (int shift = 0; shift < 32; shift += 8) out->push_back(value >> shift);
}
void PutU64(std::string* out, uint64_t value) {
  for (int shift = 0; shift < 64; shift += 8) out->push_back(value >> shift);
}
uint32_t GetU32(const char* p) {
  uint32_t value = 0;
  for (int i = 3; i >= 0; --i)
    value = (value << 8) | static_cast<uint8_t>(p[i]);
  return value;
}
uint64_t GetU64(const char* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i)
    value = (value << 8) | static_cast<uint8_t>(p[i]);
  return value;
}

constexpr size_t kFixedPayload = 8 + 8 + 4 + 4 + 4;

}  // namespace

std::string ConsumptionLogPath(const std::string& job_root,
                               const std::string& worker_id,
                               uint64_t incarnation) {
  return absl::StrCat(job_root, "/consumed/", worker_id, ".", incarnation,
                      ".log");
}

absl::StatusOr<std::unique_ptr<ConsumptionLogWriter>>
ConsumptionLogWriter::Open(const std::string& path) {
  RETURN_IF_ERROR(
      dataset::CreateDirectories(path.substr(0, path.find_last_of('/'))));
  const int fd =
      open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return dataset::PosixError("cannot open", path, errno);
  return std::unique_ptr<ConsumptionLogWriter>(
      new ConsumptionLogWriter(path, fd));
}

ConsumptionLogWriter::~ConsumptionLogWriter() { close(fd_); }

absl::Status ConsumptionLogWriter::Append(const ConsumedStep& step) {
  std::string payload;
  payload.reserve(kFixedPayload + 8 * step.ids.size());
  PutU64(&payload, step.generation);
  PutU64(&payload, step.step);
  PutU32(&payload, step.rank);
  PutU32(&payload, step.world_size);
  PutU32(&payload, step.ids.size());
  for (int64_t id : step.ids) PutU64(&payload, id);
  std::string record;
  PutU32(&record, payload.size());
  PutU32(&record, dataset::Crc32(payload));
  record += payload;
  // One write per record: O_APPEND keeps records whole against other
  // writers, and a kill leaves at most this record torn.
  size_t written = 0;
  while (written < record.size()) {
    const ssize_t n =
        write(fd_, record.data() + written, record.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return dataset::PosixError("cannot write", path_, errno);
    }
    written += n;
  }
  return absl::OkStatus();
}

absl::Status ConsumptionLogWriter::Sync() {
  if (fdatasync(fd_) != 0)
    return dataset::PosixError("cannot sync", path_, errno);
  return absl::OkStatus();
}

absl::StatusOr<ConsumptionLog> ReadConsumptionLog(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string bytes, dataset::ReadFileToString(path));
  ConsumptionLog log;
  size_t offset = 0;
  while (offset < bytes.size()) {
    const auto damaged = [&](const std::string& what) -> absl::Status {
      return absl::DataLossError(
          absl::StrCat(path, ": record at offset ", offset, " ", what));
    };
    if (bytes.size() - offset < 8) {
      log.torn_tail = true;
      break;
    }
    const uint32_t length = GetU32(bytes.data() + offset);
    const uint32_t crc = GetU32(bytes.data() + offset + 4);
    if (bytes.size() - offset - 8 < length) {
      log.torn_tail = true;  // the writer died mid-record
      break;
    }
    const std::string payload = bytes.substr(offset + 8, length);
    if (dataset::Crc32(payload) != crc) {
      if (offset + 8 + length == bytes.size()) {
        log.torn_tail = true;
        break;
      }
      return damaged("has a bad checksum");
    }
    if (length < kFixedPayload) return damaged("is too short");
    ConsumedStep step;
    const char* p = payload.data();
    step.generation = static_cast<int64_t>(GetU64(p));
    step.step = static_cast<int64_t>(GetU64(p + 8));
    step.rank = static_cast<int32_t>(GetU32(p + 16));
    step.world_size = static_cast<int32_t>(GetU32(p + 20));
    const uint32_t count = GetU32(p + 24);
    if (length != kFixedPayload + 8ull * count) {
      return damaged("has an id count that does not match its length");
    }
    step.ids.resize(count);
    for (uint32_t k = 0; k < count; ++k) {
      step.ids[k] = static_cast<int64_t>(GetU64(p + kFixedPayload + 8 * k));
    }
    log.steps.push_back(std::move(step));
    offset += 8 + length;
  }
  return log;
}

}  // namespace podtrain::worker
