// Child processes for integration and chaos tests: start a real binary with
// its output in a log file, send it signals, reap it with a bounded wait.
// The destructor SIGKILLs and reaps a child that is still running, so a
// failing test never leaves processes behind.
//
// Thread-safety: thread-compatible.

#ifndef PODTRAIN_TESTS_SUBPROCESS_H_
#define PODTRAIN_TESTS_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace podtrain::testing {

class Subprocess {
 public:
  // Starts argv[0] with argv; stdout and stderr go to `log_path`.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(
      const std::vector<std::string>& argv, const std::string& log_path);

  ~Subprocess();

  pid_t pid() const { return pid_; }
  bool running();

  void Signal(int signal);
  // Waits up to `timeout` for the child to exit; returns its wait status
  // (see waitpid), or nullopt if it is still running.
  std::optional<int> Wait(absl::Duration timeout);

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}

  pid_t pid_;
  std::optional<int> status_;
};

// Polls `path` until it holds a port number (a server's --port_file).
absl::StatusOr<int> WaitForPortFile(const std::string& path,
                                    absl::Duration timeout);

// $TEST_TMPDIR/name (or /tmp/name), created empty.
std::string FreshTempDir(const std::string& name);

}  // namespace podtrain::testing

#endif  // PODTRAIN_TESTS_SUBPROCESS_H_
