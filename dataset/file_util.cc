#include "dataset/file_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace podtrain::dataset {
namespace {

// Appends this large or larger skip the buffer: copying them gains nothing.
constexpr size_t kBufferSize = 1 << 20;

absl::string_view DirectoryOf(absl::string_view path) {
  const size_t slash = path.rfind('/');
  if (slash == absl::string_view::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

absl::Status SyncDirectory(const std::string& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return PosixError("cannot open directory", dir, errno);
  absl::Status status;
  if (fsync(fd) != 0) status = PosixError("cannot fsync directory", dir, errno);
  close(fd);
  return status;
}

}  // namespace

absl::Status PosixError(absl::string_view action, absl::string_view path,
                        int error_number) {
  return absl::ErrnoToStatus(error_number, absl::StrCat(action, " ", path));
}

std::string JoinPath(absl::string_view dir, absl::string_view name) {
  if (dir.empty()) return std::string(name);
  if (dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

std::string TempPathFor(absl::string_view path) {
  return absl::StrCat(path, ".tmp");
}

absl::StatusOr<std::unique_ptr<WritableFile>> WritableFile::Create(
    const std::string& path) {
  const int fd =
      open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return PosixError("cannot create", path, errno);
  return std::unique_ptr<WritableFile>(new WritableFile(path, fd));
}

WritableFile::WritableFile(std::string path, int fd)
    : path_(std::move(path)), fd_(fd) {
  buffer_.reserve(kBufferSize);
}

WritableFile::~WritableFile() {
  if (fd_ >= 0) close(fd_);
}

absl::Status WritableFile::Append(absl::string_view data) {
  if (!status_.ok()) return status_;
  size_ += data.size();
  if (buffer_.size() + data.size() <= kBufferSize) {
    buffer_.append(data.data(), data.size());
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(Flush());
  if (data.size() >= kBufferSize) return WriteToFd(data);
  buffer_.append(data.data(), data.size());
  return absl::OkStatus();
}

absl::Status WritableFile::Flush() {
  if (buffer_.empty()) return status_;
  const absl::Status status = WriteToFd(buffer_);
  buffer_.clear();
  return status;
}

absl::Status WritableFile::WriteToFd(absl::string_view data) {
  if (!status_.ok()) return status_;
  while (!data.empty()) {
    const ssize_t written = write(fd_, data.data(), data.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      status_ = PosixError("cannot write", path_, errno);
      return status_;
    }
    data.remove_prefix(written);
  }
  return absl::OkStatus();
}

absl::Status WritableFile::SyncAndClose() {
  absl::Status status = Flush();
  if (status.ok() && fsync(fd_) != 0) {
    status = PosixError("cannot fsync", path_, errno);
  }
  // close() can report a deferred write error (e.g. on NFS), so check it too.
  if (close(fd_) != 0 && status.ok()) {
    status = PosixError("cannot close", path_, errno);
  }
  fd_ = -1;
  if (status_.ok()) {
    status_ = status.ok() ? absl::FailedPreconditionError(
                                absl::StrCat(path_, " is already closed"))
                          : status;
  }
  return status;
}

absl::Status RenameDurably(const std::string& from, const std::string& to) {
  if (rename(from.c_str(), to.c_str()) != 0) {
    return PosixError(absl::StrCat("cannot rename ", from, " to"), to, errno);
  }
  return SyncDirectory(std::string(DirectoryOf(to)));
}

absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view contents) {
  const std::string temp_path = TempPathFor(path);
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file,
                     WritableFile::Create(temp_path));
    RETURN_IF_ERROR(file->Append(contents));
    RETURN_IF_ERROR(file->SyncAndClose());
    return RenameDurably(temp_path, path);
  }();
  if (!status.ok()) unlink(temp_path.c_str());
  return status;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return PosixError("cannot open", path, errno);
  std::string contents;
  char chunk[1 << 16];
  while (true) {
    const ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error_number = errno;
      close(fd);
      return PosixError("cannot read", path, error_number);
    }
    if (n == 0) break;
    contents.append(chunk, n);
  }
  close(fd);
  return contents;
}

absl::Status CreateDirectories(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("empty directory path");
  struct stat info;
  if (stat(path.c_str(), &info) == 0) {
    if (S_ISDIR(info.st_mode)) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat(path, " exists and is not a directory"));
  }
  const absl::string_view parent = DirectoryOf(path);
  if (parent != path && parent != "." && parent != "/") {
    RETURN_IF_ERROR(CreateDirectories(std::string(parent)));
  }
  // EEXIST: another process created it between our stat and mkdir.
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return PosixError("cannot create directory", path, errno);
  }
  return absl::OkStatus();
}

}  // namespace podtrain::dataset
