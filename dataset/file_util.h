// POSIX file helpers shared by dataset/: buffered writes whose errors name
// the file and the OS's reason, durable renames (rename, then fsync the
// directory) and whole-file atomic writes (temporary file, fsync, rename), so
// a crash never leaves a half-written file under its final name.
//
// Thread-safety: a WritableFile has one writer (not thread-safe); the free
// functions are thread-safe.

#ifndef PODTRAIN_DATASET_FILE_UTIL_H_
#define PODTRAIN_DATASET_FILE_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace podtrain::dataset {

// An error for a failed system call. The code follows errno (ENOENT →
// NOT_FOUND, EACCES → PERMISSION_DENIED, ENOSPC → RESOURCE_EXHAUSTED, ...) and
// the message reads "<action> <path>: <strerror>", e.g.
// "cannot write /data/a.rec.tmp: No space left on device".
absl::Status PosixError(absl::string_view action, absl::string_view path,
                        int error_number);

// `dir` + "/" + `name`, without doubling a trailing slash.
std::string JoinPath(absl::string_view dir, absl::string_view name);

// Where an atomic writer puts `path` until it is complete: `path` + ".tmp".
std::string TempPathFor(absl::string_view path);

// A file opened for writing, with a user-space buffer so that many small
// appends cost few system calls. The first error sticks: every later call
// returns it. Destroying a WritableFile closes it without syncing.
class WritableFile {
 public:
  // Creates `path`, or truncates it if it exists.
  static absl::StatusOr<std::unique_ptr<WritableFile>> Create(
      const std::string& path);

  WritableFile(const WritableFile&) = delete;
  WritableFile& operator=(const WritableFile&) = delete;
  ~WritableFile();

  absl::Status Append(absl::string_view data);
  // Writes the buffer out, fsyncs the file and closes it; the data is on
  // stable storage when this returns OK. No call may follow it.
  absl::Status SyncAndClose();

  const std::string& path() const { return path_; }
  // Bytes appended so far (written or buffered).
  int64_t size() const { return size_; }

 private:
  WritableFile(std::string path, int fd);
  absl::Status Flush();
  absl::Status WriteToFd(absl::string_view data);

  const std::string path_;
  int fd_;
  std::string buffer_;
  int64_t size_ = 0;
  absl::Status status_;
};

// Renames `from` to `to` (replacing `to`), then fsyncs the directory of `to`
// so the rename itself survives a crash.
absl::Status RenameDurably(const std::string& from, const std::string& to);

// Writes `contents` to TempPathFor(path), fsyncs it and renames it durably to
// `path`. On error the temporary file is removed and `path` is untouched.
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents);

absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Like `mkdir -p`: creates `path` and its missing parents; OK if it exists.
absl::Status CreateDirectories(const std::string& path);

}  // namespace podtrain::dataset

#endif  // PODTRAIN_DATASET_FILE_UTIL_H_
