// absl::Status <-> grpc::Status. Codes map one to one (both follow
// google.rpc.Code); messages pass through unchanged, so a client sees the
// same "spec.global_batch: must be >= 1, got 0" the coordinator wrote.
//
// Thread-safety: free functions.

#ifndef PODTRAIN_SERVICES_GRPC_STATUS_H_
#define PODTRAIN_SERVICES_GRPC_STATUS_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"

namespace podtrain::services {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

}  // namespace podtrain::services

#endif  // PODTRAIN_SERVICES_GRPC_STATUS_H_
