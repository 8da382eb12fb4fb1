// Small files the binaries exchange with whatever launches them: a secret
// token to read (--auth_token_file, --token_file) and a bound port to
// publish (--port_file, --metrics_port_file) once a server is up.
//
// Thread-safety: free functions.

#ifndef PODTRAIN_COMMON_LAUNCH_FILES_H_
#define PODTRAIN_COMMON_LAUNCH_FILES_H_

#include <string>

namespace podtrain {

// The file's contents without surrounding whitespace; "" for an empty path
// or a missing/unreadable file (callers that need a token check for "").
std::string ReadTokenFile(const std::string& path);

// Writes `port` to `path` atomically (a temporary file, then rename), so a
// launcher polling for the file never reads a partial number. No-op for an
// empty path.
void WritePortFile(const std::string& path, int port);

}  // namespace podtrain

#endif  // PODTRAIN_COMMON_LAUNCH_FILES_H_
