// Helpers for dataset/ tests: fresh scratch directories under Bazel's
// TEST_TMPDIR and whole-file reads and writes that fail the test loudly.
//
// Thread-safety: every function is thread-safe (distinct directories per
// call).

#ifndef PODTRAIN_DATASET_TEST_UTIL_H_
#define PODTRAIN_DATASET_TEST_UTIL_H_

#include <string>

#include "absl/strings/string_view.h"

namespace podtrain::dataset::testing {

// Creates and returns a new, empty directory whose name starts with `prefix`.
std::string NewTempDir(absl::string_view prefix);

std::string ReadFileOrDie(const std::string& path);
void WriteFileOrDie(const std::string& path, absl::string_view contents);

}  // namespace podtrain::dataset::testing

#endif  // PODTRAIN_DATASET_TEST_UTIL_H_
