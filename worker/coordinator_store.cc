#include "worker/coordinator_store.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace podtrain::worker {
namespace {

// The server caps one StoreGet's wait at 60 s; longer waits take several
// calls, and the last call's deadline is the caller's.
constexpr absl::Duration kMaxWaitPerCall = absl::Seconds(60);

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

[[noreturn]] void Throw(absl::Status status) {
  throw CoordinatorStoreError(std::move(status));
}

}  // namespace

CoordinatorStoreError::CoordinatorStoreError(absl::Status status)
    : gloo::IoException(std::string(status.ToString())),
      status_(std::move(status)) {}

CoordinatorStore::CoordinatorStore(std::shared_ptr<grpc::Channel> channel,
                                   std::string prefix, std::string bearer_token,
                                   absl::Duration timeout)
    : channel_(std::move(channel)),
      stub_(v1::WorkerService::NewStub(channel_)),
      prefix_(std::move(prefix)),
      bearer_token_(std::move(bearer_token)),
      timeout_(timeout) {}

std::unique_ptr<grpc::ClientContext> CoordinatorStore::NewContext(
    absl::Time deadline) const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(deadline));
  // Ride out a coordinator restart: wait for the channel instead of failing
  // on the first refused connection. The deadline still bounds the call.
  context->set_wait_for_ready(true);
  if (!bearer_token_.empty()) {
    context->AddMetadata("authorization", "Bearer " + bearer_token_);
  }
  return context;
}

absl::Status CoordinatorStore::CallError(const grpc::Status& status,
                                         absl::string_view what,
                                         absl::Duration waited) const {
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    // With wait_for_ready, an unreachable coordinator also surfaces as a
    // deadline; tell the two apart by the channel's state.
    const grpc_connectivity_state state = channel_->GetState(false);
    if (state != GRPC_CHANNEL_READY) {
      return absl::UnavailableError(absl::StrCat(
          "coordinator store: ", what, ": coordinator unreachable for ",
          absl::FormatDuration(waited)));
    }
  }
  return absl::Status(
      FromGrpc(status).code(),
      absl::StrCat("coordinator store: ", what, ": ", status.error_message()));
}

void CoordinatorStore::set(const std::string& key,
                           const std::vector<char>& data) {
  v1::StoreSetRequest request;
  request.set_key(prefix_ + key);
  request.set_value(data.data(), data.size());
  v1::StoreSetResponse response;
  const absl::Time start = absl::Now();
  auto context = NewContext(start + timeout_);
  const grpc::Status status =
      stub_->StoreSet(context.get(), request, &response);
  if (!status.ok()) {
    Throw(CallError(status, absl::StrCat("set '", request.key(), "'"),
                    absl::Now() - start));
  }
}

std::string CoordinatorStore::GetUntil(const std::string& key,
                                       absl::Time deadline) {
  const std::string full_key = prefix_ + key;
  const absl::Time start = absl::Now();
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    v1::StoreGetRequest request;
    request.set_key(full_key);
    request.set_wait_ms(std::max<int64_t>(
        0, absl::ToInt64Milliseconds(std::min(left, kMaxWaitPerCall))));
    v1::StoreGetResponse response;
    auto context = NewContext(deadline);
    const grpc::Status status =
        stub_->StoreGet(context.get(), request, &response);
    if (status.ok()) return std::move(*response.mutable_value());
    const absl::Time now = absl::Now();
    const bool missing = status.error_code() == grpc::StatusCode::NOT_FOUND;
    if (missing && now < deadline) continue;  // a wait longer than one call
    if (missing ||
        (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
         channel_->GetState(false) == GRPC_CHANNEL_READY)) {
      Throw(absl::DeadlineExceededError(absl::StrCat(
          "coordinator store: key '", full_key, "' was not set within ",
          absl::FormatDuration(now - start),
          " (a peer of this generation never published it)")));
    }
    Throw(CallError(status, absl::StrCat("get '", full_key, "'"), now - start));
  }
}

std::vector<char> CoordinatorStore::get(const std::string& key) {
  const std::string value = GetUntil(key, absl::Now() + timeout_);
  return std::vector<char>(value.begin(), value.end());
}

void CoordinatorStore::wait(const std::vector<std::string>& keys) {
  wait(keys, absl::ToChronoMilliseconds(timeout_));
}

void CoordinatorStore::wait(const std::vector<std::string>& keys,
                            const std::chrono::milliseconds& timeout) {
  // One deadline for all keys: the timeout bounds the whole wait.
  const absl::Time deadline = absl::Now() + absl::FromChrono(timeout);
  for (const std::string& key : keys) GetUntil(key, deadline);
}

}  // namespace podtrain::worker
