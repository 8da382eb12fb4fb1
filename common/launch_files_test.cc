#include "common/launch_files.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

namespace podtrain {
namespace {

std::string TempPath(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  return std::string(base ? base : "/tmp") + "/" + name;
}

TEST(LaunchFilesTest, TokenIsTrimmedAndMissingFilesAreEmpty) {
  const std::string path = TempPath("token");
  std::ofstream(path) << "  s3cret-token\n\n";
  EXPECT_EQ(ReadTokenFile(path), "s3cret-token");
  EXPECT_EQ(ReadTokenFile(TempPath("no-such-token")), "");
  EXPECT_EQ(ReadTokenFile(""), "");
}

TEST(LaunchFilesTest, PortFileHoldsThePortAndNoTemporaryRemains) {
  const std::string path = TempPath("port");
  WritePortFile(path, 43210);
  std::ifstream file(path);
  int port = 0;
  file >> port;
  EXPECT_EQ(port, 43210);
  EXPECT_FALSE(std::ifstream(path + ".tmp").good());
  WritePortFile("", 1);  // no-op
}

}  // namespace
}  // namespace podtrain
