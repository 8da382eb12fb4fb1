#include "coordinator/journal.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace podtrain::coordinator {
namespace {

// Owns a prepared statement for the duration of a call.
class Statement {
 public:
  Statement() = default;
  ~Statement() { sqlite3_finalize(statement_); }
  sqlite3_stmt** out() { return &statement_; }
  sqlite3_stmt* get() const { return statement_; }

 private:
  sqlite3_stmt* statement_ = nullptr;
};

absl::StatusCode CodeFor(int sqlite_code) {
  switch (sqlite_code & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::StatusCode::kDataLoss;
    case SQLITE_FULL:
      return absl::StatusCode::kResourceExhausted;
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
      return absl::StatusCode::kFailedPrecondition;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Journal>> Journal::Open(
    const std::string& path) {
  sqlite3* db = nullptr;
  const int code = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  auto journal = std::unique_ptr<Journal>(new Journal(path, db));
  if (code != SQLITE_OK) return journal->SqliteError("open", code);
  // WAL + FULL: a committed Append survives a crash; readers never block it.
  RETURN_IF_ERROR(journal->Exec("PRAGMA journal_mode=WAL"));
  RETURN_IF_ERROR(journal->Exec("PRAGMA synchronous=FULL"));
  RETURN_IF_ERROR(
      journal->Exec("CREATE TABLE IF NOT EXISTS updates ("
                    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                    "  kind INTEGER NOT NULL,"
                    "  bytes BLOB NOT NULL)"));
  // Proves the file is a readable database now, not at first replay.
  RETURN_IF_ERROR(journal->Exec("SELECT count(*) FROM updates"));
  return journal;
}

Journal::Journal(std::string path, sqlite3* db)
    : path_(std::move(path)), db_(db) {}

Journal::~Journal() { sqlite3_close(db_); }

absl::Status Journal::SqliteError(const std::string& action, int code) const {
  const char* detail =
      db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(code);
  return absl::Status(CodeFor(code), absl::StrCat("journal ", path_, ": ",
                                                  action, ": ", detail));
}

absl::Status Journal::Exec(const char* sql) const {
  char* error = nullptr;
  const int code = sqlite3_exec(db_, sql, nullptr, nullptr, &error);
  sqlite3_free(error);
  if (code != SQLITE_OK) return SqliteError(sql, code);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Journal::Append(const internal::Update& update) {
  std::string bytes;
  if (!update.SerializeToString(&bytes)) {
    return absl::InternalError("journal: cannot serialize an update");
  }
  Statement insert;
  int code =
      sqlite3_prepare_v2(db_, "INSERT INTO updates(kind, bytes) VALUES(?, ?)",
                         -1, insert.out(), nullptr);
  if (code != SQLITE_OK) return SqliteError("prepare append", code);
  sqlite3_bind_int(insert.get(), 1, update.kind_case());
  sqlite3_bind_blob(insert.get(), 2, bytes.data(),
                    static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  code = sqlite3_step(insert.get());
  if (code != SQLITE_DONE) return SqliteError("append", code);
  return sqlite3_last_insert_rowid(db_);
}

absl::StatusOr<std::vector<internal::Update>> Journal::ReadAll() const {
  Statement select;
  int code =
      sqlite3_prepare_v2(db_, "SELECT seq, bytes FROM updates ORDER BY seq", -1,
                         select.out(), nullptr);
  if (code != SQLITE_OK) return SqliteError("prepare read", code);
  std::vector<internal::Update> updates;
  while ((code = sqlite3_step(select.get())) == SQLITE_ROW) {
    const int64_t seq = sqlite3_column_int64(select.get(), 0);
    const void* data = sqlite3_column_blob(select.get(), 1);
    const int size = sqlite3_column_bytes(select.get(), 1);
    internal::Update update;
    if (!update.ParseFromArray(data, size) ||
        update.kind_case() == internal::Update::KIND_NOT_SET) {
      return absl::DataLossError(
          absl::StrCat("journal ", path_, ": update ", seq, " (", size,
                       " bytes) does not parse; refusing to recover from it"));
    }
    updates.push_back(std::move(update));
  }
  if (code != SQLITE_DONE) return SqliteError("read", code);
  return updates;
}

}  // namespace podtrain::coordinator
