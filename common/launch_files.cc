#include "common/launch_files.h"

#include <cstdio>
#include <fstream>
#include <iterator>

#include "absl/strings/strip.h"

namespace podtrain {

std::string ReadTokenFile(const std::string& path) {
  if (path.empty()) return "";
  std::ifstream file(path);
  const std::string token((std::istreambuf_iterator<char>(file)),
                          std::istreambuf_iterator<char>());
  return std::string(absl::StripAsciiWhitespace(token));
}

void WritePortFile(const std::string& path, int port) {
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << port << "\n";
  std::rename(tmp.c_str(), path.c_str());
}

}  // namespace podtrain
