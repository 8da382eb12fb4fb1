// The coordinator's write-ahead journal: an append-only sequence of Update
// protos in an embedded SQLite database. The coordinator appends an update and
// waits for it to be durable before applying it (log, then apply, as
// LevelDB's VersionEdit -> MANIFEST); recovery reads the journal back and
// replays it through CoordinatorState::Apply.
//
// Durability: each Append is one transaction in WAL mode with
// synchronous=FULL, so it survives a process kill or a power cut once Append
// returns. A journal that cannot be read back (a corrupt database, an update
// that does not parse) is refused with DATA_LOSS naming the row: a
// coordinator never starts from a state it cannot trust.
//
// Thread-safety: thread-compatible. The coordinator calls it under its mutex.

#ifndef PODTRAIN_COORDINATOR_JOURNAL_H_
#define PODTRAIN_COORDINATOR_JOURNAL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/coordinator_state.pb.h"

struct sqlite3;

namespace podtrain::coordinator {

class Journal {
 public:
  // Opens the journal at `path`, creating the database if it does not exist.
  static absl::StatusOr<std::unique_ptr<Journal>> Open(const std::string& path);

  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Appends `update` durably; returns its sequence number (1, 2, ...).
  absl::StatusOr<int64_t> Append(const internal::Update& update);

  // Every update, in the order appended.
  absl::StatusOr<std::vector<internal::Update>> ReadAll() const;

  const std::string& path() const { return path_; }

 private:
  Journal(std::string path, sqlite3* db);

  absl::Status Exec(const char* sql) const;
  absl::Status SqliteError(const std::string& action, int code) const;

  const std::string path_;
  sqlite3* const db_;
};

}  // namespace podtrain::coordinator

#endif  // PODTRAIN_COORDINATOR_JOURNAL_H_
