// Gloo's rendezvous store, served by the coordinator: a
// gloo::rendezvous::Store whose keys live in the coordinator's per-generation
// key-value store (WorkerService.StoreSet/StoreGet, proto/worker.proto).
//
// Every key is prefixed with the generation's store prefix
// (CollectiveBootstrap.store_prefix, "<job>/generation/<g>/"), so a key
// written by one generation is invisible to the next, and the coordinator
// drops the whole store when the generation ends.
//
//   CoordinatorStore store(channel, "job-1/generation/3/", token,
//                          absl::Seconds(30));
//   store.set("0", address_of_rank_0);   // StoreSet "job-1/generation/3/0"
//   store.wait({"1"}, 5s);               // StoreGet ... wait_ms, until set
//
// Failures: gloo's contract is that a store throws, so every method throws
// CoordinatorStoreError (a gloo::IoException) whose status() says what went
// wrong: DEADLINE_EXCEEDED when a key did not appear within the timeout;
// UNAVAILABLE when the coordinator could not be reached within it;
// INVALID_ARGUMENT when the prefix names no job; UNAUTHENTICATED for a bad
// token. Communicators catch it at their boundary and return the status.
//
// A coordinator that restarts mid-rendezvous is ridden out: calls wait for
// the channel to become ready (within the timeout) instead of failing on the
// first refused connection.
//
// Thread-safety: thread-safe (gloo calls it from one thread, but nothing
// here is shared mutable state besides the gRPC stub, which is thread-safe).

#ifndef PODTRAIN_WORKER_COORDINATOR_STORE_H_
#define PODTRAIN_WORKER_COORDINATOR_STORE_H_

#include <gloo/common/error.h>
#include <gloo/rendezvous/store.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/worker.grpc.pb.h"

namespace podtrain::worker {

// What every CoordinatorStore method throws: an IoException for gloo, with
// the absl::Status behind it for podtrain.
class CoordinatorStoreError : public gloo::IoException {
 public:
  explicit CoordinatorStoreError(absl::Status status);
  const absl::Status& status() const { return status_; }

 private:
  absl::Status status_;
};

class CoordinatorStore : public gloo::rendezvous::Store {
 public:
  // `prefix` is prepended to every key; `bearer_token`, if not empty, is sent
  // as "authorization: Bearer <token>"; `timeout` bounds set(), get() and
  // wait(keys) (wait(keys, timeout) uses its own).
  CoordinatorStore(std::shared_ptr<grpc::Channel> channel, std::string prefix,
                   std::string bearer_token, absl::Duration timeout);

  // Writes prefix + key. Overwrites an existing value.
  void set(const std::string& key, const std::vector<char>& data) override;

  // Reads prefix + key, waiting up to the store's timeout for it to be set
  // (gloo's connectFullMesh get()s keys it never wait()ed for).
  std::vector<char> get(const std::string& key) override;

  // Waits until every key is set, up to the store's timeout.
  void wait(const std::vector<std::string>& keys) override;

  // Waits until every key is set, up to `timeout` overall (gloo's base class
  // ignores this timeout; this override honours it).
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override;

  const std::string& prefix() const { return prefix_; }
  absl::Duration timeout() const { return timeout_; }

 private:
  // StoreGet of prefix + key, waiting until `deadline` for it to be set.
  // Throws CoordinatorStoreError.
  std::string GetUntil(const std::string& key, absl::Time deadline);
  std::unique_ptr<grpc::ClientContext> NewContext(absl::Time deadline) const;
  // The status for a failed call about `what` after `waited`.
  absl::Status CallError(const grpc::Status& status, absl::string_view what,
                         absl::Duration waited) const;

  const std::shared_ptr<grpc::Channel> channel_;
  const std::unique_ptr<v1::WorkerService::Stub> stub_;
  const std::string prefix_;
  const std::string bearer_token_;
  const absl::Duration timeout_;
};

}  // namespace podtrain::worker

#endif  // PODTRAIN_WORKER_COORDINATOR_STORE_H_
