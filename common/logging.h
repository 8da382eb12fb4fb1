// podtrain's one logging library: glog (Debian's libgoogle-glog-dev). It is
// also what Debian's libtorch logs through (c10 is built with C10_USE_GLOG),
// so LOG/CHECK mean the same thing in every translation unit, with or without
// torch headers. Use LOG(INFO|WARNING|ERROR), VLOG(n), and CHECK only where a
// broken invariant makes continuing unsafe (never on user input).
//
// Thread-safety: glog is thread-safe; InitLogging must run once, in main.

#ifndef PODTRAIN_COMMON_LOGGING_H_
#define PODTRAIN_COMMON_LOGGING_H_

#include <glog/logging.h>

namespace podtrain {

// Sets up glog for a podtrain binary: logs to stderr (containers and the
// local launcher collect stderr), prefixes lines with time and thread, and
// prints a stack trace on fatal signals. Call once at the start of main.
void InitLogging(const char* argv0);

}  // namespace podtrain

#endif  // PODTRAIN_COMMON_LOGGING_H_
