#include "dataset/test_util.h"

#include <stdlib.h>

#include <cstdlib>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "dataset/file_util.h"

namespace podtrain::dataset::testing {

std::string NewTempDir(absl::string_view prefix) {
  const char* test_tmpdir = std::getenv("TEST_TMPDIR");
  const std::string root = test_tmpdir != nullptr ? test_tmpdir : "/tmp";
  std::string templ = JoinPath(root, absl::StrCat(prefix, "-XXXXXX"));
  std::vector<char> buffer(templ.begin(), templ.end());
  buffer.push_back('\0');
  CHECK(mkdtemp(buffer.data()) != nullptr) << "mkdtemp " << templ;
  return std::string(buffer.data());
}

std::string ReadFileOrDie(const std::string& path) {
  absl::StatusOr<std::string> contents = ReadFileToString(path);
  CHECK(contents.ok()) << contents.status();
  return *std::move(contents);
}

void WriteFileOrDie(const std::string& path, absl::string_view contents) {
  const absl::Status status = WriteFileAtomically(path, contents);
  CHECK(status.ok()) << status;
}

}  // namespace podtrain::dataset::testing
