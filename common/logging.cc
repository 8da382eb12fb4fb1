#include "common/logging.h"

namespace podtrain {

void InitLogging(const char* argv0) {
  FLAGS_logtostderr = true;
  FLAGS_colorlogtostderr = false;
  if (!google::IsGoogleLoggingInitialized()) {
    google::InitGoogleLogging(argv0);
    google::InstallFailureSignalHandler();
  }
}

}  // namespace podtrain
